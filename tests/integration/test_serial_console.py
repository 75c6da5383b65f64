"""The simulated device's serial console (scripts/sim.py --serial PATH) against the real tools: mpremote
(PyPI, pinned) for the filesystem, run/exec/eval, soft reset and mip from a local index, pyserial for
the bytes themselves (ROM banner, REPL, raw REPL and raw-paste as MicroPython's pyexec.c sends
them), Ctrl-C, machine.reset(), the watchdog and power cuts with the PTY staying open."""
import functools
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import serial

from conftest import ROOT
from simdev import _children, _wait_gone, free_port_block

SIM = os.path.join(ROOT, "scripts", "sim.py")
APP = r'''
import time
print("APP START")
n = 0
while True:
    n += 1
    if n % 4 == 0:
        print("TICK", n)
    time.sleep(0.05)
'''


class SerialSim:
    """sim.py --serial on a PTY in tmp_path; stdout (a copy of the console) goes to a log."""

    def __init__(self, tmp_path):
        self.dir = tmp_path
        self.tty = str(tmp_path / "ttySIM")
        self.state = str(tmp_path / "state")
        self.app = tmp_path / "app.py"
        self.app.write_text(APP)
        self.port = free_port_block(4)
        self.proc = None

    def start(self):
        logfile = self.dir / "sim.log"
        mark = logfile.stat().st_size if logfile.exists() else 0
        with open(logfile, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, SIM, "--state", self.state, "--port", str(self.port),
                                          "--serial", self.tty, str(self.app)], stdout=log, stderr=subprocess.STDOUT)
        # a first start measures the console's heap cost (cached): slow on a loaded machine
        deadline = time.monotonic() + 120
        # the PTY is there at once; what is sent to it before main.py runs is lost, as on a booting board
        while not (os.path.exists(self.tty) and b"APP START" in logfile.read_bytes()[mark:]):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill(signal.SIGTERM)
                raise AssertionError("sim.py --serial did not boot:\n" + self.log())
            time.sleep(0.02)
        return self

    def log(self):
        return (self.dir / "sim.log").read_bytes().decode(errors="replace")[-6000:]

    def kill(self, sig):
        if self.proc and self.proc.poll() is None:
            kids = _children(self.proc.pid)
            self.proc.send_signal(sig)
            self.proc.wait(15)
            _wait_gone(kids)

    def mpremote(self, *args, timeout=60, check=True):
        r = subprocess.run([sys.executable, "-m", "mpremote", "connect", self.tty] + list(args), capture_output=True,
                           text=True, timeout=timeout, cwd=str(self.dir))
        if not check:
            return r.returncode, (r.stdout + r.stderr).replace("\r\n", "\n")
        assert r.returncode == 0, "mpremote %s: %s%s\n--- sim ---\n%s" % (args, r.stdout, r.stderr, self.log())
        return r.stdout.replace("\r\n", "\n")


@pytest.fixture
def sim(tmp_path):
    s = SerialSim(tmp_path)
    try:
        yield s.start()
    finally:
        s.kill(signal.SIGTERM)
    assert not os.path.exists(s.tty), "a clean stop takes the PTY away"


class Port:
    """pyserial on the PTY with a reader: wait for bytes (regex) in what arrived since the last wait."""

    def __init__(self, path):
        self.s = serial.Serial(path, 115200, timeout=0.05)
        self.buf = b""
        self.all = b""

    def write(self, data):
        self.s.write(data)

    def wait(self, pattern, timeout=15):
        rx = re.compile(pattern, re.S)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.buf)
            if m:
                got, self.buf = self.buf[:m.end()], self.buf[m.end():]
                return got, m
            assert time.monotonic() < deadline, "no %r in %r" % (pattern, self.buf[-500:])
            data = self.s.read(4096)
            self.buf += data
            self.all += data

    def read_for(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            data = self.s.read(4096)
            self.buf += data
            self.all += data
        out, self.buf = self.buf, b""
        return out

    def close(self):
        self.s.close()


@pytest.fixture
def uart(sim):
    p = Port(sim.tty)
    yield p
    p.close()


def test_mpremote_filesystem_exec_eval_run(sim, tmp_path):
    assert sim.mpremote("exec", "print(6 * 7)").strip() == "42"
    assert sim.mpremote("eval", "1 + 1").strip() == "2"
    (tmp_path / "hello.py").write_text("import sys\nprint('hello from', sys.platform)\n")
    blob = bytes(range(256)) * 40 + b"\r\n\n\x04\x03\x01 end"     # control bytes and CR LF survive a round trip
    (tmp_path / "blob.bin").write_bytes(blob)
    sim.mpremote("cp", "hello.py", ":hello.py", "+", "mkdir", ":data2")
    rc, out = sim.mpremote("cp", "blob.bin", ":/data/blob.bin", check=False)   # no /data yet: refused as on a board
    assert rc != 0 and "No such file" in out, out
    sim.mpremote("mkdir", ":data")
    sim.mpremote("cp", "blob.bin", ":/data/blob.bin")
    fs = os.path.join(sim.state, "fs")
    assert open(os.path.join(fs, "hello.py")).read() == (tmp_path / "hello.py").read_text()
    assert open(os.path.join(fs, "data", "blob.bin"), "rb").read() == blob    # "/" is the device filesystem
    sim.mpremote("cp", ":data/blob.bin", "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == blob
    listing = sim.mpremote("ls", ":")
    assert re.search(r"^\s+%d hello.py$" % len((tmp_path / "hello.py").read_text()), listing, re.M), listing
    assert re.search(r"^\s+0 data/$", listing, re.M), listing
    assert "hello from linux" in sim.mpremote("run", "hello.py")
    assert sim.mpremote("cat", ":hello.py") == (tmp_path / "hello.py").read_text()
    sim.mpremote("touch", ":data/empty", "+", "rm", ":data/empty", "+", "rm", ":data/blob.bin", "+", "rmdir", ":data")
    assert sorted(os.listdir(fs)) == ["data2", "hello.py"]
    # the device sees its own filesystem as the root, never the host's
    assert sim.mpremote("eval", "sorted(__import__('os').listdir('/'))").strip() == "['data2', 'hello.py']"
    rc, out = sim.mpremote("exec", "open('/etc/hostname')", check=False)
    assert rc != 0 and "ENOENT" in out, out


def test_mpremote_soft_reset_and_a_running_app(sim):
    # mpremote interrupts main.py (Ctrl-C) and soft-resets into the raw REPL: main.py does not run
    assert sim.mpremote("exec", "print('before')").strip() == "before"
    sim.mpremote("soft-reset")
    assert sim.mpremote("eval", "'n' in globals()").strip() == "False"   # a fresh VM, main.py not run
    log = sim.log()
    assert log.count("MPY: soft reboot") >= 2 and "raw REPL; CTRL-B to exit" in log


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


def _serve(root):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_mpremote_mip_install_from_a_local_index(sim, tmp_path):
    import hashlib
    # a mip index (micropython-lib's layout: package/<mpy>/<name>/<version>.json, file/<h[:2]>/<h>)
    idx = tmp_path / "index"
    src = b"VALUE = 'from the local index'\n"
    h = hashlib.sha256(src).hexdigest()[:8]
    (idx / "file" / h[:2]).mkdir(parents=True)
    (idx / "file" / h[:2] / h).write_bytes(src)
    mpy = sim.mpremote("eval", "getattr(__import__('sys').implementation, '_mpy', 0) & 0xFF").strip()
    pkg = idx / "package" / mpy / "hilpkg"
    pkg.mkdir(parents=True)
    (pkg / "latest.json").write_text(json.dumps({"hashes": [["hilpkg.py", h]], "version": "1.0.0"}))
    # and a package.json by URL, its files relative to it (the iotutils mip package's form)
    (tmp_path / "web" / "pkg").mkdir(parents=True)
    (tmp_path / "web" / "pkg" / "package.json").write_text(json.dumps({"urls": [["hilpkg2/__init__.py", "two.py"]],
                                                                        "version": "2.0"}))
    (tmp_path / "web" / "pkg" / "two.py").write_text("VALUE = 2\n")
    a, b = _serve(idx), _serve(tmp_path / "web")
    try:
        out = sim.mpremote("mip", "install", "--index", "http://127.0.0.1:%d" % a.server_address[1], "hilpkg")
        assert "Installing hilpkg (latest)" in out and "to /lib" in out, out
        out = sim.mpremote("mip", "install", "http://127.0.0.1:%d/pkg/package.json" % b.server_address[1])
        assert "Done" in out, out
    finally:
        a.shutdown()
        b.shutdown()
    fs = os.path.join(sim.state, "fs")
    assert open(os.path.join(fs, "lib", "hilpkg.py"), "rb").read() == src
    assert os.path.exists(os.path.join(fs, "lib", "hilpkg2", "__init__.py"))
    out = sim.mpremote("exec", "import hilpkg, hilpkg2; print(hilpkg.VALUE, hilpkg2.VALUE)")
    assert out.strip() == "from the local index 2"


def test_boot_banner_ctrl_c_and_ctrl_d(sim, uart):
    port = uart
    sim.kill(signal.SIGKILL)     # a power cut with the port open...
    sim.start()                  # ...and power on: the PTY never went away
    got, _ = port.wait(rb"APP START\r\n")
    assert got.startswith(b"ets Jul 29 2019") and b"rst:0x1 (POWERON_RESET),boot:0x13" in got
    port.wait(rb"TICK \d+\r\n")
    port.write(b"\x03")
    got, _ = port.wait(rb">>> ")
    assert re.search(rb'Traceback \(most recent call last\):\r\n  File "main.py", line \d+, in <module>\r\n'
                     rb"KeyboardInterrupt: \r\n", got), got
    assert re.search(rb"MicroPython \S+ on \S+; iotutils ESP32 \(simulated\) with ESP32\r\n"
                     rb'Type "help\(\)" for more information.\r\n>>> $', got), got
    port.write(b"n > 0\r")          # main.py's globals at the REPL, echo, CR LF
    got, _ = port.wait(rb">>> ")
    assert got == b"n > 0\r\nTrue\r\n>>> "
    port.write(b"for i in range(2):\r")            # a compound statement: continuation and auto-indent
    port.wait(rb"\.\.\.     ")
    port.write(b"print(i * 10)\r\r\r\r")       # auto-indent: Enter until a line is empty, as on a board
    got, _ = port.wait(rb"10\r\n>>> ")
    assert got.endswith(b"... \r\n0\r\n10\r\n>>> "), got
    port.write(b"\x04")             # soft reset: main.py again, no ROM banner
    got, _ = port.wait(rb"APP START\r\n")
    assert got == b"\r\nMPY: soft reboot\r\nAPP START\r\n"
    port.write(b"\x03")
    port.wait(rb">>> ")
    port.write(b"import machine; machine.reset()\r")    # a hard reset: the ROM again
    got, _ = port.wait(rb"APP START\r\n")
    assert b"rst:0xc (SW_CPU_RESET)" in got
    assert b"\n" not in got.replace(b"\r\n", b"")       # every line ends CR LF, as the port's stdout


def test_raw_repl_bytes(sim, uart):
    port = uart
    port.wait(rb"TICK")
    port.write(b"\r\x03")
    port.wait(rb">>> ")
    port.read_for(0.2)
    port.write(b"\r\x01")
    port.wait(rb"\r\nraw REPL; CTRL-B to exit\r\n>$")
    port.write(b"print('out', 1 + 1)\x04")
    assert port.wait(rb"\x04>")[0] == b"OKout 2\r\n\x04\x04>"
    port.write(b"1/0\x04")
    got = port.wait(rb"\x04>")[0]
    assert got.startswith(b"OK\x04Traceback") and got.endswith(b"ZeroDivisionError: divide by zero\r\n\x04>"), got
    # raw-paste: R\x01, window 128 (2 bytes LE), \x01; then \x01 per window of data taken
    code = ("x = %r\nprint(len(x))\n" % ("y" * 600)).encode()
    port.write(b"\x05A\x01")
    assert port.wait(rb"R\x01..\x01")[0] == b"R\x01\x80\x00\x01"
    sent, room = 0, 256
    while sent < len(code):
        if room == 0:
            port.wait(rb"\x01")
            room = 128
        n = min(room, len(code) - sent)
        port.write(code[sent:sent + n])
        sent += n
        room -= n
    port.write(b"\x04")
    got = port.wait(rb"\x04>")[0]
    assert got.replace(b"\x01", b"") == b"\x04600\r\n\x04\x04>", got
    # an unknown raw-paste command is refused, and the raw REPL goes on
    port.write(b"\x05B\x01")
    assert port.wait(rb">")[0] == b"R\x00>"
    # Ctrl-D on an empty line soft-resets into the raw REPL again: main.py does not run
    port.write(b"\x04")
    got = port.wait(rb"raw REPL; CTRL-B to exit\r\n>")[0]
    assert got == b"OK\r\nMPY: soft reboot\r\nraw REPL; CTRL-B to exit\r\n>", got
    port.write(b"\x02")
    assert port.wait(rb">>> ")[0].startswith(b"\r\nMicroPython ")
    assert b"APP START" not in port.read_for(0.5)


def test_ctrl_c_interrupts_code_from_the_raw_repl(sim, uart):
    port = uart
    port.wait(rb"TICK")      # running: what is sent while the board boots is lost, as on a UART
    port.write(b"\r\x03\r\x01")
    port.wait(rb"raw REPL; CTRL-B to exit\r\n>")
    port.write(b"import time\nwhile True:\n    time.sleep(0.01)\n\x04")
    port.wait(rb"OK")
    time.sleep(0.3)
    port.write(b"\x03")
    got = port.wait(rb"\x04>")[0]
    assert got.startswith(b"\x04Traceback") and b"KeyboardInterrupt" in got, got


def test_watchdog_and_no_stale_output(sim, uart):
    port = uart
    last = int(port.wait(rb"TICK (\d+)\r\n")[1].group(1))
    port.close()                          # nobody on the port: the device's output is lost, not queued
    time.sleep(1.5)
    port = Port(sim.tty)
    try:
        first = port.wait(rb"TICK (\d+)\r\n")[1]
        got = first.string[:first.start()]
        assert b"APP START" not in got and int(first.group(1)) > last + 4, (last, got)
        port.write(b"\x03")
        port.wait(rb">>> ")
        port.write(b"from iotutils import hal; hal.wdt_start(300)\r")   # nobody feeds it at the REPL
        got, _ = port.wait(rb"APP START\r\n", timeout=10)
        assert b"task_wdt: Task watchdog got triggered" in got and b"rst:0xc (SW_CPU_RESET)" in got
    finally:
        port.close()


def test_without_serial_the_console_is_stdout(tmp_path):
    app = tmp_path / "app.py"
    app.write_text("print('PLAIN', 1)\n")
    r = subprocess.run([sys.executable, SIM, "--state", str(tmp_path / "st"), "--port", str(free_port_block(4)),
                        str(app)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "PLAIN 1\n", (r.stdout, r.stderr)
