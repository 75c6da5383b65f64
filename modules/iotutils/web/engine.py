# The web server's engine: the one hot file. Everything a request passes through on its usual way
# lives here: the poll loop, reading heads, answering (inline or by a worker), writing answers.
# Requests, responses, routing, multipart and static files have their own modules in iotutils.web;
# iotutils.server re-exports the public names.
#
# One poll loop accepts connections and reads request heads incrementally from non-blocking sockets
# into small per-connection buffers; only complete requests are answered, by a pool of threads, so idle
# or speculative browser sockets never hold a thread, and user code keeps running beside the server.
# The pool's threads take turns at being the poll loop (leader/followers, see _run): the leader answers
# complete requests itself while another thread stands by to take the poll loop over from a handler
# that runs long. A busy keep-alive connection thus costs no thread switch and no hand-over, which on
# a small runtime costs more than the request. Everything is bounded: open connections (LRU eviction of
# idle ones), head size (431/414), body size (413), time per request (408) and per socket I/O.
# Hot path (per request): one read and one write system call, no copy of the head, header fields
# decoded only when a handler looks at them, a small answer formatted in the request's own buffer.
# On MicroPython an allocation is the dearest thing there (gc_alloc scans the heap for free blocks),
# so the hot path avoids them and the calls that would allocate frames: see _lead.
#
#     from iotutils.server import WebServer, Response
#     app = WebServer(port=80, workers=3)
#     @app.route("/api/led/<int:n>", methods=("GET", "POST"))
#     def led(req, n):
#         return {"n": n}
#     app.start()
#
# Threads: the host runtime has no GIL, so every structure touched by two threads is guarded by a lock:
# the job queue, the standby count, connections handed back, site changes and the counters share one
# lock (_mu: each section is a few lines that never wait, and on the ESP32 a lock is a FreeRTOS
# semaphore of about 100 bytes of heap), route/hook tables are copy-on-write (routing.py's lock).
# The poll state (poller, connection table,
# buffer pool) belongs to whoever holds _lead_lock. Connection objects are owned by exactly one thread
# at a time: the leader, or the thread serving them (they are out of the poll set then).
import json
import sys
from array import array

import _thread
import select

from iotutils._compat import handed_out, print_exception, ready, ticks_diff, ticks_ms
from iotutils.web.parser import parse_head, reason
from iotutils.web.request import NO_BODY, BodyReader, Request, unquote
from iotutils.web.response import (NONFINITE, HTTPError, Response, check_response, json_text, make_response,
                                   status_reason)
from iotutils.web.routing import Router

# The builtins the hot paths use, as module globals: MicroPython finds a builtin only after missing it
# in the module's (large) dict and then scanning the builtins table, about 0.8 us for each len() here;
# a module global is found in 0.03 us.
len, str, type, memoryview = len, str, type, memoryview

# The parser's output slots (httpparse.h, iotutils/http.py): parse_head fills out[0:9], then four
# slots per header field
_OUT_METHOD = const(0)      # offset of the method; on NEED_MORE: 1 if the request line is complete
_OUT_METHOD_LEN = const(1)
_OUT_TARGET = const(2)
_OUT_TARGET_LEN = const(3)
_OUT_HTTP11 = const(4)      # minor version: 1 for HTTP/1.1
_OUT_BODY = const(6)        # _BODY_NONE / _BODY_LENGTH / _BODY_CHUNKED
_OUT_LENGTH = const(7)      # Content-Length (_BODY_LENGTH)
_OUT_FLAGS = const(8)       # _FLAG_CLOSE | _FLAG_KEEP_ALIVE | _FLAG_EXPECT_CONTINUE
_OUT_FIXED = const(9)
_OUT_REASON = const(0)      # on an error: index of its reason
# the parser's body kinds and flags, and the server's own request flags (as request.py names them)
_BODY_LENGTH = const(1)
_BODY_CHUNKED = const(2)
_FLAG_CLOSE = const(1)
_FLAG_KEEP_ALIVE = const(2)
_FLAG_EXPECT_CONTINUE = const(4)
_FLAG_CHUNKED = const(0x10000)
_X_HTTP11 = const(0x20000)
_EAGAIN = const(11)
_EINTR = const(4)
_READ_AHEAD = const(2048)  # bodies up to this size are read before the handler runs
# WebServer's methods that live in web/lifecycle.py
_LATER = const(("_bind", "_listener", "listen", "unlisten", "_change_site", "_apply_site_changes", "sockets",
                "start", "serve_forever", "stop", "_prepare", "_spawn", "_close_all"))

_POLLIN = select.POLLIN
_POLLHUP = select.POLLHUP
_POLLERR = select.POLLERR
_MP = sys.implementation.name == "micropython"
# system calls are dear on a host OS, a heap allocation is dear everywhere: see _recv_into
_RECV_ONCE = _MP and sys.platform != "esp32"
del sys   # (only the lines above need it: its slot in this module's table goes to the next name)

# Content-Type lines of the usual answers, ready to send
_CTYPE_LINES = {
    "text/html; charset=utf-8": b"Content-Type: text/html; charset=utf-8\r\n",
    "application/json": b"Content-Type: application/json\r\n",
    "text/plain": b"Content-Type: text/plain\r\n",
    "application/octet-stream": b"Content-Type: application/octet-stream\r\n",
}

# method names by (first byte << 4 | length), checked byte for byte: no allocation per request
# (constants: frozen into the firmware, only the dict is in the heap)
_METHODS = {0x473: ("GET", b"GET"), 0x484: ("HEAD", b"HEAD"), 0x504: ("POST", b"POST"),
            0x503: ("PUT", b"PUT"), 0x446: ("DELETE", b"DELETE"), 0x505: ("PATCH", b"PATCH"),
            0x4F7: ("OPTIONS", b"OPTIONS"), 0x437: ("CONNECT", b"CONNECT"), 0x545: ("TRACE", b"TRACE")}


class _Conn:
    def __init__(self, sock, addr, now, site):
        self.sock = sock
        self.addr = addr
        self.site = site  # the Router of the port it came in on (the server itself, or a listen()ed one)
        self.buf = None   # a buffer only while a request is being read (idle keep-alive sockets hold none)
        self.mv = None    # memoryview(buf), made once per buffer
        self.n = 0        # valid bytes in buf
        self.t0 = None    # ticks of the first byte of the request being read (for 408)
        self.last = now   # ticks of the last activity (idle timeout)
        self.seq = 0      # activity order (LRU eviction): ticks can tie, this can't
        self.busy = False
        self.req = None   # a parsed head waiting for its (small) body
        self.need = 0
        # the request being answered: its head length, the parser's offsets into buf (the serving
        # thread's array, for Request.headers) and the Request itself (None once answered)
        self.hl = 0
        self.out = None
        self.cur = None


def _discard(sock):
    # read what the client already sent (non-blocking, 16 KB at most), so that closing does not
    # reset the connection before the client has read our answer
    scratch = bytearray(512)
    limit = 16384
    try:
        while limit > 0:
            r = sock.readinto(scratch) if _MP else sock.recv_into(scratch)
            if not r:
                return
            limit -= r
    except OSError:
        pass


def _recv_into(sock, buf, start):
    """Read what a non-blocking socket has into buf[start:]: bytes read, 0 at its end, None if nothing."""
    if not _MP:
        return sock.recv_into(memoryview(buf)[start:])
    if start == 0 or not _RECV_ONCE:
        # MicroPython's readinto reads until the buffer is full: on a host that is a second read()
        # system call (EAGAIN), cheaper than allocating a buffer-sized bytes object on every request
        return sock.readinto(buf) if start == 0 else sock.readinto(memoryview(buf)[start:])
    # the rest of a head or body: recv is one call (and a short-lived copy)
    d = sock.recv(len(buf) - start)
    n = len(d)
    if n:
        buf[start:start + n] = d
    return n


def _method_of(conn, mo, ml):
    # the request's method: a known one without an allocation, checked byte for byte. (Few locals:
    # its frame stays on the C stack, see WebServer._serve.)
    m = _METHODS.get(conn.buf[mo] << 4 | ml) if ml < 16 else None
    if m is not None and conn.buf.find(m[1], mo, mo + ml) == mo:
        return m[0]
    return str(conn.mv[mo:mo + ml], "utf-8")


def _method_start(buf, n):
    """Whether the first n bytes of buf can begin a request: empty lines, then an upper-case letter."""
    i = 0
    while i < n and (buf[i] == 13 or buf[i] == 10):
        i += 1
    return i >= n or 65 <= buf[i] <= 90


def _gc_collect():
    try:
        import gc
        gc.collect()
    except ImportError:
        pass


def check_port(port):
    """ValueError unless `port` is a TCP port number (WebServer() and listen() take one)."""
    # (-1 and 70000 were taken, "80" raised TypeError from a comparison deep in start())
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError("port: 0 to 65535 expected, got %r" % (port,))


class WebServer(Router):
    """A threaded HTTP/1.1 server. Limits are class attributes: tune them on the class or the instance."""

    #: most open connections; a new one evicts the least recently used idle one (or waits in the
    #: listen backlog until one frees). Device lowers it to what the board's socket table leaves.
    max_connections = 32
    #: per-connection read buffer (bytes), taken only while a request is under way; a head that does
    #: not fit grows it up to max_head. Most heads fit, and half a KB per request in flight is
    #: what an ESP32's heap can give 32 of.
    buffer_size = 512
    #: largest request head (request line + headers) in bytes: more -> 431 (414 for the request line)
    max_head = 4096
    #: most request headers: more -> 431
    max_headers = 24
    #: largest request body for non-stream routes (bytes): more -> 413
    max_body = 16384
    #: the whole head (and a small body) must arrive within this many ms of its first byte: else 408
    request_timeout = 10000
    #: when every slot is taken, a request head still arriving after this long (ms) may be dropped
    #: to make room (slowloris); a complete request is never dropped
    slow_head_ms = 250
    #: ... and a new connection that has sent nothing yet only after this long (ms): its client
    #: would not retry, and a client's first bytes can be late by the time TCP retransmits them
    #: (200, 400, 800 ms) when the network, or the host's backlog, dropped them
    first_request_ms = 2000
    #: ... and a keep-alive connection only once it has been idle this long (ms): a client that just
    #: got its answer may already be sending the next request, and closing under it resets the
    #: connection (ab -k aborts on that). Until then a new client waits in the listen backlog
    keepalive_min_ms = 100
    #: when new clients have found no slot for this long (ms), answers close their connections
    #: (Connection: close) until one gets in: a slot frees cleanly after a whole answer, and clients
    #: that keep every slot busy cannot keep others out
    shed_after_ms = 250
    #: an idle keep-alive connection is closed after this many ms
    idle_timeout = 30000
    #: socket timeout (ms) while a worker reads a body or writes a response
    io_timeout = 10000
    #: a request body must keep coming: once request_timeout has passed since its first wait, at
    #: least this many bytes per second on average, else 408 (a client sending a byte every few
    #: seconds would hold a thread for as long as it liked)
    body_min_rate = 500
    #: while max(1, workers - 1) threads already wait on slow clients (a body's next bytes, room to
    #: write an answer), another waits at most this long (ms): then 503 for a body, a close for an
    #: answer. The poll loop answers queued requests only while a thread stands by, so slow clients
    #: holding every thread would hold up every request
    last_thread_wait_ms = 1000
    #: ... counted from the body's start for a body arriving slower than this (bytes/s on average): a
    #: client sending a byte now and then cannot hold the last free thread; a fast upload still can
    last_thread_min_rate = 4096
    #: unread request body a worker discards to keep a connection alive (bytes); more -> close
    max_drain = 65536
    #: a handler running longer than this (ms) hands the poll loop to a standing-by thread: the most
    #: a slow handler delays other connections (see _run)
    takeover_ms = 20
    #: fn(req) -> None to serve the request, or an answer (anything a handler may return): asked first,
    #: before routing and hooks, for every request. Device sets it on the class, so every server of
    #: the device (the web server, each WeMo device) refuses a Host that is not the device's own (DNS
    #: rebinding). None: no check (a WebServer used by itself).
    host_guard = None
    #: answer the usual request inside the poll loop (no body, a literal path, a str/bytes/dict/list
    #: answer): the fast path. False sends every request the general way (_serve): the two must give
    #: the same bytes, and tests/unit/test_web_engine.py compares them.
    inline_answers = True
    #: chunk size for streamed responses (files)
    send_buffer = 1024
    #: stack bytes (the chip's) of each server thread: None takes the board's (hal.WEB_STACK), 0 the
    #: port's default (~5 KB on the ESP32: tight for handlers that build JSON)
    stack_size = None
    #: listen backlog
    backlog = 8
    #: print handler exceptions to the console
    log_errors = True
    #: value of the Server header (None: no header)
    server_name = "iotutils"

    def __init__(self, port=80, workers=3, host=None):
        check_port(port)
        if isinstance(workers, bool) or not isinstance(workers, int) or not 0 <= workers <= 16:
            # (-3 started no thread at all: nothing ever answered)
            raise ValueError("workers: 0 to 16 threads expected, got %r" % (workers,))
        self.port = port
        self.workers = workers
        self.host = host
        self.last_request_ms = ticks_ms()
        self.request_count = 0
        self.takeovers = 0  # how often a slow handler handed the poll loop to another thread
        self.io_waits = 0  # threads waiting on a client now: a body's next bytes, room to write (under _mu)
        self._init_routes()
        self._mu = _thread.allocate_lock()
        self._jobs = []
        self._returned = []
        self._wake_pending = False
        self._seq = 0
        self._accept_paused = None
        self._waiting_since = None   # ticks since which new clients have found no slot
        self._shed = False
        self._running = False
        self._threads = 0
        self._sock = None
        self._sites = {}       # key of an extra listening socket -> (socket, Router, device port)
        self._site_changes = []  # (port, Router or None) for the poll loop to add or drop
        self._site_asked = 0     # changes asked / applied: unlisten() waits until its own is applied
        self._site_done = 0
        self._wake = None
        self._wake_addr = None
        self._pre = None
        self._prefixes = (None, {})  # (server_name, {content type: head of a fast 200 answer})
        # every attribute the threads use exists from here on (set again by _prepare): with no GIL a
        # new attribute resizes the instance dict while other threads read it
        self._poller = None
        self._conns = {}
        self._pool = []
        self._pool_mv = []
        self._out = None
        self._standby = 0
        self._serving_since = None
        self._last_scan = 0
        self._conns_peak = 0   # most connections since the table and the poll set were last rebuilt
        self._lead_lock = None
        self._line_lock = None
        self._nap = None
        self.bound_port = None

    def __getattr__(self, attr):
        # the life cycle (bind, start, stop, listen, unlisten: web/lifecycle.py) is loaded when asked
        # for; nothing a request does comes here (every attribute the threads use exists)
        return handed_out("iotutils.web.lifecycle", self, attr, _LATER)

    def idle_ms(self):
        """Milliseconds since the last request (OTA waits for an idle device)."""
        return ticks_diff(ticks_ms(), self.last_request_ms)

    def stats(self):
        with self._mu:
            return {"requests": self.request_count, "last_request_ms": self.last_request_ms,
                    "takeovers": self.takeovers}

    # ---- threads: one leads (the poll loop), the others stand by ----
    #
    # All server threads are alike. The one holding _lead_lock is the poll loop: it accepts, reads
    # heads, and answers complete requests itself, so a busy keep-alive connection costs no thread
    # switch at all. While it runs a handler it lets go of the lock; one standing-by thread (the
    # watcher, holding _line_lock, the others queue for it) looks every takeover_ms / 2 and takes
    # the lead when a handler has run longer than takeover_ms: a slow handler delays the others by
    # at most that, and never blocks accepting or reading. The old leader answers its request, hands
    # the connection back and stands by. The leader answers only while someone stands by (or with
    # workers=0); else complete requests queue in _jobs for the next thread that comes free, so the
    # poll loop itself never stalls and at most `workers` handlers run at once.

    # A thread keeps its outer frames for as long as it runs, and MicroPython puts a frame of more
    # than 11 words (locals + stack + 2 per try; catching an error `as e` alone takes 13) on the heap.
    # So only _turns (standing by or leading) and _leading (leading) catch; _run, _turn, _stand_by
    # and _watch stay on the C stack: a thread standing by holds one 14-word frame of heap (the
    # leader's _lead keeps its locals there on purpose: they save a dict lookup per use).

    def _run(self, spawned):
        # a spawned thread counts itself out here (not in a wrapper: one more frame it would keep)
        try:
            self._turns()
        finally:
            if spawned:
                self._mu.acquire()
                self._threads -= 1
                self._mu.release()

    def _turns(self):
        while self._running:
            try:
                if self._turn():
                    return
            except Exception as e:  # never lose a thread (a MemoryError while standing by, ...)
                self._trouble(e, None)

    def _turn(self):
        """Stand by until this thread leads, lead, then help with the queue. True when the server
        stopped while this thread led (it has closed up)."""
        if not (self._lead_lock.acquire(0) or self._stand_by()):
            return False
        # the parser's output array is made when this thread leads: most threads of a quiet server
        # only ever stand by (and again if it leads again: rare, only after a slow handler)
        out = array("i", [0] * (_OUT_FIXED + 4 * self.max_headers))
        if self._leading(out):
            self._close_all()  # stopped while leading: this thread closes up
            return True
        self._serve_jobs(out)  # lost the lead: help with the queue, then stand by
        return False

    def _leading(self, out):
        while True:
            try:
                return self._lead(out)
            except Exception as e:  # still leading: carry on (never leave the poll loop orphaned)
                self._trouble(e, None)

    def _stand_by(self):
        """Wait until needed: True when this thread took the lead, None when the server stops."""
        mu = self._mu
        mu.acquire()
        self._standby += 1
        mu.release()
        self._line_lock.acquire()
        try:
            return self._watch()
        finally:
            mu.acquire()
            self._standby -= 1
            mu.release()
            self._line_lock.release()

    def _watch(self):
        # only the thread holding _line_lock watches (and naps: one nap poll set for all)
        nap = self._nap
        wait = max(1, self.takeover_ms // 2)
        while self._running:
            # queued requests are the leader's to answer (or a thread's that comes free): a
            # watcher taking one would cost a hand-back and a wake-up for nothing
            since = self._serving_since
            if (since is not None and ticks_diff(ticks_ms(), since) >= self.takeover_ms
                    and self._lead_lock.acquire(0)):
                self.takeovers += 1  # (only the leader writes it, and this thread leads now)
                # the new leader's frame (_lead's locals) and parser array live until the next
                # takeover: collected first, they land in the heap's lowest holes, not among
                # the slow handler's garbage where they would split the free heap. Only after
                # a handler ran takeover_ms; a collection costs a few ms of the chip's time
                _gc_collect()
                return True
            ready(nap, wait)   # the nap (an empty poll set): ready() makes no list each time
        return None

    def _serve_jobs(self, out):
        # a thread that lost the lead (or served a queued job) first helps with the queue
        while self._running and self._jobs:
            with self._mu:
                conn = self._jobs.pop(0) if self._jobs else None
            if conn is None:
                return
            self._serve(conn, out, False)

    def _lead(self, out):
        """The poll loop, run while this thread holds _lead_lock. Returns False when it lost the lead
        (during a slow handler), True when the server stops (still leading)."""
        self._serving_since = None
        self._out = out
        poller = self._poller
        lsock = self._sock
        wake = self._wake
        conns = self._conns
        jobs = self._jobs  # (replaced only while no thread runs)
        mu = self._mu
        serve = self._serve
        readable = self._readable
        dispatch = self._dispatch
        recv_into = _recv_into
        parse = parse_head
        lead_lock = self._lead_lock
        alone = not self.workers
        inline = self.inline_answers
        # globals and methods as locals: MicroPython looks each global up in a dict, every time
        method_of = _method_of
        new_request = Request
        now_ms = ticks_ms
        dumps = json.dumps
        nan, inf = NONFINITE
        write_all = self.write_all
        back = self._back
        mp = _MP
        while self._running:
            # answer complete requests first (this thread, while another stands by to take over)
            while jobs and (alone or self._standby):
                mu.acquire()
                conn = jobs.pop(0) if jobs else None
                mu.release()
                if conn is None:
                    break
                # The usual request is answered right here, not by calling _serve: a call to a
                # function with more than a few locals allocates its frame on the heap, and when a
                # frame is freed among the request's other allocations, the next frame must look
                # further for room (gc_alloc scans from the first free block): on a large heap that
                # grew to most of the cost. So: a head without a body, for a literal path (a query
                # is fine), answered with a str, bytes, dict or list, and no after_request hooks.
                # Everything else goes to _serve, which answers anything.
                route = None
                try:
                    site = conn.site
                    if inline and conn.req is None and not site._after:
                        res = parse(conn.buf, conn.n, out)
                        if res > 0 and not out[_OUT_BODY]:
                            method = method_of(conn, out[_OUT_METHOD], out[_OUT_METHOD_LEN])
                            to = out[_OUT_TARGET]
                            target = str(conn.mv[to:to + out[_OUT_TARGET_LEN]], "utf-8")
                            i = target.find("?")
                            path = target if i < 0 else target[:i]
                            lit = site._lit.get(path) if "%" not in path else None
                            if lit is None:
                                pass
                            elif type(lit) is not tuple:
                                if method in lit.methods:
                                    route = lit
                            else:
                                for r in lit:
                                    if method in r.methods:
                                        route = r
                                        break
                    if route is None:
                        still = serve(conn, out, True)
                    else:
                        still = True
                        x = out[_OUT_FLAGS]
                        if out[_OUT_HTTP11]:
                            x |= _X_HTTP11
                        req = new_request(conn, method, path, x)
                        if i >= 0:
                            req._t = target
                        conn.hl = res
                        conn.out = out
                        conn.cur = req
                        if not alone:
                            self._serving_since = now_ms()
                            lead_lock.release()
                        try:
                            mu.acquire()
                            self.request_count += 1
                            self.last_request_ms = now_ms()
                            mu.release()
                            hg = self.host_guard
                            rv = hg(req) if hg is not None else None
                            if rv is None:
                                for hook in site._before:
                                    rv = hook(req)
                                    if rv is not None:
                                        break
                            if rv is None:
                                rv = route.fn(req)
                            t = type(rv)
                            if t is dict or t is list:
                                d = dumps(rv)
                                if nan in d or inf in d:
                                    d = json_text(rv, d)   # (NaN and infinities as null)
                                rv = d
                                t = str
                                ctype = "application/json"
                            elif t is str:
                                ctype = Response.default_content_type
                            elif t is bytes:
                                ctype = "application/octet-stream"
                            else:
                                ctype = None
                            keep = (not (x & _FLAG_CLOSE) and (x & (_X_HTTP11 | _FLAG_KEEP_ALIVE))
                                    and self._running and not self._shed)
                            if ctype is None:
                                keep = self._finish(req, NO_BODY, make_response(rv))
                            else:
                                # the 200 answer, formatted in this thread's buffer
                                if t is str:
                                    rv = memoryview(rv) if mp else rv.encode()  # UTF-8, no copy
                                cache = self._prefixes
                                pre = cache[1].get(ctype) if cache[0] == site.server_name else None
                                if pre is None:
                                    pre = self._prefix(ctype, site.server_name)
                                if not keep:
                                    tail = b"\r\nConnection: close\r\n\r\n"
                                elif x & _X_HTTP11:
                                    tail = b"\r\n\r\n"
                                else:
                                    tail = b"\r\nConnection: keep-alive\r\n\r\n"
                                n = len(rv)
                                sock = conn.sock
                                # formatted in the free end of the request's own buffer (after the
                                # head and any pipelined bytes): no buffer of its own
                                ob = conn.buf
                                base = conn.n
                                p = base + len(pre)
                                if p + 8 + len(tail) + n > len(ob):
                                    keep = self._send(req, Response(rv, 200, None, ctype), keep)
                                else:
                                    ob[base:p] = pre
                                    k = 1  # the length in decimal, written in place
                                    v = n
                                    while v >= 10:
                                        v //= 10
                                        k += 1
                                    v = n
                                    i = p + k
                                    while i > p:
                                        i -= 1
                                        ob[i] = 48 + v % 10
                                        v //= 10
                                    p += k
                                    k = p + len(tail)
                                    ob[p:k] = tail
                                    if n and method != "HEAD":
                                        ob[k:k + n] = rv
                                        k += n
                                    k -= base
                                    v = sock.write(ob, base, k) if mp else None  # (buf, off, max_len)
                                    if v != k:
                                        write_all(sock, ob, base + k, base + (v or 0))
                                if site._on_request:
                                    self._answered(req, 200)
                                conn.cur = None
                                if keep:
                                    self._keep_leftover(conn, res, conn.n)
                        except OSError:
                            keep = False  # the connection broke (or the handler's own I/O failed)
                        except Exception as e:
                            try:
                                keep = self._finish(req, NO_BODY, self._error_response(e))
                            except Exception:
                                keep = False
                        req = rv = None
                        if not alone:
                            still = lead_lock.acquire(0)
                            if still:
                                self._serving_since = None
                                self._out = out
                        if not keep:
                            _discard(conn.sock)
                        if still:
                            back(conn, keep, now_ms())
                        else:
                            self._give_back(conn, keep, False)  # (raises nothing: the lead is gone)
                except Exception as e:  # only while leading: before letting go of the lead or after
                    self._trouble(e, None)
                    conn.busy = False
                    self._close(conn)
                    still = True
                if not still:
                    return False
            if not self._running:
                break
            timeout = 0 if jobs and (alone or self._standby) else (250 if wake is not None or not conns else 5)
            # ipoll: one reused tuple per event, not a new list of them per round. The poll set only
            # shrinks while it is walked (accepting, which grows it, waits until after).
            events = poller.ipoll(timeout) if mp else poller.poll(timeout)
            now = now_ms()
            accept = False
            accept_sites = None
            for ev in events:
                obj = ev[0]
                conn = None
                try:
                    if obj is lsock or (not _MP and obj == lsock.fileno()):
                        accept = True
                    elif obj is wake or (not _MP and wake is not None and obj == wake.fileno()):
                        # one read: threads poke once per _take_back (_wake_pending), and a second
                        # datagram would only wake the (level-triggered) poll once more
                        try:
                            wake.recv(16)
                        except OSError:
                            pass
                    else:
                        conn = conns.get(obj)
                        if conn is None:
                            site = self._sites.get(obj)
                            if site is not None:  # another port's listener: after the loop, as the main one
                                accept_sites = (accept_sites or []) + [site]
                            continue
                        # a read that completes a head, inline (see _serve on the cost of calls);
                        # everything else: _readable
                        buf = conn.buf
                        n = conn.n
                        if buf is None or n or conn.req is not None:
                            readable(conn, ev[1], now, -1)
                            continue
                        try:
                            r = recv_into(conn.sock, buf, 0)
                        except OSError as e:
                            r = None if e.args and e.args[0] == _EAGAIN else 0  # nothing yet
                        if not r or buf.find(b"\r\n\r\n", 0, r) < 0:
                            readable(conn, ev[1], now, r)  # the end, nothing, or part of a head
                            continue
                        conn.n = r
                        conn.last = conn.t0 = now
                        self._seq += 1
                        conn.seq = self._seq
                        dispatch(conn)  # (a small frame: on the C stack)
                except Exception as e:
                    # the poll loop must survive anything: drop what failed, keep serving
                    self._trouble(e, conn)
            if accept:
                try:
                    self._accept(now, lsock, self)
                except Exception as e:
                    self._trouble(e, None)
            if accept_sites:
                for site in accept_sites:
                    try:
                        self._accept(now, site[0], site[1])
                    except Exception as e:
                        self._trouble(e, None)
            try:
                if self._accept_paused is not None and ticks_diff(now, self._accept_paused) > 100:
                    self._accept_paused = None
                    if len(self._conns) < self.max_connections:
                        # room again: those waiting get in now (or have gone), answers keep alive
                        self._waiting_since = None
                        self._shed = False
                    poller.modify(lsock, _POLLIN)
                    for site in self._sites.values():
                        poller.modify(site[0], _POLLIN)
                if self._returned:
                    self._take_back(now)
                if self._site_changes:
                    self._apply_site_changes()
                if ticks_diff(now, self._last_scan) > 200:
                    self._last_scan = now
                    if self._scan(now):
                        poller = self._poller
                        conns = self._conns
            except Exception as e:
                self._trouble(e, None)
        # stopping: this thread keeps the lead (so nobody else touches the poll state) and closes up
        return True

    def _trouble(self, e, conn):
        if isinstance(e, MemoryError):
            _gc_collect()
            if conn is not None and not conn.busy:
                self._fail(conn, 503, None)
            return
        if self.log_errors:
            print_exception(e)
        if conn is not None and not conn.busy:
            self._close(conn)

    def _key(self, sock):
        return sock if _MP else sock.fileno()

    def _accept(self, now, lsock, site):
        first = True   # the poller said a client is waiting; after that, none may be
        while True:
            if len(self._conns) >= self.max_connections:
                if not first:
                    return   # still readable if more wait: the next pass evicts for them
                if not self._evict():
                    # every slot is serving: new clients wait in the listen backlog (on the chip
                    # lwIP queues them without a socket each) until one frees, not refused
                    self._pause_accept(now)
                    return
            first = False
            try:
                s, addr = lsock.accept()
            except OSError as e:
                if e.args and e.args[0] not in (_EAGAIN, _EINTR):  # out of sockets or memory
                    if not self._evict():
                        # nothing to free: stop accepting for a moment instead of spinning on it
                        self._pause_accept(now)
                return
            s.setblocking(False)
            c = _Conn(s, addr, now, site)
            self._seq += 1
            c.seq = self._seq
            conns = self._conns
            conns[self._key(s)] = c
            self._poller.register(s, _POLLIN)
            if len(conns) > self._conns_peak:
                self._conns_peak = len(conns)
            self._waiting_since = None
            self._shed = False

    def _pause_accept(self, now):
        if self._waiting_since is None:
            self._waiting_since = now
        elif ticks_diff(now, self._waiting_since) > self.shed_after_ms:
            self._shed = True
        self._poller.modify(self._sock, 0)
        for other in self._sites.values():
            self._poller.modify(other[0], 0)
        self._accept_paused = now

    def _evict(self):
        # least recently used connection that is not being served and has no request under way;
        # failing that, the request head that has been arriving the longest, once it is slower than
        # slow_head_ms: a slowloris must not hold every slot until request_timeout
        victim = None
        slow = None
        now = ticks_ms()
        for c in self._conns.values():
            if c.busy:
                continue
            if c.t0 is None:
                # a connection that has not sent its first request yet gets first_request_ms to do
                # so: its client would not retry (one whose keep-alive reuse fails does)
                idle = ticks_diff(now, c.last)
                if idle > (self.keepalive_min_ms if c.hl else self.first_request_ms) and \
                        (victim is None or c.seq < victim.seq):
                    victim = c
            elif ticks_diff(now, c.t0) > self.slow_head_ms and (slow is None or ticks_diff(c.t0, slow.t0) < 0):
                slow = c
        victim = victim or slow
        if victim is None:
            return False
        self._close(victim)
        return True

    def _close(self, conn):
        key = self._key(conn.sock)
        if self._conns.pop(key, None) is not None and not conn.busy:
            try:
                self._poller.unregister(conn.sock)
            except (OSError, ValueError, KeyError):
                pass
        try:
            conn.sock.close()
        except OSError:
            pass
        if not conn.busy:
            self._put_buf(conn)
        conn.buf = None
        conn.mv = None

    def _get_buf(self, conn):
        # buffers and their memoryviews are kept in pairs (two lists: a tuple would be an allocation)
        if self._pool:
            conn.buf = self._pool.pop()
            conn.mv = self._pool_mv.pop()
        else:
            conn.buf = b = bytearray(self.buffer_size)
            conn.mv = memoryview(b)
        conn.n = 0

    def _put_buf(self, conn):
        b = conn.buf
        conn.buf = None
        conn.n = 0
        # an idle connection holds no buffer; the pool keeps a few while requests keep coming (no
        # garbage per request for the usual number of clients) and _scan shrinks it to two once
        # things are quiet: a bigger pool would be heap a large answer may need
        if b is not None and len(b) == self.buffer_size and len(self._pool) < self.workers + 2:
            self._pool.append(b)
            self._pool_mv.append(conn.mv)
        conn.mv = None

    def _readable(self, conn, ev, now, r):
        """Read from conn (r >= 0: the poll loop already did, and got r bytes, or None)."""
        buf = conn.buf
        if buf is None:
            self._get_buf(conn)
            buf = conn.buf
        n = conn.n
        if r == -1:
            if n >= len(buf):
                # only reachable while a small body is awaited: the buffer was sized for it
                self._fail(conn, 400, None)
                return
            try:
                r = _recv_into(conn.sock, buf, n)
            except OSError as e:
                if e.args and e.args[0] == _EAGAIN:  # (CPython raises BlockingIOError)
                    return
                r = 0
        if r is None:
            if ev & (_POLLHUP | _POLLERR):
                self._close(conn)
            return
        if r == 0:
            self._close(conn)
            return
        conn.last = now
        seq = self._seq + 1
        self._seq = seq
        conn.seq = seq
        if conn.t0 is None:
            conn.t0 = now
        n += r
        conn.n = n
        if conn.req is not None:
            if n >= conn.need:
                self._dispatch(conn)
        elif buf.find(b"\r\n\r\n", 0, n) >= 0:
            self._dispatch(conn)  # a complete head: the usual case, checked here without a call
        else:
            self._parse(conn)

    def _parse(self, conn):
        """A complete head in conn.buf goes to a worker (which parses it); else wait for more bytes, or
        answer an error as soon as the bytes so far cannot start a valid request."""
        buf = conn.buf
        if buf.find(b"\r\n\r\n", 0, conn.n) >= 0:
            self._dispatch(conn)
            return
        # incomplete: parse what is there anyway, so junk (a TLS ClientHello) is refused at once
        out = self._out
        res = parse_head(buf, conn.n, out)
        if res < 0:
            self._fail(conn, -res, reason(out[_OUT_REASON]) or None)
        elif res > 0:
            self._dispatch(conn)
        elif not _method_start(buf, conn.n):
            # the parser waits for the request line's end; a request starts with an upper-case method
            # (GET, SUBSCRIBE, ...), so a TLS handshake, NULs or text are refused now, not after
            # request_timeout with their slot held
            self._fail(conn, 400, "not an HTTP request")
        elif conn.n >= len(buf):
            if len(buf) >= self.max_head:
                self._fail(conn, 431 if out[_OUT_METHOD] else 414, None)  # request line complete: the headers are too big
                return
            nb = bytearray(min(self.max_head, len(buf) * 2))
            nb[:conn.n] = buf[:conn.n]
            conn.buf = nb
            conn.mv = memoryview(nb)

    def _error_close(self, conn, status, lead, reason):
        self._send_error_now(conn.sock, status, reason)
        self._give_back(conn, False, lead)

    def _make_request(self, conn, out, head_len):
        # No copy of the head: the Request decodes header fields from conn.buf while it is answered.
        # The method is found without an allocation; the target costs one slice (none more when it
        # is a string the runtime already knows, like a route's path).
        method = _method_of(conn, out[_OUT_METHOD], out[_OUT_METHOD_LEN])
        to = out[_OUT_TARGET]
        target = str(conn.mv[to:to + out[_OUT_TARGET_LEN]], "utf-8")
        authority = None
        if not target.startswith("/") and "://" in target:
            # absolute form (RFC 9112 3.2.2: a server must accept it): keep the path and query, and
            # the authority, which stands for the Host header (the Host guard checks that name)
            k = target.find("://") + 3
            j = target.find("/", k)
            authority = (target[k:j] if j >= 0 else target[k:]).partition("?")[0]
            if not authority or "@" in authority:   # (no host, or user info: RFC 9110 4.2.4)
                raise HTTPError(400, "bad request target")
            target = target[j:] if j >= 0 else "/"
        elif target[:1] != "/" and target != "*":
            raise HTTPError(400, "bad request target")   # (RFC 9112 3.2: a path, or * for OPTIONS)
        i = target.find("?")
        path = target if i < 0 else target[:i]
        if "%" in path:
            path = unquote(path)
        kind = out[_OUT_BODY]
        x = out[_OUT_FLAGS]
        if out[_OUT_HTTP11]:
            x |= _X_HTTP11
        if kind == _BODY_CHUNKED:
            x |= _FLAG_CHUNKED
        req = Request(conn, method, path, x)
        if path is not target:
            req._t = target
        if authority is not None:
            req._authority = authority
        if kind == _BODY_LENGTH:
            req.content_length = out[_OUT_LENGTH]
        conn.hl = head_len
        conn.out = out
        conn.cur = req
        return req

    def _fail(self, conn, status, reason):
        # an error found by the poll loop: best-effort non-blocking answer, then close
        self._send_error_now(conn.sock, status, reason)
        self._close(conn)

    def _send_error_now(self, sock, status, why):
        body = (why or status_reason(status, "Error")) + "\n"
        name = self.server_name
        msg = "HTTP/1.1 %d %s\r\n%sContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (
            status, status_reason(status, "Error"), ("Server: %s\r\n" % name) if name else "", len(body), body)
        try:
            sock.send(msg.encode())
        except OSError:
            pass
        _discard(sock)

    def _dispatch(self, conn):
        # a complete request: out of the poll set (its bytes are the serving thread's now) and queued;
        # the leader answers it right after this round of events
        conn.busy = True
        self._poller.unregister(conn.sock)
        with self._mu:
            self._jobs.append(conn)

    def _take_back(self, now):
        with self._mu:
            back = self._returned
            self._returned = []
            self._wake_pending = False
        for conn, keep in back:
            self._back(conn, keep, now)

    def _back(self, conn, keep, now):
        # leader only: a served connection returns to the poll set (or is closed)
        conn.busy = False
        if not keep or not self._running:
            self._close(conn)
            return
        conn.last = now
        self._seq += 1
        conn.seq = self._seq
        self._poller.register(conn.sock, _POLLIN)
        if conn.req is not None:
            return  # a head waiting for its body: keep reading (and its t0: 408 if too slow)
        if conn.n:
            conn.t0 = now
            self._parse(conn)  # a pipelined request already in the buffer: queued again, in turn
        else:
            conn.t0 = None
            self._put_buf(conn)  # an idle keep-alive connection holds no buffer

    def _scan(self, now):
        # timeouts: 408 for a request that takes too long to arrive, silent close of idle connections
        pool = self._pool
        if len(pool) > 2 and ticks_diff(now, self.last_request_ms) > 1000:
            del pool[2:]
            del self._pool_mv[2:]
        for c in list(self._conns.values()):
            if c.busy:
                continue
            if c.t0 is not None:
                if ticks_diff(now, c.t0) > self.request_timeout:
                    self._fail(c, 408, None)
            elif ticks_diff(now, c.last) > self.idle_timeout:
                self._close(c)
        # True when the table and the poll set were rebuilt (the poll loop takes the new ones)
        return self._conns_peak > 32 and len(self._conns) * 4 < self._conns_peak and self._compact()

    def _compact(self):
        # Leader only. A burst of connections (a scan, 200 idle sockets) grew the connection table and
        # the poll set, and neither shrinks again: MicroPython's dicts and poll sets keep their size.
        # Those grown blocks would stay in the middle of the heap for good, where a large request
        # body then finds no room. Both are built anew at today's size; the old ones go back whole.
        try:
            conns = {}
            poller = select.poll()
            poller.register(self._sock, 0 if self._accept_paused is not None else _POLLIN)
            if self._wake is not None:
                poller.register(self._wake, _POLLIN)
            for s, _r, _p in self._sites.values():
                poller.register(s, 0 if self._accept_paused is not None else _POLLIN)
            for key, c in self._conns.items():
                conns[key] = c
                if not c.busy:
                    poller.register(c.sock, _POLLIN)
        except MemoryError:
            return False   # the old ones are whole: try again at a later scan
        self._conns = conns
        self._poller = poller
        self._conns_peak = len(conns)
        return True

    def _poke(self):
        if self._wake is not None:
            try:
                self._wake.sendto(b"w", self._wake_addr)
            except OSError:
                pass

    # ---- serving ----
    def _give_back(self, conn, keep, lead):
        if lead:
            self._back(conn, keep, ticks_ms())
            return
        with self._mu:
            self._returned.append((conn, keep))
            poke = not self._wake_pending
            self._wake_pending = True
        if poke:
            self._poke()

    def _serve(self, conn, out, lead):
        """Answer the complete request in conn.buf, then give the connection back. lead: this thread
        holds the lead (it lets go while the handler runs). True if it still leads afterwards.

        On MicroPython a call to a function with more than a few locals allocates its frame on the
        heap, and that allocation is most of the cost of a small request: the per-request path is
        therefore a few large functions (_lead, _serve, _make_request, _handle), not many small ones."""
        req = conn.req
        conn.req = None
        if req is None:
            try:
                res = parse_head(conn.buf, conn.n, out)
                if res > 0:
                    req = self._make_request(conn, out, res)
            except MemoryError:
                _gc_collect()
                self._error_close(conn, 503, lead, None)
                return lead
            except HTTPError as e:  # a head the parser takes and HTTP does not (a bad request target)
                self._error_close(conn, e.status, lead, e.reason)
                return lead
            except ValueError:  # undecodable bytes in the head
                self._error_close(conn, 400, lead, None)
                return lead
            if res <= 0:
                if res == 0:  # only empty lines so far: skipped (RFC 9112 2.2), and dropped here,
                    # or the "\r\n\r\n" left in the buffer would be dispatched again, forever
                    buf, k = conn.buf, 0
                    while k + 1 < conn.n and buf[k] == 13 and buf[k + 1] == 10:
                        k += 2
                    self._keep_leftover(conn, k, conn.n)
                    self._give_back(conn, True, lead)
                else:
                    self._error_close(conn, -res, lead, reason(out[_OUT_REASON]) or None)
                return lead
            length = req.content_length
            if length is not None and not (req._x & _FLAG_EXPECT_CONTINUE):
                need = res + length
                # a small body: the poll loop reads it, no thread waits for it. With workers=0 the
                # poll loop's thread is the only one: it reads any body up to max_body that way
                # (in a buffer made for it), so a client sending slowly holds up nobody.
                if need > conn.n and (need <= len(conn.buf) or (not self.workers and length <= self.max_body)):
                    # The header fields are decoded now: this thread's parser offsets will be gone.
                    req.headers  # noqa: B018 - the property decodes them
                    if need > len(conn.buf):
                        nb = bytearray(need)
                        nb[:conn.n] = conn.mv[:conn.n]
                        conn.buf = nb
                        conn.mv = memoryview(nb)
                    conn.req = req
                    conn.need = need
                    self._give_back(conn, True, lead)
                    return lead
        if lead and self.workers:
            self._serving_since = ticks_ms()
            self._lead_lock.release()
        keep = False
        try:
            keep = self._handle(req)
        except Exception as e:  # the connection is broken (timeout, reset): just close it
            if self.log_errors and not isinstance(e, OSError):
                print_exception(e)
            keep = False
        req = None
        if lead and self.workers:
            lead = self._lead_lock.acquire(0)
            if lead:
                self._serving_since = None
                self._out = out  # another leader may have come and gone meanwhile: _parse uses ours again
        if not keep:
            _discard(conn.sock)  # closing with unread input would reset the connection before our answer is read
        if lead:
            self._back(conn, keep, ticks_ms())
        else:
            self._give_back(conn, keep, False)
        return lead

    def _handle(self, req):
        """Answer req (any kind: bodies, parameter routes, hooks, errors); True to keep the connection."""
        conn = req.conn
        with self._mu:
            self.request_count += 1
            self.last_request_ms = ticks_ms()
        resp = None
        if req.content_length is None and not req._x & _FLAG_CHUNKED:
            reader = NO_BODY
        else:
            reader = BodyReader(self, conn, req, conn.hl)
            req.stream = reader
        try:
            reader.start()
            hg = self.host_guard
            rv = hg(req) if hg is not None else None
            site = conn.site
            found = site._find(req) if rv is None else 0
            args = None
            t = type(found)
            if rv is not None:
                resp = make_response(rv)
            elif t is int:
                if found == 405:
                    # each method once: two routes can match one path (an app's /api/lamp, Hue's /api/<user>)
                    allow = []
                    for m in req.allow + ("OPTIONS",):
                        if m not in allow:
                            allow.append(m)
                    allow = {"Allow": ", ".join(allow)}
                    resp = Response(b"", 204, allow) if req.method == "OPTIONS" else \
                        Response("Method Not Allowed\n", 405, allow, "text/plain")
                elif found == 404:
                    resp = Response("Not Found\n", 404, None, "text/plain")
                elif found == 501:
                    resp = Response("Not Implemented: no resource here takes this method\n", 501, None, "text/plain")
                else:
                    resp = Response("Bad Request: a * target is for OPTIONS only\n", 400, None, "text/plain")
            else:
                route = found
                if t is tuple:
                    route, args = found
                if site._before:
                    for hook in site._before:
                        rv = hook(req)
                        if rv is not None:
                            resp = make_response(rv)
                            break
                if resp is None:
                    if reader is not NO_BODY:
                        req.route = route
                        limit = self.max_body if route.max_body is None else route.max_body
                        if not route.stream:
                            if req.content_length is not None and req.content_length > limit:
                                raise HTTPError(413)
                            if req.content_length is not None and req.content_length <= _READ_AHEAD:
                                # read a small body now: I/O errors then are not the handler's; a
                                # larger one is read when the handler asks (req.json() streams it)
                                req.body  # noqa: B018 - the property reads it
                    resp = make_response(route.fn(req, *args) if args else route.fn(req))
            if site._after:
                for hook in site._after:
                    rv = hook(req, resp)
                    if rv is not None:
                        resp = make_response(rv)
        except OSError:
            raise  # the connection broke while reading the body
        except Exception as e:
            resp = self._error_response(e)
        return self._finish(req, reader, resp)

    def _error_response(self, e):
        # what a handler (or hook) raised, as an answer; the server lives on
        if isinstance(e, HTTPError):
            return Response(e.reason + "\n", e.status, None, "text/plain")
        if self.log_errors:
            print_exception(e)
        if isinstance(e, MemoryError):
            _gc_collect()
            return Response("Out of memory\n", 503, None, "text/plain")
        return Response("Internal Server Error\n", 500, None, "text/plain")

    def _finish(self, req, reader, resp):
        """Send resp (after the error handler for its status, if any) and get the connection ready for
        its next request; True to keep it."""
        conn = req.conn
        try:
            check_response(resp)   # (a 500 that says why on the console, not a broken answer)
        except Exception as e:
            resp = self._error_response(e)
        status = resp.status
        errors = conn.site._errors
        if status >= 400 and errors:
            fn = errors.get(status)
            if fn is not None:
                try:
                    resp = make_response(fn(req))
                    status = resp.status
                except Exception as e:
                    if self.log_errors:
                        print_exception(e)
        # while new clients have waited long for a slot (_shed), answers close their connection: a
        # slot frees after a whole answer, and nobody can hold the slots by keeping them busy
        keep = req.keep_alive and self._running and status != 413 and not self._shed
        if keep and not reader.done:
            # the handler left (part of) the body unread: discard a little, else close
            if status == 503 or reader.broken or not reader.continued:
                keep = False
            else:
                try:
                    keep = reader.drain(self.max_drain)
                except (OSError, ValueError):
                    keep = False
        keep = self._send(req, resp, keep)
        self._answered(req, status)
        if keep:
            if reader is NO_BODY:
                start, end = conn.hl, conn.n
            else:
                start, end = reader.leftover()
            self._keep_leftover(conn, start, end)
        return bool(keep)

    def _answered(self, req, status):
        for fn in req.conn.site._on_request:
            try:
                fn(req, status)
            except Exception as e:
                print_exception(e)
        req.conn.cur = None  # the head in conn.buf is about to go: req.headers is what was decoded

    def _keep_leftover(self, conn, start, end):
        # bytes after the request (a pipelined next one) move to the front of the buffer
        if end > start:
            if start:
                buf = conn.buf
                buf[:end - start] = buf[start:end]
            conn.n = end - start
        else:
            conn.n = 0

    # ---- responses ----
    def wait_io(self, sock, ev):
        # a worker waits for its (non-blocking) socket: no mode switches, one timeout for all I/O
        if self.io_wait(sock, ev, self.io_timeout) <= 0:
            raise OSError(110)  # ETIMEDOUT

    def io_wait(self, sock, ev, most, since=None):
        """Wait at most `most` ms for sock to be ready for ev: 1 ready, 0 timed out, -1 timed out as
        the last free thread. While max(1, workers - 1) threads already wait on their clients (a body
        coming slowly, an answer read slowly), another waits last_thread_wait_ms at most: the poll
        loop answers queued requests only while a thread stands by, so a few slow clients would
        otherwise hold up every request. since (ticks): when this thread began waiting on this
        client; the last free thread's limit then counts from there, so a client that sends a byte
        now and then cannot hold it either (each byte restarted the wait)."""
        lock = self._mu
        with lock:
            last = self.io_waits >= max(1, self.workers - 1)
            self.io_waits += 1
        try:
            wait = most
            if last:
                cap = self.last_thread_wait_ms
                if since is not None:
                    cap -= ticks_diff(ticks_ms(), since)
                wait = max(0, min(most, cap))
            p = select.poll()
            p.register(sock, ev)
            if p.poll(wait):
                return 1
            return -1 if last and most > wait else 0
        finally:
            with lock:
                self.io_waits -= 1

    def write_all(self, sock, data, n=None, off=0):
        """Write data[off:n] (all of it by default), waiting at most io_timeout whenever the socket is
        full."""
        if n is None:
            n = len(data)
        while off < n:
            try:
                if _MP:
                    # write(buf, off, max_len): no slice object for a partial write
                    w = sock.write(data) if off == 0 and n == len(data) else sock.write(data, off, n - off)
                else:
                    w = sock.send(memoryview(data)[off:n])
            except OSError as e:
                if not e.args or e.args[0] != _EAGAIN:
                    raise
                w = None
            if w is None:
                self.wait_io(sock, select.POLLOUT)
                continue
            off += w

    def _prefix(self, ctype, name):
        # the head of a fast 200 answer up to the Content-Length value, kept per content type for the
        # server's own Server name (another port's answers, rare, are formatted each time)
        pre = self._status_line(200, name) + (_CTYPE_LINES.get(ctype) or ("Content-Type: %s\r\n" % ctype).encode()) \
            + b"Content-Length: "
        if name == self.server_name:
            cache = self._prefixes
            d = dict(cache[1]) if cache[0] == name else {}  # copy-on-write: other threads read the old one
            d[ctype] = pre
            self._prefixes = (name, d)
        return pre

    def _status_line(self, status, name):
        # b"HTTP/1.1 200 OK\r\nServer: iotutils\r\n", kept for 200 (most answers)
        pre = self._pre
        if status == 200 and pre is not None and pre[0] == name:
            return pre[1]
        line = "HTTP/1.1 %d %s\r\n" % (status, status_reason(status, "Unknown"))
        if name:
            line += "Server: %s\r\n" % name
        line = line.encode()
        if status == 200 and name == self.server_name:
            self._pre = (name, line)  # replaces the value of an existing attribute: safe across threads
        return line

    def _send(self, req, resp, keep):
        """Write resp; True if the connection may be reused. The head is formatted in one go and a
        small body goes out with it in one write."""
        sock = req.conn.sock
        name = req.conn.site.server_name
        body = resp.body
        status = resp.status
        no_body = status == 204 or status == 304 or status < 200
        head_only = no_body or req.method == "HEAD"
        ctype = resp.content_type
        extra = b""
        headers = resp.headers
        if headers:
            h = []
            for k in headers:
                v = headers[k]
                if k.lower() == "content-type":
                    ctype = None  # the handler's own wins
                if isinstance(v, (list, tuple)):  # e.g. several Set-Cookie
                    for one in v:
                        h.append("%s: %s\r\n" % (k, one))
                else:
                    h.append("%s: %s\r\n" % (k, v))
            extra = "".join(h).encode()
        if ctype and status != 304 and status != 204:
            ctype = _CTYPE_LINES.get(ctype) or ("Content-Type: %s\r\n" % ctype).encode()
        else:
            ctype = b""
        if not keep:
            conn_line = b"Connection: close\r\n"
        elif req.version == 0:
            conn_line = b"Connection: keep-alive\r\n"
        else:
            conn_line = b""
        t = type(body)
        if t is str or (t is not bytes and isinstance(body, str)):
            body = body.encode()
            t = bytes
        if t is bytes or isinstance(body, (bytearray, memoryview)):
            n = len(body)
            if no_body:
                data = b"%s%s%s%s\r\n" % (self._status_line(status, name), extra, ctype, conn_line)
            elif head_only or n > 1024:
                data = b"%s%s%sContent-Length: %d\r\n%s\r\n" % (
                    self._status_line(status, name), extra, ctype, n, conn_line)
            else:
                data = b"%s%s%sContent-Length: %d\r\n%s\r\n%s" % (
                    self._status_line(status, name), extra, ctype, n, conn_line,
                    body if t is bytes else bytes(body))  # MicroPython's %s embeds only bytes as they are
                body = None
            self.write_all(sock, data)
            if body is not None and not head_only and n:
                self.write_all(sock, body)
            return keep
        # a generator or a file: streamed
        stream = body
        try:
            length = getattr(resp, "length", None)
            chunked = False
            if no_body:
                framing = b""
            elif length is not None:
                framing = b"Content-Length: %d\r\n" % length
            elif head_only:
                framing = b""
            elif req.version >= 1:
                framing = b"Transfer-Encoding: chunked\r\n"
                chunked = True
            else:
                framing = b""
                if keep:  # HTTP/1.0: the end of the body is the end of the connection
                    keep = False
                    conn_line = b"Connection: close\r\n"
            self.write_all(sock, b"%s%s%s%s%s\r\n" % (self._status_line(status, name), extra, ctype, framing, conn_line))
            if head_only:
                pass
            elif hasattr(stream, "readinto"):
                self._send_file(sock, stream, chunked)
            else:
                self._send_gen(sock, stream, chunked)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        return keep

    def _send_file(self, sock, f, chunked):
        buf = bytearray(self.send_buffer)
        mv = memoryview(buf)
        while True:
            n = f.readinto(buf)
            if not n:
                break
            if chunked:
                self.write_all(sock, b"%x\r\n" % n)
                self.write_all(sock, mv[:n])
                self.write_all(sock, b"\r\n")
            else:
                self.write_all(sock, mv[:n])
        if chunked:
            self.write_all(sock, b"0\r\n\r\n")

    def _send_gen(self, sock, gen, chunked):
        for part in gen:
            if isinstance(part, str):
                part = part.encode()
            if not part:
                continue
            if chunked:
                self.write_all(sock, b"%x\r\n" % len(part) + part + b"\r\n")
            else:
                self.write_all(sock, part)
        if chunked:
            self.write_all(sock, b"0\r\n\r\n")
