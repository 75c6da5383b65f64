# iotutils._compat.before_load: the heap is collected before a module's first import after boot (so
# the module fills the holes garbage left instead of landing above them and splitting the largest
# free block later), and never again once the module is loaded.
import sys

from mpunit import SkipTest, is_micropython, raises

from iotutils import tasks  # noqa: F401 - a module that is loaded
from iotutils._compat import before_load


def _garbage():
    # about 10 KB the heap holds until the next collection
    for _ in range(40):
        bytearray(256)


def test_before_load_collects_before_a_first_import_only():
    before_load("iotutils.no_such_module")
    assert "iotutils.no_such_module" not in sys.modules   # it prepares, it does not import
    if not is_micropython():
        raise SkipTest("the heap's garbage is counted with MicroPython's gc.mem_free")
    import gc

    gc.collect()
    _garbage()
    free = gc.mem_free()
    before_load("iotutils.tasks")           # loaded already: the garbage stays
    assert gc.mem_free() == free
    before_load("iotutils.no_such_module")  # not loaded: collected first
    assert gc.mem_free() >= free + 40 * 256, (free, gc.mem_free())


def test_an_unloaded_module_leaves_and_comes_back_on_import():
    from iotutils import _compat

    if _compat.KEEP_LOADED:
        raise SkipTest("the simulator's heap model keeps what it loaded")
    import iotutils.ota.release  # noqa: F401
    import iotutils.ota as ota_pkg

    first = sys.modules["iotutils.ota.release"]
    assert getattr(ota_pkg, "release", None) is first
    _compat.unload("iotutils.ota.release")
    assert "iotutils.ota.release" not in sys.modules
    assert "release" not in dir(ota_pkg)            # the package's attribute went too
    from iotutils.ota.release import Source

    again = sys.modules["iotutils.ota.release"]
    assert again is not first and again.Source is Source
    _compat.unload("iotutils.ota.release", "iotutils.not_loaded_at_all")   # never loaded: nothing to do


def test_a_module_another_thread_is_loading_is_handed_out_whole():
    # MicroPython has no import lock: load() of a module another thread was still running found it
    # in sys.modules half made (two OTA checks at once: "no attribute 'Source'")
    from mpunit import rmtree, tempdir

    from iotutils._compat import _thread, load, sleep_ms, unload
    d = tempdir("slowmod")
    with open(d + "/iotu_slow_mod.py", "w") as f:
        f.write("from iotutils._compat import sleep_ms\nsleep_ms(300)\nREADY = True\n")
    sys.path.insert(0, d)
    got, done = [], [0]

    def first():
        try:
            load("iotu_slow_mod")
        finally:
            done[0] += 1
    try:
        _thread.start_new_thread(first, ())
        sleep_ms(100)   # the first load runs the module's body now
        got.append(getattr(load("iotu_slow_mod"), "READY", "half made"))
        while not done[0]:
            sleep_ms(10)
        assert got == [True], got
    finally:
        sys.path.remove(d)
        unload("iotu_slow_mod")
        rmtree(d)


def test_call_loaded_lets_go_of_what_it_loaded_only():
    from iotutils import _compat

    if _compat.KEEP_LOADED:
        raise SkipTest("the simulator's heap model keeps what it loaded")
    _compat.unload("iotutils.ota.version")
    assert _compat.call_loaded("iotutils.ota.version", "older_version", "1.0", "1.1") is True
    assert "iotutils.ota.version" not in sys.modules       # loaded for the call, let go after it
    import iotutils.coerce  # noqa: F401 - loaded before the call

    raises(ValueError, _compat.call_loaded, "iotutils.coerce", "to_int", "x")
    assert "iotutils.coerce" in sys.modules                # so it stays, the call failing or not


def test_handed_out_binds_the_named_methods_of_a_second_module_and_refuses_the_rest():
    # Wifi's cold methods live in iotutils.wifi_setup: a function taking the Wifi first
    from iotutils import _compat

    class Owner:
        _ap = None

        def __getattr__(self, attr):
            return _compat.handed_out("iotutils.wifi_setup", self, attr, ("on_setup_ap",))

    if not _compat.KEEP_LOADED:
        _compat.unload("iotutils.wifi_setup")
    o = Owner()
    raises(AttributeError, getattr, o, "forget")       # in the module, but not named: refused
    raises(AttributeError, getattr, o, "nothing")
    assert not hasattr(o, "scan")
    if not _compat.KEEP_LOADED:
        assert "iotutils.wifi_setup" not in sys.modules   # (a refused name loads nothing)
    assert o.on_setup_ap("") is False                  # the module's function, the object first
    assert "iotutils.wifi_setup" in sys.modules


def test_ota_error_is_one_class_across_unloads_of_the_client():
    from iotutils import _compat
    from iotutils.ota import OTAError
    from iotutils.ota.client import OTAError as from_client

    assert from_client is OTAError
    _compat.unload("iotutils.ota.client")
    from iotutils.ota.client import Http, OTAError as reloaded

    assert reloaded is OTAError and Http.timeout == 15
    try:
        raise reloaded("x")
    except OTAError as e:
        assert str(e) == "x"


def _heap_in_thread(start):
    """Heap in use (after a collection) seen from inside a thread that `start` starts, less the same
    seen from the thread that started it: what the thread holds for as long as it runs."""
    import gc
    import time

    seen = []
    go = [False]

    def body():
        gc.collect()
        seen.append(gc.mem_alloc())
        while not go[0]:
            time.sleep_ms(1)

    gc.collect()
    base = gc.mem_alloc()
    start(body)
    t0 = time.ticks_ms()
    while not seen and time.ticks_diff(time.ticks_ms(), t0) < 5000:
        time.sleep_ms(1)
    go[0] = True
    time.sleep_ms(20)
    assert seen, "the thread did not run"
    return seen[0] - base


def test_a_thread_of_start_thread_keeps_no_heap_frame_of_its_own():
    # MicroPython puts a frame of more than 11 words on the heap, and a thread's first frames live as
    # long as it does: start_thread's wrapper (THREADS bookkeeping) once held 192 bytes (64-bit host)
    # for every thread (with its closure: 480 bytes over a bare thread). Now it costs its bookkeeping:
    # the job tuple, the THREADS entry and the call's argument array, 160 bytes (five 32-byte blocks).
    if not is_micropython():
        raise SkipTest("frames on the heap are MicroPython's")
    import _thread

    from iotutils._compat import start_thread

    bare = min(_heap_in_thread(lambda fn: _thread.start_new_thread(fn, ())) for _ in range(3))
    ours = min(_heap_in_thread(lambda fn: start_thread("t", fn, (), 0)) for _ in range(3))
    word = 8 if sys.maxsize > 0x7FFFFFFF else 4
    # a frame on the heap would add six blocks more
    assert ours - bare <= 32 * word, (bare, ours)


def test_a_star_import_works_from_every_module_that_hands_out_names_later():
    # MicroPython's `from m import *` asks a module's __getattr__ for __all__; the AttributeError it
    # raised ended the import ("AttributeError: __all__"), an app's first line on the device
    for module, wanted in (("iotutils.server", ("WebServer", "Response", "Multipart")),
                           ("iotutils.persist", ("PersistentInt", "PersistentRGB", "export_json", "folders")),
                           ("iotutils.auth", ("hmac_sha256", "hash_password")),
                           ("iotutils.ota", ("OTA", "OTAError")),
                           ("iotutils.portal", ("Portal", "Denied")),
                           ("iotutils.mqtt", ("MQTT", "LinkLost", "topic_matches", "encode_varint", "rollout_selected")),
                           ("iotutils.mqtt.codec", ("topic_bytes", "parse_url", "build_connect", "backoff_ms")),
                           ("iotutils", ("Device",))):
        ns = {}
        exec("from %s import *" % module, ns)
        for name in wanted:
            assert name in ns, (module, name)
        assert not [n for n in ns if n.startswith("_") and n != "__builtins__"], (module, sorted(ns))
