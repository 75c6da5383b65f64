# The OTA's HTTP(S) client: streaming GET with redirects (the token never follows a redirect to another
# origin), Content-Length and chunked bodies, a timeout on every read, and GitHub's error answers
# (rate limits, 404) as clear OTAErrors. TLS always verifies the server (the bundled roots, or the
# certificates given), on a clock set by NTP; plain http only when the owner allowed it.
import errno
import json
import select
import socket
import sys

import iotutils.hal as hal
from iotutils.auth import der_certs
from iotutils._compat import ticks_add, ticks_diff, ticks_ms
from iotutils.ota.state import OTAError

_ERR_BODY = const(300)
_SLICE_S = 0.25   # MicroPython socket reads wait at most this long at a time (see _Response)
_MAX_LINE = const(2048)        # longest response head line (GitHub's are well under 1 KB)
_MAX_HEAD_LINES = const(64)    # most header lines in a response head
# MicroPython: every socket non-blocking and polled (plain and TLS alike), the time counted here
_MP = sys.implementation.name == "micropython"


def split_url(url):
    if url.startswith("http://"):
        scheme, rest, port = "http", url[7:], 80
    elif url.startswith("https://"):
        scheme, rest, port = "https", url[8:], 443
    else:
        raise OTAError("unsupported URL %r (http:// or https:// only)" % url[:80])
    if min(url.encode()) <= 0x20 or "\x7f" in url:   # (it goes into a request line as it is)
        raise OTAError("URL with a space or a control character: %r" % url[:80])
    i = rest.find("/")
    host, path = (rest, "/") if i < 0 else (rest[:i], rest[i:])
    if ":" in host:
        host, p = host.rsplit(":", 1)
        if not p.isdigit() or not 0 < int(p) < 65536 or host.startswith("["):
            raise OTAError("bad host or port in URL %r" % url[:80])
        port = int(p)
    if not host:
        raise OTAError("no host in URL %r" % url[:80])
    return scheme, host, port, path


def join_url(base, loc):
    """Where a redirect's Location leads from base: absolute, scheme-relative (//host/path),
    absolute-path or relative."""
    if loc.startswith("http://") or loc.startswith("https://"):
        return loc
    scheme, host, port, path = split_url(base)
    if loc.startswith("//"):
        return scheme + ":" + loc
    if "://" in loc.split("/", 1)[0] or loc.split("/", 1)[0].endswith(":"):
        raise OTAError("unsupported URL %r (http:// or https:// only)" % loc[:80])
    if loc.startswith("/"):
        return "%s://%s:%d%s" % (scheme, host, port, loc)
    return "%s://%s:%d%s/%s" % (scheme, host, port, path.rsplit("/", 1)[0], loc)


class _Response:
    """One HTTP response; read the body with readinto()/read_all(). close() when done."""

    def __init__(self, sock, stream, url, timeout, raw=None, until=None):
        self.sock = sock
        self.f = stream
        self.status = None
        self.headers = {}
        self.url = url
        self.timeout = timeout
        self.until = until   # ticks_ms by which everything must be read (None: no overall limit)
        # MicroPython: a non-blocking socket, polled in short slices, the time counted here. A
        # blocking read with a timeout loses what it read when the timeout strikes part-way (the
        # stream layer raises instead of returning the count), and the unix port restarts
        # SO_RCVTIMEO whenever a signal interrupts it (another thread's GC does).
        self._sliced = _MP or stream is sock
        self._raw = raw or sock   # TLS: the socket under the TLS stream
        if self._sliced:
            self._raw.setblocking(False)
        self._poll = None
        self.chunked = False
        self.length = None
        self._left = None
        self._eof = False

    def _head(self, host):
        # status line and header fields: at most _MAX_HEAD_LINES lines of _MAX_LINE bytes each,
        # and all of it within `timeout` (a server sending a byte a second must not hold us)
        line = self._readline()
        if not line:
            raise OTAError("no response from %s" % host)
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise OTAError("bad HTTP status line from %s: %r" % (host, line[:40]))
        self.status = int(parts[1])
        headers = self.headers
        for _ in range(_MAX_HEAD_LINES):
            h = self._readline()
            if not h:
                raise OTAError("connection closed in the response head from %s" % host)
            if h in (b"\r\n", b"\n"):
                break
            try:
                k, _, v = h.decode().partition(":")
            except UnicodeError:
                continue  # a header we do not use, in some other encoding
            headers[k.strip().lower()] = v.strip()
        else:
            raise OTAError("more than %d header lines from %s" % (_MAX_HEAD_LINES, host))
        te = headers.get("transfer-encoding", "").lower()
        self.chunked = "chunked" in te
        cl = headers.get("content-length")
        self.length = None
        if cl is not None and not self.chunked:
            # a length that is not a number ("-1", "12, 13") is a broken or hostile server: the
            # device's own server refuses the same with a 400
            if not cl.strip().isdigit():
                raise OTAError("bad Content-Length %r from %s" % (cl[:24], host))
            self.length = int(cl)
        self._left = 0 if self.chunked else self.length   # bytes left (length body) or in the chunk

    def _raw_readinto(self, mv):
        t0 = ticks_ms()
        while True:
            try:
                # (CPython's buffered readinto waits until mv is full: readinto1 gives what came, as
                # MicroPython's does, so a trickle is seen byte by byte)
                n = self.f.readinto1(mv) if hasattr(self.f, "readinto1") else self.f.readinto(mv)
            except OSError as e:
                if not self._sliced or e.args[0] not in (errno.ETIMEDOUT, errno.EAGAIN):
                    raise
                n = None
            if n is not None:  # (a non-blocking stream gives None while nothing is there)
                return n
            now = ticks_ms()
            if ticks_diff(now, t0) >= self.timeout * 1000:
                raise OTAError("network: no data for %s s from %s" % (self.timeout, self.url))
            if self.until is not None and ticks_diff(now, self.until) >= 0:
                raise OTAError("network: %s is too slow (it sends, but not enough in time)" % self.url)
            if self._poll is None:
                self._poll = select.poll()
                self._poll.register(self._raw, select.POLLIN)
            self._poll.poll(int(_SLICE_S * 1000))

    def _readline(self):
        if not self._sliced:
            line = self.f.readline(_MAX_LINE + 1)
        else:
            line = bytearray()
            one = bytearray(1)
            while len(line) <= _MAX_LINE:
                if not self._raw_readinto(one):
                    break
                line += one
                if one[0] == 0x0A:
                    break
        if len(line) > _MAX_LINE:
            raise OTAError("a line longer than %d bytes from %s" % (_MAX_LINE, self.url))
        if self.until is not None and ticks_diff(ticks_ms(), self.until) >= 0:
            raise OTAError("network: %s is too slow (it sends, but not enough in time)" % self.url)
        return bytes(line)

    def readinto(self, mv):
        """Up to len(mv) body bytes into mv; 0 at the end. Raises OTAError on a short body."""
        if self._eof:
            return 0
        if self.chunked:
            if not self._left:
                line = self._readline()
                if not line:
                    raise OTAError("download truncated (chunked body ended early)")
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise OTAError("bad chunk size line %r" % line[:20])
                if size == 0:
                    while True:  # trailer section up to the empty line
                        t = self._readline()
                        if not t or t in (b"\r\n", b"\n"):
                            break
                    self._eof = True
                    return 0
                self._left = size
            n = self._raw_readinto(mv[:min(len(mv), self._left)])
            if not n:
                raise OTAError("download truncated (connection closed inside a chunk)")
            self._left -= n
            if not self._left:
                self._readline()  # CRLF after the chunk data
            return n
        if self._left is None:  # read until close
            n = self._raw_readinto(mv)
            if not n:
                self._eof = True
            return n
        if not self._left:
            self._eof = True
            return 0
        n = self._raw_readinto(mv[:min(len(mv), self._left)])
        if not n:
            raise OTAError("download truncated: %d of %d bytes missing" % (self._left, self.length))
        self._left -= n
        return n

    def read_all(self, limit):
        """The whole body as a bytearray (not copied into bytes: an answer near `limit` would
        need its room twice). A body the heap cannot hold is an OTAError, as one over `limit` is:
        whoever serves it, a caller that catches OTAError must not die of it."""
        try:
            out = bytearray()
            mv = memoryview(bytearray(1024))
            while True:
                n = self.readinto(mv)
                if not n:
                    return out
                out += mv[:n]
                if len(out) > limit:
                    raise OTAError("response from %s larger than %d bytes" % (self.url, limit))
        except MemoryError:
            out = None
            raise OTAError("response from %s does not fit in memory" % self.url)

    def close(self):
        try:
            if self.f is not self.sock:
                self.f.close()  # CPython's makefile() holds the descriptor open too
            self.sock.close()
        except Exception:
            pass


class Http:
    """A small streaming HTTP/1.1 GET client: redirects, Content-Length and chunked bodies, timeouts."""

    #: seconds a connect or read may block; a response head must arrive within it, whole
    timeout = 15
    #: seconds a small answer (a release's JSON, ota.json, an app file) may take in all: a server
    #: that keeps sending a byte now and then must not hold a check (the image download has the
    #: installer's OTA.deadline_s)
    small_answer_s = 60
    #: redirects followed before giving up (GitHub assets redirect once, to another host)
    max_redirects = 5
    user_agent = "iotutils-ota"

    def __init__(self, token=None, cadata=None, allow_http=False, token_for=None):
        self.token = token
        # the origin (an URL of it) the token belongs to: the API's. Sent nowhere else, not even to a
        # host an unsigned ota.json names as the image's (None: the first URL asked for)
        self.token_for = split_url(token_for)[:3] if token_for else None
        # CA certificates (PEM text or DER, one or many) the server must chain to; None: the bundled
        # roots GitHub's hosts chain to (iotutils/ota/roots.py). A server is always verified.
        self.cadata = cadata
        self.allow_http = allow_http  # plain http: only when the owner said so (a LAN test server)

    def _open(self, scheme, host, port):
        """(stream, raw socket): the TLS stream over the socket for https, else the socket twice."""
        if scheme == "https" and not hal.time_ok() and not hal.sync_time():
            # a clock at its epoch makes every certificate look not yet valid: nothing is verified
            # on it, and nothing is downloaded without verification
            raise OTAError("the clock is not set (no NTP answer): cannot check %s's certificate" % host)
        ai = hal.getaddrinfo(host, port)[0]
        raw = socket.socket(ai[0], socket.SOCK_STREAM)
        try:
            raw.settimeout(self.timeout)
            raw.connect(ai[-1])
            if _MP:
                # the TLS handshake happens in the request's write, within its deadline: a blocking
                # one's timeout restarts at every signal on the unix port (another thread's GC)
                raw.setblocking(False)
            s = self._tls(raw, host) if scheme == "https" else raw
        except Exception:
            raw.close()
            raise
        return s, raw

    def _tls(self, s, host):
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.cadata:
            certs = der_certs(self.cadata)
        else:
            from iotutils.ota.roots import ROOTS

            certs = ROOTS
        for der in certs:  # one at a time: MicroPython's ssl parses one DER certificate per call
            ctx.load_verify_locations(cadata=der)
        ctx.verify_mode = ssl.CERT_REQUIRED
        if hasattr(ctx, "check_hostname"):
            ctx.check_hostname = True  # (MicroPython checks the name given as server_hostname)
        if _MP:
            return ctx.wrap_socket(s, server_hostname=host, do_handshake_on_connect=False)
        return ctx.wrap_socket(s, server_hostname=host)

    def get(self, url, accept=None, small=False):
        """GET url following redirects; returns a _Response with status 2xx, else raises OTAError.
        small: a small answer, to be read whole within small_answer_s (redirects included)."""
        auth = self.token if self.token_for is None or split_url(url)[:3] == self.token_for else None
        until = ticks_add(ticks_ms(), self.small_answer_s * 1000) if small else None
        for _ in range(self.max_redirects + 1):
            scheme, host, port, path = split_url(url)
            if scheme == "http" and not self.allow_http:
                # an http: source (or a redirect to one) is readable and changeable by anyone on the
                # path; the release's signature would still be checked, but we do not even ask
                raise OTAError("refusing plain http:// (%s): use https://, or allow_http=True for a "
                               "server on your own network" % url)
            try:
                resp = self._request(scheme, host, port, path, accept, auth, until)
            except OSError as e:
                raise OTAError("network error talking to %s:%d: %s" % (host, port, e))
            except ValueError as e:  # MicroPython's ssl reports a failed certificate check so
                raise OTAError("TLS error talking to %s:%d: %s" % (host, port, str(e).strip()))
            if resp.status in (301, 302, 303, 307, 308):
                loc = resp.headers.get("location")
                resp.close()
                if not loc:
                    raise OTAError("redirect without Location from %s" % url)
                new = join_url(url, loc)
                if split_url(new)[:3] != (scheme, host, port):
                    auth = None  # never hand the token to another origin (the asset host)
                url = new
                continue
            if 200 <= resp.status < 300:
                return resp
            raise _http_error(resp)
        raise OTAError("too many redirects (> %d) for %s" % (self.max_redirects, url))

    def _request(self, scheme, host, port, path, accept, auth, until=None):
        s, raw = self._open(scheme, host, port)
        try:
            hostport = host if port in (80, 443) else "%s:%d" % (host, port)
            req = "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\nConnection: close\r\n" % (
                path, hostport, self.user_agent)
            if accept:
                req += "Accept: %s\r\n" % accept
            if auth:
                req += "Authorization: Bearer %s\r\n" % auth
            req = (req + "\r\n").encode()
            head_by = ticks_add(ticks_ms(), self.timeout * 1000)
            if until is not None and ticks_diff(until, head_by) < 0:
                head_by = until
            if _MP:
                _send_by(s, raw, req, head_by, host)
            elif hasattr(s, "sendall"):
                s.sendall(req)
            else:
                s.write(req)
            f = s if hasattr(s, "readline") else s.makefile("rb")  # MicroPython streams / CPython sockets
            resp = _Response(s, f, "%s://%s%s" % (scheme, hostport, path), self.timeout, raw, head_by)
            resp._head(host)
            resp.until = until
            return resp
        except Exception:
            s.close()
            raise


def _send_by(s, raw, data, by, host):
    # all of data on a non-blocking (TLS) stream by ticks `by`; the TLS handshake, if not done yet,
    # happens in here: while it runs, a write takes nothing and the stream waits for the server
    mv = memoryview(data)
    off = 0
    p = None
    while off < len(data):
        try:
            k = s.write(mv[off:])
        except OSError as e:
            if e.args[0] not in (errno.EAGAIN, errno.ETIMEDOUT):
                raise
            k = None
        if k:
            off += k
            continue
        if ticks_diff(ticks_ms(), by) >= 0:
            raise OTAError("network: %s did not take the request in time (or its TLS handshake)" % host)
        if p is None:
            # (POLLIN alone: the socket is writable all along while the handshake waits to read)
            p = select.poll()
            p.register(raw, select.POLLIN)
        p.poll(50)


def _http_error(resp):
    h = resp.headers
    msg = ""
    if resp.until is None:   # its body is read within the time a head has
        resp.until = ticks_add(ticks_ms(), resp.timeout * 1000)
    try:
        raw = resp.read_all(_ERR_BODY * 20)[:_ERR_BODY]
        try:
            msg = json.loads(raw).get("message", "")
        except Exception:
            msg = raw.decode().strip()[:120]
    except Exception:
        pass
    resp.close()
    if resp.status == 429 or (resp.status == 403 and (h.get("x-ratelimit-remaining") == "0" or
                                                       "rate limit" in msg.lower())):
        when = ""
        if h.get("retry-after"):
            when = "; retry after %s s" % h["retry-after"]
        elif h.get("x-ratelimit-reset"):
            when = "; the limit resets at unix time %s" % h["x-ratelimit-reset"]
        return OTAError("GitHub rate limit exceeded (HTTP %d)%s%s" % (
            resp.status, when, " (use a token)" if resp.status == 403 else ""))
    if resp.status == 404:
        return OTAError("not found (HTTP 404): %s%s" % (resp.url, (": " + msg) if msg else ""))
    return OTAError("HTTP %d from %s%s" % (resp.status, resp.url, (": " + msg) if msg else ""))
