"""The board under test, the same for a real ESP32 and for the simulated device (scripts/sim.py --serial).

Everything a scenario needs is read from the console (boot report, Wi-Fi lines, the setup access
point's password) or asked over the REPL and the HTTP API: nothing depends on where the board is.
The few things only one place can do say so: `power_cut()` needs the simulator (a board's power is
not ours to switch), `write_nvs()` is `esptool write-flash` through pytest-embedded's esp service on a
board and `sim.py --write-nvs` at the next power-on of the simulated one.

The board runs examples/lamp.py as main.py (the REPL sees its globals, `dev` among them).
"""
import ast
import hashlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SCRIPTS = os.path.join(ROOT, "scripts")
sys.path.insert(0, SCRIPTS)
sys.path.insert(0, os.path.join(ROOT, "tests"))
import espimage  # noqa: E402

APP = os.path.join(ROOT, "examples", "lamp.py")
ADMIN_PASSWORD = "hil-admin-pass-1"
DEVICE_NAME = "hil-lamp"
BOOT_TIMEOUT = 60        # a board: ROM, MicroPython, the toolbox, Wi-Fi
PROMPT = re.compile(rb">>> ")

# The board's boot.py during the suite. The lamp's OTA source is the test host on the board's own
# network, over plain http: what Device(ota_allow_http=True) is for (a bench has no certificate that
# GitHub's roots accept, nor always an NTP server for TLS); releases are still signed and checked.
# examples/lamp.py stays as it is: boot.py runs first, in the same globals, and sets the default.
BOOT_PY = """# boot.py written by the HIL suite (tests/hil/board.py)
import iotutils.device
_hil_init = iotutils.device.Device.__init__
def _hil_device(self, *args, **kw):
    kw.setdefault("ota_allow_http", True)
    _hil_init(self, *args, **kw)
iotutils.device.Device.__init__ = _hil_device
"""

_BOOT = re.compile(rb"iotutils (\S+) on (\S+): ([^\r\n]*)\r\n")
_FIRMWARE = re.compile(rb"firmware: slot (\S+) \((pending verify|valid)\), (\S+) (\S+?)(, last update rolled back)?\r\n")
_CAUSE = re.compile(rb"reset cause: (\S+)\r\n")
_HEAP = re.compile(rb"heap free: (\d+) of (\d+) bytes")
_WEB = re.compile(rb"web server: http://([\d.]+):(\d+)/")
# (not up to \r\n: print() writes the line's end apart, and another thread's line can come between
# them, on a board's UART as here; the address ends at the first character that cannot be in it)
_WIFI = re.compile(rb"wifi: (?:connected to (.+?) as (\S+) \(([\d.]+), (-?\d+) dBm\)|access point (\S+) "
                   rb"\((?:WPA2, password (\S+)|open)\) at ([\d.]+)(?=[^\d.]))")
_DONE = re.compile(rb"@@DONE\r\n|Traceback \(most recent call last\):\r\n.*?\r\n(?=>>> )", re.S)
_VALUE = re.compile(rb"@@R (.*?) @@E\r\n|Traceback \(most recent call last\):\r\n.*?\r\n(?=>>> )", re.S)


class Board:
    """State kept across tests (the session) plus the Dut of the running test (self.dut)."""

    sim = False

    def __init__(self, settings, wifi, host_ip, workdir, signing=None):
        self.settings = settings   # the provisioning settings every NVS image starts from
        self.wifi = wifi           # (ssid, password) of the network the board joins
        self.host_ip = host_ip     # the test host's address as the board reaches it
        self.workdir = workdir
        self.signing = signing     # (private key, public key) paths (scripts/keygen.py)
        self.dut = None
        self.info = {}             # the last boot report (wait_boot)
        self.boot_text = b""       # its console text (wait_boot)
        self.prepared = False      # prepare() runs at the first test

    # ---- the console ----
    def expect(self, pattern, timeout=10, before=False):
        if isinstance(pattern, bytes):
            pattern = re.compile(pattern)
        return self.dut.expect(pattern, timeout=timeout, return_what_before_match=before)

    def repl(self, tries=8):
        """Stop main.py (Ctrl-C) and wait for the friendly REPL. Ctrl-C is sent again while the
        board is still booting (a UART drops what comes before anything listens)."""
        for i in range(tries):
            self.dut.write(b"\r\x03")
            try:
                self.expect(PROMPT, timeout=2 + i)
                break
            except Exception:  # pexpect.TIMEOUT (pytest-embedded) or SimDut's ExpectTimeout
                if i == tries - 1:
                    raise
        self.exec("0")   # in step: what comes next answers the next command

    def exec(self, stmt, timeout=15):
        """Run one line at the REPL; AssertionError with the traceback if it raises."""
        self.dut.write(stmt.encode() + b"; print('@@'+'DONE')\r")
        m = self.expect(_DONE, timeout=timeout)
        if m.group(0).startswith(b"Traceback"):
            raise AssertionError("%s raised on the board:\n%s" % (stmt, m.group(0).decode(errors="replace")))

    def eval(self, expr, timeout=15):
        """The value of a Python expression on the board (its repr, read back with literal_eval)."""
        self.dut.write(("print('@@'+'R', repr(%s), '@@'+'E')\r" % expr).encode())
        m = self.expect(_VALUE, timeout=timeout)
        if m.group(0).startswith(b"Traceback"):
            raise AssertionError("%s raised on the board:\n%s" % (expr, m.group(0).decode(errors="replace")))
        return ast.literal_eval(m.group(1).decode())

    def raw_exec(self, code, timeout=30):
        """Run code from the friendly REPL through raw-paste mode, as mpremote does (flow control
        included), and come back. Returns its output; AssertionError if it raised."""
        self.dut.write(b"\x01")
        self.expect(rb"raw REPL; CTRL-B to exit\r\n>", timeout=5)
        self.dut.write(b"\x05A\x01")
        m = self.expect(re.compile(rb"R\x01(..)\x01", re.S), timeout=5)
        window = struct.unpack("<H", m.group(1))[0]
        data = code.encode() if isinstance(code, str) else code
        room = 2 * window   # the window size announces one free window, the \x01 after it a second
        i = 0
        while i < len(data):
            if room == 0:
                self.expect(rb"\x01", timeout=timeout)
                room = window
            n = min(room, len(data) - i)
            self.dut.write(data[i:i + n])
            i += n
            room -= n
        self.dut.write(b"\x04")
        m = self.expect(re.compile(rb"\x04(.*?)\x04(.*?)\x04>", re.S), timeout=timeout)
        self.dut.write(b"\x02")
        self.expect(PROMPT, timeout=5)
        if m.group(2):
            raise AssertionError("raw REPL code raised on the board:\n" + m.group(2).decode(errors="replace"))
        return m.group(1)

    def put_file(self, path, text):
        data = text.encode() if isinstance(text, str) else text
        self.raw_exec("f = open(%r, 'wb')\nf.write(%r)\nf.close()\n" % (path, data))

    def write_boot_py(self, extra=""):
        """The suite's boot.py (BOOT_PY) plus `extra` lines; from the REPL, at the next boot."""
        self.put_file("boot.py", BOOT_PY + extra)

    def prepare(self):
        """Once per session, at the first test: the board as the scenarios expect it."""
        self.repl(tries=20)
        self.write_boot_py()
        self.prepared = True

    # ---- boots ----
    def reset(self, wifi=True):
        """Hard reset from the REPL (machine.reset(), as on any board) and read the boot report."""
        self.repl()
        self.dut.write(b"import machine; machine.reset()\r")
        return self.wait_boot(wifi=wifi)

    def soft_reset(self, wifi=True):
        """Ctrl-D at the REPL: MicroPython restarts (no bootloader), main.py runs again."""
        self.repl()
        self.dut.write(b"\x04")
        self.expect(rb"MPY: soft reboot\r\n", timeout=10)
        return self.wait_boot(wifi=wifi, rom=False)

    def wait_boot(self, wifi=True, rom=True, timeout=BOOT_TIMEOUT):
        """Read a boot from the console: the ROM's reset line (hard resets), the toolbox's boot
        report and (wifi=True) the Wi-Fi outcome. Returns and keeps a dict of what it said."""
        info = {}
        if rom:
            m = self.expect(rb"rst:(0x[0-9a-f]+) \((\w+)\)", timeout=timeout)
            info["rst"] = m.group(2).decode()
        m = self.expect(_BOOT, timeout=timeout)
        info.update(version=m.group(1).decode(), platform=m.group(2).decode(), name=m.group(3).decode())
        # (only up to the end of its own words: the rest of the line may be another thread's)
        text = self.expect(rb"heap free after start: (\d+) of (\d+) bytes \(\d+ %\)", timeout=timeout, before=True)
        fw = _FIRMWARE.search(text)
        info.update(slot=fw.group(1).decode(), pending=fw.group(2) == b"pending verify",
                    project=fw.group(3).decode(), fw_version=fw.group(4).decode(), rolled_back=bool(fw.group(5)),
                    cause=_CAUSE.search(text).group(1).decode())
        heap = _HEAP.search(text)
        info["heap"] = (int(heap.group(1)), int(heap.group(2)))
        web = _WEB.search(text)
        info["port"] = int(web.group(2))
        info["ip"] = web.group(1).decode()
        if wifi:
            w = _WIFI.search(text) or self.expect(_WIFI, timeout=timeout)
            info.update(self._wifi(w))
        self.info = info
        self.boot_text = text   # what the boot printed before its report ended (other threads' lines too)
        return info

    def expect_after_boot(self, pattern, timeout=10):
        """A line the boot prints from another thread: already read with the boot report, or still to come."""
        if re.search(pattern, self.boot_text) is None:
            self.expect(pattern, timeout=timeout)

    @staticmethod
    def _wifi(m):
        if m.group(1):
            return {"wifi": "sta", "ssid": m.group(1).decode(), "hostname": m.group(2).decode(),
                    "ip": m.group(3).decode()}
        return {"wifi": "ap", "ap_ssid": m.group(5).decode(), "ap_password": (m.group(6) or b"").decode(),
                "ap_ip": m.group(7).decode()}

    def running(self):
        """A fresh boot with the app running and connected: the state most scenarios start from."""
        info = self.reset()
        assert info.get("wifi") == "sta", "the board did not join %s: %r" % (self.wifi[0], info)
        return info

    # ---- the network side ----
    def url(self, path="/"):
        return "http://%s:%d%s" % (self.info["ip"], self.info["port"], path)

    def admin(self, password=ADMIN_PASSWORD):
        """A requests.Session logged in to the admin API (cookie + X-CSRF-Token)."""
        s = requests.Session()
        r = s.post(self.url("/admin/api/login"), json={"password": password}, timeout=10)
        assert r.status_code == 200, (r.status_code, r.text)
        s.headers["X-CSRF-Token"] = r.json()["csrf"]
        return s

    def ssdp_interface(self):
        return self.host_ip

    # ---- provisioning (NVS) ----
    def nvs_image(self, extra=None):
        settings = dict(self.settings)
        settings.update(extra or {})
        path = os.path.join(self.workdir, "nvs-%s.bin" % hashlib.sha1(json.dumps(settings, sort_keys=True)
                                                                        .encode()).hexdigest()[:10])
        src = path[:-4] + ".json"
        with open(src, "w") as f:
            json.dump(settings, f)
        r = subprocess.run([sys.executable, os.path.join(SCRIPTS, "nvs_provision.py"), src, "-o", path],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        return path

    def write_nvs(self, image):
        raise NotImplementedError

    def power_cut(self):
        pytest.skip("a power cut needs the simulated device: a board's power is not switched by this suite")

    # ---- OTA images ----
    def base_image(self, version):
        """An app image of this board's firmware, to be given new versions (retag)."""
        raise NotImplementedError


def retag(image, version):
    """The same ESP32 app image with another app descriptor version (checksum and SHA-256 redone)."""
    info = espimage.parse_app_image(image)
    img = bytearray(image[:info["size"]])
    off = next(o for addr, o, n in info["segments"] if espimage.DROM_START <= addr < espimage.DROM_END)
    field = off + 16   # esp_app_desc_t: magic, secure_version, reserved[2], then version[32]
    new = version.encode().ljust(32, b"\0")
    old = bytes(img[field:field + 32])
    img[field:field + 32] = new
    ck = info["size"] - (33 if info["sha256"] else 1)
    for a, b in zip(old, new):
        img[ck] ^= a ^ b
    if info["sha256"]:
        img[-32:] = hashlib.sha256(bytes(img[:-32])).digest()
    out = bytes(img)
    assert espimage.parse_app_image(out)["version"] == version
    return out


def bump(version, n):
    """'0.1.0' -> '0.1.<0+n>' (an OTA test's versions stay newer than what the board ran before)."""
    head, _, last = version.rpartition(".")
    digits = re.match(r"\d+", last)
    return "%s.%d" % (head, (int(digits.group(0)) if digits else 0) + n) if head else "%s.%d" % (version, n)


class SimBoard(Board):
    """scripts/sim.py --serial on a PTY; power cuts and NVS images at power-on."""

    sim = True

    def __init__(self, workdir, port, **kw):
        wifi = ("hil-net", "hil-secret-42")
        self.scenario = os.path.join(workdir, "wifi.json")
        with open(self.scenario, "w") as f:
            json.dump({"networks": [{"ssid": wifi[0], "password": wifi[1], "rssi": -55, "channel": 6, "up": True,
                                     "fail": None}]}, f)
        super().__init__(settings=None, wifi=wifi, host_ip="127.0.0.1", workdir=workdir, **kw)
        self.state = os.path.join(workdir, "state")
        self.tty = os.path.join(workdir, "ttyHIL")
        self.http_port = port
        self.proc = None
        self.log = os.path.join(workdir, "sim.log")

    def start(self, nvs=None):
        cmd = [sys.executable, os.path.join(SCRIPTS, "sim.py"), "--state", self.state, "--port", str(self.http_port),
               "--wifi", self.scenario, "--serial", self.tty]
        if nvs:
            cmd += ["--write-nvs", nvs]
        cmd.append(APP)
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        log.close()
        deadline = time.monotonic() + 120   # a first start measures the console's heap cost (cached)
        while not os.path.exists(self.tty):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("sim.py --serial did not make %s:\n%s" % (self.tty, self.log_tail()))
            time.sleep(0.05)

    def log_tail(self, n=3000):
        try:
            with open(self.log, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def _kill(self, sig):
        if self.proc and self.proc.poll() is None:
            from simdev import _children, _wait_gone
            kids = _children(self.proc.pid)
            self.proc.send_signal(sig)
            self.proc.wait(15)
            _wait_gone(kids)

    def stop(self):
        """A clean stop (the PTY goes away with it)."""
        self._kill(signal.SIGTERM)

    def power_cut(self):
        """Power off and on: SIGKILL sim.py (the device dies with it, the PTY stays), start it again."""
        self._kill(signal.SIGKILL)
        self.start()

    def write_nvs(self, image):
        """As `esptool write-flash 0x9000 IMAGE` then a reset on a board: off, flash, power on."""
        self._kill(signal.SIGKILL)
        self.start(nvs=image)

    def base_image(self, version):
        return espimage.build_app_image(version, size=96 * 1024)


class RealBoard(Board):
    """An ESP32 on a serial port, driven through pytest-embedded's esp + serial services."""

    def __init__(self, port, workdir, **kw):
        ssid, pw = os.environ.get("HIL_SSID"), os.environ.get("HIL_PASSWORD", "")
        if not ssid:
            pytest.exit("HIL on a board needs HIL_SSID (and HIL_PASSWORD): the network the board joins", 2)
        super().__init__(settings=None, wifi=(ssid, pw), host_ip=os.environ.get("HIL_HOST_IP") or None,
                         workdir=workdir, **kw)
        self.tty = port

    def _esptool(self, args):
        """esptool over the esp service's connection (pytest-embedded's use_esptool), then a hard reset."""
        import esptool
        ser = self.dut.serial
        with ser.disable_redirect_thread():
            settings = ser.proc.get_settings()
            ser.esp.connect()
            esptool.main(args, esp=ser.esp)
            ser.esp.hard_reset()
            ser.proc.apply_settings(settings)

    def write_nvs(self, image):
        """esptool write-flash 0x9000 IMAGE, then a reset."""
        self._esptool(["write-flash", "0x9000", image])

    def prepare(self):
        """HIL_FLASH: bootloader, partition table, otadata and app from that ESP-IDF build folder;
        always the provisioning image; then examples/lamp.py as main.py and the suite's boot.py."""
        build = os.environ.get("HIL_FLASH")
        args = []
        if build:
            args += ["0x1000", os.path.join(build, "bootloader", "bootloader.bin"),
                     "0x8000", os.path.join(build, "partition_table", "partition-table.bin"),
                     "0xf000", os.path.join(build, "ota_data_initial.bin"),
                     "0x20000", os.path.join(build, "micropython.bin")]
        self._esptool(["write-flash", "-z"] + args + ["0x9000", self.nvs_image()])
        self.repl(tries=20)
        with open(APP) as f:
            self.put_file("main.py", f.read())
        self.write_boot_py()
        self.prepared = True

    def base_image(self, version):
        path = os.environ.get("HIL_FIRMWARE") or os.path.join(ROOT, "build", "esp32", "micropython.bin")
        if not os.path.exists(path):
            pytest.skip("OTA on a board needs the built firmware (%s; set HIL_FIRMWARE)" % path)
        with open(path, "rb") as f:
            return retag(f.read(), version)

    def ssdp_interface(self):
        return self.host_ip or self.lan_ip()

    def lan_ip(self):
        """The host's address on the board's network (a UDP connect sends nothing)."""
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.connect((self.info["ip"], 80))
            return s.getsockname()[0]
        finally:
            s.close()
