# The hardware layer's host side: flash regions, otadata, and the partition files used on boards
# that are not ESP32s; on CPython and MicroPython.
from mpunit import raises, rmtree, tempdir

from iotutils.hal import flash, layout, otadata
from iotutils.hal import sim


def test_ram_flash_is_erased_and_nor_like():
    f = flash.RamFlash(8192, "t")
    assert f.read(0, 4) == b"\xff\xff\xff\xff" and f.read(8188, 4) == b"\xff" * 4
    f.strict = True
    f.write(10, b"\x0f")
    raises(flash.FlashError, f.write, 10, b"\xf0")  # would set bits: needs an erase
    f.erase(0, 4096)
    f.write(10, b"\xf0")
    raises(flash.FlashError, f.erase, 1, 4096)
    raises(flash.FlashError, f.read, 8190, 4)


def test_partition_files_on_other_boards_survive_a_restart():
    d = tempdir("hal")
    try:
        saved = (sim._config, dict(sim._flash))
        sim._config = {"files": True, "files_dir": d, "partitions": [list(p) for p in layout.DEFAULT],
                       "slot": "ota_0"}
        sim._flash.clear()
        nvs = sim.partition("nvs")
        assert nvs.size == 0x6000 and nvs.read(0, 2) == b"\xff\xff"
        nvs.write(100, b"kept")
        nvs.close()
        sim._flash.clear()  # a reboot: the file is opened again
        assert sim.partition("nvs").read(100, 4) == b"kept"
        sim.partition("nvs").close()
    finally:
        sim._config, sim._flash = saved[0], saved[1]
        rmtree(d)


def test_otadata_decodes_what_it_encodes_and_rejects_bad_crc():
    raw = otadata.encode(7, otadata.STATE_VALID)
    assert otadata.decode(raw) == (7, otadata.STATE_VALID)
    bad = bytearray(raw)
    bad[0] ^= 1
    assert otadata.decode(bytes(bad)) is None
    assert otadata.decode(b"\xff" * 32) is None
