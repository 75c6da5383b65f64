# Alexa discovery units on CPython and MicroPython: the SSDP answer logic (iotutils.ssdp) and the WeMo
# socket's SOAP/GENA handlers and parsers (iotutils.wemo), called directly (no sockets).
import gc

from mpunit import SkipTest, collecting_thread, is_micropython, pile_garbage, silent_listener

import alexa_setup  # noqa: F401  (real server and store; see there)
from iotutils import alexa as A
from iotutils import hal
from iotutils import ssdp as S
from iotutils import wemo as W
from iotutils import wemo_api as WA
gc.collect()


class Req:
    def __init__(self, method, path, body=b"", headers=None, peer="127.0.0.1"):
        self.method = method
        self.path = path
        self.body = body
        self.headers = headers or {}
        self.client_ip = peer


class App:
    port = 80

    def add_route(self, path, fn, methods=("GET",)):
        pass


def body_of(resp):
    b = resp.body
    return b.decode() if isinstance(b, bytes) else b


def setup():
    app = App()
    return app, A.Alexa(app, folder="axd%d" % (int.from_bytes(__import__("os").urandom(2), "little")))


# ---- SSDP ----
def _msearch(st, mx=2, man='"ssdp:discover"'):
    return ("M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: %s\r\nMX: %d\r\nST: %s\r\n\r\n"
            % (man, mx, st)).encode()


def test_ssdp_matching_and_answers():
    s = S.SSDP()
    hue = s.add("http://%s:%d/description.xml", "uuid:2f402f80-da50-11e1-9b23-0a0b0c0d0e0f",
                ("upnp:rootdevice", "urn:schemas-upnp-org:device:basic:1"), "hue-bridgeid: X\r\n", 80)
    s.add("http://%s:%d/setup.xml", "uuid:Socket-1_0-X1",
          ("upnp:rootdevice", "urn:Belkin:device:controllee:1", "urn:Belkin:service:basicevent:1"), "", 49153)
    addr = ("127.0.0.1", 5555)
    now = 1000
    assert s.handle(_msearch("urn:schemas-upnp-org:device:basic:1", mx=0), addr, now) == 1
    out = s.due(now)
    assert len(out) == 1 and out[0][0] == addr
    text = out[0][1].decode()
    assert text.startswith("HTTP/1.1 200 OK\r\n")
    assert "LOCATION: http://%s:%d/description.xml\r\n" % (hal.ip(), hal.port(80)) in text
    assert "ST: urn:schemas-upnp-org:device:basic:1\r\n" in text
    assert "USN: uuid:2f402f80-da50-11e1-9b23-0a0b0c0d0e0f::urn:schemas-upnp-org:device:basic:1\r\n" in text
    assert "hue-bridgeid: X\r\n" in text and text.endswith("\r\n\r\n")
    assert s.handle(_msearch("urn:Belkin:device:**", mx=0), addr, now) == 1
    text = s.due(now)[0][1].decode()
    assert "ST: urn:Belkin:device:controllee:1" in text
    assert "LOCATION: http://%s:%d/setup.xml" % (hal.ip(), hal.port(49153)) in text
    assert s.handle(_msearch("urn:schemas-upnp-org:device:Basic:1", mx=0), addr, now) == 1
    assert "ST: urn:schemas-upnp-org:device:Basic:1\r\n" in s.due(now)[0][1].decode()
    assert s.handle(_msearch("upnp:rootdevice", mx=0), addr, now) == 2
    assert s.handle(_msearch("ssdp:all", mx=0), addr, now) == 3 + 4
    assert len(s.due(now)) == 9
    # not for us / not a search
    assert s.handle(_msearch("urn:schemas-upnp-org:device:MediaRenderer:1"), addr, now) == 0
    assert s.handle(_msearch("ssdp:all", man="ssdp:alive"), addr, now) == 0
    assert s.handle(b"NOTIFY * HTTP/1.1\r\nNT: upnp:rootdevice\r\n\r\n", addr, now) == 0
    assert s.handle(b"\xff\xfe garbage", addr, now) == 0
    assert s.handle(b"", addr, now) == 0
    s.remove(hue)
    assert s.handle(_msearch("upnp:rootdevice", mx=0), addr, now) == 1
    s.due(now)


def test_ssdp_mx_delay_is_random_and_capped():
    s = S.SSDP()
    s.source_burst = s.total_burst = 1000      # the rate limits are tested below
    s.add("http://%s:%d/d.xml", "uuid:x", ("upnp:rootdevice",), "", 80)
    now = 5000
    for _ in range(20):
        s.handle(_msearch("upnp:rootdevice", mx=5), ("127.0.0.1", 1), now)
    delays = [p[0] - now for p in s._pending]
    assert all(0 <= d <= s.max_delay_ms for d in delays), delays
    assert len(set(delays)) > 1                        # spread, not all at once
    assert s.next_due_ms(now) == min(delays)
    assert len(s.due(now + s.max_delay_ms)) == 20
    assert s.next_due_ms(now) is None
    # a flood is bounded
    for _ in range(100):
        s.handle(_msearch("upnp:rootdevice", mx=1), ("127.0.0.1", 1), now)
    assert len(s._pending) == s.max_pending


def _room(lst, n):
    """Whether n more items fit in lst without an allocation (MicroPython: the heap locked)."""
    try:
        import micropython
    except ImportError:
        return True   # CPython: only the lists' identity is checked
    micropython.heap_lock()
    try:
        i = 0
        while i < n:   # (a for over range() would allocate)
            lst.append(None)
            i += 1
        return True
    except MemoryError:
        return False
    finally:
        micropython.heap_unlock()
        del lst[len(lst) - i:]


def test_ssdp_queues_stay_where_they_were_made():
    """The answer queue and the sources' buckets are made with room for their caps and changed in
    place. A list that grows in a burst of searches moves up the heap (between two collections the
    allocator only goes up) and stays there after the burst, splitting the free heap."""
    s = S.SSDP()
    s.source_burst = s.total_burst = 1000
    s.add("http://%s:%d/d.xml", "uuid:q", ("upnp:rootdevice", "urn:a:device:b:1", "urn:a:service:c:1"), "", 80)
    pending, sources = s._pending, s._sources
    now = 1000
    for i in range(s.max_sources + 4):   # more searchers than buckets: the least recent one's is reused
        for _ in range(3):
            assert s.handle(_msearch("ssdp:all", mx=0), ("127.0.0.%d" % (i + 1), 5), now) == 4
        assert len(s.due(now)) == 12
    assert s._pending is pending and s._sources is sources and len(sources) == s.max_sources
    assert [b[0][3] for b in sources] == list(range(5, s.max_sources + 5))   # most recently heard last
    assert all(isinstance(b[0], bytearray) for b in sources)   # copies, not the packets' own bytes
    assert _room(pending, s.max_pending)
    while len(s._pending) < s.max_pending:
        s.handle(_msearch("ssdp:all", mx=1), ("127.0.0.2", 5), now)
    assert len(s.due(now + s.max_delay_ms)) == s.max_pending and s._pending is pending
    assert _room(pending, s.max_pending)


def test_a_new_searchers_bucket_lands_low_in_the_heap():
    """A source's bucket lives as long as the device. Made among a search's garbage it stayed there
    and split the free heap once that was collected (the largest free block after 120 rounds of
    Alexa traffic went from 52 to 19-31 KB), so the heap is collected first and the bucket fills the
    lowest hole. On MicroPython id() is the address: below what was made just before."""
    if not is_micropython():
        raise SkipTest("heap addresses: MicroPython's id()")
    s = S.SSDP()
    s.add("http://%s:%d/d.xml", "uuid:q", ("upnp:rootdevice",), "", 80)
    junk, marker = pile_garbage()
    assert s.handle(_msearch("ssdp:all", mx=0), ("127.0.0.9", 5), 1000) == 2   # the root device and the uuid
    b = s._sources[-1]
    assert b[0] == S.ip4("127.0.0.9") and id(b) < id(marker) and id(b[0]) < id(marker), (id(b), id(marker))
    assert len(junk) == 24


def _hosts(s, addrs, now, st="upnp:rootdevice"):
    """How many answers searches from these addresses got queued (then sent: the queue empties)."""
    n = 0
    for a in addrs:
        n += s.handle(_msearch(st, mx=0), a, now)
        s.due(now)
    return n


def test_ssdp_answers_only_the_local_subnet():
    s = S.SSDP()
    s.add("http://%s:%d/d.xml", "uuid:l", ("upnp:rootdevice",), "", 80)
    # the simulator's LAN is loopback: 127.0.0.0/8
    assert _hosts(s, [("127.0.0.1", 5), ("127.9.8.7", 5)], 0) == 2
    assert _hosts(s, [("192.168.1.7", 1900), ("10.0.0.1", 5), ("8.8.8.8", 53), ("0.0.0.0", 0)], 0) == 0
    assert s.stats["offnet"] == 4 and s.stats["dropped"] == 4 and s.stats["searches"] == 6
    # only searches for something announced count (and so are dropped)
    assert _hosts(s, [("8.8.8.8", 53)], 0, "urn:nothing:here:1") == 0 and s.stats["searches"] == 6
    real_ip, real_mask = hal.ip, hal.netmask
    try:
        hal.ip, hal.netmask = (lambda: "192.168.1.50"), (lambda: "255.255.254.0")   # a board on a /23
        s._net = None                  # (read again at start() and rejoin())
        assert _hosts(s, [("192.168.1.7", 1900), ("192.168.0.200", 1), ("192.168.1.255", 1)], 0) == 3
        assert _hosts(s, [("192.168.2.7", 1), ("127.0.0.1", 1), ("10.192.168.1", 1), ("::1", 1)], 0) == 0
        # the unix port's raw sockaddr_in: 192.168.1.9 port 1900, and 192.168.3.9
        assert _hosts(s, [bytearray(b"\x02\x00\x07\x6c\xc0\xa8\x01\x09" + bytes(8))], 0) == 1
        assert _hosts(s, [bytearray(b"\x02\x00\x07\x6c\xc0\xa8\x03\x09" + bytes(8))], 0) == 0
        hal.ip = lambda: "no address yet"
        s._net = None
        assert _hosts(s, [("192.168.1.7", 1)], 0) == 0
    finally:
        hal.ip, hal.netmask = real_ip, real_mask


def test_ssdp_all_cut_short_answers_every_service_in_turn():
    # ssdp:all with more answers than a burst allows: the same services were left out every time
    # (with 8 WeMo devices, the last two never answered it); the next search begins where it stopped
    s = S.SSDP()
    s.source_burst = s.total_burst = 6
    s.source_rate = s.total_rate = 1000
    for i in range(5):
        s.add("http://%s:%d/d.xml", "uuid:w%d" % i, ("urn:Belkin:device:controllee:1",), "", 49153 + i)
    addr = ("127.0.0.2", 1900)
    seen = set()
    for k in range(3):
        assert s.handle(_msearch("ssdp:all", mx=0), addr, 10000 * (k + 1)) == 6   # 10 answers wanted
        seen.update(t[1].decode().split("USN: ")[1].split("\r\n")[0].split("::")[0] for t in s.due(10000 * (k + 1)))
    assert seen == {"uuid:w%d" % i for i in range(5)}, seen


def test_ssdp_rate_limits_per_source_and_in_all():
    s = S.SSDP()
    s.add("http://%s:%d/d.xml", "uuid:r", ("upnp:rootdevice",), "", 80)
    a = ("127.0.0.2", 1900)
    # one source: a burst of source_burst answers, then source_rate a second
    assert _hosts(s, [a] * 100, 0) == s.source_burst == 24
    assert s.stats["dropped"] == 100 - 24
    assert _hosts(s, [a] * 100, 500) == 4 and _hosts(s, [a] * 100, 1000) == 4
    assert _hosts(s, [a] * 100, 1124) == 0 and _hosts(s, [a] * 100, 1125) == 1
    assert _hosts(s, [a] * 100, 100000) == 24          # a long quiet: a full burst, never more
    # another source has a bucket of its own; a search with several answers takes several tokens
    s2 = S.SSDP()
    s2.add("http://%s:%d/d.xml", "uuid:q", ("upnp:rootdevice", "urn:x:device:y:1", "urn:x:service:z:1"), "", 80)
    assert _hosts(s2, [a] * 10, 0, "ssdp:all") == 24   # 4 answers each: 6 searches, the 7th cut short
    assert _hosts(s2, [("127.0.0.3", 1)], 0, "ssdp:all") == 4
    # all sources together: total_burst, then total_rate a second, however many sources there are
    s3 = S.SSDP()
    s3.add("http://%s:%d/d.xml", "uuid:t", ("upnp:rootdevice",), "", 80)
    many = [("127.0.1.%d" % i, 1) for i in range(1, 9)]
    assert _hosts(s3, many * 30, 0) == s3.total_burst == 64
    assert _hosts(s3, many * 30, 1000) == s3.total_rate == 32
    # a new source pushes the least recently heard one out of the table (8 kept): the table is bounded
    assert len(s3._sources) == s3.max_sources
    _hosts(s3, [("127.0.2.1", 1)], 1000)
    assert len(s3._sources) == s3.max_sources
    assert [b[0] for b in s3._sources] == [S.ip4(x) for x in ["127.0.1.%d" % i for i in range(2, 9)] + ["127.0.2.1"]]
    # the queue bound holds too
    s4 = S.SSDP()
    s4.add("http://%s:%d/d.xml", "uuid:u", ("upnp:rootdevice",), "", 80)
    for i in range(40):
        s4.handle(_msearch("upnp:rootdevice", mx=1), ("127.0.3.%d" % i, 1), 0)
    assert len(s4._pending) == s4.max_pending and s4.stats["dropped"] == 40 - s4.max_pending


def test_ssdp_notify_messages():
    s = S.SSDP()
    e = s.add("http://%s:%d/d.xml", "uuid:abc", ("upnp:rootdevice",), "", 80)
    alive = s.notify_message(e, "upnp:rootdevice", "ssdp:alive")
    assert alive.startswith("NOTIFY * HTTP/1.1\r\n") and "NTS: ssdp:alive" in alive and "LOCATION:" in alive
    assert "USN: uuid:abc::upnp:rootdevice" in alive
    bye = s.notify_message(e, "uuid:abc", "ssdp:byebye")
    assert "NTS: ssdp:byebye" in bye and "LOCATION" not in bye and "USN: uuid:abc\r\n" in bye


# ---- WeMo ----
def test_wemo_parsers():
    assert WA.parse_callback("<http://127.0.0.1:8989/sub/basicevent/x>") == ("127.0.0.1", 8989, "/sub/basicevent/x")
    assert WA.parse_callback("<http://10.0.0.2/a><http://10.0.0.3/b>") == ("10.0.0.2", 80, "/a")
    assert WA.parse_callback("http://nope") is None
    assert WA.parse_callback("<http://h:99999/>") is None
    assert WA.parse_callback("<ftp://h/>") is None
    # bounds: port 1..65535 in digits, a short printable path
    assert WA.parse_callback("<http://10.0.0.2:65535/a>") == ("10.0.0.2", 65535, "/a")
    assert WA.parse_callback("<http://10.0.0.2:1>") == ("10.0.0.2", 1, "/")
    for bad in ("<http://10.0.0.2:0/a>", "<http://10.0.0.2:65536/a>", "<http://10.0.0.2:-1/a>",
                "<http://10.0.0.2:+80/a>", "<http://10.0.0.2: 80/a>", "<http://10.0.0.2:0x50/a>",
                "<http://10.0.0.2:000080/a>", "<http://10.0.0.2:80/" + "a" * 128 + ">",
                "<http://10.0.0.2:80/a b>", "<http://10.0.0.2:80/a\tb>", "<http://10.0.0.2:80/\u00e9>",
                "<http://:80/a>", "<>"):
        assert WA.parse_callback(bad) is None, bad
    assert WA.parse_callback("<http://10.0.0.2:80/" + "a" * 127 + ">")[2] == "/" + "a" * 127
    assert WA._tag("<s:Body><u:SetBinaryState><BinaryState>1</BinaryState></u:SetBinaryState>", "BinaryState") == "1"
    assert WA._tag("<a><x:BinaryState>0</x:BinaryState></a>", "BinaryState") == "0"
    assert WA._tag("<a><NotBinaryState>0</NotBinaryState></a>", "BinaryState") is None


def test_the_wemo_answers_load_at_the_first_wemo_request():
    import sys

    from iotutils import _compat
    _compat.unload("iotutils.wemo_api")
    app, alexa = setup()
    dev = W.WemoDevice(alexa, alexa.add("Fan", wemo=True), 49153)
    assert "iotutils.wemo_api" not in sys.modules
    assert "<friendlyName>Fan</friendlyName>" in body_of(dev._serve(Req("GET", "/setup.xml")))
    assert "iotutils.wemo_api" in sys.modules


def _soap(action, inner=""):
    return ('<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
            '<s:Body><u:%s xmlns:u="urn:Belkin:service:basicevent:1">%s</u:%s></s:Body></s:Envelope>'
            % (action, inner, action)).encode()


def test_wemo_soap_and_gena_handlers():
    app, alexa = setup()
    seen = []
    fan = alexa.add("Fan", wemo=True, on_change=lambda light: seen.append(light.on))
    dev = W.WemoDevice(alexa, fan, 49153)     # not started: handlers called directly
    alexa._wemo[fan] = dev
    setup_xml = body_of(dev._serve(Req("GET", "/setup.xml")))
    for needle in ("<deviceType>urn:Belkin:device:controllee:1</deviceType>", "<friendlyName>Fan</friendlyName>",
                   "<manufacturer>Belkin International Inc.</manufacturer>", "<modelName>Socket</modelName>",
                   "<UDN>uuid:Socket-1_0-%s</UDN>" % dev.serial, "<serialNumber>%s</serialNumber>" % dev.serial,
                   "<macAddress>", "<firmwareVersion>", "urn:Belkin:service:basicevent:1", "/eventservice.xml"):
        assert needle in setup_xml, needle
    assert "SetBinaryState" in body_of(dev._serve(Req("GET", "/eventservice.xml")))
    # each WeMo device has a MAC of its own (locally administered), as real ones do
    heater = alexa.add("Heater", wemo=True)
    macs = [body_of(d._serve(Req("GET", "/setup.xml"))).split("<macAddress>")[1][:12]
            for d in (dev, W.WemoDevice(alexa, heater, 49154))]
    assert macs[0] != macs[1] and all(int(m[:2], 16) & 2 and len(m) == 12 for m in macs), macs
    assert macs[0][4:] == dev.serial[4:12], (macs, dev.serial)

    def call(action, inner=""):
        return dev._serve(Req("POST", "/upnp/control/basicevent1", _soap(action, inner),
                              {"soapaction": '"urn:Belkin:service:basicevent:1#%s"' % action}))
    r = call("GetBinaryState")
    assert r.status == 200 and "<BinaryState>0</BinaryState>" in body_of(r)
    r = call("SetBinaryState", "<BinaryState>1</BinaryState>")
    assert r.status == 200 and "<BinaryState>1</BinaryState>" in body_of(r)
    assert fan.on is True and seen == [True]
    assert "<BinaryState>1</BinaryState>" in body_of(call("GetBinaryState"))
    assert "<FriendlyName>Fan</FriendlyName>" in body_of(call("GetFriendlyName"))
    assert call("SetBinaryState", "<BinaryState>7</BinaryState>").status == 500
    # a tag inside an XML comment is no element: the real one (0) counts
    r = call("SetBinaryState", "<!-- <BinaryState>0</BinaryState> --><BinaryState>1</BinaryState>")
    assert r.status == 200 and fan.on is True
    r = call("SetBinaryState", "<!-- <BinaryState>1</BinaryState> --><BinaryState>0</BinaryState><!-- x")
    assert r.status == 200 and fan.on is False and seen[-1] is False
    assert call("SetBinaryState", "<BinaryState>1</BinaryState>").status == 200 and fan.on is True
    assert call("Reboot").status == 500
    assert fan.on is True
    # GENA
    ev = "/upnp/event/basicevent1"
    r = dev._serve(Req("SUBSCRIBE", ev, b"", {"callback": "<http://127.0.0.1:9/cb>", "nt": "upnp:event",
                                              "timeout": "Second-600"}))
    sid = r.headers["SID"]
    assert r.status == 200 and sid.startswith("uuid:") and r.headers["TIMEOUT"] == "Second-600"
    assert len(dev.owed()) == 1 and alexa._owed   # the initial event, sent later by the housekeeping
    assert dev._serve(Req("SUBSCRIBE", ev, b"", {"sid": sid, "timeout": "Second-300"})).status == 200
    assert dev._serve(Req("SUBSCRIBE", ev, b"", {"sid": "uuid:unknown"})).status == 412
    assert dev._serve(Req("SUBSCRIBE", ev, b"", {"callback": "junk", "nt": "upnp:event"})).status == 412
    fan.set(on=False)                      # a local change owes every subscriber an event
    assert len(dev.owed()) == 1
    _send(dev._notify(dev._subs[0], fan.on))   # nobody listens on port 9 -> dropped
    assert dev._serve(Req("SUBSCRIBE", ev, b"", {"sid": sid})).status == 412
    assert dev._serve(Req("UNSUBSCRIBE", ev, b"", {"sid": sid})).status == 412
    r = dev._serve(Req("SUBSCRIBE", ev, b"", {"callback": "<http://127.0.0.1:9/cb>", "nt": "upnp:event"}))
    sid = r.headers["SID"]
    assert dev._serve(Req("UNSUBSCRIBE", ev, b"", {"sid": sid})).status == 200
    assert dev._serve(Req("UNSUBSCRIBE", ev, b"", {"sid": sid})).status == 412
    assert dev.owed() == []




def test_addresses():
    assert S.ip4("192.168.1.5") == bytes((192, 168, 1, 5)) and S.ip4("0.0.0.0") == bytes(4)
    for bad in ("localhost", "192.168.1", "192.168.1.5.6", "256.1.1.1", "1.2.3.-4", "1.2.3.4 ", "::1",
                "[::1]", "1..2.3", "0x7f.0.0.1", "1.2.3.1000", ""):
        assert S.ip4(bad) is None, bad
    assert S.addr_ip(("10.1.2.3", 80)) == bytes((10, 1, 2, 3))
    # the unix port's raw sockaddr_in: family (native order), port (network order), address
    assert S.addr_ip(bytearray(b"\x02\x00\x1f\x90\x7f\x00\x00\x02" + bytes(8))) == bytes((127, 0, 0, 2))
    assert S.addr_ip(b"\x0a\x00" + bytes(26)) is None          # AF_INET6
    assert S.addr_ip(None) is None and S.addr_ip(("::1", 80, 0, 0)) is None


def _send(notify):
    """Drive a NOTIFY (a generator that yields while the subscriber is not ready) to its end, as the
    Alexa step of the housekeeping does, a step every few ms."""
    import time
    for _ in notify:
        time.sleep(0.005)

def _subscribe(dev, callback, peer="127.0.0.1", nt="upnp:event"):
    return dev._serve(Req("SUBSCRIBE", "/upnp/event/basicevent1", b"",
                          {"callback": callback, "nt": nt, "timeout": "Second-600"}, peer))


def test_wemo_callback_only_to_the_subscriber_itself():
    # CallStranger (CVE-2020-12695): a SUBSCRIBE naming any other host is refused before anything is
    # sent: no NOTIFY job is queued, no subscription kept, and the answer is the same for every target
    app, alexa = setup()
    fan = alexa.add("Fan", wemo=True)
    dev = W.WemoDevice(alexa, fan, 49153)
    alexa._wemo[fan] = dev
    refused = []
    for cb in ("<http://127.0.0.2:8080/cb>", "<http://127.0.0.2:9/cb>", "<http://192.168.1.1:80/>",
               "<http://10.0.0.9:22/x>", "<http://localhost:8080/cb>", "<http://[::1]:8080/cb>",
               "<http://127.0.0.1.nip.io:8080/cb>", "<http://2130706433:8080/cb>", "<http://127.1:8080/cb>",
               "<http://127.0.0.1:0/cb>", "<http://127.0.0.1:70000/cb>", "<http://127.0.0.1:80/" + "x" * 200 + ">"):
        r = _subscribe(dev, cb)
        refused.append((r.status, r.headers, r.body))
    assert refused[0][0] == 412 and all(x == refused[0] for x in refused), refused
    assert dev._subs == [] and not alexa._owed
    # the subscriber's own address: accepted
    assert _subscribe(dev, "<http://127.0.0.1:8989/sub/a>").status == 200
    assert _subscribe(dev, "<http://127.0.0.2:8989/sub/b>", peer="127.0.0.2").status == 200
    assert _subscribe(dev, "<http://127.0.0.1:8989/sub/b>", peer="127.0.0.2").status == 412
    assert _subscribe(dev, "<http://127.0.0.2:8989/sub/b>", peer="").status == 412     # peer unknown
    assert [(s[1], s[2], s[3]) for s in dev._subs] == [("127.0.0.1", 8989, "/sub/a"), ("127.0.0.2", 8989, "/sub/b")]
    assert len(dev.owed()) == 2 and alexa._owed


def test_a_notify_to_a_subscriber_that_never_answers_gives_up_in_time_and_drops_it():
    """The subscriber's callback takes the connection and never answers, while another thread
    collects garbage (as the device's threads do): the NOTIFY gives up within notify_timeout and the
    subscriber goes. Before, on MicroPython the blocking recv's timeout restarted at every signal a
    collection sends, so this waited as long as the subscriber did (the device's watchdog reset it)."""
    from iotutils._compat import ticks_diff, ticks_ms
    app, alexa = setup()
    alexa.notify_timeout = 1
    fan = alexa.add("Fan", wemo=True)
    dev = W.WemoDevice(alexa, fan, 49153)
    alexa._wemo[fan] = dev
    hung, port = silent_listener()   # the kernel completes the TCP handshake; nobody ever answers
    stop = collecting_thread()
    try:
        assert _subscribe(dev, "<http://127.0.0.1:%d/cb>" % port).status == 200
        sub = dev._subs[0]
        t0 = ticks_ms()
        _send(dev._notify(sub, True))
        took = ticks_diff(ticks_ms(), t0)
        assert took < 3000, took
        assert dev._subs == []
        # a NOTIFY queued before the subscriber went costs nothing
        t0 = ticks_ms()
        _send(dev._notify(sub, False))
        assert ticks_diff(ticks_ms(), t0) < 200
    finally:
        stop()
        hung.close()


def test_wemo_subscriber_caps():
    app, alexa = setup()
    fan = alexa.add("Fan", wemo=True)
    dev = W.WemoDevice(alexa, fan, 49153)
    a, b, c = "10.0.0.2", "10.0.0.3", "10.0.0.4"
    for peer, path in ((a, "/1"), (b, "/1"), (a, "/2")):
        assert _subscribe(dev, "<http://%s:80%s>" % (peer, path), peer).status == 200
    # the same callback again replaces its earlier subscription
    assert _subscribe(dev, "<http://10.0.0.2:80/2>", a).status == 200
    assert [(s[1], s[3]) for s in dev._subs] == [("10.0.0.2", "/1"), ("10.0.0.3", "/1"), ("10.0.0.2", "/2")]
    # one host's third subscription pushes out its own oldest, not another host's
    assert _subscribe(dev, "<http://10.0.0.2:80/3>", a).status == 200
    assert [(s[1], s[3]) for s in dev._subs] == [("10.0.0.3", "/1"), ("10.0.0.2", "/2"), ("10.0.0.2", "/3")]
    # beyond the device's cap the oldest goes
    for path in ("/1", "/2"):
        assert _subscribe(dev, "<http://10.0.0.4:80%s>" % path, c).status == 200
    assert len(dev._subs) == 4 and [(s[1], s[3]) for s in dev._subs][-2:] == [("10.0.0.4", "/1"), ("10.0.0.4", "/2")]
    for x in dev._subs:
        x[6] = 0
    # a change owes each subscriber an event and keeps their list (a new one per change would
    # outlive the request and split the heap); one that expired goes, in a new list
    from iotutils._compat import ticks_add, ticks_ms
    subs = dev._subs
    dev.changed()
    assert dev._subs is subs and len(dev.owed()) == 4
    subs[0][4] = ticks_add(ticks_ms(), -1)
    dev.changed()
    assert dev._subs is not subs and dev._subs == subs[1:] and len(dev.owed()) == 3


def test_ssdp_start_without_network_then_stop_for_good():
    s = S.SSDP()
    s.add("http://%s:%d/d.xml", "uuid:n", ("upnp:rootdevice",), "", 80)
    real_ip = hal.ip
    hal.ip = lambda: "no address yet"     # Wi-Fi not up: the caller (Alexa's thread) retries later
    try:
        e = None
        try:
            s.start()
        except OSError as err:
            e = err
        assert e is not None and "cannot join" in str(e)
        assert not s.started()
    finally:
        hal.ip = real_ip
    assert not s.moved()  # not started: nothing to move
    s.serve(0)            # without a socket: returns at once
    s.stop()
    assert s.closed()
    s.start()             # after stop(): stays closed
    assert not s.started()


def test_ssdp_rejoins_when_the_address_changes():
    s = S.SSDP()
    s.add("http://%s:%d/d.xml", "uuid:m", ("upnp:rootdevice",), "", 80)
    s.start()                      # a real socket on 0.0.0.0:1900, the group joined on loopback
    try:
        assert s.started() and s.ip == hal.ip() and not s.moved()
        s.ip = "10.9.8.7"          # as if joined on the setup access point's address before
        assert s.moved()
        s.rejoin()
        assert s.started() and s.ip == hal.ip() and not s.moved()
        s.serve(0)
    finally:
        s.stop()
    assert not s.started() and s.closed()


def test_a_silent_subscriber_holds_up_no_step_of_the_housekeeping():
    """Anyone on the LAN may subscribe to a WeMo device with a callback that takes the connection and
    never answers. The Alexa step of the housekeeping (which may run in the app's main loop, where
    Hue and WeMo changes wait for their callbacks) must return at once while that NOTIFY waits: it
    waited notify_timeout (2 s) on it, every step, and every Hue command was answered only at
    ack_timeout_ms. Past notify_timeout the subscriber goes; a subscriber that answers gets its event
    and stays."""
    from iotutils._compat import ticks_diff, ticks_ms
    app, alexa = setup()
    alexa.notify_timeout = 1
    fan = alexa.add("Fan", wemo=True)
    dev = W.WemoDevice(alexa, fan, 49153)
    alexa._wemo[fan] = dev
    alexa._ssdp = S.SSDP()
    alexa._ssdp._closed = True   # (no discovery in this test: the step only sends NOTIFYs)
    alexa._running = True
    hung, port = silent_listener()
    live, port2 = silent_listener()
    got = []
    stop = [False]
    _recorder(live, 0, got, stop)
    try:
        assert _subscribe(dev, "<http://127.0.0.1:%d/silent>" % port).status == 200
        assert _subscribe(dev, "<http://127.0.0.1:%d/live>" % port2).status == 200
        assert len(dev.owed()) == 2
        t0 = ticks_ms()
        slowest = 0
        while alexa._owed or alexa._sending:
            s0 = ticks_ms()
            alexa._task(s0)
            slowest = max(slowest, ticks_diff(ticks_ms(), s0))
            assert ticks_diff(ticks_ms(), t0) < 5000, "the NOTIFYs never ended"
            _sleep_ms(5)
        assert slowest < 200, slowest
        assert [s[3] for s in dev._subs] == ["/live"], dev._subs
        assert got and got[0][2].startswith(b"NOTIFY /live HTTP/1.1") and b"<BinaryState>0</BinaryState>" in got[0][2], got
    finally:
        stop[0] = True
        alexa._running = False
        _sleep_ms(300)   # (the recorder's accept gives up every 0.2 s)
        hung.close()
        live.close()


def _sleep_ms(ms):
    import time
    time.sleep(ms / 1000)


def _recorder(listener, delay_ms, got, stop):
    # a WeMo subscriber's callback server: (time, BinaryState, the whole NOTIFY) of each, answered
    # after delay_ms (a slow subscriber), until stop[0]
    from iotutils._compat import _thread, sleep_ms, ticks_ms

    def serve():
        listener.settimeout(0.2)
        while not stop[0]:
            try:
                c, _ = listener.accept()
            except OSError:
                continue
            try:
                c.settimeout(2)
                data = b""
                while b"</e:propertyset>" not in data:
                    part = c.recv(1024)
                    if not part:
                        break
                    data += part
                i = data.find(b"<BinaryState>")
                got.append((ticks_ms(), data[i + 13:i + 14], data))
                sleep_ms(delay_ms)
                c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            finally:
                c.close()
    _thread.start_new_thread(serve, ())


def test_every_subscriber_ends_with_the_last_state_and_a_slow_one_delays_only_itself():
    """40 quick switches with four subscribers, one of them slow (1 s to answer): every NOTIFY went
    through one queue of 32, one after another, so the newest were dropped and subscribers kept an
    old state; and the fast ones waited for the slow one's answers. Now each subscriber is owed the
    state as it is when its NOTIFY starts, and NOTIFYs to different subscribers go side by side."""
    from iotutils._compat import ticks_diff, ticks_ms
    app, alexa = setup()
    alexa.notify_timeout = 5
    fan = alexa.add("Fan", wemo=True)
    dev = W.WemoDevice(alexa, fan, 49153)
    alexa._wemo[fan] = dev
    alexa._ssdp = S.SSDP()
    alexa._ssdp._closed = True
    alexa._running = True
    stop = [False]
    got = {}
    socks = []
    try:
        for name, delay in (("slow", 1000), ("a", 0), ("b", 0), ("c", 0)):
            ip = "127.0.0.%d" % (len(socks) + 1)   # (two subscriptions per host at most)
            sock, port = silent_listener(42000, ip, 4)
            socks.append(sock)
            got[name] = []
            _recorder(sock, delay, got[name], stop)
            assert _subscribe(dev, "<http://%s:%d/%s>" % (ip, port, name), ip).status == 200

        def run(until_ms):
            t0 = ticks_ms()
            while (alexa._owed or alexa._sending) and ticks_diff(ticks_ms(), t0) < until_ms:
                alexa._task(ticks_ms())
                _sleep_ms(5)
        run(300)   # the initial events, the slow one's still under way
        t0 = ticks_ms()
        fan.set(on=True)
        run(300)
        fast = [got[n][-1] for n in ("a", "b", "c") if got[n] and got[n][-1][1] == b"1"]
        assert len(fast) == 3 and all(ticks_diff(t, t0) < 300 for t, _, _ in fast), got   # not after the slow one
        for i in range(40):
            fan.set(on=i % 2 == 0)
            alexa._task(ticks_ms())
        run(8000)
        assert not alexa._owed and not alexa._sending
        want = b"1" if fan.on else b"0"
        for name in got:
            assert got[name] and got[name][-1][1] == want, (name, got[name][-3:])
        assert len(dev._subs) == 4
    finally:
        stop[0] = True
        alexa._running = False
        _sleep_ms(300)
        for sock in socks:
            sock.close()
