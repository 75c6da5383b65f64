# Streaming ESP32 app image verifier (iotutils.appimage), on CPython and MicroPython.
# Images are built here with a tiny builder (scripts/espimage.py is CPython-only; tests/firmware/test_espimage.py
# cross-checks both against esptool).
import hashlib
import struct

from mpunit import raises

import iotutils.appimage as appimage
from iotutils.hal.flash import RamFlash


def _desc(version, project):
    d = bytearray(256)
    struct.pack_into("<I", d, 0, 0xABCD5432)
    d[16:16 + len(version)] = version.encode()
    d[48:48 + len(project)] = project.encode()
    d[112:118] = b"v5.5.1"
    return bytes(d)


def build(version="1.0.0", project="micropython", chip=0, bulk=1000, hash_appended=1, nseg=None):
    drom = _desc(version, project) + bytes((i * 7 + 3) & 0xFF for i in range(bulk - bulk % 4))
    iram = bytes(range(64))
    segs = [(0x3F400020, drom), (0x40080000, iram)]
    out = bytearray(struct.pack("<BBBBI", 0xE9, len(segs) if nseg is None else nseg, 2, 0x20, 0x40080004))
    out += struct.pack("<BBBBHBHH4sB", 0xEE, 0, 0, 0, chip, 0, 0, 399, b"\0" * 4, hash_appended)
    csum = 0xEF
    for addr, data in segs:
        out += struct.pack("<II", addr, len(data)) + data
        for b in data:
            csum ^= b
    out += bytes(15 - len(out) % 16)
    out.append(csum)
    out += hashlib.sha256(out).digest()
    return bytes(out)


def feed_all(img, block, **kw):
    v = appimage.AppImageVerifier(**kw)
    for i in range(0, len(img), block):
        v.feed(img[i:i + block])
    return v.finish()


def test_valid_image_any_block_size():
    img = build("2.1.0", "micropython")
    for block in (1, 3, 7, 16, 24, 255, 256, 4096, len(img)):
        info = feed_all(img, block, project="micropython")
        assert info["version"] == "2.1.0", block
        assert info["project"] == "micropython"
        assert info["idf_ver"] == "v5.5.1"
        assert info["size"] == len(img)
        assert info["segments"] == 2


def test_trailing_bytes_ignored_and_counted():
    img = build()
    v = appimage.AppImageVerifier()
    v.feed(img + b"\xff" * 100)
    assert v.finish()["size"] == len(img)
    assert v.trailing == 100


def test_truncated_image_refused_at_finish():
    img = build()
    for cut in (0, 10, 24, 40, len(img) // 2, len(img) - 33, len(img) - 1):
        v = appimage.AppImageVerifier()
        v.feed(img[:cut])
        e = raises(ValueError, v.finish)
        assert "truncated" in str(e), (cut, e)


def test_every_single_bit_flip_in_header_and_footer_refused():
    img = build(bulk=200)
    for pos in list(range(48)) + list(range(len(img) - 40, len(img))):
        bad = bytearray(img)
        bad[pos] ^= 0x10
        v = appimage.AppImageVerifier()
        try:
            v.feed(bad)
            v.finish()
        except ValueError:
            continue
        # reserved header bytes and the padding are not covered by any check but the SHA-256
        raise AssertionError("flip at %d accepted" % pos)


def test_corrupt_segment_data_refused():
    img = bytearray(build())
    img[600] ^= 0xFF
    e = raises(ValueError, feed_all, bytes(img), 64)
    assert "checksum" in str(e) or "SHA-256" in str(e)


def test_checksum_right_hash_wrong():
    img = bytearray(build())
    img[-1] ^= 1
    e = raises(ValueError, feed_all, bytes(img), 100)
    assert "SHA-256" in str(e)


def test_wrong_magic_fails_on_first_block():
    img = bytearray(build())
    img[0] = 0xE8
    v = appimage.AppImageVerifier()
    e = raises(ValueError, v.feed, bytes(img[:24]))
    assert "magic" in str(e)


def test_wrong_chip_fails_early():
    img = build(chip=5)
    v = appimage.AppImageVerifier(chip_id=0)
    e = raises(ValueError, v.feed, img[:64])
    assert "chip" in str(e)
    assert feed_all(img, 512, chip_id=5)["version"] == "1.0.0"


def test_wrong_project_fails_after_descriptor():
    img = build(project="otherproj")
    v = appimage.AppImageVerifier(project="micropython")
    e = raises(ValueError, v.feed, img[:32 + 256])
    assert "project" in str(e) and "otherproj" in str(e)


def test_no_appended_hash_refused():
    e = raises(ValueError, feed_all, build(hash_appended=0), 512)
    assert "SHA-256" in str(e)


def test_bad_segment_count_refused():
    e = raises(ValueError, feed_all, build(nseg=0), 512)
    assert "segment count" in str(e)
    e = raises(ValueError, feed_all, build(nseg=17), 512)
    assert "segment count" in str(e)


def test_image_larger_than_slot_refused():
    img = build(bulk=5000)
    e = raises(ValueError, feed_all, img, 512, max_size=4096)
    assert "slot" in str(e)


def test_misaligned_flash_segment_refused():
    img = bytearray(build())
    struct.pack_into("<I", img, 24, 0x3F400024)  # DROM load address off by 4 from its file offset
    e = raises(ValueError, feed_all, bytes(img), 512)
    assert "page-aligned" in str(e)


def test_verify_region_and_read_desc():
    img = build("3.0.1", "micropython", bulk=9000)
    r = RamFlash(16 * 1024, "ota_1")
    assert appimage.read_desc(r) is None
    r.write(0, img)
    info = appimage.verify_region(r, project="micropython", buf=bytearray(1000))
    assert info["version"] == "3.0.1" and info["size"] == len(img)
    d = appimage.read_desc(r)
    assert d["version"] == "3.0.1" and d["project"] == "micropython"
    r.write(5000, b"\x00\x00")  # corrupt (bits can only be cleared on flash)
    raises(ValueError, appimage.verify_region, r)


def test_xor_fold_matches_loop():
    data = bytes((i * 31 + 7) & 0xFF for i in range(1000))
    for n in (0, 1, 2, 3, 5, 64, 999, 1000):
        want = 0xEF
        for b in data[:n]:
            want ^= b
        assert appimage._xor_fold(data[:n], 0xEF) == want, n
        assert appimage._xor(memoryview(data)[:n], 0xEF) == want, n
