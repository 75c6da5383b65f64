# iotutils/hal/esp32.py, the real ESP32 hardware layer, over fakes of the esp32 port's esp32,
# machine and network modules (tests/esp32fakes/, faithful to MicroPython v1.28 + ESP-IDF v5.5.1).
# On CPython and MicroPython. hal/__init__ picks esp32.py only on an ESP32: imported directly here.
import os
import struct
import sys

from mpunit import is_micropython, raises, tempdir

_here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
_fakes = _here + "/../esp32fakes"
if _fakes not in sys.path:
    sys.path.insert(0, _fakes)

import esp32  # noqa: E402  (the fake)
import machine  # noqa: E402
import network  # noqa: E402

from iotutils.hal import esp32 as hal  # noqa: E402
from iotutils.hal import otadata  # noqa: E402
from iotutils.hal.flash import FlashError  # noqa: E402
from test_appimage import build  # noqa: E402

# boards/ESP32_GENERIC/partitions.csv
_OTADATA = 0xF000
_OTA_0 = 0x20000
_OTA_1 = 0x1F0000
_VFS = 0x3C0000


_dir = []
_n = [0]


def _new_image():
    """A path for a fresh flash image; the previous tests' 4 MB images are removed."""
    if not _dir:
        _dir.append(tempdir("esp32"))
    for name in os.listdir(_dir[0]):
        os.remove(_dir[0] + "/" + name)
    _n[0] += 1
    return "%s/flash%d.bin" % (_dir[0], _n[0])


def boot(path=None, running=None, csv=None):
    """Power the fake board on (the fake bootloader picks the app unless `running` is given)."""
    if path is None:
        path = _new_image()
    esp32.fake_setup(path, running, csv)
    hal._regions.clear()    # a reboot: the hal's per-boot caches start empty
    del hal._ota[:]
    return path


def raw(path, off, n):
    with open(path, "rb") as f:
        f.seek(off)
        return f.read(n)


def put_image(path, slot_off, img):
    """What esptool write-flash does: erase and write an app image at a slot's address."""
    with open(path, "r+b") as f:
        f.seek(slot_off)
        f.write(b"\xff" * ((len(img) + 4095) // 4096 * 4096))
        f.seek(slot_off)
        f.write(img)


def entries(path):
    out = []
    for sec in (0, 1):
        seq, _, state, crc = struct.unpack("<I20sII", raw(path, _OTADATA + sec * 4096, 32))
        out.append(None if seq == 0xFFFFFFFF else (seq, state))
    return out


# ---- the flash region adapter ----

def test_region_reads_and_writes_across_block_edges():
    path = boot()
    r = hal.partition("vfs")
    assert (r.size, r.name, r.offset) == (0x40000, "vfs", _VFS)
    r.erase(0, 8192)
    data = bytes(range(10, 30))
    r.write(4090, data)                       # 6 bytes in block 0, 14 in block 1
    assert raw(path, _VFS + 4090, 20) == data
    assert bytes(r.read(4090, 20)) == data
    buf = bytearray(12)
    r.readinto(4088, memoryview(buf))
    assert bytes(buf) == b"\xff\xff" + data[:10]
    assert bytes(r.read(0x40000 - 3, 3)) == b"\xff\xff\xff"


def test_region_write_does_not_erase_and_erase_is_one_ioctl_per_block():
    path = boot()
    r = hal.partition("vfs")
    r.erase(4096, 12288)
    erases = [e for e in esp32.fake_log if e[0] == "erase"]
    assert erases == [("erase", "vfs", 4096, 4096), ("erase", "vfs", 8192, 4096), ("erase", "vfs", 12288, 4096)]
    r.write(5000, b"\x0f\xf0")
    r.write(5000, b"\xff\x3c")                # NOR: a second write only clears bits
    assert raw(path, _VFS + 5000, 2) == b"\x0f\x30"
    assert [e for e in esp32.fake_log if e[0] == "erase"] == erases  # the writes erased nothing
    r.erase(4096, 4096)
    assert raw(path, _VFS + 5000, 2) == b"\xff\xff"


def test_region_rejects_bad_offsets():
    boot()
    r = hal.partition("otadata")
    raises(FlashError, r.read, 0x2000 - 4, 8)
    raises(FlashError, r.write, -1, b"x")
    raises(FlashError, r.erase, 100, 4096)
    raises(FlashError, r.erase, 0, 0x3000)
    raises(ValueError, hal.partition, "nope")
    assert hal.partition("ota_1") is hal.partition("ota_1")


def test_fake_partition_follows_the_port():
    # the fake itself, against esp32_partition.c: a write without offset erases, ioctl 4/5/6
    path = boot()
    p = esp32.Partition("vfs")
    assert p.info() == (1, 0x81, _VFS, 0x40000, "vfs", False)
    assert (p.ioctl(4, 0), p.ioctl(5, 0)) == (64, 4096)
    p.writeblocks(1, b"\x00" * 4096)
    p.writeblocks(1, b"\xaa" * 4096)          # erased first: 0xaa, not 0x00
    assert raw(path, _VFS + 4096, 4) == b"\xaa" * 4
    p.writeblocks(1, b"\x55", 8)              # extended write: no erase, bits only cleared
    assert raw(path, _VFS + 4096 + 8, 1) == b"\x00"
    assert p.ioctl(6, 1) == 0 and raw(path, _VFS + 4096, 4) == b"\xff" * 4
    e = raises(OSError, p.readblocks, 63, bytearray(8), 4092)
    assert e.args[0] == -0x104                # ESP_ERR_INVALID_SIZE via check_esp_err
    small = esp32.Partition("vfs", 512)
    assert small.ioctl(4, 0) == 512 and small.ioctl(6, 0) == -22
    raises(OSError, esp32.Partition, "nope")
    assert esp32.Partition.find(esp32.Partition.TYPE_DATA, label="nope") == []
    assert [q.info()[4] for q in esp32.Partition.find()] == ["ota_0", "ota_1"]


# ---- OTA ----

def test_fresh_board_has_nothing_pending_and_confirm_is_harmless():
    path = boot()                             # erased otadata, nothing in the slots: ota_0 runs
    put_image(path, _OTA_0, build("1.0.0"))
    boot(path)
    assert hal.ota_running() == "ota_0" and hal.ota_next() == "ota_1"
    assert not hal.ota_pending() and not hal.ota_rolled_back()
    # the port raises here (ESP-IDF: "Running firmware is factory", ESP_FAIL): the hal must not
    e = raises(OSError, esp32.Partition.mark_app_valid_cancel_rollback)
    assert e.args[0] == 1
    hal.ota_mark_valid()
    assert entries(path) == [None, None]


def test_set_boot_writes_otadata_like_esp_idf_and_the_bootloader_follows():
    path = boot()
    put_image(path, _OTA_0, build("1.0.0"))
    boot(path)
    nxt = hal.partition(hal.ota_next())
    img = build("2.0.0")
    nxt.erase(0, (len(img) + 4095) // 4096 * 4096)
    nxt.write(0, img)
    hal.ota_set_boot("ota_1")
    assert entries(path) == [(2, otadata.STATE_NEW), None]
    assert otadata.active(hal.partition("otadata")) == (0, 2, otadata.STATE_NEW)
    assert not hal.ota_pending()              # the new image is not running yet
    hal.ota_mark_valid()                      # must not confirm an image that never booted
    assert entries(path)[0] == (2, otadata.STATE_NEW)

    boot(path)                                # reboot: NEW -> PENDING_VERIFY, ota_1 runs
    assert hal.ota_running() == "ota_1" and hal.ota_next() == "ota_0"
    assert entries(path)[0] == (2, otadata.STATE_PENDING_VERIFY)
    assert hal.ota_pending() and not hal.ota_rolled_back()
    hal.ota_mark_valid()
    assert entries(path)[0] == (2, otadata.STATE_VALID) and not hal.ota_pending()

    # next update back into ota_0: sector 1, seq 3
    hal.ota_set_boot("ota_0")
    assert entries(path) == [(2, otadata.STATE_VALID), (3, otadata.STATE_NEW)]


def test_unconfirmed_image_rolls_back():
    path = boot()
    put_image(path, _OTA_0, build("1.0.0"))
    put_image(path, _OTA_1, build("2.0.0"))
    boot(path)
    hal.ota_set_boot("ota_1")
    boot(path)
    assert hal.ota_running() == "ota_1" and hal.ota_pending()
    boot(path)                                # reset without confirming: the bootloader aborts it
    assert hal.ota_running() == "ota_0"
    assert entries(path)[0] == (2, otadata.STATE_ABORTED)
    assert hal.ota_rolled_back() and not hal.ota_pending()
    hal.ota_mark_valid()                      # nothing selected: no OSError
    # the port refuses to select a slot without a valid image
    hal.partition("ota_1").erase(0, 4096)
    e = raises(OSError, hal.ota_set_boot, "ota_1")
    assert e.args[0] == -0x1503               # ESP_ERR_OTA_VALIDATE_FAILED


def test_stock_partition_table_without_ota():
    # stock MicroPython's ESP32_GENERIC: factory app, no otadata (mip-installed iotutils)
    d = _new_image().rsplit("/", 1)[0]
    with open(d + "/p.csv", "w") as f:
        f.write("nvs, data, nvs, 0x9000, 0x6000,\nphy_init, data, phy, 0xf000, 0x1000,\n"
                "factory, app, factory, 0x10000, 0x1F0000,\nvfs, data, fat, 0x200000, 0x200000,\n")
    boot(d + "/flash.bin", "factory", d + "/p.csv")
    assert hal.ota_running() == "factory"
    assert not hal.ota_pending() and not hal.ota_rolled_back()
    hal.ota_mark_valid()
    raises(OSError, hal.ota_next)             # no OTA slot to update into


# ---- system ----

def test_reset_cause_mapping():
    boot()
    cases = ((machine.PWRON_RESET, "power_on"), (machine.HARD_RESET, "soft"), (machine.WDT_RESET, "watchdog"),
             (machine.DEEPSLEEP_RESET, "deepsleep"), (machine.SOFT_RESET, "soft"), (0, "panic"))
    try:
        for code, name in cases:
            machine.fake_reset_cause = code
            assert hal.reset_cause() == name, (code, hal.reset_cause())
    finally:
        machine.fake_reset_cause = machine.PWRON_RESET


def test_reset_and_watchdog():
    n = len(machine.fake_resets)
    raises(machine.FakeReset, hal.reset)
    assert len(machine.fake_resets) == n + 1
    hal.wdt_start(3000)
    w = machine.fake_wdt
    assert w.timeout == 3000
    hal.wdt_feed()
    hal.wdt_feed()
    assert w.feeds == 2
    raises(ValueError, hal.wdt_start, 0)


def test_wlan_ip_and_mac():
    network.fake_reset()
    network.fake_air["networks"] = [{"ssid": "home", "password": "secret", "rssi": -55, "channel": 6}]
    sta, ap = hal.wlan(0), hal.wlan(1)
    assert sta is network.WLAN(network.STA_IF) and ap is network.WLAN(network.AP_IF)
    assert hal.mac() == machine.unique_id() == hal.unique_id()
    raises(OSError, sta.scan)                 # "STA must be active"
    sta.active(True)
    assert [(s[0], s[2], s[3]) for s in sta.scan()] == [(b"home", 6, -55)]
    ap.active(True)
    assert hal.ip() == "192.168.4.1"          # no station link: the access point's address
    assert hal.netmask() == "255.255.255.0"
    sta.connect("home", "wrong")
    assert sta.status() == network.STAT_CONNECTING
    _wait(lambda: sta.status() != network.STAT_CONNECTING)
    assert sta.status() == network.STAT_WRONG_PASSWORD and not sta.isconnected()
    sta.connect("home", "secret")
    _wait(sta.isconnected)
    assert sta.status() == network.STAT_GOT_IP and sta.status("rssi") == -55
    assert hal.ip() == "192.168.1.50" and hal.netmask() == "255.255.255.0"
    network.fake_reset()
    assert (hal.ip(), hal.netmask()) == ("0.0.0.0", "255.255.255.255")   # no interface up: nobody is local


def _wait(cond, ms=2000):
    import time
    for _ in range(ms // 5):
        if cond():
            return
        time.sleep(0.005)
    raise AssertionError("timed out")


def test_misc():
    assert hal.port(80) == 80 and hal.state_dir() is None
    if is_micropython():                      # gc.mem_free is MicroPython's
        assert hal.mem_free() > 0 and hal.heap_total() >= hal.mem_free() + hal.mem_alloc() - 4096
    a = hal.uptime_ms()
    assert a >= 0 and hal.uptime_ms() >= a


# ---- the store's esp32.NVS backend over the fake ----

def test_store_esp32nvs_over_the_fake():
    from iotutils.store_esp32nvs import ESP32NVS
    from iotutils.nvs import NVS
    path = boot()
    s = ESP32NVS()                            # imports the (fake) esp32 module itself
    s.set("cfg", "count", 41)
    s.set("cfg", "name", "lamp")
    s.set("cfg", "blob", b"\x00\x01" * 300)  # > 64 bytes: the adapter retries with a larger buffer
    s.set("wifi", "ssid", "home")
    assert s.get("cfg", "count") == 41 and s.get("cfg", "name") == "lamp"
    assert s.get("cfg", "blob") == b"\x00\x01" * 300
    assert sorted(k for k, _ in s.keys("cfg")) == ["blob", "count", "name"]
    assert s.namespaces() == ["cfg", "wifi"]
    assert s.erase("cfg", "name") and s.get("cfg", "name") is None and not s.erase("cfg", "name")
    assert s.get("cfg", "never") is None
    s.erase_namespace("wifi")
    assert s.namespaces() == ["cfg"]
    # after a reboot the values are in the nvs partition, in ESP-IDF's format
    boot(path)
    assert ESP32NVS().get("cfg", "count") == 41
    esp32.fake_setup(path, "ota_0")
    h = esp32.NVS("cfg")
    e = raises(OSError, h.get_i32, "count")   # stored as a blob: nvs_get_i32 does not find it
    assert e.args[0] == -0x1102
    h.set_i32("n", -5)
    assert h.get_i32("n") == -5
    e = raises(OSError, h.get_blob, "blob", bytearray(10))
    assert e.args[0] == -0x110C               # ESP_ERR_NVS_INVALID_LENGTH
    # the hal's region over the same partition reads it back with the project's NVS reader
    assert NVS(hal.partition("nvs")).get("cfg", "n") == -5
