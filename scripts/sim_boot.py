# The simulated device's boot (runs inside MicroPython, started by scripts/sim.py).
#
# On the firmware every iotutils module is frozen in flash: importing one costs the heap almost
# nothing. This runtime has to hold their bytecode in the heap instead, and sim.py grew the heap by
# exactly that amount (scripts/mpcode.py). Loading them all here first spends that allowance up
# front, so what the app sees as free heap is the ESP32 model's. Then the app runs as main.py (with
# sim.py --serial, under the board's REPL: scripts/sim_console.py).
import gc
import os
import sys


# A power cut is a SIGKILL of the supervisor (scripts/sim.py). PR_SET_PDEATHSIG is set for this
# process but is not honoured on every kernel this runs on, so the device also watches its parent
# itself: once the supervisor is gone, it dies at once, as a board does when the power goes.
def _stat(f, buf):
    # one open file, read again from the start: the watcher looks up no path after boot (the serial
    # console remounts the filesystem root). It allocates nothing: 20 reads a second of split
    # strings would land all over the heap the device measures (a chip has no such thread). The
    # buffer holds the line's start only: "pid (name) S ppid" fits in 64 bytes (a name is at most
    # 15 bytes), and the last ")" read is the name's, since only numbers and a state letter follow
    f.seek(0)
    n = f.readinto(buf)
    i = n - 1
    while buf[i] != 41:   # the last ")": the command's name may hold spaces and parentheses
        i -= 1
    return _number_at(buf, 0), _number_at(buf, i + 4)   # "pid (name) S ppid ..."


def _number_at(buf, i):
    v = 0
    while 48 <= buf[i] <= 57:
        v = v * 10 + buf[i] - 48
        i += 1
    return v


def _watch_parent(f, buf, pid, ppid):
    import time
    while True:
        time.sleep_ms(50) if hasattr(time, "sleep_ms") else time.sleep(0.05)
        try:
            if _stat(f, buf)[1] != ppid:
                break
        except OSError:
            break
    os.system("kill -9 %d" % pid)


try:
    import _thread
    _proc, _buf = open("/proc/self/stat", "rb"), bytearray(64)
    _thread.start_new_thread(_watch_parent, (_proc, _buf) + _stat(_proc, _buf))
except (ImportError, OSError):
    pass

app = sys.argv[1]
for name in (os.getenv("IOTUTILS_PRELOAD") or "").split(","):
    if name:
        __import__(name)
if os.getenv("IOTUTILS_PRELOAD"):
    # The model spent the code's bytes up front, as if it were frozen. An unloaded module (the OTA
    # network code after a check) would hand its bytecode back here, which the chip keeps in flash,
    # and a second import would compile it again: in the model the toolbox keeps what it loaded.
    from iotutils import _compat
    _compat.KEEP_LOADED = True
gc.collect()

if os.getenv("IOTUTILS_SERIAL"):
    # sim.py --serial: the board's console on a PTY (scripts/sim_console.py runs boot.py, the app as
    # main.py and the REPL). The device filesystem becomes "/": open every flash partition now,
    # while the flash file is reachable by its host path.
    from iotutils.hal import sim as _sim
    _cfg = _sim.config()
    for _p in _cfg["partitions"]:
        _sim.partition(_p[0])
    with open(app) as f:
        source = f.read()
    sys.path.pop(0)   # scripts/: sim_console comes precompiled from MICROPYPATH (sim.py's console_setup)
    import sim_console
    gc.collect()
    sim_console.start(_cfg, source, ["/proc/"] + ([_cfg["wifi"]] if _cfg.get("wifi") else []))

sys.path[0] = app.rpartition("/")[0] or "."
with open(app) as f:
    source = f.read()
code = compile(source, app, "exec")
del source
gc.collect()
exec(code, {"__name__": "__main__", "__file__": app})
