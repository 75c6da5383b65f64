# The MQTT client's setting-up and connecting: the will, callbacks and subscriptions, start and
# stop, flush, the connect itself (DNS, TCP, TLS, CONNACK, subscriptions renewed). These are
# iotutils.mqtt.MQTT's methods that run at boot, at a connect or when asked; a connected client
# reading and publishing never calls them. MQTT hands them out (its __getattr__): this module is
# loaded at the first call and let go at the end of each connect. Each function takes the client as
# `self`; the state stays on it. What a web handler or any thread may call (status(), the retry
# timer) stays on the client: loading a module there would cost that thread's stack (an admin
# import of an MQTT URL ran out of it when the URL's rule lived here).
import gc
import select
import socket
import sys

from iotutils._compat import _thread, log, print_exception, sleep_ms, start_thread, ticks_add, ticks_diff, ticks_ms, unload
from iotutils.mqtt import LinkLost, reason
from iotutils.mqtt.codec import build_connect, build_subscribe, filter_bytes, payload_bytes, topic_bytes

_CONNACK = const(0x20)
_SLICE_MS = const(100)   # (iotutils.mqtt's: a const folds only inside its own module)
_MP = sys.implementation.name == "micropython"
del sys

_REFUSED = const(("", "unacceptable protocol version", "client id rejected", "server unavailable",
                  "bad user name or password", "not authorized"))


def set_will(self, topic, payload, retain=True, qos=0):
    """The message the broker publishes when this client vanishes without DISCONNECT (sent in
    every CONNECT; set it before start()). None removes it."""
    if topic is None:
        self._will = None
        return
    if qos not in (0, 1):
        raise ValueError("qos: 0 or 1 expected, got %r" % (qos,))
    self._will = (topic_bytes(topic), payload_bytes(payload), qos, bool(retain))


def on_connect(self, callback):
    """callback() after every successful connect, subscriptions renewed (re-announce state
    here: sessions are clean). Runs in the client's thread. Also a decorator."""
    self._on_connect.append(callback)
    return callback


def subscribe(self, topic_filter, callback, qos=0):
    """callback(topic str, payload bytes) for every message matching topic_filter (wildcards
    + and #). Kept across reconnects. qos: the most the broker may use to deliver (0 or 1)."""
    fb = filter_bytes(topic_filter)
    if qos not in (0, 1):
        raise ValueError("qos: 0 or 1 expected, got %r" % (qos,))
    if isinstance(topic_filter, (bytes, bytearray)):
        topic_filter = fb.decode()
    with self._lock:
        for s in self._subs:
            if s[0] == topic_filter:
                s[1] = callback
                s[2] = qos
                break
        else:
            self._subs.append([topic_filter, callback, qos])
    if self.connected:
        _send_sub(self, topic_filter, fb, qos, False)
    return True


def unsubscribe(self, topic_filter):
    fb = filter_bytes(topic_filter)
    if isinstance(topic_filter, (bytes, bytearray)):
        topic_filter = fb.decode()
    with self._lock:
        self._subs = [s for s in self._subs if s[0] != topic_filter]
    if self.connected:
        _send_sub(self, topic_filter, fb, 0, True)


def handlers(self):
    """([(filter, callback, qos)], [on_connect callbacks]) registered so far (to carry them to a
    client made with new settings)."""
    with self._lock:
        return [(s[0], s[1], s[2]) for s in self._subs], list(self._on_connect)


def start(self):
    """Connect and stay connected as a step of the device's housekeeping (iotutils.tasks:
    no thread of its own; callbacks run there); returns at once."""
    if self._running:
        return self
    if _thread is None:
        raise OSError("mqtt: this port has no threads: call loop_once() from the main loop")
    self._running = True
    self._alive = True
    self._stopped = False
    from iotutils import tasks
    tasks.shared().add(self._task_name(), self.task, sock=self.sock).start()
    return self


def stop(self):
    """Disconnect cleanly (the broker drops the will) and leave the housekeeping."""
    self._running = False
    self._stopped = True
    s = self._s
    if s is not None and self.connected:
        with self._io:
            if self._s is s:
                try:
                    self._write(b"\xe0\x00", 2)
                except (OSError, LinkLost):
                    pass
    self._drop(None)
    from iotutils import tasks
    tasks.shared().remove(self._task_name())
    t0 = ticks_ms()
    while (self._in_step or self._connecting) and ticks_diff(ticks_ms(), t0) < 3000:   # a step ends first
        sleep_ms(10)
    self._alive = False


def connect(self):
    """One connect attempt now, on the caller's thread (when not using start()). -> connected."""
    if not self.connected:
        _connect(self)
    return self.connected


def flush(self, timeout_ms=5000):
    """Wait until every queued QoS 1 message is acknowledged (True) or timeout_ms passed."""
    t0 = ticks_ms()
    while self._queue:
        if ticks_diff(ticks_ms(), t0) >= timeout_ms:
            return False
        if not self._running:
            self.loop_once(min(_SLICE_MS, timeout_ms))
        else:
            sleep_ms(1)
    return True


def _connect_job(self):
    # The housekeeping steps run in the main loop (Device.run()): a connect takes seconds (DNS,
    # TCP, a TLS handshake, CONNACK, then the subscriptions and on_connect callbacks) and must not
    # hold that loop, its user tasks or its watchdog. It gets a short-lived thread of its own.
    left = ticks_diff(self._next_ms, ticks_ms())
    if not self._kicked and left > 0:
        return min(max(_SLICE_MS, left), _SLICE_MS * 10)
    self._kicked = False
    self._connecting = True
    try:
        from iotutils import hal
        start_thread("mqtt", _connect_in_job, (self,), hal.JOB_STACK)
    except (OSError, MemoryError, RuntimeError) as e:   # no room for a thread now: next step
        self._connecting = False
        self._retry_later("no thread for the connect now: %s" % (e,))
    return _SLICE_MS


def _connect_in_job(self):
    try:
        if not self._stopped:
            _connect(self)
    except Exception as e:  # _connect handles the network; a bug must not end the client
        log("mqtt: unexpected error:")
        print_exception(e)
    finally:
        self._connecting = False
        if self._stopped:
            self._drop(None)   # stopped while it connected


def _connect(self):
    """One connect attempt; then this module is let go (a connected client reads and publishes
    without it) until the next connect, a lost link or a status()."""
    try:
        return _attempt(self)
    finally:
        unload("iotutils.mqtt.link")


def _attempt(self):
    self._backoff = 0
    raw = s = None
    # a connection lives for days (its socket, TLS session, buffers and poll object): collected
    # first, they fill the holes low in the heap instead of splitting its largest free block
    gc.collect()
    try:
        ai = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)[0]
        raw = socket.socket(ai[0], socket.SOCK_STREAM)
        raw.settimeout(self.timeout)
        raw.connect(ai[-1])
        try:
            raw.setsockopt(getattr(socket, "IPPROTO_TCP", 6), getattr(socket, "TCP_NODELAY", 1), 1)
        except (OSError, TypeError):
            pass  # a port without TCP_NODELAY: packets still go out whole (one write each)
        if _MP:
            # non-blocking, waited for with poll (_wait): a blocking readinto that times out part-way
            # loses what it read, and a blocking TLS handshake's timeout restarts at every signal
            raw.setblocking(False)
            self._wpoll = select.poll()
            self._wpoll.register(raw, select.POLLIN)
        s = _wrap(self, raw) if self._tls else raw
        if not _MP:
            for x in (s, raw):
                try:
                    x.settimeout(_SLICE_MS / 1000)
                except OSError:
                    pass  # the TLS socket took over raw's descriptor
        self._raw = raw
        self._rd = getattr(s, "readinto", None) or s.recv_into
        self._wr = getattr(s, "write", None) or s.send
        if self._buf is None:
            # one buffer both ways: every read and write holds self._io, and what a read brings is
            # copied out (decode_publish) before the lock goes
            self._buf = bytearray(self.buffer_size)
        with self._io:
            buf, n = build_connect(self._buf, self._cid, self.keepalive, self._user, self._password,
                                   self._will)
            self._s = s
            self._write(buf, n)
            ack = self._read_exact(4, ticks_add(ticks_ms(), self.timeout * 1000))
            if ack is None:
                raise LinkLost("connection closed before CONNACK")
            if ack[0] != _CONNACK or ack[1] != 2:
                raise LinkLost("not an MQTT broker (no CONNACK)")
            if ack[3]:
                rc = ack[3]
                raise LinkLost("broker refused the connection: %s (%d)"
                               % (_REFUSED[rc] if rc < len(_REFUSED) else "code", rc))
            p = select.poll()
            p.register(s, select.POLLIN)
            self._poll = p
            now = ticks_ms()
            self._rx_ms = self._tx_ms = self._ping_ms = now
            self.connected = True
    except Exception as e:  # OSError, TLS errors (ValueError on MicroPython), LinkLost
        self._s = None
        self._poll = None
        for x in (s, raw):
            if x is not None:
                try:
                    x.close()
                except Exception:
                    pass
        self._retry_later("connect to %s:%d failed: %s" % (self.host, self.port, reason(e)))
        return False
    self._connects += 1
    self._failures = 0
    self._err = None
    log("mqtt: connected to %s:%d as %s" % (self.host, self.port, self.client_id))
    with self._lock:
        subs = list(self._subs)
        for m in self._queue:
            if m[4]:
                m[4] = 1   # in flight on the old connection: re-send with DUP
        self._pending = {}
    for sub in subs:
        if not _send_sub(self, sub[0], filter_bytes(sub[0]), sub[2], False):
            return False
    self._pump()
    for cb in self._on_connect:
        if not self.connected:
            break
        try:
            cb()
        except Exception as e:
            log("mqtt: on_connect callback %r failed:" % (cb,))
            print_exception(e)
    return self.connected


def _wrap(self, raw):
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if self._cadata:
        for der in self._cadata:   # one at a time: MicroPython's ssl parses one DER certificate per call
            ctx.load_verify_locations(cadata=der)
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        if hasattr(ctx, "check_hostname"):
            ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if _MP:   # the handshake happens in the first write (the CONNECT), within its deadline
        return ctx.wrap_socket(raw, server_hostname=self.host, do_handshake_on_connect=False)
    return ctx.wrap_socket(raw, server_hostname=self.host)


def _send_sub(self, fs, fb, qos, unsub):
    s = self._s
    if s is None:
        return False
    with self._lock:
        pid = self._next_pid()
        if not unsub:
            self._pending[pid] = fs
    with self._io:
        if self._s is not s:
            return False
        buf, n = build_subscribe(self._buf, pid, fb, qos, unsub)
        return self._write_or_drop(buf, n)
