"""Stock MicroPython, installed per capability (scripts/build_mip.py): the heap each common combination
leaves on the 110wK model of an ESP32 without PSRAM, measured on the PyPI `micropython` runtime.

usage: python bench/bench_mip.py [--rounds R] [--heap 110wK]

Targets (issue #16, "Memory"): persist + Wi-Fi + server + OTA leaves >= 48 KB free; everything
(Device with its admin page and Alexa) leaves >= 32 KB free. Printed side by side, never asserted.

How: scripts/build_mip.py builds the packages; for each combination the packages it needs are
installed into an empty folder as mip installs them (each package's files, then its deps'), and a
fresh `micropython -X heapsize=110wK` runs from that folder alone (nothing frozen, no allowance:
on a stock board the .mpy bytecode is loaded into the heap) on a simulated board (hal/sim.py: a flash
file, a Wi-Fi scenario with the home network up, ports on loopback). It imports what the combination
uses in the recommended order (README, "Memory": the biggest modules first, gc.collect() after each),
starts it as an app does (persist: a couple of variables read and written; Wi-Fi: joins the home
network; server: started, answers one request from the bench; OTA: an OTA object for a GitHub
repository and its status; everything: Device(name=...) with a Hue light, started, joined, one
/healthz request; + MQTT: Device(mqtt=...) connected to a local Mosquitto), then gc.collect() and
reports gc.mem_free() and the largest free block (the biggest bytearray that can be allocated, found
by bisection). Median of R rounds (other threads allocate meanwhile). A combination that does not
start at this heap is run again at larger heaps (10wK steps) to find what it needs.

Host vs chip: `-X heapsize=110wK` is 110 KB as a 32-bit port counts it, scaled by the word size: 225,280
bytes on this 64-bit host, 112,640 on the ESP32, because objects are about twice as big here (README
"heap", bench_device.py). So the
table compares percentages of the heap, and "chip KB" is host bytes / 2 (the word model). Bytes that
do not double on 64 bits (bytecode, string contents, buffers) take the same room on both, so they
weigh twice as much in the chip's heap: the "code-adjusted" figure takes half the loaded .mpy bytes off
the word model's (buffers are not counted: the chip may be lower still). The largest free block is a
byte count, halved the same way. Differences from a stock ESP32 that are not in the model: this
runtime's store is the pure-Python NVS engine (a stock ESP32 uses esp32.NVS, in C: the difference is
printed below the table), and the hardware layer is hal/sim.py instead of hal/esp32.py; thread
stacks are outside the heap on both.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "modules"))

import build_mip  # noqa: E402
from simdev import free_port_block  # noqa: E402

HEAP = "110wK"
TARGETS = {"persist + Wi-Fi + server + OTA": 48 * 1024, "everything (Device, admin, Alexa)": 32 * 1024}
NETWORK = ("home", "secret-home")

# the recommended import order (README, "Memory"): biggest first, gc.collect() after each
ORDER = ("iotutils.server", "iotutils.admin", "iotutils.device", "iotutils.ota", "iotutils.alexa",
         "iotutils.mqtt_device", "iotutils.wifi", "iotutils.persist")

START = {
    "persist": """
from iotutils.persist import PersistentInt, PersistentStr
boots = PersistentInt("boots", default=0, folder="app")
boots.value += 1
label = PersistentStr("label", default="bench", folder="app", max_length=32)
label.value = "bench %d" % boots.value
""",
    "server": """
from iotutils.server import WebServer
app = WebServer(port=80)
@app.route("/")
def index(req):
    return "hello"
app.start()
PORT = app.bound_port
PATH = "/"
""",
    "wifi": """
from iotutils.wifi import Wifi
wifi = Wifi()
if not wifi.configured():
    wifi.add_network(%r, %r)
wifi.start(app=globals().get("app"))
joined(wifi)
""" % NETWORK,
    "ota": """
from iotutils.ota import OTA
ota = OTA(repo="owner/firmware")
ota.status()
""",
    "device": """
import iotutils
dev = iotutils.Device(name="bench"%s)
if not dev.wifi.configured():
    dev.wifi.add_network(%r, %r)
if not dev.alexa.lights():
    dev.alexa.add("Lamp", dimmable=True)
dev.start()
joined(dev.wifi)
if dev.mqtt is not None:
    t0 = time.time()
    while not dev.mqtt.connected:
        if time.time() - t0 > 20:
            raise RuntimeError("MQTT did not connect: " + str(dev.mqtt.status().get("last_error")))
        time.sleep_ms(50)
PORT = dev.app.bound_port
PATH = "/healthz"
""",
}

# (label, packages installed, modules imported, start steps)
COMBOS = (
    ("persist", ("iotutils-persist",), ("iotutils.persist",), ("persist",)),
    ("persist + Wi-Fi", ("iotutils-persist", "iotutils-wifi"), ("iotutils.wifi", "iotutils.persist"),
     ("persist", "wifi")),
    ("persist + Wi-Fi + server", ("iotutils-persist", "iotutils-wifi", "iotutils-server"),
     ("iotutils.server", "iotutils.wifi", "iotutils.persist"), ("persist", "server", "wifi")),
    ("persist + Wi-Fi + server + OTA", ("iotutils-persist", "iotutils-wifi", "iotutils-server", "iotutils-ota"),
     ("iotutils.server", "iotutils.ota", "iotutils.wifi", "iotutils.persist"), ("persist", "server", "wifi", "ota")),
    ("everything (Device, admin, Alexa)", ("iotutils-admin",),
     ("iotutils.server", "iotutils.admin", "iotutils.device", "iotutils.ota", "iotutils.alexa", "iotutils.wifi",
      "iotutils.persist"), ("device",)),
    ("everything + MQTT", ("iotutils",),
     ("iotutils.server", "iotutils.admin", "iotutils.device", "iotutils.ota", "iotutils.alexa",
      "iotutils.mqtt_device", "iotutils.wifi", "iotutils.persist"), ("device+mqtt",)),
)

PROLOGUE = """
import gc, json, sys, time
gc.collect()
BASE = gc.mem_free()
PORT = 0
PATH = None
def joined(w):
    t0 = time.time()
    while not w.connected():
        if time.time() - t0 > 20:
            raise RuntimeError("Wi-Fi did not join: " + str(w.status()["error"]))
        time.sleep_ms(50)
COSTS = []
for m in %r:
    f = gc.mem_free()
    __import__(m)
    gc.collect()
    COSTS.append((m, f - gc.mem_free()))
IMPORTED = gc.mem_free()
"""

EPILOGUE = """
print("STARTED", PORT, PATH)
sys.stdin.readline()
gc.collect()
free = gc.mem_free()
total = free + gc.mem_alloc()
lo, hi = 0, free
while lo < hi:   # the largest bytearray that fits: the largest free block
    mid = (lo + hi + 1) // 2
    try:
        b = bytearray(mid)
        b = None
        lo = mid
    except MemoryError:
        hi = mid - 1
    gc.collect()
mods = [k for k in sys.modules if k == "iotutils" or k.startswith("iotutils.")]
print("RESULT", json.dumps({"free": free, "total": total, "largest": lo, "base": BASE, "imported": IMPORTED,
                            "modules": mods, "costs": COSTS}))
"""


def _exe():
    exe = os.path.join(ROOT, ".venv", "bin", "micropython")
    return exe if os.path.exists(exe) else shutil.which("micropython") or "micropython"


def install(build, names, lib):
    """What mip does: each package's files into lib, then its deps (local build: deps are paths)."""
    descs = build_mip.read_build(build)
    done, todo = set(), list(names)
    while todo:
        name = todo.pop(0)
        if name in done:
            continue
        done.add(name)
        for target, url in descs[name]["urls"]:
            dst = os.path.join(lib, target)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(os.path.join(build, url), dst)
        for dep, _ in descs[name]["deps"]:
            ref = dep.rsplit("/", 1)[-1]
            todo.append(build_mip.FULL if ref == "package.json" else ref[:-len(".json")])
    return done


def sim_board(state):
    """A fresh simulated board (hal/sim.py): erased 4 MB flash file, the home network up."""
    from iotutils.hal import layout
    os.makedirs(state)
    scen = os.path.join(state, "wifi.json")
    with open(scen, "w") as f:
        json.dump({"networks": [{"ssid": NETWORK[0], "password": NETWORK[1], "rssi": -60, "channel": 6, "up": True,
                                 "fail": None, "hidden": False}], "ap_clients": []}, f)
    with open(os.path.join(state, "flash.bin"), "wb") as f:
        f.write(b"\xff" * layout.FLASH_SIZE)
    cfg = {"state": state, "flash": os.path.join(state, "flash.bin"),
           "partitions": [list(p) for p in layout.DEFAULT], "port": free_port_block(2), "wifi": scen,
           "ctl_port": None, "slot": "ota_0", "reset_cause": "power_on", "mac": "02:00:00:00:00:42"}
    path = os.path.join(state, "sim.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def script(imports, steps, mqtt_url=None):
    code = PROLOGUE % ([m for m in ORDER if m in imports],)
    for step in steps:
        if step.startswith("device"):
            mq = ", mqtt=%r" % mqtt_url if step == "device+mqtt" and mqtt_url else ""
            code += START["device"] % ((mq,) + NETWORK)
        else:
            code += START[step]
    return code + EPILOGUE


def run_once(lib, code, heap, tmp):
    """One power-on: {"free", "total", "largest", ...} or {"error": text}."""
    state = tempfile.mkdtemp(dir=tmp)
    env = dict(os.environ, MICROPYPATH=lib, IOTUTILS_SIM=sim_board(os.path.join(state, "board")),
               HOME=state)
    proc = subprocess.Popen([_exe(), "-X", "heapsize=" + heap, "-c", code], cwd=state, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    watchdog = threading.Timer(90, proc.kill)
    watchdog.start()
    result = failed = None
    try:
        for line in proc.stdout:
            lines.append(line)
            at = line.find("STARTED ")
            if at >= 0:
                _, port, path = line[at:].split()
                if path != "None":  # one request, as a client would make: the server's buffers are in use
                    try:
                        with urllib.request.urlopen("http://127.0.0.1:%s%s" % (port, path), timeout=20) as r:
                            r.read()
                    except OSError as e:  # 503 (MemoryError in the device), no answer: it did not work
                        failed = "GET %s: %r" % (path, e)
                        lines.append(failed + "\n")
                proc.stdin.write("measure\n")
                proc.stdin.flush()
            at = line.find("RESULT ")
            if at >= 0:
                result = json.loads(line[at + len("RESULT "):])
                break
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stdin.close()
        shutil.rmtree(state, ignore_errors=True)
    if result is None or failed:
        err = [failed] if failed else [ln.strip() for ln in lines if "Error" in ln]
        return {"error": err[-1] if err else "no result", "output": "".join(lines)}
    return result


def _words(heap):
    return int(heap[:-2]) if heap.endswith("wK") else None


def measure(build, combo, rounds, heap, tmp, mqtt_url):
    label, packages, imports, steps = combo
    lib = tempfile.mkdtemp(dir=tmp)
    install(build, packages, lib)
    mpy = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(lib) for f in fs)
    code = script(imports, steps, mqtt_url)
    runs = [run_once(lib, code, heap, tmp) for _ in range(rounds)]
    row = {"label": label, "heap": heap, "installed": mpy}
    bad = [r for r in runs if "error" in r]
    if bad:
        row["error"] = bad[0]["error"]
        row["failed"] = "%d of %d" % (len(bad), len(runs))
        w = _words(heap)
        runs = []
        if w is not None:  # what it needs: the smallest heap (10wK steps) where it starts every time
            for more in range(w + 10, 401, 10):
                runs = [run_once(lib, code, "%dwK" % more, tmp) for _ in range(rounds)]
                if all("error" not in r for r in runs):
                    row["needs"] = more
                    break
                runs = []
    if runs:
        mid = sorted(runs, key=lambda r: r["free"])[len(runs) // 2]
        row.update(free=mid["free"], low=min(r["free"] for r in runs), high=max(r["free"] for r in runs),
                   largest=int(statistics.median(r["largest"] for r in runs)), total=mid["total"],
                   imported=mid["imported"], base=mid["base"], costs=mid["costs"],
                   loaded=_loaded_bytes(lib, mid["modules"]))
    return row


def _loaded_bytes(lib, modules):
    """Bytes of the .mpy files behind the modules a run imported."""
    n = 0
    for m in modules:
        p = os.path.join(lib, *m.split("."))
        for f in (p + ".mpy", os.path.join(p, "__init__.mpy")):
            if os.path.isfile(f):
                n += os.path.getsize(f)
                break
    return n


def store_costs(build, tmp, heap):
    """Heap held by the store this runtime uses (pure-Python NVS engine over hal.partition) vs the
    stock-ESP32 one (store_esp32nvs over esp32.NVS: the C objects are not counted)."""
    lib = tempfile.mkdtemp(dir=tmp)
    install(build, ("iotutils-persist",), lib)
    code = """
import gc, sys
from iotutils import store
gc.collect()
f0 = gc.mem_free()
if sys.argv[-1] == "nvs":
    store.keys("app")   # opens this runtime's backend: nvs.NVS over hal.partition("nvs")
else:
    from iotutils.store_esp32nvs import ESP32NVS
    class NVS:          # esp32.NVS stands in: C on the board, nothing in the heap but its objects
        def __init__(self, ns):
            pass
    s = ESP32NVS(NVS)
gc.collect()
print("COST", f0 - gc.mem_free())
"""
    out = {}
    for kind in ("nvs", "esp32nvs"):
        state = tempfile.mkdtemp(dir=tmp)
        env = dict(os.environ, MICROPYPATH=lib, IOTUTILS_SIM=sim_board(os.path.join(state, "board")))
        r = subprocess.run([_exe(), "-X", "heapsize=" + heap, "-c", code, kind], cwd=state, env=env,
                           capture_output=True, text=True, timeout=60)
        for line in r.stdout.splitlines():
            if line.startswith("COST "):
                out[kind] = int(line.split()[1])
        shutil.rmtree(state, ignore_errors=True)
    return out


def _kb(n):
    return "%.1f" % (n / 1024.0)


def print_table(rows, store, heap):
    w = _words(heap) or 110
    chip_heap = w * 1024
    total = next((r["total"] for r in rows if "total" in r and "needs" not in r), None)
    print()
    print("Heap left after import + start, stock MicroPython (.mpy per capability), %s: %s bytes here "
          "(gc.mem_free + mem_alloc), %d on an ESP32" % (heap, total or "?", chip_heap))
    hdr = ("combination", "free (host bytes)", "% of heap", "chip KB (word model / code-adjusted)",
           "largest block (host / chip KB)", "target", "verdict")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for r in rows:
        target = TARGETS.get(r["label"])
        tgt = ">= %d KB (%.1f %%)" % (target // 1024, 100.0 * target / chip_heap) if target else "-"
        if "error" in r:
            if "needs" in r:
                # host bytes it would have at this heap: what it has at the heap it needs, less the difference
                at = r["free"] - (r["needs"] - w) * 2048
                what = "starts from %dwK, %d B (%.1f %%) free there: %s" % (
                    r["needs"], r["free"], 100.0 * r["free"] / r["total"],
                    "about %s KB (chip) short" % _kb(-at / 2.0) if at < 0 else
                    "~%s KB (chip) left here on paper, too little or too scattered to start" % _kb(at / 2.0))

            else:
                what = "does not start up to 400wK"
            print("| %s | does not start (%s rounds: %s): %s | - | - | - | %s | %s |" % (
                r["label"], r["failed"], r["error"][:60], what, tgt, "missed" if target else "-"))
            continue
        pct = 100.0 * r["free"] / r["total"]
        model = r["free"] / 2.0
        low = model - r["loaded"] / 2.0
        verdict = "-"
        if target:
            verdict = "met" if low >= target else "met on the word model only" if model >= target else "missed"
        print("| %s | %d (%d-%d) | %.1f %% | %s / %s | %d / %s | %s | %s |" % (
            r["label"], r["free"], r["low"], r["high"], pct, _kb(model), _kb(low), r["largest"],
            _kb(r["largest"] / 2.0), tgt, verdict))
    print()
    print("free: median of the rounds (min-max). chip KB, word model: host bytes / 2 (what 110wK means); "
          "code-adjusted: less half the loaded .mpy bytes (bytecode and strings take the same bytes on both, so they "
          "weigh twice as much in the chip's heap; buffers do too, which this does not count). largest block: the "
          "biggest bytearray that fits. A row that does not start is measured at the smallest heap where it does, "
          "and its shortfall at %s is the free space there less the extra heap (word model)." % heap)
    print()
    for r in rows:
        if "imported" in r:
            print("  %-34s%s imports %6d B (host), start %6d B; .mpy loaded %6d B of %6d B installed" % (
                r["label"], " (at %dwK)" % r["needs"] if "needs" in r else "", r["base"] - r["imported"],
                r["imported"] - r["free"], r["loaded"], r["installed"]))
    last = rows[-1]
    if "costs" in last:
        print("  import costs (host B, in order, each with what it pulls in first): " +
              ", ".join("%s %d" % (m[len("iotutils."):], c) for m, c in last["costs"]))
    if store.get("nvs") is not None and store.get("esp32nvs") is not None:
        print("  store: this runtime's pure-Python NVS engine holds %d B (host) once open; a stock ESP32 opens "
              "esp32.NVS (C) through store_esp32nvs: %d B. Every row has about %s KB (chip) more free there."
              % (store["nvs"], store["esp32nvs"], _kb((store["nvs"] - store["esp32nvs"]) / 2.0)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--heap", default=HEAP)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_mip")
    broker = None
    try:
        build = os.path.join(tmp, "mip")
        build_mip.build(build)
        mqtt_url = None
        try:
            from mosquitto import Mosquitto, available
            if available():
                broker = Mosquitto(os.path.join(tmp, "broker")).start()
                mqtt_url = broker.url()
            else:
                print("bench_mip: mosquitto is not installed (make deps): the MQTT row runs without a broker")
        except ImportError:
            print("bench_mip: tests/mosquitto.py not found: the MQTT row runs without a broker")
        print("runtime %s, heap %s, %d rounds, packages from scripts/build_mip.py" % (_exe(), args.heap, args.rounds))
        rows = []
        for combo in COMBOS:
            if "device+mqtt" in combo[3] and not mqtt_url:
                print("  %-34s skipped: no broker" % combo[0])
                continue
            t0 = time.time()
            row = measure(build, combo, args.rounds, args.heap, tmp, mqtt_url)
            rows.append(row)
            print("  %-34s %s (%.1f s)" % (combo[0], row.get("error") or "free %d" % row["free"],
                                           time.time() - t0), flush=True)
        store = store_costs(build, tmp, args.heap)
        print_table(rows, store, args.heap)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
