# Writing an image into the other OTA slot, verified while it streams: socket -> one 4 KB buffer ->
# flash. The image verifier (iotutils.appimage) checks the ESP32 app image format on that buffer, the
# SHA-256 runs beside it, and the slot is read back through the same buffer before anything may boot
# it: ~8 KB of extra heap whatever the image size. On a fragmented heap where no 4 KB block is free
# the buffer halves (down to 512 bytes: slower, never refused). A failure scrubs the slot's first
# sector, so a half-written slot never looks like an image. Loaded only when an update runs.
import gc
import hashlib

import iotutils.appimage as appimage
from iotutils._compat import const, ticks_diff, ticks_ms
from iotutils.ota.state import OTAError

_BLOCK = const(4096)
_SMALLEST = const(512)


def buffer(size, alloc=bytearray):
    """A bytearray of `size` bytes, or of the largest half, quarter, ... (>= 512) the heap has."""
    while True:
        try:
            return alloc(size)
        except MemoryError:
            if size <= _SMALLEST:
                raise
            gc.collect()
            size //= 2


class Writer:
    """Streams one image into `region` (a hal partition) with the checks of the running firmware."""

    def __init__(self, chip_id, project, block_size, deadline_s):
        if block_size % _BLOCK:
            raise ValueError("block_size must be a multiple of %d" % _BLOCK)
        self.chip_id = chip_id
        self.project = project
        self.block_size = block_size
        self.deadline_s = deadline_s

    def run(self, reader, total, region, progress, want_sha):
        """reader -> region, verified; returns the image's descriptor info (+ "size", "sha256" digest).
        want_sha: the SHA-256 (bytes) the image must have, or None to take the stream's own. Raises
        OTAError / ValueError (region scrubbed) on any failure."""
        buf = buffer(self.block_size)
        stream_sha = hashlib.sha256()
        try:
            info = self._write(reader, total, region, buf, progress, stream_sha)
            # read back what the flash holds before it may ever boot (as esp_ota_end() does): its
            # SHA-256 must be the one published. The stream that was written passed the image checks,
            # so equal hashes mean the slot holds exactly the verified image.
            digest = stream_sha.digest()
            if want_sha is not None and digest != want_sha:
                raise OTAError("sha256 mismatch: the download is corrupt or not the published image")
            if _sha256_region(region, info["size"], buf) != digest:
                raise OTAError("the slot reads back differently from what was written: flash write failed")
            info["sha256"] = digest
            return info
        except ValueError as e:
            scrub(region)
            raise OTAError(str(e))
        except BaseException:
            scrub(region)
            raise

    def _write(self, reader, total, region, buf, progress, stream_sha):
        v = appimage.AppImageVerifier(self.chip_id, self.project, region.size)
        readinto = reader.readinto if hasattr(reader, "readinto") else None
        mv = memoryview(buf)
        bs = len(buf)
        off = 0
        erased = 0  # sectors are erased ahead of the writes: the buffer need not be a whole sector
        t0 = ticks_ms()
        try:
            while True:
                fill = 0
                while fill < bs:
                    if readinto is not None:
                        n = readinto(mv[fill:])
                    else:
                        part = reader.read(bs - fill)
                        n = len(part) if part else 0
                        mv[fill:fill + n] = part
                    if not n:
                        break
                    fill += n
                if not fill:
                    break
                if total is not None and off + fill > total:
                    raise OTAError("download longer than the %d bytes announced" % total)
                if off + fill > region.size:
                    raise OTAError("image larger than the slot")
                chunk = mv[:fill]
                v.feed(chunk)
                stream_sha.update(chunk)
                if off + fill > erased:
                    n = (off + fill - erased + _BLOCK - 1) // _BLOCK * _BLOCK
                    region.erase(erased, n)
                    erased += n
                region.write(off, chunk)
                off += fill
                if progress:
                    progress(off, total)
                if ticks_diff(ticks_ms(), t0) > self.deadline_s * 1000:
                    raise OTAError("download took longer than %d s" % self.deadline_s)
                if fill < bs:
                    break
        except OSError as e:
            raise OTAError("network error during download: %s" % e)
        if total is not None and off != total:
            raise OTAError("download truncated: %d of %d bytes" % (off, total))
        info = v.finish()
        info["size"] = off
        return info



def scrub(region):
    # the half-written slot must never look like an image (the bootloader would refuse it anyway)
    try:
        region.erase(0, _BLOCK)
    except Exception:
        pass


def _sha256_region(region, size, buf):
    h = hashlib.sha256()
    mv = memoryview(buf)
    off = 0
    while off < size:
        n = min(len(buf), size - off)
        region.readinto(off, mv[:n])
        h.update(mv[:n])
        off += n
    return h.digest()
