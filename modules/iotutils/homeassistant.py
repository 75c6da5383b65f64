# Home Assistant MQTT discovery: the (topic, payload) pairs that make a device and its entities
# appear in Home Assistant, the commands HA sends back parsed into values, states formatted, and
# the clean-up that leaves no ghost entities. Pure: no sockets. Bridge runs it over any client
# with publish/subscribe/on_connect/set_will (iotutils.mqtt.MQTT, or a fake in tests).
# The discovery configs and their checks are ha_discovery.py, loaded while a device announces
# itself or checks an entity; this module hands out their names too (ha.discovery(...)).
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
#   `entities` may be a function returning the list instead: called at each announcement, so the
#   Bridge keeps only what states and commands need (kind and extra by object_id), not the list.
#   bridge.count: how many entities it has (the last list checked or announced).
#   A command HA sends that does not parse, or that set() refuses with ValueError, is logged and
#   the unchanged state is published again (HA's optimistic view snaps back).
#   `announced` is what on_announced(state) last received (persist it, e.g. PersistentJSON):
#   entities gone since then get empty retained configs, so HA shows no ghosts. It may be the
#   Persistent itself (announced=p, on_announced=p.set): read at each announcement, not kept.
#
# Topics: availability <base>/status ("online" retained, "offline" as the will), state
# <base>/<object_id> (retained), commands <base>/<object_id>/set, diagnostics <base>/info (retained).
import json

from iotutils._compat import load, log, unload

# the discovery configs and the checks (ha_discovery.py) load while a device announces itself or
# checks an entity, and go again after an announcement: a connected device holds only the states
# and commands below
_DISCOVERY = ("ORIGIN", "check_id", "base_topic", "entity", "check_entity", "component", "diagnostics",
              "config_topic", "device_config", "announced", "check_prefix", "usable_record", "discovery")


def __getattr__(name):
    if name == "__all__":
        from iotutils._compat import public_names
        return public_names(globals(), _DISCOVERY)
    if name in _DISCOVERY:
        return getattr(load("iotutils.ha_discovery"), name)
    raise AttributeError(name)



def dumps(obj):
    """JSON as HA's messages carry it (no spaces)."""
    try:
        return json.dumps(obj, separators=(",", ":"))
    except TypeError:  # a MicroPython without separators=
        return json.dumps(obj)


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
        return dumps(d)
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
        return dumps(v)
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
            if not h or h.strip("0123456789abcdefABCDEF"):
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
        d = load("iotutils.ha_discovery")
        # what was announced before: the record, or a Persistent holding it (read at each
        # announcement, so the heap does not keep it between connects)
        self._announced = announced
        self.on_announced = on_announced
        self.on_ha_online = on_ha_online
        self.error = None   # why the last announcement failed
        self.base = d.base_topic(info)
        d.check_prefix(prefix)
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
        d = load("iotutils.ha_discovery")
        ents = self.entities() if callable(self.entities) else self.entities
        rec = self._announced
        kept = rec is None or isinstance(rec, dict)   # (else a Persistent holding it)
        prev = d.usable_record(rec if kept else rec.value)
        if prev and prev["id"] != self.info.get("id"):
            prev = None   # another device's record (a cloned settings store): not ours to clear
        try:
            for topic, payload in d.discovery(self.info, ents, self.prefix, self.mode, prev):
                m.publish(topic, payload, retain=True)
            self.error = None
        except MemoryError:
            # device mode sends every entity in one config: the device goes on, said plainly
            topic = payload = None
            self.error = ("the discovery config of %d entities does not fit in memory (expose fewer, or use "
                          "mode \"component\": one config per entity)" % len(ents))
            log("homeassistant: " + self.error)
        m.publish(self.base + "/status", "online", retain=True)
        now = d.announced(self.info, ents, self.prefix, self.mode)
        self.count = len(ents)
        ents = None
        d = None
        unload("iotutils.ha_discovery")   # (until the next announcement or check)
        if self.error is None and prev:
            for k in prev["entities"]:
                if k not in now["entities"]:   # a removed entity's retained state goes too
                    m.publish(self.base + "/" + k.split("/", 1)[1], "", retain=True)
        if self.error is None and now != prev:
            if kept:
                self._announced = now
            if self.on_announced is not None:
                self.on_announced(now)
        for oid in self._by_id:
            if self._by_id[oid][0] != "button":
                self.publish_state(oid)

    def _use(self, entities):
        # every check now, not at the next connect, entity by entity: the whole config (KBs) is
        # built only to be sent
        d = load("iotutils.ha_discovery")
        d.check_id("id", self.info.get("id"))
        ents = entities() if callable(entities) else entities
        by_id = {}
        for e in ents:
            e = d.entity(e)
            if e[1] in by_id:
                raise ValueError("object_id: %r used twice" % e[1])
            d.component(self.info, e)
            by_id[e[1]] = e
        self.entities = entities if callable(entities) else [by_id[e[1]] for e in ents]
        self.count = len(ents)
        # what states and commands need: (kind, extra) of each entity that has a state topic (a
        # sensor with a "key" reads <base>/info)
        self._by_id = {oid: (e[0], e[3]) for oid, e in by_id.items() if not (e[0] == "sensor" and e[3].get("key"))}

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
        return self.mqtt.publish(self.base + "/" + object_id, state_payload(e[0], e[1], value), retain=True)

    def publish_info(self, info):
        """The diagnostics JSON (version, uptime, heap, rssi, ip...) on <base>/info, retained."""
        return self.mqtt.publish(self.base + "/info", dumps(info), retain=True)

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
            value = parse_command(e[0], e[1], payload)
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
