#!/usr/bin/env python3
"""ESP32 app images: build a small valid one (tests, the simulator's factory image) and parse/verify one.

The format is ESP-IDF's (docs: api-reference/system/app_image_format):

    image header     u8 magic 0xE9, u8 segment count, u8 spi mode, u8 spi speed/size, u32 entry
    extended header  u8 wp pin, 3 x u8 drive, u16 chip id, u8 min rev, u16 min rev full,
                     u16 max rev full, 4 reserved, u8 hash appended
    segments         u32 load address, u32 length (multiple of 4), data
    footer           0 padding up to 15 mod 16, u8 checksum (0xEF ^ every segment data byte),
                     then SHA-256 of everything before it when "hash appended" is 1
The first DROM segment starts with esp_app_desc_t (magic 0xABCD5432, version, project_name,
time, date, idf_ver, app_elf_sha256, ...): that is where `esptool image-info` and the OTA code
read the version and project name.

Flash-mapped segments (DROM/IROM) are placed so that their file offset equals their load
address modulo the 64 KB MMU page, as the bootloader needs; every image built here passes
`esptool image-info` (tests/firmware/test_espimage.py checks that).

usage:
    espimage.py build VERSION [--project P] [--idf-ver V] [--size N] [--chip-id N] -o FILE
    espimage.py info FILE          # parse + verify, print the fields as JSON; exit 1 if invalid
"""
import argparse
import hashlib
import json
import struct
import sys

MAGIC = 0xE9
APP_DESC_MAGIC = 0xABCD5432
CHECKSUM_SEED = 0xEF
HEADER_LEN = 24
SEG_HEADER_LEN = 8
APP_DESC_LEN = 256
MMU_PAGE = 0x10000
CHIP_ESP32 = 0
APP_DESC_FMT = "<II8s32s32s16s16s32s32sHHB3s72s"

DROM_START, DROM_END = 0x3F400000, 0x3F800000
IROM_START, IROM_END = 0x400D0000, 0x40400000
DRAM_ADDR = 0x3FFB0000
IRAM_ADDR = 0x40080000
MAX_SEGMENTS = 16

_SPI_MODE_DIO = 2
_FLASH_4MB_40M = 0x20
_WP_PIN_DISABLED = 0xEE
_MAX_REV_FULL = 399  # v3.99: any ESP32 revision


def _field(name, value, width):
    raw = value.encode() if isinstance(value, str) else bytes(value)
    if not raw or len(raw) >= width or b"\0" in raw:
        raise ValueError("%s must be 1..%d bytes without NUL, got %r" % (name, width - 1, value))
    return raw


def app_desc(version, project, idf_ver="v5.5.1", time="12:00:00", date="Jan  1 2026", secure_version=0):
    """esp_app_desc_t (256 bytes); secure_version: the anti-rollback counter (CONFIG_BOOTLOADER_APP_SECURE_VERSION)."""
    v = _field("version", version, 32)
    p = _field("project_name", project, 32)
    i = _field("idf_ver", idf_ver, 32)
    elf_sha = hashlib.sha256(b"elf:" + p + b":" + v).digest()
    # mmu_page_size is log2 of the page size (64 KB on ESP32); max efuse block rev 0.99 as IDF 5 sets it
    return struct.pack(APP_DESC_FMT, APP_DESC_MAGIC, secure_version, b"\0" * 8, v, p, time.encode(), date.encode(),
                       i, elf_sha, 0, 99, 16, b"\0" * 3, b"\0" * 72)


def _filler(seed, n):
    """n bytes of deterministic, incompressible-looking data (differs per seed)."""
    block = b"".join(hashlib.sha256(seed + bytes([i])).digest() for i in range(128))  # 4 KB
    reps = n // len(block) + 1
    return (block * reps)[:n]


def _pad4(data):
    return data + b"\0" * (-len(data) % 4)


def _assemble(segments, chip_id, entry):
    out = bytearray(struct.pack("<BBBBI", MAGIC, len(segments), _SPI_MODE_DIO, _FLASH_4MB_40M, entry))
    out += struct.pack("<BBBBHBHH4sB", _WP_PIN_DISABLED, 0, 0, 0, chip_id, 0, 0, _MAX_REV_FULL, b"\0" * 4, 1)
    checksum = CHECKSUM_SEED
    for addr, data in segments:
        out += struct.pack("<II", addr, len(data))
        out += data
        for b in data:
            checksum ^= b
    out += b"\0" * (15 - len(out) % 16)
    out.append(checksum)
    out += hashlib.sha256(out).digest()
    return bytes(out)


def _irom_addr(file_off):
    # the bootloader maps whole 64 KB pages: load address and file offset must agree inside the page
    return IROM_START + (file_off % MMU_PAGE)


def _layout(desc, bulk, seed):
    """The segment list for a DROM payload of `bulk` bytes after the descriptor."""
    drom = _pad4(desc + _filler(seed + b"drom", bulk))
    dram = _filler(seed + b"dram", 512)
    iram = _filler(seed + b"iram", 1024)
    irom_code = _filler(seed + b"irom", 2048)
    # ESP32 bootloader quirk (esptool works around it too): a flash segment ending < 0x24 bytes
    # past a page boundary leaves its last page unmapped
    end = HEADER_LEN + SEG_HEADER_LEN + len(drom)
    if end % MMU_PAGE < 0x24:
        drom += b"\0" * (0x24 - end % MMU_PAGE)
    segs = [(DROM_START + HEADER_LEN + SEG_HEADER_LEN, drom), (DRAM_ADDR, dram), (IRAM_ADDR, iram)]
    off = HEADER_LEN + sum(SEG_HEADER_LEN + len(d) for _, d in segs) + SEG_HEADER_LEN
    end = off + len(irom_code)
    if end % MMU_PAGE < 0x24:
        irom_code += b"\0" * (0x24 - end % MMU_PAGE)
    segs.append((_irom_addr(off), irom_code))
    return segs


def build_app_image(version, project="micropython", size=None, chip_id=CHIP_ESP32, idf_ver="v5.5.1",
                    secure_version=0):
    """A valid ESP32 app image whose app descriptor carries `version` and `project`.

    size: wanted total length in bytes (rounded to a multiple of 16; at least ~4 KB); None -> ~4 KB.
    chip_id: the extended header's chip id (0 = ESP32; other values make wrong-chip images).
    """
    desc = app_desc(version, project, idf_ver, secure_version=secure_version)
    seed = ("%s/%s/%d" % (project, version, chip_id)).encode()
    entry = IRAM_ADDR + 4
    bulk = 0
    img = _assemble(_layout(desc, bulk, seed), chip_id, entry)
    if size is not None:
        if size < len(img):
            raise ValueError("size must be >= %d, got %d" % (len(img), size))
        target = size - size % 16
        for _ in range(4):  # alignment padding can shift the length a little: converge
            bulk += target - len(img)
            bulk = max(0, bulk - bulk % 4)
            img = _assemble(_layout(desc, bulk, seed), chip_id, entry)
            if len(img) == target:
                break
    return img


def _cstr(raw):
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def parse_app_image(data, chip_id=CHIP_ESP32):
    """Parse and verify an ESP32 app image; trailing bytes after it (rest of a flash slot) are ignored.

    Returns dict(version, project, idf_ver, time, date, secure_version, chip_id, entry, segments=
    [(load_addr, file_offset, length)], size (bytes incl. the appended hash), sha256 (hex of the
    appended digest)). Raises ValueError naming what is wrong.
    """
    data = memoryview(data)
    if len(data) < HEADER_LEN:
        raise ValueError("image: shorter than its header")
    magic, nseg, _mode, _sizefreq, entry = struct.unpack_from("<BBBBI", data, 0)
    if magic != MAGIC:
        raise ValueError("image: bad magic 0x%02x (want 0xe9)" % magic)
    ext = struct.unpack_from("<BBBBHBHH4sB", data, 8)
    img_chip, hash_appended = ext[4], ext[9]
    if img_chip != chip_id:
        raise ValueError("image: chip id %d, this device is %d" % (img_chip, chip_id))
    if hash_appended not in (0, 1):
        raise ValueError("image: hash_appended must be 0 or 1, got %d" % hash_appended)
    if not 1 <= nseg <= MAX_SEGMENTS:
        raise ValueError("image: segment count %d out of 1..%d" % (nseg, MAX_SEGMENTS))
    off = HEADER_LEN
    checksum = CHECKSUM_SEED
    segments = []
    desc = None
    for i in range(nseg):
        if off + SEG_HEADER_LEN > len(data):
            raise ValueError("image: truncated in segment %d header" % i)
        addr, n = struct.unpack_from("<II", data, off)
        off += SEG_HEADER_LEN
        if n % 4 or off + n > len(data):
            raise ValueError("image: segment %d length %d bad or past the end" % (i, n))
        flash = DROM_START <= addr < DROM_END or IROM_START <= addr < IROM_END
        if flash and (addr - off) % MMU_PAGE:
            raise ValueError("image: flash segment %d at 0x%x not page-aligned with its file offset" % (i, addr))
        seg = data[off:off + n]
        for b in bytes(seg):
            checksum ^= b
        if desc is None and DROM_START <= addr < DROM_END:
            if n < APP_DESC_LEN:
                raise ValueError("image: first DROM segment too short for the app descriptor")
            desc = struct.unpack(APP_DESC_FMT, bytes(seg[:APP_DESC_LEN]))
        segments.append((addr, off, n))
        off += n
    off += 15 - off % 16
    if off + 1 > len(data):
        raise ValueError("image: truncated before the checksum")
    if data[off] != checksum:
        raise ValueError("image: checksum 0x%02x, computed 0x%02x" % (data[off], checksum))
    off += 1
    digest = None
    if hash_appended:
        if off + 32 > len(data):
            raise ValueError("image: truncated in the appended SHA-256")
        digest = bytes(data[off:off + 32])
        if hashlib.sha256(data[:off]).digest() != digest:
            raise ValueError("image: appended SHA-256 does not match")
        off += 32
    if desc is None or desc[0] != APP_DESC_MAGIC:
        raise ValueError("image: no app descriptor (esp_app_desc_t) at the start of the first DROM segment")
    return {"version": _cstr(desc[3]), "project": _cstr(desc[4]), "time": _cstr(desc[5]),
            "date": _cstr(desc[6]), "idf_ver": _cstr(desc[7]), "secure_version": desc[1],
            "chip_id": img_chip, "entry": entry, "segments": segments, "size": off,
            "sha256": digest.hex() if digest else None}


def main(argv=None):
    ap = argparse.ArgumentParser(description="Build or verify ESP32 app images.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build a small valid app image")
    b.add_argument("version")
    b.add_argument("--project", default="micropython")
    b.add_argument("--idf-ver", default="v5.5.1")
    b.add_argument("--size", type=int, default=None)
    b.add_argument("--chip-id", type=int, default=CHIP_ESP32)
    b.add_argument("-o", "--output", required=True)
    i = sub.add_parser("info", help="parse and verify an image")
    i.add_argument("file")
    i.add_argument("--chip-id", type=int, default=CHIP_ESP32)
    args = ap.parse_args(argv)
    if args.cmd == "build":
        img = build_app_image(args.version, args.project, args.size, args.chip_id, args.idf_ver)
        with open(args.output, "wb") as f:
            f.write(img)
        print("%s: %d bytes, version %s, project %s" % (args.output, len(img), args.version, args.project))
        return 0
    with open(args.file, "rb") as f:
        data = f.read()
    try:
        info = parse_app_image(data, args.chip_id)
    except ValueError as e:
        print("invalid: %s" % e, file=sys.stderr)
        return 1
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
