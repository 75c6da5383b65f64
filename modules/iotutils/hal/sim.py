# The simulated device's hardware layer (docs/design.md, "The simulated device").
#
# scripts/sim.py starts the device with IOTUTILS_SIM=<state>/sim.json describing the flash image,
# the booted slot, the reset cause, port mapping and the Wi-Fi scenario. Without it (unit tests)
# the device gets a fresh RAM flash laid out like partitions.csv, or <dir>/flash.bin when
# IOTUTILS_SIM_STATE=<dir> is set. On a board that is not an ESP32 (stock MicroPython on an RP2040,
# say) each partition that is used -- in practice only nvs -- is a file of its own on the board's
# filesystem (/iotutils-nvs.bin), so persistent values survive reboots there too.
import sys
import json
import os
import socket
import time

from iotutils._compat import call_loaded, ticks_diff, ticks_ms
from iotutils.hal import flash, layout

try:
    import gc
except ImportError:  # pragma: no cover
    gc = None

# what hal's star import takes: the hardware API only (not this module's own imports, which would
# each cost hal a dictionary slot)
__all__ = ("config", "partition", "ota_running", "ota_next", "ota_set_boot", "ota_mark_valid", "ota_pending",
           "ota_rolled_back", "reset_cause", "reset", "wdt_start", "wdt_feed", "port", "ip", "netmask",
           "mac", "unique_id", "mem_free", "mem_alloc", "heap_total", "max_sockets", "uptime_ms",
           "state_dir", "wlan", "getaddrinfo", "time_ok", "sync_time")
_config = None
_flash = {}
_HOST_PLATFORMS = const(("linux", "darwin", "win32", "windows", "webassembly"))
_booted_ms = ticks_ms()


def config():
    """The simulator's description of this boot (dict)."""
    global _config
    if _config is None:
        path = os.getenv("IOTUTILS_SIM")
        if path:
            with open(path) as f:
                _config = json.load(f)
        else:
            state = os.getenv("IOTUTILS_SIM_STATE")
            board = sys.platform not in _HOST_PLATFORMS
            _config = {"state": state, "flash": state + "/flash.bin" if state else None,
                       "files": board and not state,
                       "partitions": [list(p) for p in layout.DEFAULT], "port": 8080,
                       "slot": "ota_0", "reset_cause": "power_on", "ctl_port": None, "wifi": None,
                       "mac": "02:00:00:00:00:01"}
    return _config


def _table():
    return {p[0]: p for p in config()["partitions"]}


def partition(name):
    """The flash region of partition `name` (read/readinto/write/erase/size)."""
    region = _flash.get(name)
    if region is None:
        p = _table().get(name)
        if p is None:
            raise ValueError("no partition named %r" % name)
        path = config().get("flash")
        if path:
            _ensure_image(path, layout.FLASH_SIZE)
            region = flash.FileFlash(path, p[3], p[4], name)
        elif config().get("files"):
            path = "%s/iotutils-%s.bin" % (config().get("files_dir", ""), name)
            _ensure_image(path, p[4])
            region = flash.FileFlash(path, 0, p[4], name)
        else:
            region = flash.RamFlash(p[4], name)
            region.offset = p[3]
        if os.getenv("IOTUTILS_STRICT_FLASH"):
            region.strict = True
        _flash[name] = region
    return region


def _ensure_image(path, size):
    try:
        os.stat(path)
    except OSError:
        blank = b"\xff" * 4096
        with open(path, "wb") as f:
            for _ in range(size // 4096):
                f.write(blank)


# ---- OTA slots (emulated bootloader lives in scripts/sim.py, same otadata module) ----

def ota_running():
    return config()["slot"]


def ota_next():
    return layout.APP_SLOTS[1 - layout.APP_SLOTS.index(ota_running())]


def ota_set_boot(name):
    call_loaded("iotutils.hal.otadata", "set_boot", partition("otadata"), layout.APP_SLOTS.index(name), 2)


def ota_mark_valid():
    # only the running image's entry may be confirmed (as esp_ota_mark_app_valid_cancel_rollback)
    call_loaded("iotutils.hal.otadata", "mark_valid", partition("otadata"),
                layout.APP_SLOTS.index(ota_running()), 2)


def ota_pending():
    return call_loaded("iotutils.hal.otadata", "pending", partition("otadata"),
                       layout.APP_SLOTS.index(ota_running()), 2)


def ota_rolled_back():
    return call_loaded("iotutils.hal.otadata", "last_invalid_slot", partition("otadata"), 2) is not None


# ---- system ----

def reset_cause():
    """"power_on", "soft", "watchdog", "panic" (crash) or "deepsleep"."""
    return config().get("reset_cause", "power_on")


def _ctl(msg):
    port = config().get("ctl_port")
    if not port:
        return False
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(msg.encode(), socket.getaddrinfo("127.0.0.1", port)[0][-1])
    finally:
        s.close()
    return True


def reset():
    """machine.reset(): the simulator stops this process and boots again (never returns)."""
    msg = "reset %s" % config().get("boot")
    if not _ctl(msg):
        raise SystemExit("reset requested outside the simulator")
    while True:
        time.sleep(1)
        _ctl(msg)   # lost on a busy host? the simulator ignores it once this boot has ended


def wdt_start(timeout_ms):
    """Arm the (simulated) task watchdog: no wdt_feed() within timeout_ms -> reset."""
    _ctl("wdt %d" % timeout_ms)


def wdt_feed():
    _ctl("feed")


def port(device_port):
    """The host port that stands for a device port (docs/design.md / README: 80 -> N, 53 -> N+1,
    SSDP 1900 -> 1900 (multicast is shared), 49152..49251 -> N+2+(p-49152) for WeMo devices)."""
    base = config().get("port", 8080)
    if device_port == 80:
        return base
    if device_port == 53:
        return base + 1
    if device_port == 1900:
        return 1900
    if 49152 <= device_port < 49252:
        return base + 2 + device_port - 49152
    raise ValueError("device port %d has no host mapping in the simulator" % device_port)


def ip():
    return "127.0.0.1"


def netmask():
    """The simulated LAN is loopback: 127.0.0.0/8 (every simulated device and test client is on it)."""
    return "255.0.0.0"


def mac():
    return bytes(int(x, 16) for x in config().get("mac", "02:00:00:00:00:01").split(":"))


def unique_id():
    return mac()


def mem_free():
    return gc.mem_free() if gc and hasattr(gc, "mem_free") else 0


def mem_alloc():
    return gc.mem_alloc() if gc and hasattr(gc, "mem_alloc") else 0


def heap_total():
    """The heap the device model gives to data (the 110wK model), not counting the room this
    runtime needs to hold iotutils' code, which a firmware keeps frozen in flash."""
    model = config().get("heap_model")
    if model:
        return model
    return mem_free() + mem_alloc()


def max_sockets():
    """The board's lwIP socket table (0: none, the host's limits): the board's, unless the simulator
    was given another (scripts/sim.py --sockets)."""
    n = config().get("sockets")
    if n is None:
        from iotutils import hal
        n = hal.MAX_SOCKETS
    return n


def uptime_ms():
    return ticks_diff(ticks_ms(), _booted_ms)


def state_dir():
    return config().get("state")


def wlan(interface):
    """A network.WLAN-like object for hal.STA (0) or hal.AP (1), driven by the Wi-Fi scenario."""
    from iotutils.hal import wlan_sim
    return wlan_sim.interface(interface, config().get("wifi"))


# ---- names and time (the OTA client's TLS needs both) ----

def getaddrinfo(host, port):
    """socket.getaddrinfo for a TCP connection. The simulator's host map answers first: the
    environment variable IOTUTILS_SIM_HOSTS ("api.github.com=127.0.0.1,...") lets tests give real
    names (GitHub's, checked by TLS) to servers on loopback."""
    for item in (os.getenv("IOTUTILS_SIM_HOSTS") or "").split(","):
        name, _, addr = item.partition("=")
        if name and name == host:
            host = addr
            break
    return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)


def time_ok():
    """True when the clock can be trusted to check certificates (the host's clock is)."""
    return time.gmtime()[0] >= 2024


def sync_time():
    """Set the clock from the network (NTP); True if it is right afterwards. The host's clock is."""
    return time_ok()

