"""The C NVS core (c_modules/iotutils/kvstore.c over the host NVS engine nvs_*.c) for the tests:
built with cc and loaded with ctypes (CStore: the Python NVS class's API over it), a simulated NOR
flash with power cuts (SimFlash), and the ESP-IDF references used when IDF_PATH names an ESP-IDF
tree: Espressif's checker (tests/c/nvs_ref/nvs_check_ref.py) and ESP-IDF's own loader and writer
compiled for the host (tests/c/nvs_ref/idf_loader.cpp).

Used by test_nvs_c.py (format, API, model, the pure-Python twin), test_nvs_c_powercut.py (power
cuts, ESP-IDF's writer) and test_mod_kvstore.py (the binding in the host firmware).
"""
import ctypes
import errno
import json
import os
import subprocess
import sys

import pytest

from cbuild import KVSTORE_SOURCES, build_shared

from conftest import ROOT

PY = sys.executable
CHECKER = os.path.join(ROOT, "tests", "c", "nvs_ref", "nvs_check_ref.py")

U8, I8, U16, I16, U32, I32, U64, I64 = 0x01, 0x11, 0x02, 0x12, 0x04, 0x14, 0x08, 0x18
STR, BLOB_V1, BLOB = 0x21, 0x41, 0x42
INT_RANGE = {
    U8: (0, 2**8 - 1), I8: (-2**7, 2**7 - 1), U16: (0, 2**16 - 1), I16: (-2**15, 2**15 - 1),
    U32: (0, 2**32 - 1), I32: (-2**31, 2**31 - 1), U64: (0, 2**64 - 1), I64: (-2**63, 2**63 - 1),
}
KVS_ERRORS = {-1: "not found", -2: "no space", -3: "too long", -4: "bad name", -5: "bad value",
              -6: "I/O error", -7: "no memory", -8: "corrupt", -9: "buffer full"}

READ_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint32)
WRITE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint32)
ERASE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32)
LIST_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint8)


class Ops(ctypes.Structure):
    _fields_ = [("ctx", ctypes.c_void_p), ("read", READ_FN), ("write", WRITE_FN), ("erase", ERASE_FN)]


_libs = {}


def lib(idf_load_only=False, idf_writes_only=False):
    """The C core; idf_load_only compiles out the loader's one repair beyond ESP-IDF's,
    idf_writes_only the writer's deviations from ESP-IDF (see nvs_storage.c)."""
    variant = (idf_load_only, idf_writes_only)
    if variant not in _libs:
        flags = (["-DNVS_HOST_ESP_IDF_LOAD_ONLY"] if idf_load_only else []) + \
            (["-DNVS_HOST_ESP_IDF_WRITES_ONLY"] if idf_writes_only else [])
        L = build_shared("nvs_c" + "".join(f.lower()[15:] for f in flags), KVSTORE_SOURCES, flags)
        vp, cp, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
        L.kvstore_open_ops.argtypes = [ctypes.POINTER(vp), ctypes.POINTER(Ops), ctypes.c_uint32]
        L.kvstore_open.argtypes = [ctypes.POINTER(vp), cp, ctypes.c_uint32, ctypes.c_uint32]
        L.kvstore_close.argtypes = [vp]
        L.kvstore_set_int.argtypes = [vp, cp, cp, ctypes.c_uint8, ctypes.c_uint64, ctypes.c_int]
        L.kvstore_set_str.argtypes = [vp, cp, cp, cp, sz]
        L.kvstore_set_blob.argtypes = [vp, cp, cp, cp, sz]
        L.kvstore_get.argtypes = [vp, cp, cp, ctypes.POINTER(ctypes.c_uint8), vp, ctypes.POINTER(sz)]
        L.kvstore_erase.argtypes = [vp, cp, cp]
        L.kvstore_erase_namespace.argtypes = [vp, cp]
        L.kvstore_erase_all.argtypes = [vp]
        L.kvstore_list.argtypes = [vp, cp, LIST_FN, vp]
        L.kvstore_keys.argtypes = [vp, cp, vp, vp, sz, ctypes.POINTER(sz)]
        L.kvstore_namespaces.argtypes = [vp, vp, sz, ctypes.POINTER(sz)]
        L.nvs_host_crc32.argtypes = [ctypes.c_uint32, cp, sz]
        L.nvs_host_crc32.restype = ctypes.c_uint32
        _libs[variant] = L
    return _libs[variant]


class PowerCut(Exception):
    pass


class SimFlash:
    """NOR flash in RAM behind the C flash-ops struct. `budget`: writes/erases allowed before
    the power is cut (later ones fail and change nothing); `torn`: the cut write lands half.
    A write that would set a bit (0 -> 1) counts as a violation, as real flash would ignore it."""

    def __init__(self, size=None, data=None):
        self.buf = bytearray(data) if data is not None else bytearray(b"\xff" * size)
        self.size = len(self.buf)
        self.ops_done = 0
        self.budget = None
        self.torn = False
        self.violations = []
        self.ops = Ops(None, READ_FN(self._read), WRITE_FN(self._write), ERASE_FN(self._erase))

    def _cut(self):
        if self.budget is not None and self.ops_done >= self.budget:
            return True
        self.ops_done += 1
        return False

    def _read(self, ctx, off, buf, n):
        ctypes.memmove(buf, bytes(self.buf[off:off + n]), n)
        return 0

    def _write(self, ctx, off, data, n):
        new = ctypes.string_at(data, n)
        rc = 0
        if self._cut():
            if not self.torn:
                return -1
            # The power fails during this write: only its first half reaches the flash.
            self.torn = False
            rc = -1
            n = max(1, n // 2)
            new = new[:n]
        old = int.from_bytes(self.buf[off:off + n], "little")
        w = int.from_bytes(new, "little")
        if w & ~old:
            self.violations.append((off, n))
        self.buf[off:off + n] = (old & w).to_bytes(n, "little")
        return rc

    def _erase(self, ctx, off, n):
        if off % 4096 or n % 4096 or off + n > self.size:
            self.violations.append(("erase", off, n))
            return -1
        if self._cut():
            return -1
        self.buf[off:off + n] = b"\xff" * n
        return 0

    # The pure-Python NVS (nvs.py) uses the same object as its flash region (and the same
    # budget: past it, writes raise PowerCut).
    def read(self, off, n):
        return bytes(self.buf[off:off + n])

    def readinto(self, off, b):
        b[:] = self.buf[off:off + len(b)]

    def write(self, off, data):
        if self._cut():
            raise PowerCut
        self.buf[off:off + len(data)] = bytes(a & b for a, b in zip(self.buf[off:off + len(data)], data))

    def erase(self, off, n):
        if self._cut():
            raise PowerCut
        self.buf[off:off + n] = b"\xff" * n


def _raise(rc, what):
    if rc == -2:
        raise OSError(errno.ENOSPC, "NVS partition full: " + what)
    if rc in (-3, -4, -5):
        raise ValueError("%s: %s" % (what, KVS_ERRORS[rc]))
    if rc == -6:
        raise OSError(errno.EIO, "flash I/O error: " + what)
    raise OSError(errno.EIO, "kvstore error %d (%s): %s" % (rc, KVS_ERRORS.get(rc, "?"), what))


class CStore:
    """The C store with the Python NVS class's API (as _iotutils.KVStore has it)."""

    def __init__(self, flash=None, path=None, offset=0, size=None, idf_load_only=False, idf_writes_only=False):
        self.L = L = lib(idf_load_only, idf_writes_only)
        self.flash = flash
        self.h = ctypes.c_void_p()
        if path is not None:
            rc = L.kvstore_open(ctypes.byref(self.h), path.encode(), offset, size)
        else:
            rc = L.kvstore_open_ops(ctypes.byref(self.h), ctypes.byref(flash.ops), flash.size)
        if rc != 0:
            _raise(rc, "open")

    def close(self):
        if self.h:
            self.L.kvstore_close(self.h)
            self.h = None

    def set(self, ns, key, value, type=None):
        L, n, k = self.L, ns.encode(), key.encode()
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int):
            t = I64 if type is None else type
            if not -2**63 <= value < 2**64:
                raise ValueError("out of range")
            rc = L.kvstore_set_int(self.h, n, k, t, value & (2**64 - 1), 1 if value < 0 else 0)
        elif isinstance(value, str):
            if type not in (None, STR):
                raise ValueError("a str is stored as STR")
            data = value.encode()
            rc = L.kvstore_set_str(self.h, n, k, data, len(data))
        elif isinstance(value, (bytes, bytearray)):
            if type not in (None, BLOB, BLOB_V1, 0x48):
                raise ValueError("bytes are stored as a blob")
            rc = L.kvstore_set_blob(self.h, n, k, bytes(value), len(value))
        else:
            raise ValueError("cannot store %r" % (value,))
        if rc != 0:
            _raise(rc, "%s/%s" % (ns, key))

    def get_typed(self, ns, key):
        L, n, k = self.L, ns.encode(), key.encode()
        t = ctypes.c_uint8()
        size = ctypes.c_size_t(0)
        rc = L.kvstore_get(self.h, n, k, ctypes.byref(t), None, ctypes.byref(size))
        if rc == -1:
            return None
        if rc != 0:
            _raise(rc, "%s/%s" % (ns, key))
        buf = ctypes.create_string_buffer(max(size.value, 8))
        rc = L.kvstore_get(self.h, n, k, ctypes.byref(t), buf, ctypes.byref(size))
        if rc == -1:
            return None
        if rc != 0:
            _raise(rc, "%s/%s" % (ns, key))
        raw = buf.raw[:size.value]
        tv = t.value
        if tv in INT_RANGE:
            return tv, int.from_bytes(raw, "little", signed=tv != U64)
        if tv == STR:
            return tv, raw[:-1].decode()
        return tv, raw

    def get(self, ns, key):
        r = self.get_typed(ns, key)
        return None if r is None else r[1]

    def erase(self, ns, key):
        rc = self.L.kvstore_erase(self.h, ns.encode(), key.encode())
        if rc == -1:
            return False
        if rc != 0:
            _raise(rc, "%s/%s" % (ns, key))
        return True

    def _names(self, ns):
        """kvstore_keys (ns given) or kvstore_namespaces: [(name, type)], starting with room for two
        so the grow-and-ask-again path (KVS_ERR_BUF_FULL) runs too."""
        cap = 2
        while True:
            names = (ctypes.c_char * 16 * cap)()
            types = (ctypes.c_uint8 * cap)()
            count = ctypes.c_size_t(0)
            if ns is None:
                rc = self.L.kvstore_namespaces(self.h, names, cap, ctypes.byref(count))
            else:
                rc = self.L.kvstore_keys(self.h, ns.encode(), names, types, cap, ctypes.byref(count))
            if rc != -9:
                break
            assert count.value == cap
            cap *= 2
        if rc != 0:
            _raise(rc, "list")
        return [(names[i].value.decode(), types[i]) for i in range(count.value)]

    def keys(self, ns):
        return self._names(ns)

    def namespaces(self):
        return [n for n, _t in self._names(None)]

    def erase_namespace(self, ns):
        rc = self.L.kvstore_erase_namespace(self.h, ns.encode())
        if rc not in (0, -1):
            _raise(rc, ns)

    def erase_all(self):
        rc = self.L.kvstore_erase_all(self.h)
        if rc != 0:
            _raise(rc, "erase_all")


def dump(store, namespaces, strict=True):
    """{(ns, key): (type, value)} of everything listed in these namespaces. strict=False
    tolerates a key listed twice with two types (ESP-IDF's loader leaves that after a cut
    type change; reads then find the older)."""
    out = {}
    for ns in namespaces:
        listed = store.keys(ns)
        if strict:
            assert len({k for k, _t in listed}) == len(listed), listed
        for key, t in listed:
            out[(ns, key)] = store.get_typed(ns, key)
            assert out[(ns, key)] is not None
            assert out[(ns, key)][0] == t or not strict
    return out


def typed(value, type=None):
    if isinstance(value, int):
        return (I64 if type is None else type), value
    if isinstance(value, str):
        return STR, value
    return BLOB, bytes(value)


def generate(tmp_path, rows, size, version=2, name="gen"):
    csv = tmp_path / (name + ".csv")
    out = tmp_path / (name + ".bin")
    csv.write_text("key,type,encoding,value\n" + "\n".join(rows) + "\n")
    subprocess.run([PY, "-m", "esp_idf_nvs_partition_gen", "generate", str(csv), str(out), hex(size),
                    "--version", str(version)], check=True, stdout=subprocess.DEVNULL)
    return out.read_bytes()


def idf_check(paths):
    """Espressif's checker on images; None when IDF_PATH is not set (callers skip)."""
    if not os.environ.get("IDF_PATH"):
        return None
    r = subprocess.run([PY, CHECKER] + [str(p) for p in paths], capture_output=True, text=True, timeout=600)
    res = json.loads(r.stdout)
    if "skip" in res:
        return None
    return res


_IDF_LOADER = []


def idf_loader():
    """ESP-IDF's own NVS loader (tests/c/nvs_ref/idf_loader.cpp over $IDF_PATH's nvs_flash
    sources), built once; None without IDF_PATH or a C++ compiler."""
    if _IDF_LOADER:
        return _IDF_LOADER[0]
    exe = None
    idf = os.environ.get("IDF_PATH")
    src = os.path.join(idf or "", "components", "nvs_flash", "src")
    cxx = os.environ.get("CXX", "g++")
    if idf and os.path.exists(os.path.join(src, "nvs_storage.cpp")):
        ref = os.path.join(ROOT, "tests", "c", "nvs_ref")
        sources = [os.path.join(ref, "idf_loader.cpp")] + [
            os.path.join(src, f) for f in ("nvs_types.cpp", "nvs_page.cpp", "nvs_pagemanager.cpp",
                                           "nvs_storage.cpp", "nvs_item_hash_list.cpp")]
        digest = __import__("hashlib").sha256()
        for path in sources + sorted(os.path.join(ref, "shim", f) for f in os.listdir(os.path.join(ref, "shim"))
                                     if f.endswith(".h")):
            with open(path, "rb") as f:
                digest.update(f.read())
        out_dir = os.path.join(ROOT, "build", "ctests")
        os.makedirs(out_dir, exist_ok=True)
        exe = os.path.join(out_dir, "idf_loader-" + digest.hexdigest()[:12])
        if not os.path.exists(exe):
            inc = ["-I", os.path.join(ref, "shim"), "-I", src]
            for d in ("nvs_flash/include", "nvs_flash/private_include", "esp_common/include"):
                inc += ["-I", os.path.join(idf, "components", d)]
            try:
                subprocess.run([cxx, "-std=gnu++17", "-O1", "-w"] + inc + sources + ["-o", exe + ".tmp"],
                               check=True, capture_output=True, timeout=300)
                os.replace(exe + ".tmp", exe)
            except (OSError, subprocess.CalledProcessError) as e:
                raise AssertionError("could not build ESP-IDF's NVS loader from IDF_PATH: %s" %
                                     getattr(e, "stderr", e))
    _IDF_LOADER.append(exe)
    return exe


def idf_read(tmp_path, images):
    """What ESP-IDF's own loader reads from each image: [(error, [(ns, key, type, value)])]."""
    exe = idf_loader()
    if exe is None or not images:
        return None
    paths = []
    for i, img in enumerate(images):
        p = tmp_path / ("idf%04d.bin" % i)
        p.write_bytes(bytes(img))
        paths.append(str(p))
    r = subprocess.run([exe] + paths, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    out = []
    for line in r.stdout.splitlines():
        d = json.loads(line)
        items = []
        for ns, key, t, v in d["items"]:
            if t == BLOB and v is not None:
                v = bytes.fromhex(v)
            items.append(((ns, key), (t, v)))
        out.append((d["error"], items))
    assert len(out) == len(images)
    return out


def assert_idf_clean(tmp_path, images):
    paths = []
    for i, img in enumerate(images):
        p = tmp_path / ("check%03d.bin" % i)
        p.write_bytes(bytes(img))
        paths.append(p)
    res = idf_check(paths)
    if res is None:
        return False
    bad = {p: r for p, r in res.items() if r["errors"]}
    assert not bad, bad
    return True


def random_value(rnd):
    r = rnd.random()
    if r < 0.45:
        t = rnd.choice(list(INT_RANGE))
        lo, hi = INT_RANGE[t]
        return rnd.choice([lo, hi, rnd.randint(lo, hi), 0]), t
    if r < 0.75:
        n = rnd.choice([0, 1, 5, 31, 32, 33, 100, 700, 2500])
        return "".join(rnd.choice("abcxyz€") for _ in range(n)), None
    n = rnd.choice([0, 1, 32, 64, 300, 1500, 4100, 6000])
    return bytes(rnd.getrandbits(8) for _ in range(n)), None


def python_nvs_or_none():
    try:
        from iotutils import nvs
    except ImportError:
        return None
    return nvs


def python_nvs():
    try:
        from iotutils import nvs
    except ImportError:
        pytest.skip("modules/iotutils/nvs.py not present yet")
    return nvs
