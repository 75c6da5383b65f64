# What differs between MicroPython and CPython, written once. The toolbox imports these names from
# here; on MicroPython each is the runtime's own function (nothing is wrapped), on CPython (unit tests
# and host tools) a small stand-in. One clock on CPython: time.monotonic, in ms, never going back.
#
# const(): MicroPython's compiler folds `_X = const(3)` by the name `const` alone, so the toolbox's
# modules use it without importing it (iotutils/__init__.py makes it a builtin on CPython; the firmware
# tests check the folding with mpy-cross). It is here for programs that import it.
import gc
import sys
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


_IPOLL = sys.implementation.name == "micropython"

try:
    from sys import print_exception
except ImportError:  # CPython
    import traceback  # noqa: TID251 - the CPython stand-in for sys.print_exception

    def print_exception(e, file=None):
        traceback.print_exception(type(e), e, e.__traceback__, file=file)


def log(*parts):
    """print(), with the line written in one call: print() writes the line end apart and lets go of
    the GIL around each write, so another thread's line could land inside this one on the console."""
    sys.stdout.write(" ".join([str(p) for p in parts]) + "\n")


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


def before_load(module):
    """Call before a module's first import after boot: collect the heap first. Between collections
    every allocation goes higher up the heap, so a module loaded then (its functions, classes and
    tables live as long as the device) would land among the garbage above the last collection, and
    once that garbage is freed it splits the largest free block. Collected first, it fills the holes
    lower down. A no-op once the module is loaded."""
    if module not in sys.modules:
        gc.collect()


# One lazy import (or unload) at a time: MicroPython has no import lock, and a thread importing a
# module that another thread is still running found it in sys.modules half made ("module
# 'iotutils.ota.release' has no attribute 'Source'": two OTA checks at once). The thread holding it
# may load more inside (a module's own lazy imports): _load_by names it.
_load_mu = allocate_lock()
_load_by = None


def _hold():
    # the load lock, unless this thread holds it already: True if taken here (give it back then)
    global _load_by
    me = _thread.get_ident() if _thread is not None else 0
    if _load_by == me:
        return False
    _load_mu.acquire()
    _load_by = me
    return True


def _let_go(taken):
    global _load_by
    if taken:
        _load_by = None
        _load_mu.release()


def load(module):
    """Module `module` (a dotted name), imported at its first use with the heap collected first
    (before_load). Also how a package reaches its own submodule: on MicroPython `from package import
    sub` asks the package's __getattr__ first, which may not know the name."""
    m = sys.modules.get(module)
    if m is not None and not _load_mu.locked():
        return m   # (whole: no load runs, so none is making it)
    taken = _hold()
    try:
        before_load(module)
        __import__(module)
        return sys.modules[module]
    finally:
        _let_go(taken)


KEEP_LOADED = False   # the simulator's heap model counts the toolbox's code as loaded for good


def unload(*names):
    """Forget modules (sys.modules and their package's attribute), so their functions and tables can
    be collected once nothing else holds them; the next import loads them again (call before_load
    first then). Only for modules that keep no state of their own and that no loaded module imports
    at its top: a class attribute a program set on them is gone too."""
    if KEEP_LOADED:
        return
    taken = _hold()   # (not while a load runs: it would find its module gone)
    try:
        for name in names:
            if sys.modules.pop(name, None) is None:
                continue
            pkg, _, attr = name.rpartition(".")
            parent = sys.modules.get(pkg)
            if parent is not None:
                try:
                    delattr(parent, attr)
                except AttributeError:
                    pass
    finally:
        _let_go(taken)


def call_loaded(module, name, *args):
    """module.name(*args), the module loaded for this one call (load) and let go again (unload)
    unless it was loaded already: for code a device needs once, such as at boot."""
    loaded = module in sys.modules
    try:
        return getattr(load(module), name)(*args)
    finally:
        if not loaded:
            unload(module)


def handed_out(module, obj, attr, names):
    """For a class __getattr__ whose cold methods live in `module` (functions taking the object
    first): obj's method `attr` when `names` has it, the module loaded at its first use (load);
    AttributeError for any other name."""
    if attr not in names:
        raise AttributeError(attr)
    f = getattr(load(module), attr)
    return lambda *args, **kw: f(obj, *args, **kw)


def public_names(names, lazy):
    """__all__ of a module whose __getattr__ hands out names it loads later. MicroPython's
    `from module import *` asks that hook for __all__, and its AttributeError ended the import: the
    module's public names (what a star import takes without __all__) and the lazy ones."""
    return [n for n in names if n[:1] != "_"] + list(lazy)

def events(poller, ms):
    """The (object, event) pairs a select.poll has within ms. On MicroPython it allocates nothing
    (ipoll: a pair is valid until the next one; do not change the poll set while iterating): poll()
    makes a list at every call, and the idle loops ask many times a second, so their garbage would
    walk the allocator over the whole heap between two collections."""
    return poller.ipoll(ms) if _IPOLL else poller.poll(ms)


def ready(poller, ms):
    """Whether a socket registered in `poller` has an event within ms (allocating nothing)."""
    for _ in events(poller, ms):
        return True
    return False


def recv_for(sock, limit, ms):
    """Up to `limit` bytes from sock, until it closes or `ms` pass: OSError ETIMEDOUT if the time
    ran out first. The socket is left non-blocking and polled in slices, the time counted here: a
    blocking socket's timeout restarts at every signal on the unix port, and another thread's
    garbage collection sends one, so a peer that never answers could hold the caller forever."""
    import select

    sock.setblocking(False)
    p = select.poll()
    p.register(sock, select.POLLIN)
    got = b""
    t0 = ticks_ms()
    while len(got) < limit:
        left = ms - ticks_diff(ticks_ms(), t0)
        if left <= 0:
            raise OSError(110, "timed out")   # ETIMEDOUT
        if not p.poll(min(left, 100)):
            continue
        try:
            part = sock.recv(limit - len(got))
        except OSError as e:
            if e.args and e.args[0] == 11:   # EAGAIN: woken for nothing
                continue
            raise
        if not part:
            break
        got += part
    return got


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
_HOST = sys.platform != "esp32"
_WIDE = sys.maxsize > 0x7FFFFFFF
_HOST_MARGIN = const(8192)  # the unix port's stack-limit margin
_HOST_IMPORTS = 2 * 4096   # two nested imports' PATH_MAX buffers (the deepest a handler reaches)


def start_thread(name, fn, args, stack_size):
    """Run fn(*args) in a new thread, counted in THREADS until it ends. stack_size: bytes for its
    stack on the chip (0: the port's default), set for this thread only. Elsewhere the thread gets
    what the same code needs there, so that it runs out of stack about where it would on the chip:
    MicroPython's unix port needs twice the stack on a 64-bit host (its UNIX_STACK_MULTIPLIER), keeps
    8 KB of every thread's stack out of its recursion limit, and puts a PATH_MAX (4 KB) buffer on
    the C stack for each nested import (the ESP32 port: 128 bytes): two here (bench_stack.py)."""
    entry = [name, stack_size]
    real = stack_size
    if stack_size and _HOST:
        real = stack_size * (2 if _WIDE else 1) + _HOST_MARGIN + _HOST_IMPORTS
    THREADS.append(entry)
    old = None
    try:
        if real:
            try:
                old = _thread.stack_size(real)
            except ValueError:  # CPython: below its minimum, its own default serves
                pass
        _thread.start_new_thread(_thread_entry, ((entry, fn, args),))
    except BaseException:
        THREADS.remove(entry)
        raise
    finally:
        if old is not None:
            _thread.stack_size(old)


def _thread_entry(job):
    # (entry, fn, args). A thread's first frame lives as long as the thread: with one local it stays
    # on the C stack (MicroPython puts a frame of more than 11 words on the heap: a closure calling
    # fn(*args) in a try took 192 bytes of heap per thread on a 64-bit host)
    try:
        job[1](*job[2])
    finally:
        if job[0] in THREADS:
            THREADS.remove(job[0])
