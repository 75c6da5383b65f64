# The hardware layer: the only place iotutils touches the chip.
#
# On an ESP32 (custom firmware or stock MicroPython) everything comes from hal/esp32.py
# (network.WLAN, esp32.Partition, machine); everywhere else from hal/sim.py, the simulated
# device driven by scripts/sim.py. App code and the other iotutils modules import only this.
import sys

if sys.platform == "esp32":
    from iotutils.hal.esp32 import *  # noqa: F403
    PLATFORM = "esp32"
else:
    from iotutils.hal.sim import *  # noqa: F403
    PLATFORM = "sim"

STA = 0
AP = 1
