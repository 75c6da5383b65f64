# The Philips Hue bridge v1 API that Echo, Home Assistant (aiohue) and phue use: /description.xml, user
# creation (while the owner keeps pairing open, alexa.pair(): the link button), /api/config, full state,
# lights (the list streamed one light at a time), light state with Hue's success/error answers.
# alexa.Alexa owns the lights, users and lock and registers the routes; this module only speaks the
# protocol, and loads at the first Hue request (Echo's discovery), not at boot: a device nobody has
# asked yet keeps its ~1.5 KB of heap (functions and their tables).
# A user sees its own whitelist entry only: the others' user names are credentials.
import json
import time

from iotutils import hal
from iotutils.auth import escape, token
from iotutils.hue import EPOCH_H, F_COLOR, F_DIMMABLE, HUE_UUID, is_int, is_num, is_xy
from iotutils.web.response import Response

_API_VERSION = "1.41.0"
_SW_VERSION = "1941132080"
_DATASTORE = "98"
_MAX_STATE_KEYS = const(32)   # parameters in one light state request


_DESCRIPTION = """<?xml version="1.0" encoding="UTF-8" ?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
<specVersion><major>1</major><minor>0</minor></specVersion>
<URLBase>http://%s:%d/</URLBase>
<device>
<deviceType>urn:schemas-upnp-org:device:Basic:1</deviceType>
<friendlyName>%s (%s)</friendlyName>
<manufacturer>Signify</manufacturer>
<manufacturerURL>http://www.philips-hue.com</manufacturerURL>
<modelDescription>Philips hue Personal Wireless Lighting</modelDescription>
<modelName>Philips hue bridge 2015</modelName>
<modelNumber>BSB002</modelNumber>
<modelURL>http://www.philips-hue.com</modelURL>
<serialNumber>%s</serialNumber>
<UDN>uuid:%s%s</UDN>
<presentationURL>index.html</presentationURL>
</device>
</root>
"""


def _date(hours):
    """An hour of alexa._hours() as Hue writes dates ("2026-01-31T17:00:00")."""
    t = time.gmtime(max(0, hours - EPOCH_H) * 3600)
    return "%04d-%02d-%02dT%02d:00:00" % (t[0], t[1], t[2], t[3])


def hue_error(kind, address, description):
    return {"error": {"type": kind, "address": address, "description": description}}


def invalid_value(address, key, value):
    """Hue's error 7 for value: shown as JSON, as a bridge does (not Python's repr), and cut at
    40 characters (an answer need not echo a large value whole)."""
    t = json.dumps(value)
    if len(t) > 40:
        t = t[:40] + "..."
    return hue_error(7, address, "invalid value, %s, for parameter, %s" % (t, key))


def _succeeded(out, key):
    """Whether an answer list has a success entry for key."""
    for e in out:
        if key in e.get("success", ()):
            return True
    return False


def _light_state(light):
    s = {"on": light.on, "alert": "none", "mode": "homeautomation", "reachable": True}
    if light.flags & (F_DIMMABLE | F_COLOR):
        s["bri"] = light.bri
    c = light._col
    if c is not None:
        s["hue"] = c[0]
        s["sat"] = c[1]
        s["effect"] = c[6]
        s["xy"] = [c[3], c[4]]
        s["ct"] = c[2]
        s["colormode"] = c[5]
    return s


def light_json(alexa, light):
    """This light as the Hue API shows it (a small dict: built per light, never for the whole list)."""
    f = light.flags
    if f & F_COLOR:
        kind, model, product = "Extended color light", "LCT015", "Hue color lamp"
        ctl = {"mindimlevel": 1000, "maxlumen": 800, "colorgamuttype": "C",
               "colorgamut": [[0.6915, 0.3083], [0.17, 0.7], [0.1532, 0.0475]], "ct": {"min": 153, "max": 500}}
    elif f & F_DIMMABLE:
        kind, model, product = "Dimmable light", "LWB010", "Hue white lamp"
        ctl = {"mindimlevel": 5000, "maxlumen": 806}
    else:
        kind, model, product = "On/Off plug-in unit", "LOM001", "Hue Smart plug"
        ctl = {}
    with alexa._lock:
        state = _light_state(light)
    return {"state": state, "swupdate": {"state": "noupdates", "lastinstall": None}, "type": kind,
            "name": light.name, "modelid": model, "manufacturername": "Signify Netherlands B.V.",
            "productname": product, "capabilities": {"certified": True, "control": ctl},
            "uniqueid": light.uniqueid, "swversion": "1.50.2_r30933"}


def _json(body, status=200):
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    return Response(body, status, None, "application/json")   # str, bytes or a generator (streamed)


def _description(alexa, req):
    body = _DESCRIPTION % (hal.ip(), hal.port(alexa.app.port), escape(alexa.name), hal.ip(), alexa.serial,
                           HUE_UUID, alexa.serial)
    return Response(body, 200, None, "text/xml")


def _create_user(alexa, req):
    try:
        data = req.json()
    except ValueError:
        data = 0
    if not isinstance(data, dict):
        return _json([hue_error(2, "/", "body contains invalid JSON")])
    dt = data.get("devicetype")
    if not isinstance(dt, str) or not dt:
        return _json([hue_error(5, "/", "invalid/missing parameters in body")])
    # (Hue: "application#device", 40 characters.) The bytes are checked: a str's characters, taken
    # one by one, become MicroPython qstrs that are never freed (docs/design.md)
    if len(dt) > 40 or min(dt.encode()) < 32:
        return _json([invalid_value("/devicetype", "devicetype", dt)])
    if not alexa.pairing():
        return _json([hue_error(101, "", "link button not pressed")])
    user = alexa._new_user(dt)
    if user is None:
        return _json([hue_error(11, "", "too many users: remove one on the device's admin page")])
    ok = {"username": user}
    if data.get("generateclientkey"):
        ok["clientkey"] = token(16).upper()
    return _json([{"success": ok}])


def _config(alexa, full, user=None):
    mac = ":".join("%02x" % b for b in bytes(alexa.mac))
    c = {"name": alexa.name, "datastoreversion": _DATASTORE, "swversion": _SW_VERSION,
         "apiversion": _API_VERSION, "mac": mac, "bridgeid": alexa.bridgeid, "factorynew": False,
         "replacesbridgeid": None, "modelid": "BSB002", "starterkitid": ""}
    if full:
        ip = hal.ip()
        c.update({"zigbeechannel": 15, "ipaddress": ip, "netmask": "255.255.255.0", "gateway": ip,
                  "dhcp": True, "proxyaddress": "none", "proxyport": 0, "timezone": "UTC",
                  "portalservices": False, "portalconnection": "disconnected",
                  "linkbutton": alexa.pairing(),
                  "swupdate2": {"state": "noupdates", "autoinstall": {"on": False}},
                  # the caller's own entry only (the other user names are credentials)
                  "whitelist": {} if user is None else {user[0]: {
                      "name": user[1], "last use date": _date(user[3]), "create date": _date(user[2])}}})
    return c


def _public_config(alexa, req):
    return _json(_config(alexa, False))


def _lights_gen(alexa, lights):
    # the light list, streamed: one light's JSON at a time (32 lights never sit in RAM as one text)
    yield "{"
    first = True
    for light in lights:
        if light.wemo:
            continue
        yield ('"%s":' if first else ',"%s":') % light.id
        yield json.dumps(light_json(alexa, light))
        first = False
    yield "}"


def _full_gen(alexa, user):
    yield '{"lights":'
    for part in _lights_gen(alexa, alexa.lights()):
        yield part
    yield ',"groups":{},"config":'
    yield json.dumps(_config(alexa, True, user))
    yield ',"schedules":{},"scenes":{},"rules":{},"sensors":{},"resourcelinks":{}}'


def _method(req):
    # HEAD is answered as GET is, headers and all (the server leaves the body out)
    m = req.method
    return "GET" if m == "HEAD" else m


def _api(alexa, req, p):
    alexa.save()  # ids handed out to a client are on flash first
    # empty segments are skipped (a client's trailing or doubled slash); nothing else is special:
    # ".." or "%" are plain characters of a user name or light id that matches nothing
    parts = [s for s in p.split("/") if s]
    if not parts:  # /api//
        return _json([hue_error(1, "/", "unauthorized user")])
    user = parts[0]
    rest = parts[1:]
    if user == "config" and not rest and _method(req) == "GET":
        return _public_config(alexa, req)
    address = "/" + "/".join(rest)
    entry = alexa._user(user)
    if entry is None:
        return _json([hue_error(1, address, "unauthorized user")])
    m = _method(req)
    if not rest:
        if m == "GET":
            return _json(_full_gen(alexa, entry))
        return _no_method(m, address)
    top = rest[0]
    if top == "lights":
        return _api_lights(alexa, req, rest, address)
    if top == "config":
        if len(rest) > 1:
            return _no_resource(address)
        if m == "GET":
            return _json(_config(alexa, True, entry))
        if m == "PUT":
            return _put_config(alexa, req)
        return _no_method(m, address)
    if top == "groups" and len(rest) > 1 and rest[1] == "0":
        return _group0(alexa, req, rest, address)
    if top in ("groups", "scenes", "sensors", "schedules", "rules", "resourcelinks", "capabilities"):
        if len(rest) == 1 and m == "GET":
            return _json({})
        return _no_resource(address)
    return _no_resource(address)


def _group0(alexa, req, rest, address):
    # group 0, "all lights": a bridge has it without listing it in /groups (aiohue's
    # get_all_lights_group, scripts that switch the whole house); the WeMo sockets are not in it
    m = _method(req)
    lights = [lt for lt in alexa.lights() if not lt.wemo]
    if len(rest) == 2:
        if m != "GET":
            return _no_method(m, address)
        with alexa._lock:
            states = [_light_state(lt) for lt in lights]
        on = [st["on"] for st in states]
        action = states[0] if states else {"on": False, "alert": "none"}
        action.pop("reachable", None)
        action.pop("mode", None)
        return _json({"name": "Group 0", "lights": [lt.id for lt in lights], "sensors": [], "type": "LightGroup",
                      "state": {"all_on": bool(on) and False not in on, "any_on": True in on}, "recycle": False,
                      "action": action})
    if len(rest) != 3 or rest[2] != "action":
        return _no_resource(address)
    if m != "PUT":
        return _no_method(m, address)
    pre = "/groups/0/action/"
    data = _body(req)
    if data is None:
        return _json([hue_error(2, pre[:-1], "body contains invalid JSON")])
    if not data or len(data) > _MAX_STATE_KEYS:
        return _json([hue_error(5, pre[:-1], "invalid/missing parameters in body")])
    # each light takes what it can (an on/off plug no brightness); a key is a success when one light
    # took it, else the first light's error for it
    took = {}
    for lt in lights:
        res, changed = apply_state(alexa, lt, data)
        if changed:
            alexa._changed(lt)
        for r in res:
            ok = "success" in r
            addr = next(iter(r["success"])) if ok else r["error"]["address"]
            k = addr.rpartition("/")[2]
            if k not in data and k + "_inc" in data:
                k += "_inc"   # (a light answers hue_inc by the value it moved: .../state/hue)
            if ok or k not in took:
                took[k] = r
    out = []
    for k in data:
        r = took.get(k)
        if r is None:   # (no lights at all: nothing to refuse it)
            out.append({"success": {pre + k: data[k]}})
        elif "success" in r:
            out.append({"success": {pre + k: r["success"][next(iter(r["success"]))]}})
        else:
            out.append(hue_error(r["error"]["type"], pre + k, r["error"]["description"]))
    return _json(out)


def _no_resource(address):
    return _json([hue_error(3, address, "resource, %s, not available" % address)])


def _no_method(method, address):
    return _json([hue_error(4, address, "method, %s, not available for resource, %s" % (method, address))])


def _body(req):
    """The request body as a dict, or None (invalid JSON)."""
    try:
        data = req.json()
    except ValueError:  # server.HTTPError is a ValueError
        return None
    return data if isinstance(data, dict) else None


def _put_config(alexa, req):
    data = _body(req)
    if data is None:
        return _json([hue_error(2, "/config", "body contains invalid JSON")])
    out = []
    for k in data:
        v = data[k]
        if k == "name":
            if isinstance(v, str) and 4 <= len(v) <= 16 and v.strip() and min(v.encode()) >= 32:
                alexa.name = alexa._named = v   # kept, as a bridge keeps its name
                alexa._save()
                out.append({"success": {"/config/name": v}})
            else:
                out.append(invalid_value("/config/name", "name", v))
        else:
            out.append(hue_error(6, "/config/" + k, "parameter, %s, not available" % k))
    return _json(out)


def _api_lights(alexa, req, rest, address):
    m = _method(req)
    if len(rest) == 1:
        if m == "GET":
            return _json(_lights_gen(alexa, alexa.lights()))
        if m == "POST":  # "search for new lights": ours are all there already
            return _json([{"success": {"/lights": "Searching for new devices"}}])
        return _no_method(m, address)
    lid = rest[1]
    if lid == "new" and len(rest) == 2 and m == "GET":
        return _json({"lastscan": "none"})
    with alexa._lock:
        light = alexa._byid.get(lid)
        if light is None and 0 < len(lid) < 4 and not lid.strip("0123456789"):  # ASCII digits only
            # the plain index ("1") as an alias of the MAC-based id: clients and scripts written
            # for bridges that number their lights 1, 2, ... keep working
            n = int(lid)
            for x in alexa._lights:
                if x.index == n and not x.wemo:
                    light = x
    if light is None:
        return _no_resource(address)
    if len(rest) == 2:
        if m == "GET":
            return _json(light_json(alexa, light))
        if m == "PUT":
            return _rename_api(alexa, req, light, lid)
        return _no_method(m, address)
    if len(rest) == 3 and rest[2] == "state":
        if m == "PUT":
            return _put_state(alexa, req, light, lid)
        return _no_method(m, address)
    return _no_resource(address)


def _rename_api(alexa, req, light, lid):
    pre = "/lights/%s" % lid
    data = _body(req)
    if data is None:
        return _json([hue_error(2, pre, "body contains invalid JSON")])
    out = []
    for k in data:
        v = data[k]
        if k != "name":
            out.append(hue_error(6, pre + "/" + k, "parameter, %s, not available" % k))
        else:
            try:
                light.rename(v)   # (a name that is not printable, or another light's, is refused)
                out.append({"success": {pre + "/name": v}})
            except ValueError:
                out.append(invalid_value(pre + "/name", "name", v))
    if not out:
        out.append(hue_error(5, pre, "invalid/missing parameters in body"))
    return _json(out)


def _put_state(alexa, req, light, lid):
    pre = "/lights/%s/state" % lid
    data = _body(req)
    if data is None:
        return _json([hue_error(2, pre, "body contains invalid JSON")])
    out, changed = apply_state(alexa, light, data, lid)
    if changed:
        alexa._changed(light)
    return _json(out)


def apply_state(alexa, light, data, lid=None):
    """Apply a Hue state dict to light: ([success/error entries in request order], changed)."""
    pre = "/lights/%s/state/" % (lid or light.id)   # addresses echo the id the client used
    out = []
    dim = light.dimmable
    col = light._col is not None
    changed = False

    def bad(k, v):
        out.append(invalid_value(pre + k, k, v))

    def ok(k, v):
        out.append({"success": {pre + k: v}})

    if not data:
        return [hue_error(5, pre[:-1], "invalid/missing parameters in body")], False
    if len(data) > _MAX_STATE_KEYS:
        # a Hue state has about fifteen parameters; an answer entry per key of a larger one
        # would take ten times its size from the heap
        return [hue_error(5, pre[:-1], "too many parameters in body (at most %d)" % _MAX_STATE_KEYS)], False
    with alexa._lock:
        c = light._col
        for k in data:
            v = data[k]
            if k == "on":
                if not isinstance(v, bool):
                    bad(k, v)
                    continue
                changed = changed or light.on != v
                light.on = v
                ok(k, v)
            elif k in ("bri", "bri_inc") and not dim:
                out.append(hue_error(6, pre + k, "parameter, %s, not available" % k))
            elif k in ("hue", "sat", "ct", "xy", "effect", "hue_inc", "sat_inc", "ct_inc", "xy_inc") and not col:
                out.append(hue_error(6, pre + k, "parameter, %s, not available" % k))
            elif k == "bri":
                if not is_int(v) or not 0 <= v <= 254:
                    bad(k, v)
                    continue
                v = max(1, v)
                changed = changed or light.bri != v
                light.bri = v
                ok(k, v)
            elif k == "bri_inc":
                if not is_int(v) or not -254 <= v <= 254:
                    bad(k, v)
                    continue
                if "bri" in data:
                    continue   # (Hue: an increment beside its value is ignored)
                light.bri = min(254, max(1, light.bri + v))
                changed = changed or v != 0
                ok(k, light.bri)
            elif k == "hue" or k == "sat" or k == "ct":
                lo, hi, i = {"hue": (0, 65535, 0), "sat": (0, 254, 1), "ct": (153, 500, 2)}[k]
                if not is_int(v) or not 0 <= v <= 65535:
                    bad(k, v)
                    continue
                v = min(hi, max(lo, v))
                changed = changed or c[i] != v
                c[i] = v
                c[5] = "ct" if k == "ct" else "hs"
                ok(k, v)
            elif k == "xy":
                if not is_xy(v):
                    bad(k, v)
                    continue
                x, y = v
                changed = changed or c[3] != x or c[4] != y
                c[3] = round(float(x), 4)
                c[4] = round(float(y), 4)
                c[5] = "xy"
                ok(k, [c[3], c[4]])
            elif k in ("hue_inc", "sat_inc", "ct_inc", "xy_inc"):
                # applied to the matching value, clamped like a Hue bridge does (and ignored beside
                # that value itself)
                if k == "xy_inc":
                    try:
                        dx, dy = v
                        good = is_num(dx) and is_num(dy) and -0.5 <= dx <= 0.5 and -0.5 <= dy <= 0.5
                    except (TypeError, ValueError):
                        good = False
                    if not good:
                        bad(k, v)
                        continue
                    if "xy" in data:
                        continue   # (the value itself was sent too: it wins, and answers alone)
                    c[3] = round(min(1.0, max(0.0, c[3] + dx)), 4)   # (as a bridge: 0.21, not 0.21000000000000002)
                    c[4] = round(min(1.0, max(0.0, c[4] + dy)), 4)
                    c[5] = "xy"
                    changed = changed or dx != 0 or dy != 0
                    ok("xy", [c[3], c[4]])
                    continue
                if not is_int(v) or not -65535 <= v <= 65535:
                    bad(k, v)
                    continue
                if k[:-4] in data:
                    continue   # (the value itself was sent too: it wins, and answers alone)
                i, lo, hi = {"hue_inc": (0, 0, 65535), "sat_inc": (1, 0, 254), "ct_inc": (2, 153, 500)}[k]
                c[i] = (c[i] + v) % 65536 if i == 0 else min(hi, max(lo, c[i] + v))
                c[5] = "ct" if i == 2 else "hs"   # (the mode is the last command's kind, as for the values)
                changed = changed or v != 0
                ok(k[:-4], c[i])
            elif k == "transitiontime":
                if not is_int(v) or not 0 <= v <= 65535:
                    bad(k, v)
                    continue
                ok(k, v)  # no fading here: the app drives the hardware
            elif k == "alert":
                if v not in ("none", "select", "lselect"):
                    bad(k, v)
                    continue
                ok(k, v)
            elif k == "effect":
                if v not in ("none", "colorloop"):
                    bad(k, v)
                    continue
                changed = changed or c[6] != v
                c[6] = v   # (kept, and shown in the light's state until set back to none)
                ok(k, v)
            else:
                out.append(hue_error(6, pre + k, "parameter, %s, not available" % k))
        if c is not None and len(data) > 1:
            # several colour values in one command: the mode is the one a Hue bridge gives
            # precedence, xy over ct over hue/sat (the keys come in no particular order here)
            if "xy" in data and c[5] != "xy" and _succeeded(out, pre + "xy"):
                c[5] = "xy"
            elif "xy" not in data and "ct" in data and _succeeded(out, pre + "ct"):
                c[5] = "ct"
    return out, changed


def serve(alexa, req, p=None):
    """Answer a request for one of the Hue routes Alexa registered (p: the rest of /api/<path:p>)."""
    if p is not None:
        return _api(alexa, req, p)
    if req.path == "/description.xml":
        return _description(alexa, req)
    if req.path == "/api/config":
        return _public_config(alexa, req)
    return _create_user(alexa, req)   # POST /api, /api/
