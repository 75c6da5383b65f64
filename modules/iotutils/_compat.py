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


# Threads started through start_thread, while they run: [name, stack bytes asked (0: the port's
# default)]. The memory budget (iotutils.memory) counts them: on an ESP32 every thread is a FreeRTOS
# task whose stack comes from internal RAM, outside the MicroPython heap.
THREADS = []


def start_thread(name, fn, args=(), stack_size=0):
    """Run fn(*args) in a new thread, counted in THREADS until it ends. stack_size: bytes for its
    stack (0: the port's default), set for this thread only."""
    entry = [name, stack_size]
    THREADS.append(entry)

    def run():
        try:
            fn(*args)
        finally:
            try:
                THREADS.remove(entry)
            except ValueError:
                pass

    old = None
    try:
        if stack_size:
            try:
                old = _thread.stack_size(stack_size)
            except ValueError:  # CPython: below its minimum, its own default serves
                pass
        _thread.start_new_thread(run, ())
    except BaseException:
        THREADS.remove(entry)
        raise
    finally:
        if old is not None:
            _thread.stack_size(old)
