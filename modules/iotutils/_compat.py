# What differs between MicroPython and CPython, written once. The toolbox imports these names from
# here; on MicroPython each is the runtime's own function (nothing is wrapped), on CPython (unit tests
# and host tools) a small stand-in. One clock on CPython: time.monotonic, in ms, never going back.
#
# const(): MicroPython's compiler folds `_X = const(3)` by the name `const` alone, wherever the name
# comes from, so `from iotutils._compat import const` keeps the folding (tests/unit check it with
# mpy-cross) while CPython gets the identity function.
import time

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


try:
    from time import sleep_ms, ticks_add, ticks_diff, ticks_ms
except ImportError:  # CPython

    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b

    def ticks_add(a, b):
        return a + b

    def sleep_ms(ms):
        time.sleep(ms / 1000)


try:
    from sys import print_exception
except ImportError:  # CPython
    import traceback  # noqa: TID251 - the CPython stand-in for sys.print_exception

    def print_exception(e, file=None):
        traceback.print_exception(type(e), e, e.__traceback__, file=file)


try:
    import _thread

    allocate_lock = _thread.allocate_lock
except ImportError:  # a port built without threads: nothing runs beside us, locks never wait
    _thread = None

    class _NoLock:
        def acquire(self, *args):
            return True

        def release(self):
            pass

        def locked(self):
            return False

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    def allocate_lock():
        return _NoLock()


def exists(path):
    import os

    try:
        os.stat(path)
        return True
    except OSError:
        return False
