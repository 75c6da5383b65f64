# iotutils: the ESP32 toolbox for MicroPython devices. See README.md and docs/design.md.
# Submodules are imported on first use (RAM is scarce at boot): iotutils.Device loads device.py.
# const(): MicroPython's compiler folds `_X = const(3)` (and `X = const(3)`) by the name alone, so no
# module imports it: an import would be a slot in the table of every module that used it. CPython
# (unit tests, host tools) gets the identity function as a builtin, here, before any submodule runs.
# (No name is bound: this package's table stays as small.)
try:
    __import__("micropython")
except ImportError:
    __import__("builtins").const = lambda x: x

__version__ = "0.1.0"


def __getattr__(name):
    if name == "__all__":   # `from iotutils import *`: the Device (submodules stay by name)
        return ["Device"]
    if name == "Device":
        from iotutils.device import Device
        return Device
    # MicroPython resolves `from iotutils import hal` through this hook before it looks for a
    # submodule, so import the submodule here rather than failing.
    if name.startswith("__"):
        raise AttributeError(name)
    try:
        __import__("iotutils." + name)
    except ImportError:
        raise AttributeError(name)
    return globals()[name]
