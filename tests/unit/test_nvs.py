# Pure-Python NVS (iotutils/nvs.py): values, types, pages, reclaim and power cuts.
# Runs on CPython (pytest) and MicroPython (mp_runner.py).
from mpunit import raises

from iotutils import nvs
from iotutils.hal.flash import FlashError, RamFlash, Region

SIZE = 0x6000  # the nvs partition of boards/ESP32_GENERIC/partitions.csv: 6 pages


_BUF = bytearray(SIZE)  # one image for every test: a 110 KB MicroPython heap fragments otherwise
_BLANK = b"\xff" * 4096


class CountingFlash(RamFlash):
    """RAM flash that counts writes and can 'lose power' after a given number of operations.
    Without buf: the shared image, erased."""

    def __init__(self, size=SIZE, buf=None):
        Region.__init__(self, size, "nvs")
        if buf is None:
            buf = _BUF
            for off in range(0, size, 4096):
                buf[off:off + 4096] = _BLANK
        self.buf = buf
        self.strict = True
        self.ops = 0
        self.bytes = 0
        self.cut_at = -1

    def _tick(self):
        if self.ops == self.cut_at:
            raise PowerCut
        self.ops += 1

    def write(self, off, data):
        self._tick()
        self.bytes += len(data)
        RamFlash.write(self, off, data)

    def erase(self, off, n):
        self._tick()
        RamFlash.erase(self, off, n)


class PowerCut(Exception):
    pass


def fresh():
    f = CountingFlash()
    return f, nvs.NVS(f)


def reopen(f):
    return nvs.NVS(CountingFlash(f.size, f.buf))


def test_int_types_round_trip_and_bounds():
    f, s = fresh()
    cases = ((nvs.U8, 0, 255), (nvs.I8, -128, 127), (nvs.U16, 0, 65535), (nvs.I16, -32768, 32767),
             (nvs.U32, 0, 2 ** 32 - 1), (nvs.I32, -2 ** 31, 2 ** 31 - 1), (nvs.U64, 0, 2 ** 64 - 1),
             (nvs.I64, -2 ** 63, 2 ** 63 - 1))
    for t, lo, hi in cases:
        for v in (lo, hi):
            key = "k%02x%d" % (t, v == hi)
            s.set("ns", key, v, t)
            assert s.get_typed("ns", key) == (t, v), (t, v)
        raises(ValueError, s.set, "ns", "bad", hi + 1, t)
        raises(ValueError, s.set, "ns", "bad", lo - 1, t)
    assert s.get("ns", "bad") is None
    s2 = reopen(f)
    for t, _lo, hi in cases:
        assert s2.get_typed("ns", "k%02x1" % t) == (t, hi)


def test_default_types_str_blob():
    f, s = fresh()
    s.set("a", "int", 5)
    s.set("a", "text", "héllo")
    s.set("a", "empty", "")
    s.set("a", "blob", b"\x00\x01\xff")
    s.set("a", "big", bytes(range(256)) * 20)  # 5120 bytes: chunks on two pages
    s2 = reopen(f)
    for st in (s, s2):
        assert st.get_typed("a", "int") == (nvs.I64, 5)
        assert st.get_typed("a", "text") == (nvs.STR, "héllo")
        assert st.get("a", "empty") == ""
        assert st.get_typed("a", "blob") == (nvs.BLOB_DATA, b"\x00\x01\xff")
        assert st.get("a", "big") == bytes(range(256)) * 20
        keys = sorted(st.keys("a"))
        assert keys == [("big", 0x42), ("blob", 0x42), ("empty", 0x21), ("int", 0x18), ("text", 0x21)], keys


def test_bad_keys_and_values():
    f, s = fresh()
    raises(ValueError, s.set, "ns", "k" * 16, 1)
    raises(ValueError, s.set, "ns", "", 1)
    raises(ValueError, s.set, "n" * 16, "k", 1)
    raises(ValueError, s.set, "ns", "k", 1.5)
    raises(ValueError, s.set, "ns", "k", None)
    raises(ValueError, s.set, "ns", "k", "x" * 4000)  # 4001 bytes with the NUL
    raises(ValueError, s.set, "ns", "k", "a\x00b")
    raises(ValueError, s.set, "ns", "k", b"x" * 20001)  # more than 5 pages of chunks
    raises(ValueError, s.set, "ns", "k", "text", nvs.U8)
    assert s.get("ns", "k") is None
    assert s.get("nope", "k") is None
    assert s.erase("nope", "k") is False


def test_overwrite_type_change_and_erase():
    f, s = fresh()
    s.set("ns", "k", 1)
    s.set("ns", "k", "now a string")
    assert s.get_typed("ns", "k") == (nvs.STR, "now a string")
    s.set("ns", "k", b"blob")
    s.set("ns", "k", 7, nvs.U8)
    assert s.get_typed("ns", "k") == (nvs.U8, 7)
    assert s.keys("ns") == [("k", nvs.U8)]
    assert s.erase("ns", "k") is True
    assert s.get("ns", "k") is None
    assert s.erase("ns", "k") is False
    assert reopen(f).get("ns", "k") is None


def test_unchanged_value_writes_nothing():
    f, s = fresh()
    s.set("ns", "k", "same")
    s.set("ns", "b", b"blob")
    n = f.ops
    s.set("ns", "k", "same")
    s.set("ns", "b", b"blob")
    assert f.ops == n
    s.set("ns", "k", "other")
    assert f.ops > n


def test_namespaces_listing_and_erase():
    f, s = fresh()
    s.set("one", "a", 1)
    s.set("one", "b", b"x" * 100)
    s.set("two", "a", 2)
    assert s.namespaces() == ["one", "two"]
    assert sorted(k for k, t in s.keys("one")) == ["a", "b"]
    s.erase_namespace("one")
    assert s.namespaces() == ["two"]
    assert s.keys("one") == []
    assert s.get("two", "a") == 2
    s2 = reopen(f)
    assert s2.namespaces() == ["two"] and s2.get("one", "a") is None
    s2.set("one", "a", 3)  # the namespace comes back with a (possibly new) index
    assert s2.get("one", "a") == 3 and s2.get("two", "a") == 2
    s2.erase_all()
    assert s2.namespaces() == [] and s2.get("two", "a") is None
    s3 = reopen(f)
    assert s3.namespaces() == []
    s3.set("x", "y", 1)
    assert reopen(f).get("x", "y") == 1


def test_many_updates_reclaim_pages():
    # far more writes than the partition holds: full pages must be reclaimed through the spare
    f, s = fresh()
    for i in range(1500):
        s.set("ns", "c%d" % (i % 30), i)
        if i % 7 == 0:
            s.set("ns", "str", "v" * (i % 200))
        if i % 100 == 0:
            s.set("ns", "blob", bytes([i % 256]) * (1000 + i))
    s2 = reopen(f)
    for st in (s, s2):
        for j in range(30):
            last = max(i for i in range(1500) if i % 30 == j)
            assert st.get("ns", "c%d" % j) == last
        assert st.get("ns", "str") == "v" * (1498 % 200)
        assert st.get("ns", "blob") == bytes([1400 % 256]) * 2400
    # one page always stays free (the spare)
    empty = 0
    for p in range(SIZE // 4096):
        if f.buf[p * 4096:p * 4096 + 4] == b"\xff\xff\xff\xff":
            empty += 1
    assert empty >= 1


def test_full_store_raises_and_stays_usable():
    f, s = fresh()
    e = None
    n = 0
    try:
        for n in range(1000):
            s.set("ns", "k%d" % n, "x" * 60)
    except nvs.NVSError as ex:
        e = ex
    assert e is not None and n > 100
    # what was stored before is intact, erasing makes room again
    s2 = reopen(f)
    assert s2.get("ns", "k0") == "x" * 60
    for i in range(50):
        s2.erase("ns", "k%d" % i)
    s2.set("ns", "again", 1)
    assert reopen(f).get("ns", "again") == 1


def test_strict_flash_catches_bad_writes():
    f = RamFlash(4096)
    f.strict = True
    f.buf[100] = 0
    raises(FlashError, f.write, 100, b"\x01")


def _check_store(s, expect):
    for k in expect:
        got = s.get("ns", k)
        # (type and value: MicroPython warns when comparing bytes with str)
        assert any(type(got) is type(x) and got == x for x in expect[k]), (k, got, expect[k])


def test_power_cut_at_every_write():
    # one scenario (update ints/strings/blobs, type change, erase, reclaim), cut after each flash operation
    def scenario(s, confirmed):
        for i in range(160):
            k = "k%d" % (i % 5)
            v = i if i % 3 else "s%d" % i
            if i % 17 == 0:
                v = bytes([i]) * 300
            confirmed[k] = (confirmed.get(k, (None,))[-1], v)
            s.set("ns", k, v)
            confirmed[k] = (v,)
            if i % 23 == 0:
                confirmed["k1"] = (confirmed.get("k1", (None,))[-1], None)
                s.erase("ns", "k1")
                confirmed["k1"] = (None,)

    f, s = fresh()
    scenario(s, {})
    total = f.ops
    assert total > 300, total
    step = 1 if total < 400 else total // 400 + 1
    cut = 0
    while cut < total:
        f = CountingFlash()
        f.cut_at = cut
        confirmed = {}
        try:
            scenario(nvs.NVS(f), confirmed)
        except PowerCut:
            pass
        s2 = reopen(f)
        _check_store(s2, confirmed)
        # still writable, and a rewrite of every key leaves exactly the new value (no stale duplicate)
        for j in range(5):
            v = b"after" * 50 if j == 2 else "after%d" % j
            s2.set("ns", "k%d" % j, v)
            assert s2.get("ns", "k%d" % j) == v
            s2.erase("ns", "k%d" % j)
            assert s2.get("ns", "k%d" % j) is None, (cut, j)
            s2.set("ns", "k%d" % j, v)
        s3 = reopen(CountingFlash(f.size, s2.flash.buf))
        for j in range(5):
            assert s3.get("ns", "k%d" % j) == (b"after" * 50 if j == 2 else "after%d" % j), (cut, j)
        cut += step


def test_generator_layout_constants():
    # a page header as esp-idf-nvs-partition-gen writes it (seq 0, version 0xfe) is accepted
    f, s = fresh()
    s.set("ns", "k", 1)
    h = f.buf[0:32]
    assert h[0:4] == b"\xfe\xff\xff\xff"  # ACTIVE
    assert h[8] == 0xFE
    # first entry: the namespace record (ns 0, U8, span 1, chunk 0xff, key "ns", value 1)
    e = f.buf[64:96]
    assert e[0] == 0 and e[1] == nvs.U8 and e[2] == 1 and e[3] == 0xFF
    assert bytes(e[8:11]) == b"ns\x00" and e[24] == 1
