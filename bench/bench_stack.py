"""Thread stacks: the smallest stack (the chip's bytes) each thread role of a device still works
with, side by side with the board's figures in iotutils.hal (WEB_STACK, HOUSEKEEPER_STACK, JOB_STACK).

usage: python bench/bench_stack.py [--roles web,housekeeper,job] [--parallel N] [--pypi]
       python bench/bench_stack.py --one ROLE:SIZE[:HEAP[:VARIANT]]   (one probe, its console shown)

The device is tests/apps/stack_app.py on the simulator (iotutils.Device with everything on: admin
page, Alexa with a colour Hue light and a WeMo socket, MQTT with Home Assistant discovery to a local
Mosquitto, OTA from the fake GitHub (tests/fake_github.py, releases signed with the test owner's
key), four exposed variables), run on the host firmware (build/unix/micropython, or $FIRMWARE): the
toolbox frozen as on the chip. The app sets hal.WEB_STACK / HOUSEKEEPER_STACK / JOB_STACK (read when
each thread starts) and _compat.start_thread turns the chip's bytes into the host's. Three ways:
- sim: as start_thread does for every simulated device and test: twice the chip's bytes (64-bit),
  plus the unix port's 8 KB margin, plus 16 KB for nested imports (the unix port puts a 4 KB
  PATH_MAX buffer on the C stack per nested import, the ESP32 port 128 bytes);
- bare: without the 16 KB: nested imports then cost the host's 4 KB each, so this over-estimates
  the chip where a role imports modules (the first admin request, MQTT set up from the page);
- preloaded: bare, with every toolbox module imported at boot by the main thread (sim_boot.py's
  IOTUTILS_PRELOAD): the roles' own frames only, no import in any measured thread.
- pypi (--pypi): the PyPI micropython (.venv/bin/micropython), sized as sim.

For each role and way the bench finds, in 512-byte steps between 3072 and 16384, the smallest size at
which that role's deepest work fully succeeds, the other roles keeping 16384 and the heap 165wK (the
stack, not the heap, is measured): the board's constant first, then 3072, then bisection; the size
found must work a second time, else the next one up is tried (a role's deepest path can depend on
timing: the boundary moves by about 1 KB from run to run). One fresh device per probe, each step with
a short timeout, so a hang is a failure, not a stuck bench; a failure with no sign of the stack in it
(a timeout, a wrong answer) is tried once more. Then each role once with the board as shipped: its
three constants and the 110wK heap.
- web (every web server thread, WeMo ports included): a logged-in session through every admin page
  and API GET (memory?largest=1, export, MQTT ...), a variable set, a settings import, an OTA check
  against the fake GitHub and a broker test (both run by the handler), MQTT set up from the page,
  Alexa pairing and devices, Hue API (pairing, full state, lights, a colour change), WeMo description
  and SOAP, the setup portal's pages (the home network taken away: the device falls back to its
  access point), and last a signed firmware upload (streamed, verified and written to the other
  slot by the handler; the device reboots into it);
- housekeeper (MQTT given in the code): MQTT connect and Home Assistant discovery, commands from
  "Home Assistant" (paho) to a switch, a number, an RGB light and the Alexa light, each state coming
  back; an SSDP M-SEARCH answered for the Hue bridge and the WeMo socket; a WeMo GENA subscription
  and its NOTIFY; the Wi-Fi network taken away (access point, setup portal loaded by the Wi-Fi step,
  its DNS answering) and brought back (MQTT reconnects and announces again); then the housekeeper
  must still run with no step errors;
- job: the broker set on the admin page, then saved again (MQTT's modules imported and the client
  started, then restarted, in "admin-job"s), each followed by the update entity's check
  ("mqtt-job"); then three installs, each rebooting into the new image and confirmed: the admin
  page's update button ("admin-job"), Home Assistant's install ("mqtt-job"), auto-update ("ota":
  its check and install).
A probe fails on a wrong answer, a dropped connection, a timeout, the device process dying (the unix
port can segfault instead of raising when a thread's stack runs out), or "maximum recursion depth
exceeded" / RuntimeError on the device's console.
Printed, never asserted: `make bench` material, not a test.
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in ("modules", "scripts", "tests"):
    sys.path.insert(0, os.path.join(ROOT, _p))

APP = os.path.join(ROOT, "tests", "apps", "stack_app.py")
HAL = os.path.join(ROOT, "modules", "iotutils", "hal", "__init__.py")
ROLES = ("web", "housekeeper", "job")
CONST = {"web": "WEB_STACK", "housekeeper": "HOUSEKEEPER_STACK", "job": "JOB_STACK"}
ENV = {"web": "IOTUTILS_STACK_WEB", "housekeeper": "IOTUTILS_STACK_HOUSEKEEPER", "job": "IOTUTILS_STACK_JOB"}
LO, HI, STEP = 3072, 16384, 512
GENEROUS = HI              # what the roles not under test get
BOARD_HEAP = "110wK"       # scripts/sim.py's default: an ESP32 without PSRAM
HEAP = "165wK"             # the bisection's: the stack, not the heap, is what may run out
PASSWORD = "stack-bench-pw"
STEP_S = 20                # the longest any one step may take
HTTP_S = 15
# on the console: the stack ran out (raised, or the process died: the supervisor says so)
STACK_SIGNS = re.compile(r"maximum recursion depth|RuntimeError|sim: device crashed|Guru Meditation")
SOAP = ('<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
        's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><u:%s '
        'xmlns:u="urn:Belkin:service:basicevent:1">%s</u:%s></s:Body></s:Envelope>')


def board_constants():
    """{role: bytes} as modules/iotutils/hal/__init__.py writes them (the chip's figures)."""
    with open(HAL) as f:
        src = f.read()
    out = {}
    for role, name in CONST.items():
        m = re.search(r"^%s\s*=\s*(\d+)" % name, src, re.M)
        out[role] = int(m.group(1)) if m else None
    return out


class Failed(Exception):
    """The probe's work did not succeed; .stack: the console showed the stack running out."""

    def __init__(self, why, stack=False):
        Exception.__init__(self, why)
        self.stack = stack


# ---- one device, one role at one size ----

class Probe:
    def __init__(self, role, sizes, runtime, broker, workdir, heap, extra=None):
        from fake_github import FakeGitHub, device_env

        import espimage
        import nvs_provision
        from simdev import SimDevice
        self.role, self.broker, self.sizes = role, broker, sizes
        self.dir = tempfile.mkdtemp(prefix="stack-%s-" % role, dir=workdir)
        self.gh = FakeGitHub().start()
        self.image = lambda v: espimage.build_app_image(v, size=48 * 1024)
        self.gh.add_release("acme/lamp", "0.2.0", self.image("0.2.0"))
        self.wifi = os.path.join(self.dir, "wifi.json")
        self.set_wifi(True)
        env = dict(device_env(self.gh), IOTUTILS_STACK_WIFI="home:home-secret",
                   # few PBKDF2 rounds: a login costs the same stack, not the same seconds
                   IOTUTILS_STACK_PWHASH=nvs_provision.hash_password(PASSWORD, iterations=100))
        if role == "housekeeper":
            # the broker given in the code; the web and job probes set it on the admin page, so that
            # MQTT's modules are first imported by a web thread and an admin job
            env["IOTUTILS_MQTT"] = broker.url()
        for r in ROLES:
            env[ENV[r]] = str(sizes[r])
        env.update(extra or {})
        self.dev = SimDevice(os.path.join(self.dir, "dev"), app=APP, wifi=self.wifi, runtime=runtime,
                             heap=heap, extra_env=env)
        self.ha = None
        self.step = "boot"   # what the probe was doing (said when the console shows the stack ran out)

    def set_wifi(self, up):
        tmp = self.wifi + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"networks": [{"ssid": "home", "password": "home-secret", "rssi": -50, "channel": 6,
                                     "up": up}]}, f)
        os.replace(tmp, self.wifi)

    def close(self):
        if self.ha is not None:
            self.ha.close()
        try:
            self.dev.stop()
        finally:
            self.gh.stop()
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- the console --
    def mark(self):
        return len(self.dev.lines)

    def check(self):
        for line in list(self.dev.lines):
            if STACK_SIGNS.search(line):
                raise Failed("console: %s (at: %s)" % (line.strip()[:100], self.step), stack=True)

    def line(self, pattern, since, timeout=STEP_S):
        self.step = "waiting for %r" % pattern
        rx = re.compile(pattern)
        deadline = time.time() + timeout
        while True:
            self.check()
            for ln in self.dev.lines[since:]:
                m = rx.search(ln)
                if m:
                    return m
            if time.time() > deadline:
                raise Failed("timeout: no %r on the console within %d s" % (pattern, timeout))
            time.sleep(0.05)

    def boot(self):
        since = self.mark()
        self.dev.start()
        self.line(r"heap free after start", since, 40)
        m = self.line(r"STACKS web=(\d+) housekeeper=(\d+) job=(\d+)", since)
        if [int(x) for x in m.groups()] != [self.sizes[r] for r in ROLES]:
            raise Failed("the app did not take the sizes: " + m.group(0))
        return since

    def new_image(self, version, since, timeout=40):
        """The device rebooted into `version` (pending verify) and confirmed it."""
        self.line(r"firmware: slot \S+ \(pending verify\), \S+ %s\b" % re.escape(version), since, timeout)
        self.line(r"firmware: health check passed, image confirmed", since, timeout)
        return self

    # -- HTTP --
    def call(self, s, method, path, want=200, port=None, **kw):
        url = "http://127.0.0.1:%d%s" % (port or self.dev.port, path)
        self.step = "%s %s" % (method, path[:60])
        try:
            r = s.request(method, url, timeout=HTTP_S, **kw)
        except Exception as e:   # requests' ConnectionError, ReadTimeout, ChunkedEncodingError ...
            time.sleep(1)        # a dead device: its supervisor says so
            self.check()
            raise Failed("%s %s: %s" % (method, path, type(e).__name__))
        self.check()
        if r.status_code != want:
            time.sleep(0.5)      # a 500 from a handler that ran out: its traceback is on its way
            self.check()
            raise Failed("%s %s: %d, not %d: %s" % (method, path, r.status_code, want, r.text[:80]))
        return r

    def login(self):
        import requests
        s = requests.Session()
        r = self.call(s, "POST", "/admin/api/login", json={"password": PASSWORD})
        s.headers["X-CSRF-Token"] = r.json()["csrf"]
        return s

    # -- Home Assistant --
    def home_assistant(self):
        from mosquitto import HomeAssistant
        if self.ha is None:
            self.ha = HomeAssistant(self.broker)
        return self.ha

    def topic(self, t=""):
        return "iotutils/iotutils-020000%06x%s" % (self.dev.port, "/" + t if t else "")

    def ha_wait(self, topic, want=None, since=None, timeout=STEP_S):
        deadline = time.time() + timeout
        while True:
            self.check()
            try:
                return self.ha.wait(topic, want, timeout=0.5, since=since)
            except TimeoutError:
                if time.time() > deadline:
                    raise Failed("timeout: nothing (matching) on %s within %d s" % (topic, timeout))

    def ha_json(self, topic, pred, since=None, timeout=STEP_S):
        return json.loads(self.ha_wait(topic, lambda p: pred(json.loads(p)), since, timeout))


# ---- each role's deepest work ----

def work_web(p):
    import requests
    p.line(r"wifi: connected to home", p.boot())
    anon = requests.Session()
    for path in ("/healthz", "/admin", "/admin/", "/admin/api/session", "/api/config", "/description.xml"):
        p.call(anon, "GET", path)
    s = p.login()
    for what in ("status", "memory", "memory?largest=1", "wifi", "wifi/scan", "vars", "export", "ota",
                 "ota/progress", "alexa", "mqtt", "session"):
        p.call(s, "GET", "/admin/api/" + what)
    for folder in p.call(s, "GET", "/admin/api/vars").json()["folders"]:
        p.call(s, "GET", "/admin/api/vars/" + folder)
    p.call(s, "PUT", "/admin/api/vars/app/label", json={"value": "from the bench"})
    exported = p.call(s, "GET", "/admin/api/export").json()
    if p.call(s, "POST", "/admin/api/import", json=exported).json().get("ok") is not True:
        raise Failed("import: not ok")
    c = p.call(s, "POST", "/admin/api/ota/check").json()   # the check runs in the handler
    if c.get("available") != "0.2.0":
        raise Failed("ota/check: %r" % (c,))
    # MQTT, first used here: the settings and the client are imported by the handler, which connects
    if p.call(s, "POST", "/admin/api/mqtt/test", json={"url": p.broker.url()}).json().get("result") != "connected":
        raise Failed("mqtt/test: not connected")
    since = p.mark()
    p.call(s, "PUT", "/admin/api/mqtt", json={"url": p.broker.url()})
    p.line(r"mqtt: announced", since)
    if not (p.call(s, "GET", "/admin/api/mqtt").json()["status"] or {}).get("connected"):
        raise Failed("GET mqtt: not connected")
    p.call(s, "PUT", "/admin/api/alexa/pairing", json={"seconds": 60})
    p.call(s, "PUT", "/admin/api/alexa/devices/1", json={"on": True, "brightness": 40})
    new = p.call(s, "POST", "/admin/api/alexa/devices", json={"name": "Bench lamp"}, want=201).json()
    p.call(s, "DELETE", "/admin/api/alexa/devices/%d" % new["id"])
    # Hue API (an Echo or a Hue app): pairing is open
    hue = requests.Session()
    u = p.call(hue, "POST", "/api", json={"devicetype": "bench#stack"}).json()
    if "success" not in u[0]:
        raise Failed("Hue pairing: %r" % (u,))
    user = u[0]["success"]["username"]
    for path in ("", "/lights", "/lights/1", "/config", "/groups"):
        got = p.call(hue, "GET", "/api/" + user + path).json()
        if isinstance(got, list) and "error" in got[0]:
            raise Failed("Hue GET %s: %r" % (path, got))
    got = p.call(hue, "PUT", "/api/%s/lights/1/state" % user,
                 json={"on": True, "bri": 120, "hue": 30000, "sat": 200, "transitiontime": 4}).json()
    if not all("success" in x for x in got):
        raise Failed("Hue state: %r" % (got,))
    # the WeMo socket (device port 49153: host port N+3)
    wemo = p.dev.port + 3
    for path in ("/setup.xml", "/eventservice.xml"):
        p.call(hue, "GET", path, port=wemo)
    for action, arg in (("GetBinaryState", ""), ("SetBinaryState", "<BinaryState>1</BinaryState>"),
                        ("GetFriendlyName", "")):
        p.call(hue, "POST", "/upnp/control/basicevent1", port=wemo, data=SOAP % (action, arg, action),
               headers={"SOAPACTION": '"urn:Belkin:service:basicevent:1#%s"' % action,
                        "Content-Type": 'text/xml; charset="utf-8"'})
    # the setup portal: the home network goes away, the device falls back to its access point
    since = p.mark()
    p.set_wifi(False)
    p.line(r"wifi: setup portal on", since)
    portal = requests.Session()
    for path in ("/", "/setup", "/setup/status", "/setup/scan", "/setup/result?ssid=home"):
        p.call(portal, "GET", path)
    p.call(portal, "GET", "/generate_204", want=302, allow_redirects=False)
    since = p.mark()
    p.set_wifi(True)
    p.line(r"wifi: connected to home", since)
    # last: a signed image uploaded, verified and written to the other slot by the handler
    from fake_github import OWNER
    img = p.image("0.3.0")
    digest = hashlib.sha256(img)
    since = p.mark()
    r = p.call(s, "POST", "/admin/api/ota/upload?sig=%s&sha256=%s" % (OWNER.sign(digest.digest()), digest.hexdigest()),
               data=img, headers={"Content-Type": "application/octet-stream"}).json()
    if r.get("version") != "0.3.0":
        raise Failed("upload: %r" % (r,))
    p.new_image("0.3.0", since)


def ssdp_search(p, locations, timeout=STEP_S):
    """M-SEARCH ssdp:all from 127.0.0.1 until every location in `locations` answered."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", 0))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
        s.settimeout(0.2)
        msg = (b'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\nMX: 1\r\n'
               b"ST: ssdp:all\r\n\r\n")
        seen = set()
        deadline = time.time() + timeout
        sent = 0
        while not locations <= seen:
            p.check()
            if time.time() > deadline:
                raise Failed("SSDP: no answer for %s" % sorted(locations - seen))
            if time.time() - sent > 1.5:
                s.sendto(msg, ("239.255.255.250", 1900))
                sent = time.time()
            try:
                data = s.recv(2048).decode(errors="replace")
            except socket.timeout:
                continue
            m = re.search(r"(?im)^location:\s*(\S+)", data)
            if m:
                seen.add(m.group(1))
    finally:
        s.close()


def dns_lookup(p, port, timeout=STEP_S):
    """The captive portal's DNS (device port 53: host port N+1) answers an A query with an address."""
    q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(0.5)
        deadline = time.time() + timeout
        while True:
            p.check()
            if time.time() > deadline:
                raise Failed("portal DNS: no answer")
            s.sendto(q, ("127.0.0.1", port))
            try:
                a = s.recv(512)
            except (socket.timeout, ConnectionRefusedError):
                continue
            if a[:2] == q[:2] and a[6:8] != b"\0\0":   # our id, at least one answer
                return
    finally:
        s.close()


class Notifications:
    """A GENA subscriber's callback: keeps the bodies of the NOTIFYs it receives."""

    def __init__(self):
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(4)
        self.port = self.ls.getsockname()[1]
        self.bodies = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            try:
                c.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = c.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                m = re.search(rb"(?i)content-length:\s*(\d+)", head)
                while m and len(body) < int(m.group(1)):
                    chunk = c.recv(4096)
                    if not chunk:
                        break
                    body += chunk
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                self.bodies.append(body.decode(errors="replace"))
            except OSError:
                pass
            finally:
                c.close()

    def close(self):
        self.ls.close()


def work_housekeeper(p):
    import requests
    ha = p.home_assistant()
    since = p.boot()
    p.line(r"wifi: connected to home", since)
    p.line(r"mqtt: announced (\d+) entities", since)
    cfg = p.ha_json("homeassistant/device/%s/config" % p.topic().split("/")[1], lambda d: "cmps" in d)
    if len(cfg["cmps"]) < 10:
        raise Failed("discovery: %d entities" % len(cfg["cmps"]))
    p.ha_wait(p.topic("status"), b"online")
    # commands from Home Assistant: each goes through the variable and its state comes back
    for oid, payload, want in (("app_on", "ON", lambda x: x == b"ON"), ("app_bri", "70", lambda x: x == b"70"),
                               ("app_colour", '{"state":"ON","color":{"r":0,"g":0,"b":255},"brightness":128}',
                                lambda x: json.loads(x).get("color") == {"r": 0, "g": 0, "b": 255}),
                               ("alexa_1", '{"state":"ON","brightness":40}',
                                lambda x: json.loads(x).get("brightness") == 40)):
        m = ha.mark()
        ha.send(p.topic(oid + "/set"), payload)
        p.ha_wait(p.topic(oid), want, since=m, timeout=10)
    # Alexa: SSDP discovery of the bridge and the WeMo socket, then a GENA subscription's NOTIFY
    wemo = p.dev.port + 3
    ssdp_search(p, {"http://127.0.0.1:%d/description.xml" % p.dev.port, "http://127.0.0.1:%d/setup.xml" % wemo})
    gena = Notifications()
    try:
        s = requests.Session()
        p.call(s, "SUBSCRIBE", "/upnp/event/basicevent1", port=wemo,
               headers={"CALLBACK": "<http://127.0.0.1:%d/wemo>" % gena.port, "NT": "upnp:event",
                        "TIMEOUT": "Second-300"})
        p.call(s, "POST", "/upnp/control/basicevent1", port=wemo,
               data=SOAP % ("SetBinaryState", "<BinaryState>1</BinaryState>", "SetBinaryState"),
               headers={"SOAPACTION": '"urn:Belkin:service:basicevent:1#SetBinaryState"'})
        deadline = time.time() + STEP_S
        while not [b for b in gena.bodies if "<BinaryState>1</BinaryState>" in b]:
            p.check()
            if time.time() > deadline:
                raise Failed("WeMo: no NOTIFY with the new state (got %d NOTIFYs)" % len(gena.bodies))
            time.sleep(0.05)
    finally:
        gena.close()
    # the Wi-Fi step: the network goes away (the access point and the setup portal, loaded by this
    # step, come up; its DNS answers every name) and comes back; MQTT follows
    m, since = ha.mark(), p.mark()
    p.set_wifi(False)
    p.line(r"wifi: lost the connection to home", since)
    p.line(r"wifi: setup portal on", since)
    p.ha_wait(p.topic("status"), b"offline", since=m)
    dns_lookup(p, p.dev.port + 1)
    m, since = ha.mark(), p.mark()
    p.set_wifi(True)
    p.line(r"wifi: connected to home", since)
    p.line(r"mqtt: announced", since)
    p.ha_wait(p.topic("status"), b"online", since=m)
    m = ha.mark()
    ha.send(p.topic("app_on/set"), "OFF")
    p.ha_wait(p.topic("app_on"), b"OFF", since=m, timeout=10)
    b = p.call(p.login(), "GET", "/admin/api/memory").json()["housekeeper"]
    if not b["running"] or b["errors"] or not {"wifi", "alexa", "mqtt"} <= set(b["tasks"]):
        raise Failed("housekeeper: %r" % (b,))


def work_job(p):
    ha = p.home_assistant()
    gh = p.gh
    p.line(r"wifi: connected to home", p.boot())
    s = p.login()
    # admin-job: a broker set on the admin page; MQTT and Home Assistant's modules are imported
    # and the client started in the job; then the update entity's check ("mqtt-job")
    for settings in ({"url": p.broker.url()}, {}):   # and saved again: the old client stops
        m, since = ha.mark(), p.mark()
        if not p.call(s, "PUT", "/admin/api/mqtt", json=settings).json().get("restarting"):
            raise Failed("PUT mqtt: not restarting")
        p.line(r"mqtt: announced", since)
        p.ha_json(p.topic("firmware"), lambda d: d.get("latest_version") == "0.2.0", since=m)
    # admin-job: the update button: install 0.2.0, reboot into it
    since = p.mark()
    p.call(s, "POST", "/admin/api/ota/update", json={}, want=202)
    deadline = time.time() + STEP_S
    while True:   # its progress says why, if it fails
        try:
            pr = s.get(p.dev.url("/admin/api/ota/progress"), timeout=HTTP_S).json()
        except Exception:   # rebooting
            break
        if pr["state"] in ("rebooting", "failed") or time.time() > deadline:
            break
        time.sleep(0.1)
    if pr["state"] == "failed":
        raise Failed("admin update: %s" % pr["error"])
    p.new_image("0.2.0", since)
    # mqtt-job: an install from Home Assistant's update entity (once the check at boot is done)
    m = ha.mark()
    p.ha_json(p.topic("firmware"), lambda d: d.get("installed_version") == "0.2.0"
              and d.get("release_summary") == "up to date", since=m)
    gh.add_release("acme/lamp", "0.3.0", p.image("0.3.0"))
    time.sleep(0.3)   # the check's job lets go of its slot just after publishing
    since = p.mark()
    ha.send(p.topic("firmware/set"), "install")
    p.line(r"mqtt: 0\.3\.0 installed, rebooting into it", since)
    p.new_image("0.3.0", since)
    # "ota": auto-update on, installing at once when idle: its check, its install
    m = ha.mark()
    p.ha_json(p.topic("firmware"), lambda d: d.get("installed_version") == "0.3.0"
              and d.get("release_summary") == "up to date", since=m)
    gh.add_release("acme/lamp", "0.4.0", p.image("0.4.0"))
    since = p.mark()
    p.call(p.login(), "PUT", "/admin/api/ota/settings",
           json={"auto": {"on": True, "every_hours": 24, "idle_minutes": 0}})
    p.line(r"ota: auto: 0\.4\.0 available", since)
    p.new_image("0.4.0", since)


WORK = {"web": work_web, "housekeeper": work_housekeeper, "job": work_job}


# ---- bisection ----

class Variant:
    """How the threads are sized on the host: a runtime and the app's extra environment."""

    def __init__(self, key, label, runtime, env=None, lo=LO):
        self.key, self.label, self.runtime, self.env, self.lo = key, label, runtime, env or {}, lo


class Bench:
    def __init__(self, broker, workdir, log, verbose=False):
        self.broker, self.workdir, self.log, self.verbose = broker, workdir, log, verbose
        self.probes = 0
        self._lock = threading.Lock()

    def probe(self, v, role, size, heap=HEAP, sizes=None):
        """[why of each attempt] ("ok" last if it worked) for `role` at `size`, the other roles at
        GENEROUS (or `sizes`); a failure with no sign of the stack in it is tried again once."""
        sizes = dict(sizes or dict.fromkeys(ROLES, GENEROUS), **{role: size})
        tries = []
        for _ in (1, 2):
            t0 = time.time()
            p = Probe(role, sizes, v.runtime, self.broker, self.workdir, heap, v.env)
            try:
                WORK[role](p)
                p.check()
                why, stack = "ok", False
            except Failed as e:
                why, stack = str(e), e.stack
            except Exception as e:   # a bench bug or the host's trouble: counted as a failure, said
                why, stack = "%s: %s" % (type(e).__name__, e), False
            finally:
                if self.verbose:
                    self.log("\n".join("    | " + ln for ln in p.dev.lines[-60:]))
                p.close()
            with self._lock:
                self.probes += 1
            self.log("  %-10s %-11s %5d %-6s %-4s %4.1f s  %s" % (
                v.key, role, size, heap, "ok" if why == "ok" else "FAIL", time.time() - t0,
                "" if why == "ok" else why))
            tries.append(why)
            if why == "ok" or stack:
                break
        return tries

    def minimum(self, v, role, const):
        """The smallest size in [v.lo, HI] (STEP apart) at which `role` works twice (v.lo: maybe less),
        or None when HI does not do. The board's constant first, then the bottom, then bisection; the
        size found is probed again (a deeper path may come with other timing) and, while that fails,
        the next size up."""
        sizes = list(range(v.lo, HI + 1, STEP))
        results = {}

        def ok(i):
            if sizes[i] not in results:
                results[sizes[i]] = self.probe(v, role, sizes[i])[-1] == "ok"
            return results[sizes[i]]

        start = min(range(len(sizes)), key=lambda i: abs(sizes[i] - (const or HI)))
        if ok(start):
            lo, hi = -1, start          # hi: the smallest known to work; lo: known (or assumed) to fail
            if start > 0:
                if ok(0):
                    hi = 0
                else:
                    lo = 0
        else:
            if start == len(sizes) - 1 or not ok(len(sizes) - 1):
                return None
            lo, hi = start, len(sizes) - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if ok(mid):
                hi = mid
            else:
                lo = mid
        for i in range(hi, len(sizes)):
            if (results.get(sizes[i]) or self.probe(v, role, sizes[i])[-1] == "ok") \
                    and self.probe(v, role, sizes[i])[-1] == "ok":
                return sizes[i]
        return None


def variants(firmware, pypi):
    import mpcode
    out = [Variant("sim", "as the simulator sizes threads (2x + 8 KB port margin + 16 KB for imports)", firmware),
           Variant("bare", "bare 2x (+ the port's 8 KB margin): no import allowance, so nested imports cost the "
                           "host's 4 KB PATH_MAX each (the chip: 128 bytes)", firmware,
                   {"IOTUTILS_STACK_HOST_IMPORTS": "0"}),
           Variant("preloaded", "bare 2x, every toolbox module imported at boot by the main thread: the roles' "
                                "own frames only", firmware,
                   {"IOTUTILS_STACK_HOST_IMPORTS": "0", "IOTUTILS_PRELOAD": ",".join(mpcode.preload_modules())})]
    if pypi:
        out.append(Variant("pypi", "PyPI micropython (.venv/bin/micropython), sized as the simulator does", pypi))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--roles", default=",".join(ROLES), help="comma-separated: web, housekeeper, job")
    ap.add_argument("--parallel", type=int, default=3, help="probes (devices) at the same time (default 3)")
    ap.add_argument("--pypi", action="store_true",
                    help="also bisect on the PyPI micropython (.venv/bin/micropython), sized as the simulator does")
    ap.add_argument("--one", metavar="ROLE:SIZE[:HEAP[:VARIANT]]",
                    help="one probe, its console printed (for working on the bench)")
    args = ap.parse_args()
    roles = [r for r in args.roles.split(",") if r]
    firmware = os.path.abspath(os.environ.get("FIRMWARE") or os.path.join(ROOT, "build", "unix", "micropython"))
    if not os.path.exists(firmware):
        print("bench_stack: no host firmware at %s (make BOARD=UNIX MICROPY_DIR=<tree>, or FIRMWARE=...): the "
              "stacks are measured on the firmware, where the toolbox is frozen as on the chip" % firmware)
        return 0
    import mosquitto
    if not mosquitto.available():
        print("bench_stack: no mosquitto (Debian package mosquitto): MQTT is part of every role's work")
        return 0
    try:
        import cryptography  # noqa: F401  (the fake GitHub signs releases)
        import paho.mqtt  # noqa: F401
        import requests  # noqa: F401
    except ImportError as e:
        print("bench_stack: %s (make setup installs the bench's packages)" % e)
        return 0
    pypi = os.path.join(ROOT, ".venv", "bin", "micropython")
    vs = variants(firmware, pypi if args.pypi and os.path.exists(pypi) else None)
    const = board_constants()
    workdir = tempfile.mkdtemp(prefix="benchstack-")
    lock = threading.Lock()

    def log(msg):
        with lock:
            print(msg, flush=True)

    broker = mosquitto.Mosquitto(os.path.join(workdir, "mqtt")).start()
    try:
        if args.one:
            role, size, heap, key = (args.one + "::").split(":")[:4]
            v = [x for x in vs if x.key == (key or "sim")][0]
            Bench(broker, workdir, log, verbose=True).probe(v, role, int(size), heap or HEAP)
            return 0
        return run(args, roles, vs, const, broker, workdir, log)
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def run(args, roles, vs, const, broker, workdir, log):
    import concurrent.futures
    t0 = time.time()
    print("host firmware: %s; %s" % (vs[0].runtime, ", ".join("%s = %s" % (k, v) for k, v in sorted(
        {CONST[r]: const[r] for r in ROLES}.items()))))
    for v in vs:
        print("  %-10s %s" % (v.key, v.label))
    print("each role bisected between %d and %d in %d-byte steps (the other roles at %d, heap %s); first the "
          "board as shipped (its constants, heap %s)" % (LO, HI, STEP, GENEROUS, HEAP, BOARD_HEAP), flush=True)
    bench = Bench(broker, workdir, log)
    # jobs take the longest: first, so that the others fill in beside them
    order = sorted(roles, key=lambda r: r != "job")
    tasks = [("shipped", r) for r in order] + [(v, r) for r in order for v in vs]
    found, shipped = {}, {}

    def one(task):
        v, role = task
        if v == "shipped":
            shipped[role] = bench.probe(vs[0], role, const[role], BOARD_HEAP, const)
        else:
            found[v.key, role] = bench.minimum(v, role, const[role])

    with concurrent.futures.ThreadPoolExecutor(max(1, args.parallel)) as ex:
        for f in [ex.submit(one, t) for t in tasks]:
            f.result()
    report(roles, vs, const, found, shipped, bench.probes, time.time() - t0)
    return 0


def kb(n):
    return "%.1f KB" % (n / 1024.0)


def fmt(v, got):
    if got is None:
        return "> %d" % HI
    return "<= %d" % got if got <= v.lo else "%d" % got


def report(roles, vs, const, found, shipped, probes, seconds):
    print()
    print("Thread stacks, the chip's bytes: the smallest each role's deepest work succeeds with, twice (host firmware)")
    cols = "".join(" %10s" % v.key for v in vs)
    print("  %-12s%s  %-26s %-14s %s" % ("role", cols, "board constant", "margin", "verdict"))
    for role in roles:
        c = const[role]
        row = "".join(" %10s" % fmt(v, found.get((v.key, role))) for v in vs)
        # the chip's need: the 'preloaded' figure (the roles' own frames; an import on the chip costs
        # ~128 bytes, not the host's 4 KB), else the first column measured
        base = next((v for v in vs if v.key == "preloaded"), vs[0])
        got = found.get((base.key, role))
        if got is None:
            margin, verdict = "-", "SHORT"
        else:
            margin = ">= %+d" % (c - got) if got <= base.lo else "%+d" % (c - got)
            verdict = "ok" if c >= got else "SHORT"
        above = [v.key for v in vs if v is not base and v.key != "bare"
                 and (found.get((v.key, role), 0) is None or found.get((v.key, role), 0) > c)]
        if above:
            verdict += " (%s: more than the constant)" % ", ".join(above)
        print("  %-12s%s  %-26s %-14s %s" % (role, row, "%s = %d" % (CONST[role], c), margin, verdict))
    print("  margin and verdict: the 'preloaded' column, the closest to the chip ('bare' is an upper bound: every")
    print("  nested import costs 4 KB of stack on the host, 128 bytes on the chip; 'sim' is what every simulated")
    print("  device and test runs with: within about 1 KB of the chip's need)")
    print("  not measured: the TLS handshake's stack (an mqtts:// broker, an OTA download over HTTPS): the host's")
    print("  TLS is not the chip's mbedTLS build; it is why the housekeeper and the jobs carry more margin")
    web_n = 3   # Device(): the board's two workers (hal.WEB_WORKERS) and the poll loop
    board = web_n * const["web"] + const["housekeeper"]
    # Device.run() runs the housekeeping in the main task; a program with a loop of its own (start())
    # has the housekeeper's thread: the figure below is that case, the larger one
    print("  whole device, resident thread stacks (%d web x WEB_STACK + housekeeper, as with Device.start(); "
          "Device.run() has no housekeeper thread): board %s;" % (web_n, kb(board)))
    for v in vs:
        w, h = found.get((v.key, "web"), 0), found.get((v.key, "housekeeper"), 0)
        if w and h and "web" in roles and "housekeeper" in roles:
            need = web_n * w + h
            print("    at the %-10s minimums %s%s (board %+.1f KB)" % (
                v.key, "<= " if v.lo in (w, h) else "", kb(need), (board - need) / 1024.0))
    print("  the board as shipped (its three constants, heap %s), each role's work once:" % BOARD_HEAP)
    for role in roles:
        tries = shipped.get(role) or ["not run"]
        print("    %-12s %s" % (role, "ok" if tries == ["ok"] else "; ".join(
            ("attempt %d: %s" % (i + 1, t)) for i, t in enumerate(tries))))
    print("  (%d probes, %.0f s)" % (probes, seconds))


if __name__ == "__main__":
    sys.exit(main())
