# The heap that names from requests leave behind (persist.py, store.py). A module of its own: under
# MicroPython it runs in a fresh process (tests/unit/test_on_micropython.py), so no other test has
# asked about names before it.
from mpunit import SkipTest, is_micropython

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
