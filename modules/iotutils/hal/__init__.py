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

# The board's thread stacks and sockets (the chip's bytes; the simulated device models the same
# board). Stacks: the deepest use measured by bench/bench_stack.py plus a margin (docs/memory.md);
# a board with other needs sets WebServer.stack_size / Housekeeper.stack_size instead.
WEB_STACK = 12288         # each web server thread (and OTA/admin jobs): a handler that imports a module
                          # which imports others (the admin page's MQTT tab: three frozen imports deep)
                          # overflowed 10 KB on the host firmware
HOUSEKEEPER_STACK = 8192  # the housekeeping thread: Wi-Fi, SSDP/WeMo, MQTT callbacks, OTA timer
MAX_SOCKETS = 16          # CONFIG_LWIP_MAX_SOCKETS in boards/ESP32_GENERIC/sdkconfig.board
