# Device app for tests/integration/test_device.py: iotutils.Device with everything on, plus a user route and
# user tasks (dev.every) the tests watch, and a way to make a task hang (watchdog).
# Configuration (fs/device_cfg.json, optional): {"networks": [[ssid, password]], "health_timeout_s": N,
# "wdt_timeout_ms": N, "wifi_retry_s": N, "start_only": true (dev.start() and an own loop, no run()),
# "mqtt": broker URL}
# OTA: repo acme/lamp on the fake GitHub named by IOTUTILS_TEST_API, if set; "ota_channel": channel;
# "app_ota": true runs App OTA's app_boot() first and imports the app's `userapp` module.
import json
import os
import time

import _thread

try:
    with open("device_cfg.json") as f:
        cfg = json.load(f)
except OSError:
    cfg = {}

if cfg.get("app_ota"):
    from iotutils.ota import app_boot
    app_boot()
    try:
        import userapp
        print("USERAPP %s" % userapp.VERSION)
    except ImportError:
        print("USERAPP none")

import iotutils
from iotutils import hal
from iotutils.device import Device
from iotutils.wifi import Wifi

# class attributes: what an app sets to tune the device
if "health_timeout_s" in cfg:
    Device.health_timeout_s = cfg["health_timeout_s"]
if "wdt_timeout_ms" in cfg:
    Device.wdt_timeout_ms = cfg["wdt_timeout_ms"]
if "wifi_retry_s" in cfg:
    Wifi.retry_s = cfg["wifi_retry_s"]
    Wifi.scan_interval_s = cfg["wifi_retry_s"]

api = os.getenv("IOTUTILS_TEST_API")
dev = iotutils.Device(name="devtest", ota_repo="acme/lamp" if api else None, ota_api=api,
                      ota_pubkey=os.getenv("IOTUTILS_TEST_PUBKEY"),  # the fake GitHub signs with it
                      ota_allow_http=bool(api) and api.startswith("http:"),
                      ota_channel=cfg.get("ota_channel", "release"), mqtt=cfg.get("mqtt"))
for ssid, password in cfg.get("networks", []):
    if ssid not in [n["ssid"] for n in dev.wifi.networks()]:
        dev.wifi.add_network(ssid, password)

ticks = [0, 0]     # runs of the fast task, of the failing task
hang = [False]


@dev.every(50)
def tick():
    ticks[0] += 1
    while hang[0]:   # a stuck user task: the main loop stops feeding the watchdog
        time.sleep(0.05)


def failing():
    ticks[1] += 1
    raise RuntimeError("task failure %d" % ticks[1])


dev.every(500, failing)


@dev.app.route("/t/info")
def info(req):
    app = None
    if dev.ota is not None:
        from iotutils.ota import app_status
        app = app_status()
    return {"ticks": ticks[0], "failures": ticks[1], "pending": hal.ota_pending(), "slot": hal.ota_running(),
            "reset_cause": hal.reset_cause(), "uptime_ms": hal.uptime_ms(), "app": app}


@dev.app.route("/t/app_update", methods=("POST",))
def app_update(req):
    # App OTA of folder "app" at the channel's ref, then a reboot (from a thread: answer first)
    _thread.start_new_thread(dev.ota.update_app, ("app",))
    return {"started": True}


@dev.app.route("/t/modules")
def modules(req):
    import sys

    # preloaded: the simulator's heap model imported the whole toolbox at boot (PyPI runtime)
    return {"loaded": sorted(m for m in sys.modules if m.startswith("iotutils")),
            "preloaded": bool(os.getenv("IOTUTILS_PRELOAD"))}


@dev.app.route("/t/hang", methods=("POST",))
def do_hang(req):
    hang[0] = True
    return {"hanging": True}


if cfg.get("start_only"):
    dev.start()
    while True:      # the app's own loop, without dev.poll(): the watchdog must stay unarmed
        time.sleep(0.1)
dev.run()
