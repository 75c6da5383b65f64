"""The simulated device itself: boot, reboot, crash, power cut, watchdog and the emulated
ESP-IDF bootloader (otadata states, rollback, invalid images), on real processes."""
import os
import time

import pytest

from conftest import ROOT
from simdev import SimDevice

import espimage
from iotutils.hal import layout, otadata
from iotutils.hal.flash import FileFlash, RamFlash

APP = os.path.join(ROOT, "tests", "apps", "sim_probe.py")
TABLE = {p[0]: p for p in layout.DEFAULT}


def command(dev, cmd):
    path = os.path.join(dev.state_dir, "fs", "cmd")
    with open(path + ".tmp", "w") as f:
        f.write(cmd)
    os.replace(path + ".tmp", path)


def region(dev, name):
    p = TABLE[name]
    return FileFlash(os.path.join(dev.state_dir, "flash.bin"), p[3], p[4], name)


def write_image(dev, slot, image):
    r = region(dev, slot)
    for off in range(0, (len(image) + 4095) // 4096 * 4096, 4096):
        r.erase(off, 4096)
    r.write(0, image)
    r.close()


@pytest.fixture
def dev(tmp_path):
    d = SimDevice(tmp_path / "dev", app=APP)
    yield d
    d.stop()


def test_layout_copy_matches_partitions_csv():
    with open(os.path.join(ROOT, "boards", "ESP32_GENERIC", "partitions.csv")) as f:
        assert layout.parse_csv(f.read()) == layout.DEFAULT
    end = 0
    for name, _, _, off, size in layout.DEFAULT:
        assert off >= end, name
        end = off + size
        if name.startswith("ota_"):
            assert off % 0x10000 == 0, "app slots must be 64 KB aligned"
    assert end <= layout.FLASH_SIZE
    assert TABLE["nvs"][4] >= 24 * 1024


def test_first_boot_factory_image_reset_and_crash(dev):
    dev.start()
    m = dev.wait_line(r"BOOT slot=(\S+) cause=(\S+) ver=(\S+)")
    assert m.groups() == ("ota_0", "power_on", __import__("iotutils").__version__)
    command(dev, "reset")
    m = dev.wait_line(r"BOOT slot=\S+ cause=soft", since=len(dev.lines))
    command(dev, "crash")
    dev.wait_line(r"BOOT slot=\S+ cause=panic", since=len(dev.lines))


def test_a_reset_request_from_an_earlier_boot_is_ignored(dev):
    # hal.reset() repeats its request every second (a datagram can be lost on a busy host): a late
    # one from the boot before must not reset the boot that followed it
    import json
    import socket
    dev.start()
    dev.wait_line(r"BOOT slot=\S+ cause=power_on")
    with open(os.path.join(dev.state_dir, "sim.json")) as f:
        cfg = json.load(f)
    ctl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        since = len(dev.lines)
        ctl.sendto(b"reset %d" % (cfg["boot"] - 1), ("127.0.0.1", cfg["ctl_port"]))
        time.sleep(1.0)
        assert not any("BOOT" in line for line in dev.lines[since:]), dev.lines[since:]
        ctl.sendto(b"reset %d" % cfg["boot"], ("127.0.0.1", cfg["ctl_port"]))
        dev.wait_line(r"BOOT slot=\S+ cause=soft", since=since)
    finally:
        ctl.close()


def test_power_cut_kills_device_and_flash_persists(dev):
    dev.start()
    dev.wait_line(r"BOOT")
    image = espimage.build_app_image("9.9.9")
    write_image(dev, "ota_1", image)
    command(dev, "set_boot:ota_1")
    dev.wait_line("SET_BOOT done")
    dev.power_cut()
    # the device process must be gone with the supervisor: nothing keeps reading the command file
    command(dev, "exit")
    time.sleep(0.3)
    assert os.path.exists(os.path.join(dev.state_dir, "fs", "cmd"))
    os.remove(os.path.join(dev.state_dir, "fs", "cmd"))
    dev.start()
    m = dev.wait_line(r"BOOT slot=(\S+) cause=(\S+) ver=(\S+) pending=(\S+)")
    assert m.groups() == ("ota_1", "power_on", "9.9.9", "True")


def test_unconfirmed_update_rolls_back_confirmed_one_stays(dev):
    dev.start()
    dev.wait_line(r"BOOT")
    write_image(dev, "ota_1", espimage.build_app_image("2.0.0"))
    command(dev, "set_boot:ota_1")
    dev.wait_line("SET_BOOT done")
    command(dev, "reset")
    dev.wait_line(r"BOOT slot=ota_1 cause=soft ver=2.0.0 pending=True", since=len(dev.lines))
    command(dev, "reset")  # not confirmed: the bootloader must roll back
    dev.wait_line(r"BOOT slot=ota_0 cause=soft ver=0\.1\.0 pending=False rolled_back=True", since=len(dev.lines))
    # a confirmed update stays
    write_image(dev, "ota_1", espimage.build_app_image("2.0.1"))
    command(dev, "set_boot:ota_1")
    dev.wait_line("SET_BOOT done", since=len(dev.lines))
    command(dev, "reset")
    dev.wait_line(r"BOOT slot=ota_1 cause=soft ver=2.0.1 pending=True", since=len(dev.lines))
    command(dev, "confirm")
    dev.wait_line("CONFIRMED pending=False", since=len(dev.lines))
    command(dev, "reset")
    dev.wait_line(r"BOOT slot=ota_1 cause=soft ver=2.0.1 pending=False rolled_back=False", since=len(dev.lines))


def test_invalid_image_is_never_booted(dev):
    dev.start()
    dev.wait_line(r"BOOT")
    image = bytearray(espimage.build_app_image("3.0.0"))
    image[len(image) // 2] ^= 0xFF  # corrupt: the appended SHA-256 no longer matches
    write_image(dev, "ota_1", bytes(image))
    command(dev, "set_boot:ota_1")
    dev.wait_line("SET_BOOT done")
    command(dev, "reset")
    dev.wait_line(r"BOOT slot=ota_0 cause=soft ver=0\.1\.0", since=len(dev.lines))


def test_watchdog_resets_a_stuck_device(dev):
    dev.start()
    dev.wait_line(r"BOOT")
    command(dev, "wdt")
    dev.wait_line("WDT armed")
    dev.wait_line(r"BOOT slot=\S+ cause=watchdog", since=len(dev.lines), timeout=10)


def test_heap_is_the_esp32_model(dev):
    # 110wK on a 64-bit host: 110 K words of 4 bytes scaled to 8-byte objects; with the whole
    # toolbox loaded (frozen on a board), what is left to the app is that model, not more
    dev.start()
    m = dev.wait_line(r"heap=(\d+) free=(\d+)")
    total, free = int(m.group(1)), int(m.group(2))
    assert total == 110 * 1024 * 2
    assert 0.8 * total <= free <= 1.05 * total


# ---- otadata rules without processes (ESP-IDF semantics) ----

def test_otadata_sequence_and_power_cut_during_set_boot():
    od = RamFlash(0x2000, "otadata")
    od.strict = True
    assert otadata.active(od) is None
    otadata.set_boot(od, 1)
    assert otadata.slot_of_seq(otadata.active(od)[1]) == 1
    otadata.set_state(od, otadata.STATE_VALID)
    before = bytes(od.buf)
    # a cut right after the erase of the new entry's sector leaves the old selection
    sector = 1 - otadata.active(od)[0]
    od.erase(sector * otadata.SECTOR, otadata.SECTOR)
    assert otadata.slot_of_seq(otadata.active(od)[1]) == 1
    od.buf[:] = before
    otadata.set_boot(od, 0)
    cur = otadata.active(od)
    assert otadata.slot_of_seq(cur[1]) == 0 and cur[2] == otadata.STATE_NEW
    assert otadata.choose_boot(od, lambda s: True) == 0
    assert otadata.running_state(od) == otadata.STATE_PENDING_VERIFY
    assert otadata.choose_boot(od, lambda s: True) == 1  # never confirmed: rolled back
    assert otadata.last_invalid_slot(od) == 0
