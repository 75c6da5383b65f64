# ESP-IDF NVS (non-volatile storage) in pure Python, on any flash region.
#
# The on-flash format is exactly ESP-IDF's (components/nvs_flash, format version 2), so a
# partition image made by esp-idf-nvs-partition-gen, or read back from a board with
# `esptool read-flash`, works here, and what this writes works on a board:
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
#
# Power-cut safety follows ESP-IDF: a new value is appended (entry first, then its state bits)
# before the old one is erased; loading resolves the duplicate a cut leaves (newest wins),
# half-written entries and blobs; a full page is reclaimed by copying its live entries to the
# spare page (FREEING state, redone after a cut) and erasing it.
#
# RAM: no image in RAM. The index maps a 24-bit hash of (namespace, key, chunk) to where the
# entry lives (page slot * 128 + entry); lookups read the 32-byte entry to confirm.
import struct

try:
    from binascii import crc32 as _crc32
except ImportError:  # pragma: no cover
    from zlib import crc32 as _crc32

from iotutils._compat import const

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

_PAGE = const(4096)
_ENTRIES = const(126)
_ESIZE = const(32)
_FIRST = const(64)
_BLOCK = const(512)        # 16 entries
_BITMAP = const(32)
_CHUNK_MAX = const(4000)  # (_ENTRIES - 1) * _ESIZE
_S_EMPTY = const(0xFFFFFFFF)
_S_ACTIVE = const(0xFFFFFFFE)
_S_FULL = const(0xFFFFFFFC)
_S_FREEING = const(0xFFFFFFF8)
_S_UNINIT = const(1)       # RAM only: activated, header not written yet
_S_CORRUPT = const(2)      # RAM only: must be erased before use
_E_EMPTY = const(3)
_E_WRITTEN = const(2)
_E_ERASED = const(0)
_ANY = const(0xFF)
_VER1 = const(128)

# type code -> (struct format, min, max)
_INTS = {
    U8: ("<B", 0, 0xFF), I8: ("<b", -0x80, 0x7F), U16: ("<H", 0, 0xFFFF), I16: ("<h", -0x8000, 0x7FFF),
    U32: ("<I", 0, 0xFFFFFFFF), I32: ("<i", -0x80000000, 0x7FFFFFFF),
    U64: ("<Q", 0, 0xFFFFFFFFFFFFFFFF), I64: ("<q", -0x8000000000000000, 0x7FFFFFFFFFFFFFFF),
}


class NVSError(OSError):
    """The partition is full (errno ENOSPC, as _iotutils.KVStore raises) or unusable."""


_ENOSPC = const(28)


class _PageFull(Exception):
    pass


_keys = {}  # key str -> its 16-byte field (a device uses a few dozen keys)


def _key16(key, what="key"):
    k = _keys.get(key) if isinstance(key, str) else None
    if k is not None:
        return k
    k = _key16_new(key, what)
    if isinstance(key, str) and len(_keys) < 32:
        _keys[key] = k
    return k


def _key16_new(key, what):
    if isinstance(key, str):
        kb = key.encode()
    else:
        kb = bytes(key)
    if not 1 <= len(kb) <= 15 or b"\x00" in kb:
        raise ValueError("%s must be 1..15 bytes: %r" % (what, key))
    return kb + b"\x00" * (16 - len(kb))


def _entry_crc(e):
    mv = memoryview(e)
    return _crc32(mv[8:32], _crc32(mv[0:4], 0xFFFFFFFF)) & 0xFFFFFFFF


def _hash(ns, key16, chunk):
    # RAM index only (never on flash): namespace and chunk seed the CRC of the key
    return _crc32(key16, (ns << 8) | chunk) & 0xFFFFFF


def _consistent(e, i):
    """ESP-IDF's Item::checkHeaderConsistency for the entry at index i."""
    return struct.unpack_from("<I", e, 4)[0] == _entry_crc(e) and _shape_ok(e, i)


def _shape_ok(e, i):
    # the type, span and chunk checks of _consistent
    t, span, chunk = e[1], e[2], e[3]
    if t in _INTS:
        return span == 1
    if t == BLOB_IDX:
        return span == 1 and chunk == _ANY
    if t in (STR, BLOB, BLOB_DATA):
        if t == BLOB_DATA and chunk == _ANY:
            return False
        size = e[24] | (e[25] << 8)
        return size <= (_ENTRIES - i - 1) * _ESIZE and span <= _ENTRIES - i and span == 1 + (size + 31) // 32
    return False


class NVS:
    """ESP-IDF NVS on a flash region (.size/.read/.readinto/.write/.erase, 4096-byte sectors)."""

    def __init__(self, flash):
        self.flash = flash
        n = flash.size // _PAGE
        if n < 2:
            raise ValueError("NVS needs at least 2 pages (%d bytes)" % flash.size)
        self.npages = n
        self._e = bytearray(_ESIZE)
        self._st = [0] * n
        self._seq = [0] * n
        self._nxt = [0] * n     # next free entry (ACTIVE pages)
        self._used = [0] * n    # WRITTEN entries
        self._order = []        # slots in use, by sequence number (last = current page)
        self._free = []
        self._seqn = 0
        self._idx = {}          # hash -> loc or [loc, ...]
        self._ns = {}           # namespace name (str) -> index
        self._load()

    # ---- low level: pages and entries ----
    def _rd(self, slot, i):
        self.flash.readinto(slot * _PAGE + _FIRST + i * _ESIZE, self._e)
        return self._e

    def _bitmap(self, slot):
        return self.flash.read(slot * _PAGE + _BITMAP, 32)

    def _set_states(self, slot, a, b, state):
        # entries a..b-1: rewrite the 32-bit words of the bitmap they touch, last word first (as ESP-IDF)
        w = (b - 1) >> 4
        while w >= (a >> 4):
            off = slot * _PAGE + _BITMAP + w * 4
            word = bytearray(self.flash.read(off, 4))
            for i in range(max(a, w * 16), min(b, w * 16 + 16)):
                j = (i & 15) * 2
                byte, bit = j >> 3, j & 7
                word[byte] = (word[byte] & ~(3 << bit)) | (state << bit)
            self.flash.write(off, word)
            w -= 1

    def _header(self, slot, state):
        h = bytearray(b"\xff" * 32)
        struct.pack_into("<II", h, 0, state, self._seq[slot])
        h[8] = 0xFE
        struct.pack_into("<I", h, 28, _crc32(memoryview(h)[4:28], 0xFFFFFFFF) & 0xFFFFFFFF)
        return h

    def _set_page_state(self, slot, state):
        self.flash.write(slot * _PAGE, struct.pack("<I", state))
        self._st[slot] = state

    def _erase_page(self, slot):
        self.flash.erase(slot * _PAGE, _PAGE)
        self._drop_index(slot)
        if slot in self._order:
            self._order.remove(slot)
        self._st[slot] = _S_EMPTY
        self._used[slot] = 0
        self._nxt[slot] = 0
        if slot not in self._free:
            self._free.append(slot)

    def _activate(self):
        if not self._free:
            raise NVSError(_ENOSPC, "NVS: not enough space")
        slot = self._free.pop(0)
        if self._st[slot] == _S_CORRUPT:
            self.flash.erase(slot * _PAGE, _PAGE)
        self._st[slot] = _S_UNINIT
        self._seq[slot] = self._seqn
        self._seqn += 1
        self._nxt[slot] = 0
        self._used[slot] = 0
        self._order.append(slot)
        return slot

    def _initialize(self, slot):
        self.flash.write(slot * _PAGE, self._header(slot, _S_ACTIVE))
        self._st[slot] = _S_ACTIVE
        self._nxt[slot] = 0

    def _erase_entry(self, slot, i):
        """Erase the item at entry i and its span (ESP-IDF eraseEntryAndSpan)."""
        e = self._rd(slot, i)
        bm = self._bitmap(slot)
        span = 1
        if (bm[i >> 2] >> ((i & 3) * 2)) & 3 == _E_WRITTEN and _consistent(e, i):
            span = e[2]
            self._idx_del(_hash(e[0], memoryview(e)[8:24], e[3]), slot * 128 + i)
        for j in range(i, i + span):
            if (bm[j >> 2] >> ((j & 3) * 2)) & 3 == _E_WRITTEN:
                self._used[slot] -= 1
        self._set_states(slot, i, i + span, _E_ERASED)
        if self._st[slot] == _S_ACTIVE and i + span > self._nxt[slot]:
            self._nxt[slot] = i + span

    # ---- the index ----
    def _idx_add(self, h, loc):
        v = self._idx.get(h)
        if v is None:
            self._idx[h] = loc
        elif isinstance(v, list):
            v.append(loc)
        else:
            self._idx[h] = [v, loc]

    def _idx_del(self, h, loc):
        v = self._idx.get(h)
        if v is None:
            return
        if isinstance(v, list):
            if loc in v:
                v.remove(loc)
            if len(v) == 1:
                self._idx[h] = v[0]
        elif v == loc:
            del self._idx[h]

    def _idx_get(self, h):
        v = self._idx.get(h)
        if v is None:
            return ()
        if isinstance(v, list):
            return tuple(v)
        return (v,)

    def _drop_index(self, slot):
        lo, hi = slot * 128, slot * 128 + 128
        for h in list(self._idx):
            v = self._idx[h]
            if isinstance(v, list):
                v2 = [x for x in v if not lo <= x < hi]
                if not v2:
                    del self._idx[h]
                elif len(v2) == 1:
                    self._idx[h] = v2[0]
                else:
                    self._idx[h] = v2
            elif lo <= v < hi:
                del self._idx[h]

    def _find(self, ns, key16, chunk=_ANY, types=None, skip=-1):
        """loc of the item (ns, key, chunk) [of one of types], or -1. Leaves the entry in self._e."""
        v = self._idx.get(_hash(ns, key16, chunk))
        if v is None:
            return -1
        e = self._e
        if not isinstance(v, list):  # the usual case: one item in the bucket (no tuple to allocate)
            if v != skip:
                self.flash.readinto((v >> 7) * _PAGE + _FIRST + (v & 127) * _ESIZE, e)
                if e[0] == ns and e[3] == chunk and e[8:24] == key16 and (types is None or e[1] in types):
                    return v
            return -1
        for loc in tuple(v):
            if loc == skip:
                continue
            self.flash.readinto((loc >> 7) * _PAGE + _FIRST + (loc & 127) * _ESIZE, e)
            if e[0] == ns and e[3] == chunk and e[8:24] == key16 and (types is None or e[1] in types):
                return loc
        return -1

    # ---- loading (ESP-IDF PageManager::load + Storage::init) ----
    def _load(self):
        # Entries are read 16 at a time: a whole page per read saves little (~10% of a load from a
        # file) and a transient 4 KB block fragments a small heap (the JSON parse after it failed).
        pb = bytearray(_BLOCK)
        for slot in range(self.npages):
            self._load_page(slot, pb)
        used = [s for s in range(self.npages) if self._st[s] in (_S_ACTIVE, _S_FULL, _S_FREEING)]
        used.sort(key=lambda s: self._seq[s])
        self._order = used
        self._free = [s for s in range(self.npages) if s not in used]
        self._seqn = self._seq[used[-1]] + 1 if used else 0
        # a cut while a page was being reclaimed: redo the copy into a fresh page
        for s in list(self._order):
            if self._st[s] == _S_FREEING:
                last = self._order[-1]
                if last != s and self._st[last] == _S_ACTIVE:
                    self._erase_page(last)
                new = self._activate()
                self._copy_items(s, new)
                self._erase_page(s)
                self._idx = {}
                break
        blobs = []
        chunks = []
        self._ns = {}
        for slot in self._order:
            self._scan(slot, pb, blobs, chunks)
        del pb
        if blobs or chunks:
            self._check_blobs(blobs, chunks)
        if not self._order:
            self._activate()

    def _load_page(self, slot, pb):
        base = slot * _PAGE
        head = self.flash.read(base, 32)
        state = struct.unpack_from("<I", head, 0)[0]
        self._used[slot] = 0
        if state == _S_EMPTY:
            st = _S_EMPTY
            blank = b"\xff" * _BLOCK
            for off in range(0, _PAGE, _BLOCK):
                self.flash.readinto(base + off, pb)
                if pb != blank:
                    st = _S_CORRUPT
                    break
            self._st[slot] = st
            return
        if struct.unpack_from("<I", head, 28)[0] != _crc32(memoryview(head)[4:28], 0xFFFFFFFF) & 0xFFFFFFFF \
                or state not in (_S_ACTIVE, _S_FULL, _S_FREEING):
            self._st[slot] = _S_CORRUPT
            return
        self._st[slot] = state
        self._seq[slot] = struct.unpack_from("<I", head, 4)[0]
        self._nxt[slot] = _ENTRIES
        if state == _S_ACTIVE:
            bm = self._bitmap(slot)
            nxt = _ENTRIES
            for j in range(32):  # a byte of the bitmap at a time: 4 entries, any EMPTY (3) one in it?
                b = bm[j]
                if b & (b >> 1) & 0x55:
                    for i in range(j * 4, min(j * 4 + 4, _ENTRIES)):
                        if (b >> ((i & 3) * 2)) & 3 == _E_EMPTY:
                            nxt = i
                            break
                    if nxt < _ENTRIES:  # (126 entries: the last byte's top pairs are never used)
                        break
            # written data whose state bits were not set yet: a cut mid-write
            while nxt < _ENTRIES and self.flash.read(base + _FIRST + nxt * _ESIZE, 4) != b"\xff\xff\xff\xff":
                self._set_states(slot, nxt, nxt + 1, _E_ERASED)
                nxt += 1
            self._nxt[slot] = nxt

    def _scan(self, slot, pb, blobs, chunks):
        """Check a page's items (ESP-IDF mLoadEntryTable), index them, keep the newest of duplicates
        (a cut between writing a new value and erasing the old), note namespaces and blobs."""
        bm = bytearray(self._bitmap(slot))
        mv = memoryview(pb)
        idx = self._idx
        unpack_from = struct.unpack_from
        readinto = self.flash.readinto
        per = len(pb) // _ESIZE    # entries per read
        bstart = bend = 0           # the entries in pb
        active = self._st[slot] == _S_ACTIVE
        end = self._nxt[slot] if active else _ENTRIES
        used = 0
        i = 0
        while i < end:
            if not i & 3 and not bm[i >> 2]:  # four erased entries: a common run after many updates
                i += 4
                continue
            s = (bm[i >> 2] >> ((i & 3) * 2)) & 3
            if s != _E_WRITTEN:
                if s == 1:  # illegal state
                    self._set_states(slot, i, i + 1, _E_ERASED)
                i += 1
                continue
            if not bstart <= i < bend:
                bstart = i - i % per
                bend = bstart + per
                off = _FIRST + bstart * _ESIZE
                readinto(slot * _PAGE + off, mv[:min(len(pb), _PAGE - off)])
            o = (i - bstart) * _ESIZE
            t = pb[o + 1]
            span = pb[o + 2]
            # (_consistent, straight from the block; integers, the usual item, checked inline)
            if unpack_from("<I", pb, o + 4)[0] != _crc32(mv[o + 8:o + 32], _crc32(mv[o:o + 4], 0xFFFFFFFF)) \
                    & 0xFFFFFFFF or not (span == 1 if t in _INTS else _shape_ok(mv[o:o + _ESIZE], i)):
                self._set_states(slot, i, i + 1, _E_ERASED)
                i += 1
                continue
            ok = True
            if span > 1:
                for j in range(i + 1, i + span):
                    if (bm[j >> 2] >> ((j & 3) * 2)) & 3 != _E_WRITTEN:
                        ok = False
                        break
            if not ok:  # a string/blob whose data never completed
                self._set_states(slot, i, i + span, _E_ERASED)
                if active and i + span > self._nxt[slot]:
                    self._nxt[slot] = i + span
                i += span
                continue
            ns, chunk = pb[o], pb[o + 3]
            key = mv[o + 8:o + 24]
            h = _hash(ns, key, chunk)
            loc = slot * 128 + i
            v = idx.get(h)
            if v is not None:
                key16 = bytes(key)
                old = self._find(ns, key16, chunk, None)
                if old >= 0 and (t == BLOB_DATA) == (self._e[1] == BLOB_DATA):
                    self._erase_item_at(old, t != BLOB_DATA)  # older: earlier page or entry
                    # (it may have been on this page: refresh our copy of the state bitmap)
                    bm = bytearray(self._bitmap(slot))
                    bstart = bend = 0  # (and the entries we hold)
                    if (bm[i >> 2] >> ((i & 3) * 2)) & 3 != _E_WRITTEN:
                        i += span
                        continue
                    v = idx.get(h)
            if v is None:
                idx[h] = loc
            else:
                self._idx_add(h, loc)
            used += span
            if ns == 0 and t == U8:
                try:
                    self._ns[bytes(key).rstrip(b"\x00").decode()] = pb[o + 24]
                except UnicodeError:
                    pass
            elif t == BLOB_IDX:
                blobs.append(loc)
            elif t == BLOB_DATA:
                chunks.append(loc)
            i += span
        self._used[slot] = used

    def _items(self, slot):
        """[(entry index, span)] of the live items in a page."""
        if self._st[slot] not in (_S_ACTIVE, _S_FULL, _S_FREEING):
            return []
        bm = self._bitmap(slot)
        out = []
        i = 0
        while i < _ENTRIES:
            if (bm[i >> 2] >> ((i & 3) * 2)) & 3 == _E_WRITTEN:
                e = self._rd(slot, i)
                if _consistent(e, i):
                    out.append((i, e[2]))
                    i += e[2]
                    continue
            i += 1
        return out

    def _written(self, loc):
        slot, i = loc >> 7, loc & 127
        b = self.flash.read(slot * _PAGE + _BITMAP + (i >> 2), 1)[0]
        return (b >> ((i & 3) * 2)) & 3 == _E_WRITTEN

    def _check_blobs(self, blobs, chunks):
        # blob indexes whose chunks are incomplete go; then chunks that no index owns go
        good = []
        for loc in blobs:
            if not self._written(loc):
                continue
            e = self._rd(loc >> 7, loc & 127)
            ns, key16 = e[0], bytes(e[8:24])
            size, count, start = struct.unpack_from("<IBB", e, 24)
            total = 0
            n = 0
            for c in range(start, start + count):
                if self._find(ns, key16, c, (BLOB_DATA,)) >= 0:
                    total += self._e[24] | (self._e[25] << 8)
                    n += 1
            if n == count and total == size:
                good.append((ns, key16, start, count))
            else:
                self._erase_item_at(loc, False)
        for loc in chunks:
            if not self._written(loc):
                continue
            e = self._rd(loc >> 7, loc & 127)
            ns, key16, c = e[0], bytes(e[8:24]), e[3]
            owned = False
            for g in good:
                if g[0] == ns and g[1] == key16 and g[2] <= c < g[2] + g[3]:
                    owned = True
                    break
            if not owned:
                self._erase_entry(loc >> 7, loc & 127)

    # ---- writing (ESP-IDF Page::writeItem / Storage::writeItem) ----
    def _current(self):
        if not self._order:
            self._activate()
        return self._order[-1]

    def _write_item(self, ns, t, key16, data, chunk=_ANY, full=False):
        """Append one item to the current page (full: also to one just marked FULL, see _write_blob);
        raise _PageFull if it does not fit. -> loc"""
        slot = self._current()
        st = self._st[slot]
        if st == _S_UNINIT:
            self._initialize(slot)
        elif st != _S_ACTIVE and not (full and st == _S_FULL):
            raise _PageFull
        var = t in (STR, BLOB_DATA, BLOB)
        span = 1 + ((len(data) + 31) // 32 if var else 0)
        i = self._nxt[slot]
        if i + span > _ENTRIES:
            raise _PageFull
        e = bytearray(b"\xff" * 32)
        e[0], e[1], e[2], e[3] = ns, t, span, chunk
        e[8:24] = key16
        if var:
            struct.pack_into("<HHI", e, 24, len(data), 0xFFFF, _crc32(data, 0xFFFFFFFF) & 0xFFFFFFFF)
        else:
            e[24:24 + len(data)] = data
        struct.pack_into("<I", e, 4, _entry_crc(e))
        base = slot * _PAGE + _FIRST
        self._idx_add(_hash(ns, key16, chunk), slot * 128 + i)
        self.flash.write(base + i * _ESIZE, e)
        self._set_states(slot, i, i + 1, _E_WRITTEN)
        if var and data:
            left = len(data) - len(data) % 32
            if left:
                self.flash.write(base + (i + 1) * _ESIZE, data[:left])
                self._set_states(slot, i + 1, i + 1 + left // 32, _E_WRITTEN)
            if left < len(data):
                tail = bytearray(b"\xff" * 32)
                tail[:len(data) - left] = data[left:]
                self.flash.write(base + (i + 1 + left // 32) * _ESIZE, tail)
                self._set_states(slot, i + span - 1, i + span, _E_WRITTEN)
        self._nxt[slot] = i + span
        self._used[slot] += span
        return slot * 128 + i

    def _new_page(self):
        """Mark the current page full and move to a fresh one, reclaiming a page when only the spare is left."""
        cur = self._current()
        if self._st[cur] == _S_ACTIVE:
            self._set_page_state(cur, _S_FULL)
        elif self._st[cur] == _S_UNINIT:
            raise NVSError(_ENOSPC, "NVS: not enough space")
        if not self._free:
            raise NVSError(_ENOSPC, "NVS: no free page")
        if len(self._free) >= 2:
            self._activate()
            return
        best, most = -1, 0
        for s in self._order:
            unused = _ENTRIES - self._used[s]
            if unused > most:
                best, most = s, unused
        if best < 0:
            raise NVSError(_ENOSPC, "NVS: not enough space")
        self._set_page_state(best, _S_FREEING)
        new = self._activate()
        self._copy_items(best, new)
        self._erase_page(best)

    def _copy_items(self, src, dst):
        if self._st[dst] == _S_UNINIT:
            self._initialize(dst)
        items = self._items(src)
        self._drop_index(src)
        raw = bytearray(_ESIZE)
        for i, span in items:
            j = self._nxt[dst]
            for k in range(span):
                self.flash.readinto(src * _PAGE + _FIRST + (i + k) * _ESIZE, raw)
                if k == 0:
                    h = _hash(raw[0], memoryview(raw)[8:24], raw[3])
                self.flash.write(dst * _PAGE + _FIRST + (j + k) * _ESIZE, raw)
                self._set_states(dst, j + k, j + k + 1, _E_WRITTEN)
            self._idx_add(h, dst * 128 + j)
            self._nxt[dst] = j + span
            self._used[dst] += span

    def _put(self, ns, t, key16, data, chunk=_ANY):
        try:
            return self._write_item(ns, t, key16, data, chunk)
        except _PageFull:
            self._new_page()
        try:
            return self._write_item(ns, t, key16, data, chunk)
        except _PageFull:
            raise NVSError(_ENOSPC, "NVS: not enough space")

    def _tailroom(self):
        slot = self._current()
        st = self._st[slot]
        if st == _S_UNINIT:
            return _CHUNK_MAX
        if st != _S_ACTIVE:
            return 0
        n = self._nxt[slot]
        return (_ENTRIES - n - 1) * _ESIZE if n < _ENTRIES - 1 else 0

    def _write_blob(self, ns, key16, data, start):
        """Storage::writeMultiPageBlob: chunks (on as many pages as needed), then the index."""
        size = len(data)
        if size > min(self.npages - 1, 127) * _CHUNK_MAX:
            raise ValueError("blob too long: %d bytes" % size)
        count = 0
        off = 0
        try:
            while True:
                room = self._tailroom()
                if count == 0 and (room < size or (room == 0 and size == 0)) and room < _CHUNK_MAX // 10:
                    self._new_page()
                    if self._tailroom() == room:
                        raise NVSError(_ENOSPC, "NVS: not enough space")
                    continue
                if not room:
                    raise NVSError(_ENOSPC, "NVS: not enough space")
                # A chunk of the previous version on this page: mark the page FULL before writing the
                # new chunk behind it. On an ACTIVE page ESP-IDF's loader takes the last item for a newer
                # duplicate of any earlier chunk of the key and erases that one: a cut right after the
                # new chunk would lose the old blob before the new one is complete. It skips that check
                # on FULL pages (nvs_host.c does the same: "deviation 1").
                slot = self._current()
                clash = self._st[slot] == _S_ACTIVE and self._other_chunk(slot, ns, key16, start)
                if clash:
                    self._set_page_state(slot, _S_FULL)
                n = min(room, size - off)
                self._write_item(ns, BLOB_DATA, key16, data[off:off + n], start + count, clash)
                count += 1
                off += n
                if off < size or clash or room - n < _ESIZE:
                    self._new_page()
                if off >= size:
                    e = bytearray(b"\xff" * 8)
                    struct.pack_into("<IBB", e, 0, size, count, start)
                    return self._write_item(ns, BLOB_IDX, key16, e)
        except (_PageFull, NVSError):
            for c in range(start, start + count):
                loc = self._find(ns, key16, c, (BLOB_DATA,))
                if loc >= 0:
                    self._erase_entry(loc >> 7, loc & 127)
            raise NVSError(_ENOSPC, "NVS: not enough space")

    def _other_chunk(self, slot, ns, key16, start):
        """Does page slot hold a live chunk of ns/key outside the version starting at chunk start?"""
        lo, hi = (0, _VER1) if start == _VER1 else (_VER1, _ANY)
        for c in range(lo, hi):
            for loc in self._idx_get(_hash(ns, key16, c)):
                if loc >> 7 == slot:
                    e = self._rd(slot, loc & 127)
                    if e[0] == ns and e[1] == BLOB_DATA and e[3] == c and e[8:24] == key16:
                        return True
        return False

    def _erase_item_at(self, loc, chunks=True):
        e = self._rd(loc >> 7, loc & 127)
        if e[1] == BLOB_IDX:
            ns, key16 = e[0], bytes(e[8:24])
            count, start = e[28], e[29]
            self._erase_entry(loc >> 7, loc & 127)  # index first: the chunks become orphans
            if chunks:
                for c in range(start, start + count):
                    cl = self._find(ns, key16, c, (BLOB_DATA,))
                    if cl >= 0:
                        self._erase_entry(cl >> 7, cl & 127)
        else:
            self._erase_entry(loc >> 7, loc & 127)

    def _ns_index(self, ns, create):
        idx = self._ns.get(ns)
        if idx is not None:
            return idx
        if not isinstance(ns, str):
            raise ValueError("namespace must be a str: %r" % (ns,))
        key16 = _key16(ns, "namespace")
        if create:
            taken = set(self._ns.values())
            for idx in range(1, 255):
                if idx not in taken:
                    break
            else:
                raise NVSError(_ENOSPC, "NVS: no free namespace index")
            self._put(0, U8, key16, bytes((idx,)))
            self._ns[ns] = idx
        return idx

    # ---- public API ----
    def set(self, ns, key, value, type=None):
        """Store value under ns/key: int -> I64 (or type), str -> STR, bytes -> blob."""
        key16 = _key16(key)
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int):
            t = I64 if type is None else type
            if t not in _INTS:
                raise ValueError("type 0x%02x is not an integer type" % t)
            fmt, lo, hi = _INTS[t]
            if not lo <= value <= hi:
                raise ValueError("%s: %d out of range for type 0x%02x" % (key, value, t))
            data = struct.pack(fmt, value)
        elif isinstance(value, str):
            if type not in (None, STR):
                raise ValueError("%s: a str is stored as STR" % key)
            t = STR
            data = value.encode() + b"\x00"
            if b"\x00" in data[:-1]:
                raise ValueError("%s: str contains NUL" % key)
            if len(data) > _CHUNK_MAX:
                raise ValueError("%s: str too long (%d bytes)" % (key, len(data)))
        elif isinstance(value, (bytes, bytearray, memoryview)):
            if type not in (None, BLOB, BLOB_DATA, BLOB_IDX):
                raise ValueError("%s: bytes are stored as a blob" % key)
            t = BLOB_IDX
            data = bytes(value)
        else:
            raise ValueError("%s: cannot store %r" % (key, value))
        nsi = self._ns_index(ns, True)
        old = self._find(nsi, key16, _ANY, None)
        start = 0
        if old >= 0:
            cur = self._decode(old)
            if cur is not None and cur[0] == (BLOB_DATA if t == BLOB_IDX else t) and cur[1] == value \
                    and self._rd(old >> 7, old & 127)[1] == t:
                return  # unchanged: no flash write
            e = self._rd(old >> 7, old & 127)
            if e[1] == BLOB_IDX and e[29] == 0:
                start = _VER1
        if t == BLOB_IDX:
            new = self._write_blob(nsi, key16, data, start)
        else:
            new = self._put(nsi, t, key16, data)
        if old >= 0:
            # the old item may have moved when a page was reclaimed: find it again
            old = self._find(nsi, key16, _ANY, None, new)
            if old >= 0:
                self._erase_item_at(old)

    def _decode(self, loc):
        """(type, value) of the item at loc, whose entry _find just left in self._e."""
        e = self._e
        t = e[1]
        fmt = _INTS.get(t)
        if fmt is not None:
            return t, struct.unpack_from(fmt[0], e, 24)[0]
        if t == STR or t == BLOB:
            size, crc = e[24] | (e[25] << 8), struct.unpack_from("<I", e, 28)[0]
            data = self.flash.read((loc >> 7) * _PAGE + _FIRST + ((loc & 127) + 1) * _ESIZE, size)
            if _crc32(data, 0xFFFFFFFF) & 0xFFFFFFFF != crc:
                return None
            if t == STR:
                try:  # (without the NUL, and without copying the bytes first)
                    return STR, str(memoryview(data)[:-1] if data and data[-1] == 0 else data, "utf-8")
                except UnicodeError:
                    return None
            return BLOB_DATA, data
        if t == BLOB_IDX:
            ns, key16 = e[0], bytes(e[8:24])
            size, count, start = struct.unpack_from("<IBB", e, 24)
            out = bytearray()
            for c in range(start, start + count):
                cl = self._find(ns, key16, c, (BLOB_DATA,))
                if cl < 0:
                    return None
                ce = self._e
                n, crc = ce[24] | (ce[25] << 8), struct.unpack_from("<I", ce, 28)[0]
                part = self.flash.read((cl >> 7) * _PAGE + _FIRST + ((cl & 127) + 1) * _ESIZE, n)
                if _crc32(part, 0xFFFFFFFF) & 0xFFFFFFFF != crc:
                    return None
                out.extend(part)
            if len(out) != size:
                return None
            return BLOB_DATA, bytes(out)
        return None

    def get_typed(self, ns, key):
        """(type code, value) of ns/key, or None. Blobs report BLOB_DATA (0x42, nvs_type_t's NVS_TYPE_BLOB)."""
        key16 = _keys.get(key) if type(key) is str else None
        if key16 is None:
            key16 = _key16(key)
        nsi = self._ns.get(ns)
        if nsi is None:
            nsi = self._ns_index(ns, False)  # (validates ns)
            if nsi is None:
                return None
        loc = self._find(nsi, key16, _ANY, None)
        if loc < 0:
            return None
        return self._decode(loc)

    def get(self, ns, key):
        r = self.get_typed(ns, key)
        return None if r is None else r[1]

    def erase(self, ns, key):
        """Forget ns/key. True if it existed."""
        key16 = _key16(key)
        nsi = self._ns_index(ns, False)
        if nsi is None:
            return False
        loc = self._find(nsi, key16, _ANY, None)
        if loc < 0:
            return False
        self._erase_item_at(loc)
        return True

    def keys(self, ns):
        """[(key, type code)] in namespace ns."""
        nsi = self._ns_index(ns, False)
        out = []
        if nsi is None:
            return out
        for slot in self._order:
            for i, _span in self._items(slot):
                e = self._rd(slot, i)
                if e[0] == nsi and e[1] != BLOB_DATA:
                    t = BLOB_DATA if e[1] in (BLOB_IDX, BLOB) else e[1]
                    out.append((bytes(e[8:24]).rstrip(b"\x00").decode(), t))
        return out

    def namespaces(self):
        return sorted(self._ns)

    def erase_namespace(self, ns):
        """Erase every key of ns, then the namespace itself."""
        nsi = self._ns_index(ns, False)
        if nsi is None:
            return
        for slot in list(self._order):
            for i, _span in self._items(slot):
                e = self._rd(slot, i)
                if e[0] == nsi and e[1] != BLOB_DATA:
                    self._erase_item_at(slot * 128 + i)
        for slot in list(self._order):  # chunks left by an index erased above on another page
            for i, _span in self._items(slot):
                if self._rd(slot, i)[0] == nsi:
                    self._erase_entry(slot, i)
        loc = self._find(0, _key16(ns), _ANY, (U8,))
        if loc >= 0:
            self._erase_entry(loc >> 7, loc & 127)
        del self._ns[ns]

    def erase_all(self):
        """Factory reset: every namespace's items, then the namespace entries, then the pages.
        Each step leaves a valid store if the power fails in it."""
        for ns in list(self._ns):
            self.erase_namespace(ns)
        for slot in list(self._order):
            self._erase_page(slot)
        self._free.sort()
        self._seqn = 0
        self._idx = {}
        self._activate()

    def stats(self):
        """{"used": written entries, "free": entries in free pages + room in the current page, "pages": n}"""
        used = sum(self._used[s] for s in self._order)
        cur = self._current()
        room = _ENTRIES - self._nxt[cur] if self._st[cur] in (_S_ACTIVE, _S_UNINIT) else 0
        return {"used": used, "free": room + _ENTRIES * len(self._free), "pages": self.npages}
