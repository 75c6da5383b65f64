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


def _source(name):
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    with open(here + "/../../modules/iotutils/hal/" + name) as f:
        return f.read()


def _api(src):
    """(__all__ as written, the public functions the module defines) of a hal module's source."""
    block = src[src.index("__all__ = (") + len("__all__ = ("):]
    block = block[:block.index(")")]
    names = sorted(x.strip().strip('"') for x in block.split(",") if x.strip())
    defs = sorted(line[4:line.index("(")] for line in src.split("\n")
                  if line.startswith("def ") and not line.startswith("def _"))
    return names, defs


def test_hal_takes_the_hardware_api_and_not_the_simulations_imports():
    # hal/__init__ star-imports sim.py (or esp32.py): without __all__ every name those modules
    # import (json, socket, FileFlash, ...) would be copied into hal too, a dictionary slot each
    import iotutils.hal as hal

    names, defs = _api(_source("sim.py"))
    assert names == defs == sorted(sim.__all__), "sim.__all__ out of date"
    for name in sim.__all__:
        assert getattr(hal, name) is getattr(sim, name), name
    for name in ("json", "socket", "os", "FileFlash", "RamFlash", "ticks_ms"):
        assert name not in dir(hal), name
    # the board's layer offers the same API (config() is the simulator's own)
    names, defs = _api(_source("esp32.py"))
    assert names == defs == sorted(n for n in sim.__all__ if n != "config")
