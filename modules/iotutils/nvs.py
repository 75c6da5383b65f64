# ESP-IDF NVS (non-volatile storage) in pure Python, on any flash region: the engine (page manager
# and storage). The on-flash format (ESP-IDF's, version 2) is described, and its numbers defined, in
# iotutils.nvs_format: a partition image made by esp-idf-nvs-partition-gen, or read back from a board
# with `esptool read-flash`, works here, and what this writes works on a board.
#
# Power-cut safety follows ESP-IDF: a new value is appended (entry first, then its state bits)
# before the old one is erased; loading resolves the duplicate a cut leaves (newest wins),
# half-written entries and blobs; a full page is reclaimed by copying its live entries to the
# spare page (FREEING state, redone after a cut) and erasing it.
#
# RAM: no image in RAM. The index maps a 24-bit hash of (namespace, key, chunk) to where the
# entry lives (page slot * 128 + entry); lookups read the 32-byte entry to confirm.
import struct

from iotutils.nvs_format import (BLOB, BLOB_DATA, BLOB_IDX, I8, I16, I32, I64, STR, U8, U16, U32, U64,  # noqa: F401 - API
                                  NVSError)
from iotutils.nvs_format import (ANY, BITMAP, BLOCK, CHUNK_MAX, ENOSPC, ENTRIES, ESIZE, E_EMPTY, E_ERASED, E_WRITTEN, FIRST, INTS, PAGE, PageFull, S_ACTIVE, S_CORRUPT, S_EMPTY, S_FREEING, S_FULL, S_UNINIT, VER1, consistent, crc32, entry_crc, header_state, item_hash, key_field, shape_ok)


class NVS:
    """ESP-IDF NVS on a flash region (.size/.read/.readinto/.write/.erase, 4096-byte sectors)."""

    def __init__(self, flash):
        self.flash = flash
        n = flash.size // PAGE
        if n < 2:
            raise ValueError("NVS needs at least 2 pages (%d bytes)" % flash.size)
        self.npages = n
        self._e = bytearray(ESIZE)
        self._boot()

    def _boot(self):
        # the RAM state, built from the flash as at power-on
        n = self.npages
        self._broken = True     # until the load is complete
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
        self._broken = False

    def _changing(self, fn, *args):
        # A change that fails half-way (MemoryError, a flash error, no space) leaves the flash as a
        # power cut there would, and the RAM state is not to be trusted: build it again from the
        # flash, exactly as the next boot would (and refuse to work until that succeeds).
        if self._broken:
            self._boot()
        try:
            return fn(*args)
        except ValueError:
            raise  # bad arguments: refused before anything was written
        except BaseException:
            try:
                self._boot()
            except BaseException:  # still broken: the next call tries again
                pass
            raise

    # ---- low level: pages and entries ----
    def _rd(self, slot, i):
        self.flash.readinto(slot * PAGE + FIRST + i * ESIZE, self._e)
        return self._e

    def _bitmap(self, slot):
        return self.flash.read(slot * PAGE + BITMAP, 32)

    def _set_states(self, slot, a, b, state):
        # entries a..b-1: rewrite the 32-bit words of the bitmap they touch, last word first (as ESP-IDF)
        w = (b - 1) >> 4
        while w >= (a >> 4):
            off = slot * PAGE + BITMAP + w * 4
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
        struct.pack_into("<I", h, 28, crc32(memoryview(h)[4:28], 0xFFFFFFFF) & 0xFFFFFFFF)
        return h

    def _set_page_state(self, slot, state):
        self.flash.write(slot * PAGE, struct.pack("<I", state))
        self._st[slot] = state

    def _erase_page(self, slot):
        self.flash.erase(slot * PAGE, PAGE)
        self._drop_index(slot)
        if slot in self._order:
            self._order.remove(slot)
        self._st[slot] = S_EMPTY
        self._used[slot] = 0
        self._nxt[slot] = 0
        if slot not in self._free:
            self._free.append(slot)

    def _activate(self):
        if not self._free:
            raise NVSError(ENOSPC, "NVS: not enough space")
        slot = self._free.pop(0)
        if self._st[slot] == S_CORRUPT:
            self.flash.erase(slot * PAGE, PAGE)
        self._st[slot] = S_UNINIT
        self._seq[slot] = self._seqn
        self._seqn += 1
        self._nxt[slot] = 0
        self._used[slot] = 0
        self._order.append(slot)
        return slot

    def _initialize(self, slot):
        self.flash.write(slot * PAGE, self._header(slot, S_ACTIVE))
        self._st[slot] = S_ACTIVE
        self._nxt[slot] = 0

    def _erase_entry(self, slot, i):
        """Erase the item at entry i and its span (ESP-IDF eraseEntryAndSpan)."""
        e = self._rd(slot, i)
        bm = self._bitmap(slot)
        span = 1
        if (bm[i >> 2] >> ((i & 3) * 2)) & 3 == E_WRITTEN and consistent(e, i):
            span = e[2]
            self._idx_del(item_hash(e[0], memoryview(e)[8:24], e[3]), slot * 128 + i)
        for j in range(i, i + span):
            if (bm[j >> 2] >> ((j & 3) * 2)) & 3 == E_WRITTEN:
                self._used[slot] -= 1
        self._set_states(slot, i, i + span, E_ERASED)
        if self._st[slot] == S_ACTIVE and i + span > self._nxt[slot]:
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

    def _find(self, ns, key16, chunk=ANY, types=None, skip=-1):
        """loc of the item (ns, key, chunk) [of one of types], or -1. Leaves the entry in self._e."""
        v = self._idx.get(item_hash(ns, key16, chunk))
        if v is None:
            return -1
        e = self._e
        if not isinstance(v, list):  # the usual case: one item in the bucket (no tuple to allocate)
            if v != skip:
                self.flash.readinto((v >> 7) * PAGE + FIRST + (v & 127) * ESIZE, e)
                if e[0] == ns and e[3] == chunk and e[8:24] == key16 and (types is None or e[1] in types):
                    return v
            return -1
        for loc in tuple(v):
            if loc == skip:
                continue
            self.flash.readinto((loc >> 7) * PAGE + FIRST + (loc & 127) * ESIZE, e)
            if e[0] == ns and e[3] == chunk and e[8:24] == key16 and (types is None or e[1] in types):
                return loc
        return -1

    # ---- loading (ESP-IDF PageManager::load + Storage::init) ----
    def _load(self):
        # Entries are read 16 at a time: a whole page per read saves little (~10% of a load from a
        # file) and a transient 4 KB block fragments a small heap (the JSON parse after it failed).
        pb = bytearray(BLOCK)
        for slot in range(self.npages):
            self._load_page(slot, pb)
        used = [s for s in range(self.npages) if self._st[s] in (S_ACTIVE, S_FULL, S_FREEING)]
        used.sort(key=lambda s: self._seq[s])
        self._order = used
        self._free = [s for s in range(self.npages) if s not in used]
        self._seqn = self._seq[used[-1]] + 1 if used else 0
        # a cut while a page was being reclaimed: redo the copy into a fresh page
        for s in list(self._order):
            if self._st[s] == S_FREEING:
                last = self._order[-1]
                if last != s and self._st[last] == S_ACTIVE:
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
        base = slot * PAGE
        head = self.flash.read(base, 32)
        state = header_state(head)
        self._used[slot] = 0
        if state == S_EMPTY:
            st = S_EMPTY
            blank = b"\xff" * BLOCK
            for off in range(0, PAGE, BLOCK):
                self.flash.readinto(base + off, pb)
                if pb != blank:
                    st = S_CORRUPT
                    break
            self._st[slot] = st
            return
        if state == S_CORRUPT:
            self._st[slot] = S_CORRUPT
            return
        self._st[slot] = state
        self._seq[slot] = struct.unpack_from("<I", head, 4)[0]
        self._nxt[slot] = ENTRIES
        if state == S_ACTIVE:
            bm = self._bitmap(slot)
            nxt = ENTRIES
            for j in range(32):  # a byte of the bitmap at a time: 4 entries, any EMPTY (3) one in it?
                b = bm[j]
                if b & (b >> 1) & 0x55:
                    for i in range(j * 4, min(j * 4 + 4, ENTRIES)):
                        if (b >> ((i & 3) * 2)) & 3 == E_EMPTY:
                            nxt = i
                            break
                    if nxt < ENTRIES:  # (126 entries: the last byte's top pairs are never used)
                        break
            # written data whose state bits were not set yet: a cut mid-write
            while nxt < ENTRIES and self.flash.read(base + FIRST + nxt * ESIZE, 4) != b"\xff\xff\xff\xff":
                self._set_states(slot, nxt, nxt + 1, E_ERASED)
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
        per = len(pb) // ESIZE    # entries per read
        bstart = bend = 0           # the entries in pb
        active = self._st[slot] == S_ACTIVE
        end = self._nxt[slot] if active else ENTRIES
        used = 0
        i = 0
        while i < end:
            if not i & 3 and not bm[i >> 2]:  # four erased entries: a common run after many updates
                i += 4
                continue
            s = (bm[i >> 2] >> ((i & 3) * 2)) & 3
            if s != E_WRITTEN:
                if s == 1:  # illegal state
                    self._set_states(slot, i, i + 1, E_ERASED)
                i += 1
                continue
            if not bstart <= i < bend:
                bstart = i - i % per
                bend = bstart + per
                off = FIRST + bstart * ESIZE
                readinto(slot * PAGE + off, mv[:min(len(pb), PAGE - off)])
            o = (i - bstart) * ESIZE
            t = pb[o + 1]
            span = pb[o + 2]
            # (consistent, straight from the block; integers, the usual item, checked inline)
            if unpack_from("<I", pb, o + 4)[0] != crc32(mv[o + 8:o + 32], crc32(mv[o:o + 4], 0xFFFFFFFF)) \
                    & 0xFFFFFFFF or not (span == 1 if t in INTS else shape_ok(mv[o:o + ESIZE], i)):
                self._set_states(slot, i, i + 1, E_ERASED)
                i += 1
                continue
            ok = True
            if span > 1:
                for j in range(i + 1, i + span):
                    if (bm[j >> 2] >> ((j & 3) * 2)) & 3 != E_WRITTEN:
                        ok = False
                        break
            if not ok:  # a string/blob whose data never completed
                self._set_states(slot, i, i + span, E_ERASED)
                if active and i + span > self._nxt[slot]:
                    self._nxt[slot] = i + span
                i += span
                continue
            ns, chunk = pb[o], pb[o + 3]
            key = mv[o + 8:o + 24]
            h = item_hash(ns, key, chunk)
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
                    if (bm[i >> 2] >> ((i & 3) * 2)) & 3 != E_WRITTEN:
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
        if self._st[slot] not in (S_ACTIVE, S_FULL, S_FREEING):
            return []
        bm = self._bitmap(slot)
        out = []
        i = 0
        while i < ENTRIES:
            if (bm[i >> 2] >> ((i & 3) * 2)) & 3 == E_WRITTEN:
                e = self._rd(slot, i)
                if consistent(e, i):
                    out.append((i, e[2]))
                    i += e[2]
                    continue
            i += 1
        return out

    def _written(self, loc):
        slot, i = loc >> 7, loc & 127
        b = self.flash.read(slot * PAGE + BITMAP + (i >> 2), 1)[0]
        return (b >> ((i & 3) * 2)) & 3 == E_WRITTEN

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

    def _write_item(self, ns, t, key16, data, chunk=ANY, full=False):
        """Append one item to the current page (full: also to one just marked FULL, see _write_blob);
        raise PageFull if it does not fit. -> loc"""
        slot = self._current()
        st = self._st[slot]
        if st == S_UNINIT:
            self._initialize(slot)
        elif st != S_ACTIVE and not (full and st == S_FULL):
            raise PageFull
        var = t in (STR, BLOB_DATA, BLOB)
        span = 1 + ((len(data) + 31) // 32 if var else 0)
        i = self._nxt[slot]
        if i + span > ENTRIES:
            raise PageFull
        e = bytearray(b"\xff" * 32)
        e[0], e[1], e[2], e[3] = ns, t, span, chunk
        e[8:24] = key16
        if var:
            struct.pack_into("<HHI", e, 24, len(data), 0xFFFF, crc32(data, 0xFFFFFFFF) & 0xFFFFFFFF)
        else:
            e[24:24 + len(data)] = data
        struct.pack_into("<I", e, 4, entry_crc(e))
        base = slot * PAGE + FIRST
        self._idx_add(item_hash(ns, key16, chunk), slot * 128 + i)
        self.flash.write(base + i * ESIZE, e)
        self._set_states(slot, i, i + 1, E_WRITTEN)
        if var and data:
            left = len(data) - len(data) % 32
            if left:
                self.flash.write(base + (i + 1) * ESIZE, data[:left])
                self._set_states(slot, i + 1, i + 1 + left // 32, E_WRITTEN)
            if left < len(data):
                tail = bytearray(b"\xff" * 32)
                tail[:len(data) - left] = data[left:]
                self.flash.write(base + (i + 1 + left // 32) * ESIZE, tail)
                self._set_states(slot, i + span - 1, i + span, E_WRITTEN)
        self._nxt[slot] = i + span
        self._used[slot] += span
        return slot * 128 + i

    def _new_page(self):
        """Mark the current page full and move to a fresh one, reclaiming a page when only the spare is left."""
        cur = self._current()
        if self._st[cur] == S_ACTIVE:
            self._set_page_state(cur, S_FULL)
        elif self._st[cur] == S_UNINIT:
            raise NVSError(ENOSPC, "NVS: not enough space")
        if not self._free:
            raise NVSError(ENOSPC, "NVS: no free page")
        if len(self._free) >= 2:
            self._activate()
            return
        best, most = -1, 0
        for s in self._order:
            unused = ENTRIES - self._used[s]
            if unused > most:
                best, most = s, unused
        if best < 0:
            raise NVSError(ENOSPC, "NVS: not enough space")
        self._set_page_state(best, S_FREEING)
        new = self._activate()
        self._copy_items(best, new)
        self._erase_page(best)

    def _copy_items(self, src, dst):
        if self._st[dst] == S_UNINIT:
            self._initialize(dst)
        items = self._items(src)
        self._drop_index(src)
        raw = bytearray(ESIZE)
        for i, span in items:
            j = self._nxt[dst]
            for k in range(span):
                self.flash.readinto(src * PAGE + FIRST + (i + k) * ESIZE, raw)
                if k == 0:
                    h = item_hash(raw[0], memoryview(raw)[8:24], raw[3])
                self.flash.write(dst * PAGE + FIRST + (j + k) * ESIZE, raw)
                self._set_states(dst, j + k, j + k + 1, E_WRITTEN)
            self._idx_add(h, dst * 128 + j)
            self._nxt[dst] = j + span
            self._used[dst] += span

    def _put(self, ns, t, key16, data, chunk=ANY):
        try:
            return self._write_item(ns, t, key16, data, chunk)
        except PageFull:
            self._new_page()
        try:
            return self._write_item(ns, t, key16, data, chunk)
        except PageFull:
            raise NVSError(ENOSPC, "NVS: not enough space")

    def _tailroom(self):
        slot = self._current()
        st = self._st[slot]
        if st == S_UNINIT:
            return CHUNK_MAX
        if st != S_ACTIVE:
            return 0
        n = self._nxt[slot]
        return (ENTRIES - n - 1) * ESIZE if n < ENTRIES - 1 else 0

    def _write_blob(self, ns, key16, data, start):
        """Storage::writeMultiPageBlob: chunks (on as many pages as needed), then the index."""
        size = len(data)
        if size > min(self.npages - 1, 127) * CHUNK_MAX:
            raise ValueError("blob too long: %d bytes" % size)
        count = 0
        off = 0
        try:
            while True:
                room = self._tailroom()
                if count == 0 and (room < size or (room == 0 and size == 0)) and room < CHUNK_MAX // 10:
                    self._new_page()
                    if self._tailroom() == room:
                        raise NVSError(ENOSPC, "NVS: not enough space")
                    continue
                if not room:
                    raise NVSError(ENOSPC, "NVS: not enough space")
                # A chunk of the previous version on this page: mark the page FULL before writing the
                # new chunk behind it. On an ACTIVE page ESP-IDF's loader takes the last item for a newer
                # duplicate of any earlier chunk of the key and erases that one: a cut right after the
                # new chunk would lose the old blob before the new one is complete. It skips that check
                # on FULL pages (nvs_host.c does the same: "deviation 1").
                slot = self._current()
                clash = self._st[slot] == S_ACTIVE and self._other_chunk(slot, ns, key16, start)
                if clash:
                    self._set_page_state(slot, S_FULL)
                n = min(room, size - off)
                self._write_item(ns, BLOB_DATA, key16, data[off:off + n], start + count, clash)
                count += 1
                off += n
                if off < size or clash or room - n < ESIZE:
                    self._new_page()
                if off >= size:
                    e = bytearray(b"\xff" * 8)
                    struct.pack_into("<IBB", e, 0, size, count, start)
                    return self._write_item(ns, BLOB_IDX, key16, e)
        except (PageFull, NVSError):
            for c in range(start, start + count):
                loc = self._find(ns, key16, c, (BLOB_DATA,))
                if loc >= 0:
                    self._erase_entry(loc >> 7, loc & 127)
            raise NVSError(ENOSPC, "NVS: not enough space")

    def _other_chunk(self, slot, ns, key16, start):
        """Does page slot hold a live chunk of ns/key outside the version starting at chunk start?"""
        lo, hi = (0, VER1) if start == VER1 else (VER1, ANY)
        for c in range(lo, hi):
            for loc in self._idx_get(item_hash(ns, key16, c)):
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
        key16 = key_field(ns, "namespace")
        if create:
            taken = set(self._ns.values())
            for idx in range(1, 255):
                if idx not in taken:
                    break
            else:
                raise NVSError(ENOSPC, "NVS: no free namespace index")
            self._put(0, U8, key16, bytes((idx,)))
            self._ns[ns] = idx
        return idx

    # ---- public API ----
    def set(self, ns, key, value, type=None):
        """Store value under ns/key: int -> I64 (or type), str -> STR, bytes -> blob."""
        return self._changing(self._set, ns, key, value, type)

    def _set(self, ns, key, value, type):
        key16 = key_field(key)
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int):
            t = I64 if type is None else type
            if t not in INTS:
                raise ValueError("type 0x%02x is not an integer type" % t)
            fmt, lo, hi = INTS[t]
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
            if len(data) > CHUNK_MAX:
                raise ValueError("%s: str too long (%d bytes)" % (key, len(data)))
        elif isinstance(value, (bytes, bytearray, memoryview)):
            if type not in (None, BLOB, BLOB_DATA, BLOB_IDX):
                raise ValueError("%s: bytes are stored as a blob" % key)
            t = BLOB_IDX
            data = bytes(value)
        else:
            raise ValueError("%s: cannot store %r" % (key, value))
        nsi = self._ns_index(ns, True)
        old = self._find(nsi, key16, ANY, None)
        start = 0
        if old >= 0:
            cur = self._decode(old)
            if cur is not None and cur[0] == (BLOB_DATA if t == BLOB_IDX else t) and cur[1] == value \
                    and self._rd(old >> 7, old & 127)[1] == t:
                return  # unchanged: no flash write
            e = self._rd(old >> 7, old & 127)
            if e[1] == BLOB_IDX and e[29] == 0:
                start = VER1
        if t == BLOB_IDX:
            new = self._write_blob(nsi, key16, data, start)
        else:
            new = self._put(nsi, t, key16, data)
        if old >= 0:
            # the old item may have moved when a page was reclaimed: find it again
            old = self._find(nsi, key16, ANY, None, new)
            if old >= 0:
                self._erase_item_at(old)

    def _decode(self, loc):
        """(type, value) of the item at loc, whose entry _find just left in self._e."""
        e = self._e
        t = e[1]
        fmt = INTS.get(t)
        if fmt is not None:
            return t, struct.unpack_from(fmt[0], e, 24)[0]
        if t == STR or t == BLOB:
            size, crc = e[24] | (e[25] << 8), struct.unpack_from("<I", e, 28)[0]
            data = self.flash.read((loc >> 7) * PAGE + FIRST + ((loc & 127) + 1) * ESIZE, size)
            if crc32(data, 0xFFFFFFFF) & 0xFFFFFFFF != crc:
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
                part = self.flash.read((cl >> 7) * PAGE + FIRST + ((cl & 127) + 1) * ESIZE, n)
                if crc32(part, 0xFFFFFFFF) & 0xFFFFFFFF != crc:
                    return None
                out.extend(part)
            if len(out) != size:
                return None
            return BLOB_DATA, bytes(out)
        return None

    def get_typed(self, ns, key):
        """(type code, value) of ns/key, or None. Blobs report BLOB_DATA (0x42, nvs_type_t's NVS_TYPE_BLOB)."""
        key16 = key_field(key)
        nsi = self._ns.get(ns)
        if nsi is None:
            nsi = self._ns_index(ns, False)  # (validates ns)
            if nsi is None:
                return None
        loc = self._find(nsi, key16, ANY, None)
        if loc < 0:
            return None
        return self._decode(loc)

    def get(self, ns, key):
        r = self.get_typed(ns, key)
        return None if r is None else r[1]

    def erase(self, ns, key):
        """Forget ns/key. True if it existed."""
        return self._changing(self._erase, ns, key)

    def _erase(self, ns, key):
        key16 = key_field(key)
        nsi = self._ns_index(ns, False)
        if nsi is None:
            return False
        loc = self._find(nsi, key16, ANY, None)
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
        return self._changing(self._erase_namespace, ns)

    def _erase_namespace(self, ns):
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
        loc = self._find(0, key_field(ns), ANY, (U8,))
        if loc >= 0:
            self._erase_entry(loc >> 7, loc & 127)
        del self._ns[ns]

    def erase_all(self):
        """Factory reset: every namespace's items, then the namespace entries, then the pages.
        Each step leaves a valid store if the power fails in it."""
        return self._changing(self._erase_all)

    def _erase_all(self):
        for ns in list(self._ns):
            self._erase_namespace(ns)
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
        room = ENTRIES - self._nxt[cur] if self._st[cur] in (S_ACTIVE, S_UNINIT) else 0
        return {"used": used, "free": room + ENTRIES * len(self._free), "pages": self.npages}
