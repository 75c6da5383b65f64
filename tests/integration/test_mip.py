"""Stock-MicroPython install paths: package.json (mip) installs the pure-Python toolbox;
scripts/build_mip.py builds the precompiled (.mpy) package that fits a stock board's heap.

The repo (or build/mip) is served over a loopback HTTP server, the runtime's own `mip` installs from
its package.json into an empty folder, and the toolbox is imported from that folder alone
(MICROPYPATH=<folder>: no modules/, no frozen copy in the way).
"""
import filecmp
import functools
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest

from conftest import ROOT, micropython_cmd, micropython_exe

GEN = os.path.join(ROOT, "scripts", "gen_package_json.py")
BUILD_MIP = os.path.join(ROOT, "scripts", "build_mip.py")
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import build_mip  # noqa: E402
import gen_package_json  # noqa: E402

# Modules that need the chip itself (network/esp32/machine); everything else must import on a PC.
CHIP_ONLY = {"iotutils/hal/esp32.py"}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requested = None
    redirect = None  # (prefix, to): GET prefix+NAME answers 302 to to+NAME, as GitHub's release downloads do

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.requested.append(self.path)
        if self.redirect and self.path.startswith(self.redirect[0]):
            self.send_response(302)
            # absolute, as GitHub sends it (micropython-lib's requests takes no relative Location)
            self.send_header("Location", "http://127.0.0.1:%d%s%s" % (
                self.server.server_address[1], self.redirect[1], self.path[len(self.redirect[0]):]))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()


class _served:
    """`directory` over HTTP on 127.0.0.1:<free port>: .base (URL), .requested (paths asked for)."""

    def __init__(self, directory, redirect=None):
        self.requested = []
        handler = functools.partial(
            type("H", (_QuietHandler,), {"requested": self.requested, "redirect": redirect}), directory=directory)
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base = "http://127.0.0.1:%d" % self.srv.server_address[1]

    def __enter__(self):
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def repo_server():
    """The repo root over HTTP on 127.0.0.1:<free port>; yields (base URL, list of paths requested)."""
    with _served(ROOT) as s:
        yield s.base, s.requested


# mip installs .py sources, which the device compiles on import: the bigger modules (admin.py)
# need more heap to compile than the ESP32 model the other suites use for frozen or precompiled
# code. This test is about the install path, so it gives the runtime room.
HEAP = "4M"


def _run_mp(code, env, cwd, timeout=60):
    exe = micropython_cmd()[0]
    if os.sep in exe:
        exe = os.path.abspath(exe)  # FIRMWARE may be relative; the runs start in a temporary folder
    proc = subprocess.run([exe, "-X", "heapsize=" + HEAP, "-c", code], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def _module_name(rel):
    name = rel[:-3].replace("/", ".")
    return name[:-len(".__init__")] if name.endswith(".__init__") else name


def test_package_json_lists_exactly_the_package_files():
    proc = subprocess.run([sys.executable, GEN, "--check"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(os.path.join(ROOT, "package.json")) as f:
        desc = json.load(f)
    listed = sorted(target for target, _ in desc["urls"])
    assert listed == gen_package_json.package_files()
    for target, url in desc["urls"]:
        assert url == "modules/" + target, "URLs are relative to package.json: " + url
        assert os.path.isfile(os.path.join(ROOT, url)), url


def test_package_json_check_catches_a_stale_file(tmp_path):
    stale = tmp_path / "package.json"
    with open(os.path.join(ROOT, "package.json")) as f:
        desc = json.load(f)
    desc["urls"] = desc["urls"][1:] + [["iotutils/gone.py", "modules/iotutils/gone.py"]]
    stale.write_text(json.dumps(desc))
    proc = subprocess.run([sys.executable, GEN, "--check", "--output", str(stale)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "stale entry iotutils/gone.py" in proc.stdout
    assert "missing " + desc["urls"][0][0] not in proc.stdout  # still listed
    assert "missing iotutils/__init__.py" in proc.stdout


def test_mip_installs_from_package_json_and_imports(repo_server, tmp_path):
    base, requested = repo_server
    target = tmp_path / "lib"
    target.mkdir()
    home = tmp_path / "home"  # no ~/.micropython/lib of the user's
    home.mkdir()
    env = dict(os.environ, HOME=str(home))
    env.pop("MICROPYPATH", None)  # default path: the runtime's frozen mip and requests
    rc, out = _run_mp("import mip; mip.install(%r, target=%r)" % (base + "/package.json", str(target)),
                      env, str(tmp_path))
    assert rc == 0, out

    files = gen_package_json.package_files()
    assert "/package.json" in requested
    for rel in files:
        assert "/modules/" + rel in requested, rel
        installed = target / rel
        assert installed.is_file(), out
        assert filecmp.cmp(str(installed), os.path.join(ROOT, "modules", rel), shallow=False), rel

    # Import each module from the install folder only (cwd elsewhere, no .frozen on the path), one
    # process per module: each must import on its own.
    names = [_module_name(rel) for rel in files if rel not in CHIP_ONLY]
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    mp_env = dict(env, MICROPYPATH=str(target))
    with open(os.path.join(ROOT, "package.json")) as f:
        version = json.load(f)["version"]
    rc, out = _run_mp("import iotutils; print(iotutils.__version__, iotutils.__file__)", mp_env, str(run_dir))
    assert rc == 0, out
    assert out.split() == [version, str(target / "iotutils" / "__init__.py")], out
    for n in names:
        rc, out = _run_mp("import sys, %s; print(sys.modules[%r].__file__)" % (n, n), mp_env, str(run_dir))
        assert rc == 0, n + ":\n" + out
        assert out.strip().startswith(str(target) + "/"), out


# ---- the precompiled package (scripts/build_mip.py): what a stock board without PSRAM can run ----

STOCK_HEAP = "110wK"  # an ESP32 without PSRAM (scaled for 64-bit objects), no allowance for the code
STOCK_MODULES = ("iotutils.server", "iotutils.admin", "iotutils.ota", "iotutils.persist", "iotutils.wifi")

# Imports the toolbox's big modules, then serves until a line arrives on stdin. gc.collect() after
# each import, as on any small board: without it the garbage of one module's load is scattered
# between the next one's code, and the server's 1 KB buffers found no room at this heap.
_STOCK_APP = """
import gc, sys
for m in %r:
    __import__(m)
    gc.collect()
    print("FILE", sys.modules[m].__file__)
from iotutils.server import WebServer
app = WebServer(port=%d)
@app.route("/hello/<int:n>")
def hello(req, n):
    return {"n": n, "mpy": sys.implementation._mpy & 0xff}
app.start()
gc.collect()
print("READY", gc.mem_free())
sys.stdin.readline()
app.stop()
print("SERVED", app.stats()["requests"])
"""


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _exe():
    exe = micropython_exe()
    return os.path.abspath(exe) if os.sep in exe else exe


def _mip_install(url, target, tmp_path):
    """The runtime's own mip installs `url` into `target`, on a stock board's heap."""
    home = tmp_path / "home"  # no ~/.micropython/lib of the user's
    home.mkdir(exist_ok=True)
    env = dict(os.environ, HOME=str(home))
    env.pop("MICROPYPATH", None)  # default path: the runtime's frozen mip and requests
    proc = subprocess.run([_exe(), "-X", "heapsize=" + STOCK_HEAP, "-c",
                           "import mip; mip.install(%r, target=%r)" % (url, str(target))],
                          env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return env


def _run_stock_app(lib, env, cwd, heap):
    """Run _STOCK_APP from `lib` alone at `heap`; (exit code, output, JSON of GET /hello/7 or None)."""
    port = _free_port()
    proc = subprocess.Popen([_exe(), "-X", "heapsize=" + heap, "-c", _STOCK_APP % (STOCK_MODULES, port)], cwd=str(cwd),
                            env=dict(env, MICROPYPATH=str(lib)), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    body = None
    watchdog = threading.Timer(60, proc.kill)  # a hung runtime ends the read loop below (EOF)
    watchdog.start()
    try:
        for line in proc.stdout:  # READY, or the process ends (EOF) with its error
            lines.append(line)
            if line.startswith("READY"):
                try:
                    with urllib.request.urlopen("http://127.0.0.1:%d/hello/7" % port, timeout=20) as r:
                        body = json.loads(r.read())
                except (OSError, ValueError) as e:  # HTTPError too: reported with the device's output
                    lines.append("GET /hello/7: %r\n" % e)
                proc.stdin.write("stop\n")
                proc.stdin.flush()
        rc = proc.wait(timeout=30)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
        proc.stdout.close()
    return rc, "".join(lines), body


@pytest.fixture(scope="module")
def mip_build(tmp_path_factory):
    """scripts/build_mip.py run as a user runs it, into a temporary folder."""
    out = tmp_path_factory.mktemp("mipbuild") / "mip"
    proc = subprocess.run([sys.executable, BUILD_MIP, "--out", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_build_mip_writes_bytecode_for_every_module_and_its_package_json(mip_build):
    with open(str(mip_build / "package.json")) as f:
        desc = json.load(f)
    files = gen_package_json.package_files()
    assert desc["version"] == gen_package_json.version()
    assert desc["deps"] == []
    assert [t for t, _ in desc["urls"]] == [rel[:-3] + ".mpy" for rel in files]
    served = set()
    for _target, url in desc["urls"]:
        assert "/" not in url and ":" not in url, "flat and relative to package.json: " + url
        head = build_mip.check_header(str(mip_build / url))
        # .mpy v6, no native code (arch 0: the sub-version is then ignored), 31-bit small ints
        assert head[0:2] == b"M\x06" and head[2] >> 2 == 0 and head[3] == 31, (url, head)
        served.add(url)
    assert sorted(os.listdir(str(mip_build))) == sorted(served | {"package.json"})  # nothing stale


def test_check_header_rejects_native_code_and_other_versions(tmp_path):
    p = tmp_path / "x.mpy"
    for head, why in ((b"M\x05\x00\x1f", "version 5"), (b"M\x06\x26\x1f", "native code for arch 9"),
                      (b"M\x06\x00\x3f", "63-bit small ints"), (b"C\x06\x00\x1f", "not an .mpy")):
        p.write_bytes(head + b"\x00" * 8)
        with pytest.raises(ValueError) as e:
            build_mip.check_header(str(p))
        assert why in str(e.value)


def test_mpy_install_fits_a_stock_boards_heap_and_serves(mip_build, tmp_path):
    target = tmp_path / "lib"
    target.mkdir()
    with _served(str(mip_build)) as srv:
        env = _mip_install(srv.base + "/package.json", target, tmp_path)
    with open(str(mip_build / "package.json")) as f:
        desc = json.load(f)
    assert sorted(srv.requested) == sorted(["/package.json"] + ["/" + u for _, u in desc["urls"]])
    for installed, url in desc["urls"]:
        assert filecmp.cmp(str(target / installed), str(mip_build / url), shallow=False), installed
    assert not [p for p in target.rglob("*") if p.suffix == ".py"]

    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    rc, out, body = _run_stock_app(target, env, run_dir, STOCK_HEAP)
    assert rc == 0, out
    assert body == {"n": 7, "mpy": 6}, out
    files = [line.split()[1] for line in out.splitlines() if line.startswith("FILE ")]
    want = []
    for m in STOCK_MODULES:  # a module, or a package (its __init__)
        f = target / (m.replace(".", "/") + ".mpy")
        want.append(str(f if f.exists() else target / m.replace(".", "/") / "__init__.mpy"))
    assert files == want, out
    assert "SERVED 1" in out, out


def test_py_install_needs_more_heap_than_a_stock_board_has(repo_server, tmp_path):
    """The same app from the .py install (package.json at the repo root): compiling on import does
    not fit the stock heap; with room to compile, it runs."""
    base, _ = repo_server
    target = tmp_path / "lib"
    target.mkdir()
    env = _mip_install(base + "/package.json", target, tmp_path)
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    rc, out, body = _run_stock_app(target, env, run_dir, STOCK_HEAP)
    assert rc != 0 and "MemoryError" in out and body is None, out
    assert "READY" not in out, "the imports themselves fail:\n" + out
    rc, out, body = _run_stock_app(target, env, run_dir, HEAP)
    assert rc == 0 and body == {"n": 7, "mpy": 6}, out
    assert "/iotutils/server.py" in out, out


def test_mpy_install_from_release_assets_behind_a_redirect(mip_build, tmp_path):
    """A release's assets: .../releases/download/<tag>/<name> answers 302 to the file's storage URL;
    mip follows it and resolves the relative URLs against the package.json URL it was given."""
    target = tmp_path / "lib"
    target.mkdir()
    with _served(str(mip_build), redirect=("/releases/download/v1/", "/")) as srv:
        _mip_install(srv.base + "/releases/download/v1/package.json", target, tmp_path)
    with open(str(mip_build / "package.json")) as f:
        desc = json.load(f)
    for installed, url in desc["urls"]:
        assert "/releases/download/v1/" + url in srv.requested, url
        assert filecmp.cmp(str(target / installed), str(mip_build / url), shallow=False), installed


def test_build_mip_refuses_native_code(tmp_path):
    """A @micropython.native function would tie the .mpy to one architecture: the build fails."""
    pkg = tmp_path / "modules" / "iotutils"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('__version__ = "9.9.9"\n')
    (pkg / "fast.py").write_text("import micropython\n\n@micropython.native\ndef f(x):\n    return x + 1\n")
    with pytest.raises(SystemExit) as e:
        build_mip.build(str(tmp_path / "out"), modules_dir=str(tmp_path / "modules"))
    assert "iotutils/fast.py" in str(e.value)
    assert not (tmp_path / "out").exists() and os.listdir(str(tmp_path)) == ["modules"]  # no half build
    (pkg / "fast.py").write_text("def f(x):\n    return x + 1\n")
    desc = build_mip.build(str(tmp_path / "out"), modules_dir=str(tmp_path / "modules"))
    assert desc["version"] == "9.9.9"
    assert desc["urls"] == [["iotutils/__init__.mpy", "iotutils.__init__.mpy"],
                            ["iotutils/fast.mpy", "iotutils.fast.mpy"]]
