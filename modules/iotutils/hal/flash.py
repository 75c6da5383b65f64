# Flash regions as the rest of iotutils sees them: byte offsets inside one partition.
#
# On a board the region wraps esp32.Partition (hal/esp32.py); on the host it is a slice of
# the simulated flash image file, or RAM for unit tests. All three behave like NOR flash:
# erase sets 4096-byte sectors to 0xFF, a write may only clear bits.

SECTOR_SIZE = const(4096)
# erased flash, 64 bytes (SECTOR_SIZE is a multiple of it): a literal, frozen with the code, not heap
_BLANK = const(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
                b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
                b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff")


class FlashError(Exception):
    pass


class Region:
    """Common checks. Subclasses implement _read(off, n), _write(off, data), _erase(off, n)."""

    # Set True (tests do) to raise when a write would turn a 0 bit back into 1, as real NOR
    # flash would silently refuse to: catches code that forgets to erase first.
    strict = False
    #: fault injection (tests): fn(op, region name, off, n) is called before every access with op
    #: "read", "write" or "erase", and may raise (MemoryError, OSError) to play a failure at that
    #: step. One hook for every region (class-wide); None in normal use.
    fault = None

    def __init__(self, size, name="", offset=0):
        self.size = size
        self.name = name
        self.offset = offset  # absolute address in the whole flash (for tools and messages)

    def _check(self, off, n, op):
        f = Region.fault
        if f is not None:
            f(op, self.name, off, n)
        if off < 0 or n < 0 or off + n > self.size:
            raise FlashError("flash access %d+%d outside %s (%d bytes)" % (off, n, self.name, self.size))

    def read(self, off, n):
        self._check(off, n, "read")
        return self._read(off, n)

    def readinto(self, off, buf):
        self._check(off, len(buf), "read")
        data = self._read(off, len(buf))
        buf[:len(data)] = data

    def write(self, off, data):
        self._check(off, len(data), "write")
        if self.strict:
            old = self._read(off, len(data))
            for i in range(len(data)):
                if data[i] & ~old[i] & 0xFF:
                    raise FlashError("write sets bits without erase at %s+0x%x" % (self.name, off + i))
        self._write(off, data)

    def erase(self, off, n):
        if off % SECTOR_SIZE or n % SECTOR_SIZE:
            raise FlashError("erase %d+%d not sector aligned" % (off, n))
        self._check(off, n, "erase")
        self._erase(off, n)


class RamFlash(Region):
    """A region in RAM, initially erased (unit tests)."""

    def __init__(self, size, name="ram"):
        Region.__init__(self, size, name)
        self.buf = bytearray(size)  # filled in steps: b"\xff" * size would need the RAM twice
        ff = b"\xff" * 256
        for i in range(0, size, 256):
            self.buf[i:i + 256] = ff[:min(256, size - i)]

    def _read(self, off, n):
        return bytes(self.buf[off:off + n])

    def readinto(self, off, buf):
        n = len(buf)
        self._check(off, n, "read")
        buf[:n] = memoryview(self.buf)[off:off + n]  # one copy, no temporary bytes

    def _write(self, off, data):
        self.buf[off:off + len(data)] = data

    def _erase(self, off, n):
        for i in range(off, off + n):
            self.buf[i] = 0xFF


class FileFlash(Region):
    """A region of a flash image file. Every write goes straight to the OS (no user-space
    buffering), so a killed process loses nothing that write() returned from: a power cut
    in the simulator cuts between two writes, as on a board."""

    def __init__(self, path, offset=0, size=None, name=""):
        try:
            self.f = open(path, "r+b", buffering=0)  # CPython: unbuffered, every write is a syscall
        except TypeError:  # pragma: no cover
            self.f = open(path, "r+b")
        if size is None:
            self.f.seek(0, 2)
            size = self.f.tell() - offset
        Region.__init__(self, size, name or path, offset)

    def _read(self, off, n):
        self.f.seek(self.offset + off)
        data = self.f.read(n)
        if len(data) < n:  # a short image file reads as erased flash
            data = data + b"\xff" * (n - len(data))
        return data

    def readinto(self, off, buf):
        n = len(buf)
        self._check(off, n, "read")
        self.f.seek(self.offset + off)
        got = self.f.readinto(buf) or 0
        for i in range(got, n):  # a short image file reads as erased flash
            buf[i] = 0xFF

    def _write(self, off, data):
        # no flush(): MicroPython's files are unbuffered (flush() would be an fsync) and CPython's is
        # opened unbuffered, so the data is the kernel's when write() returns, which is all a SIGKILL
        # power cut needs
        self.f.seek(self.offset + off)
        self.f.write(data)

    def _erase(self, off, n):
        # in 64-byte writes of one constant: a sector-sized blank allocated per erase (4 KB) is heap
        # the chip's erase (a C call) never takes, and on a full heap it failed OTA installs here
        self.f.seek(self.offset + off)
        for _ in range(n // len(_BLANK)):
            self.f.write(_BLANK)

    def close(self):
        self.f.close()
