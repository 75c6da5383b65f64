# What an idle device allocates: nothing in the loops that wait (_compat.ready/events, the setup
# portal's DNS, SSDP, the housekeeping), and the heap is collected once the device falls idle
# (Device._tidy_heap). Garbage made many times a second walked MicroPython's allocator over the
# whole heap between two collections, so whatever a request kept landed anywhere and split the free
# heap.
# Allocation counts need MicroPython's gc.mem_alloc (a fresh process per module there); CPython skips.
import gc
import socket

from mpunit import SkipTest, is_micropython, on_free_port, udp_socket

from iotutils import _compat, tasks


def _need_micropython():
    if not is_micropython():
        raise SkipTest("allocation counting needs MicroPython's gc.mem_alloc")


def _allocated(fn, times=100):
    """Bytes the heap grew by over `times` calls of fn (a collection first, none in between)."""
    fn()  # whatever a first call makes for good
    gc.collect()
    before = gc.mem_alloc()
    for _ in range(times):
        fn()
    return gc.mem_alloc() - before


def _udp():
    """(socket, address) of a UDP socket on a free loopback port."""
    s, port = udp_socket()
    return s, socket.getaddrinfo("127.0.0.1", port)[0][-1]


def test_asking_a_poller_allocates_nothing_and_still_sees_data():
    _need_micropython()
    import select
    s, addr = _udp()
    try:
        p = select.poll()
        p.register(s, select.POLLIN)
        assert _allocated(lambda: _compat.ready(p, 0)) == 0
        assert _allocated(lambda: _compat.events(p, 0)) == 0
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.sendto(b"x", addr)
        c.close()
        assert _compat.ready(p, 1000)
        got = [(r[0] is s, r[1] & select.POLLIN) for r in _compat.events(p, 0)]
        assert got == [(True, select.POLLIN)], got
    finally:
        s.close()


def test_an_idle_portal_dns_allocates_nothing_and_answers_the_next_query():
    _need_micropython()
    from iotutils import portal
    srv, port = on_free_port(lambda port: portal.DNSServer("127.0.0.1", port, None).open())
    try:
        # a recvfrom() that found nothing cost a 513-byte buffer and an exception, at every pass
        assert _allocated(lambda: srv.serve(0)) == 0
        q = b"\x00\x09\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01x\x07example\x00\x00\x01\x00\x01"
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.settimeout(2)
        c.sendto(q, socket.getaddrinfo("127.0.0.1", port)[0][-1])
        assert srv.serve(1000) == 1
        r = c.recv(600)
        c.close()
        assert r[0:2] == b"\x00\x09" and r[-4:] == b"\x7f\x00\x00\x01"
    finally:
        srv.close()


def test_idle_ssdp_allocates_nothing():
    _need_micropython()
    from iotutils import ssdp
    s = ssdp.SSDP()
    s.add("http://%s:%d/d.xml", "uuid:idle", ("upnp:rootdevice",), "", 80)
    s.start()
    try:
        assert s.started()
        for _ in range(5):
            s.serve(20)   # its own NOTIFYs come back over loopback: read them first
        assert _allocated(lambda: s.serve(0)) == 0
    finally:
        s.stop()


def test_an_idle_housekeeping_pass_allocates_nothing():
    _need_micropython()
    s, addr = _udp()
    hk = tasks.Housekeeper("idle")
    steps = [0]

    def step(now):
        steps[0] += 1   # (a small int: nothing allocated)
        return 1000

    hk.add("udp", step, sock=lambda: s)
    try:
        hk.run_once(0)
        # the step ran once and is due in a second: each pass waits on the socket and finds nothing
        assert _allocated(lambda: hk.run_once(1), 50) == 0
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.sendto(b"x", addr)
        c.close()
        n = steps[0]
        hk.run_once(500)   # woken by the datagram
        hk.run_once(0)
        assert steps[0] == n + 1
    finally:
        s.close()


class _App:
    def __init__(self):
        self.idle = 0

    def idle_ms(self):
        return self.idle


class _Dev:
    tidy_idle_ms = 100
    tidy_min_garbage = None

    def __init__(self):
        self.app = _App()
        self.heap_tidies = 0
        self._tidy_base = gc.mem_alloc()


def test_the_heap_is_collected_once_the_device_falls_idle_with_garbage_worth_it():
    _need_micropython()
    from iotutils import hal
    from iotutils.device import Device
    d = _Dev()
    tidy = Device._tidy_heap
    gc.collect()
    d._tidy_base = gc.mem_alloc()
    assert tidy(d, 0) > 0 and d.heap_tidies == 0      # no garbage
    junk = None
    for _ in range(hal.heap_total() // 64 // 64 + 10):
        junk = bytearray(48)   # garbage of a bit more than 1/64 of the heap (the default)
    del junk
    assert tidy(d, 0) and d.heap_tidies == 0          # busy: a request came just now
    d.app.idle = 99
    assert tidy(d, 0) and d.heap_tidies == 0
    d.app.idle = 100
    before = gc.mem_alloc()
    tidy(d, 0)
    assert d.heap_tidies == 1 and gc.mem_alloc() < before   # collected
    assert abs(d._tidy_base - gc.mem_alloc()) < 256
    tidy(d, 0)
    assert d.heap_tidies == 1                         # nothing new to collect
    # a collection by the runtime in between: the next one counts from there
    d._tidy_base += 100000
    tidy(d, 0)
    assert d.heap_tidies == 1 and d._tidy_base <= gc.mem_alloc() + 256
    # a threshold of the app's own: less garbage than that waits
    d.tidy_min_garbage = 8192
    d._tidy_base = gc.mem_alloc()
    for _ in range(40):
        junk = bytearray(48)   # ~2.5 KB
    tidy(d, 0)
    assert d.heap_tidies == 1
    for _ in range(160):
        junk = bytearray(48)   # ~10 KB in all
    del junk
    tidy(d, 0)
    assert d.heap_tidies == 2
