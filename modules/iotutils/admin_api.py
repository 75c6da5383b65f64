# The admin API's areas: Wi-Fi, variables, settings export/import and factory reset, OTA, Alexa
# and MQTT. iotutils.admin keeps what every visit needs (sessions, the page, the status) and loads
# this module at the first request for one of these, through Admin.__getattr__: each function here
# is a handler of the Admin it is given as `self`, named as admin._ROUTES names it.
import gc
import time

from iotutils import hal, persist, store
from iotutils.admin import json_body
from iotutils.web.response import HTTPError, Response

_ENOSPC = const(28)
_KEPT = const(8)   # alexa's _F_KEPT: a device added on this page (not by the app's code)

# ---- Wi-Fi ----
def _need_wifi(self):
    if self.dev.wifi is None:
        raise HTTPError(404, "Wi-Fi is not managed by this device")
    return self.dev.wifi


def _wifi(self, req):
    w = self._need_wifi()
    return {"status": w.status(), "networks": w.networks()}


def _wifi_scan(self, req):
    try:
        return {"networks": self._need_wifi().scan()}
    except OSError as e:
        raise HTTPError(503, "scan failed: %s" % e)


def _wifi_add(self, req):
    w = self._need_wifi()
    data = json_body(req)
    if type(data.get("connect", False)) is not bool:   # ("no" connected)
        raise HTTPError(400, "connect: true or false expected")
    try:
        w.add_network(data.get("ssid"), data.get("password") or "", False if data.get("hidden") is None else data["hidden"])
    except (ValueError, TypeError) as e:
        raise HTTPError(400, _short(e))
    if data.get("connect"):
        w.reconnect(prefer=data.get("ssid")) if hasattr(w, "reconnect") else None
    return {"ok": True, "networks": w.networks()}


def _wifi_forget(self, req, ssid):
    w = self._need_wifi()
    if not w.forget(ssid):
        raise HTTPError(404, "no known network %r" % ssid)
    return {"ok": True, "networks": w.networks()}


def _wifi_ap(self, req):
    w = self._need_wifi()
    data = json_body(req)
    if type(data.get("enabled")) is not bool:   # (a missing one turned the access point off)
        raise HTTPError(400, "enabled: true or false expected")
    try:
        w.access_point(data["enabled"], ssid=data.get("ssid") or None,
                       password=data.get("password"))
    except (ValueError, TypeError) as e:
        raise HTTPError(400, _short(e))
    return {"ok": True, "status": w.status()}


# ---- persistent variables ----
def _check_folder(self, folder):
    if persist.is_secret(folder):
        raise HTTPError(403, "folder %r holds secrets and is not shown here" % folder)


def _vars(self, req):
    names = set(persist.folders()) | set(persist.declared_folders())
    return {"folders": sorted(f for f in names if not persist.is_secret(f))}


def _vars_folder(self, req, folder):
    self._check_folder(folder)
    try:   # (said before the first byte: the listing streams)
        store.check_name(folder, "folder")
    except ValueError as e:
        raise HTTPError(400, _short(e))
    # streamed as it is read, as the export: a folder of long values needs no block of its size
    # (twelve 1.4 KB texts were a 503 with 175 KB free)
    return Response(persist.listing_pieces(folder), 200, None, "application/json")


def _check_key(self, folder, name):
    self._check_folder(folder)
    if persist.is_secret(folder, name):
        raise HTTPError(403, "%s/%s holds credentials or the device's own records and is not shown here"
                        % (folder, name))


def _check_setting(self, folder, name, value):
    """The checks of the page that owns a setting of the device's own, for the variables editor and
    the import: what the Alexa, OTA or MQTT section refuses is refused here too, and nothing gets
    stored that the device cannot load at boot (a bad Alexa device list restarted it in a loop)."""
    if (folder, name) == ("alexa", "devices"):
        from iotutils.alexa import check_devices
        check_devices(value)
    elif (folder, name) == ("device", "name"):
        from iotutils.coerce import check_name
        check_name(value, "name")
    elif folder == "ota" and name in ("repo", "channel"):
        o = self.dev.ota
        src = {"repo": o.repo if o else "", "channel": o.channel if o else "release", name: value}
        self.dev.check_ota_source(src["repo"], src["channel"])
    elif folder == "mqtt":
        ms = _mqtt_settings()
        if name in ms.FIELDS:
            out = ms.check({name: value})
            if isinstance(value, str) and out.get(name) != (value.strip() if name not in ("password", "ca") else value):
                raise ValueError("%s: credentials go in user and password, not in the URL" % name)


def _var_put(self, req, folder, name):
    self._check_key(folder, name)
    data = json_body(req)
    if "value" not in data:
        raise HTTPError(400, "value: missing")
    if data["value"] is None:   # (as in an import: it was stored as the JSON text "null")
        raise HTTPError(400, "value: null is no value (DELETE removes a variable)")
    key = (folder, name)
    made = False
    t = data.get("type")
    if t is not None and (type(t) is not str or not t):
        raise HTTPError(400, "type: a kind's name expected (int, str, range...)")
    try:
        self._check_setting(folder, name, data["value"])
        v = persist.declared(folder).get(name)
        if v is not None and t is not None and t != v.kind:   # (it was ignored)
            raise ValueError("type: %s/%s is declared as %s" % (folder, name, v.kind))
        if v is None:
            entry = persist.export_entry(folder, name)
            kind = t or (entry or {}).get("type") or persist.infer_kind(data["value"])
            spec = {}
            for k in ("lo", "hi", "max_length"):
                if entry and k in entry:
                    spec[k] = entry[k]
            v = persist.make(kind, name, folder, **spec)
            made = True
        value = v.set(data["value"])
    except (ValueError, TypeError) as e:
        if made:
            _unregister(key)
        raise HTTPError(400, _short(e))
    except (MemoryError, OSError) as e:   # nothing stored (a store write is whole or none)
        if made:
            _unregister(key)   # (it stayed, a variable of its default in the listing)
        if getattr(e, "errno", None) == _ENOSPC:   # the client's to fix: store less
            raise HTTPError(507, "%s/%s: not stored: the settings partition has no room for it" % key)
        raise HTTPError(503, "%s/%s: not stored (%s)" % (key + (_short(e) or type(e).__name__,)))
    if made:
        with self._lock:
            self._adhoc[key] = True
    return {"ok": True, "folder": folder, "name": name, "type": v.kind, "value": _plain(value)}


def _var_delete(self, req, folder, name):
    self._check_key(folder, name)
    key = (folder, name)
    try:
        if name not in persist.declared(folder) and _store_get(folder, name) is None:
            found = False  # not even asked of persist: it would remember the missing name
        else:
            found = persist.delete(name, folder)
    except ValueError as e:
        raise HTTPError(400, _short(e))
    with self._lock:
        adhoc = self._adhoc.pop(key, None)
    if adhoc:
        _unregister(key)  # made by this page, now gone: persist need not remember its type
    if not found:
        raise HTTPError(404, "%s/%s is not stored" % (folder, name))
    return {"ok": True}


def _export(self, req):
    # streamed as it is read (secrets are left out by persist): a store of any size exports
    # without a block of the whole text's size, which a fragmented heap may not have
    return Response(persist.export_pieces(), 200,
                    {"Content-Disposition": 'attachment; filename="%s-settings.json"' % self.dev.name},
                    "application/json")


def _import(self, req):
    data = req.json()  # (the server refuses JSON nested deeper than Request.max_json_depth: 400)
    if not isinstance(data, dict):
        raise HTTPError(400, "expected an object of folders")
    if isinstance(data.get("mqtt"), dict):
        # exports made before it was kept private carry MQTT's record of what that device announced:
        # restored here it is nobody's (and never another device's)
        data["mqtt"].pop("announced", None)
    for folder in data:
        self._check_folder(folder)
        if isinstance(data[folder], dict):
            for name in data[folder]:
                self._check_key(folder, name)
    try:
        for folder in ("alexa", "device", "ota", "mqtt"):
            entries = data.get(folder)
            for name in entries if isinstance(entries, dict) else ():
                e = entries[name]
                try:
                    self._check_setting(folder, name, e["value"] if isinstance(e, dict) and "value" in e else e)
                except (ValueError, TypeError) as ex:
                    raise ValueError("import: %s/%s: %s" % (folder, name, ex))
        n = persist.import_json(data)
    except ValueError as e:
        raise HTTPError(400, _short(e))
    except (MemoryError, OSError) as e:  # all or nothing: persist rolled every value back
        gc.collect()
        if getattr(e, "errno", None) == _ENOSPC:   # the client's to fix: import less
            raise HTTPError(507, "import: nothing changed: the settings partition has no room for it "
                                 "(while an import runs, each value takes room twice)")
        raise HTTPError(503, "import: nothing changed (%s)" % (_short(e) or type(e).__name__))
    return {"ok": True, "imported": n}


def _factory_reset(self, req):
    if json_body(req).get("confirm") != "RESET":
        raise HTTPError(400, 'confirm: send {"confirm": "RESET"}')
    persist.factory_reset()
    self._later(hal.reset)
    return {"ok": True, "rebooting": True}


# ---- OTA ----
def _need_ota(self):
    if self.dev.ota is None:
        raise HTTPError(404, "OTA is not configured on this device")
    return self.dev.ota


def _ota_get(self, req):
    o = self.dev.ota
    st = o.status() if o else None
    auto = o.state.load().get("auto") if o and hasattr(o, "state") else None
    return {"status": st, "repo": o.repo if o else None, "channel": o.channel if o else None,
            "auto": auto, "progress": dict(self._ota)}


def _ota_settings(self, req):
    # everything is checked before anything is stored, and a new source is stored in one step with
    # the auto-update settings: a refused request changed the source all the same, and a power cut
    # could leave the new source with the old auto-update settings
    data = json_body(req)
    o = self.dev.ota
    source = "repo" in data or "channel" in data
    repo = data.get("repo", o.repo if o else None)
    channel = data.get("channel", o.channel if o else "release")
    a = None
    try:
        if "auto" in data:
            a = data["auto"] if isinstance(data["auto"], dict) else {"on": data["auto"]}
            if type(a.get("on")) is not bool:
                raise HTTPError(400, "auto: true or false expected (or {\"on\": true, ...})")
            has_source = (repo or isinstance(channel, str) and channel.startswith("url:")) if source else o
            if not has_source:
                raise HTTPError(404, "auto: no OTA source configured (set repo and channel first)")
        if source:
            more = []
            if a is not None:
                from iotutils.ota import auto_settings
                from iotutils.persist import PersistentJSON
                var = PersistentJSON("state", default={}, folder="ota")   # (OTA's own state: ota/state.py)
                st = var.value if isinstance(var.value, dict) else {}
                more.append((var, dict(st, auto=auto_settings(st.get("auto"), a["on"], a.get("every_hours"),
                                                               a.get("idle_minutes")))))
            self.dev.set_ota_settings(repo, channel, more)   # (the new OTA resumes auto-update as stored)
        elif a is not None:
            o.auto_update(a["on"], a.get("every_hours"), a.get("idle_minutes"), app=self.app)   # (checks, then one write)
    except (ValueError, TypeError) as e:
        raise HTTPError(400, _short(e))
    return self._ota_get(req)


def _ota_check(self, req):
    o = self._need_ota()
    from iotutils.ota import OTAError
    try:
        # without waiting: a slow update server holds a check's thread until the client's limits
        # (Http.timeout, Http.small_answer_s), and clicks on "check" must not take every thread
        r = o.check(wait=False)
    except (OTAError, OSError, ValueError) as e:
        raise HTTPError(502, "check failed: %s" % e)
    except MemoryError:
        gc.collect()
        raise HTTPError(502, "check failed: the update server's answer does not fit in memory")
    if r is None:
        raise HTTPError(409, "a check is already running")
    return r


def _ota_update(self, req):
    data = json_body(req)
    for k in ("force", "downgrade"):
        if type(data.get(k, False)) is not bool:   # ("no" installed an older image)
            raise HTTPError(400, "%s: true or false expected" % k)
    o = self._need_ota()
    if self._ota["state"] in ("downloading", "rebooting"):
        raise HTTPError(409, "an update is already running")
    self._ota.update(state="downloading", done=0, total=0, error=None)
    # force: a version that rolled back here before; downgrade: one older than the running image
    self._later(self._run_update, o, data.get("force", False), data.get("downgrade", False))
    return Response({"ok": True, "progress": dict(self._ota)}, 202)


def _progress(self, done, total):
    self._ota["done"] = done
    self._ota["total"] = total or 0


def _run_update(self, o, force, downgrade=False):
    # a thread of its own: whatever happens in it (MemoryError included) ends as "failed" with
    # the reason, and the next update can start (OTA scrubbed the slot and let go of its lock)
    try:
        version = o.update(progress=self._progress, force=force, reboot=False, downgrade=downgrade)
    except BaseException as e:
        gc.collect()
        self._ota.update(state="failed", error=_page_words(_short(e) or type(e).__name__))
        return
    self._ota.update(state="rebooting", version=version, done=self._ota["total"] or self._ota["done"])
    time.sleep(self.reboot_delay_s)
    hal.reset()


def _ota_progress(self, req):
    return dict(self._ota)


def _ota_upload(self, req):
    """A local image file (the body, application/octet-stream), installed like a download: only
    with its signature from the release's ota.json (?sig=<128 hex>, and ?sha256=), checked before
    the upload is read and again before the image may boot."""
    o = self._need_ota()
    if not hasattr(o, "install_stream"):
        raise HTTPError(501, "this OTA module cannot install uploads")
    if self._ota["state"] in ("downloading", "rebooting"):
        raise HTTPError(409, "an update is already running")
    total = req.content_length or 0
    self._ota.update(state="downloading", done=0, total=total, error=None)
    try:
        q = req.query
        version = o.install_stream(req.stream, total or None, progress=self._progress, sha256=q.get("sha256"),
                                   sig=q.get("sig"), downgrade=q.get("downgrade") in ("1", "true"),
                                   force=q.get("force") in ("1", "true"))
    except BaseException as e:
        gc.collect()
        reason = _page_words(_short(e) or type(e).__name__)
        self._ota.update(state="failed", error=reason)
        if isinstance(e, (MemoryError, OSError)):
            raise HTTPError(503, "image not installed: %s" % reason)
        raise HTTPError(400, "image refused: %s" % reason)
    self._ota.update(state="rebooting", version=version)
    self._later(self._reboot_soon)
    return {"ok": True, "version": version, "rebooting": True}


def _page_words(reason):
    # the OTA module's advice in the page's words too
    return reason.replace("(force=True to retry)", "(force=True, or the box \"reinstall a version that rolled "
                          "back\", to retry)")


# ---- Alexa ----
def _need_alexa(self):
    if self.dev.alexa is None:
        raise HTTPError(404, "Alexa is not enabled on this device")
    return self.dev.alexa


def _light_json(self, light):
    return {"id": light.index, "name": light.name, "on": light.on, "brightness": light.brightness,
            "dimmable": light.dimmable, "color": light.color, "wemo": light.wemo,
            "uniqueid": light.uniqueid, "app": not light.flags & _KEPT}


def _alexa(self, req):
    a = self._need_alexa()
    return {"pairing": a.pairing(), "pairing_left_s": a.pairing_left_s(),
            "devices": [self._light_json(l) for l in a.lights()], "users": a.user_list(),
            "ssdp": a.discovery_stats()}


def _alexa_pairing(self, req):
    # {"seconds": N} (default 60) opens Hue pairing for N s, {"allowed": false} closes it
    a = self._need_alexa()
    data = json_body(req)
    allowed = data.get("allowed", True)
    if type(allowed) is not bool:
        raise HTTPError(400, "allowed: true or false expected")
    if not allowed:
        a.pair(0)
    else:
        n = data.get("seconds", 60)
        if type(n) is not int or not 1 <= n <= a.max_pair_s:
            raise HTTPError(400, "seconds: 1..%d expected" % a.max_pair_s)
        a.pair(n)
    return {"pairing": a.pairing(), "pairing_left_s": a.pairing_left_s()}


def _alexa_user_delete(self, req, n):
    if not self._need_alexa().forget_user(n):
        raise HTTPError(404, "no Hue user %d" % n)
    return {"ok": True}


def _alexa_add(self, req):
    a = self._need_alexa()
    data = json_body(req)
    for k in ("dimmable", "color", "wemo"):
        if k in data and type(data[k]) is not bool:
            raise HTTPError(400, "%s: true or false expected" % k)
    if data.get("wemo") and data.get("dimmable"):
        raise HTTPError(400, "wemo: a WeMo device is on/off only (not dimmable)")
    try:
        light = a.add(data.get("name"), dimmable=data.get("dimmable", True),
                      color=data.get("color", False), wemo=data.get("wemo", False), keep=True)
    except (ValueError, TypeError) as e:
        raise HTTPError(400, _short(e))
    a.save()   # on flash before the answer says it exists (add() leaves it to the next poll)
    return Response(self._light_json(light), 201)


def _find_light(self, i):
    for l in self._need_alexa().lights():
        if l.index == i:
            return l
    raise HTTPError(404, "no Alexa device %d" % i)


def _alexa_put(self, req, i):
    light = self._find_light(i)
    data = json_body(req)
    before = (light.on, light.bri)
    # the whole body is checked before the name changes (a bad brightness kept the new name)
    if "on" in data and type(data["on"]) is not bool:
        raise HTTPError(400, "on: true or false expected")
    b = data.get("brightness")
    if b is not None and (type(b) not in (int, float) or not 0 <= b <= 100):
        raise HTTPError(400, "brightness: 0..100 expected, got %r" % (b,))
    try:
        if "name" in data:
            light.rename(data["name"])
        if "on" in data or "brightness" in data:
            light.set(on=data.get("on"), brightness=data.get("brightness"))
    except (ValueError, TypeError) as e:
        raise HTTPError(400, _short(e))
    if (light.on, light.bri) != before:
        self._need_alexa().deliver(light)   # the app hears of it as of a Hue change (its lamp follows)
    return self._light_json(light)


def _alexa_delete(self, req, i):
    light = self._find_light(i)
    if not light.flags & _KEPT:
        # the app's code adds it at every boot, under a new id: Alexa and HA then had a dead device
        # beside a new one
        raise HTTPError(409, "%s is the app's own device (its code adds it at every boot): remove it there"
                        % light.name)
    self._need_alexa().remove(light)
    return {"ok": True}


# ---- MQTT (iotutils.mqtt_settings: the admin page's settings win over the code's URL) ----
def _mqtt_get(self, req):
    ms = _mqtt_settings()
    s = ms.load(self.dev.mqtt_url)
    m = self.dev.mqtt
    out = {k: s[k] for k in ("user", "ca", "prefix", "mode", "base")}
    out.update(url=ms.redact(ms.setting("url").value), password_set=bool(s["password"]), source=s["source"],
               error=s["error"], code_url=ms.redact(self.dev.mqtt_url), device_id=ms.device_id(),
               base_topic=s["base"] or "iotutils/" + ms.device_id(), status=m.status() if m else None)
    return out


def _mqtt_put(self, req):
    ms = _mqtt_settings()
    try:
        ms.save(json_body(req), self.dev.mqtt_url)
    except ValueError as e:
        raise HTTPError(400, _short(e))
    self._later(self.dev.reload_mqtt)  # the old client says offline and stops, in its own time
    return dict(self._mqtt_get(req), ok=True, restarting=True)


def _mqtt_test(self, req):
    ms = _mqtt_settings()
    try:
        return ms.test_connection(json_body(req), self.dev.mqtt_url)
    except ValueError as e:
        raise HTTPError(400, _short(e))


def _store_get(folder, name):
    from iotutils import store
    try:
        return store.get_typed(folder, name)
    except ValueError as e:
        raise ValueError(str(e).replace("key ", "name ", 1))


def _unregister(key):
    # persist remembers every variable made in this boot (its type, for this page and export); one
    # this page made and then deleted must not stay there, or edits of ever new names eat the heap
    persist.undeclare(key[1], key[0])


def _short(e, limit=160):
    # error texts quote the value they refuse: a 3000-character name need not come back whole
    s = str(e)
    return s if len(s) <= limit else s[:limit] + "..."


def _plain(v):
    if isinstance(v, (set, tuple)):
        return sorted(v) if isinstance(v, set) else list(v)
    return v


def _mqtt_settings():
    try:
        from iotutils import mqtt_settings
    except (ImportError, AttributeError):   # a stock board without the package iotutils-mqtt
        raise HTTPError(404, "MQTT is not installed on this device (mip package iotutils-mqtt)")
    return mqtt_settings
