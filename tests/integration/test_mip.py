"""Stock-MicroPython install paths: package.json (mip) installs the pure-Python toolbox;
scripts/build_mip.py builds the precompiled (.mpy) packages that fit a stock board's heap: one per
capability (their deps pulled in by mip) and package.json with everything.

The repo (or build/mip) is served over a loopback HTTP server, the runtime's own `mip` installs from
a package file into an empty folder, and the toolbox is imported from that folder alone
(MICROPYPATH=<folder>: no modules/, no frozen copy in the way). Each capability package is installed
alone by the device's mip on the stock heap, and then used from that folder (a value survives a
restart, the server answers, Wi-Fi's portal serves and the network is joined, OTA checks a release,
Alexa answers as a Hue bridge, MQTT round-trips through Mosquitto, Device serves its admin page);
mpremote installs one from a served folder and one from a local build into a simulated board
(sim.py --serial).
"""
import filecmp
import functools
import http.server
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
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
# What does not fit the stock 110wK heap reliably yet, loaded from .mpy on this runtime (bench/bench_mip.py
# measures each combination; this runtime also holds the pure-Python NVS engine, which esp32.NVS spares
# a stock ESP32): a whole Device (Wi-Fi, OTA, Alexa and the admin page) does not start; Wi-Fi's setup
# portal and Alexa (each with the server) start with 12-14 % free, and then a page or SSDP's answers
# sometimes find no room (503, MemoryError). The package tests are about each package being complete,
# so those get room; the installs themselves run at the stock heap.
ROOMY_HEAP = "140wK"
DEVICE_HEAP = "200wK"
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
    # not one of the WeMo device ports (49152..49251): hal.sim maps those to the simulator's own
    # ports, so the app would listen elsewhere and its READY be followed by "connection refused"
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if not 49152 <= port < 49252:
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


RELEASE = "/releases/download/v1/"  # as GitHub's release assets: 302 to the file's storage (here /mip/)


@pytest.fixture(scope="module")
def mip_site(tmp_path_factory):
    """scripts/build_mip.py run as a user publishing release assets runs it: served on loopback
    (/mip/NAME, and RELEASE + NAME answering 302 to it), built with --base-url the release URL, so
    the packages' deps are fetched through the redirect too. Yields the server (.base, .requested)
    with .out (the folder) and .release (the URL the build was made for)."""
    site = tmp_path_factory.mktemp("mipsite")
    with _served(str(site), redirect=(RELEASE, "/mip/")) as srv:
        srv.out = site / "mip"
        srv.release = srv.base + RELEASE.rstrip("/")
        proc = subprocess.run([sys.executable, BUILD_MIP, "--out", str(srv.out), "--base-url", srv.release],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        yield srv


@pytest.fixture(scope="module")
def mip_build(mip_site):
    return mip_site.out


def test_build_mip_writes_bytecode_for_every_module_and_its_package_json(mip_build):
    with open(str(mip_build / "package.json")) as f:
        desc = json.load(f)
    files = gen_package_json.package_files()
    assert desc["version"] == gen_package_json.version()
    assert desc["deps"] == []  # everything, in one package: works from wherever it is served
    assert [t for t, _ in desc["urls"]] == [rel[:-3] + ".mpy" for rel in files]
    served = set()
    for _target, url in desc["urls"]:
        assert "/" not in url and ":" not in url, "flat and relative to package.json: " + url
        head = build_mip.check_header(str(mip_build / url))
        # .mpy v6, no native code (arch 0: the sub-version is then ignored), 31-bit small ints
        assert head[0:2] == b"M\x06" and head[2] >> 2 == 0 and head[3] == 31, (url, head)
        served.add(url)
    jsons = {build_mip.package_file(p[0]) for p in build_mip.PACKAGES} | {"package.json"}
    assert sorted(os.listdir(str(mip_build))) == sorted(served | jsons)  # nothing stale


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
    if os.environ.get("FIRMWARE"):
        # the host firmware is not a stock board: it compiles these files in less heap (the admin
        # page's areas became a module of their own, and the rest fits there since)
        assert (rc == 0 and body == {"n": 7, "mpy": 6}) or ("MemoryError" in out and "READY" not in out), out
    else:
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
        build_mip.build(str(tmp_path / "out"), modules_dir=str(tmp_path / "modules"), packages=())
    assert "iotutils/fast.py" in str(e.value)
    assert not (tmp_path / "out").exists() and os.listdir(str(tmp_path)) == ["modules"]  # no half build
    (pkg / "fast.py").write_text("def f(x):\n    return x + 1\n")
    desc = build_mip.build(str(tmp_path / "out"), modules_dir=str(tmp_path / "modules"), packages=())["iotutils"]
    assert desc["version"] == "9.9.9"
    assert desc["urls"] == [["iotutils/__init__.mpy", "iotutils.__init__.mpy"],
                            ["iotutils/fast.mpy", "iotutils.fast.mpy"]]


# ---- one package per capability: each complete on its own, its deps pulled in by mip ----

def _closure(name, descs):
    """The package and every package it depends on, transitively (names)."""
    out, todo = set(), [name]
    while todo:
        p = todo.pop()
        if p not in out:
            out.add(p)
            for dep, _ in descs[p]["deps"]:
                ref = dep.rsplit("/", 1)[-1]
                todo.append("iotutils" if ref == "package.json" else ref[:-len(".json")])
    return out


def test_capability_packages_hold_each_module_once_with_their_deps(mip_site):
    descs = build_mip.read_build(str(mip_site.out))
    names = [p[0] for p in build_mip.PACKAGES]
    assert sorted(descs) == sorted(names + ["iotutils"])
    every = sorted(rel[:-3] + ".mpy" for rel in gen_package_json.package_files())
    owned = sorted(t for n in names for t, _ in descs[n]["urls"])
    assert owned == every, "each module in exactly one capability package"
    deps = {n: [d[0] for d in descs[n]["deps"]] for n in names}
    url = mip_site.release + "/%s.json"
    assert deps["iotutils-core"] == []
    for n in ("iotutils-persist", "iotutils-server"):
        assert deps[n] == [url % "iotutils-core"]
    assert deps["iotutils-wifi"] == [url % "iotutils-persist", url % "iotutils-server"]
    assert deps["iotutils-ota"] == deps["iotutils-mqtt"] == [url % "iotutils-persist"]
    assert deps["iotutils-alexa"] == [url % "iotutils-persist", url % "iotutils-server"]
    assert deps["iotutils-admin"] == [url % "iotutils-wifi", url % "iotutils-ota", url % "iotutils-alexa"]
    for n in names:
        assert all(v == gen_package_json.version() for _, v in descs[n]["deps"])
    own = {n: {t for t, _ in descs[n]["urls"]} for n in names}
    assert {"iotutils/__init__.mpy", "iotutils/_compat.mpy", "iotutils/auth.mpy",
            "iotutils/hal/__init__.mpy"} <= own["iotutils-core"]
    assert "iotutils/store.mpy" in own["iotutils-persist"] and "iotutils/web/engine.mpy" in own["iotutils-server"]
    assert own["iotutils-wifi"] == {"iotutils/wifi.mpy", "iotutils/wifi_setup.mpy", "iotutils/portal.mpy",
                                    "iotutils/portal_pages.mpy"}
    assert "iotutils/device.mpy" in own["iotutils-admin"] and "iotutils/sign.mpy" in own["iotutils-ota"]
    assert {"iotutils/mqtt/codec.mpy", "iotutils/homeassistant.mpy", "iotutils/ha_discovery.mpy"} <= own["iotutils-mqtt"]
    assert {"iotutils/hue.mpy", "iotutils/hue_api.mpy", "iotutils/wemo_api.mpy", "iotutils/alexa_users.mpy"} \
        <= own["iotutils-alexa"]
    proc = subprocess.run([sys.executable, BUILD_MIP, "--check", "--out", str(mip_site.out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_fails_when_a_package_misses_a_module_its_files_import(mip_site, tmp_path):
    def check(edit):
        out = tmp_path / "mip"
        shutil.rmtree(str(out), ignore_errors=True)
        shutil.copytree(str(mip_site.out), str(out))
        edit(out)
        proc = subprocess.run([sys.executable, BUILD_MIP, "--check", "--out", str(out)],
                              capture_output=True, text=True, timeout=60)
        return proc.returncode, proc.stdout + proc.stderr

    def drop_file(out):  # the router leaves the server package
        p = out / "iotutils-server.json"
        d = json.loads(p.read_text())
        d["urls"] = [u for u in d["urls"] if u[0] != "iotutils/web/routing.mpy"]
        p.write_text(json.dumps(d))

    rc, out = check(drop_file)
    assert rc == 1, out
    assert "iotutils-server: iotutils.web.engine imports iotutils.web.routing, which is neither" in out, out

    def drop_dep(out):  # OTA without persist: its state (iotutils.ota.state) needs it
        p = out / "iotutils-ota.json"
        d = json.loads(p.read_text())
        d["deps"] = []
        p.write_text(json.dumps(d))

    rc, out = check(drop_dep)
    assert rc == 1, out
    assert "iotutils-ota: iotutils.ota.state imports iotutils.persist, which is neither" in out, out
    assert "iotutils-ota: iotutils.ota imports iotutils.hal, which is neither" in out, out  # core went too

    rc, out = check(lambda out: (out / "iotutils.web.routing.mpy").unlink())
    assert rc == 1 and "lists iotutils.web.routing.mpy, which is not in" in out, out
    rc, out = check(lambda out: None)
    assert rc == 0, out


def test_build_places_shared_modules_and_refuses_an_unplaced_import(tmp_path):
    """The scan on a small tree: a module two packages import lands in the package both depend on;
    an import no package holds fails the build, naming it."""
    pkg = tmp_path / "modules" / "iotutils"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('__version__ = "1.0"\n')
    (pkg / "shared.py").write_text("X = 1\n")
    (pkg / "a.py").write_text("from iotutils.shared import X\n")
    (pkg / "b.py").write_text("def f():\n    from iotutils import shared\n    return shared\n")
    packages = (("p-base", ("iotutils",), ()), ("p-a", ("iotutils.a",), ("p-base",)),
                ("p-b", ("iotutils.b",), ("p-base",)))
    descs = build_mip.build(str(tmp_path / "out"), modules_dir=str(tmp_path / "modules"),
                            base_url="https://example.org/mip", packages=packages)
    assert [t for t, _ in descs["p-base"]["urls"]] == ["iotutils/__init__.mpy", "iotutils/shared.mpy"]
    assert [t for t, _ in descs["p-a"]["urls"]] == ["iotutils/a.mpy"]
    assert descs["p-b"]["deps"] == [["https://example.org/mip/p-base.json", "1.0"]]
    (pkg / "b.py").write_text("def f():\n    from iotutils import gone\n    return gone\n")
    with pytest.raises(SystemExit) as e:
        build_mip.build(str(tmp_path / "out2"), modules_dir=str(tmp_path / "modules"), packages=packages)
    assert "p-b: iotutils.b imports iotutils.gone, which is not in modules/" in str(e.value)
    (pkg / "b.py").write_text("import iotutils.a\n")  # b needs a, but p-b does not depend on p-a
    with pytest.raises(SystemExit) as e:
        build_mip.build(str(tmp_path / "out2"), modules_dir=str(tmp_path / "modules"), packages=packages)
    assert "p-b: iotutils.b imports iotutils.a, which is neither in the package nor in its deps" in str(e.value)
    assert not (tmp_path / "out2").exists()
    # a lazy __import__("iotutils.x", ...) or _compat's load("iotutils.x") (how a package reaches its
    # own submodule past its __getattr__ on MicroPython) is an import like any other
    for call in ('__import__("iotutils.shared", None, None, ("X",))', 'load("iotutils.shared")'):
        (pkg / "b.py").write_text("def f():\n    return %s\n" % call)
        descs = build_mip.build(str(tmp_path / "out3"), modules_dir=str(tmp_path / "modules"), packages=packages)
        assert [t for t, _ in descs["p-base"]["urls"]] == ["iotutils/__init__.mpy", "iotutils/shared.mpy"], call
        assert [t for t, _ in descs["p-b"]["urls"]] == ["iotutils/b.mpy"], call


def test_dep_urls_for_each_place_a_build_is_published():
    assert build_mip.dep_ref("https://o.github.io/iotutils/mip/", "iotutils-core", "1.2") == \
        ["https://o.github.io/iotutils/mip/iotutils-core.json", "1.2"]
    # mip fetches a github: dep from the branch given as its version
    assert build_mip.dep_ref("github:o/iotutils@mip", "iotutils-core", "1.2") == \
        ["github:o/iotutils/iotutils-core.json", "mip"]
    assert build_mip.dep_ref("/x/build/mip", "iotutils", "1.2") == ["/x/build/mip/package.json", "1.2"]
    with pytest.raises(SystemExit):
        build_mip.dep_ref("github:o/iotutils", "iotutils-core", "1.2")  # which branch?


class _App:
    """A device app run on the stock heap from an install folder alone; its lines are read in the
    background: wait(marker) returns the rest of the first line holding it."""

    def __init__(self, lib, code, env, cwd, heap=STOCK_HEAP):
        self.proc = subprocess.Popen([_exe(), "-X", "heapsize=" + heap, "-c", code], cwd=str(cwd),
                                     env=dict(env, MICROPYPATH=str(lib)), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = []
        self.q = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            self.q.put(line)
        self.q.put(None)

    def output(self):
        return "".join(self.lines)

    def wait(self, prefix, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.q.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError("no %r within %d s:\n%s" % (prefix, timeout, self.output()))
            if line is None:
                raise AssertionError("the app ended before %r:\n%s" % (prefix, self.output()))
            at = line.find(prefix)  # threads print too: a marker may follow another line's text
            if at >= 0:
                return line[at + len(prefix):].strip()

    def send(self, text):
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _sim_env(env, state, port, networks=()):
    """The simulated board's description (hal/sim.py): flash file in `state`, device port 80 on host
    `port` (53 on port + 1), a Wi-Fi scenario with the given networks up."""
    from iotutils.hal import layout
    state.mkdir(exist_ok=True)
    scen = state / "wifi.json"
    scen.write_text(json.dumps({"networks": [{"ssid": s, "password": p, "rssi": -60, "channel": 6, "up": True,
                                              "fail": None, "hidden": False} for s, p in networks],
                                "ap_clients": []}))
    cfg = {"state": str(state), "flash": str(state / "flash.bin"), "partitions": [list(p) for p in layout.DEFAULT],
           "port": port, "wifi": str(scen), "ctl_port": None, "slot": "ota_0", "reset_cause": "power_on",
           "mac": "02:00:00:00:00:16"}
    (state / "sim.json").write_text(json.dumps(cfg))
    with open(str(state / "flash.bin"), "wb") as f:  # the board's flash, erased (not the device's RAM)
        f.write(b"\xff" * layout.FLASH_SIZE)
    return dict(env, IOTUTILS_SIM=str(state / "sim.json"))


def _get(url, headers=None, data=None, timeout=20, app=None):
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        raise AssertionError("%s: %d %r\n%s" % (url, e.code, e.read()[:300], app.output() if app else ""))


def _use_core(lib, env, tmp_path):
    import hmac
    code = ("import iotutils, iotutils.hal as hal, iotutils.auth as auth\n"
            "print('CORE', iotutils.__version__, hal.PLATFORM, auth.hmac_sha256(b'k', b'm').hex())")
    with _App(lib, code, env, tmp_path) as app:
        got = app.wait("CORE").split()
        assert app.close() == 0, app.output()
    assert got == [gen_package_json.version(), "sim", hmac.new(b"k", b"m", "sha256").hexdigest()]


def _use_persist(lib, env, tmp_path):
    env = dict(env, IOTUTILS_SIM_STATE=str(tmp_path))  # the flash is a file: it outlives the process
    code = ("from iotutils.persist import PersistentInt\n"
            "v = PersistentInt('boots', default=0)\n"
            "v.value += 1\n"
            "print('BOOTS', v.value)")
    for boot in ("1", "2"):  # the second run is a restart: the value survived it
        with _App(lib, code, env, tmp_path) as app:
            assert app.wait("BOOTS") == boot, app.output()
            assert app.close() == 0, app.output()


def _use_server(lib, env, tmp_path):
    port = _free_port()
    code = ("import sys\nfrom iotutils.server import WebServer\napp = WebServer(port=%d)\n"
            "@app.route('/hello/<int:n>')\ndef hello(req, n):\n    return {'n': n}\n"
            "app.start()\nprint('READY')\nsys.stdin.readline()\napp.stop()\nprint('SERVED', app.stats()['requests'])"
            % port)
    with _App(lib, code, env, tmp_path) as app:
        app.wait("READY")
        assert json.loads(_get("http://127.0.0.1:%d/hello/7" % port, app=app)[1]) == {"n": 7}
        app.send("stop")
        assert app.wait("SERVED") == "1"
        assert app.close() == 0, app.output()


_WIFI_APP = """
import gc, sys, time
for m in ("iotutils.server", "iotutils.portal", "iotutils.wifi"):  # biggest first (README: Memory)
    __import__(m)
    gc.collect()
from iotutils.wifi import Wifi
w = Wifi()
w.start()   # no network known yet: the access point with the default setup portal
while not (w.status()["ap_ssid"] and w.portal and w.portal.active):
    time.sleep_ms(50)
print("APUP", w.status()["ap_ssid"])
sys.stdin.readline()
w.add_network("home", "secret-home")
w.reconnect()
while not w.connected():
    time.sleep_ms(50)
print("JOINED", w.status()["ssid"])
w.stop()
"""


def _use_wifi(lib, env, tmp_path):
    from simdev import free_port_block
    port = free_port_block(2)
    env = _sim_env(env, tmp_path / "state", port, [("home", "secret-home")])
    with _App(lib, _WIFI_APP, env, tmp_path, heap=ROOMY_HEAP) as app:
        ssid = app.wait("APUP", timeout=40)
        status, body, _ = _get("http://127.0.0.1:%d/setup" % port, app=app)
        assert status == 200 and b"<title>Wi-Fi setup</title>" in body, body[:300]
        st = json.loads(_get("http://127.0.0.1:%d/setup/status" % port, app=app)[1])
        assert st["portal"] is True and st["ap_ssid"] == ssid, st
        app.send("join")
        assert app.wait("JOINED", timeout=40) == "home"
        assert app.close() == 0, app.output()
    assert ssid.startswith("iotutils-")


def _use_ota(lib, env, tmp_path):
    from fake_github import OWNER, FakeGitHub
    with FakeGitHub() as gh:
        gh.add_release("me/fw", "v1.1.0", image=b"\xe9" + b"\x00" * 4095, version="1.1.0")
        code = ("import json\nfrom iotutils.ota import OTA\n"
                "o = OTA(repo='me/fw', api=%r, pubkey=%r, allow_http=True)\n"
                "print('CHECK', json.dumps(o.check()))" % (gh.api_url, OWNER.pem))
        with _App(lib, code, dict(env, IOTUTILS_SIM_STATE=str(tmp_path)), tmp_path) as app:
            got = json.loads(app.wait("CHECK"))
            assert app.close() == 0, app.output()
    assert got["available"] == "1.1.0" and got["newer"] is True, got


_ALEXA_APP = """
import gc, sys
from iotutils.server import WebServer
gc.collect()
from iotutils.alexa import Alexa
gc.collect()
app = WebServer(port=80, workers=2)
alexa = Alexa(app)
alexa.add("Desk lamp", dimmable=True)
alexa.start()
app.start()
print("READY", alexa.bridgeid)
sys.stdin.readline()
alexa.stop()
app.stop()
"""


def _use_alexa(lib, env, tmp_path):
    from simdev import free_port_block
    port = free_port_block(2)
    env = _sim_env(env, tmp_path / "state", port)
    with _App(lib, _ALEXA_APP, env, tmp_path, heap=ROOMY_HEAP) as app:
        bridgeid = app.wait("READY")
        assert b"Philips hue" in _get("http://127.0.0.1:%d/description.xml" % port, app=app)[1]
        config = json.loads(_get("http://127.0.0.1:%d/api/config" % port, app=app)[1])
        assert config["bridgeid"] == bridgeid, config
        app.send("stop")
        assert app.close() == 0, app.output()


_MQTT_APP = """
import sys, time
import iotutils.mqtt_device, iotutils.homeassistant  # the Home Assistant side loads too
from iotutils.mqtt import MQTT
got = []
m = MQTT(%r, client_id="mip-test", keepalive=10)
m.subscribe("mip/echo", lambda t, p: got.append(p))
m.on_connect(lambda: m.publish("mip/echo", b"hello", qos=1))
m.start()
t0 = time.time()
while not got and time.time() - t0 < 20:
    time.sleep_ms(50)
print("GOT", got[0].decode() if got else None)
m.stop()
"""


def _use_mqtt(lib, env, tmp_path):
    from mosquitto import Mosquitto, available
    if not available():
        pytest.skip("mosquitto is not installed (make deps)")
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        with _App(lib, _MQTT_APP % broker.url(), dict(env, IOTUTILS_SIM_STATE=str(tmp_path)), tmp_path) as app:
            assert app.wait("GOT") == "hello", app.output()
            assert app.close() == 0, app.output()
    finally:
        broker.stop()


_DEVICE_APP = """
import gc, sys
for m in ("iotutils.server", "iotutils.admin", "iotutils.ota"):
    __import__(m)
    gc.collect()
import iotutils
import time
dev = iotutils.Device(name="miplamp"%s)
dev.start()
while not dev.wifi.status()["ap_ssid"]:  # no network known: the setup access point comes up
    time.sleep_ms(50)
print("READY")
sys.stdin.readline()
"""




def _use_admin(lib, env, tmp_path, mqtt=None):
    """Device with everything on by default (Wi-Fi, OTA, Alexa, admin), unconfigured: the setup
    access point is up, so the first admin password may be set; then a logged-in status."""
    from simdev import free_port_block
    port = free_port_block(2)
    env = _sim_env(env, tmp_path / "state", port)
    code = _DEVICE_APP % (", mqtt=%r" % mqtt if mqtt else "")
    with _App(lib, code, env, tmp_path, heap=DEVICE_HEAP) as app:
        app.wait("READY", timeout=40)
        base = "http://127.0.0.1:%d" % port
        assert _get(base + "/healthz", app=app)[0] == 200
        assert b"<html" in _get(base + "/admin", app=app)[1].lower()
        status, body, headers = _get(base + "/admin/api/password", {"Content-Type": "application/json"},
                                     json.dumps({"new": "mip-admin-password"}).encode(), app=app)
        cookie = headers["Set-Cookie"].split(";")[0]
        st = json.loads(_get(base + "/admin/api/status", {"Cookie": cookie}, app=app)[1])
        assert st["name"] == "miplamp", st
        if mqtt is None and not os.path.exists(os.path.join(lib, "iotutils", "mqtt_settings.mpy")):
            # the admin page's MQTT tab on a board without iotutils-mqtt: a reason, not a 500
            try:
                urllib.request.urlopen(urllib.request.Request(base + "/admin/api/mqtt", headers={"Cookie": cookie}),
                                       timeout=20)
                raise AssertionError("GET /admin/api/mqtt answered without iotutils-mqtt installed")
            except urllib.error.HTTPError as e:
                assert e.code == 404 and b"iotutils-mqtt" in e.read(), e.code
        return app, st


def _use_device(lib, env, tmp_path):
    app, _ = _use_admin(lib, env, tmp_path)
    app.proc.kill()


PACKAGE_USE = {
    "iotutils-core": _use_core,
    "iotutils-persist": _use_persist,
    "iotutils-server": _use_server,
    "iotutils-wifi": _use_wifi,
    "iotutils-ota": _use_ota,
    "iotutils-alexa": _use_alexa,
    "iotutils-mqtt": _use_mqtt,
    "iotutils-admin": _use_device,
}


def test_every_package_has_a_use_test():
    assert sorted(PACKAGE_USE) == sorted(p[0] for p in build_mip.PACKAGES)


@pytest.mark.parametrize("name", sorted(PACKAGE_USE))
def test_package_installs_alone_with_its_deps_and_works(name, mip_site, tmp_path):
    """The device's own mip installs the package from the release URL (every file and dep through
    the 302, as from GitHub's release assets) into an empty folder on the stock heap: exactly the
    package's files and its deps' land there, and the capability works from that folder alone."""
    descs = build_mip.read_build(str(mip_site.out))
    want = {}
    for p in _closure(name, descs):
        for target, url in descs[p]["urls"]:
            want[target] = url
    target = tmp_path / "lib"
    target.mkdir()
    mark = len(mip_site.requested)
    env = _mip_install(mip_site.release + "/" + build_mip.package_file(name), target, tmp_path)
    asked = {p[len(RELEASE):] for p in mip_site.requested[mark:] if p.startswith(RELEASE)}
    assert asked == set(want.values()) | {build_mip.package_file(p) for p in _closure(name, descs)}
    installed = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert installed == sorted(want), "exactly the package and its deps"
    for t, url in want.items():
        assert filecmp.cmp(str(target / t), str(mip_site.out / url), shallow=False), t
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    PACKAGE_USE[name](target, env, run_dir)


# ---- mpremote (1.29, the PC's installer) into a simulated board over its serial console ----

_CONSOLE_APP = 'print("APP START")\n'


def _installed(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_mpremote_installs_a_package_with_its_deps(mip_site, tmp_path):
    """mpremote mip install puts a package and its deps into the board's /lib: from the served folder
    (deps through the release URL's redirect), and from a local build (deps as local paths, nothing
    published). The board's console is sim.py --serial (it runs its toolbox frozen, so what is checked
    here is what landed in the filesystem; the tests above use what the device's own mip installed)."""
    from simdev import _children, _wait_gone, free_port_block
    local = tmp_path / "local" / "mip"  # as `make mip` without MIP_URL
    proc = subprocess.run([sys.executable, BUILD_MIP, "--out", str(local)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    app = tmp_path / "app.py"
    app.write_text(_CONSOLE_APP)
    tty, state, log = tmp_path / "ttySIM", tmp_path / "state", tmp_path / "sim.log"
    with open(str(log), "wb") as out:
        sim = subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "sim.py"), "--state", str(state),
                                "--port", str(free_port_block(4)), "--serial", str(tty), str(app)],
                               stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120  # a first start measures the console's heap cost (cached)
        while not (tty.exists() and b"APP START" in log.read_bytes()):
            assert sim.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.05)

        def mpremote(*args):
            r = subprocess.run([sys.executable, "-m", "mpremote", "connect", str(tty)] + list(args),
                               capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
            assert r.returncode == 0, r.stdout + r.stderr + log.read_text(errors="replace")[-3000:]
            return r.stdout

        descs = build_mip.read_build(str(mip_site.out))
        out = mpremote("mip", "install", mip_site.release + "/iotutils-persist.json")
        assert "Done" in out, out
        want = sorted(t for p in _closure("iotutils-persist", descs) for t, _ in descs[p]["urls"])
        assert _installed(state / "fs" / "lib") == want
        out = mpremote("mip", "install", "--target", "/lib2", str(local / "iotutils-server.json"))
        assert "Done" in out, out
        want = sorted(t for p in _closure("iotutils-server", descs) for t, _ in descs[p]["urls"])
        assert _installed(state / "fs" / "lib2") == want
        for t in want:
            assert filecmp.cmp(str(state / "fs" / "lib2" / t), str(local / build_mip.flat_name(t[:-4] + ".py")),
                               shallow=False), t
    finally:
        kids = _children(sim.pid)
        sim.terminate()
        sim.wait(15)
        _wait_gone(kids)
