"""Persistent variables: flash bytes written per update, updates/s and boot-time load, per backend,
side by side with what most MicroPython projects do (rewrite one JSON file on every change).

usage: python bench/bench_persist.py [--updates N]

The same workload runs in the `micropython` host runtime (110 KB heap, as the simulated device) and,
when FIRMWARE names a host firmware with _iotutils.KVStore, in that firmware too:
- 100 variables in 5 folders (ints, bools, floats, strings, colours), 2000 random updates;
- iotutils.persist on NVS (pure-Python nvs.py on a write-counting flash region; the C KVStore on the
  simulated flash file) vs json.dump of the whole settings dict to a file per change (bytes = file
  size per write; a real filesystem adds metadata on top, so the naive number is a lower bound);
- boot: open the store and read all 100 variables, vs one json.load of the settings file (the
  time to make the 100 Persistent* objects, which the JSON way does not need, is shown apart);
  each is the median of 7 runs, each run after a gc.collect() (so a collection of the garbage
  the update loops left does not land on one side at random).
Flash erases are reported separately (a 4 KB sector erase when a page is reclaimed, amortised).
Target: <= 1/50 of the naive bytes per update. This is `make bench` material, not a test.
"""
import argparse
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

WORKLOAD = r'''
import gc, json, os, sys, time
from iotutils import store, nvs
from iotutils.hal.flash import RamFlash
from iotutils.persist import PersistentBool, PersistentFloat, PersistentInt, PersistentRGB, PersistentStr

UPDATES = int(sys.argv[1])
TMP = sys.argv[2]
MODE = sys.argv[3]   # "python": nvs.py on a counting RAM region; "c": the store's own backend (KVStore)

try:
    ticks = time.ticks_us
    def elapsed(t0):
        return time.ticks_diff(time.ticks_us(), t0) / 1e6
except AttributeError:
    ticks = time.time
    def elapsed(t0):
        return time.time() - t0


class Counting(RamFlash):
    def __init__(self, size):
        RamFlash.__init__(self, size)
        self.written = 0
        self.erased = 0

    def write(self, off, data):
        self.written += len(data)
        RamFlash.write(self, off, data)

    def erase(self, off, n):
        self.erased += n
        RamFlash.erase(self, off, n)


def make_vars():
    out = []
    for f in range(5):
        folder = "folder%d" % f
        for k in range(20):
            kind = k % 5
            name = "var%d" % k
            if kind == 0:
                out.append(PersistentInt(name, default=0, folder=folder))
            elif kind == 1:
                out.append(PersistentBool(name, default=False, folder=folder))
            elif kind == 2:
                out.append(PersistentFloat(name, default=0.0, folder=folder))
            elif kind == 3:
                out.append(PersistentStr(name, default="", folder=folder))
            else:
                out.append(PersistentRGB(name, folder=folder))
    return out


def value_for(v, i):
    if isinstance(v, PersistentInt):
        return i * 37
    if isinstance(v, PersistentBool):
        return i % 2 == 0
    if isinstance(v, PersistentFloat):
        return i / 8.0
    if isinstance(v, PersistentStr):
        return "value %d of a setting" % i
    return ((i * 3) % 256, (i * 5) % 256, (i * 7) % 256)


def jsonable(x):
    return list(x) if isinstance(x, tuple) else x


seed = [12345]


def rnd(n):
    seed[0] = (seed[0] * 1103515245 + 12345) & 0x7FFFFFFF
    return seed[0] % n


if MODE == "python":
    flash = Counting(0x6000)
    store.use(nvs.NVS(flash), "nvs")
else:
    flash = None
    store.backend()
variables = make_vars()
for i, v in enumerate(variables):  # all stored once
    v.value = value_for(v, i)
w0 = flash.written if flash else 0
e0 = flash.erased if flash else 0
t0 = ticks()
for n in range(UPDATES):
    v = variables[rnd(100)]
    v.value = value_for(v, n + 1000)
t_nvs = elapsed(t0)
w_nvs = (flash.written - w0) if flash else -1
e_nvs = (flash.erased - e0) if flash else -1

# naive: the whole settings dict to one JSON file per change
path = TMP + "/settings.json"
settings = {}
for i, v in enumerate(variables):
    settings[v.folder + "/" + v.name] = jsonable(value_for(v, i))
keys = list(settings)
written = 0
t0 = ticks()
seed[0] = 12345
for n in range(UPDATES):
    i = rnd(100)
    settings[keys[i]] = jsonable(value_for(variables[i], n + 1000))
    text = json.dumps(settings)
    with open(path, "w") as f:
        f.write(text)
    written += len(text)
t_json = elapsed(t0)

# boot: open the store (load + index the partition) and read every variable
image = flash


def median_time(fn, runs=7):
    times = []
    for _ in range(runs):
        gc.collect()
        t0 = ticks()
        fn()
        times.append(elapsed(t0))
    times.sort()
    return times[runs // 2]


def boot():
    if MODE == "python":
        store.use(nvs.NVS(image), "nvs")   # (a new generation: persist's cache starts empty)
    else:
        store.use(None, store.BACKEND)  # the next access opens (loads) the store again
    return [v.value for v in variables]


def parse():
    with open(path) as f:
        loaded = json.load(f)
    return [loaded[k] for k in keys]


t_boot = median_time(boot)
t_make = median_time(make_vars)
t_parse = median_time(parse)
print("RESULT %s %d %d %d %.6f %.6f %.6f %.6f %d %.6f" % (store.BACKEND, UPDATES, w_nvs, e_nvs, t_nvs, t_json,
                                                          t_boot, t_parse, written, t_make))
'''


def run(cmd, env, updates, tmp, mode):
    script = os.path.join(tmp, "bench_persist_device.py")
    with open(script, "w") as f:
        f.write(WORKLOAD)
    out = subprocess.run(cmd + [script, str(updates), tmp, mode], env=env, capture_output=True, text=True,
                         timeout=600, cwd=tmp)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            f = line.split()
            return {"backend": f[1], "updates": int(f[2]), "bytes": int(f[3]), "erased": int(f[4]),
                    "t_nvs": float(f[5]), "t_json": float(f[6]), "t_boot": float(f[7]), "t_parse": float(f[8]),
                    "json_bytes": int(f[9]), "t_make": float(f[10])}
    raise RuntimeError("benchmark run failed:\n%s%s" % (out.stdout, out.stderr))


def report(label, r):
    n = r["updates"]
    print("\n%s (backend %s), %d updates of 100 variables" % (label, r["backend"], n))
    print("  %-34s %14s %14s %10s" % ("", "persist/NVS", "JSON file", "ratio"))
    if r["bytes"] >= 0:
        per = r["bytes"] / n
        jper = r["json_bytes"] / n
        print("  %-34s %14.1f %14.1f %10s" % ("bytes written per update", per, jper, "1/%.0f" % (jper / per)))
        print("  %-34s %14.1f %14s %10s" % ("  + bytes erased per update", r["erased"] / n, "-", ""))
        verdict = "met" if per * 50 <= jper else "NOT met"
        print("  target <= 1/50 of the JSON bytes per update: %s" % verdict)
    else:
        print("  bytes written per update: not measurable for this backend (no write hook)")
    print("  %-34s %14.0f %14.0f %10.2fx" % ("updates per second", n / r["t_nvs"], n / r["t_json"],
                                              (n / r["t_nvs"]) / (n / r["t_json"])))
    print("  %-34s %14.2f %14.2f %10s" % ("boot: open + read 100 values (ms)", r["t_boot"] * 1e3,
                                           r["t_parse"] * 1e3, "%.2fx time" % (r["t_boot"] / r["t_parse"])))
    print("  %-34s %14.2f %14s %10s" % ("  + making 100 Persistent* (ms)", r["t_make"] * 1e3, "-", ""))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--updates", type=int, default=2000)
    args = ap.parse_args()
    import mpcode
    base_env = dict(os.environ, MICROPYPATH=os.pathsep.join([os.path.join(ROOT, "modules"), ".frozen"]))

    def cmd(exe):
        # the simulated device's heap (110wK plus what this runtime spends on iotutils' code)
        return [exe, "-X", "heapsize=" + mpcode.runtime_setup(exe, "110wK")[0]]

    with tempfile.TemporaryDirectory() as tmp:
        # (the PyPI runtime here even when FIRMWARE is set: that one is measured below)
        mpy = os.path.join(ROOT, ".venv", "bin", "micropython")
        r = run(cmd(mpy if os.path.exists(mpy) else "micropython"), base_env, args.updates, tmp, "python")
        report("micropython host runtime, pure-Python NVS (nvs.py)", r)
        r = run([sys.executable], dict(os.environ, PYTHONPATH=os.path.join(ROOT, "modules")), args.updates, tmp,
                "python")
        report("CPython, pure-Python NVS (nvs.py)", r)
        fw = os.environ.get("FIRMWARE")
        built = os.path.join(ROOT, "build", "unix", "micropython")
        if not fw and os.path.exists(built):
            fw = built  # a host firmware built here (make BOARD=UNIX): include its C backend
        if fw:
            state = os.path.join(tmp, "state")
            os.makedirs(state)
            env = dict(base_env, IOTUTILS_SIM_STATE=state)
            try:
                r = run(cmd(os.path.abspath(fw)), env, args.updates, tmp, "c")
                report("host firmware %s" % fw, r)
            except RuntimeError as e:
                print("\nhost firmware: could not run (%s)" % str(e).splitlines()[0])
        else:
            print("\n(C KVStore backend: set FIRMWARE=<host firmware with _iotutils.KVStore> to include it)")


if __name__ == "__main__":
    main()
