# A fake of MicroPython v1.28's `esp32` module (ports/esp32/esp32_partition.c, esp32_nvs.c) for
# exercising iotutils/hal/esp32.py on the host, under CPython and the micropython runtime alike.
#
# The flash is a 4 MB image file laid out by boards/ESP32_GENERIC/partitions.csv (the simulator's
# flash.bin format). Partition follows the port to the letter: readblocks/writeblocks(block, buf
# [, offset]) where a write WITHOUT offset erases the blocks first and one WITH offset does not
# (NOR flash: a write only clears bits); ioctl(4/5/6); errors as check_esp_err raises them,
# OSError(-esp_err, name). set_boot and mark_app_valid_cancel_rollback write otadata the way
# ESP-IDF v5.5.1's esp_ota_ops.c does -- coded here independently of iotutils/hal/otadata.py so
# the tests compare two implementations. NVS stores in ESP-IDF's format in the nvs partition.
#
# Test control (not part of the real module): fake_setup(flash, running=None) picks the image
# and the running app (None: boot like the ESP-IDF bootloader with rollback enabled), also read
# from $ESP32FAKE_FLASH / $ESP32FAKE_RUNNING at first use; fake_log lists every flash operation.
import os
import struct

try:
    from binascii import crc32 as _crc32
except ImportError:  # pragma: no cover
    _crc32 = None

_NATIVE = 4096
_TYPE_APP = 0
_TYPE_DATA = 1
_SUB_ANY = 0xFF
_SUBTYPES = {"factory": 0x00, "test": 0x20, "ota": 0x00, "phy": 0x01, "nvs": 0x02, "coredump": 0x03,
             "nvs_keys": 0x04, "efuse": 0x05, "fat": 0x81, "spiffs": 0x82, "littlefs": 0x83}

# esp_err_t codes used here
ESP_FAIL = -1
ESP_ERR_INVALID_ARG = 0x102
ESP_ERR_INVALID_SIZE = 0x104
ESP_ERR_NOT_FOUND = 0x105
ESP_ERR_NVS_NOT_FOUND = 0x1102
ESP_ERR_NVS_INVALID_NAME = 0x1106
ESP_ERR_NVS_KEY_TOO_LONG = 0x1109
ESP_ERR_NVS_INVALID_LENGTH = 0x110C
ESP_ERR_OTA_VALIDATE_FAILED = 0x1503
_NAMES = {ESP_FAIL: "ESP_FAIL", ESP_ERR_INVALID_ARG: "ESP_ERR_INVALID_ARG",
          ESP_ERR_INVALID_SIZE: "ESP_ERR_INVALID_SIZE", ESP_ERR_NOT_FOUND: "ESP_ERR_NOT_FOUND",
          ESP_ERR_NVS_NOT_FOUND: "ESP_ERR_NVS_NOT_FOUND", ESP_ERR_NVS_INVALID_NAME: "ESP_ERR_NVS_INVALID_NAME",
          ESP_ERR_NVS_KEY_TOO_LONG: "ESP_ERR_NVS_KEY_TOO_LONG",
          ESP_ERR_NVS_INVALID_LENGTH: "ESP_ERR_NVS_INVALID_LENGTH",
          ESP_ERR_OTA_VALIDATE_FAILED: "ESP_ERR_OTA_VALIDATE_FAILED"}

# esp_ota_img_states_t
_NEW, _PENDING, _VALID, _INVALID, _ABORTED, _UNDEFINED = 0, 1, 2, 3, 4, 0xFFFFFFFF


def _check(code):
    """mphalport.c check_esp_err(): OSError(-code, "ESP_ERR_...") (ESP_FAIL gives errno 1)."""
    if code:
        raise OSError(-code, _NAMES.get(code, "0x%04X" % code))


_here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
_CSV = _here + "/../../boards/ESP32_GENERIC/partitions.csv"

_state = {"flash": None, "running": None, "f": None, "table": None, "nvs": None}
fake_log = []  # ("read"|"write"|"erase", label, offset, length), newest last


def fake_setup(flash=None, running=None, csv=None):
    """Point the fake at a flash image (created blank if missing) and boot it: `running` names the
    app that runs, or None to let the emulated bootloader pick (and update otadata) like ESP-IDF's."""
    if _state["f"] is not None:
        _state["f"].close()
    _state.update(flash=flash, running=None, f=None, table=None, nvs=None)
    _load_table(csv or _CSV)
    _image()
    _state["running"] = running or _bootloader()
    del fake_log[:]


def _getenv(name):
    try:
        return os.getenv(name)
    except AttributeError:  # pragma: no cover
        return None


def _ensure():
    if _state["f"] is None:
        path = _state["flash"] or _getenv("ESP32FAKE_FLASH")
        if not path:
            raise OSError(19, "esp32 fake: call esp32.fake_setup(flash=...) or set ESP32FAKE_FLASH")
        fake_setup(path, _getenv("ESP32FAKE_RUNNING"))


def _load_table(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            c = [x.strip() for x in line.split(",")]
            ptype = _TYPE_APP if c[1] == "app" else _TYPE_DATA
            if c[2].startswith("ota_"):
                sub = 0x10 + int(c[2][4:])
            else:
                sub = _SUBTYPES.get(c[2], 0)
            size = c[4].upper()
            mult = 1024 if size.endswith("K") else 1048576 if size.endswith("M") else 1
            size = int(size.rstrip("KM"), 0) * mult
            rows.append((ptype, sub, int(c[3], 0), size, c[0]))
    _state["table"] = rows


def _image():
    path = _state["flash"]
    try:
        os.stat(path)
    except OSError:
        end = max(p[2] + p[3] for p in _state["table"])
        with open(path, "wb") as f:
            blank = b"\xff" * _NATIVE
            for _ in range(end // _NATIVE):
                f.write(blank)
    _state["f"] = open(path, "r+b")
    return _state["f"]


# ---- raw flash (esp_partition_read/write/erase_range semantics) ----

def _read(p, off, n):
    if off > p[3]:
        return ESP_ERR_INVALID_ARG, None
    if off + n > p[3]:
        return ESP_ERR_INVALID_SIZE, None
    f = _state["f"]
    f.seek(p[2] + off)
    data = f.read(n)
    fake_log.append(("read", p[4], off, n))
    return 0, data + b"\xff" * (n - len(data))


def _write(p, off, data):
    if off > p[3]:
        return ESP_ERR_INVALID_ARG
    if off + len(data) > p[3]:
        return ESP_ERR_INVALID_SIZE
    f = _state["f"]
    f.seek(p[2] + off)
    old = f.read(len(data))
    # NOR flash: programming only clears bits, whatever the data says
    new = bytes(old[i] & data[i] for i in range(len(data)))
    f.seek(p[2] + off)
    f.write(new)
    f.flush()
    fake_log.append(("write", p[4], off, len(data)))
    return 0


def _erase(p, off, n):
    if off > p[3]:
        return ESP_ERR_INVALID_ARG
    if n > p[3] - off or n % _NATIVE:
        return ESP_ERR_INVALID_SIZE
    if off % _NATIVE:
        return ESP_ERR_INVALID_ARG
    f = _state["f"]
    f.seek(p[2] + off)
    blank = b"\xff" * _NATIVE
    for _ in range(n // _NATIVE):
        f.write(blank)
    f.flush()
    fake_log.append(("erase", p[4], off, n))
    return 0


def _find(ptype, sub, label):
    _ensure()
    return [p for p in _state["table"]
            if p[0] == ptype and (sub == _SUB_ANY or p[1] == sub) and (label is None or p[4] == label)]


def _by_label(label):
    _ensure()
    for p in _state["table"]:
        if p[4] == label:
            return p
    return None


# ---- otadata, as esp_ota_ops.c / bootloader_common.c of ESP-IDF v5.5.1 ----

def _crc_seq(seq):
    data = struct.pack("<I", seq)
    if _crc32 is not None:
        return _crc32(data, 0xFFFFFFFF) & 0xFFFFFFFF
    crc = 0
    for b in data:  # pragma: no cover
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return ~crc & 0xFFFFFFFF


def _otadata():
    od = _find(_TYPE_DATA, 0x00, None)[0]
    entries = []
    for sec in (0, 1):
        raw = _read(od, sec * _NATIVE, 32)[1]
        seq, label, state, crc = struct.unpack("<I20sII", raw)
        entries.append([seq, label, state, crc])
    return od, entries


def _valid(e):
    return e[0] != 0xFFFFFFFF and e[3] == _crc_seq(e[0]) and e[2] not in (_INVALID, _ABORTED)


def _active(entries):
    """bootloader_common_get_active_otadata(): the valid entry with the highest seq, or -1."""
    best = -1
    for i in (0, 1):
        if _valid(entries[i]) and (best < 0 or entries[i][0] > entries[best][0]):
            best = i
    return best


def _rewrite(od, entries, seq, sec):
    e = entries[sec]
    e[0] = seq
    e[3] = _crc_seq(seq)
    err = _erase(od, sec * _NATIVE, _NATIVE)
    return err or _write(od, sec * _NATIVE, struct.pack("<I20sII", e[0], e[1], e[2], e[3]))


def _ota_parts():
    return sorted([p for p in _find(_TYPE_APP, _SUB_ANY, None) if 0x10 <= p[1] < 0x20], key=lambda p: p[1])


def _image_ok(p):
    from iotutils import appimage  # the project's own verifier stands in for esp_image_verify()
    region = _Bytes(p)
    try:
        appimage.verify_region(region)
        return True
    except ValueError:
        return False


class _Bytes:
    """The minimum flash region appimage.verify_region reads through."""

    def __init__(self, p):
        self.p = p
        self.size = p[3]

    def readinto(self, off, buf):
        data = _read(self.p, off, len(buf))[1]
        buf[:] = data


def _bootloader():
    """ESP-IDF's bootloader with CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE: the running slot's label."""
    slots = _ota_parts()
    od, entries = _otadata()
    for _ in range(4):
        i = _active(entries)
        if i < 0:
            break
        e = entries[i]
        slot = slots[(e[0] - 1) % len(slots)]
        if e[2] == _PENDING:       # the app never confirmed itself: roll back
            e[2] = _ABORTED
            _check(_rewrite(od, entries, e[0], i))
            continue
        if not _image_ok(slot):
            e[2] = _INVALID
            _check(_rewrite(od, entries, e[0], i))
            continue
        if e[2] == _NEW:
            e[2] = _PENDING
            _check(_rewrite(od, entries, e[0], i))
        return slot[4]
    for slot in slots:  # nothing selected: the first slot holding an image
        if _image_ok(slot):
            return slot[4]
    return slots[0][4]


# ---- the module's API ----

class _Raw:
    def __init__(self, p):
        self.p = p


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = _TYPE_APP
    TYPE_DATA = _TYPE_DATA

    def __init__(self, id, block_size=_NATIVE):
        if isinstance(id, _Raw):  # (the fake's own: find(), get_next_update())
            part = id.p
        elif isinstance(id, int):
            if id == Partition.BOOT:
                part = _boot_partition()
            elif id == Partition.RUNNING:
                _ensure()
                part = _by_label(_state["running"])
            else:
                raise ValueError
        else:
            part = (_find(_TYPE_APP, _SUB_ANY, id) or _find(_TYPE_DATA, _SUB_ANY, id) or [None])[0]
        self._init(part, block_size)

    def _init(self, part, block_size):
        if part is None:
            raise OSError(2, "ENOENT")
        self._p = part
        self._bs = block_size

    @staticmethod
    def _new(part, block_size=_NATIVE):
        return Partition(_Raw(part), block_size)

    @staticmethod
    def find(type=_TYPE_APP, subtype=_SUB_ANY, label=None, block_size=_NATIVE):
        return [Partition._new(p, block_size) for p in _find(type, subtype, label)]

    def __repr__(self):
        p = self._p
        return "<Partition type=%u, subtype=%u, address=%u, size=%u, label=%s, encrypted=0>" % (
            p[0], p[1], p[2], p[3], p[4])

    def __eq__(self, other):
        return isinstance(other, Partition) and other._p == self._p

    def info(self):
        p = self._p
        return (p[0], p[1], p[2], p[3], p[4], False)

    def readblocks(self, block, buf, offset=None):
        off = block * self._bs + (offset or 0)
        err, data = _read(self._p, off, len(buf))
        _check(err)
        buf[:] = data

    def writeblocks(self, block, buf, offset=None):
        off = block * self._bs
        if offset is None:
            # a simple write erases first (in 4 KB pieces, keeping the rest, when blocks are smaller)
            if self._bs >= _NATIVE:
                _check(_erase(self._p, off, len(buf)))
            else:
                addr = off // _NATIVE * _NATIVE
                top = off + len(buf)
                while addr < top:
                    cache = _read(self._p, addr, _NATIVE)[1]
                    _check(_erase(self._p, addr, _NATIVE))
                    if addr < off:
                        _check(_write(self._p, addr, cache[:off - addr]))
                    if top < addr + _NATIVE:
                        _check(_write(self._p, top, cache[top - addr:]))
                    addr += _NATIVE
        else:
            off += offset
        _check(_write(self._p, off, bytes(buf)))

    def ioctl(self, cmd, arg):
        if cmd in (1, 2, 3):  # INIT, DEINIT, SYNC
            return 0
        if cmd == 4:          # BLOCK_COUNT
            return self._p[3] // self._bs
        if cmd == 5:          # BLOCK_SIZE
            return self._bs
        if cmd == 6:          # BLOCK_ERASE
            if self._bs != _NATIVE:
                return -22
            _check(_erase(self._p, arg * _NATIVE, _NATIVE))
            return 0
        return None

    def set_boot(self):
        # esp_ota_set_boot_partition(): verify the image, then a new otadata entry (state NEW)
        if not _image_ok(self._p):
            _check(ESP_ERR_OTA_VALIDATE_FAILED)
        if self._p[0] != _TYPE_APP:
            _check(ESP_ERR_INVALID_ARG)
        od, entries = _otadata()
        if self._p[1] == 0x00:  # factory: erase otadata
            _check(_erase(od, 0, od[3]))
            return
        slots = _ota_parts()
        n = len(slots)
        sub = self._p[1] - 0x10
        if sub >= n:
            _check(ESP_ERR_INVALID_ARG)
        act = _active(entries)
        if act >= 0:
            seq = entries[act][0]
            i = 0
            while seq > (sub + 1) % n + i * n:
                i += 1
            nxt = (~act) & 1
            entries[nxt][2] = _NEW
            _check(_rewrite(od, entries, (sub + 1) % n + i * n, nxt))
        else:
            entries[0][2] = _NEW
            _check(_rewrite(od, entries, sub + 1, 0))

    def get_next_update(self):
        slots = _ota_parts()
        nxt = None
        if self._p in slots:
            k = slots.index(self._p)
            nxt = slots[(k + 1) % len(slots)]
        elif slots:
            nxt = slots[0]
        return Partition._new(nxt)

    @classmethod
    def mark_app_valid_cancel_rollback(cls):
        # esp_ota_current_ota_is_workable(true): the ACTIVE entry becomes VALID, whichever app runs;
        # no active entry (erased otadata, as after esptool's first flash) is ESP_FAIL
        od, entries = _otadata()
        act = _active(entries)
        if act < 0:
            _check(ESP_FAIL)
        if entries[act][2] != _VALID:
            entries[act][2] = _VALID
            _check(_rewrite(od, entries, entries[act][0], act))


def _boot_partition():
    # esp_ota_get_boot_partition(): what otadata selects, or the first OTA slot when none is valid
    od, entries = _otadata()
    slots = _ota_parts()
    act = _active(entries)
    if act < 0:
        return slots[0] if slots else None
    return slots[(entries[act][0] - 1) % len(slots)]


# ---- NVS (esp32_nvs.c over ESP-IDF's nvs_*: the partition labelled "nvs") ----

class _NVSRegion:
    def __init__(self, p):
        self.p = p
        self.size = p[3]
        self.name = p[4]
        self.offset = p[2]

    def read(self, off, n):
        err, data = _read(self.p, off, n)
        _check(err)
        return data

    def readinto(self, off, buf):
        buf[:] = self.read(off, len(buf))

    def write(self, off, data):
        _check(_write(self.p, off, bytes(data)))

    def erase(self, off, n):
        _check(_erase(self.p, off, n))


def _nvs():
    if _state["nvs"] is None:
        from iotutils.nvs import NVS as _Store  # ESP-IDF's NVS format, pure Python
        _state["nvs"] = _Store(_NVSRegion(_by_label("nvs")))
    return _state["nvs"]


_BLOB = 0x42
_I32 = 0x14


def _key(key):
    if not isinstance(key, str):
        raise TypeError("can't convert to str implicitly")
    if len(key.encode()) > 15:
        _check(ESP_ERR_NVS_KEY_TOO_LONG)
    return key


class NVS:
    def __init__(self, namespace):
        if not isinstance(namespace, str):
            raise TypeError("can't convert to str implicitly")
        if not 1 <= len(namespace.encode()) <= 15:
            _check(ESP_ERR_NVS_INVALID_NAME)
        _ensure()
        self._ns = namespace

    def __repr__(self):
        return "<NVS namespace>"

    def _get(self, key, t):
        r = _nvs().get_typed(self._ns, _key(key))
        if r is None or r[0] != t:  # nvs_get_* looks an item up by key AND type
            _check(ESP_ERR_NVS_NOT_FOUND)
        return r[1]

    def set_i32(self, key, value):
        _nvs().set(self._ns, _key(key), int(value), _I32)

    def get_i32(self, key):
        return self._get(key, _I32)

    def set_blob(self, key, value):
        _nvs().set(self._ns, _key(key), bytes(value))

    def get_blob(self, key, buf):
        data = self._get(key, _BLOB)
        if len(buf) < len(data):
            _check(ESP_ERR_NVS_INVALID_LENGTH)
        buf[:len(data)] = data
        return len(data)

    def erase_key(self, key):
        if not _nvs().erase(self._ns, _key(key)):
            _check(ESP_ERR_NVS_NOT_FOUND)

    def commit(self):
        return None
