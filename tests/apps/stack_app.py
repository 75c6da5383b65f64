# Device app for bench/bench_stack.py: iotutils.Device with everything on (admin page, Alexa with a
# colour Hue light and a WeMo socket, MQTT with Home Assistant discovery, OTA from the fake GitHub,
# exposed variables) and the board's thread stacks replaced by the ones under test, so that the bench
# can find the smallest stack each thread role still works with.
#   IOTUTILS_STACK_WEB / IOTUTILS_STACK_HOUSEKEEPER / IOTUTILS_STACK_JOB   chip bytes for hal.WEB_STACK
#       (each web server thread), hal.HOUSEKEEPER_STACK (the housekeeping thread) and hal.JOB_STACK
#       (OTA, admin and MQTT jobs); unset: the board's. They are read when a thread starts
#       (WebServer._spawn, Housekeeper.start, the jobs' start_thread calls), so setting them before
#       Device() is enough.
#   IOTUTILS_MQTT             the broker (mqtt://...); IOTUTILS_STACK_WIFI "ssid:password" of a known network
#   IOTUTILS_TEST_API / IOTUTILS_TEST_PUBKEY   the fake GitHub (repo acme/lamp) and the owner's key
#   IOTUTILS_STACK_PWHASH     an admin password hash (scripts/nvs_provision.hash_password) stored at boot
#   IOTUTILS_STACK_HOST_IMPORTS   bytes for _compat._HOST_IMPORTS (what start_thread adds on the host
#       for nested imports), e.g. 0 for the bare model
# Prints "STACKS web=N housekeeper=N job=N" (what the threads get) before the boot report.
# The app adds nothing else: its own threads would not be the toolbox's.
import os

from iotutils import hal

for _var, _name in (("IOTUTILS_STACK_WEB", "WEB_STACK"), ("IOTUTILS_STACK_HOUSEKEEPER", "HOUSEKEEPER_STACK"),
                    ("IOTUTILS_STACK_JOB", "JOB_STACK")):
    if os.getenv(_var):
        setattr(hal, _name, int(os.getenv(_var)))
if os.getenv("IOTUTILS_STACK_HOST_IMPORTS"):
    # the bytes start_thread adds on the host for nested imports (read at each call): 0 measures
    # the bare model, twice the chip's bytes plus the unix port's margin
    from iotutils import _compat
    _compat._HOST_IMPORTS = int(os.getenv("IOTUTILS_STACK_HOST_IMPORTS"))
print("STACKS web=%d housekeeper=%d job=%d" % (hal.WEB_STACK, hal.HOUSEKEEPER_STACK, hal.JOB_STACK))

import iotutils
from iotutils.persist import PersistentBool, PersistentRange, PersistentRGB, PersistentStr
from iotutils.wifi import Wifi

# the housekeeping thread is the role under test (a program with a loop of its own gets it; run()
# hosts the steps in the main task, whose 16 KB stack is the port's)
iotutils.Device.housekeep_in_main_loop = False
Wifi.retry_s = 1            # the bench takes the network away and back: reconnect at once
Wifi.scan_interval_s = 1

api = os.getenv("IOTUTILS_TEST_API")
dev = iotutils.Device(name="stack", ota_repo="acme/lamp" if api else None, ota_api=api,
                      ota_pubkey=os.getenv("IOTUTILS_TEST_PUBKEY"),
                      ota_allow_http=bool(api) and api.startswith("http:"), mqtt=os.getenv("IOTUTILS_MQTT"))
if os.getenv("IOTUTILS_STACK_WIFI"):
    ssid, _, password = os.getenv("IOTUTILS_STACK_WIFI").partition(":")
    if ssid not in [n["ssid"] for n in dev.wifi.networks()]:
        dev.wifi.add_network(ssid, password)
if os.getenv("IOTUTILS_STACK_PWHASH"):
    pw = PersistentStr("pwhash", default="", folder="admin", max_length=200)
    if not pw.value:
        pw.value = os.getenv("IOTUTILS_STACK_PWHASH")

dev.alexa.add("Desk lamp", dimmable=True, color=True)
dev.alexa.add("Heater", wemo=True)
dev.expose(PersistentBool("on", default=False, folder="app"), "On")
dev.expose(PersistentRange("bri", 0, 100, default=50, folder="app"), "Brightness")
dev.expose(PersistentRGB("colour", default=(255, 128, 0), folder="app"), "Colour")
dev.expose(PersistentStr("label", default="desk", folder="app", max_length=16), "Label")
dev.run()
