# Device app for tests/integration/test_chaos.py: a whole device with everything on (Wi-Fi + portal, server, admin,
# OTA, Alexa with a Hue light and a WeMo light), the lamp page of examples/lamp.py, and a few probes:
#   GET  /chaos/threads       the server's live thread count and the ones it should have; the housekeeper's steps
#   GET  /chaos/heap          free heap and the largest block that can be allocated
#   GET  /chaos/boom          a handler that raises (the device must stay up: 500)
#   GET  /chaos/memboom       a handler that exhausts the heap (503, the device stays up)
#   GET  /chaos/pollboom?n=K  the next K passes of the main loop fail (a bug in a module's poll);
#                             without n: how many are still to come
#   CHAOS_BOOT_CRASH=1        user code raises at boot (the simulator must keep rebooting)
# Prints "CHAOS READY" once everything is up.
import os

import iotutils
from iotutils.persist import PersistentBool, PersistentRange

if os.getenv("CHAOS_BOOT_CRASH"):
    raise RuntimeError("chaos: user code crashed at boot")

on = PersistentBool("on", default=False, folder="lamp")
bri = PersistentRange("bri", 0, 100, default=50, folder="lamp")

dev = iotutils.Device(name="chaos")


def changed(light):
    on.value = light.on
    bri.value = light.brightness
    print("LAMP on=%s bri=%d" % (on.value, bri.value))


light = dev.alexa.add("Desk lamp", on_change=changed, dimmable=True)
dev.alexa.add("Fan", wemo=True)
light.set(on=on.value, brightness=bri.value)


@dev.app.route("/lamp", methods=("GET", "POST"))
def lamp_page(req):
    if req.method == "POST":
        form = req.form() if req.body else {}
        try:
            if "on" in form:
                on.value = form["on"]
            if "bri" in form:
                bri.value = form["bri"]
        except ValueError as e:
            return "<p>%s</p>" % e, 400
        light.set(on=on.value, brightness=bri.value)
    return "<h1>%s</h1><p>on=%s bri=%d</p>" % (dev.name, on.value, bri.value)


@dev.app.route("/chaos/threads")
def threads(req):
    # the server's threads, and the housekeeping thread running the Wi-Fi and Alexa steps
    from iotutils import tasks
    hk = tasks.shared()
    return {"threads": dev.app._threads, "expected": dev.app.workers + 1,
            "wifi": hk.running() and hk.has("wifi"), "alexa": hk.running() and hk.has("alexa")}


@dev.app.route("/chaos/heap")
def heap(req):
    # free heap and the largest block one allocation can get (fragmentation)
    import gc
    gc.collect()
    lo, hi = 0, 1 << 18
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            bytearray(mid)
            lo = mid
        except MemoryError:
            hi = mid - 1
    return {"free": gc.mem_free(), "largest": lo}


@dev.app.route("/chaos/boom")
def boom(req):
    raise RuntimeError("chaos: handler bug")


@dev.app.route("/chaos/memboom")
def memboom(req):
    hog = []
    while True:
        hog.append(bytearray(4096))


_poll_booms = [0]
_alexa_poll = dev.alexa.poll


def _poll_with_bug():
    if _poll_booms[0] > 0:
        _poll_booms[0] -= 1
        raise RuntimeError("chaos: bug in a poll")
    _alexa_poll()


dev.alexa.poll = _poll_with_bug


@dev.app.route("/chaos/pollboom")
def pollboom(req):
    if "n" in req.query:
        _poll_booms[0] = int(req.query["n"])
    return {"booms": _poll_booms[0]}


dev.start()
print("CHAOS READY")
dev.run()
