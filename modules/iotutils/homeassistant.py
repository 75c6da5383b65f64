# Home Assistant MQTT discovery: the (topic, payload) pairs that make a device and its entities
# appear in Home Assistant, the commands HA sends back parsed into values, states formatted, and
# the clean-up that leaves no ghost entities. Pure: no sockets. Bridge runs it over any client
# with publish/subscribe/on_connect/set_will (iotutils.mqtt.MQTT, or a fake in tests).
#
# The contract is https://www.home-assistant.io/integrations/mqtt/ ("MQTT Discovery"):
# - mode "device" (HA >= 2024.11): one retained message <prefix>/device/<id>/config holding
#   "dev", "o" and every entity under "cmps" (abbreviated keys throughout);
# - mode "component" (older HA): <prefix>/<kind>/<id>/<object_id>/config, one per entity.
#
# ---- The interface a Device hands it ------------------------------------------------------
#
#   info = {"id": "0200000001ab",                 # [A-Za-z0-9_-]; unique ids are "<id>_<object_id>"
#           "name": "Desk lamp", "sw": "0.1.0", "model": "iotutils lamp",
#           "manufacturer": "iotutils",           # optional, default "iotutils"
#           "url": "http://192.168.1.20/admin",   # optional: "Visit" link in HA
#           "base": "iotutils/0200000001ab"}      # optional, default "iotutils/<id>"
#   entities = [(kind, object_id, name, extra), ...]       # extra: dict or None, per kind:
#     "light"  {"brightness": True, "rgb": True, "scale": 255}       value {"on", "brightness", "rgb"}
#     "switch" {}                                                     value bool
#     "number" {"min": 0, "max": 100, "step": 1, "int": True, "unit": "%", "mode": "slider"}
#     "text"   {"max": 32, "hex": False, "pattern": None}             value str (int with "hex")
#     "select" {"options": ["a", "b"]}                                value one of the options
#     "sensor" {"key": "rssi", "unit": "dBm", "device_class": "signal_strength",
#               "state_class": "measurement", "diagnostic": True, "icon": None}
#              (a sensor with "key" reads that field of the <base>/info JSON; diagnostics() gives
#               RSSI, free heap, uptime and IP this way, the same message scripts/fleet.py reads)
#     "button" {"device_class": "restart"}                            set() gets True on a press
#     "update" {}                          value {"installed_version", "latest_version",
#               "release_url", "release_summary", "in_progress", "update_percentage"};
#                                          set() gets "install" when HA's Install is pressed
#   get(object_id) -> value          the state getter (any entity but button)
#   set(object_id, value)            the command handler: value already parsed and checked
#
#   bridge = Bridge(mqtt, info, entities, get, set, prefix="homeassistant", mode="device",
#                   announced=previous, on_announced=save,   # before mqtt.start(): sets the will
#                   on_ha_online=None)   # HA's birth message: announce() now, or call this instead
#   bridge.publish_state("bri")      # after a change made elsewhere (web page, Alexa, a button)
#   bridge.publish_info({"version": ..., "uptime": s, "heap": b, "rssi": dBm, "ip": "..."})
#   bridge.set_entities(entities)    # the entity list changed: announced again (gone ones removed)
#   A command HA sends that does not parse, or that set() refuses with ValueError, is logged and
#   the unchanged state is published again (HA's optimistic view snaps back).
#   `announced` is what on_announced(state) last received (persist it, e.g. PersistentJSON):
#   entities gone since then get empty retained configs, so HA shows no ghosts.
#
# Topics: availability <base>/status ("online" retained, "offline" as the will), state
# <base>/<object_id> (retained), commands <base>/<object_id>/set, diagnostics <base>/info (retained).
import json

from iotutils._compat import log

ORIGIN = "iotutils"
_KINDS = ("light", "switch", "number", "text", "select", "sensor", "button", "update")
_HEX_PATTERN = "^-?(0x|0X)?[0-9a-fA-F]+$"   # as a Hex variable prints itself: 0x1f, -0x1f


def _dumps(obj):
    try:
        return json.dumps(obj, separators=(",", ":"))
    except TypeError:  # a MicroPython without separators=
        return json.dumps(obj)


def check_id(field, s):
    """HA's rule for discovery ids: 1..64 characters of [A-Za-z0-9_-] (ValueError naming field)."""
    if not isinstance(s, str) or not 0 < len(s) <= 64:
        raise ValueError("%s: 1..64 characters expected, got %r" % (field, s))
    for c in s:
        if not (c.isalpha() and c < "\x80" or c.isdigit() or c in "_-"):
            raise ValueError("%s: only A-Z a-z 0-9 _ - allowed, got %r" % (field, s))
    return s


def base_topic(info):
    return info.get("base") or "iotutils/" + info["id"]


def _entity(e):
    if not isinstance(e, (tuple, list)) or len(e) not in (3, 4):
        raise ValueError("entities: (kind, object_id, name, extra) expected, got %r" % (e,))
    kind, oid, name = e[0], e[1], e[2]
    extra = (e[3] if len(e) == 4 else None) or {}
    if kind not in _KINDS:
        raise ValueError("kind: one of %s expected, got %r" % (", ".join(_KINDS), kind))
    check_id("object_id", oid)
    if not isinstance(name, str) or not name:
        raise ValueError("name: a non-empty string expected for %s" % oid)
    if kind == "select":
        ops = extra.get("options")
        if not ops or not all(isinstance(o, str) and o for o in ops):
            raise ValueError("options: a non-empty list of strings expected for %s" % oid)
    if kind == "number" and not extra.get("min", 0) < extra.get("max", 100):
        raise ValueError("max: must be above min for %s" % oid)
    return kind, oid, name, extra


def check_entity(e):
    """e (kind, object_id, name, extra) as Home Assistant takes it, else ValueError naming the field."""
    _entity(e)
    return e


def _device(info):
    d = {"ids": [info["id"]], "name": info["name"], "mf": info.get("manufacturer") or ORIGIN,
         "mdl": info.get("model"), "sw": info.get("sw"), "cu": info.get("url")}
    return _clean(d)


def _origin(info):
    from iotutils import __version__
    return {"name": ORIGIN, "sw": __version__}


def _clean(d):
    for k in [k for k in d if d[k] is None]:
        del d[k]
    return d


def component(info, e, with_device=False):
    """The discovery config (abbreviated keys, no None values) of one entity (kind, object_id,
    name, extra). with_device: include dev, o and availability (component mode)."""
    kind, oid, name, x = _entity(e)
    base = base_topic(info)
    c = {"name": name, "uniq_id": "%s_%s" % (info["id"], oid)}
    state = base + "/" + oid
    cmd = state + "/set"
    if kind == "light":
        modes = ["rgb"] if x.get("rgb") else ["brightness"] if x.get("brightness", True) else ["onoff"]
        c.update({"schema": "json", "stat_t": state, "cmd_t": cmd, "sup_clrm": modes})
        if with_device:
            # HA before 2024.11 (component mode) reads supported_color_modes only with color_mode set
            # (its schema has both in one inclusion group: one alone drops the light); later HA
            # deprecated the flag, so device mode leaves it out
            c["clrm"] = True
        if modes != ["onoff"]:
            # brightness on its own in commands: without the flag an older HA sends no brightness at
            # all, and a current one folds it into an RGB light's colour and drops it
            c.update({"brightness": True, "bri_scl": x.get("scale", 255)})
    elif kind == "switch":
        c.update({"stat_t": state, "cmd_t": cmd})
    elif kind == "number":
        c.update({"stat_t": state, "cmd_t": cmd, "min": x.get("min", 0), "max": x.get("max", 100),
                  "step": x.get("step", 1), "mode": x.get("mode"), "unit_of_meas": x.get("unit")})
    elif kind == "text":
        c.update({"stat_t": state, "cmd_t": cmd, "min": 0, "max": min(int(x.get("max", 255)), 255),
                  "ptrn": _HEX_PATTERN if x.get("hex") else x.get("pattern")})
    elif kind == "select":
        c.update({"stat_t": state, "cmd_t": cmd, "ops": list(x["options"])})
    elif kind == "sensor":
        key = x.get("key")
        if key:
            check_id("key", key)
            c.update({"stat_t": base + "/info", "val_tpl": "{{ value_json.%s }}" % key})
        else:
            c["stat_t"] = state
        c.update({"unit_of_meas": x.get("unit"), "dev_cla": x.get("device_class"),
                  "stat_cla": x.get("state_class"), "ic": x.get("icon"),
                  "ent_cat": "diagnostic" if x.get("diagnostic") else None})
    elif kind == "button":
        c.update({"cmd_t": cmd, "dev_cla": x.get("device_class"), "ent_cat": x.get("entity_category", "config")})
    elif kind == "update":
        c.update({"stat_t": state, "cmd_t": cmd, "pl_inst": "install", "dev_cla": "firmware",
                  "ent_cat": "config"})
    if with_device:
        c.update({"dev": _device(info), "o": _origin(info), "avty_t": base + "/status"})
    else:
        c["p"] = kind
    return _clean(c)


def diagnostics():
    """The diagnostic sensors every device can show (fields of the <base>/info JSON)."""
    return [
        ("sensor", "rssi", "Wi-Fi signal", {"key": "rssi", "unit": "dBm", "device_class": "signal_strength",
                                            "state_class": "measurement", "diagnostic": True}),
        ("sensor", "heap", "Free heap", {"key": "heap", "unit": "B", "device_class": "data_size",
                                         "state_class": "measurement", "diagnostic": True}),
        ("sensor", "uptime", "Uptime", {"key": "uptime", "unit": "s", "device_class": "duration",
                                        "state_class": "total_increasing", "diagnostic": True}),
        ("sensor", "ip", "IP address", {"key": "ip", "icon": "mdi:ip-network", "diagnostic": True}),
    ]


def config_topic(prefix, mode, device_id, kind=None, object_id=None):
    if mode == "device":
        return "%s/device/%s/config" % (prefix, device_id)
    return "%s/%s/%s/%s/config" % (prefix, kind, device_id, object_id)


def device_config(info, entities, removed=()):
    """The device-mode config: dev, o, availability and every entity under cmps. removed:
    (kind, object_id) pairs to list as {"p": kind} only, which tells HA to delete them."""
    cmps = {}
    for e in entities:
        cmps[e[1]] = component(info, e)
    for kind, oid in removed:
        cmps[oid] = {"p": kind}
    return {"dev": _device(info), "o": _origin(info), "avty_t": base_topic(info) + "/status", "cmps": cmps}


def announced(info, entities, prefix="homeassistant", mode="device"):
    """What was announced (persist it; hand it back as `previous` next time)."""
    return {"prefix": prefix, "mode": mode, "id": info["id"], "entities": ["%s/%s" % (e[0], e[1]) for e in entities]}


def _check_prefix(prefix):
    if not isinstance(prefix, str) or not prefix or "+" in prefix or "#" in prefix:
        raise ValueError("prefix: a topic level such as 'homeassistant' expected, got %r" % (prefix,))


def usable_record(previous):
    """previous (an announced() dict read back from storage) if it is one, else None: a record
    edited or cut short must not stop the device from announcing itself."""
    try:
        if previous["mode"] in ("device", "component") and isinstance(previous["prefix"], str) and \
                isinstance(previous["id"], str):
            _check_prefix(previous["prefix"])
            for k in previous["entities"]:
                kind, oid = k.split("/")
                if kind not in _KINDS:
                    return None
                check_id("object_id", oid)
            return previous
    except (KeyError, TypeError, ValueError, AttributeError):
        pass
    return None


def discovery(info, entities, prefix="homeassistant", mode="device", previous=None):
    """[(topic, payload str)] to publish retained, in order: first what removes entities that
    `previous` (an announced() dict) had and this set has not (no ghosts), then the configs."""
    if mode not in ("device", "component"):
        raise ValueError("mode: 'device' or 'component' expected, got %r" % (mode,))
    check_id("id", info.get("id"))
    _check_prefix(prefix)
    entities = [_entity(e) for e in entities]
    seen = set()
    for e in entities:
        if e[1] in seen:
            raise ValueError("object_id: %r used twice" % e[1])
        seen.add(e[1])
    out = []
    now = {"%s/%s" % (e[0], e[1]) for e in entities}
    gone = []
    if previous and previous.get("id") != info["id"]:
        previous = None   # another device's record (a cloned settings store): its topics are its own
    if previous:
        old = [k.split("/", 1) for k in previous.get("entities", ())]
        same = (previous.get("prefix"), previous.get("mode")) == (prefix, mode)
        if not same:  # everything announced the old way goes
            if previous.get("mode") == "device":
                out.append((config_topic(previous["prefix"], "device", previous["id"]), ""))
            else:
                for kind, oid in old:
                    out.append((config_topic(previous["prefix"], "component", previous["id"], kind, oid), ""))
        else:
            gone = [(kind, oid) for kind, oid in old if "%s/%s" % (kind, oid) not in now]
            if mode == "component":
                for kind, oid in gone:
                    out.append((config_topic(prefix, mode, info["id"], kind, oid), ""))
    if mode == "device":
        topic = config_topic(prefix, mode, info["id"])
        if not entities:
            out.append((topic, ""))
            return out
        if gone:
            out.append((topic, _dumps(device_config(info, entities, gone))))
        out.append((topic, _dumps(device_config(info, entities))))
    else:
        for e in entities:
            out.append((config_topic(prefix, mode, info["id"], e[0], e[1]), _dumps(component(info, e, True))))
    return out


# ---- states and commands

def _on(v):
    return "ON" if v else "OFF"


def state_payload(kind, extra, value):
    """The state message (str) for value, as the entity's config tells HA to read it."""
    extra = extra or {}
    if kind == "switch":
        return _on(value)
    if kind == "light":
        v = value or {}
        d = {"state": _on(v.get("on"))}
        if extra.get("rgb") or extra.get("brightness", True):
            if v.get("brightness") is not None:
                d["brightness"] = int(v["brightness"])
            if not extra.get("rgb"):
                d["color_mode"] = "brightness"
            elif v.get("rgb") is not None:
                r, g, b = v["rgb"]
                d["color"] = {"r": r, "g": g, "b": b}
                d["color_mode"] = "rgb"   # (only with a colour: HA reads one whenever it is "rgb")
        else:
            d["color_mode"] = "onoff"
        return _dumps(d)
    if kind == "number":
        return str(int(value) if extra.get("int") else value)
    if kind == "text":
        if extra.get("hex") and isinstance(value, int):
            return "-0x%x" % -value if value < 0 else "0x%x" % value
        return str(value)
    if kind == "update":
        v = dict(value or {})
        v.setdefault("in_progress", False)
        for k in [k for k in v if v[k] is None and k != "update_percentage"]:
            del v[k]   # strings HA reads: absent rather than null
        return _dumps(v)
    return str(value)


_INF = float("inf")


def _whole(v, field):
    # a JSON number as an int (bool, null, strings, lists and non-finite numbers are refused)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (_INF, -_INF):
        raise ValueError("%s: a number expected, got %s" % (field, json.dumps(v)[:20]))
    return int(v)


def parse_command(kind, extra, payload):
    """The value a command payload (bytes or str) asks for; ValueError if it is not acceptable."""
    extra = extra or {}
    if isinstance(payload, (bytes, bytearray)):
        try:
            payload = bytes(payload).decode()
        except UnicodeError:
            raise ValueError("payload: not UTF-8")
    p = payload.strip()
    if kind == "switch":
        if p.upper() in ("ON", "OFF"):
            return p.upper() == "ON"
        raise ValueError("payload: ON or OFF expected, got %r" % p[:20])
    if kind == "light":
        try:
            d = json.loads(p)
        except ValueError:
            raise ValueError("payload: JSON expected for a light")
        if not isinstance(d, dict):
            raise ValueError("payload: a JSON object expected for a light")
        out = {}
        if "state" in d:
            if d["state"] not in ("ON", "OFF"):
                raise ValueError("state: ON or OFF expected")
            out["on"] = d["state"] == "ON"
        if "brightness" in d:
            scale = extra.get("scale", 255)
            out["brightness"] = max(0, min(scale, _whole(d["brightness"], "brightness")))
        c = d.get("color")
        if isinstance(c, dict) and extra.get("rgb"):
            out["rgb"] = tuple(max(0, min(255, _whole(c.get(k, 0), "color." + k))) for k in ("r", "g", "b"))
        return out
    if kind == "number":
        # the number as sent, within the entity's range: the setter's own coercion makes it whole
        # (an Int variable truncates 3.9 to 3, a Range clamps), as it does for any other caller
        if (p[1:] if p[:1] in ("+", "-") else p).isdigit():
            v = int(p)   # exactly, however long (float() would round a big one)
        else:
            try:
                v = float(p)
            except ValueError:
                raise ValueError("payload: a number expected, got %r" % p[:20])
            if v != v or v in (_INF, -_INF) or "_" in p:   # (float() takes "nan", "inf" and "1_0")
                raise ValueError("payload: a finite number expected, got %r" % p[:20])
        return max(extra.get("min", 0), min(extra.get("max", 100), v))
    if kind == "text":
        if extra.get("hex"):
            neg = p[:1] == "-"
            h = p[1:] if neg else p
            h = h[2:] if h[:2] in ("0x", "0X") else h
            if not h or [c for c in h if c not in "0123456789abcdefABCDEF"]:
                raise ValueError("payload: hexadecimal expected, got %r" % p[:20])
            return -int(h, 16) if neg else int(h, 16)
        return payload   # (longer than the variable's max_length: it truncates, as for any caller)
    if kind == "select":
        for o in (payload, p):   # (an option may begin or end with a space)
            if o in extra.get("options", ()):
                return o
        raise ValueError("payload: not one of the options: %r" % p[:20])
    if kind == "button":
        if p != "PRESS":
            raise ValueError("payload: PRESS expected")
        return True
    if kind == "update":
        if p != "install":
            raise ValueError("payload: install expected")
        return "install"
    raise ValueError("kind: %s takes no commands" % kind)


class Bridge:
    """A device's entities in Home Assistant over an MQTT client (see the top of this file)."""

    def __init__(self, mqtt, info, entities, get=None, set=None, prefix="homeassistant", mode="device",
                 announced=None, on_announced=None, on_ha_online=None):
        self.mqtt = mqtt
        self.info = info
        self.get = get
        self.set = set
        self.prefix = prefix
        self.mode = mode
        p = usable_record(announced)
        self.previous = p if p and p["id"] == info.get("id") else None   # (another device's: not ours to clear)
        self.on_announced = on_announced
        self.on_ha_online = on_ha_online
        self.error = None   # why the last announcement failed
        self.base = base_topic(info)
        _check_prefix(prefix)
        self._use(entities)
        mqtt.set_will(self.base + "/status", "offline", retain=True)
        mqtt.on_connect(self.announce)
        mqtt.subscribe(self.base + "/+/set", self._command)
        mqtt.subscribe(prefix + "/status", self._ha_status)
        if prefix != "homeassistant":
            # HA's birth message stays on homeassistant/status whatever its discovery prefix
            mqtt.subscribe("homeassistant/status", self._ha_status)

    def announce(self):
        """Configs (removals first), availability, every state. Runs on each connect and when
        HA says it is back online (its birth message)."""
        m = self.mqtt
        try:
            for topic, payload in discovery(self.info, self.entities, self.prefix, self.mode, self.previous):
                m.publish(topic, payload, retain=True)
            self.error = None
        except MemoryError:
            # device mode sends every entity in one config: the device goes on, said plainly
            topic = payload = None
            self.error = ("the discovery config of %d entities does not fit in memory (expose fewer, or use "
                          "mode \"component\": one config per entity)" % len(self.entities))
            log("homeassistant: " + self.error)
        m.publish(self.base + "/status", "online", retain=True)
        now = announced(self.info, self.entities, self.prefix, self.mode)
        if self.error is None and self.previous:
            for k in self.previous["entities"]:
                if k not in now["entities"]:   # a removed entity's retained state goes too
                    m.publish(self.base + "/" + k.split("/", 1)[1], "", retain=True)
        if self.error is None and now != self.previous:
            self.previous = now
            if self.on_announced is not None:
                self.on_announced(now)
        for e in self.entities:
            if e[0] not in ("button",) and not (e[0] == "sensor" and e[3].get("key")):
                self.publish_state(e[1])

    def _use(self, entities):
        # every check now, not at the next connect, entity by entity: the whole config (KBs) is
        # built only to be sent
        check_id("id", self.info.get("id"))
        by_id = {}
        for e in entities:
            e = _entity(e)
            if e[1] in by_id:
                raise ValueError("object_id: %r used twice" % e[1])
            component(self.info, e)
            by_id[e[1]] = e
        self.entities = [by_id[e[1]] for e in entities]
        self._by_id = by_id

    def set_entities(self, entities):
        """Replace the entity list (ValueError, and nothing changed, for a bad one); announced at
        once when connected (entities gone since the last announcement are removed from HA)."""
        self._use(entities)
        if getattr(self.mqtt, "connected", False):
            self.announce()

    def publish_state(self, object_id, value=None):
        e = self._by_id[object_id]
        if value is None:
            if self.get is None:
                return False
            value = self.get(object_id)
            if value is None:
                return False
        return self.mqtt.publish(self.base + "/" + object_id, state_payload(e[0], e[3], value), retain=True)

    def publish_info(self, info):
        """The diagnostics JSON (version, uptime, heap, rssi, ip...) on <base>/info, retained."""
        return self.mqtt.publish(self.base + "/info", _dumps(info), retain=True)

    def _command(self, topic, payload):
        oid = topic[len(self.base) + 1:-4]
        e = self._by_id.get(oid)
        if e is None or self.set is None:
            return
        if getattr(self.mqtt, "retained", False):
            # Home Assistant never retains a command: a retained one is stale (someone's mistake,
            # or a trap), and acting on it at every connect would press "restart" at every boot
            log("homeassistant: %s: a retained command, ignored" % oid)
            return
        try:
            value = parse_command(e[0], e[3], payload)
            self.set(oid, value)
        except (ValueError, TypeError, OverflowError, MemoryError) as err:
            # not understood, or refused by set(): HA is shown the real state
            log("homeassistant: %s: %s" % (oid, err))
        if e[0] != "button":
            self.publish_state(oid)

    def _ha_status(self, topic, payload):
        if payload == b"online":
            if self.on_ha_online is not None:
                self.on_ha_online()
            else:
                self.announce()
