# The simulated device's boot (runs inside MicroPython, started by scripts/sim.py).
#
# On the firmware every iotutils module is frozen in flash: importing one costs the heap almost
# nothing. This runtime has to hold their bytecode in the heap instead, and sim.py grew the heap by
# exactly that amount (scripts/mpcode.py). Loading them all here first spends that allowance up
# front, so what the app sees as free heap is the ESP32 model's. Then the app runs as main.py.
import gc
import os
import sys


# A power cut is a SIGKILL of the supervisor (scripts/sim.py). PR_SET_PDEATHSIG is set for this
# process but is not honoured on every kernel this runs on, so the device also watches its parent
# itself: once the supervisor is gone, it dies at once, as a board does when the power goes.
def _stat():
    with open("/proc/self/stat") as f:
        s = f.read()
    head, _, rest = s.rpartition(")")
    return int(head.split(" ", 1)[0]), int(rest.split()[1])


def _watch_parent(pid, ppid):
    import time
    while True:
        time.sleep_ms(50) if hasattr(time, "sleep_ms") else time.sleep(0.05)
        try:
            if _stat()[1] != ppid:
                break
        except OSError:
            break
    os.system("kill -9 %d" % pid)


try:
    import _thread
    _thread.start_new_thread(_watch_parent, _stat())
except (ImportError, OSError):
    pass

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
