"""Simulated devices for integration tests: real scripts/sim.py processes on loopback ports.

    dev = SimDevice(tmp_path / "dev", app="tests/apps/x.py").start()
    dev.wait_line(r"ready")            # console output, regex
    dev.wait_http()                    # device port 80 answers
    dev.power_cut()                    # SIGKILL: the device dies with the supervisor
    dev.start()                        # power on again, same flash
"""
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIM = os.path.join(ROOT, "scripts", "sim.py")

def _ephemeral_low():
    # the kernel hands client connections local ports from this range: a device port there can be
    # taken by any connection between the check below and the device's bind (EADDRINUSE at boot)
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_PORT_LOW = 20000
_PORT_HIGH = max(_PORT_LOW + 2000, min(_ephemeral_low(), 60000))
_port_lock = threading.Lock()
_next_port = [_PORT_LOW + (os.getpid() * 37) % (_PORT_HIGH - _PORT_LOW - 100)]


def free_port_block(n=4):
    """A base port with n consecutive free TCP ports (device 80 -> base, 53 -> base+1 (UDP), WeMo -> base+2...),
    below the kernel's range for client connections' local ports."""
    with _port_lock:
        while True:
            base = _next_port[0]
            _next_port[0] += n + 1
            if _next_port[0] + n > _PORT_HIGH:
                _next_port[0] = _PORT_LOW
                continue
            if all(_tcp_free(base + i) for i in range(n)):
                return base


def _tcp_free(port):
    # SO_REUSEADDR as the device's own server sets it: connections of the last boot in TIME_WAIT
    # do not keep the port busy, only a socket still bound to it does
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []


def _wait_gone(pids, timeout=5.0):
    # the device dies with the simulator (PDEATHSIG), a moment later: until then it still holds its
    # UDP ports (DNS, WeMo wake-ups), which the next boot needs
    deadline = time.time() + timeout
    for pid in pids:
        while time.time() < deadline:
            try:
                with open("/proc/%d/stat" % pid) as f:
                    if f.read().rpartition(")")[2].split()[0] == "Z":
                        break
            except OSError:
                break
            time.sleep(0.01)


#: every SimDevice started in this process (tests/conftest.py stops a test's leftovers)
STARTED = []


class SimDevice:
    def __init__(self, state_dir, app=None, port=None, wifi=None, heap=None, runtime=None, extra_env=None,
                 ports=4, write_nvs=None):
        self.state_dir = str(state_dir)
        self.app = app
        self.port = port or free_port_block(ports)
        self.wifi = wifi
        self.heap = heap
        self.runtime = runtime
        self.extra_env = extra_env or {}
        self.write_nvs = write_nvs  # an NVS image flashed before the first boot (provisioning)
        self.proc = None
        self.lines = []
        self._cond = threading.Condition()
        self._reader = None

    # ---- life cycle ----
    def start(self):
        cmd = [sys.executable, SIM, "--state", self.state_dir, "--port", str(self.port)]
        if self.wifi:
            cmd += ["--wifi", str(self.wifi)]
        if self.heap:
            cmd += ["--heap", self.heap]
        if self.runtime:
            cmd += ["--runtime", self.runtime]
        if self.write_nvs:
            cmd += ["--write-nvs", str(self.write_nvs)]
            self.write_nvs = None  # once: a later start() is a reboot of the same flash
        if self.app:
            cmd.append(str(self.app))
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.extra_env)
        self.mark = len(self.lines)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        if self not in STARTED:
            STARTED.append(self)   # tests/conftest.py stops what a test started and left running
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        return self

    def _read(self, proc):
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def power_cut(self, at_once=False):
        """SIGKILL the simulator: the device process dies with it, as at a power cut. at_once: the
        device process first (where the kernel ignores PDEATHSIG, it outlives the simulator by the
        few ms its reaper takes)."""
        kids = []
        if at_once:
            try:
                with open(os.path.join(self.state_dir, "device.pid")) as f:
                    pid = int(f.read().strip())
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    if b"sim_boot.py" in f.read():
                        os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass
        if self.proc and self.proc.poll() is None:
            kids = _children(self.proc.pid)
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        if self._reader:
            self._reader.join(5)
        _wait_gone(kids)
        self._wait_ports_free()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._reader:
            self._reader.join(5)
        self._wait_ports_free()

    def _wait_ports_free(self, timeout=5.0):
        # the device child is killed by PDEATHSIG asynchronously: wait until its port is released
        deadline = time.time() + timeout
        while time.time() < deadline and not _tcp_free(self.port):
            time.sleep(0.02)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    # ---- console ----
    def wait_line(self, pattern, timeout=20.0, since=None):
        """Wait for a console line matching regex `pattern` (from this boot on, or index `since`)."""
        rx = re.compile(pattern)
        start = self.mark if since is None else since
        deadline = time.time() + timeout
        with self._cond:
            i = start
            while True:
                while i < len(self.lines):
                    m = rx.search(self.lines[i])
                    if m:
                        return m
                    i += 1
                left = deadline - time.time()
                if left <= 0:
                    raise TimeoutError("no console line matching %r within %.0fs; console:\n%s"
                                       % (pattern, timeout, "\n".join(self.lines[start:][-60:])))
                self._cond.wait(min(left, 0.2))

    def output(self):
        with self._cond:
            return "\n".join(self.lines)

    # ---- network ----
    def url(self, path="/"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def wait_http(self, timeout=20.0):
        """Wait until device port 80 accepts connections."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None and self.proc.returncode is not None:
                raise RuntimeError("simulator exited (%s):\n%s" % (self.proc.returncode, self.output()))
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("device port 80 (host %d) not answering; console:\n%s" % (self.port, self.output()))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def wait_until(fn, timeout=15.0, what="condition"):
    """Poll fn() until it returns something true (requests, not sleeps, are the synchronisation)."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError("%s not reached within %.0f s (last: %r)" % (what, timeout, last))


def raw_http(port, data, timeout=5.0):
    """Send bytes on a fresh connection; everything the device answers until it closes (or timeout)."""
    s = socket.create_connection(("127.0.0.1", port), 5)
    s.settimeout(timeout)
    out = b""
    try:
        s.sendall(data)
        while True:
            c = s.recv(4096)
            if not c:
                break
            out += c
    except (socket.timeout, ConnectionResetError, BrokenPipeError):
        pass
    finally:
        s.close()
    return out
