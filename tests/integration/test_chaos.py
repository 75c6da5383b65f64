"""A whole simulated device (tests/apps/chaos_app.py: Wi-Fi + portal, server, admin, OTA, Alexa with a
Hue and a WeMo light) attacked from outside with real clients: load generators (wrk, ab) beside admin
and Hue clients, junk on every port it opens (HTTP, portal DNS, SSDP, WeMo), admin API abuse, SIGKILL
power cuts in the middle of writes, and crashes in user code. Loopback only; each test is bounded in
time and count."""
import json
import os
import random
import re
import socket
import struct
import subprocess
import threading
import time

import pytest
import requests

from conftest import ROOT
from simdev import SimDevice, raw_http

APP = os.path.join(ROOT, "tests", "apps", "chaos_app.py")
PASSWORD = "chaos-password-1"
HOME = {"ssid": "home", "password": "home-secret-99", "rssi": -50, "channel": 6, "up": True}

pytestmark = pytest.mark.timeout(90)


# ---- the device and its clients ----

def make_device(path, wifi_networks=(), extra_env=None):
    # loads far beyond the board's 16 sockets (wrk with 40 connections beside ab with 16): the
    # socket table is lifted, this is about the server and the heap; test_memory.py and
    # test_server.py test the device at the board's table
    extra_env = dict(extra_env or {}, IOTUTILS_SIM_SOCKETS="256")
    path.mkdir(parents=True, exist_ok=True)
    wifi = path / "wifi.json"
    wifi.write_text(json.dumps({"networks": list(wifi_networks)}))
    return SimDevice(path / "dev", app=APP, wifi=wifi, extra_env=extra_env, ports=4)


class Admin:
    """A logged-in admin API client (sessions live in RAM: log in again after every boot)."""

    def __init__(self, dev, first=False):
        self.dev = dev
        self.s = requests.Session()
        if first:
            r = self.s.post(self.url("password"), json={"new": PASSWORD}, timeout=10)
        else:
            r = self.s.post(self.url("login"), json={"password": PASSWORD}, timeout=10)
        assert r.status_code == 200, r.text
        self.csrf = r.json()["csrf"]

    def url(self, path):
        return self.dev.url("/admin/api/" + path)

    def call(self, method, path, body=None, raw=None, timeout=10):
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        return self.s.request(method, self.url(path), data=data, headers={"X-CSRF-Token": self.csrf},
                              timeout=timeout)

    def heap(self):
        # the best of three readings, a moment apart: connections a load left closing and another
        # thread's passing allocations lower one reading, a leak lowers them all
        best = 0
        for i in range(3):
            if i:
                time.sleep(0.2)
            r = self.s.get(self.url("status"), timeout=10)
            assert r.status_code == 200, r.text
            best = max(best, r.json()["heap"]["free"])
        return best


def hue_user(dev, admin):
    admin.call("PUT", "alexa/pairing", {"seconds": 60})   # the owner opens Hue pairing first
    r = requests.post(dev.url("/api"), json={"devicetype": "chaos#test"}, timeout=10)
    return r.json()[0]["success"]["username"]


def healthy(dev, timeout=10):
    r = requests.get(dev.url("/healthz"), timeout=timeout)
    assert r.status_code == 200 and r.json() == {"ok": True}, r.text


def threads_alive(dev):
    t = requests.get(dev.url("/chaos/threads"), timeout=10).json()
    assert t["threads"] == t["expected"] and t["wifi"] and t["alexa"], t


def assert_no_traceback(dev):
    """No exception on the console, but for the server's start race (see
    test_starting_the_server_never_kills_a_worker: it has its own test until server.py is fixed)."""
    lines = dev.output().split("\n")
    for i, line in enumerate(lines):
        if "Traceback (most recent call last)" not in line:
            continue
        block = []
        for nxt in lines[i + 1:i + 12]:
            block.append(nxt)
            if not nxt.startswith(" "):
                break
        text = "\n".join(block)
        if "has no attribute" in text or "local variable referenced before assignment" in text:
            continue   # the server's start race: a lookup on an object whose attributes another thread adds
        raise AssertionError("exception on the console:\n" + "\n".join(lines[max(0, i - 5):i + 14]))


def status_of(answer):
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    return int(m.group(1)) if m else None


def wemo_port(dev):
    # WeMo device k listens on N+2+k; the Fan is the app's second light (index 1)
    for p in range(dev.port + 2, dev.port + 6):
        try:
            r = requests.get("http://127.0.0.1:%d/setup.xml" % p, timeout=3)
        except requests.ConnectionError:
            continue
        if "Fan" in r.text:
            return p
    raise AssertionError("no WeMo port answers")


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    dev = make_device(tmp_path_factory.mktemp("chaos"))
    dev.start()
    dev.wait_line("CHAOS READY", timeout=60)
    dev.wait_line("setup portal on", timeout=30)   # the first password is accepted while the AP is up
    dev.wait_http()
    dev.admin = Admin(dev, first=True)
    yield dev
    dev.stop()


# ---- load ----

WRK_LUA = """
local threads = {}
function setup(t) table.insert(threads, t) end
function init(args) codes = {} end
function response(status, headers, body) codes[status] = (codes[status] or 0) + 1 end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("codes")) do io.write(string.format("STATUS %d %d\\n", k, v)) end
  end
end
"""


def _wrk(dev, path, seconds, conns, lua):
    out = subprocess.run(["wrk", "-t2", "-c%d" % conns, "-d%ds" % seconds, "-s", lua, dev.url(path)],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    codes = {}
    for k, v in re.findall(r"STATUS (\d+) (\d+)", out):
        codes[int(k)] = codes.get(int(k), 0) + int(v)
    return codes, out


def _ab(dev, path, n, conc):
    out = subprocess.run(["ab", "-q", "-k", "-s", "10", "-n", str(n), "-c", str(conc), dev.url(path)],
                         capture_output=True, text=True, timeout=60).stdout
    m = re.search(r"Complete requests:\s+(\d+)", out)
    assert m, out
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", out)
    return int(m.group(1)), int(non2xx.group(1)) if non2xx else 0, out


def _load_round(dev, lua, admin, user, seconds=4):
    """wrk on /healthz + ab on /lamp while an admin (its session) edits variables and a Hue client
    (its user) polls lights. Returns the problems seen (statuses other than 2xx/503, errors of the
    clients)."""
    problems = []
    stop = threading.Event()

    def admin_client():
        i = 0
        while not stop.is_set():
            i += 1
            try:
                r = admin.call("PUT", "vars/lamp/bri", {"value": i % 101})
                if r.status_code not in (200, 503):
                    problems.append(("admin", r.status_code, r.text))
                r = admin.s.get(admin.url("status"), timeout=10)
                if r.status_code not in (200, 503):
                    problems.append(("status", r.status_code, r.text))
            except requests.ConnectionError:
                pass  # a closure under load is expected (LRU eviction of connections)

    def hue_client():
        s = requests.Session()
        while not stop.is_set():
            try:
                r = s.get(dev.url("/api/%s/lights" % user), timeout=10)
                if r.status_code not in (200, 503) or (r.status_code == 200 and "Desk lamp" not in r.text):
                    problems.append(("hue", r.status_code, r.text[:200]))
            except requests.ConnectionError:
                pass

    clients = [threading.Thread(target=admin_client), threading.Thread(target=hue_client)]
    for t in clients:
        t.start()
    try:
        codes, out = _wrk(dev, "/healthz", seconds, 40, lua)
        n, non2xx, abo = _ab(dev, "/lamp", 1500, 16)
    finally:
        stop.set()
        for t in clients:
            t.join(30)
    if not codes.get(200):
        problems.append(("wrk", "no 200 at all", out))
    bad = {k: v for k, v in codes.items() if k != 200 and k != 503}
    if bad:
        problems.append(("wrk", bad))
    if n != 1500 or non2xx:
        problems.append(("ab", n, non2xx, abo[-600:]))
    return problems


def test_load_with_admin_and_hue_clients_no_errors_no_leak_no_dead_thread(device, tmp_path):
    lua = tmp_path / "codes.lua"
    lua.write_text(WRK_LUA)
    admin = device.admin
    # the same session and Hue user in both rounds: a new one is state the device keeps by right
    # (a session for hours, a user for good), which the leak check would count
    editor = Admin(device)
    user = hue_user(device, editor)
    assert _load_round(device, str(lua), editor, user) == []          # warm-up: buffers, frames
    healthy(device)
    before = admin.heap()
    assert _load_round(device, str(lua), editor, user) == []
    healthy(device)
    threads_alive(device)
    after = admin.heap()
    # the same load again must not cost heap (a little slack for the GC's own noise)
    assert after > before - 6144, (before, after)
    assert_no_traceback(device)


# ---- junk on the HTTP port ----

def _cl(head, body):
    # Connection: close, so that the answer ends with the connection (no wait for a keep-alive timeout)
    return head.replace(b"\r\nContent-Length", b"\r\nConnection: close\r\nContent-Length") % len(body) + body


HTTP_JUNK = {
    "random bytes": os.urandom(3000),
    "TLS ClientHello": bytes.fromhex("16030100a5010000a10303") + os.urandom(32) + b"\x00\x00\x02\x13\x01\x01\x00",
    "huge header": b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: " + b"a" * 20000 + b"\r\n\r\n",
    "many headers": b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(100)) + b"\r\n",
    "10k URL": b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "NUL in path": b"GET /heal\x00thz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "NUL in header": b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\x00\r\n\r\n",
    "invalid UTF-8 path": b"GET /\xff\xfe\xc3 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "invalid UTF-8 escaped path": b"GET /%ff%fe%c3 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    "invalid UTF-8 header": b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-U: \xff\xfe\r\n\r\n",
    "invalid UTF-8 JSON (Hue)": _cl(b"POST /api HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n",
                                    b'{"devicetype": "\xff\xfe"}'),
    "invalid UTF-8 form": _cl(b"POST /lamp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n",
                              b"bri=\xff\xfe&on=%ff%fe"),
    "invalid UTF-8 setup form": _cl(b"POST /setup HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n",
                                    b"ssid=\xff\xfe&password=%ff%fe"),
    "negative length": b"POST /lamp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n",
    "huge length": b"POST /lamp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
    "bad chunk": b"POST /lamp HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "HTTP/0.9": b"GET /\r\n\r\n",
    "binary method": b"\x00\x01\x02 / HTTP/1.1\r\n\r\n",
    "pipelined then garbage": b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 3 + os.urandom(500),
}


@pytest.mark.parametrize("name", list(HTTP_JUNK))
def test_junk_on_the_http_port_gets_an_answer_and_the_device_stays_up(device, name):
    junk = HTTP_JUNK[name]
    answer = raw_http(device.port, junk, timeout=3.0)
    status = status_of(answer)
    if b"\n" not in junk:
        # no line end yet (a TLS ClientHello): the server may wait for the rest until its 408
        assert answer == b"" or (status is not None and status < 500), (name, answer[:300])
    else:
        assert status is not None and status < 500, (name, answer[:300])
    healthy(device)


def test_long_urls_and_headers_within_the_head_limit_never_kill_a_worker(device):
    # every size up to max_head (4 KB), on keep-alive connections (a worker parses the next request
    # itself): MicroPython's backtracking re once ran out of stack on a long request line
    s = requests.Session()
    for n in (150, 250, 600, 1000, 2000, 3500):
        for _ in range(4):
            r = s.get(device.url("/lamp?x=" + "a" * n), timeout=10)
            assert r.status_code == 200, (n, r.status_code)
            r = s.get(device.url("/healthz"), headers={"X-Long": "v" * n}, timeout=10)
            assert r.status_code == 200, (n, r.status_code)
    healthy(device)
    threads_alive(device)


def test_half_open_slowloris_and_pipelined_garbage_do_not_starve_real_clients(device):
    socks = []
    try:
        # more half-open connections than the server keeps, some sending a byte now and then
        for i in range(48):
            s = socket.create_connection(("127.0.0.1", device.port), 5)
            if i % 2:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            socks.append(s)
        t0 = time.time()
        for _ in range(3):
            for s in socks[1::2][:8]:
                try:
                    s.sendall(b"X")
                except OSError:
                    pass
            healthy(device, timeout=5)
        assert time.time() - t0 < 10
        # pipelined requests with garbage after them on one connection: the good ones are answered
        answer = raw_http(device.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 2 + b"\x16\x03junk\r\n\r\n")
        assert answer.count(b"HTTP/1.1 200 OK") == 2 and b"HTTP/1.1 400" in answer, answer
    finally:
        for s in socks:
            s.close()
    healthy(device)
    threads_alive(device)


def test_slowloris_filling_every_slot_does_not_lock_out_other_clients(device):
    socks = []
    try:
        for _ in range(40):
            s = socket.create_connection(("127.0.0.1", device.port), 5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            socks.append(s)
        time.sleep(0.3)
        for _ in range(3):
            for s in socks:
                try:
                    s.sendall(b"X")
                except OSError:
                    pass
            healthy(device, timeout=3)
    finally:
        for s in socks:
            s.close()


# ---- junk on the portal's DNS port (N+1) ----

def dns_query(name, qtype=1, txid=0x1234):
    q = b"".join(bytes([len(p)]) + p for p in name.encode().split(b".")) + b"\x00"
    return struct.pack(">HHHHHH", txid, 0x0100, 1, 0, 0, 0) + q + struct.pack(">HH", qtype, 1)


def test_junk_and_floods_on_the_dns_port_do_not_stop_the_captive_answers(device):
    addr = ("127.0.0.1", device.port + 1)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(2)
    try:
        good = dns_query("connectivitycheck.gstatic.com")
        assert u.sendto(good, addr)
        reply = u.recvfrom(2048)[0]
        assert reply[:2] == good[:2] and reply[-4:] == socket.inet_aton("127.0.0.1")
        junk = [b"", b"\x00", os.urandom(11), good[:13], good[:-2], good + b"\x00" * 3,
                good[:12] + b"\xc0\x0c" + good[-4:],                       # pointer loop in the question
                good[:12] + b"\x3f" + b"a" * 63 + b"\x00" + good[-4:],     # label runs past the end
                struct.pack(">HHHHHH", 1, 0x0100, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF) + good[12:],
                struct.pack(">HHHHHH", 1, 0x8180, 1, 1, 0, 0) + good[12:],  # a response
                os.urandom(1400), b"\xff" * 600]
        for _ in range(20):
            for j in junk:
                u.sendto(j, addr)
        for i in range(2000):   # flood
            u.sendto(dns_query("x%d.example" % i, txid=i & 0xFFFF), addr)
        # drain what came back, then a fresh query must still be answered
        u.settimeout(0.2)
        try:
            while u.recvfrom(2048):
                pass
        except socket.timeout:
            pass
        u.settimeout(3)
        deadline = time.time() + 10
        while True:
            u.sendto(dns_query("captive.apple.com", txid=0xBEEF), addr)
            try:
                reply = u.recvfrom(2048)[0]
                if reply[:2] == b"\xbe\xef":
                    break
            except socket.timeout:
                pass
            assert time.time() < deadline, "no DNS answer after the junk"
        assert reply[-4:] == socket.inet_aton("127.0.0.1")
    finally:
        u.close()
    healthy(device)


# ---- junk on SSDP (loopback multicast) ----

def ssdp_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    return s


def test_junk_m_search_on_ssdp_does_not_stop_discovery(device):
    s = ssdp_socket()
    group = ("239.255.255.250", 1900)
    loc = "http://127.0.0.1:%d/description.xml" % device.port
    try:
        junk = [os.urandom(600), b"M-SEARCH * HTTP/1.1\r\n", b"M-SEARCH * HTTP/1.1\r\nMAN: ssdp:discover\r\nMX: x\r\n"
                b"ST: ssdp:all\r\n\r\n", b"M-SEARCH * HTTP/1.1\r\nMAN: \"ssdp:discover\"\r\nMX: -5\r\nST: \xff\xfe\r\n\r\n",
                b"M-SEARCH * HTTP/1.1\r\nMAN: \"ssdp:discover\"\r\nMX: 99999999999999999999\r\nST: " + b"u" * 1200 + b"\r\n\r\n",
                b"M-SEARCH * HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n", b"NOTIFY * HTTP/1.1\r\n\x00\x00\r\n\r\n",
                b"\r\n" * 300, b":\r\n:\r\n\r\n"]
        for _ in range(5):
            for j in junk:
                s.sendto(j, group)
        search = (b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\n"
                  b"ST: urn:schemas-upnp-org:device:basic:1\r\n\r\n")
        s.settimeout(0.5)
        deadline = time.time() + 10
        found = False
        while not found and time.time() < deadline:
            s.sendto(search, group)
            end = time.time() + 1.5
            while time.time() < end and not found:
                try:
                    data = s.recvfrom(4096)[0].decode(errors="replace")
                except socket.timeout:
                    continue
                found = loc in data
        assert found, "the bridge no longer answers M-SEARCH"
    finally:
        s.close()
    healthy(device)


# ---- junk on a WeMo port ----

def _soap(action, inner=""):
    body = ('<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
            '<u:%s xmlns:u="urn:Belkin:service:basicevent:1">%s</u:%s></s:Body></s:Envelope>' % (action, inner, action))
    return body.encode()


def _wemo_get(port):
    r = requests.post("http://127.0.0.1:%d/upnp/control/basicevent1" % port, data=_soap("GetBinaryState"),
                      headers={"SOAPACTION": '"urn:Belkin:service:basicevent:1#GetBinaryState"',
                               "Content-Type": 'text/xml; charset="utf-8"'}, timeout=5)
    assert r.status_code == 200 and "<BinaryState>" in r.text, r.text
    return r


WEMO_JUNK = {
    "not XML": b"\x00\xff" * 200,
    "unclosed tags": _soap("SetBinaryState", "<BinaryState>1")[:-40],
    "bad state": _soap("SetBinaryState", "<BinaryState>7</BinaryState>"),
    "unknown action": _soap("SelfDestruct"),
    "invalid UTF-8": _soap("SetBinaryState", "<BinaryState>") + b"\xff\xfe" + b"</BinaryState>",
    "nested tags": _soap("SetBinaryState", "<BinaryState>" * 2000),
    "huge body": _soap("GetBinaryState", "x" * 200000),
}


def test_junk_on_the_wemo_port_keeps_it_answering(device):
    port = wemo_port(device)
    _wemo_get(port)
    for name, body in WEMO_JUNK.items():
        head = ("POST /upnp/control/basicevent1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: text/xml\r\n"
                "SOAPACTION: \"urn:Belkin:service:basicevent:1#SetBinaryState\"\r\nConnection: close\r\n"
                "Content-Length: %d\r\n\r\n"
                % (port, len(body))).encode()
        answer = raw_http(port, head + body)
        status = status_of(answer)
        # a SOAP fault is a 500 by the UPnP spec; anything else must be a client error or OK
        assert status is not None and (status < 500 or b"s:Fault" in answer), (name, answer[:300])
        _wemo_get(port)
    for junk in (os.urandom(2000), b"SUBSCRIBE /upnp/event/basicevent1 HTTP/1.1\r\nCALLBACK: <\xff>\r\n\r\n"):
        raw_http(port, junk)
        _wemo_get(port)
    healthy(device)


def test_a_slow_wemo_client_does_not_block_the_other_wemo_clients(device):
    # the WeMo servers have workers=0: their one thread reads any body within max_body in the poll
    # loop before answering, so a client sending slowly holds up nobody (and gets its 408 later)
    port = wemo_port(device)
    s = socket.create_connection(("127.0.0.1", port), 5)
    try:
        # a body larger than the connection buffer
        s.sendall(b"POST /upnp/control/basicevent1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n\r\n"
                  + b"x" * 10)
        time.sleep(0.3)
        t0 = time.time()
        _wemo_get(port)
        assert time.time() - t0 < 2.0
    finally:
        s.close()


# ---- admin API abuse: always a 4xx with a reason ----

DEEP_LIST = "[" * 2000 + "]" * 2000
DEEP_OBJ = '{"value": ' + '{"a": ' * 3000 + "1" + "}" * 3000 + "}"
ADMIN_BODIES = {
    "not JSON": b"value=3",
    "broken JSON": b'{"value": ',
    "a list": b"[1, 2]",
    "a string": b'"value"',
    "a number": b"42",
    "invalid UTF-8": b'{"value": "\xff\xfe"}',
    "lone surrogate": b'{"value": "\\ud800"}',
    "NUL": b'{"value": "\x00"}',
    "deep list": DEEP_LIST.encode(),
    "deep object": DEEP_OBJ.encode(),
    "deep value": ('{"value": ' + "[" * 2000 + "]" * 2000 + "}").encode(),
    "huge": b'{"value": "' + b"x" * 70000 + b'"}',
}


@pytest.mark.parametrize("name", list(ADMIN_BODIES))
@pytest.mark.parametrize("method,path", [("PUT", "vars/lamp/bri"), ("POST", "wifi/networks"),
                                         ("POST", "import"), ("POST", "alexa/devices"),
                                         ("PUT", "alexa/devices/0")])
def test_admin_bodies_that_are_not_what_it_expects_get_a_4xx_with_a_reason(device, name, method, path):
    r = device.admin.call(method, path, raw=ADMIN_BODIES[name])
    assert 400 <= r.status_code < 500, (name, r.status_code, r.text[:300])
    if r.status_code == 413:
        assert "Too Large" in r.text   # refused by the server before the admin page sees it
    else:
        assert r.json()["error"], r.text
    healthy(device)


ADMIN_PATHS = ["vars/..%2Fadmin/pwhash", "vars/lamp/..%2F..%2Fadmin", "vars/%2E%2E/x", "vars/lamp/%2E%2E",
               "vars/lamp/a%2Fb", "vars/" + "f" * 3000 + "/x", "vars/lamp/" + "n" * 300, "vars/lamp/%00",
               "vars/lamp/%0d%0aSet-Cookie:x", "vars/l%C3%A4mp/%E2%98%83", "vars/lamp/%ff%fe",
               "vars/admin/pwhash", "vars/wifi/nets", "vars/lamp/" + "%F0%9F%92%A1" * 4]


@pytest.mark.parametrize("path", ADMIN_PATHS, ids=lambda p: p[:40])
def test_admin_variable_paths_never_500_and_never_reach_the_secrets(device, path):
    admin = device.admin
    for method, body in (("PUT", {"value": 3}), ("DELETE", None), ("GET", None)):
        r = admin.call(method, path if method != "GET" else path.rpartition("/")[0], body)
        assert r.status_code < 500, (method, path, r.status_code, r.text[:300])
        if r.status_code >= 400 and r.status_code not in (404, 405):   # no route: the server's text
            assert r.json()["error"], r.text[:300]
        assert "pbkdf2" not in r.text and "pwhash\": {" not in r.text
    # the admin password still works and nothing was written into the hidden folders
    Admin(device)


def test_admin_delete_of_missing_things_is_a_404_with_a_reason(device):
    admin = device.admin
    for path in ("vars/lamp/nothere", "vars/nofolder/x", "wifi/networks/nosuchnet", "alexa/devices/77"):
        r = admin.call("DELETE", path)
        assert r.status_code == 404, (path, r.status_code, r.text)
        assert r.json()["error"], r.text


def test_admin_edits_of_many_names_do_not_leak_heap(device):
    admin = device.admin
    # an attacker with a session (or a buggy script) edits and deletes ever new names. The heap
    # must not be shredded either: persist and store used to keep up to 64 names each in a cache,
    # each string where the heap had room when its request came, and 100 such requests took the
    # largest free block from 66 KB to 9 KB with 170 KB free (host bytes)
    def burst(tag, n):
        for i in range(n):
            name = "%s%d" % (tag, i)
            r = admin.call("PUT", "vars/junk/" + name, {"value": i})
            assert r.status_code == 200, r.text
            assert admin.call("DELETE", "vars/junk/" + name).status_code == 200
            r = admin.call("DELETE", "vars/junk/m" + name)
            assert r.status_code == 404, r.text
    def largest():  # (the best of three: another thread's passing allocation can split it once)
        return max(requests.get(device.url("/chaos/heap"), timeout=10).json()["largest"] for _ in range(3))

    burst("w", 20)
    before = admin.heap()
    block = largest()
    burst("a", 150)
    after = admin.heap()
    assert after > before - 4096, (before, after)
    assert largest() >= min(block, 16384) // 2, (block, largest())   # the heap is not shredded either
    healthy(device)


# ---- power cuts in the middle of writes ----

def _boot(dev, first=False):
    n = len(dev.lines)
    dev.start()
    try:
        dev.wait_line("CHAOS READY", timeout=30)
        dev.wait_http()
        healthy(dev)
        assert requests.get(dev.url("/admin"), timeout=10).status_code == 200
        if first:
            dev.wait_line("setup portal on", timeout=30)
        return Admin(dev, first=first)
    except (requests.RequestException, AssertionError) as e:
        raise AssertionError("%r after a power cut; console of this boot:\n%s" % (e, "\n".join(dev.lines[n:])))


def _cut_while(dev, rng, seconds, write, check, min_cuts=10):
    """Power cuts at random moments while `write(i)` runs in a loop, until `seconds` passed and at
    least min_cuts were made (a slow machine gets more time, up to 45 s).
    write(i) returns normally once the device acknowledged value i; check(acked, tried) after each
    boot asserts that every value is the old (acked) or the new (tried) one. Returns the cut count."""
    cuts = 0
    acked = tried = None
    t0 = time.time()
    while (time.time() - t0 < seconds or cuts < min_cuts) and time.time() - t0 < 45:
        stop = threading.Event()
        state = {"acked": acked, "tried": tried, "i": 0 if acked is None else acked + 1}

        def writer(stop=stop, state=state):
            while not stop.is_set():
                i = state["i"]
                state["tried"] = i
                try:
                    write(i)
                except (requests.ConnectionError, requests.Timeout):
                    return
                if stop.is_set():
                    return   # the answer may have raced the cut: count it as tried only
                state["acked"] = i
                state["i"] = i + 1

        t = threading.Thread(target=writer)
        t.start()
        time.sleep(rng.uniform(0.05, 0.6))
        stop.set()
        dev.power_cut()
        t.join(15)
        cuts += 1
        acked, tried = state["acked"], state["tried"]
        if cuts % 4 == 0:
            # now and then a cut during the boot itself (NVS opened, AP and servers coming up)
            dev.start()
            time.sleep(rng.uniform(0.0, 0.4))
            dev.power_cut()
            cuts += 1
        _boot(dev)
        check(acked, tried)
    return cuts


def test_power_cuts_while_the_admin_edits_variables(tmp_path):
    dev = make_device(tmp_path)
    rng = random.Random(7)
    admin = _boot(dev, first=True)
    box = {"admin": admin}

    def write(i):
        r = box["admin"].call("PUT", "vars/lamp/bri", {"value": i % 101}, timeout=5)
        assert r.status_code == 200, r.text
        r = box["admin"].call("PUT", "vars/cut/n", {"value": i, "type": "int"}, timeout=5)
        assert r.status_code == 200, r.text

    def check(acked, tried):
        box["admin"] = a = Admin(dev)
        v = a.call("GET", "vars/cut").json()["vars"].get("n", {}).get("value")
        ok = {acked, tried, None if acked is None else acked - 1}
        assert v in ok | ({None} if acked is None else set()), (v, acked, tried)
        bri = a.call("GET", "vars/lamp").json()["vars"]["bri"]["value"]
        assert bri in {x % 101 for x in ok if x is not None} | {50}, (bri, acked, tried)
        # and writes still work
        assert a.call("PUT", "vars/lamp/bri", {"value": bri}).status_code == 200
    try:
        cuts = _cut_while(dev, rng, 14, write, check)
    finally:
        dev.stop()
    assert cuts >= 10
    assert_no_traceback(dev)


def _alexa_cuts(tmp_path, acked_kept):
    dev = make_device(tmp_path)
    rng = random.Random(11)
    user = hue_user(dev, _boot(dev, first=True))
    lights = requests.get(dev.url("/api/%s/lights" % user), timeout=10).json()
    lid = [k for k, v in lights.items() if v["name"] == "Desk lamp"][0]

    def state_of(i):
        return (bool(i % 2), 1 + (i * 37) % 254)

    def write(i):
        on, bri = state_of(i)
        r = requests.put(dev.url("/api/%s/lights/%s/state" % (user, lid)), json={"on": on, "bri": bri}, timeout=5)
        assert "success" in r.text, r.text

    def close(a, b):   # Hue bri goes through the app's percent: a step of rounding either way
        return a[0] == b[0] and abs(a[1] - b[1]) <= 2

    def check(acked, tried):
        st = requests.get(dev.url("/api/%s/lights/%s" % (user, lid)), timeout=10).json()["state"]
        got = (st["on"], st["bri"])
        if acked_kept:
            # per value old-or-new: the app keeps on and brightness in two variables, written one
            # after the other, so a cut between them mixes the acknowledged and the tried state
            cand = [state_of(x) for x in (acked, tried) if x is not None]
            ok = [(a[0], b[1]) for a in cand for b in cand]
        else:   # a state some client sent (or the default): never a torn or invented one
            ok = [state_of(x) for x in range(tried + 1)] if tried is not None else []
        assert any(close(got, o) for o in ok) or (acked is None and not got[0]), (got, acked, tried)
        if tried is not None:
            write(tried)   # writes still work (the device now holds `tried`: old or new stays true)
    try:
        cuts = _cut_while(dev, rng, 10, write, check)
    finally:
        dev.stop()
    assert cuts >= 10
    assert_no_traceback(dev)


def test_power_cuts_while_alexa_switches_a_light_keep_what_was_acknowledged(tmp_path):
    # the Hue answer comes after the app's on_change persisted the state (alexa.py)
    _alexa_cuts(tmp_path, acked_kept=True)


def test_power_cuts_while_wifi_networks_are_added(tmp_path):
    dev = make_device(tmp_path)
    rng = random.Random(13)
    box = {"admin": _boot(dev, first=True)}
    maxn = 8

    def model(upto):
        return ["net%d" % i for i in range(upto + 1)][-maxn:] if upto is not None else []

    def write(i):
        r = box["admin"].call("POST", "wifi/networks", {"ssid": "net%d" % i, "password": "pw-%08d" % i}, timeout=5)
        assert r.status_code == 200, r.text

    def check(acked, tried):
        box["admin"] = a = Admin(dev)
        got = [n["ssid"] for n in a.call("GET", "wifi").json()["networks"]]
        assert got in (model(acked), model(tried)), (got, acked, tried)
    try:
        cuts = _cut_while(dev, rng, 12, write, check)
        write(10000)  # and writes still work
    finally:
        dev.stop()
    assert cuts >= 10
    assert_no_traceback(dev)


# ---- crashes in user code ----

def test_a_crash_at_boot_keeps_rebooting_but_a_crash_in_a_handler_does_not(tmp_path):
    dev = make_device(tmp_path / "crash", extra_env={"CHAOS_BOOT_CRASH": "1"})
    dev.start()
    try:
        for _ in range(3):   # the simulator reboots it, again and again, and stays alive itself
            n = len(dev.lines)
            dev.wait_line(r"sim: device crashed \(exit \d+\): reboot", timeout=20, since=n)
        assert dev.alive()
        assert "chaos: user code crashed at boot" in dev.output()
    finally:
        dev.stop()
    dev = make_device(tmp_path / "ok")
    _boot(dev, first=True)
    try:
        for _ in range(5):
            r = requests.get(dev.url("/chaos/boom"), timeout=10)
            assert r.status_code == 500
            healthy(dev)
        r = requests.get(dev.url("/chaos/memboom"), timeout=20)
        assert r.status_code == 503
        healthy(dev)
        threads_alive(dev)
        # a module's poll failing a few times: the main loop goes on
        requests.get(dev.url("/chaos/pollboom?n=5"), timeout=10)
        dev.wait_line("chaos: bug in a poll")
        deadline = time.time() + 5
        while requests.get(dev.url("/chaos/pollboom"), timeout=10).json()["booms"] and time.time() < deadline:
            pass
        n = len(dev.lines)
        time.sleep(0.5)   # 25 passes of the main loop: a dead loop would stop the watchdog feed
        healthy(dev)
        assert "device crashed" not in dev.output() and dev.output().count("CHAOS READY") == 1
        assert "reset cause: power_on" in dev.output()
        # failing pass after pass: the device reboots rather than run without its main loop
        requests.get(dev.url("/chaos/pollboom?n=100000"), timeout=10)
        dev.wait_line(r"sim: device crashed \(exit \d+\): reboot", timeout=20, since=n)
        dev.wait_line("reset cause: panic", timeout=20, since=n)
        dev.wait_line("CHAOS READY", timeout=20, since=n)
        dev.wait_http()
        healthy(dev)
    finally:
        dev.stop()


def test_deep_json_to_the_hue_api_is_a_client_error(device):
    r = requests.post(device.url("/api"), data=DEEP_LIST, timeout=10)
    # the client's error, never the device's: a 4xx, or the Hue way (200 + error type 2)
    assert 400 <= r.status_code < 500 or (r.status_code == 200 and r.json()[0]["error"]["type"] == 2), \
        (r.status_code, r.text)
    healthy(device)


def test_the_setup_form_is_no_way_around_the_login_lock_out(tmp_path):
    dev = make_device(tmp_path)
    _boot(dev, first=True)
    try:
        codes = []
        for i in range(8):
            r = requests.post(dev.url("/setup"), data={"ssid": "home", "password": "whatever-1",
                                                       "admin": "guess-%d-xx" % i}, timeout=10)
            codes.append(r.status_code)
        assert 429 in codes and set(codes) <= {403, 429}, codes
        # the same count holds for the admin login: the right password waits out the lock-out too
        r = requests.post(dev.url("/admin/api/login"), json={"password": PASSWORD}, timeout=10)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1, r.text
        r = requests.post(dev.url("/admin/api/login"), json={"password": "wrong-again"}, timeout=10)
        assert r.status_code == 429
        # nor is a session: changing the password with guesses of the old one counts too
        time.sleep(int(r.headers["Retry-After"]) + 0.2)
        admin = Admin(dev)
        codes = [admin.call("POST", "password", {"old": "guess-%d-yy" % i, "new": "new-password-9"}).status_code
                 for i in range(6)]
        assert 429 in codes and set(codes) <= {403, 429}, codes
    finally:
        dev.stop()
    assert "portal: saved network" not in dev.output()


def test_power_cuts_during_the_first_boots_of_a_new_device(tmp_path):
    dev = make_device(tmp_path)
    rng = random.Random(17)
    for _ in range(8):   # flash image, factory app, NVS pages and the AP all being made for the first time
        dev.start()
        time.sleep(rng.uniform(0.0, 0.5))
        dev.power_cut()
    try:
        admin = _boot(dev, first=True)
        assert admin.call("PUT", "vars/lamp/bri", {"value": 42}).json()["value"] == 42
        assert "reset cause: power_on" in dev.output()
    finally:
        dev.stop()
    assert_no_traceback(dev)
    assert "bricked" not in dev.output()


SERVER_RACE = """
import sys, time
from iotutils.server import WebServer
port = int(sys.argv[1])
for i in range(int(sys.argv[2])):
    app = WebServer(port=port + i % 500, workers=3, host="127.0.0.1")
    try:
        app.start()
    except OSError:
        continue   # a port some other test holds: skip it
    try:
        for _ in range(200):   # the main thread reads the server (as Device.start() does)
            app.bound_port
    except Exception as e:
        print("main thread:", repr(e))
    time.sleep_ms(2)
    app.stop(1000)
print("done")
"""


def test_starting_the_server_never_kills_a_worker(tmp_path):
    from conftest import micropython_cmd
    script = tmp_path / "race.py"
    script.write_text(SERVER_RACE)
    port = 20000 + (os.getpid() * 53) % 30000
    env = dict(os.environ, MICROPYPATH=os.path.join(ROOT, "modules"))
    crashes = 0
    while True:
        out = subprocess.run(micropython_cmd() + [str(script), str(port), "400"], capture_output=True, text=True,
                             env=env, timeout=60)
        text = out.stdout + out.stderr
        assert "has no attribute" not in text and "main thread:" not in text, text[-2000:]
        # The PyPI runtime (MicroPython embedded in a CPython extension) itself dies by SIGSEGV in about
        # one run in four of 1,600 thread starts, with the code of every revision of this server; the
        # unix port built from v1.28.0 (FIRMWARE=...) never did in the same runs. A crash is retried
        # there, twice at most; everything else, and any crash on the firmware, fails.
        if out.returncode == -11 and not os.environ.get("FIRMWARE") and crashes < 2:
            crashes += 1
            continue
        break
    assert "done" in text, "exit %s: %s" % (out.returncode, text[-2000:])
