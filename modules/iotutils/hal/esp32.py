# The real ESP32 hardware layer: network.WLAN, esp32.Partition, machine.
# Kept small on purpose: everything above it is exercised through hal/sim.py on the host.
import esp32
import machine
import network
import time

from iotutils.hal import otadata
from iotutils.hal.flash import SECTOR_SIZE, _Region

_IOCTL_BLOCK_ERASE = 6


class _PartitionRegion(_Region):
    """A flash region over esp32.Partition's extended block interface (byte offsets)."""

    def __init__(self, part):
        info = part.info()  # (type, subtype, addr, size, label, encrypted)
        _Region.__init__(self, info[3], info[4], info[2])
        self.part = part

    def _read(self, off, n):
        buf = bytearray(n)
        self.part.readblocks(off // SECTOR_SIZE, buf, off % SECTOR_SIZE)
        return buf

    def readinto(self, off, buf):
        self._check(off, len(buf))
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


def ota_mark_valid():
    esp32.Partition.mark_app_valid_cancel_rollback()


def ota_pending():
    return otadata.running_state(partition("otadata")) == otadata.STATE_PENDING_VERIFY


def ota_rolled_back():
    return otadata.last_invalid_slot(partition("otadata")) is not None


_CAUSES = {machine.PWRON_RESET: "power_on", machine.HARD_RESET: "power_on", machine.WDT_RESET: "watchdog",
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


def ip():
    sta = network.WLAN(network.STA_IF)
    if sta.isconnected():
        return sta.ifconfig()[0]
    return network.WLAN(network.AP_IF).ifconfig()[0]


def mac():
    return network.WLAN(network.STA_IF).config("mac")


def unique_id():
    return machine.unique_id()


def mem_free():
    import gc
    return gc.mem_free()


def mem_alloc():
    import gc
    return gc.mem_alloc()


def heap_total():
    import gc
    return gc.mem_free() + gc.mem_alloc()


_boot_ms = time.ticks_ms()


def uptime_ms():
    return time.ticks_diff(time.ticks_ms(), _boot_ms)


def state_dir():
    return None


def wlan(interface):
    return network.WLAN(network.AP_IF if interface == 1 else network.STA_IF)
