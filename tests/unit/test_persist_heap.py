# The heap that names from requests leave behind (persist.py, store.py). A module of its own: under
# MicroPython it runs in a fresh process (tests/unit/test_on_micropython.py), so no other test has
# asked about names before it.
from mpunit import SkipTest, is_micropython, raises

from iotutils import nvs, persist, store
from iotutils.hal.flash import RamFlash


def test_names_from_requests_leave_nothing_behind_in_the_heap():
    # the admin page asks about names that come from requests (a DELETE of a missing variable, a
    # PUT then DELETE of a new one): nothing about them may stay in the heap afterwards. Caches of
    # "names already checked" kept up to 64 of them each, every string wherever the heap had room
    # when its request came, and a hundred such requests split 66 KB of free heap into 9 KB blocks.
    if not is_micropython():
        raise SkipTest("allocation counting needs MicroPython's gc.mem_alloc")
    import gc
    store.use(nvs.NVS(RamFlash(0x6000, "nvs")), "nvs")

    def ask(i):
        name = "m%d" % i  # a new string, as a request's path gives
        store.get("junk", name)
        persist.declared("junk").get(name)
        assert not persist.delete(name, "junk")
        persist.PersistentInt(name, folder="junk").value = i
        assert persist.delete(name, "junk")
        persist.undeclare(name, "junk")

    for i in range(5):
        ask(i)  # whatever a first use allocates for good (the folder's tables)
    gc.collect()
    before = gc.mem_alloc()
    for i in range(5, 105):
        ask(i)
    gc.collect()
    grown = gc.mem_alloc() - before
    assert grown < 1024, grown  # (a dict's deleted slots may still grow its table once)


def test_a_variable_made_again_keeps_the_first_one_registered():
    # the admin page's and MQTT settings' handlers make their Persistent objects at each request:
    # each new one registered in persist's table stayed wherever the heap had room during that
    # request (the next collection keeps it: the table points to it) and split the free heap
    store.use(nvs.NVS(RamFlash(0x6000, "nvs")), "nvs")
    first = persist.PersistentStr("url", default="", folder="again", max_length=64)
    for _ in range(3):
        again = persist.PersistentStr("url", default="", folder="again", max_length=64)
        assert persist.declared("again")["url"] is first
    again.value = "mqtt://x"
    assert first.value == "mqtt://x"   # the same stored variable either way
    # one that differs (its limits, its type) is the variable's type from now on
    other = persist.PersistentStr("url", default="", folder="again", max_length=128)
    assert persist.declared("again")["url"] is other
    typed = persist.PersistentInt("url", folder="again")
    assert persist.declared("again")["url"] is typed
    persist.undeclare("url", "again")


def test_characters_from_the_network_become_no_lasting_strings():
    # MicroPython makes each character it takes out of a str (iterating it, min()/max() over it,
    # indexing it, chr()) a qstr, and qstrs are never freed: every new character stays for good,
    # and a new pool of them is one block that may not be found. Host names, route numbers, store
    # and device names, SSIDs, host names, colours, WeMo callbacks, OTA URLs, hashes, versions and
    # release texts, app manifests and escaped emoji in JSON bodies are checked as bytes (Hue's
    # device types too: tests/integration/test_alexa_clients.py). 8,000 new characters took the heap
    if not is_micropython():
        raise SkipTest("qstrs are MicroPython's")
    import gc

    from iotutils import coerce, sign, wemo_api, wifi
    from iotutils.device import Device
    from iotutils.ota.checks import check_hashes
    from iotutils.ota.client import split_url
    from iotutils.ota.release import ReleaseScan
    from iotutils.ota.version import _pre_rank, _version_key
    from iotutils.web.json_body import astral
    from iotutils.web.routing import Route

    store.use(nvs.NVS(RamFlash(0x6000, "nvs")), "nvs")
    route = Route("/n/<int:n>", None, ("GET",), False, None)

    class Guarded:   # what Device's Host guard reads of the device
        allowed_hosts = ()
        wifi = None

    class Asked:
        def __init__(self, host):
            self.host = host

    def texts(first, n):
        # n texts of 5 CJK characters (15 bytes, a store name's most), none seen before
        for k in range(first, first + n):
            cps = [0x4E00 + 5 * k + i for i in range(5)]
            yield bytes(b for cp in cps for b in _utf8(cp)).decode(), cps

    def every_check(first, n):
        for t, cps in texts(first, n):
            store.check_name(t, "name")
            wifi.check_ssid(t)
            assert wemo_api.parse_callback("<http://127.0.0.1:1/" + t + ">") is None
            raises(Exception, split_url, "https://example.com/" + t + " x")
            raises(ValueError, check_hashes, (t * 13)[:64], None)
            assert astral(t) == t
            assert not coerce.hex_digits("ab" + t)
            raises(ValueError, coerce.check_name, t + "\x01", "name")
            assert wifi.hostname_of(t + "x") == "x"
            assert route.match("/n/" + t, ["", "n", t]) is None
            assert Device._host_guard(Guarded(), Asked("a" + t)).status == 400
            assert sign.canonical_json({"path": t}).startswith(b'{"path":"\\u')
            assert _version_key("1.2" + t) == ([1, 2, 0, 0], t) and _pre_rank(t) is None
            scan = ReleaseScan(("ota.json",))
            scan.feed(('{"tag_name": "' + "".join("\\u%04x" % cp for cp in cps) + '"}').encode())
            assert scan.tag == t

    every_check(0, 20)   # (what a first use of each allocates for good)
    gc.collect()
    before = gc.mem_alloc()
    every_check(1000, 600)   # 3,000 characters never seen before
    gc.collect()
    grown = gc.mem_alloc() - before
    assert grown < 1024, grown   # (one character kept per text: 2.3 KB)


def _utf8(cp):
    # (three bytes: U+0800..U+FFFF) made without chr(), which would make the character a qstr
    return (0xE0 | cp >> 12, 0x80 | (cp >> 6) & 0x3F, 0x80 | cp & 0x3F)
