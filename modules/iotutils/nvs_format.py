# The on-flash format of ESP-IDF's NVS (components/nvs_flash, format version 2): page and entry
# geometry, page and entry states, item types, the entry CRC and header checks. Shared by the NVS
# engine (iotutils.nvs) and the host tools that write or read images (scripts/nvs_provision.py,
# scripts/nvs_dump.py); the same numbers are in c_modules/iotutils (the C engine).
#
#   page (4096 bytes = one flash sector):
#     0   u32 state   EMPTY 0xffffffff -> ACTIVE ..fe -> FULL ..fc -> FREEING ..f8 (bits only clear)
#     4   u32 sequence number (page order)     8  u8 version (0xfe = v2)     28  u32 crc32 of 4..28
#     32  entry state bitmap: 2 bits per entry, EMPTY 3 -> WRITTEN 2 -> ERASED 0
#     64  126 entries of 32 bytes
#   entry: u8 namespace index, u8 type, u8 span, u8 chunk index, u32 crc32 (of the other 28
#     bytes), char key[16], 8 data bytes: a primitive (little endian, 0xff padded), or for
#     strings / blob chunks u16 size, u16 0xffff, u32 crc32 of the data that follows in span-1
#     entries, or for a blob index u32 total size, u8 chunk count, u8 chunk start (0 or 128).
#   Namespace names are entries in namespace 0 (type U8, value = the namespace's index).
import struct

try:
    from binascii import crc32
except ImportError:  # pragma: no cover
    from zlib import crc32


U8 = const(0x01)
I8 = const(0x11)
U16 = const(0x02)
I16 = const(0x12)
U32 = const(0x04)
I32 = const(0x14)
U64 = const(0x08)
I64 = const(0x18)
STR = const(0x21)
BLOB = const(0x41)        # version 1 single-entry blob (read only)
BLOB_DATA = const(0x42)   # v2 blob chunk; also the type keys() reports for any blob
BLOB_IDX = const(0x48)

PAGE = const(4096)
ENTRIES = const(126)
ESIZE = const(32)
FIRST = const(64)
BLOCK = const(512)        # 16 entries
BITMAP = const(32)
CHUNK_MAX = const(4000)  # (ENTRIES - 1) * ESIZE
S_EMPTY = const(0xFFFFFFFF)
S_ACTIVE = const(0xFFFFFFFE)
S_FULL = const(0xFFFFFFFC)
S_FREEING = const(0xFFFFFFF8)
S_UNINIT = const(1)       # RAM only: activated, header not written yet
S_CORRUPT = const(2)      # RAM only: must be erased before use
E_EMPTY = const(3)
E_WRITTEN = const(2)
E_ERASED = const(0)
ANY = const(0xFF)
VER1 = const(128)

# type code -> (struct format, min, max)
INTS = {
    U8: ("<B", 0, 0xFF), I8: ("<b", -0x80, 0x7F), U16: ("<H", 0, 0xFFFF), I16: ("<h", -0x8000, 0x7FFF),
    U32: ("<I", 0, 0xFFFFFFFF), I32: ("<i", -0x80000000, 0x7FFFFFFF),
    U64: ("<Q", 0, 0xFFFFFFFFFFFFFFFF), I64: ("<q", -0x8000000000000000, 0x7FFFFFFFFFFFFFFF),
}


class NVSError(OSError):
    """The partition is full (errno ENOSPC, as _iotutils.KVStore raises) or unusable."""


ENOSPC = const(28)


class PageFull(Exception):
    pass


def key_field(key, what="key"):
    # (made each time, not cached: keys also come from requests, and a cache keeps each one where the
    # heap had room at that moment, splitting the free heap into small blocks)
    if isinstance(key, str):
        kb = key.encode()
    else:
        kb = bytes(key)
    if not 1 <= len(kb) <= 15 or b"\x00" in kb:
        raise ValueError("%s must be 1..15 bytes: %r" % (what, key))
    return kb + b"\x00" * (16 - len(kb))


def entry_crc(e):
    mv = memoryview(e)
    return crc32(mv[8:32], crc32(mv[0:4], 0xFFFFFFFF)) & 0xFFFFFFFF


def header_state(head):
    """A page's state from its 32-byte header: S_EMPTY (its first word erased: the page itself must
    still be blank), S_ACTIVE, S_FULL or S_FREEING with a good CRC, else S_CORRUPT."""
    state = struct.unpack_from("<I", head, 0)[0]
    if state == S_EMPTY:
        return S_EMPTY
    if state not in (S_ACTIVE, S_FULL, S_FREEING) or \
            struct.unpack_from("<I", head, 28)[0] != crc32(memoryview(head)[4:28], 0xFFFFFFFF) & 0xFFFFFFFF:
        return S_CORRUPT
    return state


def item_hash(ns, key16, chunk):
    # RAM index only (never on flash): namespace and chunk seed the CRC of the key
    return crc32(key16, (ns << 8) | chunk) & 0xFFFFFF


def consistent(e, i):
    """ESP-IDF's Item::checkHeaderConsistency for the entry at index i."""
    return struct.unpack_from("<I", e, 4)[0] == entry_crc(e) and shape_ok(e, i)


def shape_ok(e, i):
    # the type, span and chunk checks of consistent
    t, span, chunk = e[1], e[2], e[3]
    if t in INTS:
        return span == 1
    if t == BLOB_IDX:
        return span == 1 and chunk == ANY
    if t in (STR, BLOB, BLOB_DATA):
        if t == BLOB_DATA and chunk == ANY:
            return False
        size = e[24] | (e[25] << 8)
        return size <= (ENTRIES - i - 1) * ESIZE and span <= ENTRIES - i and span == 1 + (size + 31) // 32
    return False
