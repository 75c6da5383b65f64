"""The C NVS core (c_modules/iotutils/kvstore.c over the host NVS engine nvs_*.c): the format and the API.

Checked against images made by Espressif's esp-idf-nvs-partition-gen, against a Python model
(random operation sequences), against the pure-Python twin (modules/iotutils/nvs.py) in both
directions, with the file backend of the host firmware, and - when IDF_PATH names an ESP-IDF
tree - with Espressif's own checker. Power cuts: test_nvs_c_powercut.py; the binding in the host
firmware: test_mod_kvstore.py; the harness (ctypes, simulated flash, ESP-IDF references): nvs_harness.py.
"""
import errno
import json
import os
import random
import subprocess
import zlib

import pytest

from nvs_harness import (BLOB, CHECKER, I8, I16, I32, I64, INT_RANGE, LIST_FN, PY, STR, U8, U16, U32, U64,
                         CStore, SimFlash, python_nvs, random_value, assert_idf_clean, dump, generate, idf_check, lib,
                         typed)


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
            value, t = random_value(rnd)
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


def test_c_writes_python_reads(tmp_path):
    nvs = python_nvs()
    rnd = random.Random(7)
    flash = SimFlash(0x8000)
    s = CStore(flash)
    model = {}
    for i in range(300):
        ns, key = rnd.choice(["x", "y"]), "k%d" % rnd.randrange(10)
        value, t = random_value(rnd)
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
    nvs = python_nvs()
    rnd = random.Random(8)
    flash = SimFlash(0x8000)
    p = nvs.NVS(flash)
    model = {}
    for i in range(300):
        ns, key = rnd.choice(["x", "y"]), "k%d" % rnd.randrange(10)
        value, t = random_value(rnd)
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
