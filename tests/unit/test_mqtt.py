# iotutils.mqtt: packet encoding and decoding, topic rules and matching, URLs, backoff, the
# rollout hash, and the client against a scripted broker on loopback (CPython and MicroPython).
import socket

from mpunit import raises

from iotutils import mqtt
from iotutils._compat import _thread, sleep_ms, ticks_diff, ticks_ms


def _hex(b):
    return "".join("%02x" % x for x in bytes(b))


def test_varint_edges_round_trip():
    cases = ((0, "00"), (127, "7f"), (128, "8001"), (16383, "ff7f"), (16384, "808001"),
             (2097151, "ffff7f"), (2097152, "80808001"), (268435455, "ffffff7f"))
    for n, want in cases:
        buf = bytearray(5)
        end = mqtt.encode_varint(buf, 0, n)
        assert _hex(buf[:end]) == want, (n, _hex(buf[:end]))
        assert end == mqtt.varint_size(n)
        assert mqtt.decode_varint(buf, 0) == (n, end)
    raises(ValueError, mqtt.encode_varint, bytearray(5), 0, 268435456)
    raises(ValueError, mqtt.encode_varint, bytearray(5), 0, -1)
    raises(ValueError, mqtt.decode_varint, b"\xff\xff\xff\xff\x01")   # a fifth byte: malformed
    raises(IndexError, mqtt.decode_varint, b"\x80\x80")              # ends inside the number
    assert mqtt.decode_varint(b"\x00\x80\x01", 1) == (128, 3)


def test_connect_packet_flags():
    buf, n = mqtt.build_connect(None, b"c1", 30)
    # fixed header, "MQTT", level 4, flags: clean session only, keepalive 30, client id
    assert _hex(buf[:n]) == "100e" + "00044d515454" + "04" + "02" + "001e" + "00026331"
    buf, n = mqtt.build_connect(None, b"c1", 60, will=(b"w/t", b"bye", 1, True))
    assert buf[9] == 0x02 | 0x04 | 0x08 | 0x20      # clean, will, will QoS 1, will retain
    assert bytes(buf[n - 10:n]) == b"\x00\x03w/t\x00\x03bye"
    buf, n = mqtt.build_connect(None, b"c1", 0, user=b"u", password=b"p\x00w")
    assert buf[9] == 0x02 | 0x80 | 0x40 and buf[10:12] == b"\x00\x00"
    assert bytes(buf[n - 8:n]) == b"\x00\x01u\x00\x03p\x00w"
    buf, n = mqtt.build_connect(None, b"c1", 5, user=b"u")
    assert buf[9] == 0x02 | 0x80
    assert buf[1] == n - 2                     # remaining length is what follows it


def test_publish_packet_with_and_without_packet_id():
    buf, n = mqtt.build_publish(None, b"a/b", b"hi")
    assert _hex(buf[:n]) == "3007" + "0003612f62" + "6869"
    buf, n = mqtt.build_publish(None, b"a/b", b"hi", qos=1, retain=True, pid=0x1234, dup=True)
    assert _hex(buf[:n]) == "3b09" + "0003612f62" + "1234" + "6869"
    assert mqtt.decode_publish(buf[0], buf[2:n]) == ("a/b", b"hi", 1, True, True, 0x1234)
    assert mqtt.decode_publish(0x30, b"\x00\x03a/b") == ("a/b", b"", 0, False, False, 0)
    # a payload larger than the buffer offered gets a buffer of its own, the offered one is untouched
    small = bytearray(16)
    big, n = mqtt.build_publish(small, b"t", b"x" * 300)
    assert big is not small and n == 1 + 2 + 2 + 1 + 300 and big[1:3] == b"\xaf\x02"   # 303
    same, n = mqtt.build_publish(small, b"t", b"x")
    assert same is small and n == 6
    raises(ValueError, mqtt.decode_publish, 0x30, b"\x00\x09a/b")          # topic past the end
    raises(ValueError, mqtt.decode_publish, 0x36, b"\x00\x01a\x00\x01")    # QoS 3
    raises(ValueError, mqtt.decode_publish, 0x30, b"\x00\x02\xff\xfe")      # topic not UTF-8


def test_subscribe_and_unsubscribe_packets():
    buf, n = mqtt.build_subscribe(None, 10, b"a/+", qos=1)
    assert _hex(buf[:n]) == "8208" + "000a" + "0003612f2b" + "01"
    buf, n = mqtt.build_subscribe(None, 11, b"a/#", unsubscribe=True)
    assert _hex(buf[:n]) == "a207" + "000b" + "0003612f23"


def test_topic_matching():
    yes = (("a/b", "a/b"), ("a/+", "a/b"), ("a/#", "a/b/c"), ("a/#", "a"), ("#", "a/b"),
           ("+/+", "/x"), ("/+", "/x"), ("a/+/c", "a//c"), ("+", ""), ("$SYS/#", "$SYS/x"),
           ("$SYS/+", "$SYS/x"), ("a/b/#", "a/b/"), ("+/b", "a/b"))
    no = (("a/b", "a/c"), ("a/+", "a/b/c"), ("a/+", "a"), ("+", "/x"), ("a/b", "a/b/c"),
          ("#", "$SYS/x"), ("+/x", "$SYS/x"), ("a/b/c", "a/b"), ("A/b", "a/b"))
    for f, t in yes:
        assert mqtt.topic_matches(f, t), (f, t)
    for f, t in no:
        assert not mqtt.topic_matches(f, t), (f, t)


def test_topic_and_filter_rules_name_the_field():
    assert mqtt.topic_bytes("iotutils/ab/état") == "iotutils/ab/état".encode()
    assert mqtt.filter_bytes("a/+/#") == b"a/+/#"
    for bad in ("", "a/+", "a/#", "a\x00b", "a\nb", "a\x7fb", "a\u0085b", "a\ufffeb", b"\xff", 5, "x" * 65536):
        e = raises(ValueError, mqtt.topic_bytes, bad)
        assert str(e).startswith("topic:"), e
    for bad in ("", "a/#/b", "a#", "a/b#", "a+/b", "a/+b", "a\x01"):
        e = raises(ValueError, mqtt.filter_bytes, bad)
        assert str(e).startswith("topic_filter:"), e
    e = raises(ValueError, mqtt.utf8, "client_id", "a\x1fb")
    assert "client_id" in str(e) and "U+001F" in str(e)
    assert mqtt.utf8("user", b"caf\xc3\xa9") == b"caf\xc3\xa9"


def test_url_parsing():
    assert mqtt.parse_url("mqtt://broker") == (False, "broker", 1883, None, None)
    assert mqtt.parse_url("mqtts://broker/") == (True, "broker", 8883, None, None)
    assert mqtt.parse_url("mqtt://u:p@h:1999") == (False, "h", 1999, "u", "p")
    assert mqtt.parse_url("mqtt://us%40er:p%3Aw%25d@h") == (False, "h", 1883, "us@er", "p:w%d")
    assert mqtt.parse_url("mqtt://u:p@ss@h") == (False, "h", 1883, "u", "p@ss")   # last @ ends them
    assert mqtt.parse_url("mqtt://onlyuser@h") == (False, "h", 1883, "onlyuser", None)
    assert mqtt.parse_url("mqtt://u:@h") == (False, "h", 1883, "u", "")
    assert mqtt.parse_url("mqtt://%C3%A9:x@h")[3] == "é"
    assert mqtt.parse_url("mqtts://[::1]:8884") == (True, "::1", 8884, None, None)
    for bad in ("http://h", "mqtt://", "mqtt://h:0", "mqtt://h:70000", "mqtt://h:x", "mqtt://h/topic",
                "mqtt://[::1", "mqtt://u:%zz@h", "mqtt://u:%4@h", None):
        e = raises(ValueError, mqtt.parse_url, bad)
        assert str(e).startswith("url:"), e


def test_a_bad_url_is_never_quoted_with_its_password():
    # the error reaches the console, the admin page and GET /admin/api/mqtt: it must not carry the
    # credentials of a URL the program or the owner got slightly wrong
    for bad in ("mqtt://bob:TOPSECRET@h/x", "http://bob:TOPSECRET@h", "mqtt://bob:TOPSECRET@h:99999",
                "mqtt://bob:TOPSECRET@", "mqtt://bob:TOP@SECRET@[::1", "mqtt://bob:TOP/SECRET@h"):
        e = str(raises(ValueError, mqtt.parse_url, bad))
        assert "SECRET" not in e and "bob" not in e and e.startswith("url:"), e
        assert "***@" in e, e    # where the credentials were, so the owner sees which part to fix
    e = str(raises(ValueError, mqtt.parse_url, b"mqtt://bob:TOPSECRET@h"))
    assert "SECRET" not in e and "bytes" in e, e
    assert "mqtt://h/x" in str(raises(ValueError, mqtt.parse_url, "mqtt://h/x"))   # nothing to hide


def test_backoff_doubles_to_a_minute_within_jitter():
    prev = 0
    for failures in range(1, 12):
        base = min(1000 << (failures - 1), 60000)
        lo = mqtt.backoff_ms(failures, 0)
        mid = mqtt.backoff_ms(failures, 32768)
        hi = mqtt.backoff_ms(failures, 65535)
        assert mid == base
        assert base * 3 // 4 <= lo <= hi <= base * 5 // 4, (failures, lo, hi)
        assert lo <= base - base // 5 and hi >= base + base // 5   # the jitter really spreads
        assert mid >= prev
        prev = mid
    assert mqtt.backoff_ms(1, 32768) == 1000 and mqtt.backoff_ms(7, 32768) == 60000
    assert mqtt.backoff_ms(50, 65535) <= 75000
    assert mqtt.backoff_ms(0, 32768) == 1000
    seen = {mqtt.backoff_ms(3, mqtt.rand16()) for _ in range(40)}
    assert len(seen) > 5 and min(seen) >= 3000 and max(seen) <= 5000


def test_rollout_selection_is_stable_and_monotonic():
    ids = ["iotutils-%012x" % i for i in range(400)]
    for i in ids[:50]:
        assert mqtt.rollout_selected(i, 100) and not mqtt.rollout_selected(i, 0)
        inside = [p for p in (1, 10, 50, 100) if mqtt.rollout_selected(i, p)]
        assert inside == [p for p in (1, 10, 50, 100) if p >= (inside[0] if inside else 101)]
    ten = sum(1 for i in ids if mqtt.rollout_selected(i, 10))
    assert 16 <= ten <= 64, ten              # about 10 % of 400
    # the same rule in scripts/fleet.py: a fixed value both runtimes agree on
    assert [mqtt.rollout_selected("dev-%d" % i, 50) for i in range(8)] == _ROLLOUT_50


_ROLLOUT_50 = [True, False, True, False, True, True, True, False]


def test_client_construction_and_offline_publish():
    e = raises(ValueError, mqtt.MQTT, "mqtts://h")
    assert str(e).startswith("cadata:")
    m = mqtt.MQTT("mqtts://h", insecure=True)
    assert m.port == 8883 and m.client_id.startswith("iotutils-") and len(m.client_id) == 21
    raises(ValueError, mqtt.MQTT, "mqtt://h", keepalive=-1)
    raises(ValueError, mqtt.MQTT, "mqtt://h", client_id="a\x00")
    m = mqtt.MQTT("mqtt://127.0.0.1:1", client_id="t1")
    assert not m.connected
    assert m.publish("a/b", "x") is False                       # QoS 0 while disconnected: dropped
    for i in range(m.max_queue):
        assert m.publish("a/b", i, qos=1) is True                 # QoS 1: queued
    assert m.publish("a/b", "one too many", qos=1) is False
    st = m.status()
    assert st["dropped"] == 1 and st["refused"] == 1 and st["queued"] == m.max_queue and not st["connected"]
    raises(ValueError, m.publish, "a/+", "x")
    raises(ValueError, m.publish, "a/b", "x", qos=2)
    raises(ValueError, m.subscribe, "a/#/b", print)
    raises(ValueError, m.set_will, "a/#", "x")


def test_connect_refused_port_schedules_backoff_without_raising():
    m = mqtt.MQTT("mqtt://127.0.0.1:1", client_id="t2")      # nothing listens on port 1
    m.timeout = 1
    assert m.connect() is False
    st = m.status()
    assert st["failures"] == 1 and 750 <= st["backoff_ms"] <= 1250 and "failed" in st["last_error"]
    assert m.loop_once(0) is None and m.status()["failures"] == 1      # not due yet: no attempt
    m.kick()
    m.loop_once(0)                                                     # kicked: tried at once
    assert m.status()["failures"] == 2 and 1500 <= m.status()["backoff_ms"] <= 2500


# ---- the client against a scripted broker (a thread with a listening socket on loopback) ----

class _Broker:
    """Accepts one connection, answers CONNECT with CONNACK (rc), then plays `script`: a list of
    bytes to send, or ("expect", n) to read n bytes into .got, or ("close",)."""

    def __init__(self, script, rc=0):
        self.script = script
        self.rc = rc
        self.got = []
        self.done = False
        self.err = None
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.port = 0
        for p in range(23000 + _rand_port(), 60000, 97):
            try:
                self.sock.bind(socket.getaddrinfo("127.0.0.1", p)[0][-1])
                self.port = p
                break
            except OSError:
                continue
        self.sock.listen(1)
        _thread.start_new_thread(self._run, ())

    def _run(self):
        c = None
        try:
            c = self.sock.accept()[0]
            c.settimeout(5)
            self.connect = _recv_packet(c)
            c.send(bytes((0x20, 2, 0, self.rc)))
            for step in self.script:
                if isinstance(step, tuple) and step[0] == "expect":
                    self.got.append(_recv_packet(c))
                elif isinstance(step, tuple) and step[0] == "close":
                    c.close()
                    c = None
                    break
                else:
                    c.send(step)
            if c is not None:  # wait for the client to close
                try:
                    while c.recv(64):
                        pass
                except OSError:
                    pass
        except Exception as e:
            self.err = e
        finally:
            if c is not None:
                c.close()
            self.sock.close()
            self.done = True


def _rand_port():
    import os
    return (os.urandom(1)[0] * 37) % 4000


def _recv_exact(c, n):
    out = b""
    while len(out) < n:
        d = c.recv(n - len(out))
        if not d:
            raise OSError("closed")
        out += d
    return out


def _recv_packet(c):
    first = _recv_exact(c, 1)
    hdr = first
    while True:
        b = _recv_exact(c, 1)
        hdr += b
        if not b[0] & 0x80:
            break
    n, _ = mqtt.decode_varint(hdr, 1)
    return hdr + _recv_exact(c, n)


def _run_until(m, cond, ms=3000):
    t0 = ticks_ms()
    while not cond() and ticks_diff(ticks_ms(), t0) < ms:
        m.loop_once(20)
    return cond()


def test_client_with_scripted_broker_delivers_acks_and_drops_oversized():
    if _thread is None:
        from mpunit import SkipTest
        raise SkipTest("no threads on this port")
    inbound_q1 = bytes(mqtt.build_publish(None, b"cmd/x", b"on", qos=1, pid=7)[0][:13])
    oversized = bytes((0x30, 0x81, 0x40))        # PUBLISH announcing 8193 bytes (never sent)
    b = _Broker([("expect", 0), inbound_q1, ("expect", 0), ("expect", 0), oversized])
    got = []
    m = mqtt.MQTT("mqtt://127.0.0.1:%d" % b.port, client_id="scripted", keepalive=0)
    m.set_will("st", "offline")
    m.subscribe("cmd/#", lambda t, p: got.append((t, p)), qos=1)
    assert m.connect(), m.status()
    assert b.connect[0] == 0x10 and b"scripted" in b.connect and b.connect[9] & 0x04   # will flag
    assert _run_until(m, lambda: got), (m.status(), b.err)
    assert got == [("cmd/x", b"on")]
    assert m.publish("up", "v", qos=1)
    assert _run_until(m, lambda: len(b.got) == 3 or b.err), b.err
    sub, puback, pub = b.got
    assert sub[0] == 0x82 and sub.endswith(b"cmd/#\x01")
    assert puback == b"\x40\x02\x00\x07"                 # the inbound QoS 1 message acknowledged
    assert pub[0] == 0x32 and pub.endswith(b"v")          # QoS 1, not DUP: its first sending
    assert _run_until(m, lambda: not m.connected)          # oversized: connection closed, not read
    st = m.status()
    assert "over max_packet" in st["last_error"] and st["queued"] == 1 and st["failures"] == 1
    t0 = ticks_ms()
    while not b.done and ticks_diff(ticks_ms(), t0) < 3000:
        sleep_ms(10)
    assert b.done and b.err is None, b.err


def test_client_reports_bad_credentials():
    if _thread is None:
        from mpunit import SkipTest
        raise SkipTest("no threads on this port")
    b = _Broker([], rc=4)
    m = mqtt.MQTT("mqtt://user:wrong@127.0.0.1:%d" % b.port, client_id="creds")
    assert m.connect() is False
    assert "bad user name or password" in m.status()["last_error"]
    assert b"user" in b.connect and b"wrong" in b.connect
