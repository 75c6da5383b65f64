# The OTA's HTTP(S) client: streaming GET with redirects (the token never follows a redirect to another
# origin), Content-Length and chunked bodies, a timeout on every read, and GitHub's error answers
# (rate limits, 404) as clear OTAErrors. TLS always verifies the server (the bundled roots, or the
# certificates given), on a clock set by NTP; plain http only when the owner allowed it.
import errno
import json
import socket

import iotutils.hal as hal
from iotutils._compat import const, ticks_diff, ticks_ms
from iotutils.ota.state import OTAError

_ERR_BODY = const(300)
_SLICE_S = 0.25   # MicroPython socket reads wait at most this long at a time (see _Response)


def split_url(url):
    if url.startswith("http://"):
        scheme, rest, port = "http", url[7:], 80
    elif url.startswith("https://"):
        scheme, rest, port = "https", url[8:], 443
    else:
        raise OTAError("unsupported URL %r (http:// or https:// only)" % url)
    i = rest.find("/")
    host, path = (rest, "/") if i < 0 else (rest[:i], rest[i:])
    if ":" in host:
        host, p = host.rsplit(":", 1)
        port = int(p)
    return scheme, host, port, path


def join_url(base, loc):
    if loc.startswith("http://") or loc.startswith("https://"):
        return loc
    scheme, host, port, path = split_url(base)
    if loc.startswith("/"):
        return "%s://%s:%d%s" % (scheme, host, port, loc)
    return "%s://%s:%d%s/%s" % (scheme, host, port, path.rsplit("/", 1)[0], loc)


class _Response:
    """One HTTP response; read the body with readinto()/read_all(). close() when done."""

    def __init__(self, sock, stream, status, headers, url, timeout, raw=None):
        self.sock = sock
        self.f = stream
        self.status = status
        self.headers = headers
        self.url = url
        self.timeout = timeout
        # MicroPython: wait in short slices and count the time here. The unix port restarts a
        # blocking read's SO_RCVTIMEO whenever a signal interrupts it (another thread's GC does),
        # so a stalled server could hold a plain timeout forever.
        self._sliced = stream is sock
        if self._sliced:
            (raw or sock).settimeout(_SLICE_S)  # TLS: the socket under the TLS stream
        te = headers.get("transfer-encoding", "").lower()
        self.chunked = "chunked" in te
        cl = headers.get("content-length")
        self.length = int(cl) if cl is not None and cl.strip().isdigit() else None
        self._left = self.length   # bytes left (length body) or in the current chunk
        self._eof = False
        if self.chunked:
            self._left = 0

    def _raw_readinto(self, mv):
        t0 = ticks_ms()
        while True:
            try:
                n = self.f.readinto(mv)
            except OSError as e:
                if not self._sliced or e.args[0] not in (errno.ETIMEDOUT, errno.EAGAIN):
                    raise
                n = None
            if n is not None:
                return n
            if ticks_diff(ticks_ms(), t0) >= self.timeout * 1000:
                raise OTAError("network: no data for %s s from %s" % (self.timeout, self.url))

    def _readline(self):
        if not self._sliced:
            return self.f.readline()
        line = bytearray()
        one = bytearray(1)
        while len(line) < 256:
            if not self._raw_readinto(one):
                break
            line += one
            if one[0] == 0x0A:
                break
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
        out = bytearray()
        buf = bytearray(1024)
        mv = memoryview(buf)
        while True:
            n = self.readinto(mv)
            if not n:
                return bytes(out)
            out += mv[:n]
            if len(out) > limit:
                raise OTAError("response from %s larger than %d bytes" % (self.url, limit))

    def close(self):
        try:
            if self.f is not self.sock:
                self.f.close()  # CPython's makefile() holds the descriptor open too
            self.sock.close()
        except Exception:
            pass


class Http:
    """A small streaming HTTP/1.1 GET client: redirects, Content-Length and chunked bodies, timeouts."""

    #: seconds a connect or read may block
    timeout = 15
    #: redirects followed before giving up (GitHub assets redirect once, to another host)
    max_redirects = 5
    user_agent = "iotutils-ota"

    def __init__(self, token=None, cadata=None, allow_http=False):
        self.token = token
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
            s = self._tls(raw, host) if scheme == "https" else raw
        except Exception:
            raw.close()
            raise
        return s, raw

    def _tls(self, s, host):
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.cadata:
            certs = _der(self.cadata)
        else:
            from iotutils.ota.roots import ROOTS

            certs = ROOTS
        for der in certs:  # one at a time: MicroPython's ssl parses one DER certificate per call
            ctx.load_verify_locations(cadata=der)
        ctx.verify_mode = ssl.CERT_REQUIRED
        if hasattr(ctx, "check_hostname"):
            ctx.check_hostname = True  # (MicroPython checks the name given as server_hostname)
        return ctx.wrap_socket(s, server_hostname=host)

    def get(self, url, accept=None):
        """GET url following redirects; returns a _Response with status 2xx, else raises OTAError."""
        auth = self.token
        for _ in range(self.max_redirects + 1):
            scheme, host, port, path = split_url(url)
            if scheme == "http" and not self.allow_http:
                # an http: source (or a redirect to one) is readable and changeable by anyone on the
                # path; the release's signature would still be checked, but we do not even ask
                raise OTAError("refusing plain http:// (%s): use https://, or allow_http=True for a "
                               "server on your own network" % url)
            try:
                resp = self._request(scheme, host, port, path, accept, auth)
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

    def _request(self, scheme, host, port, path, accept, auth):
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
            if hasattr(s, "sendall"):
                s.sendall(req)
            else:
                s.write(req)
            f = s if hasattr(s, "readline") else s.makefile("rb")  # MicroPython streams / CPython sockets
            line = f.readline()
            if not line:
                raise OTAError("no response from %s:%d" % (host, port))
            parts = line.split(None, 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
                raise OTAError("bad HTTP status line from %s: %r" % (host, line[:40]))
            status = int(parts[1])
            headers = {}
            while True:
                h = f.readline()
                if not h:
                    raise OTAError("connection closed in the response head from %s" % host)
                if h in (b"\r\n", b"\n"):
                    break
                try:
                    k, _, v = h.decode().partition(":")
                except UnicodeError:
                    continue  # a header we do not use, in some other encoding
                headers[k.strip().lower()] = v.strip()
            return _Response(s, f, status, headers, "%s://%s%s" % (scheme, hostport, path), self.timeout, raw)
        except Exception:
            s.close()
            raise


def _der(cadata):
    """CA certificates as a list of DER certificates: PEM text is converted (MicroPython's ssl takes
    DER reliably), a list or tuple of them is taken as it is."""
    if isinstance(cadata, (list, tuple)):
        return cadata
    if isinstance(cadata, str):
        cadata = cadata.encode()
    if b"-----BEGIN" not in cadata:
        return [cadata]
    import binascii
    out = []
    for part in cadata.split(b"-----BEGIN CERTIFICATE-----")[1:]:
        body = part.split(b"-----END CERTIFICATE-----")[0]
        out.append(binascii.a2b_base64(b"".join(body.split())))
    if not out:
        raise ValueError("cadata: no certificate in the PEM text")
    return out


def _http_error(resp):
    h = resp.headers
    msg = ""
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
