# Device app for bench/bench_device.py: iotutils.Device with everything on — Wi-Fi + setup portal,
# web server + admin page, OTA with auto-update resumed (its thread runs), Alexa with a dimmable Hue
# light and a WeMo socket — and nothing of its own, so the heap left is what the toolbox leaves.
# The OTA source is a closed loopback port (IOTUTILS_TEST_API overrides it): checks fail fast, offline.
# Prints "HEAP free=N garbage=G" every second from the main loop (the bench reads it after a session
# of use; IOTUTILS_BENCH_QUIET: no such lines, and no collections but the device's own).
# bench/bench_mqtt.py adds MQTT: IOTUTILS_MQTT (the broker) and IOTUTILS_BENCH_WIFI ("ssid:password",
# a known network, since MQTT connects only over Wi-Fi); a switch and a number are exposed.
import gc
import os

import iotutils
from iotutils import hal
from iotutils.persist import PersistentBool, PersistentRange

if os.getenv("IOTUTILS_BENCH_TIDY") == "0":
    iotutils.Device.tidy_idle_ms = 0   # bench_heap_use.py: the device without its idle collection
elif os.getenv("IOTUTILS_BENCH_TIDY"):
    iotutils.Device.tidy_min_garbage = int(os.getenv("IOTUTILS_BENCH_TIDY"))
api = os.getenv("IOTUTILS_TEST_API") or "http://127.0.0.1:9"
dev = iotutils.Device(name="bench", ota_repo="acme/lamp", ota_api=api,
                      ota_pubkey=os.getenv("IOTUTILS_TEST_PUBKEY"),  # the fake GitHub signs with it
                      ota_allow_http=bool(api) and api.startswith("http:"), mqtt=os.getenv("IOTUTILS_MQTT"))
dev.alexa.add("Desk lamp", dimmable=True)
dev.alexa.add("Heater", wemo=True)
if os.getenv("IOTUTILS_BENCH_WIFI"):
    ssid, _, password = os.getenv("IOTUTILS_BENCH_WIFI").partition(":")
    if ssid not in [n["ssid"] for n in dev.wifi.networks()]:
        dev.wifi.add_network(ssid, password)
if dev.mqtt is not None:
    dev.expose(PersistentBool("on", folder="bench"), "On")
    dev.expose(PersistentRange("bri", 0, 100, default=50, folder="bench"), "Brightness")
dev.ota.auto_update(True, every_hours=24, idle_minutes=10, app=dev.app)


_after = [gc.mem_alloc()]


def heap():
    # measured from the main loop, outside any request, as the boot report does; "garbage": what
    # the heap gained since the last line (live + garbage), before this collection
    used = gc.mem_alloc()
    gc.collect()
    print("HEAP free=%d garbage=%d" % (hal.mem_free(), used - _after[0]))
    _after[0] = gc.mem_alloc()


if not os.getenv("IOTUTILS_BENCH_QUIET"):   # bench_heap_use.py: no collections but the device's own
    dev.every(1000, heap)


dev.run()
