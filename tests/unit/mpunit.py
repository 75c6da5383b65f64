"""The little that unit tests need, on CPython and on MicroPython alike.

Unit test modules in tests/unit/ use plain `assert` and these helpers only (no pytest
fixtures), so the same file runs under pytest and under tests/unit/mp_runner.py.
"""
import os


try:
    from unittest import SkipTest  # CPython: pytest reports these as skips
except ImportError:
    class SkipTest(Exception):
        pass


def raises(exc_type, fn, *args, **kwargs):
    """Call fn and return the exception it raised; fail if it raised none or another type."""
    try:
        fn(*args, **kwargs)
    except exc_type as e:
        return e
    raise AssertionError("%s not raised by %r" % (exc_type.__name__, fn))


def is_micropython():
    import sys
    return sys.implementation.name == "micropython"


_counter = [0]


def tempdir(tag="t"):
    """A fresh empty directory under $IOTUTILS_TEST_TMP (or /tmp)."""
    base = os.getenv("IOTUTILS_TEST_TMP") or "/tmp"
    _counter[0] += 1
    seed = int.from_bytes(os.urandom(4), "little")
    path = "%s/iotu-%s-%d-%08x" % (base, tag, _counter[0], seed)
    os.mkdir(path)
    return path


def rmtree(path):
    for name in os.listdir(path):
        full = path + "/" + name
        if os.stat(full)[0] & 0x4000:
            rmtree(full)
        else:
            os.remove(full)
    os.rmdir(path)


def flash_writes(fn, *args):
    """How many flash writes and erases fn(*args) makes (through hal.flash.Region.fault)."""
    from iotutils.hal.flash import Region
    count = [0]

    def counting(op, name, off, n):
        count[0] += op != "read"
    Region.fault = counting
    try:
        fn(*args)
    finally:
        Region.fault = None
    return count[0]


def failing_at_write(k, fn, *args, exc=None):
    """Call fn(*args) with the k-th flash write or erase raising exc (OSError ENOSPC by default);
    returns the exception fn raised, or None if it returned."""
    from iotutils.hal.flash import Region
    hit = [0]
    exc = exc or OSError(28)

    def fault(op, name, off, n):
        if op != "read":
            hit[0] += 1
            if hit[0] == k:
                raise exc
    Region.fault = fault
    try:
        fn(*args)
    except (OSError, MemoryError) as e:
        return e
    finally:
        Region.fault = None
    return None


def on_free_port(open_at, first=20000, span=25000, tries=50):
    """(open_at(port), port) for a random loopback port where open_at does not raise OSError (taken).
    MicroPython's unix sockets have no getsockname(), so the port is picked here."""
    for _ in range(tries):
        port = first + int.from_bytes(os.urandom(2), "little") % span
        try:
            return open_at(port), port
        except OSError:
            pass
    raise OSError("no free port")


def udp_socket():
    """(socket, port): a UDP socket bound to a free port on 127.0.0.1."""
    import socket

    def bind(port):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        except OSError:
            s.close()
            raise
        return s
    return on_free_port(bind)


def silent_listener(first_port=41000, ip="127.0.0.1", backlog=2):
    """(socket, port): a listening TCP socket on ip that nobody ever answers from (the kernel
    completes the handshakes). MicroPython's unix sockets have no getsockname: ports are tried."""
    import socket
    import time
    s = socket.socket()
    port = first_port + int(time.time() * 1000) % 7000
    while True:
        try:
            s.bind(socket.getaddrinfo(ip, port)[0][-1])
            break
        except OSError:
            port += 1
    s.listen(backlog)
    return s, port


def collecting_thread(every_ms=20):
    """Start a thread that collects garbage every few ms, as a device's threads do (each collection
    signals the other threads on the unix port); returns the function that stops it."""
    import gc

    from iotutils._compat import _thread, sleep_ms
    stop = [False]

    def churn():
        while not stop[0]:
            gc.collect()
            sleep_ms(every_ms)
    _thread.start_new_thread(churn, ())

    def stopper():
        stop[0] = True
        sleep_ms(every_ms * 5)
    return stopper


def pile_garbage():
    """(last piece, marker): garbage of small and larger pieces, which fills every hole the last
    collection left and moves the allocator up past it, then a small live marker above it all. What
    a collection-first allocation makes next must land below the marker (MicroPython: id() and
    uctypes.addressof() are addresses). Keep both alive until the check."""
    junk = None
    for i in range(900):
        junk = bytearray(24 if i % 3 else 600)
    return junk, bytearray(24)
