"""Hardware-in-the-loop: the same scenarios on a real ESP32 and on the simulated device's serial console.

    make hil                        # the simulated board (sim.py --serial on a PTY), pytest-embedded's serial service
    make hil PORT=/dev/ttyUSB0      # a board: flash it, then the suite through pytest-embedded's esp + serial services
    make test                       # runs this suite on the simulated board too, through pytest-embedded

Where the board is:
- `--embedded-services esp,serial --port P` (pytest-embedded, requirements-hil.txt): the ESP32 on P.
  HIL_SSID / HIL_PASSWORD name the network it joins; HIL_HOST_IP is this host's address on that
  network (default: the one facing the board); HIL_FLASH=<ESP-IDF build folder> flashes bootloader,
  partition table, otadata and app first; HIL_FIRMWARE=<app image> is what OTA releases are made of
  (default build/esp32/micropython.bin).
- otherwise: a simulated board, started once per session: scripts/sim.py --serial on a temporary
  PTY, its own Wi-Fi scenario (one network, given to the tests as HIL_SSID would be). With
  `--embedded-services serial` the tests get pytest-embedded's Dut on that PTY; without the plugin
  a SimDut (tests/hil/simdut.py) with the same write()/expect().
Both start from an NVS image written before the first boot (device name, Wi-Fi, admin password and the
public key of the session's OTA signing key, made by scripts/keygen.py) and get the suite's boot.py
(tests/hil/board.py) at their first test.
"""
import os
import subprocess
import sys

import pytest

from hil.board import ADMIN_PASSWORD, DEVICE_NAME, SCRIPTS, RealBoard, SimBoard
from hil.simdut import SimDut


def _services(config):
    if not config.pluginmanager.hasplugin("pytest_embedded"):
        return ()
    return [s.strip() for s in (config.getoption("embedded_services", None) or "").split(",") if s.strip()]


def _board_port(config):
    """The serial port of a real board, or None for the simulated one."""
    if "esp" in _services(config):
        return config.getoption("port", None)
    return None


def pytest_collection_modifyitems(config, items):
    # one board, one session: under -n with --dist loadgroup every scenario runs on one xdist worker
    # (make test runs tests/hil in a pytest of its own, without -n; --dist loadfile keeps a file on one too)
    for item in items:
        if os.sep + "hil" + os.sep in str(item.path):
            item.add_marker(pytest.mark.xdist_group("hil"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    rep = (yield).get_result()
    if rep.when == "call":
        item.hil_failed = rep.failed


def _signing_keys(workdir):
    """(private, public) key paths from scripts/keygen.py (None in a tree without OTA signing)."""
    keygen = os.path.join(SCRIPTS, "keygen.py")
    if not os.path.exists(keygen):
        return None
    out = os.path.join(workdir, "keys")
    r = subprocess.run([sys.executable, keygen, "-o", out], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, "keygen.py failed:\n" + r.stdout + r.stderr
    names = os.listdir(out)
    key = [n for n in names if n.endswith(".key")]
    pub = [n for n in names if n.endswith(".pub")]
    assert key and pub, "keygen.py -o %s made %s (want NAME.key and NAME.pub)" % (out, names)
    return os.path.join(out, key[0]), os.path.join(out, pub[0])


def _settings(board):
    s = {"device_name": DEVICE_NAME, "wifi_networks": [{"ssid": board.wifi[0], "password": board.wifi[1]}],
         "admin_password": ADMIN_PASSWORD}
    if board.signing:
        with open(board.signing[1]) as f:
            s["ota_pubkey"] = f.read()     # the PEM text keygen.py writes
    return s


@pytest.fixture(scope="session")
def hil(request, tmp_path_factory):
    """The board of this session (tests/hil/board.py), before any test's Dut is attached."""
    workdir = str(tmp_path_factory.mktemp("hil"))
    signing = _signing_keys(workdir)
    port = _board_port(request.config)
    if port:
        b = RealBoard(port, workdir, signing=signing)
        b.settings = _settings(b)
        yield b
        return
    from simdev import free_port_block
    b = SimBoard(workdir, free_port_block(4), signing=signing)
    b.settings = _settings(b)
    try:
        b.start(nvs=b.nvs_image())      # provisioning: the NVS image is in flash before the first boot
        yield b
    finally:
        b.stop()


@pytest.fixture
def port(request, hil):
    """pytest-embedded's port: the simulated board's PTY unless --port names a board."""
    return hil.tty


@pytest.fixture
def board(hil, request):
    """The session's board with this test's Dut attached (pytest-embedded's, or a SimDut)."""
    if "serial" in _services(request.config):
        dut = request.getfixturevalue("dut")
    else:
        dut = SimDut(hil.tty, logfile=os.path.join(hil.workdir, "console.log"))
        request.addfinalizer(dut.close)
    hil.dut = dut
    if not hil.prepared:
        hil.prepare()
    yield hil
    hil.dut = None
    if getattr(request.node, "hil_failed", False) and hil.sim:
        print("---- sim.py (console copy and messages), tail ----\n" + hil.log_tail())
