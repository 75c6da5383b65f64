# The hardware layer: the only place iotutils touches the chip.
#
# On an ESP32 (custom firmware or stock MicroPython) everything comes from hal/esp32.py
# (network.WLAN, esp32.Partition, machine); everywhere else from hal/sim.py, the simulated
# device driven by scripts/sim.py. App code and the other iotutils modules import only this.
import sys

if sys.platform == "esp32":
    from iotutils.hal import esp32 as _impl
    PLATFORM = "esp32"
else:
    from iotutils.hal import sim as _impl
    PLATFORM = "sim"


def __getattr__(name):
    # the hardware API is read from the board's (or the simulation's) module when asked: a copy of
    # each of its names here would cost this module a dictionary slot per function (0.4 KB, host)
    if name in _impl.__all__:
        return getattr(_impl, name)
    # MicroPython asks this hook before it imports a submodule (`from iotutils.hal import wlan_sim`).
    # Only the package's own: MicroPython's dir() asks it for every name the runtime knows
    if name in ("esp32", "flash", "layout", "otadata", "sim", "wlan_sim"):
        try:
            return __import__("iotutils.hal." + name, None, None, (name,))
        except ImportError:   # (esp32.py off the chip)
            pass
    raise AttributeError(name)


STA = 0
AP = 1


def running_desc():
    """The running app image's descriptor (dict: "version", "project", ...; {} without one); OSError
    or ValueError when its slot cannot be read. The image format's code (iotutils.appimage, network
    code, loaded by an OTA check or update) is loaded for the read and let go again unless it was
    loaded already: the boot report and the OTA status need it once."""
    from iotutils._compat import call_loaded

    hal = sys.modules[__name__]   # (the API as the package hands it out now: tests may swap the layer)
    return call_loaded("iotutils.appimage", "read_desc", hal.partition(hal.ota_running())) or {}


# The board's thread stacks and sockets (the chip's bytes; the simulated device models the same
# board). Stacks: bench/bench_stack.py's measured need on the host firmware (its 'preloaded' column:
# a role's own frames) plus a margin (docs/memory.md); a board with other needs sets these before
# Device.start(), or WebServer.stack_size / Housekeeper.stack_size.
# Web server threads: handlers that run at once (Device(workers=None) takes it), plus the poll loop.
# The poll loop answers quick requests itself; a worker is taken only by a handler that runs longer
# than takeover_ms (a login's password hash, an upload, a Wi-Fi scan), and two of those at once is
# what a device without PSRAM plans for (each thread is a task with its own stack: 8.4 KB here).
WEB_WORKERS = 2
WEB_STACK = 8192          # each web server thread: measured 6.5 KB (every admin page and API, uploads)
HOUSEKEEPER_STACK = 10240 # Wi-Fi, SSDP/WeMo, MQTT and its callbacks: 4.5 KB + an mqtts handshake
JOB_STACK = 10240         # short-lived jobs (OTA check/install, admin and MQTT jobs): <= 3 KB + TLS
MAX_SOCKETS = 16          # CONFIG_LWIP_MAX_SOCKETS in boards/ESP32_GENERIC/sdkconfig.board
