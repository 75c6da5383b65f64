# iotutils._compat.before_load: the heap is collected before a module's first import after boot (so
# the module fills the holes garbage left instead of landing above them and splitting the largest
# free block later), and never again once the module is loaded.
import sys

from mpunit import SkipTest, is_micropython

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
