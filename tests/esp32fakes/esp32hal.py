# Make iotutils.hal the real ESP32 layer (hal/esp32.py) over these fakes, on the host.
#
# hal/__init__ picks hal/esp32.py only when sys.platform == "esp32". Call install() before
# anything else of iotutils is imported: every `from iotutils import hal` then reaches the esp32
# layer's functions (copied over the package's), and hal.PLATFORM is "esp32" (store.py picks its
# esp32.NVS backend from it). The package object itself stays, so hal's submodules still import.
import sys


def install():
    import iotutils.hal as pkg
    from iotutils.hal import esp32 as layer
    for name in dir(layer):
        if not name.startswith("__"):
            setattr(pkg, name, getattr(layer, name))
    pkg.PLATFORM = "esp32"
    if "iotutils.store" in sys.modules:
        raise RuntimeError("esp32hal.install() must come before iotutils.store is imported")
    return pkg
