# The web server's life cycle: binding, starting its threads, stopping, and the extra ports a server
# also serves (listen/unlisten: WeMo devices'). These are WebServer's methods that run when a server
# starts or stops or a port comes or goes, never per request: WebServer hands them out (its
# __getattr__) and this module is loaded when one is called; start() lets it go again, and so does a
# Device once started (its reports ask for the sockets); the next listen() or stop() loads it again.
# Each function takes the server as `self`.
import _thread
import select
import socket

from iotutils._compat import log, sleep_ms, start_thread, ticks_diff, ticks_ms, unload
from iotutils.web.engine import check_port
from iotutils.web.routing import Router

_POLLIN = select.POLLIN


def _bind(self):
    try:
        from iotutils import hal
    except ImportError:  # installed without the hardware layer
        hal = None
    port = self.port
    host = self.host
    if hal is not None:
        try:
            port = hal.port(self.port)
        except ValueError:
            pass
        if host is None:
            host = "0.0.0.0" if getattr(hal, "PLATFORM", "") == "esp32" else hal.ip()
    if host is None:
        host = "0.0.0.0"
    self._host_ip = host
    self._sock = _listener(self, host, port)
    self.bound_port = port
    # the wake-up socket: a thread that lost the lead hands its connection back to the poll loop
    # and pokes it with a datagram
    try:
        w = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        wa = socket.getaddrinfo("127.0.0.1", port)[0][-1]
        w.bind(wa)
        w.setblocking(False)
        self._wake = w
        self._wake_addr = wa
    except OSError:
        self._wake = None  # the poll loop then polls with a short timeout instead


def _listener(self, host, port):
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(socket.getaddrinfo(host, port)[0][-1])
        s.listen(self.backlog)
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


def listen(self, port, router, wait_ms=1000):
    """Also serve `router` (a Router: routes and hooks of its own, e.g. a WeMo device's) on `port`,
    from this server's threads and poll loop: every port of a device costs a listening socket, not
    a server with threads, buffers and a wake-up socket of its own. Before or after start(); after
    it, returns once the port listens (the poll loop binds it), so what is advertised next (an
    SSDP location) is reachable, or after wait_ms as unlisten() does."""
    check_port(port)
    if not isinstance(router, Router):
        raise TypeError("router: a Router expected, got %s" % type(router).__name__)
    _change_site(self, port, router, wait_ms)


def unlisten(self, port, wait_ms=1000):
    """Stop serving the port given to listen() (its connections are closed). Returns once the
    port is closed, so a client that connects afterwards is refused (or after wait_ms when no
    thread leads the poll loop, e.g. while every one runs a handler)."""
    _change_site(self, port, None, wait_ms)


def _change_site(self, port, router, wait_ms):
    # queued for the poll loop (the poll set is the leader's); while serving, wait until applied
    with self._mu:
        self._site_changes.append((port, router))
        self._site_asked += 1
        mine = self._site_asked
    self._poke()
    t0 = ticks_ms()
    while self._running and self._site_done < mine and ticks_diff(ticks_ms(), t0) < wait_ms:
        sleep_ms(2)


def _apply_site_changes(self):
    # leader only (or before the threads start): the poll set and the site table are its
    with self._mu:
        changes = self._site_changes
        self._site_changes = []
        done = self._site_asked
    for port, router in changes:
        for key in list(self._sites):
            s, r, p = self._sites[key]
            if p == port:
                del self._sites[key]
                for c in [c for c in self._conns.values() if c.site is r and not c.busy]:
                    self._close(c)
                try:
                    self._poller.unregister(s)
                except (OSError, ValueError, KeyError):
                    pass
                s.close()
        if router is not None:
            try:
                from iotutils import hal
                host_port = hal.port(port)
            except (ImportError, ValueError):
                host_port = port
            try:
                s = _listener(self, self._host_ip, host_port)
            except OSError as e:
                log("server: cannot listen on port %d: %s" % (port, e))
                continue
            self._sites[self._key(s)] = (s, router, port)
            self._poller.register(s, _POLLIN)
    self._site_done = done


def sockets(self):
    """What the server holds open, for the memory budget: {"listen", "tcp", "udp", "tcp_max"}
    (listening sockets, client connections now, the UDP wake-up socket, most connections)."""
    if not self._running:
        return {"listen": 0, "tcp": 0, "udp": 0, "tcp_max": 0}
    return {"listen": 1 + len(self._sites), "tcp": len(self._conns), "udp": 1 if self._wake is not None else 0,
            "tcp_max": self.max_connections}


def start(self):
    """Bind and serve from background threads; returns at once."""
    if self._running:
        return
    _prepare(self)
    for _ in range(self.workers + 1):
        _spawn(self)
    # a started server needs none of this until a port comes or goes or it stops: let it go (on
    # stock MicroPython that is its bytecode too)
    unload(__name__)


def serve_forever(self):
    """Bind and serve from this thread (and `workers` more)."""
    if not self._running:
        _prepare(self)
        for _ in range(self.workers):
            _spawn(self)
    self._run(False)


def stop(self, timeout_ms=5000):
    """Stop serving: close every connection and the listening socket; wait for the threads."""
    if not self._running:
        return
    self._running = False
    self._poke()
    t0 = ticks_ms()
    while self._threads > 0 and ticks_diff(ticks_ms(), t0) < timeout_ms:
        sleep_ms(5)


def _prepare(self):
    # everything the threads share exists before the first one starts: with no GIL a new
    # attribute resizes the instance dict while other threads read it
    _bind(self)
    poller = select.poll()
    poller.register(self._sock, _POLLIN)
    if self._wake is not None:
        poller.register(self._wake, _POLLIN)
    self._poller = poller
    self._conns = {}
    self._pool = []
    self._pool_mv = []
    self._jobs = []
    self._returned = []
    self._wake_pending = False
    self._standby = 0
    self._serving_since = None
    self._last_scan = ticks_ms()
    self._lead_lock = _thread.allocate_lock()
    self._line_lock = _thread.allocate_lock()
    # an empty poll set to sleep on: in the kernel (time.sleep_ms wakes every 0.5 ms on unix)
    self._nap = select.poll() if self.workers else None
    _apply_site_changes(self)  # ports listen()ed before start()
    self._running = True


def _spawn(self):
    with self._mu:
        self._threads += 1
    size = self.stack_size
    if size is None:
        try:
            from iotutils import hal
            size = hal.WEB_STACK
        except ImportError:  # installed without the hardware layer
            size = 0
    start_thread("web", self._run, (True,), size)


def _close_all(self):
    # connections still in another thread's hands come back (and are closed) first: closing a
    # socket another thread is using could hand its descriptor number to someone else
    conns = self._conns
    t0 = ticks_ms()
    while any(c.busy for c in conns.values()) and ticks_diff(ticks_ms(), t0) < self.io_timeout:
        if self._returned:
            self._take_back(ticks_ms())
        else:
            sleep_ms(5)
    with self._mu:
        self._jobs.clear()
    for c in list(conns.values()):
        c.busy = False
        self._close(c)
    try:
        self._poller.unregister(self._sock)
    except (OSError, ValueError, KeyError):
        pass
    self._sock.close()
    for s, _r, _p in self._sites.values():
        try:
            self._poller.unregister(s)
        except (OSError, ValueError, KeyError):
            pass
        s.close()
    self._sites = {}
    if self._wake is not None:
        self._wake.close()
    self._sock = None
