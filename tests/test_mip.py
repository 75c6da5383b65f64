"""Stock-MicroPython install path: package.json (mip) installs the pure-Python toolbox.

The repo is served over a loopback HTTP server, the runtime's own `mip` installs from its
package.json into an empty folder, and the toolbox is imported from that folder alone
(MICROPYPATH=<folder>: no modules/, no frozen copy in the way).
"""
import filecmp
import functools
import http.server
import json
import os
import subprocess
import sys
import threading

import pytest

from conftest import ROOT, micropython_cmd

GEN = os.path.join(ROOT, "scripts", "gen_package_json.py")
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import gen_package_json  # noqa: E402

# Modules that need the chip itself (network/esp32/machine); everything else must import on a PC.
CHIP_ONLY = {"iotutils/hal/esp32.py"}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requested = None

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.requested.append(self.path)
        super().do_GET()


@pytest.fixture
def repo_server():
    """The repo root over HTTP on 127.0.0.1:<free port>; yields (base URL, list of paths requested)."""
    requested = []
    handler = functools.partial(type("H", (_QuietHandler,), {"requested": requested}), directory=ROOT)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield "http://127.0.0.1:%d" % srv.server_address[1], requested
    finally:
        srv.shutdown()
        srv.server_close()


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
