# The simulated device's boot (runs inside MicroPython, started by scripts/sim.py).
#
# On the firmware every iotutils module is frozen in flash: importing one costs the heap almost
# nothing. This runtime has to hold their bytecode in the heap instead, and sim.py grew the heap by
# exactly that amount (scripts/mpcode.py). Loading them all here first spends that allowance up
# front, so what the app sees as free heap is the ESP32 model's. Then the app runs as main.py.
import gc
import os
import sys

app = sys.argv[1]
for name in (os.getenv("IOTUTILS_PRELOAD") or "").split(","):
    if name:
        __import__(name)
gc.collect()

sys.path[0] = app.rpartition("/")[0] or "."
with open(app) as f:
    source = f.read()
code = compile(source, app, "exec")
del source
gc.collect()
exec(code, {"__name__": "__main__", "__file__": app})
