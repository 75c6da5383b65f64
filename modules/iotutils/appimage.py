# ESP32 app image checks on the device, streaming: the OTA download is fed through
# AppImageVerifier block by block, in order, so the image is never held in RAM.
#
# Layout (ESP-IDF app_image_format; scripts/espimage.py builds and parses the same on a PC):
#   24-byte header (magic 0xE9, segment count, spi, entry; chip id at 12, hash_appended at 23),
#   segments (u32 load address, u32 length, data), padding to 15 mod 16, u8 checksum
#   (0xEF ^ every data byte), then SHA-256 of everything before it. The first DROM segment
#   starts with esp_app_desc_t: version at +16, project_name at +48, idf_ver at +112.
import hashlib
import struct


_MAGIC = const(0xE9)
_DESC_MAGIC = const(0xABCD5432)
_CSUM_SEED = const(0xEF)
_HEADER_LEN = const(24)
_SEG_HDR_LEN = const(8)
_DESC_LEN = const(256)
_MAX_SEGMENTS = const(16)
_PAGE_MASK = const(0xFFFF)
_DROM_START = const(0x3F400000)
_DROM_END = const(0x3F800000)
_IROM_START = const(0x400D0000)
_IROM_END = const(0x40400000)

_ST_HEADER = const(0)
_ST_SEGHDR = const(1)
_ST_SEG = const(2)
_ST_PAD = const(3)
_ST_CSUM = const(4)
_ST_HASH = const(5)
_ST_DONE = const(6)

CHIP_ESP32 = const(0)


def _xor_fold(buf, acc):
    # XOR of all bytes without a Python loop per byte: fold the buffer as one big integer
    n = len(buf)
    if not n:
        return acc
    x = int.from_bytes(buf, "little")
    bits = 8
    while bits < n * 8:
        bits <<= 1
    while bits > 8:
        bits >>= 1
        x = (x >> bits) ^ (x & ((1 << bits) - 1))
    return acc ^ x


_xor = _xor_fold
try:
    import micropython
    # viper (native code) where the port has it: ~1 cycle per byte, no allocation
    _ns = {"micropython": micropython}
    exec("@micropython.viper\ndef _x(buf, n: int, acc: int) -> int:\n p = ptr8(buf)\n for i in range(n):\n"
         "  acc ^= p[i]\n return acc\n", _ns)
    _xv = _ns["_x"]

    def _xor_viper(buf, acc):
        return _xv(buf, len(buf), acc)
    _xor = _xor_viper
    del _ns
except Exception:  # CPython, or a port without the native emitters
    pass


def _cstr(raw):
    i = 0
    while i < len(raw) and raw[i]:
        i += 1
    return bytes(raw[:i]).decode()


def parse_desc(raw):
    """esp_app_desc_t bytes -> dict(version, project, idf_ver, time, date, secure_version)."""
    if len(raw) < _DESC_LEN or struct.unpack_from("<I", raw, 0)[0] != _DESC_MAGIC:
        raise ValueError("image: no app descriptor at the start of the first DROM segment")
    try:
        return {"version": _cstr(raw[16:48]), "project": _cstr(raw[48:80]), "time": _cstr(raw[80:96]),
                "date": _cstr(raw[96:112]), "idf_ver": _cstr(raw[112:144]),
                "secure_version": struct.unpack_from("<I", raw, 4)[0]}
    except UnicodeError:
        raise ValueError("image: app descriptor strings are not text")


class AppImageVerifier:
    """Feed an app image in order with feed(); finish() checks it is complete and returns its info.

    chip_id: the chip this device is (0 = ESP32). project: required app descriptor project name
    (None: any). max_size: the image must fit (the OTA slot size). Raises ValueError at the first
    inconsistency, so a wrong chip or project stops a download after its first block.
    Bytes after the image (padding up to a flash page) are counted in .trailing, not checked.
    """

    def __init__(self, chip_id=CHIP_ESP32, project=None, max_size=None):
        self.chip_id = chip_id
        self.project = project
        self.max_size = max_size
        self.pos = 0          # image bytes consumed
        self.trailing = 0     # bytes fed after the image ended
        self.desc = None      # parsed app descriptor once seen
        self.segments = 0
        self._sha = hashlib.sha256()
        self._state = _ST_HEADER
        self._need = _HEADER_LEN
        self._fill = 0
        self._buf = bytearray(32)
        self._left = 0        # bytes left in the current segment / padding
        self._nseg = 0
        self._sum = _CSUM_SEED
        self._hash_appended = 0
        self._desc_buf = None  # filled from the first DROM segment
        self._desc_fill = 0

    def _fail(self, msg):
        self._state = _ST_DONE
        raise ValueError("image: " + msg)

    def feed(self, data):
        mv = memoryview(data)
        n = len(mv)
        i = 0
        while i < n:
            st = self._state
            if st == _ST_DONE:
                self.trailing += n - i
                return
            if st == _ST_SEG or st == _ST_PAD:
                take = min(self._left, n - i)
                chunk = mv[i:i + take]
                self._sha.update(chunk)
                if st == _ST_SEG:
                    self._sum = _xor(chunk, self._sum)
                    db = self._desc_buf
                    if db is not None and self._desc_fill < _DESC_LEN:
                        k = min(_DESC_LEN - self._desc_fill, take)
                        db[self._desc_fill:self._desc_fill + k] = chunk[:k]
                        self._desc_fill += k
                        if self._desc_fill == _DESC_LEN:
                            self._got_desc()
                self._left -= take
                i += take
                self.pos += take
                if not self._left:
                    self._end_run(st)
                continue
            take = min(self._need - self._fill, n - i)
            self._buf[self._fill:self._fill + take] = mv[i:i + take]
            if st != _ST_HASH:
                self._sha.update(mv[i:i + take])
            self._fill += take
            i += take
            self.pos += take
            if self._fill == self._need:
                self._fill = 0
                self._field()

    def _end_run(self, st):
        if st == _ST_SEG:
            self.segments += 1
            if self._desc_buf is not None and self._desc_fill < _DESC_LEN:
                self._fail("first DROM segment too short for the app descriptor")
            self._next_segment()
        else:
            self._state = _ST_CSUM
            self._need = 1

    def _next_segment(self):
        if self.segments < self._nseg:
            self._state = _ST_SEGHDR
            self._need = _SEG_HDR_LEN
            return
        self._left = 15 - self.pos % 16
        self._state = _ST_PAD
        if not self._left:
            self._state = _ST_CSUM
            self._need = 1

    def _field(self):
        st = self._state
        b = self._buf
        if st == _ST_HEADER:
            if b[0] != _MAGIC:
                self._fail("bad magic 0x%02x (not an app image)" % b[0])
            self._nseg = b[1]
            chip = b[12] | b[13] << 8
            if chip != self.chip_id:
                self._fail("built for chip id %d, this device is %d" % (chip, self.chip_id))
            if b[23] != 1:
                self._fail("no appended SHA-256 (hash_appended=%d)" % b[23])
            self._hash_appended = 1
            if not 1 <= self._nseg <= _MAX_SEGMENTS:
                self._fail("segment count %d out of 1..%d" % (self._nseg, _MAX_SEGMENTS))
            self._next_segment()
        elif st == _ST_SEGHDR:
            addr, length = struct.unpack_from("<II", b, 0)
            if length & 3:
                self._fail("segment %d length %d not a multiple of 4" % (self.segments, length))
            if self.max_size is not None and self.pos + length + 48 > self.max_size:
                self._fail("segment %d runs past the %d-byte slot" % (self.segments, self.max_size))
            drom = _DROM_START <= addr < _DROM_END
            if (drom or _IROM_START <= addr < _IROM_END) and (addr - self.pos) & _PAGE_MASK:
                self._fail("flash segment %d at 0x%x not page-aligned with its offset" % (self.segments, addr))
            if drom and self.desc is None and self._desc_buf is None:
                self._desc_buf = bytearray(_DESC_LEN)
            self._left = length
            self._state = _ST_SEG
            if not length:
                self._end_run(_ST_SEG)
        elif st == _ST_CSUM:
            if b[0] != self._sum:
                self._fail("checksum 0x%02x, computed 0x%02x" % (b[0], self._sum))
            self._state = _ST_HASH
            self._need = 32
        elif st == _ST_HASH:
            if self._sha.digest() != bytes(b[:32]):
                self._fail("appended SHA-256 does not match the image")
            self._state = _ST_DONE

    def _got_desc(self):
        d = parse_desc(self._desc_buf)
        self._desc_buf = None
        if not d["version"] or not d["project"]:
            self._fail("app descriptor has an empty version or project name")
        if self.project is not None and d["project"] != self.project:
            self._fail("project %r, this device runs %r" % (d["project"], self.project))
        self.desc = d

    def done(self):
        return self._state == _ST_DONE

    def finish(self):
        """Check the image is complete; returns dict(version, project, idf_ver, ..., size)."""
        if self._state != _ST_DONE:
            raise ValueError("image: truncated at byte %d" % self.pos)
        if self.desc is None:
            raise ValueError("image: no app descriptor (no DROM segment)")
        info = dict(self.desc)
        info["size"] = self.pos
        info["segments"] = self.segments
        return info


def verify_region(region, length=None, chip_id=CHIP_ESP32, project=None, buf=None):
    """Verify the app image stored in a flash region (hal.partition(...)) by reading it back in
    blocks; length: bytes to read (default: until the image ends). Returns finish()'s info."""
    v = AppImageVerifier(chip_id, project, region.size)
    if buf is None:
        buf = bytearray(4096)
    end = region.size if length is None else min(length, region.size)
    off = 0
    while off < end and not v.done():
        n = min(len(buf), end - off)
        mv = memoryview(buf)[:n]
        region.readinto(off, mv)
        v.feed(mv)
        off += n
    return v.finish()


def read_desc(region):
    """The app descriptor of the image in a flash region, reading only its headers (no verify).
    Returns the parse_desc() dict, or None when the slot holds no app image."""
    hdr = region.read(0, _HEADER_LEN)
    if hdr[0] != _MAGIC:
        return None
    off = _HEADER_LEN
    for _ in range(min(hdr[1], _MAX_SEGMENTS)):
        if off + _SEG_HDR_LEN + _DESC_LEN > region.size:
            return None
        addr, length = struct.unpack("<II", region.read(off, _SEG_HDR_LEN))
        off += _SEG_HDR_LEN
        if _DROM_START <= addr < _DROM_END:
            try:
                return parse_desc(region.read(off, _DESC_LEN))
            except ValueError:
                return None
        off += length
    return None
