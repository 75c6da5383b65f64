# MQTT 3.1.1 on the wire, without sockets: packets built into a caller's buffer and decoded,
# the remaining-length varint, topic and filter rules, matching, the broker URL, the reconnect
# backoff and its jitter, the fleet's rollout rule, CA certificates and payloads as bytes, the
# default client id. The client (iotutils.mqtt) uses these; so do the unit tests.

_CONNECT = const(0x10)
_PUBLISH = const(0x30)
_SUBSCRIBE = const(0x82)
_UNSUBSCRIBE = const(0xA2)
_BACKOFF_FIRST_MS = const(1000)
_BACKOFF_MAX_MS = const(60000)
_MAX_REMAINING = const(268435455)
_TOPIC_MAX = const(65535)


def parse_url(url):
    """(tls, host, port, user, password) of "mqtt[s]://[user[:password]@]host[:port][/]".
    User and password are percent-decoded; ports default to 1883 / 8883. ValueError otherwise."""
    if not isinstance(url, str):
        raise ValueError("url: a string expected, got %s" % type(url).__name__)
    if url.startswith("mqtt://"):
        tls, rest, port = False, url[7:], 1883
    elif url.startswith("mqtts://"):
        tls, rest, port = True, url[8:], 8883
    else:
        raise ValueError("url: mqtt:// or mqtts:// expected, got %r" % _shown(url))
    i = rest.find("/")
    if i >= 0:
        if rest[i:] not in ("", "/"):
            raise ValueError("url: no path allowed after the host in %r" % _shown(url))
        rest = rest[:i]
    user = password = None
    i = rest.rfind("@")
    if i >= 0:
        cred, rest = rest[:i], rest[i + 1:]
        j = cred.find(":")
        if j >= 0:
            user, password = _unquote(cred[:j]), _unquote(cred[j + 1:])
        else:
            user = _unquote(cred)
    if rest.startswith("["):  # IPv6 literal
        j = rest.find("]")
        if j < 0:
            raise ValueError("url: unclosed [ in %r" % _shown(url))
        host, tail = rest[1:j], rest[j + 1:]
    else:
        host, _, p = rest.partition(":")
        tail = ":" + p if _ else ""
    if tail:
        if not tail.startswith(":") or not tail[1:].isdigit() or not 0 < int(tail[1:]) < 65536:
            raise ValueError("url: bad port in %r" % _shown(url))
        port = int(tail[1:])
    if not host:
        raise ValueError("url: no host in %r" % _shown(url))
    return tls, host, port, user, password


def _shown(url):
    # the URL as an error may quote it: without its credentials (errors reach logs, the admin
    # page and the API's answers)
    i = url.find("://")
    i = i + 3 if i >= 0 else 0
    j = url.rfind("@", i)
    return url if j < 0 else url[:i] + "***" + url[j:]


def _unquote(s):
    if "%" not in s:
        return s
    out = bytearray()
    b = s.encode()
    i = 0
    while i < len(b):
        c = b[i]
        if c == 0x25:  # %
            h = b[i + 1:i + 3]
            if len(h) != 2:
                raise ValueError("url: bad percent escape in the credentials")
            try:
                out.append(int(h, 16))
            except ValueError:
                raise ValueError("url: bad percent escape in the credentials")
            i += 3
        else:
            out.append(c)
            i += 1
    try:
        return out.decode()
    except UnicodeError:
        raise ValueError("url: credentials are not UTF-8")


def utf8(field, s, allow_empty=True):
    """s (str or bytes) as MQTT UTF-8 bytes: valid UTF-8, no U+0000, no control characters
    (U+0001..U+001F, U+007F..U+009F: brokers such as Mosquitto disconnect on them), no
    non-characters U+FFFE/U+FFFF, at most 65535 bytes. ValueError naming the field."""
    if isinstance(s, str):
        b = s.encode()
    elif isinstance(s, (bytes, bytearray)):
        b = bytes(s)
        try:
            s = b.decode()
        except UnicodeError:
            raise ValueError("%s: not valid UTF-8" % field)
    else:
        raise ValueError("%s: a string expected, got %r" % (field, s))
    if len(b) > _TOPIC_MAX:
        raise ValueError("%s: longer than 65535 bytes" % field)
    if not b and not allow_empty:
        raise ValueError("%s: must not be empty" % field)
    if len(b) == len(s):  # ASCII: look at the bytes (no 1-character strings made)
        for o in b:
            if o < 0x20 or o == 0x7F:
                raise ValueError("%s: character U+%04X is not allowed in MQTT strings" % (field, o))
        return b
    for c in s:
        o = ord(c)
        if o < 0x20 or 0x7F <= o <= 0x9F or o in (0xFFFE, 0xFFFF) or 0xD800 <= o <= 0xDFFF:
            raise ValueError("%s: character U+%04X is not allowed in MQTT strings" % (field, o))
    return b


def topic_bytes(topic):
    """A topic name to publish to, as bytes: no wildcards, not empty (ValueError: 'topic')."""
    b = utf8("topic", topic, False)
    if b"+" in b or b"#" in b:
        raise ValueError("topic: wildcards + and # are for subscriptions, not for publishing")
    return b


def filter_bytes(topic_filter):
    """A subscription filter as bytes: '+' alone in a level, '#' alone in the last level
    (ValueError: 'topic_filter')."""
    b = utf8("topic_filter", topic_filter, False)
    levels = b.split(b"/")
    for i, lv in enumerate(levels):
        if b"#" in lv and (lv != b"#" or i != len(levels) - 1):
            raise ValueError("topic_filter: '#' must be the whole last level, in %r" % (topic_filter,))
        if b"+" in lv and lv != b"+":
            raise ValueError("topic_filter: '+' must be a whole level, in %r" % (topic_filter,))
    return b


def topic_matches(topic_filter, topic):
    """True if topic (str) matches topic_filter (str) by MQTT rules: '+' one level, '#' the rest
    (and the parent level), and wildcards in the first level never match a topic starting with '$'."""
    if topic.startswith("$") and (topic_filter.startswith("+") or topic_filter.startswith("#")):
        return False
    f = topic_filter.split("/")
    t = topic.split("/")
    n = len(f)
    for i in range(n):
        lv = f[i]
        if lv == "#":
            return True
        if i >= len(t):
            return False
        if lv != "+" and lv != t[i]:
            return False
    return len(t) == n


def varint_size(n):
    return 1 if n < 128 else 2 if n < 16384 else 3 if n < 2097152 else 4


def encode_varint(buf, i, n):
    """Write the remaining length n into buf at i; return the index after it."""
    if not 0 <= n <= _MAX_REMAINING:
        raise ValueError("packet: remaining length %d out of range" % n)
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            buf[i] = b | 0x80
            i += 1
        else:
            buf[i] = b
            return i + 1


def decode_varint(data, i=0):
    """(remaining length, index after it) from data at i; ValueError for a malformed one (more
    than 4 bytes). IndexError when data ends inside it."""
    n = 0
    shift = 0
    for _ in range(4):
        b = data[i]
        i += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, i
        shift += 7
    raise ValueError("packet: malformed remaining length")


def _header(buf, first, n, apart=0):
    """Room for a packet with first byte `first` and remaining length n, less the last `apart`
    bytes (sent from where they are): (buf or a new buffer if it is too small, index of the body)."""
    size = 1 + varint_size(n) + n - apart
    if buf is None or len(buf) < size:
        buf = bytearray(size)
    buf[0] = first
    return buf, encode_varint(buf, 1, n)


def _put_str(buf, i, b):
    n = len(b)
    buf[i] = n >> 8
    buf[i + 1] = n & 0xFF
    buf[i + 2:i + 2 + n] = b
    return i + 2 + n


def build_connect(buf, client_id, keepalive, user=None, password=None, will=None):
    """CONNECT (clean session) into buf: (buf, length). will: (topic bytes, payload bytes, qos,
    retain) or None; user/password: bytes or None."""
    n = 10 + 2 + len(client_id)
    flags = 0x02
    if will:
        n += 4 + len(will[0]) + len(will[1])
        flags |= 0x04 | (will[2] << 3) | (0x20 if will[3] else 0)
    if user is not None:
        n += 2 + len(user)
        flags |= 0x80
        if password is not None:
            n += 2 + len(password)
            flags |= 0x40
    buf, i = _header(buf, _CONNECT, n)
    i = _put_str(buf, i, b"MQTT")
    buf[i] = 4
    buf[i + 1] = flags
    buf[i + 2] = keepalive >> 8
    buf[i + 3] = keepalive & 0xFF
    i = _put_str(buf, i + 4, client_id)
    if will:
        i = _put_str(buf, i, will[0])
        i = _put_str(buf, i, will[1])
    if user is not None:
        i = _put_str(buf, i, user)
        if password is not None:
            i = _put_str(buf, i, password)
    return buf, i


def build_publish(buf, topic, payload, qos=0, retain=False, pid=0, dup=False, after=0):
    """PUBLISH into buf: (buf, length). topic and payload are bytes-like. after: the length of a
    payload sent apart, right after this head (payload is then b"")."""
    n = 2 + len(topic) + len(payload) + (2 if qos else 0) + after
    buf, i = _header(buf, _PUBLISH | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0), n, after)
    i = _put_str(buf, i, topic)
    if qos:
        buf[i] = pid >> 8
        buf[i + 1] = pid & 0xFF
        i += 2
    buf[i:i + len(payload)] = payload
    return buf, i + len(payload)


def build_subscribe(buf, pid, topic_filter, qos=0, unsubscribe=False):
    """SUBSCRIBE (or UNSUBSCRIBE) of one filter (bytes) into buf: (buf, length)."""
    n = 2 + 2 + len(topic_filter) + (0 if unsubscribe else 1)
    buf, i = _header(buf, _UNSUBSCRIBE if unsubscribe else _SUBSCRIBE, n)
    buf[i] = pid >> 8
    buf[i + 1] = pid & 0xFF
    i = _put_str(buf, i + 2, topic_filter)
    if not unsubscribe:
        buf[i] = qos
        i += 1
    return buf, i


def decode_publish(first, body):
    """(topic str, payload bytes, qos, retain, dup, packet id) of a PUBLISH whose remaining bytes
    are body (bytes-like). ValueError for a malformed one."""
    qos = (first >> 1) & 3
    if qos == 3:
        raise ValueError("packet: PUBLISH with QoS 3")
    if len(body) < 2:
        raise ValueError("packet: PUBLISH too short")
    tl = (body[0] << 8) | body[1]
    i = 2 + tl
    if qos:
        i += 2
    if i > len(body):
        raise ValueError("packet: PUBLISH topic longer than the packet")
    try:
        topic = str(bytes(body[2:2 + tl]), "utf-8")
    except UnicodeError:
        raise ValueError("packet: PUBLISH topic is not UTF-8")
    pid = (body[i - 2] << 8) | body[i - 1] if qos else 0
    return topic, bytes(body[i:]), qos, bool(first & 1), bool(first & 8), pid


def backoff_ms(failures, rnd):
    """Delay before the next connect after `failures` failed attempts in a row (>= 1):
    1 s doubling to 60 s, +-25 % jitter from rnd (0..65535)."""
    base = _BACKOFF_FIRST_MS << min(max(failures, 1) - 1, 6)
    if base > _BACKOFF_MAX_MS:
        base = _BACKOFF_MAX_MS
    return base + base * (rnd - 32768) // 131072


def rollout_selected(device_id, percent):
    """True if this device is in a staged rollout at `percent` %: the first 4 bytes of
    sha256(device_id) mod 100 < percent. Stable per device, and a device in at N % stays in at
    any larger N (scripts/fleet.py uses the same rule)."""
    import hashlib
    d = hashlib.sha256(device_id.encode() if isinstance(device_id, str) else device_id).digest()
    return int.from_bytes(d[:4], "big") % 100 < percent


def rand16():
    """16 random bits (the reconnect backoff's jitter)."""
    import os
    b = os.urandom(2)
    return b[0] << 8 | b[1]


def payload_bytes(p):
    """A payload (bytes, str or anything str() takes) as bytes."""
    if isinstance(p, (bytes, bytearray, memoryview)):
        return p
    if isinstance(p, str):
        try:
            return memoryview(p)   # MicroPython: the str's own UTF-8 bytes, not a copy of them
        except TypeError:          # (CPython)
            return p.encode()
    return str(p).encode()


def default_client_id():
    """The client id a device uses by default: "iotutils-" and its MAC in hex."""
    import binascii

    from iotutils import hal
    return "iotutils-" + binascii.hexlify(hal.mac()).decode()
