"""A real Mosquitto broker (Debian's package) for tests, on free loopback ports.

    from mosquitto import broker_fixture, own_broker_fixture   # noqa: F401  (fixtures "broker", "own_broker")

    def test_x(broker):          # one broker per test session (per xdist worker)
        broker.url()             # "mqtt://127.0.0.1:<port>"; broker.url("dev", "devpw") with credentials
    def test_y(own_broker):      # a broker of its own, for tests that stop or restart it
        own_broker.kill(); own_broker.start()    # same port, same config
        Mosquitto(tmp_path, tls=(ca, cert, key)) # plus a TLS listener: broker.tls_port

Listeners bind 127.0.0.1 only; anonymous clients are allowed and the password file holds one
user (USER / PASSWORD) whose password is checked; persistence is off; TCP_NODELAY is on (without it
the broker's own Nagle delay, not the client, sets the pace of request/answer exchanges).
"""
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from simdev import free_port_block

USER = "dev"
PASSWORD = "devpw"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def available():
    return os.path.exists(MOSQUITTO)


class Mosquitto:
    def __init__(self, workdir, tls=None, extra=(), users=None):
        self.dir = str(workdir)
        self.extra = list(extra)             # more mosquitto.conf lines (before the listeners)
        self.users = dict(users or {USER: PASSWORD})
        os.makedirs(self.dir, exist_ok=True)
        self.tls = tls                      # (ca file, cert file, key file) or None
        ports = free_port_block(2)
        self.port = ports
        self.tls_port = ports + 1 if tls else None
        self.proc = None
        self.log = os.path.join(self.dir, "mosquitto.log")
        self.conf = os.path.join(self.dir, "mosquitto.conf")
        self._write_config()

    def _write_config(self):
        pw = os.path.join(self.dir, "passwd")
        for i, (user, password) in enumerate(sorted(self.users.items())):
            subprocess.run(["mosquitto_passwd"] + (["-c"] if i == 0 else []) + ["-b", pw, user, password],
                           check=True, capture_output=True)
        os.chmod(pw, 0o600)
        lines = [
            "per_listener_settings false",
            "allow_anonymous true",
            "password_file " + pw,
            "persistence false",
            "set_tcp_nodelay true",
            "user root",                       # tests run as root: do not drop to 'mosquitto'
            "log_dest file " + self.log,
            "log_type error", "log_type warning", "log_type notice",
        ] + self.extra + [
            "listener %d 127.0.0.1" % self.port,
        ]
        if self.tls:
            ca, cert, key = self.tls
            lines += ["listener %d 127.0.0.1" % self.tls_port, "cafile " + ca, "certfile " + cert, "keyfile " + key]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def url(self, user=None, password=None, tls=False, host="127.0.0.1"):
        cred = ""
        if user is not None:
            cred = user + (":" + password if password is not None else "") + "@"
        if tls:
            return "mqtts://%s%s:%d" % (cred, host, self.tls_port)
        return "mqtt://%s%s:%d" % (cred, host, self.port)

    def start(self, timeout=10.0):
        self.proc = subprocess.Popen([MOSQUITTO, "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.time() + timeout
        for port in [p for p in (self.port, self.tls_port) if p]:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError("mosquitto exited (%s): %s\n%s" % (
                        self.proc.returncode, self.proc.stderr.read().decode(errors="replace"), self.log_text()))
                try:
                    socket.create_connection(("127.0.0.1", port), 0.5).close()
                    break
                except OSError:
                    if time.time() > deadline:
                        raise TimeoutError("mosquitto not accepting on %d:\n%s" % (port, self.log_text()))
                    time.sleep(0.02)
        return self

    def log_text(self):
        try:
            with open(self.log) as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def kill(self):
        """SIGKILL: the broker vanishes at once (its clients see their connection reset)."""
        self._end(signal.SIGKILL)

    def stop(self):
        self._end(signal.SIGTERM)

    def _end(self, sig):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


def _need():
    if not available():
        pytest.skip("mosquitto is not installed (scripts/debian-packages.txt; make deps)")


@pytest.fixture(scope="session", name="broker")
def broker_fixture(tmp_path_factory):
    """One broker for the whole session (per xdist worker): do not stop it in a test."""
    _need()
    b = Mosquitto(tmp_path_factory.mktemp("mosquitto")).start()
    yield b
    b.stop()


@pytest.fixture(name="own_broker")
def own_broker_fixture(tmp_path):
    """A broker for this test alone: kill/stop/start it freely."""
    _need()
    b = Mosquitto(tmp_path / "mosquitto").start()
    yield b
    b.stop()


# ---- the two ends: a device app process (CPython or micropython) and a paho-mqtt peer ----

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "tests", "apps", "mqtt_app.py")
RUNTIMES = ("cpython", "micropython")


class App:
    """tests/apps/mqtt_app.py in a process of its own; .wait(regex) on its console lines."""

    def __init__(self, runtime, url, client_id, keepalive=30, ca_file=None, heap=False, app=APP, extra_env=None):
        import sys
        import threading
        env = dict(os.environ, MQTT_URL=url, MQTT_ID=client_id, MQTT_KEEPALIVE=str(keepalive))
        if ca_file:
            env["MQTT_CA"] = ca_file
        if heap:
            env["MQTT_HEAP"] = "1"
        if runtime == "cpython":
            env["PYTHONPATH"] = os.path.join(ROOT, "modules")
            cmd = [sys.executable, "-u", app]
        else:
            from conftest import micropython_cmd, micropython_path
            env["MICROPYPATH"] = micropython_path()
            cmd = micropython_cmd() + [app]
        env.update(extra_env or {})
        self.lines = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        for raw in self.proc.stdout:
            with self._cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._cond.notify_all()

    def wait(self, pattern, timeout=10.0, since=0):
        """The first console line from index `since` matching regex pattern (re.Match), else TimeoutError."""
        import re
        rx = re.compile(pattern)
        deadline = time.time() + timeout
        with self._cond:
            i = since
            while True:
                while i < len(self.lines):
                    mt = rx.search(self.lines[i])
                    if mt:
                        self.last_index = i
                        return mt
                    i += 1
                left = deadline - time.time()
                if left <= 0:
                    raise TimeoutError("no line matching %r within %.1f s; console:\n%s"
                                       % (pattern, timeout, "\n".join(self.lines[-40:])))
                self._cond.wait(min(left, 0.1))

    def output(self):
        with self._cond:
            return "\n".join(self.lines)

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        if self.alive():
            self.proc.kill()
        self.proc.wait(10)
        self._t.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()


class Peer:
    """A paho-mqtt client (the other end: Home Assistant, a phone app, scripts/fleet.py)."""

    def __init__(self, broker, client_id, user=None, password=None):
        import queue

        import paho.mqtt.client as mc
        self.messages = queue.Queue()
        self.c = mc.Client(mc.CallbackAPIVersion.VERSION2, client_id=client_id)
        if user:
            self.c.username_pw_set(user, password)
        self.c.on_message = lambda c, u, msg: self.messages.put(msg)
        self.c.connect("127.0.0.1", broker.port, keepalive=30)
        self.c.loop_start()
        deadline = time.time() + 5
        while not self.c.is_connected():
            if time.time() > deadline:
                raise TimeoutError("paho could not connect")
            time.sleep(0.01)

    def subscribe(self, topic, qos=1):
        import threading
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self.c.subscribe(topic, qos)
        assert done.wait(5), "no SUBACK"

    def publish(self, topic, payload, qos=0, retain=False):
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(5)
        return info

    def expect(self, topic, timeout=10.0):
        """The next message on topic (others are skipped)."""
        import queue
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError("no message on %s within %.1f s" % (topic, timeout))
            try:
                msg = self.messages.get(timeout=left)
            except queue.Empty:
                continue
            if msg.topic == topic:
                return msg

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


class Proxy:
    """A loopback TCP proxy to the broker that can stop forwarding (a half-open link: the TCP
    connection stays up, nothing gets through) and start again."""

    def __init__(self, port):
        self.target = port
        self.frozen = False
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(8)
        self.port = self.ls.getsockname()[1]
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.target))
            self.socks += [c, u]
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()

    def _pump(self, a, b):
        peers = {a: b, b: a}
        while True:
            if self.frozen:
                time.sleep(0.02)
                continue
            try:
                r, _, _ = select.select([a, b], [], [], 0.05)
                for s in r:
                    d = s.recv(65536)
                    if not d:
                        raise OSError("closed")
                    peers[s].sendall(d)
            except (OSError, ValueError):   # ValueError: closed by close() meanwhile
                a.close()
                b.close()
                return

    def close(self):
        self.ls.close()
        for s in self.socks:
            s.close()


class HomeAssistant:
    """paho-mqtt playing Home Assistant: subscribed to the discovery prefix and to iotutils/#, it
    keeps every message (log: [(time, topic, payload, retain)]) and the last payload per topic.

        ha = HomeAssistant(broker)
        cfg = ha.wait_json("homeassistant/device/<id>/config")      # the last, or the next one
        ha.wait("iotutils/<id>/app_on", b"ON", since=ha.mark())     # a message after the mark
        ha.send("iotutils/<id>/app_on/set", "ON"); ha.birth()        # a command; HA (re)started
    """

    def __init__(self, broker, prefix="homeassistant", client_id=None, user=None, password=None):
        import paho.mqtt.client as mc
        self.prefix = prefix
        self.log = []
        self.last = {}
        self._cond = threading.Condition()
        self.c = mc.Client(mc.CallbackAPIVersion.VERSION2, client_id=client_id or "ha-%d-%d" % (os.getpid(), id(self)))
        if user:
            self.c.username_pw_set(user, password)
        self.c.on_message = self._message
        self.c.on_connect = lambda c, u, f, rc, p=None: c.subscribe([(prefix + "/#", 1), ("iotutils/#", 1)])
        self.c.connect("127.0.0.1", broker.port, keepalive=30)
        self.c.loop_start()
        deadline = time.time() + 5
        while not self.c.is_connected():
            if time.time() > deadline:
                raise TimeoutError("paho (Home Assistant) could not connect")
            time.sleep(0.01)

    def _message(self, c, userdata, msg):
        with self._cond:
            self.log.append((time.time(), msg.topic, bytes(msg.payload), bool(msg.retain)))
            self.last[msg.topic] = bytes(msg.payload)
            self._cond.notify_all()

    def mark(self):
        """The log position now: wait(..., since=mark) looks only at what arrives after it."""
        with self._cond:
            return len(self.log)

    def wait(self, topic, want=None, timeout=15.0, since=None):
        """The payload of a message on topic satisfying want (bytes to equal, or a predicate; None:
        any): the last one already received (since=None) or the first after index `since`."""
        ok = (lambda p: True) if want is None else want if callable(want) else (lambda p: p == want)
        deadline = time.time() + timeout
        with self._cond:
            i = since
            while True:
                if i is None:
                    if topic in self.last and ok(self.last[topic]):
                        return self.last[topic]
                else:
                    while i < len(self.log):
                        t, tp, p, _ = self.log[i]
                        i += 1
                        if tp == topic and ok(p):
                            return p
                left = deadline - time.time()
                if left <= 0:
                    seen = [(tp, p[:120]) for _, tp, p, _ in self.log if tp == topic][-5:]
                    raise TimeoutError("no message on %s matching within %.0f s (last ones: %r)" % (topic, timeout, seen))
                self._cond.wait(min(left, 0.1))

    def wait_json(self, topic, want=None, timeout=15.0, since=None):
        import json
        ok = (lambda d: True) if want is None else want

        def pred(p):
            try:
                return bool(p) and ok(json.loads(p))
            except ValueError:
                return False
        return json.loads(self.wait(topic, pred, timeout, since))

    def messages(self, topic, since=0):
        with self._cond:
            return [(t, p) for t, tp, p, _ in self.log[since:] if tp == topic]

    def send(self, topic, payload, qos=0, retain=False):
        self.c.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(5)

    def birth(self):
        """Home Assistant's birth message: it (re)started."""
        self.send(self.prefix + "/status", "online", qos=1)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()
