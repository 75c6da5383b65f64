# Home Assistant's discovery configs (iotutils.homeassistant's first half: see the contract at the
# top of that file): each entity's component, the device-mode config, the (topic, payload) list
# that announces a device and removes what it no longer has, and the checks of ids and entities.
# Needed only while a device announces itself (each connect, HA's birth message) or checks an
# entity it exposes: homeassistant.Bridge loads it for those moments and lets it go after an
# announcement, and homeassistant hands its names out (`ha.discovery(...)` works as before).
from iotutils.homeassistant import dumps

ORIGIN = "iotutils"
_KINDS = ("light", "switch", "number", "text", "select", "sensor", "button", "update")
_HEX_PATTERN = "^-?(0x|0X)?[0-9a-fA-F]+$"   # as a Hex variable prints itself: 0x1f, -0x1f


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


def entity(e):
    """e as (kind, object_id, name, extra dict), checked (ValueError naming the field)."""
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
    entity(e)
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
    kind, oid, name, x = entity(e)
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


def check_prefix(prefix):
    if not isinstance(prefix, str) or not prefix or "+" in prefix or "#" in prefix:
        raise ValueError("prefix: a topic level such as 'homeassistant' expected, got %r" % (prefix,))


def usable_record(previous):
    """previous (an announced() dict read back from storage) if it is one, else None: a record
    edited or cut short must not stop the device from announcing itself."""
    try:
        if previous["mode"] in ("device", "component") and isinstance(previous["prefix"], str) and \
                isinstance(previous["id"], str):
            check_prefix(previous["prefix"])
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
    check_prefix(prefix)
    entities = [entity(e) for e in entities]
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
            out.append((topic, dumps(device_config(info, entities, gone))))
        out.append((topic, dumps(device_config(info, entities))))
    else:
        for e in entities:
            out.append((config_topic(prefix, mode, info["id"], e[0], e[1]), dumps(component(info, e, True))))
    return out
