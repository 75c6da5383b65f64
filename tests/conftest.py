"""Shared pytest set-up: paths, the MicroPython runtime to use, and simulated devices."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "modules"))
sys.path.insert(0, os.path.join(ROOT, "tests", "unit"))
sys.path.insert(0, os.path.join(ROOT, "tests", "c"))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "scripts"))


def micropython_exe():
    """The runtime under test: FIRMWARE=<host firmware binary> if set, else the venv's micropython."""
    exe = os.environ.get("FIRMWARE") or os.path.join(ROOT, ".venv", "bin", "micropython")
    return os.path.abspath(exe) if os.path.exists(exe) else "micropython"


def micropython_cmd(heap="110wK"):
    """[runtime, -X heapsize=...]: the ESP32 heap model plus the code allowance (scripts/mpcode.py)."""
    import mpcode
    exe = micropython_exe()
    heap_arg, _, _ = mpcode.runtime_setup(exe, heap, frozen_exact=False)
    return [exe, "-X", "heapsize=" + heap_arg]


def micropython_path(*extra):
    """MICROPYPATH for running iotutils on the runtime under test: extra folders, then the
    precompiled toolbox (.mpy), frozen modules and modules/."""
    import mpcode
    prefix = mpcode.compile_modules(micropython_exe())
    return os.pathsep.join([p for p in list(extra) + [prefix, ".frozen", os.path.join(ROOT, "modules")] if p])


try:
    import pytest
except ImportError:  # the micropython unit runner imports this file's helpers only
    pytest = None

if pytest is not None:

    @pytest.fixture(autouse=True)
    def _no_leaked_devices():
        """A simulated device a test (or its function-scoped fixtures) started and left running is
        stopped when the test ends, pass or fail; module-scoped ones were started before and stay."""
        import simdev
        before = list(simdev.STARTED)
        yield
        for d in [d for d in simdev.STARTED if d not in before]:
            simdev.STARTED.remove(d)
            if d.alive():
                try:
                    d.stop()
                except Exception as e:  # a stop that fails must not hide the test's own result
                    print("could not stop a leftover simulated device: %r" % (e,))
