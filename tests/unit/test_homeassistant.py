# iotutils.homeassistant: discovery payloads (device and per-component modes) checked against
# Home Assistant's rules, the no-ghost clean-up, commands and states, and the Bridge over a fake
# MQTT client. Runs on CPython and MicroPython.
import json

from mpunit import raises

from iotutils import ha_discovery
from iotutils import homeassistant as ha

# The part of Home Assistant's abbreviation table these payloads rely on (short -> full name),
# from https://www.home-assistant.io/integrations/mqtt/#supported-abbreviations-in-mqtt-discovery-messages
# (source: home-assistant/home-assistant.io, source/_integrations/mqtt.markdown, "Supported
# abbreviations", "... for device registry configuration", "... for origin info").
ABBREVIATIONS = {
    "avty_t": "availability_topic", "bri_scl": "brightness_scale", "cmd_t": "command_topic",
    "cmps": "components", "dev": "device", "dev_cla": "device_class", "ent_cat": "entity_category",
    "ic": "icon", "max": "max", "min": "min", "mode": "mode", "name": "name", "o": "origin",
    "ops": "options", "p": "platform", "pl_inst": "payload_install", "pl_prs": "payload_press",
    "ptrn": "pattern", "stat_cla": "state_class", "stat_t": "state_topic", "step": "step",
    "sup_clrm": "supported_color_modes", "uniq_id": "unique_id", "unit_of_meas": "unit_of_measurement",
    "val_tpl": "value_template", "pl_avail": "payload_available", "pl_not_avail": "payload_not_available",
    "json_attr_t": "json_attributes_topic", "l_ver_t": "latest_version_topic", "rel_u": "release_url",
    "rel_s": "release_summary", "en": "enabled_by_default", "e": "encoding", "ret": "retain",
    "clrm": "color_mode",
}
DEVICE_ABBREVIATIONS = {"cu": "configuration_url", "cns": "connections", "ids": "identifiers", "name": "name",
                        "mf": "manufacturer", "mdl": "model", "mdl_id": "model_id", "hw": "hw_version",
                        "sw": "sw_version", "sa": "suggested_area", "sn": "serial_number"}
ORIGIN_ABBREVIATIONS = {"name": "name", "sw": "sw_version", "url": "support_url"}
# full option names that have no abbreviation (valid as they are)
UNABBREVIATED = {"schema", "brightness"}
# what each platform needs (its configuration's required options, plus what we rely on)
REQUIRED = {
    "light": {"cmd_t", "schema", "stat_t", "sup_clrm"}, "switch": {"cmd_t", "stat_t"},
    "number": {"cmd_t", "stat_t", "min", "max", "step"}, "text": {"cmd_t", "stat_t", "max"},
    "select": {"cmd_t", "ops", "stat_t"}, "sensor": {"stat_t"}, "button": {"cmd_t"},
    "update": {"stat_t", "cmd_t", "pl_inst"},
}
# options HA reads as strings (a null there is an error, not "unset")
STRINGS = {"name", "uniq_id", "stat_t", "cmd_t", "avty_t", "dev_cla", "stat_cla", "unit_of_meas", "ent_cat",
           "val_tpl", "ic", "ptrn", "pl_inst", "p", "schema", "mode"}

INFO = {"id": "0200000001ab", "name": "Desk lamp", "sw": "0.1.0", "model": "iotutils lamp",
        "url": "http://192.168.1.20/admin"}
ENTITIES = [
    ("light", "lamp", "Lamp", {"rgb": True, "scale": 255}),
    ("switch", "relay", "Relay", None),
    ("number", "bri", "Brightness", {"min": 0, "max": 100, "step": 1, "int": True, "unit": "%", "mode": "slider"}),
    ("number", "temp", "Target", {"min": 5.5, "max": 30.5, "step": 0.5}),
    ("text", "label", "Label", {"max": 32}),
    ("text", "mask", "Mask", {"max": 10, "hex": True}),
    ("select", "effect", "Effect", {"options": ["none", "rainbow", "breathe"]}),
    ("button", "restart", "Restart", {"device_class": "restart"}),
    ("update", "firmware", "Firmware", None),
] + ha.diagnostics()


def _walk(obj, path=""):
    if obj is None:
        raise AssertionError("None (null) at %s" % path)
    if isinstance(obj, dict):
        for k in obj:
            _walk(obj[k], path + "/" + k)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _walk(v, "%s[%d]" % (path, i))


def _check_component(c, kind, with_device, base="iotutils/0200000001ab/"):
    # (tests/integration/test_mqtt_device.py checks what devices publish with these rules too)
    for k in c:
        assert k in ABBREVIATIONS or k in UNABBREVIATED or (with_device and k in ("dev", "o")), (kind, k)
    for k in REQUIRED[kind]:
        assert k in c, (kind, k, c)
    for k in STRINGS:
        if k in c:
            assert isinstance(c[k], str) and c[k], (kind, k, c[k])
    if "ops" in c:
        assert c["ops"] and all(isinstance(o, str) for o in c["ops"])
    for k in ("stat_t", "cmd_t", "avty_t"):
        if k in c:
            assert "+" not in c[k] and "#" not in c[k] and c[k].startswith(base)


def _check_device(d, dev_id="0200000001ab", name="Desk lamp"):
    assert set(d) <= set(DEVICE_ABBREVIATIONS) and d["ids"] == [dev_id] and d["name"] == name


def test_device_discovery_payload_follows_the_contract():
    msgs = ha.discovery(INFO, ENTITIES)
    assert len(msgs) == 1
    topic, payload = msgs[0]
    assert topic == "homeassistant/device/0200000001ab/config"
    d = json.loads(payload)
    _walk(d)
    assert set(d) == {"dev", "o", "avty_t", "cmps"}
    _check_device(d["dev"])
    assert set(d["o"]) <= set(ORIGIN_ABBREVIATIONS) and d["o"]["name"] == "iotutils"
    assert d["avty_t"] == "iotutils/0200000001ab/status"
    assert sorted(d["cmps"]) == sorted(e[1] for e in ENTITIES)
    uids = []
    for e in ENTITIES:
        c = d["cmps"][e[1]]
        assert c["p"] == e[0]
        _check_component(c, e[0], False)
        uids.append(c["uniq_id"])
        assert c["uniq_id"] == "0200000001ab_" + e[1]
    assert len(set(uids)) == len(uids)
    assert len(payload) < 4096, len(payload)     # one MQTT message, modest for an ESP32 to build
    lamp = d["cmps"]["lamp"]
    assert lamp["schema"] == "json" and lamp["sup_clrm"] == ["rgb"] and lamp["bri_scl"] == 255
    # brightness in commands on its own: without the flag an older HA sent none, and a current one
    # folds it into an RGB light's colour and drops it
    assert lamp["brightness"] is True
    assert "clrm" not in lamp   # deprecated by the HA versions that read device mode
    assert lamp["cmd_t"] == "iotutils/0200000001ab/lamp/set" and lamp["stat_t"] == "iotutils/0200000001ab/lamp"
    assert d["cmps"]["mask"]["ptrn"] and d["cmps"]["label"]["max"] == 32
    assert d["cmps"]["rssi"]["ent_cat"] == "diagnostic" and d["cmps"]["rssi"]["unit_of_meas"] == "dBm"
    assert d["cmps"]["rssi"]["stat_t"] == "iotutils/0200000001ab/info"
    assert d["cmps"]["rssi"]["val_tpl"] == "{{ value_json.rssi }}"
    assert d["cmps"]["firmware"]["pl_inst"] == "install" and d["cmps"]["firmware"]["dev_cla"] == "firmware"
    assert d["cmps"]["restart"]["dev_cla"] == "restart"


def test_component_discovery_payloads_for_older_home_assistant():
    msgs = ha.discovery(INFO, ENTITIES, prefix="ha", mode="component")
    assert len(msgs) == len(ENTITIES)
    uids = set()
    for (topic, payload), e in zip(msgs, ENTITIES):
        assert topic == "ha/%s/0200000001ab/%s/config" % (e[0], e[1])
        c = json.loads(payload)
        _walk(c)
        _check_component(c, e[0], True)
        assert "p" not in c
        _check_device(c["dev"])
        assert c["avty_t"] == "iotutils/0200000001ab/status"
        # HA before 2024.11 takes supported_color_modes only with the color_mode flag
        assert c.get("clrm") is (True if e[0] == "light" else None), (e, c)
        uids.add(c["uniq_id"])
        assert len(payload) < 1024, (topic, len(payload))
    assert len(uids) == len(ENTITIES)


def test_bad_descriptions_name_the_field():
    for bad, field in (((("lamp", "x", "X", None),), "kind"), ((("switch", "a b", "X", None),), "object_id"),
                       ((("switch", "x", "", None),), "name"), ((("select", "x", "X", {"options": []}),), "options"),
                       ((("number", "x", "X", {"min": 5, "max": 5}),), "max"),
                       ((("switch", "x", "X"), ("button", "x", "Y")), "object_id")):
        e = raises(ValueError, ha.discovery, INFO, list(bad))
        assert str(e).startswith(field + ":"), (field, e)
    e = raises(ValueError, ha.discovery, dict(INFO, id="no/slash"), [])
    assert str(e).startswith("id:")
    raises(ValueError, ha.discovery, INFO, [], mode="other")
    raises(ValueError, ha.discovery, INFO, [], prefix="ha/#")
    assert ha.check_id("x", "Ab_9-") == "Ab_9-"
    raises(ValueError, ha.check_id, "x", "é")
    raises(ValueError, ha.check_id, "x", "a" * 65)


def test_no_ghost_entities_device_mode():
    prev = ha.announced(INFO, ENTITIES)
    now = [e for e in ENTITIES if e[1] not in ("relay", "effect")]
    msgs = ha.discovery(INFO, now, previous=prev)
    assert [t for t, _ in msgs] == ["homeassistant/device/0200000001ab/config"] * 2
    first, last = json.loads(msgs[0][1]), json.loads(msgs[1][1])
    assert first["cmps"]["relay"] == {"p": "switch"} and first["cmps"]["effect"] == {"p": "select"}
    assert "relay" not in last["cmps"] and "effect" not in last["cmps"] and "lamp" in last["cmps"]
    # nothing removed: just the config
    assert len(ha.discovery(INFO, ENTITIES, previous=prev)) == 1
    # no entity left: the device config is cleared
    assert ha.discovery(INFO, [], previous=prev) == [("homeassistant/device/0200000001ab/config", "")]


def test_another_devices_record_or_a_broken_one_removes_nothing():
    # a record imported from another device's settings named that device: announcing cleared its
    # config, and it vanished from HA; a record edited by hand stopped every announcement
    other = ha.announced(dict(INFO, id="0200000009ff"), ENTITIES)
    msgs = ha.discovery(INFO, ENTITIES, previous=other)
    assert msgs == [("homeassistant/device/0200000001ab/config", msgs[0][1])] and msgs[0][1]
    assert ha.usable_record(other) == other and ha.usable_record(ha.announced(INFO, ENTITIES))
    for broken in ({"prefix": "homeassistant", "mode": "device", "id": "x", "entities": ["switch"]},
                   {"prefix": "homeassistant", "mode": "device", "id": "x", "entities": "switch/a"},
                   {"prefix": "homeassistant", "mode": "both", "id": "x", "entities": []},
                   {"prefix": "a/#", "mode": "device", "id": "x", "entities": []},
                   {"prefix": "homeassistant", "mode": "device", "id": 5, "entities": []},
                   {"prefix": "homeassistant", "mode": "device", "id": "x", "entities": ["lamp/a"]},
                   "garbage", [1], None, {}):
        assert ha.usable_record(broken) is None, broken
    m = _FakeMQTT()
    ha.Bridge(m, INFO, ENTITIES, get=lambda oid: None,
              announced={"prefix": "homeassistant", "mode": "device", "id": "0200000001ab", "entities": ["switch"]})
    for cb in m.cbs:   # the client connected
        cb()
    assert [t for t, p, _ in m.out if t.endswith("/config") and p] == ["homeassistant/device/0200000001ab/config"]
    assert ("iotutils/0200000001ab/status", "online", True) in m.out
    # HA's birth message stays on homeassistant/status whatever the discovery prefix
    m = _FakeMQTT()
    ha.Bridge(m, INFO, ENTITIES, prefix="ha")
    assert set(m.subs) == {"iotutils/0200000001ab/+/set", "ha/status", "homeassistant/status"}


def test_no_ghost_entities_component_mode_and_mode_changes():
    prev = ha.announced(INFO, ENTITIES, mode="component")
    msgs = ha.discovery(INFO, ENTITIES[1:], mode="component", previous=prev)
    assert msgs[0] == ("homeassistant/light/0200000001ab/lamp/config", "")
    assert len(msgs) == len(ENTITIES)
    # component -> device: every old per-entity topic emptied, then the device config
    msgs = ha.discovery(INFO, ENTITIES, mode="device", previous=prev)
    empties = [t for t, p in msgs if p == ""]
    assert len(empties) == len(ENTITIES) and msgs[-1][0] == "homeassistant/device/0200000001ab/config"
    # device -> component, and a new prefix: the old device topic emptied under the old prefix
    prev = ha.announced(INFO, ENTITIES)
    msgs = ha.discovery(INFO, ENTITIES, prefix="ha2", mode="component", previous=prev)
    assert msgs[0] == ("homeassistant/device/0200000001ab/config", "")
    assert all(t.startswith("ha2/") for t, _ in msgs[1:])


def test_states_and_commands():
    rgb = {"rgb": True, "scale": 255}
    s = json.loads(ha.state_payload("light", rgb, {"on": True, "brightness": 128, "rgb": (255, 0, 10)}))
    assert s == {"state": "ON", "brightness": 128, "color_mode": "rgb", "color": {"r": 255, "g": 0, "b": 10}}
    assert json.loads(ha.state_payload("light", {"brightness": False}, {"on": False})) == \
        {"state": "OFF", "color_mode": "onoff"}
    # an RGB light off has no colour: then no "rgb" colour mode either (HA reads a colour whenever it
    # is set, and logged "Invalid or incomplete color value" at every switch-off)
    assert json.loads(ha.state_payload("light", rgb, {"on": False, "brightness": 0, "rgb": None})) == \
        {"state": "OFF", "brightness": 0}
    assert ha.parse_command("light", rgb, b'{"state":"ON","brightness":300,"color":{"r":1,"g":2,"b":3}}') == \
        {"on": True, "brightness": 255, "rgb": (1, 2, 3)}
    assert ha.parse_command("light", rgb, b'{"state":"OFF"}') == {"on": False}
    raises(ValueError, ha.parse_command, "light", rgb, b"ON")
    raises(ValueError, ha.parse_command, "light", rgb, b'{"state":"DIM"}')
    assert ha.state_payload("switch", None, True) == "ON" and ha.parse_command("switch", None, b"off") is False
    raises(ValueError, ha.parse_command, "switch", None, b"maybe")
    n = {"min": 0, "max": 100, "int": True}
    # the number as sent, within range: the variable's own coercion makes it whole (Int(3.9) is 3)
    assert ha.parse_command("number", n, b"42.6") == 42.6 and ha.parse_command("number", n, b"-5") == 0
    big = {"min": -(2 ** 63), "max": 2 ** 63 - 1, "int": True}
    assert ha.parse_command("number", big, b"9007199254740993") == 9007199254740993   # exact, not a float
    assert ha.parse_command("number", big, b"-12") == -12 and ha.parse_command("number", big, b"+12") == 12
    raises(ValueError, ha.parse_command, "number", big, b"--5")
    assert ha.parse_command("number", {"min": 0.5, "max": 2.5}, "1.25") == 1.25
    assert ha.state_payload("number", n, 42.0) == "42"
    raises(ValueError, ha.parse_command, "number", n, b"lots")
    # non-finite numbers and Python-only spellings are refused (NaN clamped to the maximum before)
    for bad in (b"nan", b"inf", b"-inf", b"1e999", b"1_0"):
        e = raises(ValueError, ha.parse_command, "number", n, bad)
        assert str(e).startswith("payload:"), (bad, e)
    # a light's fields: a ValueError naming the field, whatever the JSON holds
    for bad, field in ((b'{"brightness":[1]}', "brightness"), (b'{"brightness":null}', "brightness"),
                       (b'{"brightness":true}', "brightness"), (b'{"brightness":"abc"}', "brightness"),
                       (b'{"brightness":1e999}', "brightness"), (b'{"color":{"r":[1]}}', "color.r"),
                       (b'{"color":{"g":1e999}}', "color.g")):
        e = raises(ValueError, ha.parse_command, "light", rgb, bad)
        assert str(e).startswith(field + ":"), (bad, e)
    assert ha.parse_command("text", {"max": 5}, "héllo".encode()) == "héllo"
    assert ha.parse_command("text", {"max": 5}, b"toolong") == "toolong"   # a Str variable truncates it
    raises(ValueError, ha.parse_command, "text", None, b"\xff")
    assert ha.parse_command("text", {"hex": True}, b"0x1F") == 31 and ha.state_payload("text", {"hex": True}, 31) == "0x1f"
    raises(ValueError, ha.parse_command, "text", {"hex": True}, b"xyz")
    # a negative Hex prints as -0x1f (str() of the variable), which the discovery pattern allows
    assert ha.state_payload("text", {"hex": True}, -31) == "-0x1f" and ha.parse_command("text", {"hex": True}, b"-0x1f") == -31
    for bad in (b"0x-1f", b"+1f", b"1_f", b"", b"-", b"0x"):
        raises(ValueError, ha.parse_command, "text", {"hex": True}, bad)
    import re
    for ok in ("0x1f", "-0x1f", "1F", "0"):
        assert re.match(ha_discovery._HEX_PATTERN, ok), ok
    sel = {"options": ["a", "b"]}
    assert ha.parse_command("select", sel, b"b") == "b"
    spaced = {"options": ["eco ", " boost", "b"]}   # (stripped, "eco " was refused)
    assert ha.parse_command("select", spaced, b"eco ") == "eco " and ha.parse_command("select", spaced, b" boost") == " boost"
    assert ha.parse_command("select", spaced, b" b\n") == "b"
    raises(ValueError, ha.parse_command, "select", sel, b"c")
    assert ha.parse_command("button", None, b"PRESS") is True
    assert ha.parse_command("update", None, b"install") == "install"
    raises(ValueError, ha.parse_command, "sensor", None, b"1")
    u = json.loads(ha.state_payload("update", None, {"installed_version": "1.0", "latest_version": "1.1",
                                                     "release_url": None, "update_percentage": None}))
    assert u == {"installed_version": "1.0", "latest_version": "1.1", "in_progress": False, "update_percentage": None}
    u = json.loads(ha.state_payload("update", None, {"installed_version": "1.0", "in_progress": True,
                                                     "update_percentage": 40}))
    assert u["in_progress"] is True and u["update_percentage"] == 40


class _FakeMQTT:
    def __init__(self):
        self.will = None
        self.subs = {}
        self.cbs = []
        self.out = []

    def set_will(self, topic, payload, retain=True, qos=0):
        self.will = (topic, payload, retain)

    def on_connect(self, cb):
        self.cbs.append(cb)

    def subscribe(self, f, cb, qos=0):
        self.subs[f] = cb

    def publish(self, topic, payload, qos=0, retain=False):
        self.out.append((topic, payload, retain))
        return True


def test_the_discovery_code_goes_after_an_announcement_and_comes_back_when_asked():
    # a connected device holds the states and commands only: the configs and checks are loaded
    # while it announces itself or checks an entity
    import sys
    m = _FakeMQTT()
    b = ha.Bridge(m, INFO, ENTITIES, get=lambda oid: None)
    assert "iotutils.ha_discovery" in sys.modules     # (the entities were checked)
    for cb in m.cbs:
        cb()
    assert "iotutils.ha_discovery" not in sys.modules
    assert m.out[0][0] == "homeassistant/device/0200000001ab/config"
    b.publish_state("relay", True)                    # states and commands need none of it
    m.subs["iotutils/0200000001ab/+/set"]("iotutils/0200000001ab/relay/set", b"ON")
    assert "iotutils.ha_discovery" not in sys.modules and m.out[-1][:2] == ("iotutils/0200000001ab/relay", "ON")
    assert ha.discovery(INFO, ENTITIES)[0][0] == "homeassistant/device/0200000001ab/config"   # loaded again
    from iotutils.homeassistant import check_id   # (from-imports ask the module's __getattr__)
    assert check_id("id", "ok") == "ok"


def test_bridge_announces_and_handles_commands():
    m = _FakeMQTT()
    values = {"lamp": {"on": True, "brightness": 10, "rgb": (1, 2, 3)}, "relay": False, "bri": 50, "temp": 20.0,
              "label": "hi", "mask": 15, "effect": "none", "firmware": {"installed_version": "0.1.0"}}
    sets = []
    saved = []

    def setter(oid, v):
        sets.append((oid, v))
        values[oid] = v

    b = ha.Bridge(m, INFO, ENTITIES, get=values.get, set=setter, on_announced=saved.append)
    assert m.will == ("iotutils/0200000001ab/status", "offline", True)
    assert set(m.subs) == {"iotutils/0200000001ab/+/set", "homeassistant/status"}
    for cb in m.cbs:   # the client connected
        cb()
    topics = [t for t, _, _ in m.out]
    assert topics[0] == "homeassistant/device/0200000001ab/config"
    assert topics[1] == "iotutils/0200000001ab/status" and m.out[1][1] == "online"
    assert all(r for _, _, r in m.out)                     # everything retained
    assert "iotutils/0200000001ab/relay" in topics and "iotutils/0200000001ab/restart" not in topics
    assert saved == [ha.announced(INFO, ENTITIES)]
    m.out = []
    m.subs["iotutils/0200000001ab/+/set"]("iotutils/0200000001ab/relay/set", b"ON")
    assert sets == [("relay", True)] and m.out == [("iotutils/0200000001ab/relay", "ON", True)]
    m.subs["iotutils/0200000001ab/+/set"]("iotutils/0200000001ab/bri/set", b"nonsense")   # logged, ignored
    m.subs["iotutils/0200000001ab/+/set"]("iotutils/0200000001ab/nosuch/set", b"1")
    m.subs["iotutils/0200000001ab/+/set"]("iotutils/0200000001ab/restart/set", b"PRESS")
    assert sets[-1] == ("restart", True) and len(sets) == 2
    # a retained command is stale (Home Assistant never retains one): ignored, or a retained
    # "PRESS" would restart the device at every connect, and a retained value be written at each boot
    m.retained = True
    m.subs["iotutils/0200000001ab/+/set"]("iotutils/0200000001ab/restart/set", b"PRESS")
    m.subs["iotutils/0200000001ab/+/set"]("iotutils/0200000001ab/relay/set", b"OFF")
    m.retained = False
    assert len(sets) == 2
    # a light command of the wrong types: logged and the real state published, nothing set
    m.out = []
    m.subs["iotutils/0200000001ab/+/set"]("iotutils/0200000001ab/lamp/set", b'{"brightness": [1]}')
    assert len(sets) == 2 and m.out and m.out[0][0] == "iotutils/0200000001ab/lamp"
    m.out = []
    m.subs["homeassistant/status"]("homeassistant/status", b"online")   # HA restarted: announce again
    assert m.out[0][0] == "homeassistant/device/0200000001ab/config" and len(saved) == 1
    b.publish_info({"version": "0.1.0", "uptime": 5, "heap": 40000, "rssi": -60, "ip": "192.168.1.20"})
    assert m.out[-1][0] == "iotutils/0200000001ab/info" and json.loads(m.out[-1][1])["rssi"] == -60


def test_bridge_refused_commands_entity_changes_and_ha_coming_back():
    m = _FakeMQTT()
    m.connected = True
    values = {"relay": False, "bri": 50}
    saved = []
    back = []

    def setter(oid, v):
        if oid == "bri" and v > 80:
            raise ValueError("bri: too bright")      # the app's own rule
        values[oid] = v

    ents = [("switch", "relay", "Relay", None), ("number", "bri", "Bri", {"min": 0, "max": 100, "int": True})]
    b = ha.Bridge(m, INFO, ents, get=values.get, set=setter, on_announced=saved.append,
                  on_ha_online=lambda: back.append(1))
    cmd = m.subs["iotutils/0200000001ab/+/set"]
    # a payload that does not parse, or a value set() refuses: the real state goes out again
    for payload in (b"maybe", b"ON "):
        m.out = []
        cmd("iotutils/0200000001ab/relay/set", payload)
    assert values["relay"] is True and m.out == [("iotutils/0200000001ab/relay", "ON", True)]
    m.out = []
    cmd("iotutils/0200000001ab/bri/set", b"90")
    assert values["bri"] == 50 and m.out == [("iotutils/0200000001ab/bri", "50", True)]
    m.out = []
    cmd("iotutils/0200000001ab/bri/set", b"lots")
    assert m.out == [("iotutils/0200000001ab/bri", "50", True)]
    # HA's birth message goes to on_ha_online when given (a delayed announcement)
    m.out = []
    m.subs["homeassistant/status"]("homeassistant/status", b"online")
    assert back == [1] and m.out == []
    # the entity list changes while connected: announced again, the gone one removed
    raises(ValueError, b.set_entities, ents + [("nope", "x", "X", None)])
    assert [e[1] for e in b.entities] == ["relay", "bri"]         # unchanged by the bad list
    b.announce()
    b.set_entities(ents[:1])
    cfgs = [json.loads(p) for t, p, _ in m.out if t.endswith("/config")]
    assert cfgs[-2]["cmps"]["bri"] == {"p": "number"} and "bri" not in cfgs[-1]["cmps"]
    assert saved[-1]["entities"] == ["switch/relay"]


def test_a_removed_entity_leaves_no_retained_state():
    m = _FakeMQTT()
    prev = ha.announced(INFO, ENTITIES)
    ha.Bridge(m, INFO, [e for e in ENTITIES if e[1] != "relay"], get=lambda oid: None, announced=prev)
    for cb in m.cbs:
        cb()
    assert ("iotutils/0200000001ab/relay", "", True) in m.out
    assert not [t for t, p, _ in m.out if p == "" and t != "iotutils/0200000001ab/relay" and not t.endswith("/config")]


def test_the_announced_record_may_live_in_a_persistent_read_at_each_announcement():
    # a device keeps what it announced in its settings store (a PersistentJSON), not in the heap
    # between connects: the Bridge reads it when it announces and writes it back through set
    class Stored:
        reads = 0
        record = None

        @property
        def value(self):
            Stored.reads += 1
            return self.record

        def set(self, rec):
            self.record = rec

    m = _FakeMQTT()
    store = Stored()
    store.record = ha.announced(INFO, ENTITIES)
    b = ha.Bridge(m, INFO, [e for e in ENTITIES if e[1] != "relay"], get=lambda oid: None, announced=store,
                  on_announced=store.set)
    for cb in m.cbs:
        cb()
    assert Stored.reads == 1 and ("iotutils/0200000001ab/relay", "", True) in m.out   # the gone one cleared
    assert store.record["entities"] == ha.announced(INFO, [e for e in ENTITIES if e[1] != "relay"])["entities"]
    assert not [v for v in b.__dict__.values() if isinstance(v, dict) and "entities" in v]   # not kept
    m.out = []
    for cb in m.cbs:   # the next connect: nothing to clear any more
        cb()
    assert Stored.reads == 2 and not [t for t, p, _ in m.out if p == "" and not t.endswith("/config")]
    # another device's record (a cloned settings store) is not ours to clear
    other = dict(ha.announced(INFO, ENTITIES), id="0200000009ff")
    store.record = other
    m.out = []
    for cb in m.cbs:
        cb()
    assert not [t for t, p, _ in m.out if p == ""] and store.record["id"] == INFO["id"]


def test_entities_may_come_from_a_function_asked_at_each_announcement():
    # a device hands its entity list as a function (MqttDevice._entities): the Bridge keeps only
    # what states and commands need between announcements, and asks again at each one
    m = _FakeMQTT()
    asked = []
    ents = list(ENTITIES)

    def entities():
        asked.append(1)
        return list(ents)

    values = {"relay": True, "bri": 40}
    sets = []
    b = ha.Bridge(m, INFO, entities, get=values.get, set=lambda oid, v: sets.append((oid, v)))
    assert len(asked) == 1 and b.count == len(ENTITIES)          # checked once when made
    assert b.entities is entities                                # no list kept
    for cb in m.cbs:
        cb()
    assert len(asked) == 2
    cfg = json.loads(m.out[0][1])
    assert sorted(cfg["cmps"]) == sorted(e[1] for e in ENTITIES)   # every entity announced
    topics = [t for t, _, _ in m.out]
    assert "iotutils/0200000001ab/relay" in topics and "iotutils/0200000001ab/bri" in topics
    assert "iotutils/0200000001ab/rssi" not in topics and "iotutils/0200000001ab/restart" not in topics
    cmd = m.subs["iotutils/0200000001ab/+/set"]
    cmd("iotutils/0200000001ab/relay/set", b"OFF")
    cmd("iotutils/0200000001ab/rssi/set", b"1")                  # a sensor read from <base>/info: no commands
    assert sets == [("relay", False)]
    # the list changes: set_entities takes the function again, announces, and the gone one goes
    ents.remove(("switch", "relay", "Relay", None))
    m.connected = True
    m.out = []
    b.set_entities(entities)
    assert b.count == len(ENTITIES) - 1
    assert json.loads(m.out[0][1])["cmps"]["relay"] == {"p": "switch"}
    m.out = []
    cmd("iotutils/0200000001ab/relay/set", b"ON")
    assert sets == [("relay", False)] and m.out == []


def test_a_config_that_does_not_fit_in_memory_is_said_and_the_device_goes_on():
    class Tight(_FakeMQTT):
        def publish(self, topic, payload, qos=0, retain=False):
            if topic.endswith("/config"):
                raise MemoryError("memory allocation failed")
            return _FakeMQTT.publish(self, topic, payload, qos, retain)
    m = Tight()
    saved = []
    b = ha.Bridge(m, INFO, ENTITIES, get=lambda oid: None, on_announced=saved.append)
    for cb in m.cbs:
        cb()
    assert b.error and "does not fit in memory" in b.error and "component" in b.error
    assert ("iotutils/0200000001ab/status", "online", True) in m.out and saved == []
