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
