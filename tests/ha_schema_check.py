"""Home Assistant's own MQTT discovery code judges our discovery messages. Run by
tests/integration/test_ha_schemas.py with the Python of .venv-ha (homeassistant 2024.3.3, the newest
release for Python 3.11: requirements-ha.txt), never imported by the main suite.

For every message iotutils.homeassistant builds (both modes, every kind of entity a device has), it
does what HA's discovery does with a message on its topic: the topic through HA's TOPIC_MATCHER and
SUPPORTED_COMPONENTS, the abbreviations expanded with HA's own tables (options, device, origin), the
origin through MQTT_ORIGIN_INFO_SCHEMA, then the platform's DISCOVERY_SCHEMA (HA drops the whole
message when it raises), and lists every option the schema removed (HA ignores those silently).
Device mode (HA 2024.11+) is not in this release: each component under "cmps" is checked as 2024.11
does it, merged with the shared device, origin and availability, against this release's platform
schemas. Prints one JSON object: {"checked": n, "failures": [...], "dropped": [...]}.
"""
import importlib
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "modules"), os.path.join(ROOT, "tests", "unit")]

from homeassistant.components.mqtt.abbreviations import (  # noqa: E402
    ABBREVIATIONS, DEVICE_ABBREVIATIONS, ORIGIN_ABBREVIATIONS)
from homeassistant.components.mqtt.discovery import SUPPORTED_COMPONENTS, TOPIC_MATCHER  # noqa: E402
from homeassistant.components.mqtt.mixins import MQTT_ORIGIN_INFO_SCHEMA  # noqa: E402

import test_homeassistant as unit  # noqa: E402
from iotutils import homeassistant as ha  # noqa: E402

# every kind of entity a device announces (the unit tests' set: each persistent type's entity, the
# restart button, the firmware, the diagnostics) plus Alexa's dimmable and on/off lights
INFO = unit.INFO
ENTITIES = unit.ENTITIES[:1] + [("light", "dim", "Dimmer", {"scale": 100}),
                                ("light", "plug", "Plug", {"brightness": False})] + unit.ENTITIES[1:]


def expand(payload):
    p = {ABBREVIATIONS.get(k, k): v for k, v in payload.items()}
    if "device" in p:
        p["device"] = {DEVICE_ABBREVIATIONS.get(k, k): v for k, v in p["device"].items()}
    if "origin" in p:
        p["origin"] = {ORIGIN_ABBREVIATIONS.get(k, k): v for k, v in p["origin"].items()}
    return p


def judge(where, kind, config, failures, dropped):
    if kind not in SUPPORTED_COMPONENTS:
        failures.append("%s: HA has no MQTT platform %r" % (where, kind))
        return
    p = expand(config)
    if "origin" in p:
        try:
            MQTT_ORIGIN_INFO_SCHEMA(p["origin"])
        except Exception as e:  # HA drops the message: "Unable to parse origin information"
            failures.append("%s: origin: %s" % (where, e))
            return
    schema = importlib.import_module("homeassistant.components.mqtt." + kind).DISCOVERY_SCHEMA
    try:
        out = schema(dict(p, platform="mqtt"))
    except Exception as e:
        failures.append("%s: %s" % (where, e))
        return
    gone = sorted(set(p) - set(out))
    if gone:
        dropped.append("%s: %s" % (where, ", ".join(gone)))


def main():
    failures, dropped, checked = [], [], 0
    for topic, payload in ha.discovery(INFO, ENTITIES, mode="component"):
        m = TOPIC_MATCHER.match(topic.replace("homeassistant/", "", 1))
        if not m:
            failures.append("%s: HA's discovery ignores this topic" % topic)
            continue
        judge(topic, m.group(1), json.loads(payload), failures, dropped)
        checked += 1
    (topic, payload), = ha.discovery(INFO, ENTITIES, mode="device")
    d = json.loads(payload)
    shared = {k: v for k, v in d.items() if k != "cmps"}
    for oid, c in d["cmps"].items():
        c = dict(c)
        kind = c.pop("p")
        if kind == "light":
            # the color_mode flag HA needed before 2024.11 (device mode leaves it out: deprecated there)
            c["clrm"] = True
        judge("%s cmps.%s" % (topic, oid), kind, dict(shared, **c), failures, dropped)
        checked += 1
    print(json.dumps({"checked": checked, "failures": failures, "dropped": dropped}))


if __name__ == "__main__":
    main()
