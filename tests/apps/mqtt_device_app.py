# Device app for tests/integration/test_mqtt_device.py and test_mqtt_fleet.py: iotutils.Device with
# MQTT (Home Assistant discovery), a variable of every type exposed, a colour Alexa light, and OTA
# from the fake GitHub named by IOTUTILS_TEST_API (repo acme/lamp, signed by IOTUTILS_TEST_PUBKEY).
# Configuration (fs/device_cfg.json): {"mqtt": URL, "networks": [[ssid, password]], "keepalive": s,
# "info_every_s": s, "announce_delay_ms": ms, "check_every_h": h, "health_timeout_s": s,
# "wifi_retry_s": s, "bad_version": V (an image of that version crashes at boot: the bootloader goes
# back to the previous one), "expose": [names] (default all; [] for the fleet's
# devices), "admin_pwhash": a hash_password() string stored as the admin password, "own_loop": true
# (Device.start() and a loop of the app's own calling poll(), instead of Device.run()), "bridge_oom":
# true (fault injection: the Home Assistant bridge's entity table does not fit in the heap)}.
# Console: ONCHANGE <name> on=<bool> bri=<0..100> when HA changed the Alexa light (main loop),
# PING <payload> for a message on app/<id>/ping and APP CONNECTED (the app's own subscription and
# on_connect callback on dev.mqtt);
# POST /t/set {"name", "value"}: the app itself changes a variable; POST /t/subscribe {"topic",
# "unsubscribe"?}: the app subscribes (or unsubscribes) from a web handler, GOT <topic> <payload> then.
import json
import os

from iotutils import appimage, hal
from iotutils.device import Device
from iotutils.mqtt_device import MqttDevice
from iotutils.persist import (PersistentBool, PersistentFloat, PersistentHex, PersistentInt, PersistentRange,
                              PersistentRGB, PersistentStr)
from iotutils.wifi import Wifi

try:
    with open("device_cfg.json") as f:
        cfg = json.load(f)
except OSError:
    cfg = {}

for k in ("keepalive", "info_every_s", "announce_delay_ms", "check_every_h"):
    if k in cfg:
        setattr(MqttDevice, k, cfg[k])
if cfg.get("bridge_oom"):
    from iotutils import homeassistant

    def _no_room(self, entities):
        raise MemoryError("memory allocation failed, allocating 1552 bytes")
    homeassistant.Bridge._use = _no_room
if "health_timeout_s" in cfg:
    Device.health_timeout_s = cfg["health_timeout_s"]
if "wifi_retry_s" in cfg:
    Wifi.retry_s = cfg["wifi_retry_s"]
    Wifi.scan_interval_s = cfg["wifi_retry_s"]

url = cfg.get("mqtt")
version = (appimage.read_desc(hal.partition(hal.ota_running())) or {}).get("version")
if cfg.get("bad_version") and version == cfg["bad_version"]:
    raise RuntimeError("BAD IMAGE %s: crashes at boot" % version)

api = os.getenv("IOTUTILS_TEST_API")
dev = Device(name=cfg.get("name", "mqttdev"), mqtt=url, ota_repo="acme/lamp" if api else None, ota_api=api,
             ota_pubkey=os.getenv("IOTUTILS_TEST_PUBKEY"), ota_allow_http=bool(api) and api.startswith("http:"))
for ssid, password in cfg.get("networks", []):
    if ssid not in [n["ssid"] for n in dev.wifi.networks()]:
        dev.wifi.add_network(ssid, password)

if cfg.get("admin_pwhash"):
    pw = PersistentStr("pwhash", default="", folder="admin", max_length=200)
    if not pw.value:
        pw.value = cfg["admin_pwhash"]

VARS = {
    "on": PersistentBool("on", default=False, folder="app"),
    "bri": PersistentRange("bri", 0, 100, default=50, folder="app"),
    "count": PersistentInt("count", default=0, folder="app"),
    "gain": PersistentFloat("gain", default=1.5, folder="app"),
    "label": PersistentStr("label", default="hello", folder="app", max_length=16),
    "effect": PersistentStr("effect", default="none", folder="app", choices=("none", "rainbow", "breathe")),
    "mask": PersistentHex("mask", default=0x1F, folder="app"),
    "colour": PersistentRGB("colour", default=(255, 128, 0), folder="app"),
}
for name in cfg.get("expose", ("on", "bri", "count", "gain", "label", "effect", "mask", "colour")):
    dev.expose(VARS[name], name[0].upper() + name[1:])


def changed(light):
    print("ONCHANGE %s on=%s bri=%d" % (light.name, light.on, light.brightness))


dev.alexa.add("Desk lamp", on_change=changed, dimmable=True, color=True)


if dev.mqtt is not None:   # the app's own use of the client: carried over when settings change
    dev.mqtt.subscribe("app/%s/ping" % dev.mqtt.client_id, lambda t, p: print("PING %s" % p.decode()))
    dev.mqtt.on_connect(lambda: print("APP CONNECTED"))


@dev.app.route("/t/set", methods=("POST",))
def set_var(req):
    d = req.json()
    return {"value": VARS[d["name"]].set(d["value"])}


@dev.app.route("/t/subscribe", methods=("POST",))
def subscribe(req):
    # an app that subscribes (and unsubscribes, flushes) from a web handler, long after the connect
    d = req.json()
    if d.get("unsubscribe"):
        dev.mqtt.unsubscribe(d["topic"])
    else:
        dev.mqtt.subscribe(d["topic"], lambda t, p: print("GOT %s %s" % (t, p.decode())))
    dev.mqtt.flush()
    return {"ok": True}


@dev.app.route("/t/mqtt")
def status(req):
    return dev.mqtt.status() if dev.mqtt else {}


@dev.app.route("/t/modules")
def modules(req):
    import sys

    # preloaded: the simulator's heap model imported the whole toolbox at boot (PyPI runtime)
    return {"loaded": sorted(m for m in sys.modules if m.startswith("iotutils")),
            "preloaded": bool(os.getenv("IOTUTILS_PRELOAD"))}


if cfg.get("own_loop"):
    import time

    dev.start()
    while True:
        dev.poll()
        time.sleep_ms(20)
dev.run()
