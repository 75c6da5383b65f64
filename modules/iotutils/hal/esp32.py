# The real ESP32 hardware layer: network.WLAN, esp32.Partition, machine.
# Kept small on purpose: everything above it is exercised through hal/sim.py on the host.
import esp32
import machine
import network

from iotutils._compat import call_loaded, log, ticks_diff, ticks_ms
from iotutils.hal.flash import SECTOR_SIZE, Region

# what hal's star import takes: the hardware API only (not this module's own imports, which would
# each cost hal a dictionary slot)
__all__ = ("partition", "ota_running", "ota_next", "ota_set_boot", "ota_mark_valid", "ota_pending",
           "ota_rolled_back", "reset_cause", "reset", "wdt_start", "wdt_feed", "port", "ip", "netmask",
           "mac", "unique_id", "mem_free", "mem_alloc", "heap_total", "max_sockets", "uptime_ms",
           "state_dir", "wlan", "getaddrinfo", "time_ok", "sync_time")
_IOCTL_BLOCK_ERASE = 6
_SUBTYPE_OTA_0 = 0x10


class _PartitionRegion(Region):
    """A flash region over esp32.Partition's extended block interface (byte offsets)."""

    def __init__(self, part):
        info = part.info()  # (type, subtype, addr, size, label, encrypted)
        Region.__init__(self, info[3], info[4], info[2])
        self.part = part

    def _read(self, off, n):
        buf = bytearray(n)
        self.part.readblocks(off // SECTOR_SIZE, buf, off % SECTOR_SIZE)
        return buf

    def readinto(self, off, buf):
        self._check(off, len(buf), "read")
        self.part.readblocks(off // SECTOR_SIZE, buf, off % SECTOR_SIZE)

    def _write(self, off, data):
        self.part.writeblocks(off // SECTOR_SIZE, data, off % SECTOR_SIZE)

    def _erase(self, off, n):
        for block in range(off // SECTOR_SIZE, (off + n) // SECTOR_SIZE):
            self.part.ioctl(_IOCTL_BLOCK_ERASE, block)


_regions = {}


def partition(name):
    r = _regions.get(name)
    if r is None:
        found = esp32.Partition.find(esp32.Partition.TYPE_APP, label=name) or \
            esp32.Partition.find(esp32.Partition.TYPE_DATA, label=name)
        if not found:
            raise ValueError("no partition named %r" % name)
        r = _regions[name] = _PartitionRegion(found[0])
    return r


def ota_running():
    return esp32.Partition(esp32.Partition.RUNNING).info()[4]


def ota_next():
    return esp32.Partition(esp32.Partition.RUNNING).get_next_update().info()[4]


def ota_set_boot(name):
    esp32.Partition.find(esp32.Partition.TYPE_APP, label=name)[0].set_boot()


_ota = []


def _otadata():
    """(otadata region, running OTA slot index or None, number of OTA slots), or None on a
    partition table without OTA (stock MicroPython: factory app only). Fixed for this boot."""
    if not _ota:
        if esp32.Partition.find(esp32.Partition.TYPE_DATA, label="otadata"):
            subs = [p.info()[1] for p in esp32.Partition.find(esp32.Partition.TYPE_APP)]
            n = len([s for s in subs if _SUBTYPE_OTA_0 <= s < _SUBTYPE_OTA_0 + 16])
            run = esp32.Partition(esp32.Partition.RUNNING).info()[1] - _SUBTYPE_OTA_0
            _ota.append((partition("otadata"), run if 0 <= run < n else None, n))
        else:
            _ota.append(None)
    return _ota[0]


def ota_pending():
    """The running image waits for confirmation (otadata selects it, PENDING_VERIFY)."""
    od = _otadata()
    return od is not None and od[1] is not None and \
        call_loaded("iotutils.hal.otadata", "pending", od[0], od[1], od[2])


def ota_mark_valid():
    # only when the running image is the pending one: ESP-IDF marks whichever entry otadata
    # selects (after an install, the new image that never booted) and raises OSError when
    # none does (otadata still erased, as esptool leaves it)
    if ota_pending():
        esp32.Partition.mark_app_valid_cancel_rollback()


def ota_rolled_back():
    od = _otadata()
    return od is not None and call_loaded("iotutils.hal.otadata", "last_invalid_slot", od[0], od[2]) is not None


# machine.reset() and a panic both give HARD_RESET on the port (it cannot tell esp_restart from
# a crash): reported as "soft", the simulator's word for a reset the software asked for
_CAUSES = {machine.PWRON_RESET: "power_on", machine.HARD_RESET: "soft", machine.WDT_RESET: "watchdog",
           machine.DEEPSLEEP_RESET: "deepsleep", machine.SOFT_RESET: "soft"}


def reset_cause():
    return _CAUSES.get(machine.reset_cause(), "panic")


def reset():
    machine.reset()


_wdt = None


def wdt_start(timeout_ms):
    global _wdt
    _wdt = machine.WDT(timeout=timeout_ms)


def wdt_feed():
    if _wdt is not None:
        _wdt.feed()


def port(device_port):
    return device_port


def _ifconfig():
    sta = network.WLAN(network.STA_IF)
    if sta.isconnected():
        return sta.ifconfig()
    ap = network.WLAN(network.AP_IF)
    return ap.ifconfig() if ap.active() else ("0.0.0.0", "255.255.255.255")


def ip():
    return _ifconfig()[0]


def netmask():
    """The netmask of the interface ip() is on (SSDP answers only searchers on that subnet)."""
    return _ifconfig()[1]


def mac():
    return network.WLAN(network.STA_IF).config("mac")


def unique_id():
    return machine.unique_id()


def max_sockets():
    """lwIP's socket table (CONFIG_LWIP_MAX_SOCKETS of the board's sdkconfig)."""
    from iotutils import hal
    return hal.MAX_SOCKETS


def mem_free():
    import gc
    return gc.mem_free()


def mem_alloc():
    import gc
    return gc.mem_alloc()


def heap_total():
    import gc
    return gc.mem_free() + gc.mem_alloc()


_boot_ms = ticks_ms()


def uptime_ms():
    return ticks_diff(ticks_ms(), _boot_ms)


def state_dir():
    return None


def wlan(interface):
    return network.WLAN(network.AP_IF if interface == 1 else network.STA_IF)


# ---- names and time (the OTA client's TLS needs both) ----

def getaddrinfo(host, port):
    import socket

    return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)


def time_ok():
    """True when the clock can be trusted to check certificates: after a power-on it starts at the
    port's epoch, and every certificate would look not yet valid."""
    import time

    return time.gmtime()[0] >= 2024


def sync_time(host="pool.ntp.org"):
    """Set the clock by NTP (micropython-lib's ntptime, frozen in the ESP32 firmware); True if it is
    right afterwards."""
    try:
        import ntptime

        ntptime.host = host
        ntptime.settime()
    except (ImportError, OSError, OverflowError, IndexError) as e:
        log("hal: NTP failed:", e)
    return time_ok()

