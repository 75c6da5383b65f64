# MQTT 3.1.1 client: in the device's housekeeping, QoS 0 and 1, retain, will, clean sessions that
# re-subscribe and re-announce on every connect, keepalive that notices a half-open link, and
# reconnection with exponential backoff. Runs on MicroPython (>= 1.24) and on CPython.
#
#   m = MQTT("mqtt://user:pass@host:1883", client_id=None, keepalive=30)   # client id from the MAC
#   m.set_will("iotutils/<id>/status", "offline", retain=True)  # before start(): sent in CONNECT
#   m.on_connect(lambda: m.publish("iotutils/<id>/status", "online", retain=True))
#   m.subscribe("iotutils/<id>/+/set", callback)                # callback(topic str, payload bytes)
#   m.start()                     # returns at once; connects, and reconnects, in the housekeeping
#   m.publish(topic, payload, qos=0, retain=False)   # True when written (QoS 0) or queued (QoS 1)
#   m.connected; m.status(); m.kick() (Wi-Fi is back: retry now); m.drop(why) (Wi-Fi is gone); m.stop()
#   m.handlers() -> (subscriptions, on_connect callbacks), to carry them to a new client
#
# Or without a thread: call m.loop_once() often (Device's main loop): it connects when due, reads
# what arrived, keeps the link alive. Callbacks run in whichever thread calls loop_once().
#
# The broker being away is never an exception for the caller:
# - publish() while disconnected: QoS 0 is dropped (counted in status()["dropped"]), returns False;
#   QoS 1 is queued (at most max_queue messages, sent in order, one in flight at a time, re-sent
#   with DUP after a reconnect); when the queue is full the new message is refused (counted in
#   status()["refused"]): False.
# - publish() writes at once on the caller's thread: it blocks only while the socket's send buffer is
#   full (a dying link), at most `timeout` seconds; then the connection is dropped. A large payload
#   is written from where it is (a str as its own UTF-8 bytes on MicroPython), not copied.
# - a failed connect or a lost link: next attempt after 1 s, doubling to 60 s, +-25 % jitter.
# - keepalive k: PINGREQ after k/2 s without traffic either way; nothing received for 1.5 k s
#   (a broker or router gone without a FIN) -> the link is declared dead and closed.
# - an inbound packet larger than max_packet is not read: the connection is closed (logged).
#
# TLS: "mqtts://" verifies the broker against cadata (PEM or DER CA certificates) and its host name;
# without cadata MQTT() refuses mqtts unless insecure=True (encrypted, not authenticated). The wire
# format (packets, topic rules, URLs, backoff) is iotutils.mqtt.codec. Setting up, connecting and
# stopping are iotutils.mqtt.link (loaded when called, let go after each connect): a connected client
# holds only what it reads and publishes with.
import errno
import select
import socket
import sys

from iotutils._compat import (allocate_lock, handed_out, load, log, print_exception, public_names, sleep_ms, ticks_add,
                              ticks_diff, ticks_ms)
from iotutils.auth import der_certs
from iotutils.mqtt.codec import (backoff_ms, build_publish, decode_publish, default_client_id, parse_url, payload_bytes,
                                 rand16, topic_bytes, topic_matches, utf8)

_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBACK = const(0x90)
_UNSUBACK = const(0xB0)
_PINGRESP = const(0xD0)

_SLICE_MS = const(100)          # the longest a socket read or the idle wait blocks at a time
_MP = sys.implementation.name == "micropython"
del sys

# MQTT's methods that live in link.py (setting up, connecting, stopping)
_LATER = const(("set_will", "on_connect", "subscribe", "unsubscribe", "handlers", "start", "stop", "connect", "flush",
                "_connect_job", "_connect_in_job", "_connect", "_wrap", "_send_sub"))
# the wire format's helpers, part of this module's API too (iotutils.mqtt.codec's, handed out). The
# status and the retry timer stay on the class: the admin page asks for the status in a web handler,
# and a link may be lost in any thread (a publish that fails), where loading link.py would cost the
# thread's stack.
_CODEC = const(("build_connect", "build_subscribe", "decode_varint", "encode_varint", "filter_bytes", "rollout_selected",
                "varint_size"))


def __getattr__(name):
    if name == "__all__":   # (MicroPython's `from iotutils.mqtt import *` asks)
        return public_names(globals(), _CODEC)
    if name in _CODEC:
        return getattr(load("iotutils.mqtt.codec"), name)
    raise AttributeError(name)


_TIMEOUT_ERRNOS = (errno.EAGAIN, errno.ETIMEDOUT)
_Timeout = getattr(socket, "timeout", ())   # CPython's timeout error (args: "timed out")


def _timed_out(e):
    return (e.args and e.args[0] in _TIMEOUT_ERRNOS) or isinstance(e, _Timeout)


class LinkLost(Exception):
    """The connection is unusable (reason in args[0])."""


# ---------------------------------------------------------------- the client

class MQTT:
    #: largest inbound packet (bytes after the fixed header) read; a larger one is not read: the
    #: connection is closed and opened again (a PUBLISH that big would not fit the heap anyway)
    max_packet = 4096
    #: ms an inbound packet may take to arrive whole, from its first byte (more: the connection is
    #: dropped and made again); the housekeeping reads packets, and the main loop must not stall
    packet_ms = 2000
    #: seconds a TCP/TLS connect, the broker's CONNACK, or a blocked write may take
    timeout = 5
    #: QoS 1 messages kept while disconnected or behind the one in flight; more: publish() -> False
    max_queue = 8
    #: bytes of the buffer packets are read into and built in while connected (bigger packets use a
    #: temporary one)
    buffer_size = 256

    def __init__(self, url, client_id=None, keepalive=30, cadata=None, insecure=False):
        self._tls, self.host, self.port, user, password = parse_url(url)
        if self._tls and not cadata and not insecure:
            raise ValueError("cadata: mqtts:// needs the broker's CA certificate (or insecure=True)")
        self._cadata = der_certs(cadata) if cadata else None
        self._user = utf8("user", user) if user is not None else None
        self._password = password.encode() if password is not None else None
        if client_id is None:
            client_id = default_client_id()
        self.client_id = client_id
        self._cid = utf8("client_id", client_id)
        if not isinstance(keepalive, int) or not 0 <= keepalive <= 65535:
            raise ValueError("keepalive: whole seconds 0..65535 expected, got %r" % (keepalive,))
        self.keepalive = keepalive
        self._lock = allocate_lock()   # state: subscriptions, queue, counters
        self._io = allocate_lock()     # the socket: one packet read or written at a time
        self._s = None                 # the stream (TLS or the socket itself)
        self._raw = None               # the socket under it
        self._wpoll = None             # MicroPython: a poll of the socket for _wait
        self._poll = self._buf = None
        self.connected = False
        self.retained = False   #: in a subscription's callback: its message was retained (from the store)
        self._subs = []                # [filter, callback, qos] (its bytes are made when it is sent)
        self._queue = []               # QoS 1 outbox: [pid, topic bytes, payload bytes, retain, sent]
        self._pending = {}             # packet id -> filter of a SUBSCRIBE not yet acknowledged
        self._pid = 0
        self._will = None
        self._on_connect = []
        self._failures = 0
        self._next_ms = ticks_ms()     # next connect attempt
        self._backoff = 0
        self._kicked = self._probe = self._running = self._alive = self._in_step = False
        self._connecting = False   # a connect job runs (a hosted housekeeper: see _connect_job)
        self._stopped = False      # stop() was called (a connect job that ends after it disconnects)
        self._err = None
        self._rx_ms = self._tx_ms = self._ping_ms = 0
        self._connects = self._sent = self._received = 0
        self._dropped = 0              # QoS 0 messages published while disconnected
        self._refused = 0              # QoS 1 messages refused: the queue was full

    def __getattr__(self, attr):
        # the methods that set up, connect and stop (link.py), loaded when one is first called
        return handed_out("iotutils.mqtt.link", self, attr, _LATER)

    # ---- running ----

    def _task_name(self):
        return "mqtt:" + self.client_id

    def sock(self):
        """The socket whose data the client waits for (None while disconnected)."""
        return self._s

    def task(self, now):
        """One housekeeping step: connect when due, read what arrived, keep the link alive.
        -> ms until the next step (None once stopped)."""
        if not self._running:
            self._drop(None)
            self._alive = False
            return None
        wait = self.hosted_connect_step()
        if wait is not None:
            return wait
        self._in_step = True
        try:
            n = self._received
            try:
                self.loop_once(0)
            except Exception as e:  # a bug must not end the client: print it, go on
                log("mqtt: unexpected error:")
                print_exception(e)
                return _SLICE_MS * 10
        finally:
            self._in_step = False
        if not self.connected:   # the next attempt (kick() wakes it sooner)
            return min(max(_SLICE_MS, ticks_diff(self._next_ms, ticks_ms())), _SLICE_MS * 10)
        return 0 if self._received != n else _SLICE_MS * 2   # more may wait inside TLS

    def hosted_connect_step(self):
        """For a housekeeping step: while a connect job runs, or when one is due and the steps run in
        the main loop (Device.run()), the ms until the step wants to run again; else None (go on)."""
        if self._connecting:   # a connect job runs: the link is its until it is done
            return _SLICE_MS
        if not self.connected:
            from iotutils import tasks
            if tasks.shared().hosted():
                return self._connect_job()
        return None

    def kick(self):
        """The network is back: try to connect now (or, if connected, check the link now)."""
        self._kicked = True
        self._next_ms = ticks_ms()
        self._probe = True
        if self._running:
            from iotutils import tasks
            tasks.shared().wake(self._task_name())

    def drop(self, why="dropped by the application"):
        """Close the connection now, without DISCONNECT (the broker publishes the will): the network
        under it went away. The next attempt follows the backoff, or kick()."""
        self._drop(why)

    def loop_once(self, wait_ms=0):
        """One pass: connect when due, else read what arrived (waiting up to wait_ms for it) and
        keep the link alive. Never raises for network trouble."""
        t0 = ticks_ms()
        if not self.connected:
            while not self._kicked and ticks_diff(self._next_ms, ticks_ms()) > 0:
                left = wait_ms - ticks_diff(ticks_ms(), t0)
                if left <= 0:
                    return
                sleep_ms(min(_SLICE_MS, left, max(1, ticks_diff(self._next_ms, ticks_ms()))))
            self._kicked = False
            self._connect()
            return
        while self.connected:
            left = wait_ms - ticks_diff(ticks_ms(), t0)
            if self._readable(min(_SLICE_MS, max(0, left))):
                self._read_packets()
            if not self._keepalive() or ticks_diff(ticks_ms(), t0) >= wait_ms:
                return

    step = loop_once

    def status(self):
        """What the admin page and the console show."""
        with self._lock:
            queued = len(self._queue)
            inflight = 1 if queued and self._queue[0][4] else 0
        left = ticks_diff(self._next_ms, ticks_ms()) if not self.connected else 0
        return {
            "connected": self.connected, "host": self.host, "port": self.port, "tls": self._tls,
            "client_id": self.client_id, "last_error": self._err, "connects": self._connects,
            "reconnects": max(0, self._connects - 1), "failures": self._failures,
            "backoff_ms": self._backoff, "next_attempt_ms": max(0, left),
            "sent": self._sent, "received": self._received, "dropped": self._dropped, "refused": self._refused,
            "queued": queued, "inflight": inflight, "subscriptions": len(self._subs),
        }

    # ---- publishing ----

    def publish(self, topic, payload, qos=0, retain=False):
        """Send payload (bytes, str, or anything str() takes) to topic. True: written (QoS 0) or
        queued for delivery (QoS 1). False: QoS 0 while disconnected (dropped, counted), or the
        QoS 1 queue is full. ValueError for a bad topic or qos."""
        tb = topic_bytes(topic)
        pb = payload_bytes(payload)
        if qos == 0:
            if not self.connected:
                with self._lock:
                    self._dropped += 1
                return False
            return self._send_publish(tb, pb, 0, retain, 0, False)
        if qos != 1:
            raise ValueError("qos: 0 or 1 expected, got %r" % (qos,))
        with self._lock:
            if len(self._queue) >= self.max_queue:
                self._refused += 1
                return False
            self._queue.append([self._next_pid(), tb, pb, bool(retain), 0])
        self._pump()
        return True

    def _next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    def _pump(self):
        """Send the head of the QoS 1 queue if nothing is in flight (re-sent with DUP if it was
        sent on an earlier connection)."""
        if not self.connected:
            return
        with self._lock:
            if not self._queue or self._queue[0][4] == 2:
                return
            m = self._queue[0]
            dup = m[4] == 1
            m[4] = 2   # 0: never sent, 1: sent on an earlier connection, 2: in flight now
        if not self._send_publish(m[1], m[2], 1, m[3], m[0], dup):
            with self._lock:
                if m[4] == 2:
                    m[4] = 1

    def _send_publish(self, tb, pb, qos, retain, pid, dup):
        s = self._s
        if s is None:
            return False
        with self._io:
            if self._s is not s:
                return False
            # a large payload (a discovery config: KBs) is written from where it is, after its head
            apart = pb if self._buf is not None and len(pb) > len(self._buf) // 2 else None
            buf, n = build_publish(self._buf, tb, b"" if apart else pb, qos, retain, pid, dup, len(apart or b""))
            return self._write_or_drop(buf, n, apart)

    def _write_or_drop(self, buf, n, more=None):
        # caller holds self._io; more: bytes that follow buf's n (a large payload)
        try:
            self._write(buf, n)
            if more is not None:
                self._write(more, len(more))
            self._sent += 1
            return True
        except (OSError, LinkLost) as e:
            self._close_locked("write failed: %s" % reason(e))
            return False

    def _write(self, buf, n):
        """All n bytes of buf with one call when the socket takes them (caller holds self._io)."""
        mv = memoryview(buf)
        off = 0
        t0 = ticks_ms()
        wr = self._wr
        while off < n:
            try:
                k = wr(mv[off:n])
            except OSError as e:
                if not _timed_out(e):
                    raise
                k = 0
            if k:
                off += k
                t0 = ticks_ms()
            else:
                left = self.timeout * 1000 - ticks_diff(ticks_ms(), t0)
                if left <= 0:
                    raise LinkLost("sending blocked for %d s (the broker does not read, or does not finish "
                                "the TLS handshake)" % self.timeout)
                # bytes to read (a TLS handshake), or a short pause for room: POLLOUT would spin here
                self._wait(min(left, 50), select.POLLIN)
        self._tx_ms = ticks_ms()

    # ---- the connection's I/O (connecting is link.py) ----

    def _wait(self, ms, ev=select.POLLIN):
        # MicroPython: wait (at most ms) for bytes or room; CPython's socket timeout waits in the call
        if _MP and ms > 0:
            self._wpoll.modify(self._raw, ev)
            self._wpoll.poll(ms)

    def _retry_later(self, why):
        self._failures += 1
        self._err = why
        self._backoff = backoff_ms(self._failures, rand16())
        self._next_ms = ticks_add(ticks_ms(), self._backoff)
        log("mqtt: %s; next attempt in %d ms" % (why, self._backoff))

    def _drop(self, why):
        """Close the connection (from any thread); why: None for a deliberate stop."""
        with self._io:
            self._close_locked(why)

    def _close_locked(self, why):
        # caller holds self._io, so no read or write is under way on the socket being closed
        s = self._s
        if s is None:
            return
        self._s = None
        self._poll = None
        if why is not None:
            self._err = "connection lost: " + why   # before connected goes False: status() agrees
        self.connected = False
        with self._lock:
            if self._queue and self._queue[0][4] == 2:
                self._queue[0][4] = 1
        for x in (s, self._raw):
            try:
                x.close()
            except Exception:
                pass
        self._raw = None
        if why is not None:
            self._retry_later("connection lost: " + why)

    # ---- reading ----

    def _readable(self, ms):
        s = self._s
        p = self._poll
        if s is None or p is None:
            return False
        pending = getattr(s, "pending", None)   # CPython TLS: bytes already decrypted
        if pending is not None and pending():
            return True
        try:
            return bool(p.poll(ms))
        except OSError:
            return True   # let the read find out what is wrong

    def _read_exact(self, n, until, into=None):
        """n bytes into self._buf (or `into`) by the time `until` (ticks_ms): the memoryview of them,
        or None at end of stream (caller holds self._io)."""
        buf = into if into is not None else self._buf
        mv = memoryview(buf)
        off = 0
        rd = self._rd
        while off < n:
            try:
                k = rd(mv[off:n])
            except OSError as e:
                if not _timed_out(e):
                    raise
                k = None
            if k == 0:
                return None
            if k:
                off += k
                continue
            left = ticks_diff(until, ticks_ms())
            if left <= 0:
                raise LinkLost("a packet did not arrive whole in time")
            self._wait(min(left, _SLICE_MS))
        return mv[:n]

    def _read_packets(self):
        # one packet, then more while they are already there (a burst costs one poll), for packet_ms at
        # most: a broker sending slowly holds the main loop ~2 x packet_ms, not until the watchdog fires
        t0 = ticks_ms()
        for _ in range(16):
            if not self._read_packet() or not self._readable(0) or \
                    ticks_diff(ticks_ms(), t0) >= self.packet_ms:
                return

    def _read_packet(self):
        s = self._s
        if s is None:
            return False
        msg = None
        with self._io:
            if self._s is not s:
                return False
            try:
                until = ticks_add(ticks_ms(), self.packet_ms)
                hdr = self._read_exact(1, until)
                if hdr is None:
                    self._close_locked("the broker closed the connection")
                    return False
                first = hdr[0]
                n = 0
                shift = 0
                for _ in range(4):
                    b = self._read_exact(1, until)
                    if b is None:
                        raise LinkLost("closed inside a packet header")
                    n |= (b[0] & 0x7F) << shift
                    shift += 7
                    if not b[0] & 0x80:
                        break
                else:
                    raise LinkLost("malformed remaining length")
                if n > self.max_packet:
                    log("mqtt: inbound packet of %d bytes > max_packet %d: dropped, reconnecting"
                          % (n, self.max_packet))
                    self._close_locked("inbound packet of %d bytes over max_packet" % n)
                    return False
                body = self._read_exact(n, until, None if n <= len(self._buf) else bytearray(n))
                if body is None:
                    raise LinkLost("closed inside a packet")
                self._rx_ms = ticks_ms()
                self._received += 1
                kind = first & 0xF0
                if kind == _PUBLISH:
                    msg = decode_publish(first, body)
                    if msg[2] == 2:
                        raise LinkLost("QoS 2 PUBLISH (never asked for)")
                elif kind == _PUBACK:
                    msg = ((body[0] << 8) | body[1],) if n >= 2 else None
                elif kind == _SUBACK:
                    msg = ((body[0] << 8) | body[1], bytes(body[2:n]))
                elif kind not in (_PINGRESP, _UNSUBACK):
                    raise LinkLost("unexpected packet type 0x%02x" % first)
            except (OSError, ValueError, LinkLost, IndexError) as e:
                self._close_locked(reason(e))
                return False
        if msg is None:
            return True
        if kind == _PUBLISH:
            self._deliver(msg)
        elif kind == _PUBACK:
            self._acked(msg[0])
        else:
            self._subacked(msg[0], msg[1])
        return True

    def _deliver(self, msg):
        topic, payload, qos, retain, _, pid = msg
        with self._lock:
            cbs = [sub[1] for sub in self._subs if topic_matches(sub[0], topic)]
        self.retained = retain
        for cb in cbs:
            try:
                cb(topic, payload)
            except Exception as e:  # the app's bug must not cost the connection
                log("mqtt: callback for %s failed:" % topic)
                print_exception(e)
        self.retained = False
        if qos == 1:
            s = self._s
            if s is not None:
                with self._io:
                    if self._s is s:
                        ack = self._buf
                        ack[0] = _PUBACK
                        ack[1] = 2
                        ack[2] = pid >> 8
                        ack[3] = pid & 0xFF
                        self._write_or_drop(ack, 4)

    def _acked(self, pid):
        with self._lock:
            if self._queue and self._queue[0][0] == pid and self._queue[0][4] == 2:
                self._queue.pop(0)
            else:
                return
        self._pump()

    def _subacked(self, pid, codes):
        with self._lock:
            fs = self._pending.pop(pid, None)
        if codes and codes[0] == 0x80:
            self._err = "the broker refused the subscription to %s" % fs
            log("mqtt: " + self._err)

    def _keepalive(self):
        """PINGREQ when due; False (and the link closed) when nothing came for 1.5 x keepalive."""
        if not self.keepalive or not self.connected:
            return self.connected
        now = ticks_ms()
        ka = self.keepalive * 1000
        quiet = ticks_diff(now, self._rx_ms)
        if quiet > ka * 3 // 2:
            self._drop("nothing from the broker for %d ms (keepalive %d s): link dead"
                       % (quiet, self.keepalive))
            return False
        half = ka // 2
        if self._probe or ((quiet >= half or ticks_diff(now, self._tx_ms) >= half)
                           and ticks_diff(now, self._ping_ms) >= half):
            self._probe = False
            self._ping_ms = now
            s = self._s
            with self._io:
                if self._s is s and s is not None:
                    self._write_or_drop(b"\xc0\x00", 2)
        return self.connected


def reason(e):
    """A one-line reason for an exception (MicroPython's TLS errors start with a newline)."""
    if isinstance(e, LinkLost):
        return e.args[0]
    if isinstance(e, _Timeout):
        return "timed out"
    if isinstance(e, OSError) and e.args and isinstance(e.args[0], int):
        code = e.args[0]
        if len(e.args) > 1:
            return " ".join(str(e.args[1]).split())
        name = errno.errorcode.get(code) if hasattr(errno, "errorcode") else None
        return "%s (errno %d)" % (name or "OSError", code)
    return " ".join(("%s: %s" % (type(e).__name__, e)).split())
