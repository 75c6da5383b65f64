"""The C NVS core (c_modules/iotutils/kvstore.c over the host NVS engine nvs_*.c), loaded with ctypes.

Checked against images made by Espressif's esp-idf-nvs-partition-gen, against a Python model
(random operation sequences), against power cuts after every flash write, against the
pure-Python twin (modules/iotutils/nvs.py) in both directions, and - when IDF_PATH names an
ESP-IDF tree - against Espressif's own checker (tests/c/nvs_ref/nvs_check_ref.py) and ESP-IDF's
own loader compiled for the host (tests/c/nvs_ref/idf_loader.cpp). With FIRMWARE=<host firmware>
the _iotutils.KVStore binding is tested too.
"""
import ctypes
import errno
import json
import os
import random
import subprocess
import sys
import zlib

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


# ---- tests ----

def test_crc32_is_esp_rom_crc32_le():
    # The generator computes zlib.crc32(data, 0xFFFFFFFF); ESP-IDF esp_rom_crc32_le(0xffffffff, ...).
    for data in (b"", b"a", b"123456789", bytes(range(256)) * 3):
        assert lib().nvs_host_crc32(0xFFFFFFFF, data, len(data)) == zlib.crc32(data, 0xFFFFFFFF)


GEN_STR = "x" * 3900   # the generator refuses a string filling a whole page (>= 126 entries)
GEN_BLOB = bytes((i * 7 + 3) & 0xFF for i in range(9000))


def _gen_rows(tmp_path):
    blob_file = tmp_path / "blob.bin"
    blob_file.write_bytes(GEN_BLOB)
    rows = ["storage,namespace,,",
            "u8,data,u8,255", "i8,data,i8,-128", "u16,data,u16,65535", "i16,data,i16,-32768",
            "u32,data,u32,4294967295", "i32,data,i32,-2147483648",
            "u64,data,u64,18446744073709551615", "i64,data,i64,-9223372036854775808",
            "str,data,string,hello world", "empty,data,string,",
            "long,data,string," + GEN_STR,
            "hex,data,hex2bin,00112233445566778899aabbccddeeff",
            "b64,data,base64," + __import__("base64").b64encode(b"\x00\x01binary\xff").decode(),
            "bigblob,file,binary," + str(blob_file)]
    expected = {
        ("storage", "u8"): (U8, 255), ("storage", "i8"): (I8, -128), ("storage", "u16"): (U16, 65535),
        ("storage", "i16"): (I16, -32768), ("storage", "u32"): (U32, 2**32 - 1),
        ("storage", "i32"): (I32, -2**31), ("storage", "u64"): (U64, 2**64 - 1),
        ("storage", "i64"): (I64, -2**63), ("storage", "str"): (STR, "hello world"),
        ("storage", "empty"): (STR, ""), ("storage", "long"): (STR, GEN_STR),
        ("storage", "hex"): (BLOB, bytes.fromhex("00112233445566778899aabbccddeeff")),
        ("storage", "b64"): (BLOB, b"\x00\x01binary\xff"), ("storage", "bigblob"): (BLOB, GEN_BLOB),
    }
    for n in range(30):   # many namespaces, same key names in each
        rows.append("ns%02d,namespace,," % n)
        rows.append("k,data,u32,%d" % (n * 1000))
        rows.append("name,data,string,namespace %d" % n)
        expected[("ns%02d" % n, "k")] = (U32, n * 1000)
        expected[("ns%02d" % n, "name")] = (STR, "namespace %d" % n)
    return rows, expected


def test_reads_generator_images(tmp_path):
    rows, expected = _gen_rows(tmp_path)
    img = generate(tmp_path, rows, 0x10000)
    flash = SimFlash(data=img)
    s = CStore(flash)
    namespaces = sorted({ns for ns, _k in expected})
    assert s.namespaces() == namespaces
    assert dump(s, namespaces) == expected
    assert s.get("storage", "nope") is None and s.get("nope", "u8") is None
    assert flash.buf == bytearray(img)   # loading a clean image writes nothing
    s.close()


def test_reads_version1_blobs(tmp_path):
    img = generate(tmp_path, ["old,namespace,,", "b,data,hex2bin,0102030405", "s,data,string,v1"],
                   0x6000, version=1)
    s = CStore(SimFlash(data=img))
    assert s.get_typed("old", "b") == (BLOB, b"\x01\x02\x03\x04\x05")
    assert s.keys("old") == [("b", BLOB), ("s", STR)]
    s.set("old", "b", b"new")            # replaced by a version 2 blob
    s.close()
    s = CStore(SimFlash(data=s.flash.buf))
    assert s.get_typed("old", "b") == (BLOB, b"new")
    assert s.keys("old") == [("s", STR), ("b", BLOB)]


def test_updates_generator_image_and_passes_checker(tmp_path):
    rows, expected = _gen_rows(tmp_path)
    flash = SimFlash(data=generate(tmp_path, rows, 0x10000))
    s = CStore(flash)
    s.set("storage", "u8", 7, U8)
    s.set("storage", "bigblob", GEN_BLOB[::-1])
    s.set("storage", "long", "short now")
    s.set("storage", "i64", "was an int")     # type change
    s.erase("ns03", "k")
    expected[("storage", "u8")] = (U8, 7)
    expected[("storage", "bigblob")] = (BLOB, GEN_BLOB[::-1])
    expected[("storage", "long")] = (STR, "short now")
    expected[("storage", "i64")] = (STR, "was an int")
    del expected[("ns03", "k")]
    s.close()
    s = CStore(SimFlash(data=flash.buf))
    assert dump(s, sorted({ns for ns, _k in expected})) == expected
    assert not flash.violations
    assert_idf_clean(tmp_path, [flash.buf])   # when IDF_PATH is set


def test_errors_and_limits(tmp_path):
    s = CStore(SimFlash(0x6000))
    for bad in ("", "k" * 16):
        with pytest.raises(ValueError):
            s.set("ns", bad, 1)
        with pytest.raises(ValueError):
            s.set(bad, "key", 1)
        with pytest.raises(ValueError):
            s.get("ns", bad)
    s.set("n" * 15, "k" * 15, 1)
    assert s.get("n" * 15, "k" * 15) == 1
    for t, (lo, hi) in INT_RANGE.items():
        s.set("ints", "v", lo, t)
        assert s.get_typed("ints", "v") == (t, lo)
        s.set("ints", "v", hi, t)
        assert s.get_typed("ints", "v") == (t, hi)
        for bad in (lo - 1, hi + 1):
            with pytest.raises(ValueError):
                s.set("ints", "v", bad, t)
        assert s.get_typed("ints", "v") == (t, hi)
    with pytest.raises(ValueError):
        s.set("ints", "v", 1, STR)
    with pytest.raises(ValueError):
        s.set("ns", "s", "a\x00b")
    s.set("ns", "s", "é" * 1999 + "x")       # 3999 bytes: the limit
    with pytest.raises(ValueError):
        s.set("ns", "s", "y" * 4000)
    assert s.get("ns", "s") == "é" * 1999 + "x"
    s.set("ns", "b", b"")
    assert s.get_typed("ns", "b") == (BLOB, b"")
    with pytest.raises(ValueError):
        s.set("ns", "b", b"x" * 508001)
    with pytest.raises(ValueError):          # above ESP-IDF's limit for 6 pages: 5 * 4000
        s.set("ns", "b", b"x" * 20001)
    with pytest.raises(OSError) as e:        # within the limit, but other data takes room
        s.set("ns", "b", b"x" * 20000)
    assert e.value.errno == errno.ENOSPC
    assert s.get_typed("ns", "b") == (BLOB, b"")
    s.set("ns", "b", b"y" * 12000)
    assert s.get_typed("ns", "b") == (BLOB, b"y" * 12000)


def test_full_partition_gives_enospc_and_keeps_data():
    flash = SimFlash(0x6000)
    s = CStore(flash)
    stored = {}
    with pytest.raises(OSError) as e:
        for i in range(10000):
            s.set("fill", "k%d" % i, "v" * 40 + str(i))
            stored["k%d" % i] = "v" * 40 + str(i)
    assert e.value.errno == errno.ENOSPC
    assert len(stored) > 50
    for k, v in stored.items():
        assert s.get("fill", k) == v
    s.close()
    s = CStore(SimFlash(data=flash.buf))
    assert {k: s.get("fill", k) for k in stored} == stored
    for k in list(stored)[:20]:
        assert s.erase("fill", k)
        del stored[k]
    s.set("fill", "again", b"blob" * 100)        # space comes back after erasing
    assert s.get("fill", "again") == b"blob" * 100
    assert not flash.violations


def test_listings_agree_with_kvstore_list():
    # kvstore_keys/kvstore_namespaces (what KVStore.keys()/namespaces() call) are kvstore_list's
    # entries copied out: keys in listing order, namespaces once each and sorted.
    s = CStore(SimFlash(0x8000))
    for i in range(40):
        s.set("ns%02d" % (i * 7 % 13), "k%d" % i, i if i % 3 else "v%d" % i)
    listed = []
    fn = LIST_FN(lambda arg, ns, key, t: listed.append((ns.decode(), key.decode(), t)) or 0)
    assert s.L.kvstore_list(s.h, None, fn, None) == 0
    assert s.namespaces() == sorted({n for n, _k, _t in listed})
    for ns in s.namespaces():
        assert s.keys(ns) == [(k, t) for n, k, t in listed if n == ns]
    assert s.keys("none") == []


def _random_value(rnd):
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


def test_random_operations_against_model(tmp_path):
    rnd = random.Random(1234)
    flash = SimFlash(0x8000)
    s = CStore(flash)
    model = {}
    namespaces = ["a", "bb", "wifi"]
    keys = ["k%d" % i for i in range(8)]
    counts = {"set": 0, "enospc": 0, "erase": 0, "reopen": 0}
    for step in range(2500):
        ns, key = rnd.choice(namespaces), rnd.choice(keys)
        r = rnd.random()
        if r < 0.7:
            value, t = _random_value(rnd)
            try:
                s.set(ns, key, value, t)
                model[(ns, key)] = typed(value, t)
                counts["set"] += 1
            except OSError as e:
                assert e.errno == errno.ENOSPC
                counts["enospc"] += 1
        elif r < 0.9:
            assert s.erase(ns, key) == ((ns, key) in model)
            model.pop((ns, key), None)
            counts["erase"] += 1
        elif r < 0.92:
            s.erase_namespace(ns)
            for k in [k for k in model if k[0] == ns]:
                del model[k]
        else:
            assert s.get_typed(ns, key) == model.get((ns, key))
        if step % 250 == 249:
            s.close()
            s = CStore(SimFlash(data=flash.buf))
            flash = s.flash
            counts["reopen"] += 1
            assert dump(s, namespaces) == model
    assert dump(s, namespaces) == model
    assert counts["set"] > 1000 and counts["erase"] > 200
    assert not flash.violations
    s.erase_all()
    assert s.namespaces() == [] and dump(s, namespaces) == {}
    assert_idf_clean(tmp_path, [flash.buf])   # when IDF_PATH is set


# Power cuts: a scripted sequence on a small partition (so pages fill, get reclaimed and
# blobs span pages), replayed with the power cut after every possible flash write.
def _script():
    rnd = random.Random(99)
    ops = []
    for i in range(6):
        ops.append(("set", "cfg", "k%d" % i, "value %d " % i * 20, None))
    ops += [
        ("set", "cfg", "blob", bytes(range(256)) * 20, None),      # 5120 bytes: two chunks
        ("set", "cfg", "k0", 42, U8),                                # str -> int
        ("set", "cfg", "blob", bytes(rnd.getrandbits(8) for _ in range(4500)), None),
        ("set", "new", "n", "fresh namespace", None),
        ("erase", "cfg", "k1"),
        ("set", "cfg", "k2", b"now a blob", None),
        ("set", "cfg", "blob", "blob to str", None),
        ("set", "cfg", "k3", -5, I32),
        ("erase_ns", "new"),
        ("set", "cfg", "blob", bytes(rnd.getrandbits(8) for _ in range(3000)), None),
    ]
    for i in range(12):
        ops.append(("set", "cfg", "k%d" % (i % 5), "round %d " % i * (5 + i * 3), None))
    ops.append(("set", "cfg", "blob", bytes(rnd.getrandbits(8) for _ in range(7000)), None))
    return ops


def _apply(store, model, op):
    if op[0] == "set":
        _, ns, key, value, t = op
        store.set(ns, key, value, t)
        model[(ns, key)] = typed(value, t)
    elif op[0] == "erase":
        store.erase(op[1], op[2])
        model.pop((op[1], op[2]), None)
    else:
        store.erase_namespace(op[1])
        for k in [k for k in model if k[0] == op[1]]:
            del model[k]


def _run_with_cut(base, script, budget, torn=False):
    """Run the script until the power is cut; return (flash, index of the op cut short)."""
    flash = SimFlash(data=base)
    flash.budget = budget
    flash.torn = torn
    s = CStore(flash)
    for i, op in enumerate(script):
        try:
            _apply(s, {}, op)
        except OSError as e:
            assert e.errno == errno.EIO, e
            return flash, i
    return flash, len(script)


def _check_cuts(tmp_path, script, base, namespaces, step=1, torn=False, idf_load_only=False):
    """Cut the power after every `step`-th flash write of the script; after each cut the
    reloaded store must hold, for every key, its value from before or after the op that was
    cut short, and keep working. Returns the number of cuts and some repaired images."""
    flash = SimFlash(data=base)
    s = CStore(flash)
    models = [dump(s, namespaces)]
    for op in script:
        m = dict(models[-1])
        _apply(s, m, op)
        models.append(m)
    total = flash.ops_done
    assert not flash.violations
    images = []
    cuts = []       # (n, k, cut image, repaired image, our view) for ESP-IDF's own loader
    for n in range(0, total, step):
        cut, k = _run_with_cut(base, script, n, torn)
        assert not cut.violations, (n, cut.violations)
        after = SimFlash(data=cut.buf)
        s = CStore(after, idf_load_only=idf_load_only)
        got = dump(s, namespaces, strict=not idf_load_only)
        old, new = models[k], models[min(k + 1, len(script))]
        for key in set(old) | set(new) | set(got):
            assert got.get(key) in (old.get(key), new.get(key)), (n, k, script[k][:3], key)
        py = _python_nvs_or_none()
        if py is not None and not idf_load_only:
            # the pure-Python twin reads the cut image the same way
            p = py.NVS(SimFlash(data=cut.buf))
            pgot = {(ns, key): p.get_typed(ns, key) for ns in namespaces for key, _t in p.keys(ns)}
            for key in set(old) | set(new) | set(pgot):
                assert pgot.get(key) in (old.get(key), new.get(key)), ("nvs.py", n, k, script[k][:3], key)
        # still writable, and what it writes survives another reload
        s.set(namespaces[0], "after", n)
        s.close()
        s = CStore(SimFlash(data=after.buf), idf_load_only=idf_load_only)
        assert s.get(namespaces[0], "after") == n
        assert not after.violations
        ours = dict(got)
        ours[(namespaces[0], "after")] = (I64, n)
        cuts.append((n, k, bytes(cut.buf), bytes(after.buf), ours))
        if len(images) < 40 and n % 5 == 0:
            images.append(bytes(after.buf))
    # ESP-IDF's own loader (when IDF_PATH is set): the cut images give old or new values, and
    # the images this core repaired and wrote read exactly as this core reads them.
    res = idf_read(tmp_path, [c[2] for c in cuts] + [c[3] for c in cuts])
    if res is not None:
        for (n, k, _c, _a, _g), (err, items) in zip(cuts, res[:len(cuts)]):
            assert err == 0, (n, err)
            old, new = models[k], models[min(k + 1, len(script))]
            listed = {key for key, _v in items}
            for key, tv in items:
                assert tv in (old.get(key), new.get(key)), ("ESP-IDF", n, k, script[k][:3], key)
            for key in (set(old) | set(new)) - listed:
                assert None in (old.get(key), new.get(key)), ("ESP-IDF lost", n, k, script[k][:3], key)
        for (n, _k, _c, _a, ours), (err, items) in zip(cuts, res[len(cuts):] if not idf_load_only else []):
            assert err == 0 and dict(items) == ours and len(items) == len(ours), ("ESP-IDF repaired", n)
    return total, images


@pytest.mark.parametrize("torn", [False, True], ids=["whole-writes", "torn-writes"])
def test_power_cut_after_every_write(tmp_path, torn):
    base = bytes(SimFlash(0x6000).buf)
    total, images = _check_cuts(tmp_path, _script(), base, ["cfg", "new"], torn=torn)
    assert total > 300
    assert_idf_clean(tmp_path, images)   # when IDF_PATH is set


def test_power_cut_esp_idf_loader_alone(tmp_path):
    # The same cuts, reloaded by ESP-IDF's loading algorithm only (no extra repair): what a
    # board would see if this flash were its NVS partition.
    base = bytes(SimFlash(0x6000).buf)
    _check_cuts(tmp_path, _script(), base, ["cfg", "new"], idf_load_only=True)


def _random_script(seed, n):
    rnd = random.Random(seed)
    ops = []
    for _ in range(n):
        ns, key = rnd.choice(["p", "q"]), "k%d" % rnd.randrange(5)
        r = rnd.random()
        if r < 0.8:
            value, t = _random_value(rnd)
            if isinstance(value, bytes) and len(value) > 4500:
                value = value[:4500]
            ops.append(("set", ns, key, value, t))
        elif r < 0.95:
            ops.append(("erase", ns, key))
        else:
            ops.append(("erase_ns", ns))
    return ops


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_power_cut_random_scripts(tmp_path, seed):
    # Start from a partition that is already fairly full, so writes reclaim pages.
    flash = SimFlash(0x5000)
    s = CStore(flash)
    for i in range(40):
        s.set("p" if i % 2 else "q", "fill%d" % (i % 13), "x" * (60 + i))
    base = bytes(flash.buf)
    script = list(_random_script(seed, 30))
    # drop ops the full partition refuses, so the model stays exact
    ok, f2 = [], SimFlash(data=base)
    s = CStore(f2)
    for op in script:
        try:
            _apply(s, {}, op)
            ok.append(op)
        except OSError as e:
            assert e.errno == errno.ENOSPC
            s.close()
            s = CStore(f2)
    total, images = _check_cuts(tmp_path, ok, base, ["p", "q"], step=2, torn=seed == 3)
    _check_cuts(tmp_path, ok, base, ["p", "q"], step=5, idf_load_only=True)
    assert total > 100
    assert_idf_clean(tmp_path, images)   # when IDF_PATH is set


def _idf_ops(script):
    """The script in idf_loader --write's line format."""
    lines = []
    for op in script:
        if op[0] == "set":
            _, ns, key, value, t = op
            t, v = typed(value, t)
            if t in INT_RANGE:
                data = (v & (2 ** (8 * (t & 0x0F)) - 1)).to_bytes(t & 0x0F, "little")
            elif t == STR:
                data = v.encode()
            else:
                data = v
            lines.append("set %s %s 0x%02x %s" % (ns, key, t, data.hex()))
        elif op[0] == "erase":
            lines.append("erase %s %s" % (op[1], op[2]))
        else:
            lines.append("erase_ns %s" % op[1])
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("which", ["script", "random"])
def test_esp_idf_written_power_cuts_load_as_esp_idf_loads_them(tmp_path, which):
    # ESP-IDF's own writer (nvs_storage.cpp from IDF_PATH) runs the script with the power cut
    # after every flash write; this core must read each image as ESP-IDF's loader reads it
    # (a key ESP-IDF lists twice, with two types, is read as one of them), and leave it clean.
    exe = idf_loader()
    if exe is None:
        pytest.skip("IDF_PATH not set: ESP-IDF's own NVS writer is not available")
    if which == "script":
        script, size, namespaces = _script(), 0x6000, ["cfg", "new"]
    else:
        script, size, namespaces = _random_script(11, 40), 0x5000, ["p", "q"]
    base = tmp_path / "base.bin"
    base.write_bytes(b"\xff" * size)
    (tmp_path / "ops.txt").write_text(_idf_ops(script))
    outdir = tmp_path / "cuts"
    outdir.mkdir()
    r = subprocess.run([exe, "--write", str(base), str(tmp_path / "ops.txt"), str(outdir), "1"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    cuts = [tuple(int(x) for x in line.split()) for line in r.stdout.split("\n") if line]
    assert len(cuts) > 100
    images = [(outdir / ("cut_%d.bin" % n)).read_bytes() for n, _k in cuts]
    theirs = idf_read(tmp_path, images)
    repaired = []
    for (n, k), img, (err, items) in zip(cuts, images, theirs):
        assert err == 0, (n, err)
        flash = SimFlash(data=img)
        ours = dump(CStore(flash), namespaces)
        listed = {}
        for key, tv in items:
            listed.setdefault(key, []).append(tv)
        assert set(ours) == set(listed), (n, k)
        for key, tv in ours.items():
            assert tv in listed[key], (n, k, key)
        if n % 9 == 0:
            repaired.append(bytes(flash.buf))
    assert_idf_clean(tmp_path, repaired)   # when IDF_PATH is set


def _small_values_script(seed, n):
    rnd = random.Random(seed)
    ops = []
    for _ in range(n):
        ns, key = rnd.choice(["a", "b", "c"]), "k%d" % rnd.randrange(12)
        r = rnd.random()
        if r < 0.6:
            t = rnd.choice(list(INT_RANGE))
            ops.append(("set", ns, key, rnd.randint(*INT_RANGE[t]), t))
        elif r < 0.85:
            ops.append(("set", ns, key, "s" * rnd.randrange(60), None))
        else:
            ops.append(("erase", ns, key))
    return ops


@pytest.mark.parametrize("which", ["script", "random", "small-values"])
def test_writes_byte_identical_to_esp_idf(tmp_path, which):
    # Built without its deviations (NVS_HOST_ESP_IDF_WRITES_ONLY), this core must leave the
    # very bytes ESP-IDF's own writer leaves for the same operations.
    exe = idf_loader()
    if exe is None:
        pytest.skip("IDF_PATH not set: ESP-IDF's own NVS writer is not available")
    script, size = {"script": (_script(), 0x6000), "random": (_random_script(11, 40), 0x5000),
                    "small-values": (_small_values_script(4, 1500), 0x4000)}[which]
    base = tmp_path / "base.bin"
    base.write_bytes(b"\xff" * size)
    (tmp_path / "ops.txt").write_text(_idf_ops(script))
    outdir = tmp_path / "cuts"
    outdir.mkdir()
    r = subprocess.run([exe, "--write", str(base), str(tmp_path / "ops.txt"), str(outdir), str(10 ** 9)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    flash = SimFlash(size)
    s = CStore(flash, idf_writes_only=True)
    for op in script:
        try:
            _apply(s, {}, op)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    theirs = (outdir / "full.bin").read_bytes()
    diff = [i for i in range(size) if theirs[i] != flash.buf[i]]
    assert not diff, "first difference at 0x%x (page %d)" % (diff[0], diff[0] // 4096)


def _python_nvs_or_none():
    try:
        from iotutils import nvs
    except ImportError:
        return None
    return nvs


def _python_nvs():
    try:
        from iotutils import nvs
    except ImportError:
        pytest.skip("modules/iotutils/nvs.py not present yet")
    return nvs


def test_c_writes_python_reads(tmp_path):
    nvs = _python_nvs()
    rnd = random.Random(7)
    flash = SimFlash(0x8000)
    s = CStore(flash)
    model = {}
    for i in range(300):
        ns, key = rnd.choice(["x", "y"]), "k%d" % rnd.randrange(10)
        value, t = _random_value(rnd)
        try:
            s.set(ns, key, value, t)
            model[(ns, key)] = typed(value, t)
        except OSError:
            pass
        if i % 10 == 0 and (ns, key) in model:
            s.erase(ns, key)
            del model[(ns, key)]
    s.close()
    p = nvs.NVS(flash)
    got = {}
    for ns in ("x", "y"):
        for key, t in p.keys(ns):
            got[(ns, key)] = p.get_typed(ns, key)
            assert got[(ns, key)][0] == t
    assert got == model


def test_python_writes_c_reads(tmp_path):
    nvs = _python_nvs()
    rnd = random.Random(8)
    flash = SimFlash(0x8000)
    p = nvs.NVS(flash)
    model = {}
    for i in range(300):
        ns, key = rnd.choice(["x", "y"]), "k%d" % rnd.randrange(10)
        value, t = _random_value(rnd)
        try:
            p.set(ns, key, value, t)
            model[(ns, key)] = typed(value, t)
        except OSError:
            pass
        except Exception as e:   # nvs.NVSError when full
            if "full" not in str(e).lower() and "space" not in str(e).lower():
                raise
        if i % 10 == 0 and (ns, key) in model:
            p.erase(ns, key)
            del model[(ns, key)]
    s = CStore(SimFlash(data=flash.buf))
    assert dump(s, ["x", "y"]) == model
    s.set("x", "fromc", "C was here")   # and the C store keeps writing the Python image
    s.close()
    assert nvs.NVS(SimFlash(data=s.flash.buf)).get("x", "fromc") == "C was here"


def test_python_writes_with_power_cuts_c_reads_old_or_new():
    nvs = _python_nvs()
    script = _script()
    base = bytes(SimFlash(0x6000).buf)
    namespaces = ["cfg", "new"]
    flash = SimFlash(data=base)
    p = nvs.NVS(flash)
    models = [{}]
    for op in script:
        m = dict(models[-1])
        _apply(p, m, op)
        models.append(m)
    for n in range(flash.ops_done):
        flash = SimFlash(data=base)
        flash.budget = n
        k = len(script)
        try:
            p = nvs.NVS(flash)
            for k, op in enumerate(script):  # noqa: B007 - k tells the except clause how far it got
                _apply(p, {}, op)
            k = len(script)
        except PowerCut:
            pass
        got = dump(CStore(SimFlash(data=flash.buf)), namespaces)
        old, new = models[k], models[min(k + 1, len(script))]
        for key in set(old) | set(new) | set(got):
            assert got.get(key) in (old.get(key), new.get(key)), (n, k, script[k][:3], key)


def test_file_backend(tmp_path):
    # The host firmware's store: a partition inside a flash image file, written unbuffered.
    path = tmp_path / "flash.bin"
    path.write_bytes(b"\xee" * 0x9000)      # the image ends where the partition starts
    s = CStore(path=str(path), offset=0x9000, size=0x6000)
    s.set("wifi", "ssid", "home")
    s.set("wifi", "blob", bytes(range(200)) * 30)
    s.set("stats", "boots", 3, U32)
    # every write already reached the file (no close, no flush)
    data = path.read_bytes()
    assert data[:0x9000] == b"\xee" * 0x9000
    assert len(data) == 0xF000                # padded with erased flash to the partition's end
    r = CStore(SimFlash(data=data[0x9000:]))
    assert r.get("wifi", "ssid") == "home" and r.get("stats", "boots") == 3
    assert r.get("wifi", "blob") == bytes(range(200)) * 30
    s.close()
    s = CStore(path=str(path), offset=0x9000, size=0x6000)
    assert s.get_typed("stats", "boots") == (U32, 3)
    s.close()
    with pytest.raises(OSError):
        CStore(path=str(tmp_path / "missing.bin"), offset=0, size=0x6000)


def test_espressif_checker_sees_errors(tmp_path):
    # The images above are checked with nvs_tool.py whenever IDF_PATH is set; this makes sure
    # that check is live: a clean image passes and a damaged one is reported.
    if idf_check([]) is None:
        pytest.skip("IDF_PATH not set: images are not checked with Espressif's nvs_tool.py")
    flash = SimFlash(0x6000)
    s = CStore(flash)
    s.set("ns", "a", "text value")
    s.set("ns", "b", bytes(range(100)))
    good = bytes(flash.buf)
    bad = bytearray(good)
    bad[64 + 32 + 10] ^= 0x01           # a bit of the second entry's key
    res = idf_check([_write(tmp_path / "good.bin", good), _write(tmp_path / "bad.bin", bad)])
    assert res[str(tmp_path / "good.bin")]["errors"] == []
    assert any("CRC" in e for e in res[str(tmp_path / "bad.bin")]["errors"])


def _write(path, data):
    path.write_bytes(bytes(data))
    return path


def test_checker_script_skips_cleanly_without_idf(tmp_path):
    env = dict(os.environ)
    env.pop("IDF_PATH", None)
    r = subprocess.run([PY, CHECKER, "x.bin"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "skip" in json.loads(r.stdout)


# ---- the binding in the host firmware (FIRMWARE=<build/unix/micropython>) ----

def _firmware_with_kvstore():
    from conftest import micropython_cmd
    cmd = micropython_cmd()
    try:
        r = subprocess.run(cmd + ["-c", "import _iotutils; print(hasattr(_iotutils, 'KVStore'))"],
                           capture_output=True, text=True, timeout=30)
    except OSError:
        r = None
    if r is None or r.stdout.strip() != "True":
        pytest.skip("this runtime has no _iotutils.KVStore (set FIRMWARE=<host firmware build>)")
    return cmd


_BINDING_SCRIPT = r"""
import json, binascii, _iotutils
K = _iotutils.KVStore
s = K(%(img)r, %(off)d, %(size)d)
out = open(%(out)r, "w")
for line in open(%(ops)r):
    op = json.loads(line)
    try:
        if op[0] == "set":
            v = op[3]
            if isinstance(v, list):
                v = binascii.unhexlify(v[0])
            r = ["ok", s.set(op[1], op[2], v, op[4])]
        elif op[0] == "get":
            r = s.get_typed(op[1], op[2])
            if r is not None and isinstance(r[1], bytes):
                r = [r[0], [binascii.hexlify(r[1]).decode()]]
            r = ["ok", r]
        elif op[0] == "erase":
            r = ["ok", s.erase(op[1], op[2])]
        elif op[0] == "keys":
            r = ["ok", s.keys(op[1])]
        elif op[0] == "namespaces":
            r = ["ok", s.namespaces()]
    except ValueError:
        r = ["ValueError"]
    except OSError as e:
        r = ["OSError", e.errno]
    out.write(json.dumps(r) + "\n")
s.close()
out.close()
"""


def _binding_ops(rnd, n):
    ops = []
    for _ in range(n):
        ns, key = rnd.choice(["wifi", "cfg", "a" * 15]), rnd.choice(["ssid", "k1", "k" * 15, "k2"])
        r = rnd.random()
        if r < 0.55:
            value, t = _random_value(rnd)
            ops.append(["set", ns, key, [value.hex()] if isinstance(value, bytes) else value, t])
        elif r < 0.75:
            ops.append(["get", ns, key])
        elif r < 0.85:
            ops.append(["erase", ns, key])
        elif r < 0.95:
            ops.append(["keys", ns])
        else:
            ops.append(["namespaces"])
    ops += [["set", "cfg", "x" * 16, 1, None], ["set", "", "k", 1, None], ["set", "cfg", "v", 256, U8],
            ["set", "cfg", "v", "s", U8], ["set", "cfg", "v", 2**64, None], ["get", "cfg", "k" * 16]]
    return ops


def _ops_in_python(store, ops):
    out = []
    for op in ops:
        try:
            if op[0] == "set":
                v = bytes.fromhex(op[3][0]) if isinstance(op[3], list) else op[3]
                out.append(["ok", store.set(op[1], op[2], v, op[4])])
            elif op[0] == "get":
                r = store.get_typed(op[1], op[2])
                if r is not None and isinstance(r[1], bytes):
                    r = [r[0], [r[1].hex()]]
                out.append(["ok", list(r) if r is not None else None])
            elif op[0] == "erase":
                out.append(["ok", store.erase(op[1], op[2])])
            elif op[0] == "keys":
                out.append(["ok", [list(x) for x in store.keys(op[1])]])
            elif op[0] == "namespaces":
                out.append(["ok", store.namespaces()])
        except ValueError:
            out.append(["ValueError"])
        except OSError as e:
            out.append(["OSError", e.errno])
    return out


def test_binding_in_host_firmware_matches_c_core(tmp_path):
    # Same operations through _iotutils.KVStore (in the firmware, on an image file) and through
    # the C core here (ctypes, in RAM): same results, and byte-identical partitions.
    cmd = _firmware_with_kvstore()
    ops = _binding_ops(random.Random(5), 250)
    img = tmp_path / "flash.bin"
    img.write_bytes(b"\x00" * 0x9000 + b"\xff" * 0x6000 + b"\x00" * 0x1000)
    (tmp_path / "ops.jsonl").write_text("".join(json.dumps(op) + "\n" for op in ops))
    script = _BINDING_SCRIPT % {"ops": str(tmp_path / "ops.jsonl"), "out": str(tmp_path / "out.jsonl"),
                                "img": str(img), "off": 0x9000, "size": 0x6000}
    r = subprocess.run(cmd + ["-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    got = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    flash = SimFlash(0x6000)
    expected = _ops_in_python(CStore(flash), ops)
    assert got == expected
    data = img.read_bytes()
    assert data[0x9000:0xF000] == bytes(flash.buf)
    assert data[:0x9000] == b"\x00" * 0x9000 and data[0xF000:] == b"\x00" * 0x1000


_KILL_SCRIPT = r"""
import sys, _iotutils
s = _iotutils.KVStore(%(img)r, 0, %(size)d)
i = s.get("cnt", "i") or 0
while True:
    i += 1
    s.set("cnt", "i", i)
    s.set("cnt", "blob", bytes([i %% 256]) * (i * 37 %% 3000))
    print(i)
"""


def test_sigkill_in_host_firmware_is_a_power_cut(tmp_path):
    # The firmware writes a counter and a blob in a loop and prints the counter once both
    # writes returned; killed at random moments, the image must hold that counter or the
    # next, and a blob matching one of them.
    cmd = _firmware_with_kvstore()
    import signal
    import time
    img = tmp_path / "flash.bin"
    img.write_bytes(b"\xff" * 0x6000)
    rnd = random.Random(3)
    last = 0
    images = []
    for round_ in range(6):
        p = subprocess.Popen(cmd + ["-c", _KILL_SCRIPT % {"img": str(img), "size": 0x6000}],
                             stdout=subprocess.PIPE, text=True, bufsize=1)
        target = last + rnd.randint(3, 40)
        printed = last
        deadline = time.time() + 60
        while printed < target and time.time() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            printed = int(line)
        time.sleep(rnd.random() * 0.01)
        p.send_signal(signal.SIGKILL)
        p.wait()
        for line in p.stdout.read().split():
            printed = int(line)
        p.stdout.close()
        assert printed >= target, "firmware stopped early"
        flash = SimFlash(data=img.read_bytes())
        s = CStore(flash)
        i = s.get("cnt", "i")
        assert i in (printed, printed + 1), (round_, i, printed)
        blob = s.get("cnt", "blob")
        assert blob in (bytes([j % 256]) * (j * 37 % 3000) for j in (i - 1, i)), round_
        images.append(bytes(flash.buf))
        last = i
    assert_idf_clean(tmp_path, images)   # when IDF_PATH is set
