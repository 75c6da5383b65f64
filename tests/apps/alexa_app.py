# Device app for tests/integration/test_alexa_clients.py and bench/bench_alexa.py: a web server with the Alexa bridge.
#   ALEXA_LIGHTS=N   N dimmable lights "Light 1".."Light N" instead of the default set below
#   ALEXA_WEMO=0     no WeMo devices in the default set
# Default set: "Desk lamp" (dimmable), "Heater" (on/off), "Colour bulb" (colour), WeMo "Fan" and "Pump".
# Prints "changed <name> on=<bool> brightness=<pct>" from on_change (run by alexa.poll() in the main
# loop), "heap per device: N" and "ALEXA READY <n lights>". GET /test/set?name=..&on=0|1&brightness=N
# makes a local change (a button on the device); GET /test/pair?seconds=N opens Hue pairing for N s (the
# device's pairing button: alexa.pair(N)), GET /test/pairing?on=0|1 sets it with the old switch call and
# without on= tells whether it is open; GET /test/ssdp: SSDP counters; GET /test/stop stops Alexa
# (byebye); GET /test/remove?name=.. removes (and forgets) a device.
import gc
import os
import time

# compiled from source on the host runtime (frozen on a board): biggest first, collect in between
from iotutils.server import WebServer

gc.collect()
from iotutils import store

store.keys("alexa")   # opens the NVS backend now, while the heap is in one piece
gc.collect()
from iotutils.alexa import Alexa

gc.collect()
import iotutils.ssdp
import iotutils.wemo  # noqa: F401

gc.collect()

app = WebServer(port=80, workers=2)
alexa = Alexa(app)


def changed(light):
    print("changed %s on=%s brightness=%d" % (light.name, light.on, light.brightness))


n = int(os.getenv("ALEXA_LIGHTS") or 0)
alexa.add("warm-up", dimmable=True)   # first add() allocates the list and the persisted copy
alexa.save()
gc.collect()
before = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
if n:
    for i in range(n):
        alexa.add("Light %d" % (i + 1), on_change=changed, dimmable=True)
else:
    alexa.add("Desk lamp", on_change=changed, dimmable=True)
    alexa.add("Heater", on_change=changed, dimmable=False)
    alexa.add("Colour bulb", on_change=changed, color=True)
    if os.getenv("ALEXA_WEMO") != "0":
        alexa.add("Fan", on_change=changed, wemo=True)
        alexa.add("Pump", on_change=changed, wemo=True)
alexa.save()   # the persisted list (and its cached copy) counts too
gc.collect()
count = len(alexa.lights()) - 1
if hasattr(gc, "mem_alloc"):
    print("heap per device: %d" % ((gc.mem_alloc() - before) // count))


@app.route("/test/set")
def local_set(req):
    q = req.query
    light = alexa.get(q.get("name", ""))
    if light is None:
        return "no such light", 404
    kw = {}
    if "on" in q:
        kw["on"] = q["on"] == "1"
    if "brightness" in q:
        kw["brightness"] = int(q["brightness"])
    light.set(**kw)
    return {"on": light.on, "brightness": light.brightness}


@app.route("/test/pair")
def pair(req):
    return {"pairing_left_s": alexa.pair(float(req.query.get("seconds", "60")))}


@app.route("/test/pairing")
def pairing(req):
    on = req.query.get("on")
    return {"pairing": alexa.pairing(None if on is None else on == "1"), "pairing_left_s": alexa.pairing_left_s()}


@app.route("/test/ssdp")
def ssdp_stats(req):
    return alexa.discovery_stats()


@app.route("/test/remove")
def remove(req):
    alexa.remove(req.query.get("name", ""))
    return "removed"


@app.route("/test/stop")
def stop(req):
    alexa.stop()   # NOTIFY ssdp:byebye, WeMo ports closed
    return "stopped"


app.start()
alexa.start()
print("ALEXA READY %d" % count)
while True:
    alexa.poll()
    time.sleep(0.02)
