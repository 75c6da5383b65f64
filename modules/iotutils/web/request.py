# The request a handler sees: Request (method, path, query, headers decoded on demand from the
# connection's buffer, body, json(), form()), its body reader (Content-Length or chunked, read from a
# non-blocking socket, 100-continue on first read), and URL decoding.
import io
import json
import sys
from array import array

from select import POLLIN

from iotutils._compat import load, ticks_diff, ticks_ms
from iotutils.web.parser import chunked_decode, reason
from iotutils.web.response import HTTPError

# The parser's numbers (httpparse.h, iotutils/http.py) and the server's own request flags. Private:
# const() folds only within the module that defines it, so the engine names the ones it needs itself
# (imported, each would be a slot in both modules' tables, and a lookup per request).
_BODY_NONE = const(0)
_BODY_LENGTH = const(1)
_BODY_CHUNKED = const(2)
_FLAG_CLOSE = const(1)
_FLAG_KEEP_ALIVE = const(2)
_FLAG_EXPECT_CONTINUE = const(4)
_FLAG_CHUNKED = const(0x10000)  # ours, not the parser's: Request.flags also says "chunked body"
_X_HTTP11 = const(0x20000)  # Request._x: HTTP/1.1
_X_FLAGS = const(0x1FFFF)  # Request._x: the flags
# slots of the parser's output array read here (the engine names all of them)
_OUT_N_HEADERS = const(5)
_OUT_FIXED = const(9)  # header field i: out[_OUT_FIXED + 4 * i:][:4] = name off, len, value off, len
_CHUNK_STATE_LEN = const(4)

_MP = sys.implementation.name == "micropython"
_EAGAIN = const(11)


def unquote(s, plus=False):
    """Percent-decode a URL component ('+' is a space when plus is True); bad escapes are kept as is."""
    if plus and "+" in s:
        s = s.replace("+", " ")
    if "%" not in s:
        return s
    parts = s.split("%")
    out = bytearray(parts[0].encode())
    for p in parts[1:]:
        try:
            out.append(int(p[:2], 16))
            out.extend(p[2:].encode())
        except ValueError:
            out.extend(b"%")
            out.extend(p.encode())
    try:
        return out.decode()
    except UnicodeError:
        return s


def parse_qs(s):
    """'a=1&b=x+y' -> {'a': '1', 'b': 'x y'} (the last value wins)."""
    d = {}
    if s:
        for item in s.split("&"):
            if not item:
                continue
            k, _, v = item.partition("=")
            d[unquote(k, True)] = unquote(v, True)
    return d


_STREAM_JSON_OVER = const(2048)
JSON_TOO_BIG = "JSON body has more values than this device has memory for"
# MicroPython's json.load reads a stream (CPython's reads it whole anyway); without io.IOBase a port
# reads bodies whole
_STREAMS = _MP and hasattr(io, "IOBase")
del io, sys   # (only the lines above need them: their slots in this module's table go to later names)


_json_check_class = None


def json_check(limit):
    """A strict JSON checker (feed(buf), end(): ValueError for anything that is not one JSON text, or
    one nested deeper than limit): the C module's where the firmware has it, else the same in Python
    (web/json_body.py). MicroPython's json.loads alone takes {"a": 1] for {"a": 1}. The class is found
    once: a runtime without the C module would otherwise raise and catch an ImportError per body."""
    global _json_check_class
    cls = _json_check_class
    if cls is None:
        try:
            from _iotutils import JSONCheck as cls
        except ImportError:
            cls = load("iotutils.web.json_body").JSONCheck
        _json_check_class = cls
    return cls(limit)


def json_error(e):
    """The 400 for a JSONCheck error: the depth said as it is, anything else "invalid JSON body"."""
    msg = str(e)
    return HTTPError(400, msg if "nested" in msg else "invalid JSON body")


class Request:
    """One HTTP request. method, path (decoded), target, query_string, query (dict), headers (lower-case
    names), body (bytes or bytearray, read on first use), stream (a reader with readinto/read for the
    body), json(), form(). Valid while it is being answered: header fields are decoded on first use
    from the connection's buffer, which the next request reuses."""

    # An instance stores only conn, method, path and _x (flags, version): MicroPython grows an
    # instance's attribute table by reallocating it (2, 4, 6... slots), and a heap allocation is the
    # dearest thing on the hot path. Everything else has a class default or is derived on use.
    stream = None       # NO_BODY, set below the class
    content_length = None
    route = None        # the matched route, stored for requests with a body (its max_body)
    allow = None        # methods of a 405 answer
    _t = None           # the request target when it is not just the path
    _authority = None   # the host[:port] of an absolute-form target (it overrides Host)
    _body = None
    _query = None
    _headers = None
    _g = None

    def __init__(self, conn, method, path, x):
        # no more locals than this: a bigger frame would be a heap allocation per call (see _serve)
        self.conn = conn
        self.method = method
        self.path = path
        self._x = x

    # The views a handler reads now and then are one __getattr__ (asked only for what neither the
    # instance nor the class holds), not ten properties: each cost the heap a property object, a
    # function and a table slot. What the server reads at every request stays a property.
    def __getattr__(self, attr):
        if attr == "target":
            return self._t or self.path
        if attr == "query_string":
            t = self._t
            i = -1 if t is None else t.find("?")
            return "" if i < 0 else t[i + 1:]
        if attr == "client_ip":
            # the client's IPv4 address as text ("" if unknown): accept() gives a (host, port) tuple
            # on some ports and a raw sockaddr_in (bytes) on others
            a = self.conn.addr
            if isinstance(a, tuple):
                return a[0]
            if isinstance(a, (bytes, bytearray)) and len(a) >= 8 and a[0] == 2:  # AF_INET
                return "%d.%d.%d.%d" % (a[4], a[5], a[6], a[7])
            return ""
        if attr == "client_addr":
            return self.conn.addr
        if attr == "g":   # free space for hooks (e.g. the authenticated user)
            if self._g is None:
                self._g = {}
            return self._g
        if attr == "cookies":
            d = {}
            for item in self.headers.get("cookie", "").split(";"):
                k, _, v = item.strip().partition("=")
                if k:
                    d[k] = v
            return d
        if attr == "server":   # the WebServer answering (None for a request without a body)
            return getattr(self.stream, "server", None)
        if attr == "flags":   # the parser's (Connection: close/keep-alive, Expect: 100-continue) + _FLAG_CHUNKED
            return self._x & _X_FLAGS
        if attr == "body_kind":
            if self.content_length is not None:
                return _BODY_LENGTH
            return _BODY_CHUNKED if self._x & _FLAG_CHUNKED else _BODY_NONE
        if attr == "head_len":
            return self.conn.hl
        raise AttributeError(attr)

    @property
    def version(self):
        """0 for HTTP/1.0, 1 for HTTP/1.1."""
        return 1 if self._x & _X_HTTP11 else 0

    @property
    def headers(self):
        """Header fields as a dict with lower-case names (repeated fields joined with ", ")."""
        h = self._headers
        if h is None:
            conn = self.conn
            if conn.cur is not self:
                raise RuntimeError("request headers read after the request was answered")
            h = {}
            raw = conn.buf
            off = conn.out
            for i in range(_OUT_FIXED, _OUT_FIXED + 4 * off[_OUT_N_HEADERS], 4):
                name = raw[off[i]:off[i] + off[i + 1]].decode().lower()   # (a token: ASCII)
                value = raw[off[i + 2]:off[i + 2] + off[i + 3]]
                try:
                    value = value.decode()
                except UnicodeError:
                    if name == "host":
                        raise HTTPError(400, "header not UTF-8")
                    # other bytes than UTF-8 are opaque data (RFC 9110 5.5): one character per
                    # byte, as Python's own http.server reads a head (ISO-8859-1)
                    value = "".join([chr(b) for b in value])
                if name in h:
                    value = h[name] + ", " + value
                h[name] = value
            self._headers = h
        return h

    @headers.setter
    def headers(self, value):
        self._headers = value

    @property
    def host(self):
        """The Host header without its port, lower-case ("" without one); for an absolute-form
        target, its host instead (RFC 9112 3.2.2: the Host header is ignored then). Found without
        decoding the other header fields: a host check runs on every request."""
        h = self._headers
        if self._authority is not None:
            v = self._authority
        elif h is not None:
            v = h.get("host", "")
        else:
            conn = self.conn
            if conn.cur is not self:
                raise RuntimeError("request headers read after the request was answered")
            raw = conn.buf
            off = conn.out
            v = ""
            for i in range(_OUT_FIXED, _OUT_FIXED + 4 * off[_OUT_N_HEADERS], 4):
                o = off[i]
                if off[i + 1] == 4 and raw[o] | 32 == 104 and raw[o + 1] | 32 == 111 and raw[o + 2] | 32 == 115 \
                        and raw[o + 3] | 32 == 116:  # "host", any case
                    try:
                        v = str(raw[off[i + 2]:off[i + 2] + off[i + 3]], "utf-8")
                    except UnicodeError:
                        raise HTTPError(400, "header not UTF-8")
                    break
        if v.startswith("["):  # an IPv6 literal, [::1]:80
            return v[:v.find("]") + 1].lower()
        return v.partition(":")[0].lower()

    @property
    def query(self):
        if self._query is None:
            self._query = parse_qs(self.query_string)
        return self._query

    # alias used by some frameworks
    args = query

    @property
    def body(self):
        if self._body is None:
            if self.stream is NO_BODY:
                self._body = b""
            else:
                self._body = self.stream.read_all(self.stream.server.max_body if self.route is None or
                                                  self.route.max_body is None else self.route.max_body)
        return self._body

    #: deepest JSON nesting req.json() parses: MicroPython's parser recurses, a deeper body would
    #: exhaust the heap (503 for everyone) instead of being the client's error (400)
    max_json_depth = 32

    def json(self):
        """The body as JSON, whatever the Content-Type says (Hue clients omit it). Bad JSON -> 400.
        On MicroPython a body larger than a few buffers is parsed while it streams in: no block of its
        size is needed (a fragmented heap may have none, although it has the room)."""
        if self._body is None and _STREAMS and self.stream is not NO_BODY and \
                (self.content_length is None or self.content_length > _STREAM_JSON_OVER):
            return load("iotutils.web.json_body").streamed(self)   # (large bodies only)
        b = self.body
        if not b:
            return None
        if isinstance(b, memoryview):
            b = bytes(b)
        check = json_check(self.max_json_depth)
        try:
            check.feed(b)
            pairs = check.end()
        except ValueError as e:
            raise json_error(e)
        try:
            if pairs:   # (an emoji escaped as \uD83D\uDCA1: rare, its code loads for it)
                return load("iotutils.web.json_body").astral(json.loads(b))
            return json.loads(b)
        except ValueError:
            raise HTTPError(400, "invalid JSON body")
        except MemoryError:   # within max_body, but too many values for the heap: the client's to fix
            raise HTTPError(413, JSON_TOO_BIG)

    def form(self):
        """An application/x-www-form-urlencoded body as a dict."""
        try:
            return parse_qs(bytes(self.body).decode())
        except UnicodeError:
            raise HTTPError(400, "form body is not UTF-8")

    @property
    def keep_alive(self):
        """The client lets the connection stay open (HTTP/1.1 unless "close"; 1.0 with "keep-alive")."""
        x = self._x
        return not (x & _FLAG_CLOSE) and bool(x & (_X_HTTP11 | _FLAG_KEEP_ALIVE))


class BodyReader:
    """The request body as a stream (req.stream): readinto(b)/read(n)/read_all(limit).

    Bytes already read with the head sit in the connection buffer; the rest comes from the socket
    (waiting at most io_timeout for each read). A chunked body is decoded in place in that buffer;
    readinto returns what is there (possibly less than asked), 0 at the end of the body."""

    def __init__(self, server, conn, req, pos):
        self.server = server
        self.conn = conn
        self.req = req
        self.chunked = req.body_kind == _BODY_CHUNKED
        self.remaining = req.content_length or 0  # for Content-Length bodies: bytes not yet returned
        self.pos = pos        # next unread data byte in conn.buf
        self.end = pos        # end of decoded data (chunked) in conn.buf
        self.tail = None      # chunked: (start, end) of pipelined bytes after the body in conn.buf
        self.done = not self.chunked and self.remaining == 0
        self.continued = not (req.flags & _FLAG_EXPECT_CONTINUE)
        self.broken = False
        self.t0 = None        # when the body was first waited for (ticks_ms)
        self.got = 0          # bytes received from the socket since

    def start(self):
        if self.chunked:
            self.state = array("i", [0] * _CHUNK_STATE_LEN)
            self._decode(self.pos, self.conn.n)

    def _continue(self):
        # the client waits for "100 Continue" before sending the body: send it on first read
        if not self.continued:
            self.continued = True
            self.server.write_all(self.conn.sock, b"HTTP/1.1 100 Continue\r\n\r\n")

    def _decode(self, start, end):
        n = chunked_decode(self.conn.buf, start, end, self.state)
        if n < 0:
            self.broken = True
            raise HTTPError(-n, reason(self.state[3]) or None)
        self.pos = start
        self.end = start + n
        if self.state[0] == -1:
            self.done = True
            self.tail = (self.state[1], end)

    def readinto(self, b, limit=None):
        want = len(b) if limit is None else min(limit, len(b))
        conn = self.conn
        if self.chunked:
            if not self._fill():
                return 0
            n = min(want, self.end - self.pos)
            b[:n] = memoryview(conn.buf)[self.pos:self.pos + n]
            self.pos += n
            return n
        if self.remaining == 0:
            return 0
        want = min(want, self.remaining)
        avail = conn.n - self.pos
        if avail > 0:
            n = min(want, avail)
            b[:n] = memoryview(conn.buf)[self.pos:self.pos + n]
            self.pos += n
        else:
            self._continue()
            n = self._recv_some(memoryview(b)[:want] if want < len(b) else b)
            if not n:
                raise OSError("client closed during body")
        self.remaining -= n
        if self.remaining == 0:
            self.done = True
        return n

    def _fill(self):
        # chunked: decoded data available in conn.buf[pos:end]? read and decode more if not
        while self.pos >= self.end:
            if self.done:
                return False
            self._continue()
            r = self._recv_some(self.conn.buf)
            if not r:
                raise OSError("client closed during body")
            self._decode(0, r)
        return True

    def _recv_some(self, b):
        # sockets stay non-blocking: read what is there (a chunked body has no known end, so a
        # blocking readinto could wait for bytes that never come) and poll (io_timeout) for more
        sock = self.conn.sock
        if self.t0 is None:
            self.t0 = ticks_ms()
        while True:
            try:
                r = sock.readinto(b) if _MP else sock.recv_into(b)
            except OSError as e:
                if not e.args or e.args[0] != _EAGAIN:
                    raise
                r = None
            if r is not None:
                self.got += r
                return r
            self._wait(sock)

    def _wait(self, sock):
        # The body must keep coming (server.body_min_rate after request_timeout: else 408), and a
        # thread that is the server's last free one waits for it only briefly (503): see io_wait.
        server = self.server
        left = max(server.request_timeout, self.got * 1000 // server.body_min_rate) \
            - ticks_diff(ticks_ms(), self.t0)
        if left <= 0:
            self.broken = True
            raise HTTPError(408, "request body too slow")
        # a body slower than last_thread_min_rate so far: if this is the last free thread, its limit
        # counts from the body's start (a trickle cannot hold it); a fast one is waited for per wait
        slow = self.got * 1000 < server.last_thread_min_rate * ticks_diff(ticks_ms(), self.t0)
        r = server.io_wait(sock, POLLIN, min(left, server.io_timeout), self.t0 if slow else None)
        if r < 0:
            self.broken = True
            raise HTTPError(503, "busy: every thread is waiting for a slow client")
        if r == 0 and left > server.io_timeout:
            raise OSError(110)  # ETIMEDOUT (else the next turn answers 408)

    def read(self, n=-1):
        if n is None or n < 0:
            return self.read_all(None)
        b = bytearray(n)
        got = 0
        mv = memoryview(b)
        while got < n:
            r = self.readinto(mv[got:])
            if not r:
                break
            got += r
        return bytes(b) if got == n else bytes(b[:got])

    def read_all(self, limit):
        """The whole (rest of the) body (bytes-like); more than limit bytes -> HTTPError 413."""
        if not self.chunked:
            if limit is not None and self.remaining > limit:
                raise HTTPError(413)
            b = bytearray(self.remaining)
            mv = memoryview(b)
            got = 0
            while got < len(b):
                got += self.readinto(mv[got:])
            return b  # no bytes() copy: that would need a second block as large, in a fragmented heap
        # pieces, joined at the end: no growing buffer that needs ever larger free blocks in a
        # fragmented heap, and the limit is checked before the one big allocation
        pieces = []
        total = 0
        while True:
            if not self._fill():
                return b"".join(pieces)
            n = self.end - self.pos
            total += n
            if limit is not None and total > limit:
                raise HTTPError(413)
            pieces.append(bytes(memoryview(self.conn.buf)[self.pos:self.end]))
            self.pos = self.end

    def drain(self, limit):
        """Discard the unread body (to keep the connection usable); False if over limit or impossible."""
        if self.done and (self.chunked or self.remaining == 0):
            return True
        if not self.continued:
            return False  # the client never sent it: the connection state is unknown
        if not self.chunked and self.remaining > limit:
            return False
        scratch = bytearray(512)
        total = 0
        while True:
            r = self.readinto(scratch)
            if not r:
                return True
            total += r
            if total > limit:
                return False

    def leftover(self):
        """(start, end) in conn.buf of bytes after this body (a pipelined next request)."""
        if self.chunked:
            return self.tail if self.tail else (0, 0)
        return (self.pos, self.conn.n) if self.pos < self.conn.n else (0, 0)


class NoBody:
    """req.stream of a request without a body: one shared, stateless reader."""
    done = True
    broken = False
    continued = True
    chunked = False
    remaining = 0

    def start(self):
        pass

    def readinto(self, b, limit=None):
        return 0

    def read(self, n=-1):
        return b""

    def read_all(self, limit):
        return b""

    def drain(self, limit):
        return True


NO_BODY = NoBody()
Request.stream = NO_BODY  # the reader of every request without a body
