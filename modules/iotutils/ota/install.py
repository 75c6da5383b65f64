# Writing an image into the other OTA slot, verified while it streams: socket -> one 4 KB buffer ->
# flash. The image verifier (iotutils.appimage) checks the ESP32 app image format on that buffer, the
# SHA-256 runs beside it, and the slot is read back through the same buffer before anything may boot
# it: ~8 KB of extra heap whatever the image size. On a fragmented heap where no 4 KB block is free
# the buffer halves (down to 512 bytes: slower, never refused). A failure scrubs the slot's first
# sector, so a half-written slot never looks like an image. Below it, what may be installed (the
# owner's signature, the version rules) and the install itself, for OTA.update and
# OTA.install_stream. Network code (iotutils.ota): loaded by a check or an update only.
import binascii
import gc
import hashlib

import iotutils.appimage as appimage
import iotutils.hal as hal
from iotutils._compat import before_load, log, ticks_add, ticks_diff, ticks_ms
from iotutils.ota.state import OTAError, installed
from iotutils.ota.version import older

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
        late = self.deadline_s * 1000
        if getattr(reader, "until", 0) is None:
            reader.until = ticks_add(t0, late)   # (a read that waits gives up at the deadline too)
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
                    # after every read: a server trickling a byte at a time meets every per-read
                    # timeout, and a whole block took it hours
                    if ticks_diff(ticks_ms(), t0) > late:
                        raise OTAError("download took longer than %d s" % self.deadline_s)
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


# ---- what may be installed, and the install itself (OTA.update, OTA.install_stream) ----

def precheck(point, manifest):
    """OTAError unless the manifest is signed with the owner's key (before any download)."""
    before_load("iotutils.sign")
    from iotutils import sign

    try:
        sign.precheck(point, manifest)
    except ValueError as e:  # SignatureError
        raise OTAError(str(e))


def update(ota, progress, force, downgrade):
    """OTA.update's work (under its install lock): the source's offer, checked, downloaded and installed."""
    ota._sync_boot()
    if hal.ota_pending():
        raise OTAError("the running image is not confirmed yet: confirm() or let it roll back first")
    point = ota.owner_key()  # no key, no download
    plan = ota.source.resolve()
    precheck(point, plan["manifest"])  # unsigned, another key: refused before the download
    check_version(ota, plan["version"], force, downgrade, plan["secure_version"])
    gc.collect()
    resp = ota.http.get(plan["url"], plan["accept"])
    try:
        if resp.length is not None and plan["size"] is not None and resp.length != plan["size"]:
            raise OTAError("server sends %d bytes, the manifest says %d" % (resp.length, plan["size"]))
        return install(ota, resp, plan["size"], plan["sha256"], plan["version"], progress, force, downgrade,
                       plan["manifest"])
    finally:
        resp.close()


def check_version(ota, version, force, downgrade=False, secure_version=0):
    if version == ota._running_desc().get("version"):
        raise OTAError("version %s is already running" % version)
    if not force and version in (ota.state.load().get("bad") or ()):
        raise OTAError("version %s rolled back on this device before (force=True to retry)" % version)
    if not downgrade and older(ota, version, secure_version):
        raise OTAError("version %s (secure_version %s) is older than the running %s: refused (an old "
                       "release may have known holes; downgrade=True installs it anyway)"
                       % (version, secure_version, ota._running_desc().get("version")))


def install(ota, reader, total, sha_hex, version, progress, force, downgrade=False, manifest=None):
    """reader -> next slot, verified; then set_boot. Returns the image's version."""
    from iotutils import sign

    point = ota.owner_key()
    precheck(point, manifest)
    if installed[0]:
        # (a second install before that reset, even a refused one, wiped the slot just selected)
        raise OTAError("%s is installed and boots at the next reset: reset first" % installed[0])
    ota._sync_boot()
    if hal.ota_pending():
        raise OTAError("the running image is not confirmed yet: confirm() or let it roll back first")
    project = ota._running_desc().get("project")
    try:
        target = hal.ota_next()
        region = hal.partition(target)
    except (OSError, ValueError) as e:  # a partition table without OTA slots (stock firmware)
        raise OTAError("no OTA slot to install into: %s" % e)
    if total is not None and total > region.size:
        raise OTAError("image of %d bytes does not fit the %d-byte slot %s" % (total, region.size, target))
    writer = Writer(ota.chip_id, project, ota.block_size, ota.deadline_s)
    gc.collect()
    info = writer.run(reader, total, region, progress, binascii.unhexlify(sha_hex) if sha_hex else None)
    try:
        # the signature covers the image; the manifest's sha256, version and secure_version must
        # be the signed image's own (so an edited manifest cannot pass an old image as new)
        sign.verify_release(point, manifest, info["sha256"], info)
        if version is not None and info["version"] != version:
            raise OTAError("image version %s, but the source says %s" % (info["version"], version))
        check_version(ota, info["version"], force, downgrade, info.get("secure_version") or 0)
    except BaseException as e:
        scrub(region)
        if isinstance(e, ValueError):
            raise OTAError(str(e))
        raise
    try:
        hal.ota_set_boot(target)
    except BaseException:
        # otadata keeps its last good copy (two sectors, the newer one wins), so the running image
        # still boots; the slot must not keep a complete image nobody selected
        scrub(region)
        raise
    # recorded after set_boot: that replaced any older rollback record in otadata, so a rollback
    # seen at a later boot is this image's (a cut in between only forgets to blacklist it). The
    # install is done either way: a failure here must not report it as failed.
    installed[0] = info["version"]
    try:
        ota.state.update(installing=info["version"])
    except Exception as e:
        log("ota: installed %s, but could not record it:" % info["version"], e)
    return info["version"]
