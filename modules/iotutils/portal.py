# The setup portal: a small phone-friendly page to pick a network, and a captive-portal DNS server
# that sends every name to the device while its access point is up.
#
#   portal = Portal(app, wifi, on_saved=None)   # routes on a WebServer; wifi.start() (de)activates it
#
# Routes: /setup (GET page, POST form or JSON), /setup/status (JSON), /setup/scan (JSON), "/" while the
# portal is active or nothing is configured, and the operating systems' connectivity probes: while the
# portal is active they are redirected to the setup page (which makes phones and laptops open their
# "sign in to network" window); otherwise they get the answer each OS takes as "online".
# The admin password it sets is hashed and checked by iotutils.auth, shared with the admin page.
# The pages themselves (portal_pages.py) load at the first request for one: until a phone opens the
# portal, a device holds only the DNS server, the probes' answers and the captive hooks.
import socket

from iotutils import hal
from iotutils._compat import allocate_lock, load, log, ready

try:
    import select
except ImportError:  # pragma: no cover
    select = None

_DNS_MAX = const(512)       # classic DNS over UDP: larger queries are not ours to answer
_DNS_HEADER = const(12)
_TYPE_A = const(1)
_TYPE_AAAA = const(28)
_CLASS_IN = const(1)
_RCODE_NOTIMP = const(4)



# ---- captive DNS ----

def dns_reply(pkt, ip, ttl=10):
    """The answer to DNS query `pkt` (bytes): A -> `ip` (4 bytes), any other type -> no answers,
    other opcodes -> NOTIMP. None for anything that is not a well-formed single-question query."""
    n = len(pkt)
    if n < _DNS_HEADER or n > _DNS_MAX:
        return None
    flags = pkt[2] << 8 | pkt[3]
    if flags & 0x8000:
        return None  # a response, not a query
    qd = pkt[4] << 8 | pkt[5]
    opcode = (flags >> 11) & 15
    if opcode != 0:
        return bytes(pkt[0:2]) + bytes(((0x80 | (flags >> 8) & 0x79), _RCODE_NOTIMP)) + bytes(8)
    if qd != 1:
        return None
    i = _skip_name(pkt, _DNS_HEADER, False)
    if i < 0 or i + 4 > n:
        return None
    qtype = pkt[i] << 8 | pkt[i + 1]
    qclass = pkt[i + 2] << 8 | pkt[i + 3]
    end = i + 4
    # the other sections (an EDNS OPT record in practice) must be whole, with nothing after them
    j = end
    for _ in range((pkt[6] << 8 | pkt[7]) + (pkt[8] << 8 | pkt[9]) + (pkt[10] << 8 | pkt[11])):
        j = _skip_name(pkt, j, True)
        if j < 0 or j + 10 > n:
            return None
        j += 10 + (pkt[j + 8] << 8 | pkt[j + 9])
        if j > n:
            return None
    if j != n:
        return None
    answer = qtype == _TYPE_A and qclass == _CLASS_IN
    # QR, AA, RD copied, RA; NOERROR; one question, one or no answer
    head = bytes((pkt[0], pkt[1], 0x84 | (pkt[2] & 0x01), 0x80, 0, 1, 0, 1 if answer else 0, 0, 0, 0, 0))
    out = head + bytes(pkt[_DNS_HEADER:end])
    if answer:
        out += bytes((0xC0, 0x0C, 0, _TYPE_A, 0, _CLASS_IN, (ttl >> 24) & 255, (ttl >> 16) & 255,
                      (ttl >> 8) & 255, ttl & 255, 0, 4)) + bytes(ip)
    return out


def _skip_name(pkt, i, pointers):
    """The offset after the domain name at pkt[i:], or -1 if it is malformed."""
    n = len(pkt)
    total = 0
    while i < n:
        ln = pkt[i]
        if ln == 0:
            return i + 1
        if ln >= 0xC0:  # a compression pointer ends the name (never in a question)
            return i + 2 if pointers and i + 2 <= n else -1
        if ln > 63:
            return -1
        total += ln + 1
        if total > 255:
            return -1
        i += ln + 1
    return -1


def ip_bytes(ip):
    parts = ip.split(".")
    if len(parts) != 4:
        raise ValueError("ip: dotted quad expected")
    return bytes(int(p) for p in parts)


class DNSServer:
    """Answers every A query with one address (the captive portal). Non-blocking: serve(timeout_ms)
    handles what has arrived (waiting up to timeout_ms for the first packet)."""

    #: most queries answered per serve() call: a flood cannot starve the caller
    max_per_call = 16
    #: TTL (s) of the answers: short, so names resolve normally soon after setup
    ttl = 10

    def __init__(self, ip, port, bind_ip):
        self.ip = ip_bytes(ip)
        self.port = port
        self.bind_ip = bind_ip or ip
        self.sock = None
        self._lock = allocate_lock()
        self._poll = None
        self.answered = 0

    def open(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(socket.getaddrinfo(self.bind_ip, self.port)[0][-1])
            s.setblocking(False)
        except OSError:
            s.close()
            raise
        self.sock = s
        if select is not None and hasattr(select, "poll"):
            self._poll = select.poll()
            self._poll.register(s, select.POLLIN)
        return self

    def close(self):
        with self._lock:
            s = self.sock
            self.sock = None
            self._poll = None
        if s is not None:
            s.close()

    def serve(self, timeout_ms=0):
        """Answer pending queries; returns how many were answered."""
        if not self._lock.acquire(0):
            return 0  # another thread is serving
        try:
            s = self.sock
            if s is None:
                return 0
            p = self._poll
            count = 0
            for i in range(self.max_per_call):
                # asked first: a recvfrom() that finds nothing costs a buffer and an exception,
                # and the housekeeping asks several times a second
                if p is not None and not ready(p, 0 if i else timeout_ms):
                    break
                try:
                    pkt, addr = s.recvfrom(_DNS_MAX + 1)
                except OSError:
                    break  # nothing more (EAGAIN)
                try:
                    reply = dns_reply(pkt, self.ip, self.ttl)
                except (IndexError, ValueError):
                    reply = None
                if reply is None:
                    continue
                try:
                    s.sendto(reply, addr)
                    count += 1
                except OSError:
                    pass
            self.answered += count
            return count
        finally:
            self._lock.release()


# ---- the setup page ----

# OS connectivity probes: (path, what answers "online" outside the portal)
_FIREFOX = const('<meta http-equiv="refresh" content="0;url=https://support.mozilla.org/kb/captive-portal"/>\n')
_APPLE = const("<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>")
_PROBES = const((
    ("/generate_204", "", 204, "text/plain"),                        # Android, Chrome OS
    ("/gen_204", "", 204, "text/plain"),
    ("/hotspot-detect.html", _APPLE, 200, "text/html"),              # Apple
    ("/library/test/success.html", _APPLE, 200, "text/html"),
    ("/connecttest.txt", "Microsoft Connect Test", 200, "text/plain"),   # Windows 10+
    ("/ncsi.txt", "Microsoft NCSI", 200, "text/plain"),                  # Windows 7+
    ("/redirect", "", 204, "text/plain"),                                # Windows opens this one
    ("/canonical.html", _FIREFOX, 200, "text/html"),                     # Firefox
    ("/success.txt", "success\n", 200, "text/plain"),
    ("/check_network_status.txt", "NetworkManager is online\n", 200, "text/plain"),  # GNOME/Ubuntu
    ("/kindle-wifi/wifistub.html", "81ce4465-7167-4dcb-835b-dcc9e44c112a", 200, "text/html"),
))


def _probe_of(path):
    # (a tuple of constants, frozen with the code: a dict of them was 300 bytes of heap, host)
    for probe in _PROBES:
        if probe[0] == path:
            return probe
    return None


class Portal:
    """The setup portal on WebServer `app` for Wifi `wifi`. on_saved(info) is called after a setup
    was saved, info = {"ssid", "name"}."""

    #: most networks listed on the page (keeps it under 8 KB)
    max_listed = 12
    #: shortest admin password accepted
    min_admin_password = 8

    def __init__(self, app, wifi, on_saved=None, name=None):
        self.app = app
        self.wifi = wifi
        self.on_saved = on_saved
        self.active = False
        self.ip = None
        self.dns = None
        self._admin = None
        self._name = name   # the device name's PersistentStr (Device gives its own: the form shows it)
        pages = self._pages   # one bound method for the four routes
        app.add_route("/setup", pages, ("GET", "POST"))
        for path in ("/setup/status", "/setup/scan", "/setup/result"):
            app.add_route(path, pages, ("GET",))
        # before: answers the OS probes (no route each: eleven routes would cost ~2 KB of heap) and
        # overrides the app's own "/" while in AP mode; after: catches what no route matched
        if hasattr(app, "before_request"):
            app.before_request(self._captive)
        else:
            for probe in _PROBES:
                app.add_route(probe[0], self._probe, ("GET", "HEAD"))
        if hasattr(app, "after_request"):
            app.after_request(self._captive_404)
        else:
            app.add_route("/", self._front, ("GET",))
        wifi.attach_portal(self)

    # ---- state ----
    def activate(self, ip):
        """The AP is up: answer DNS and the probes as a captive portal."""
        self.ip = ip
        self.active = True
        if self.dns is None:
            bind = "0.0.0.0" if getattr(hal, "PLATFORM", "") == "esp32" else ip
            try:
                self.dns = DNSServer(ip, hal.port(53), bind).open()
            except OSError as e:
                log("portal: no DNS server:", e)
                self.dns = None

    def deactivate(self):
        self.active = False
        d = self.dns
        self.dns = None
        if d is not None:
            d.close()

    def serve_dns(self, timeout_ms):
        d = self.dns
        if d is None:
            if timeout_ms:
                import time
                time.sleep(timeout_ms / 1000)
            return 0
        return d.serve(timeout_ms)

    def url(self, path="/setup"):
        ip = self.ip or hal.ip()
        p = hal.port(80)
        return "http://%s%s%s" % (ip, "" if p == 80 else ":%d" % p, path)

    def _store(self):
        if self._admin is None:
            from iotutils.persist import PersistentStr
            self._admin = PersistentStr("pwhash", default="", folder="admin", max_length=160)
            if self._name is None:
                self._name = PersistentStr("name", default="iotutils", folder="device", max_length=32)
        return self._admin, self._name

    # ---- hooks and probes ----
    def _own_host(self, req):
        host = req.headers.get("host", "")
        if host.startswith("["):
            return True  # an IPv6 literal: ours
        host = host.split(":")[0].lower()
        if not host or host == self.ip or host == hal.ip():
            return True
        h = self.wifi.hostname()
        return host in (h, h + ".local")

    def _captive(self, req):
        path = req.path
        if req.method in ("GET", "HEAD") and _probe_of(path) is not None:
            return self._probe(req)
        if path == "/" and (self.active or not self.wifi.configured()) and req.method in ("GET", "HEAD"):
            return self._front(req)
        if self.active and not self._own_host(req) and not path.startswith("/setup"):
            return self.redirect()
        return None

    def _captive_404(self, req, resp):
        if resp.status == 404:
            return self._captive(req)
        return None

    def _pages(self, req, front=False):
        # the page code loads at the first request for a page (portal_pages.py)
        return load("iotutils.portal_pages").handle(self, req, front)

    def _front(self, req):
        return self._pages(req, True)

    def redirect(self):
        """A 302 to the setup page at the device's own address (the captive portal's answer)."""
        from iotutils.web.response import Response
        url = self.url()
        return Response('<a href="%s">Wi-Fi setup</a>' % url, 302, {"Location": url, "Cache-Control": "no-store"})

    def _probe(self, req):
        if self.active:
            return self.redirect()
        from iotutils.web.response import Response
        _, body, status, ctype = _probe_of(req.path)
        return Response(body, status, {"Cache-Control": "no-store"}, ctype)

def default_portal(wifi, app=None):
    """The setup portal for `wifi` on `app` (a WebServer on port 80 is made and started if None);
    None when no web server can be had (port 80 taken by a server the app did not hand over)."""
    if app is None:
        from iotutils.web.engine import WebServer

        app = WebServer(port=80, workers=2)
        try:
            app.start()
        except OSError as e:
            log("wifi: cannot start the portal's web server:", e)
            return None
    return Portal(app, wifi)


def __getattr__(name):
    if name == "__all__":
        from iotutils._compat import public_names
        return public_names(globals(), ("Denied", "hash_password", "verify_password"))
    # names this module had before its pages moved out (portal_pages.py, passwords.py)
    if name == "Denied":
        from iotutils.portal_pages import Denied
        return Denied
    if name in ("hash_password", "verify_password"):
        return getattr(load("iotutils.passwords"), name)
    raise AttributeError(name)
