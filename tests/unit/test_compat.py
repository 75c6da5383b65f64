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
