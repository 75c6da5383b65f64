# Persistent typed variables (iotutils/persist.py) and the store (store.py, store_esp32nvs.py).
# Runs on CPython (pytest) and MicroPython (mp_runner.py).
import json

from mpunit import flash_writes, raises

from iotutils import nvs, persist, store
from iotutils.hal.flash import RamFlash, Region
from iotutils.persist import (PersistentBool, PersistentFloat, PersistentHex, PersistentInt, PersistentJSON,
                              PersistentList, PersistentRange, PersistentRGB, PersistentSet, PersistentStr)
from iotutils.store_esp32nvs import ESP32NVS

SIZE = 0x6000
_BUF = bytearray(SIZE)  # one image for every test (a 110 KB MicroPython heap fragments otherwise)


class WriteCounter(RamFlash):
    def __init__(self, keep=False):
        Region.__init__(self, SIZE, "nvs")
        if not keep:
            for off in range(0, SIZE, 4096):
                _BUF[off:off + 4096] = b"\xff" * 4096
        self.buf = _BUF
        self.strict = True
        self.writes = 0

    def write(self, off, data):
        self.writes += 1
        RamFlash.write(self, off, data)


def fresh():
    f = WriteCounter()
    store.use(nvs.NVS(f), "nvs")
    return f


def reboot(f):
    # a new store over the same flash: nothing cached survives
    g = WriteCounter(keep=True)
    store.use(nvs.NVS(g), "nvs")
    return g


def test_int_coercions_and_reboot():
    f = fresh()
    v = PersistentInt("boots", default=0, folder="stats")
    assert v.value == 0
    v.value = "42"
    assert v.value == 42
    assert v.set(3.9) == 3
    assert v.set(" -7 ") == -7
    assert v.set(True) == 1
    assert v.set("2.5") == 2
    e = raises(ValueError, v.set, "abc")
    assert "boots" in str(e)
    raises(ValueError, v.set, None)
    raises(ValueError, v.set, float("inf"))
    raises(ValueError, v.set, [1])
    assert v.value == 2  # a failed set changes nothing
    big = 2 ** 70
    assert v.set(big) == big
    reboot(f)
    assert PersistentInt("boots", default=0, folder="stats").value == big
    v.set(5)
    reboot(f)
    assert PersistentInt("boots", folder="stats").value == 5


def test_bool_coercions():
    fresh()
    b = PersistentBool("on")
    assert b.value is False
    for x in (True, 1, "true", "TRUE", "on", "On", "yes", "1", 1.0):
        assert b.set(x) is True, x
    for x in (False, 0, "false", "off", "No", "0", " no "):
        assert b.set(x) is False, x
    for x in ("maybe", 2, -1, None, "", [], 0.5):
        e = raises(ValueError, b.set, x)
        assert "on" in str(e)
    assert PersistentBool("d", default="yes").value is True


def test_float_str_coercions():
    fresh()
    f = PersistentFloat("temp")
    assert f.value == 0.0
    assert f.set("2.5") == 2.5
    assert f.set(3) == 3.0 and isinstance(f.value, float)
    raises(ValueError, f.set, "warm")
    raises(ValueError, f.set, float("nan"))
    raises(ValueError, f.set, None)
    s = PersistentStr("name", default="dev")
    assert s.value == "dev"
    assert s.set(12) == "12"
    assert s.set(b"bytes") == "bytes"
    raises(ValueError, s.set, None)
    raises(ValueError, s.set, b"\xff\xfe")
    for bad in ("abc", ("a", 1), ()):   # ("abc" meant "a", "b", "c"; a number failed in a join)
        assert raises(ValueError, PersistentStr, "pick", choices=bad).args[0].startswith("choices"), bad
    short = PersistentStr("short", max_length=3)
    assert short.set("abcdef") == "abc" and short.value == "abc"
    long = PersistentStr("long")
    text = "x" * 5000 + "é"
    assert long.set(text) == text
    assert long.value == text


def test_range_rgb_hex():
    fresh()
    r = PersistentRange("bri", 0, 100, default=50)
    assert r.value == 50
    assert r.set(150) == 100 and r.set(-5) == 0 and r.set("42.7") == 42
    raises(ValueError, r.set, "bright")
    raises(ValueError, PersistentRange, "bad", 10, 0)
    fr = PersistentRange("gain", 0.0, 1.0, default=2)
    assert fr.value == 1.0 and fr.set("0.25") == 0.25
    c = PersistentRGB("col")
    assert c.value == (0, 0, 0)
    assert c.set((255, 128, 0)) == (255, 128, 0)
    assert c.set("#ff8000") == (255, 128, 0)
    assert c.set("00ff10") == (0, 255, 16)
    assert c.set(0xFF8000) == (255, 128, 0)
    assert c.set([300, -2, "7"]) == (255, 0, 7)
    for bad in ("#ff80", "zzzzzz", (1, 2), -1, 0x1000000, None, True):
        e = raises(ValueError, c.set, bad)
        assert "col" in str(e)
    assert c.value == (255, 0, 7)
    h = PersistentHex("mask")
    assert h.set("0x1f") == 31 and str(h) == "0x1f"
    assert h.set("FF") == 255 and str(h) == "0xff"
    assert h.set(16) == 16
    raises(ValueError, h.set, "0xg")
    raises(ValueError, h.set, 1.5)
    raises(ValueError, h.set, "")


def test_json_list_set():
    fresh()
    j = PersistentJSON("cfg", default={"a": 1})
    assert j.value == {"a": 1}
    d = {"x": [1, 2], "y": None}
    j.value = d
    d["x"].append(3)  # the caller's object is not the stored one
    assert j.value == {"x": [1, 2], "y": None}
    got = j.value
    got["z"] = 1
    assert "z" not in j.value
    raises(ValueError, j.set, {"k": object()})
    raises(ValueError, j.set, {1, 2})
    raises(ValueError, j.set, {1: 2})
    raises(ValueError, j.set, [float("nan")])
    lst = PersistentList("l")
    assert lst.value == []
    assert lst.set((1, "a")) == [1, "a"]
    assert lst.set("[3, 4]") == [3, 4]
    raises(ValueError, lst.set, 5)
    raises(ValueError, lst.set, "not json")
    raises(ValueError, lst.set, {"a": 1})
    s = PersistentSet("tags")
    assert s.value == set()
    assert s.set(["b", "a", "b"]) == {"a", "b"}
    assert s.value == {"a", "b"} and isinstance(s.value, set)
    raises(ValueError, s.set, [[1]])
    raises(ValueError, s.set, 3)


def test_a_value_too_deep_or_too_long_is_a_valueerror_naming_the_variable():
    # too deep: the depth check refused it, and the message's repr() of the value raised RuntimeError
    fresh()
    lst, j = PersistentList("deep"), PersistentJSON("deepj")
    lst.set([1])
    deep = []
    cur = deep
    for _ in range(2100):   # (repr() gives up at about 2000 on MicroPython)
        cur.append([])
        cur = cur[0]
    for v in (lst, j):
        try:
            v.set(deep)
            raise AssertionError("accepted")
        except ValueError as e:
            assert v.name in str(e) and "nested" in str(e) and len(str(e)) < 300, str(e)
    assert lst.value == [1]
    # a long value is named in the message, cut short
    try:
        PersistentInt("n").set("x" * 5000)
        raise AssertionError("accepted")
    except ValueError as e:
        assert "n:" in str(e) and len(str(e)) < 300, str(e)


def test_the_stores_limits_are_valueerrors_naming_the_variable():
    # they said "blob too long: 30000 bytes" or "value too long for NVS"; the value stays
    fresh()
    big = PersistentInt("bigi")
    big.set(7)
    try:
        big.set(10 ** 4200)   # stored as text: 4201 bytes, over NVS's string limit
        raise AssertionError("accepted")
    except ValueError as e:
        assert "PersistentInt default/bigi: " in str(e) and "too long" in str(e), str(e)
    assert big.value == 7
    # a range stored as a 64-bit int must have bounds that fit
    try:
        PersistentRange("wide", -10 ** 40, 10 ** 40)
        raise AssertionError("accepted")
    except ValueError as e:
        assert "wide" in str(e) and "64 bits" in str(e), str(e)
    assert PersistentRange("wide", -2 ** 63, 2 ** 63 - 1).set(10 ** 30) == 2 ** 63 - 1


def test_names_and_folders_limited_to_15():
    fresh()
    PersistentInt("a" * 15, folder="f" * 15).value = 1
    for name, folder in (("a" * 16, "f"), ("a", "f" * 16), ("", "f"), ("a", ""), (None, "f"), ("a\x01", "f"), ("a\x7f", "f"), ("a", "f\x7f")):
        e = raises(ValueError, PersistentInt, name, folder=folder)
        assert "PersistentInt" in str(e)
    raises(ValueError, PersistentInt, "n", default="abc")  # a bad default names the variable too


def test_shared_cache_and_write_through():
    f = fresh()
    a = PersistentInt("n", folder="x")
    b = PersistentInt("n", folder="x")
    a.value = 5
    assert b.value == 5
    n = f.writes
    for _ in range(10):
        assert a.value == 5  # cached: no flash access needed
    assert f.writes == n
    b.value = 6
    assert a.value == 6
    # on flash as soon as set returns: a fresh store on the same flash sees it
    reboot(f)
    assert PersistentInt("n", folder="x").value == 6
    a.reset()
    assert a.value == 0 and b.value == 0
    assert PersistentInt("n", default=9, folder="x").value == 9


def test_reads_values_of_other_nvs_types():
    # what a provisioning image (CSV u8/i32/string) or another app version stored
    fresh()
    store.set("p", "int_str", "42")
    store.set("p", "int_u8", 7, nvs.U8)
    store.set("p", "bool_str", "on")
    store.set("p", "bool_i32", 1, nvs.I32)
    store.set("p", "float_int", 3, nvs.I32)
    store.set("p", "rgb_str", "#ff8000")
    store.set("p", "hex_str", "0x1f")
    store.set("p", "list_str", "[1, 2]")
    store.set("p", "json_int", 5, nvs.U16)
    store.set("p", "garbage", "not a number")
    assert PersistentInt("int_str", folder="p").value == 42
    assert PersistentInt("int_u8", folder="p").value == 7
    assert PersistentBool("bool_str", folder="p").value is True
    assert PersistentBool("bool_i32", folder="p").value is True
    assert PersistentFloat("float_int", folder="p").value == 3.0
    assert PersistentRGB("rgb_str", folder="p").value == (255, 128, 0)
    assert PersistentHex("hex_str", folder="p").value == 31
    assert PersistentList("list_str", folder="p").value == [1, 2]
    assert PersistentJSON("json_int", folder="p").value == 5
    assert PersistentInt("garbage", default=-1, folder="p").value == -1  # unreadable: the default


def test_listing_delete_factory_reset():
    fresh()
    PersistentInt("a", folder="one").value = 1
    PersistentStr("b", folder="one").value = "x"
    PersistentRGB("c", folder="two").value = "#010203"
    assert sorted(persist.folders()) == ["one", "two"]
    assert persist.list_folder("one") == {"a": 1, "b": "x"}
    assert persist.list_folder("two") == {"c": (1, 2, 3)}
    assert persist.delete("a", folder="one") is True
    assert persist.delete("a", folder="one") is False
    assert PersistentInt("a", default=4, folder="one").value == 4
    assert persist.list_folder("one") == {"b": "x"}
    persist.factory_reset()
    assert persist.folders() == []
    assert PersistentStr("b", folder="one").value == ""
    assert PersistentRGB("c", folder="two").value == (0, 0, 0)


def test_export_import_round_trip():
    f = fresh()
    PersistentInt("boots", folder="stats").value = 3
    PersistentFloat("t", folder="stats").value = 2.5
    PersistentSet("s", folder="stats").value = [3, 1]
    PersistentRange("bri", 0, 10, folder="lamp").value = 7
    PersistentRGB("col", folder="lamp").value = "#ff0000"
    PersistentHex("mask", folder="lamp").value = 255
    PersistentBool("on", folder="lamp").value = True
    PersistentJSON("j", folder="lamp").value = {"a": [1, None]}
    store.set("raw", "blob", b"\x00\x01")
    text = persist.export_json()
    data = json.loads(text)
    assert data["stats"]["boots"] == {"type": "int", "value": 3}
    assert data["stats"]["s"] == {"type": "set", "value": [1, 3]}
    assert data["lamp"]["bri"] == {"type": "range", "value": 7, "lo": 0, "hi": 10}
    assert data["lamp"]["col"] == {"type": "rgb", "value": [255, 0, 0]}
    assert data["raw"]["blob"]["type"] == "bytes"
    persist.factory_reset()
    reboot(f)
    assert persist.import_json(text) == 9
    assert PersistentFloat("t", folder="stats").value == 2.5
    assert PersistentSet("s", folder="stats").value == {1, 3}
    assert PersistentRGB("col", folder="lamp").value == (255, 0, 0)
    assert PersistentJSON("j", folder="lamp").value == {"a": [1, None]}
    assert store.get("raw", "blob") == b"\x00\x01"
    assert json.loads(persist.export_json()) == data
    # bytes are taken as an export writes them, nothing else: the decoder skipped what is not
    # base64, and "!!!!" was stored as b"", "a@b$c%d^" as three bytes of its letters
    for bad in ("!!!!", "a@b$c%d^", "AAE", "AA E=", "AAE=\n", "====", "AAAAA==="):
        try:
            persist.import_json({"raw": {"blob": {"type": "bytes", "value": bad}}})
            raise AssertionError("taken: %r" % bad)
        except ValueError as e:
            assert "blob" in str(e) and "base64" in str(e), str(e)
    assert store.get("raw", "blob") == b"\x00\x01"
    assert persist.import_json({"raw": {"blob": {"type": "bytes", "value": "AAEC"}}}) == 1
    assert store.get("raw", "blob") == b"\x00\x01\x02"


def test_import_validates_everything_first():
    fresh()
    PersistentInt("keep", folder="f").value = 1
    bad = {"f": {"keep": 2, "n": {"type": "int", "value": "abc"}, "ok": {"type": "str", "value": "x"},
                 "r": {"type": "range", "value": 5}, "toolongname_xxxx": 1, "t": {"type": "nope", "value": 1}},
           "g": 5}
    e = raises(ValueError, persist.import_json, json.dumps(bad))
    msg = str(e)
    for name in ("f/n", "f/r", "toolongname_xxxx", "f/t", "g"):
        assert name in msg, (name, msg)
    assert PersistentInt("keep", folder="f").value == 1  # nothing half-imported
    assert store.get("f", "ok") is None
    raises(ValueError, persist.import_json, "not json")
    raises(ValueError, persist.import_json, "[1, 2]")
    # untyped values are inferred
    assert persist.import_json('{"f": {"keep": 5, "name": "dev", "on": true, "l": [1]}}') == 4
    assert PersistentInt("keep", folder="f").value == 5
    assert PersistentBool("on", folder="f").value is True
    # a typed entry cut short, and null, are errors naming the entry (they were kept as text)
    cut = {"f": {"a": None, "b": {"type": "str"}, "c": {"value": 1}, "d": {"type": "int"}}}
    msg = str(raises(ValueError, persist.import_json, json.dumps(cut)))
    for name in ("f/a", "f/b", "f/c", "f/d"):
        assert name in msg, (name, msg)
    assert store.get("f", "b") is None and store.get("f", "a") is None
    assert persist.import_json('{"f": {"j": {"kind": "a plain object"}}}') == 1   # a JSON value still is one


def test_an_import_stores_a_declared_variable_by_its_own_type():
    # the import inferred a plain value's type, or took the entry's, for a variable the program had
    # declared: "abc" for a range was stored as text (and answered as imported), and the program then
    # read its default; a colour as the list [1, 2, 3] the same. The declared type decides, as an edit's
    f = fresh()
    bri = PersistentRange("bri", 0, 100, default=60, folder="lamp")
    rgb = PersistentRGB("rgb", default=(255, 180, 100), folder="lamp")
    on = PersistentBool("on", folder="lamp")
    bri.value, rgb.value, on.value = 77, (16, 32, 48), True
    for doc in ({"bri": "abc"}, {"bri": {"type": "str", "value": "abc"}}, {"on": "maybe"}, {"rgb": "nothex"},
                {"bri": {"type": "bytes", "value": "YWJj"}}, {"bri": {"type": "json", "value": [1]}},
                {"rgb": [1, 2]}, {"on": {"type": "range", "value": 1, "lo": 0, "hi": 1}}):
        e = raises(ValueError, persist.import_json, json.dumps({"lamp": doc}))
        assert "lamp/" + list(doc)[0] in str(e), (doc, e)
        assert (bri.value, rgb.value, on.value) == (77, (16, 32, 48), True), doc
    # a number or text, as an export types a value no variable declared, is coerced by the type
    doc = {"rgb": [1, 2, 3], "bri": {"type": "int", "value": 300}, "on": {"type": "str", "value": "false"}}
    assert persist.import_json(json.dumps({"lamp": doc})) == 3
    assert (bri.value, rgb.value, on.value) == (100, (1, 2, 3), False)
    reboot(f)   # stored as the declared types store them: read back as such
    assert PersistentRange("bri", 0, 100, default=60, folder="lamp").value == 100
    assert PersistentRGB("rgb", default=(255, 180, 100), folder="lamp").value == (1, 2, 3)
    assert PersistentBool("on", default=True, folder="lamp").value is False


def test_a_range_s_bad_bounds_are_said_plainly():
    # (the import's "lo": "a" gave Python's own words: "'>' not supported between ...")
    fresh()
    for lo, hi, words in (("a", 5, "must be numbers"), (1, [2], "must be numbers"), (9, 1, "above hi")):
        e = raises(ValueError, PersistentRange, "r", lo, hi)
        assert words in str(e) and "PersistentRange 'r'" in str(e), e
    assert PersistentRange("r", "1", "9").hi == 9   # (text that is a number still is one)


def test_encode_table_matches_variables():
    fresh()
    assert persist.encode("bool", "yes") == (nvs.U8, 1)
    assert persist.encode("int", "42") == (nvs.I64, 42)
    assert persist.encode("float", 2.5) == (nvs.STR, "2.5")
    assert persist.encode("rgb", "#ff8000") == (nvs.U32, 0xFF8000)
    assert persist.encode("range", 500, lo=0, hi=100) == (nvs.I64, 100)
    assert persist.encode("list", [1, 2]) == (nvs.STR, "[1,2]")
    raises(ValueError, persist.encode, "int", "x")
    raises(ValueError, persist.encode, "what", 1)


def test_threads_share_one_store():
    try:
        import _thread
    except ImportError:
        return
    import time
    fresh()
    done = []

    def worker(k):
        v = PersistentInt("w%d" % k, folder="thr")
        for i in range(20):
            v.value = i
        done.append(k)

    for k in range(3):
        _thread.start_new_thread(worker, (k,))
    t0 = time.time()
    while len(done) < 3 and time.time() - t0 < 20:
        time.sleep(0.01)
    assert len(done) == 3
    for k in range(3):
        assert PersistentInt("w%d" % k, folder="thr").value == 19
    assert sorted(store.keys("thr")) == ["w0", "w1", "w2"]


class FakeEsp32NVS:
    """esp32.NVS as stock MicroPython has it: i32 + blobs, no listing, errors as OSError."""
    data = {}

    def __init__(self, ns):
        self.ns = ns

    def set_blob(self, key, value):
        assert len(key) <= 15 and len(self.ns) <= 15
        self.data[(self.ns, key)] = bytes(value)

    def get_blob(self, key, buf):
        v = self.data.get((self.ns, key))
        if v is None:
            raise OSError(-0x1102)
        if len(buf) < len(v):
            raise OSError(-0x1107)
        buf[:len(v)] = v
        return len(v)

    def erase_key(self, key):
        if (self.ns, key) not in self.data:
            raise OSError(-0x1102)
        del self.data[(self.ns, key)]

    def commit(self):
        pass


def test_esp32nvs_backend_same_behaviour():
    FakeEsp32NVS.data = {}
    store.use(ESP32NVS(FakeEsp32NVS), "esp32nvs")
    v = PersistentInt("boots", folder="stats")
    v.value = "41"
    assert v.set(42) == 42
    PersistentStr("name", folder="stats").value = "x" * 300
    PersistentRGB("col", folder="lamp").value = "#102030"
    store.set("raw", "b", b"\x00\xff")
    store.use(ESP32NVS(FakeEsp32NVS), "esp32nvs")  # reboot
    assert PersistentInt("boots", folder="stats").value == 42
    assert PersistentStr("name", folder="stats").value == "x" * 300
    assert PersistentRGB("col", folder="lamp").value == (16, 32, 48)
    assert store.get("raw", "b") == b"\x00\xff"
    assert sorted(persist.folders()) == ["lamp", "raw", "stats"]
    assert sorted(store.keys("stats")) == ["boots", "name"]
    assert persist.delete("boots", folder="stats") is True
    assert store.keys("stats") == ["name"]
    persist.factory_reset()
    assert persist.folders() == [] and store.get("raw", "b") is None


def test_full_store_raises_oserror_and_keeps_values():
    fresh()
    keep = PersistentStr("keep", folder="full")
    keep.value = "safe"
    err = None
    filler = PersistentStr("last", folder="full")
    try:
        for i in range(400):
            store.set("full", "s%d" % i, "x" * 200)
    except OSError:
        pass
    try:
        filler.value = "y" * 300
    except OSError as e:  # nvs.NVSError, like _iotutils.KVStore's ENOSPC
        err = e
    assert err is not None
    assert keep.value == "safe"
    persist.delete_folder("full")
    assert PersistentStr("keep", default="gone", folder="full").value == "gone"
    keep.value = "again"
    assert keep.value == "again"


def test_kvstore_backend_glue():
    # _iotutils.KVStore(path, offset, size) on the host firmware: stand in for it with nvs.NVS over the file
    from mpunit import rmtree, tempdir
    from iotutils import hal
    from iotutils.hal.flash import FileFlash
    d = tempdir("kv")
    path = d + "/flash.bin"
    with open(path, "wb") as f:
        for _ in range((0x9000 + SIZE) // 4096):
            f.write(b"\xff" * 4096)
    calls = []

    class FakeKV(nvs.NVS):
        def __init__(self, p, off, size):
            calls.append((p, off, size))
            self.file = FileFlash(p, off, size, "nvs")
            nvs.NVS.__init__(self, self.file)

    saved = hal.config
    hal.config = lambda: {"flash": path, "partitions": [["nvs", "data", "nvs", 0x9000, SIZE]]}
    try:
        b, name = store._make("kvstore", FakeKV)
    finally:
        hal.config = saved
    assert calls == [(path, 0x9000, SIZE)] and name == "kvstore"
    store.use(b, name)
    PersistentInt("boots", folder="kv").value = 3
    assert store.BACKEND == "kvstore" and store.get("kv", "boots") == 3
    b.file.close()
    f2 = FileFlash(path, 0x9000, SIZE, "nvs")
    assert nvs.NVS(f2).get("kv", "boots") == 3  # in the nvs partition of the image file
    f2.close()
    rmtree(d)


def test_export_leaves_secrets_out_and_an_empty_folder_list_means_none():
    fresh()
    PersistentStr("pwhash", folder="admin").value = "pbkdf2_sha256$1$00$ff"
    PersistentJSON("networks", folder="wifi").value = [{"ssid": "home", "password": "wifi-secret"}]
    PersistentStr("apsalt", folder="wifi").value = "salt-secret"
    # a freshly set-up device: only secret folders. The admin page asks for "every folder that is
    # not secret", which is none: that must be no folder, not every folder
    assert json.loads(persist.export_json(only=[])) == {}
    assert json.loads(persist.export_json()) == {}
    PersistentJSON("users", folder="alexa").value = [["echo-user-key", "echo"]]
    PersistentBool("pairing", folder="alexa").value = False
    persist.secret("app", "token")
    PersistentStr("token", folder="app").value = "app-secret"
    PersistentInt("n", folder="app").value = 3
    text = persist.export_json()
    for s in ("pbkdf2", "wifi-secret", "salt-secret", "echo-user-key", "app-secret"):
        assert s not in text, (s, text)
    assert json.loads(text) == {"alexa": {"pairing": {"type": "bool", "value": False}},
                                "app": {"n": {"type": "int", "value": 3}}}
    assert "wifi-secret" in persist.export_json(secrets=True)  # for a tool that must have them
    assert persist.is_secret("wifi") and persist.is_secret("alexa", "users") and not persist.is_secret("alexa")


def _values(names):
    return {n: store.get("imp", n) for n in names}


def _failing_at(k, exc, persistent=False):
    count = [0]

    def fault(op, name, off, n):
        if op == "read":
            return
        count[0] += 1
        if count[0] == k or (persistent and count[0] >= k):
            raise exc(28) if exc is OSError else exc()
    return fault, count


def _cut_at_every_write(steps, setup, op, now):
    """The power fails at each flash write of op() in turn (the flash takes no more writes after
    it), the device reboots: what now() reads after each reboot. The journal is always gone."""
    seen = []
    for k in range(1, steps + 2):
        f = setup()
        fault, _ = _failing_at(k, OSError, persistent=True)
        Region.fault = fault
        try:
            op()
        except OSError:
            pass
        finally:
            Region.fault = None
        reboot(f)
        seen.append(now())
        assert store.keys("iotutils") == [], k
    return seen


def _fail_at_every_write(steps, setup, op, now, exc):
    """op() with its k-th flash write failing (exc), for each k: [(op raised, what now() reads)]."""
    out = []
    for k in range(1, steps + 1):
        setup()
        fault, _ = _failing_at(k, exc)
        Region.fault = fault
        try:
            op()
            failed = False
        except exc:
            failed = True
        finally:
            Region.fault = None
        out.append((failed, now()))
    return out


def test_import_is_all_or_nothing_at_every_failing_step():
    """A MemoryError or OSError at every flash write or erase of an import: afterwards every value
    is the old one (rolled back at once) - never some old and some new."""
    names = ["v%02d" % i for i in range(12)]
    text = json.dumps({"imp": {n: {"type": "int", "value": 1000 + i} for i, n in enumerate(names)}})

    def setup():
        fresh()
        for n in names[:6]:  # half of them exist before (two of those as the import has them), half are new
            store.set("imp", n, 7, nvs.I64)
        for i in (1, 4):
            store.set("imp", names[i], 1000 + i, nvs.I64)
    setup()
    old = _values(names)
    new = {n: 1000 + i for i, n in enumerate(names)}
    # how many flash writes a clean import takes
    fault, count = _failing_at(10 ** 6, MemoryError)
    Region.fault = fault
    try:
        assert persist.import_json(text) == 12
    finally:
        Region.fault = None
    steps = count[0]
    assert steps > 12, steps
    for exc in (MemoryError, OSError):
        for k in range(1, steps + 1):
            setup()
            fault, _ = _failing_at(k, exc)
            Region.fault = fault
            try:
                persist.import_json(text)
                failed = False
            except exc:
                failed = True
            finally:
                Region.fault = None
            got = _values(names)
            # failed: every value is the old one; done (the fault hit the clean-up after the
            # import was complete): every value is the new one
            assert got == (old if failed else new), (exc.__name__, k, failed)
            persist.list_folder("imp")  # any later access clears what the fault left of the journal
            assert store.keys("iotutils") == [], k


def test_a_value_too_long_for_the_store_is_named_and_nothing_is_written():
    """The store's own limit (an NVS blob spans at most the partition's pages) is found at the write;
    the import and set_all then name the entry, as for any bad entry, and write none of the others
    (it was a bare "blob too long: N bytes")."""
    store.use(nvs.NVS(RamFlash(0x3000)), "nvs")   # 3 pages: a blob spans at most 2, 8000 bytes
    store.set("big", "kept", 7, nvs.I64)
    huge = {"k": "a" * 8100}
    text = json.dumps({"big": {"kept": 8, "new": 9, "huge": {"type": "json", "value": huge}}})
    e = raises(ValueError, persist.import_json, text)
    assert e.args[0].startswith("import: bad entries: big/huge: ") and "too long" in e.args[0], e.args
    assert store.get("big", "kept") == 7 and store.get("big", "new") is None
    n = PersistentInt("n", default=1, folder="big2")
    e = raises(ValueError, persist.set_all, [(n, 5), (PersistentJSON("j", folder="big2"), huge)])
    assert e.args[0].startswith("big2/j: ") and "too long" in e.args[0], e.args
    assert n.value == 1


def test_import_cut_short_is_rolled_back_at_the_next_boot():
    """The flash stops taking writes (a power cut) at every step: after a reboot the values are all
    old or all new."""
    names = ["w%02d" % i for i in range(8)]
    text = json.dumps({"imp": {n: 2000 + i for i, n in enumerate(names)}})
    new = {n: 2000 + i for i, n in enumerate(names)}

    def setup():
        f = fresh()
        for n in names[:3]:
            store.set("imp", n, 5, nvs.I64)
        return f
    setup()
    fault, count = _failing_at(10 ** 6, OSError)
    Region.fault = fault
    try:
        persist.import_json(text)
    finally:
        Region.fault = None
    steps = count[0]
    seen_new = seen_old = 0
    for k in range(1, steps + 2):
        f = setup()
        old = _values(names)
        fault, _ = _failing_at(k, OSError, persistent=True)
        Region.fault = fault
        try:
            persist.import_json(text)
        except OSError:
            pass
        finally:
            Region.fault = None
        reboot(f)
        PersistentInt("w00", folder="imp").value  # noqa: B018 - the first access after the boot
        got = _values(names)
        assert got in (old, new), (k, got)
        seen_new += got == new
        seen_old += got == old
        assert store.keys("iotutils") == [], k
    assert seen_new and seen_old, (seen_new, seen_old)


def test_the_export_import_and_bulk_changes_load_at_their_first_use():
    # a device that only reads, sets and deletes its variables does not hold persist_io's code
    import sys

    from iotutils import _compat
    fresh()
    _compat.unload("iotutils.persist_io")
    v = PersistentInt("lazyio", folder="lazy", default=1)
    v.value = 3
    assert v.value == 3 and persist.delete("lazyio", "lazy") and v.value == 1
    assert "iotutils.persist_io" not in sys.modules
    persist.set_all([(v, 4)])
    assert "iotutils.persist_io" in sys.modules and v.value == 4
    # the folders' listings too (the admin page's)
    _compat.unload("iotutils.persist_io")
    assert persist.list_folder("lazy") == {"lazyio": 4} and "iotutils.persist_io" in sys.modules
    _compat.unload("iotutils.persist_io")
    assert "lazy" in persist.declared_folders() and "iotutils.persist_io" in sys.modules
    from iotutils.persist import import_json, make   # (from-imports ask the module's __getattr__)
    assert make("int", "lazy2", "lazy").value == 0 and import_json({"lazy": {"lazy2": 5}}) == 1


def test_set_all_takes_variable_value_pairs_only():
    fresh()
    port = PersistentInt("port", folder="mq2", default=1)
    for bad in ([(None, 1)], [("port", 2)], [port], [(port, 2, 3)], [5]):
        e = raises(ValueError, persist.set_all, bad)
        assert e.args[0].startswith("set_all: "), (bad, e.args)
    # a bad pair anywhere: nothing written
    assert raises(ValueError, persist.set_all, [(port, 5), (None, 1)]) and port.value == 1
    persist.set_all([(port, 5)])
    assert port.value == 5


def test_set_all_is_all_or_nothing_at_every_failing_step_and_across_a_power_cut():
    """set_all() of values and a reset: a MemoryError or OSError at every flash write leaves all
    the old values (or, past the last write, all the new ones); a power cut at every step leaves
    old or new after the reboot, never a mix."""
    url = PersistentStr("url", folder="mq")
    user = PersistentStr("user", folder="mq")
    pw = PersistentStr("password", folder="mq")
    port = PersistentInt("port", folder="mq", default=1883)

    def setup():
        f = fresh()
        url.value, user.value, pw.value, port.value = "mqtts://a", "ua", "pa", 8883
        return f

    def now():
        return (url.value, user.value, pw.value, port.value, store.get("mq", "password"))
    change = [(url, "mqtt://b"), (user, "ub"), (pw, persist.RESET), (port, "1884")]
    setup()
    old = now()
    steps = flash_writes(persist.set_all, change)
    new = now()
    assert new == ("mqtt://b", "ub", "", 1884, None), new
    assert steps > 4, steps
    # a bad value: nothing written, the variable named
    setup()
    assert "port" in str(raises(ValueError, persist.set_all, [(url, "mqtt://c"), (port, "not a number")]))
    assert now() == old
    for exc in (MemoryError, OSError):
        for k, (failed, got) in enumerate(_fail_at_every_write(steps, setup, lambda: persist.set_all(change),
                                                               now, exc)):
            assert got == (old if failed else new), (exc.__name__, k, failed, got)
    got = _cut_at_every_write(steps, setup, lambda: persist.set_all(change), now)
    assert all(g in (old, new) for g in got) and old in got and new in got, got


def test_a_factory_reset_cut_short_is_finished_at_the_next_boot_or_access():
    """A power cut at every flash write of a factory reset: after the reboot every folder is either
    all there (the cut came before the reset began) or all gone, never half (a device that kept
    its Wi-Fi network and lost its admin password would lock its owner out). A MemoryError or
    OSError part-way: the next access finishes it."""
    folders = ("admin", "wifi", "mqtt", "lamp", "zz")

    def setup():
        f = fresh()
        for folder in folders:
            for j in range(3):
                PersistentStr("v%d" % j, folder=folder).value = "%s-%d" % (folder, j)
        return f

    def now():
        return {folder: persist.list_folder(folder) for folder in folders}
    setup()
    full = now()
    gone = {folder: {} for folder in folders}
    steps = flash_writes(persist.factory_reset)
    assert now() == gone
    assert steps > len(folders), steps
    got = _cut_at_every_write(steps, setup, persist.factory_reset, now)
    assert all(g in (full, gone) for g in got) and full in got and gone in got, got
    for exc in (MemoryError, OSError):
        got = [g for _, g in _fail_at_every_write(steps, setup, persist.factory_reset, now, exc)]
        assert all(g in (full, gone) for g in got), (exc.__name__, got)
        assert store.keys("iotutils") == []
        # all there only when the failure hit the mark's own first writes (nothing had begun)
        finished = [g == gone for g in got]
        assert finished == sorted(finished) and finished.count(True) > steps // 2, finished


def test_long_strings_rewritten_among_other_values_never_run_out_of_space():
    """Strings of up to 4 KB and a JSON value rewritten again and again on the board's 24 KB
    partition with about 9 KB in use: no write fails. An NVS string must fit in one page, so while
    text up to 3999 bytes was stored as one, each rewrite needed a page with that much room at
    once, and the store ran out of space within a few dozen writes (a review's app: about ten)."""
    fresh()
    vs = [PersistentStr("v%d" % k, folder="long") for k in range(6)]
    j = PersistentJSON("j", folder="long2")
    sizes = [0] * 6
    seed = [12345]

    def rnd(n):   # the same numbers on every runtime
        seed[0] = (seed[0] * 1103515245 + 12345) & 0x7FFFFFFF
        return seed[0] % n
    for i in range(300):
        k = rnd(6)
        n = rnd(4000)
        n = min(n, 9000 - (sum(sizes) - sizes[k]))
        vs[k].value = "x" * n
        sizes[k] = n
        if i % 3 == 0:
            j.value = {"i": i, "pad": "y" * rnd(1500)}
        if i % 10 == 0:   # the review's: just under 4000 bytes
            s_near = min(3985 + rnd(15), 9000 - (sum(sizes) - sizes[0]))
            vs[0].value = "z" * s_near
            sizes[0] = s_near
    assert [len(v.value) for v in vs] == sizes


def test_an_import_of_what_is_stored_writes_nothing_and_a_mixed_one_only_the_changes():
    """A settings file imported back onto its device: the values stored as they are take no room in
    the journal and no flash write (a store of 250 values could not be restored onto itself: the
    journal needed room for every value twice)."""
    f = fresh()
    for i in range(40):
        PersistentInt("n%02d" % i, folder="many").value = i
    PersistentStr("s", folder="many").value = "text"
    store.set("many", "blob", b"\x00\x01")
    text = persist.export_json()
    f.writes = 0
    assert persist.import_json(text) == 42
    assert f.writes == 0
    data = json.loads(text)
    data["many"]["n07"]["value"] = 77
    persist.import_json(json.dumps(data))
    one = f.writes
    assert 0 < one
    assert PersistentInt("n07", folder="many").value == 77 and PersistentInt("n08", folder="many").value == 8
    for i in range(40):
        data["many"]["n%02d" % i]["value"] = 100 + i
    f.writes = 0
    persist.import_json(json.dumps(data))
    assert f.writes > 4 * one, (f.writes, one)   # forty changed values: their journal and writes
    assert store.get("many", "blob") == b"\x00\x01" and store.get("many", "s") == "text"
    assert store.keys("iotutils") == []


def test_export_in_pieces_is_the_same_text_and_reads_as_it_goes():
    fresh()
    assert "".join(persist.export_pieces()) == "{}"
    for i in range(60):
        PersistentStr("s%02d" % i, folder="a").value = "value %d" % i
    PersistentInt("n", folder="b").value = 5
    PersistentStr("pwhash", folder="admin").value = "pbkdf2-secret"
    pieces = list(persist.export_pieces(size=256))
    assert len(pieces) > 8
    assert all(len(p) < 256 + 64 for p in pieces), [len(p) for p in pieces]
    text = "".join(pieces)
    assert text == persist.export_json()
    data = json.loads(text)
    assert sorted(data) == ["a", "b"] and len(data["a"]) == 60 and "pbkdf2" not in text
    assert data["a"]["s59"] == {"type": "str", "value": "value 59"}
    assert json.loads(persist.export_json(only=["b", "b", "a"])) == {"b": data["b"], "a": data["a"]}
    assert json.loads(persist.export_json(only=["nothing"])) == {}
    assert persist.export_entry("b", "n") == {"type": "int", "value": 5}
    assert persist.export_entry("admin", "pwhash") is None
    assert persist.export_entry("b", "missing") is None
    # a generator: the first piece is there before the last value was read
    g = persist.export_pieces(size=64)
    first = next(g)
    assert first.startswith('{"a": {') and len(first) < 200
    g.close()


def test_a_long_value_is_exported_a_slice_at_a_time():
    """A 15,000-character text (imported with 200) made the export fail part-way: its whole JSON
    (base64 for a blob, or the escaped text) was one piece, over 20 KB at once."""
    from binascii import a2b_base64, b2a_base64
    fresh()
    text = 'y"\u00e9\\' * 500   # 2,000 characters to escape (5,500 of JSON)
    blob = bytes(range(256)) * 8
    persist.import_json({"f": {"x": {"type": "str", "value": text}, "b": {"type": "bytes",
                                                                         "value": b2a_base64(blob).decode().strip()},
                               "n": 1}})
    PersistentStr("d", folder="g").value = text   # declared: read through its variable
    pieces = list(persist.export_pieces(size=512))
    assert max(len(p) for p in pieces) < 1600, sorted(len(p) for p in pieces)[-3:]   # (the text alone: 5,500)
    data = json.loads("".join(pieces))
    assert data["f"]["n"] == {"type": "int", "value": 1} and data["g"]["d"] == {"type": "str", "value": text}
    assert a2b_base64(data["f"]["b"]["value"]) == blob and data["f"]["b"]["type"] == "bytes"
    # undeclared: its blob is text again (it was the blob's base64, and an edit of it then text
    # taken for base64); bytes that are no text stay bytes
    assert data["f"]["x"] == {"type": "str", "value": text}


def test_the_journal_folder_is_the_one_persist_hides():
    # persist names the journal's folder itself, so that it need not load the journal's code
    # (persist's name for it is a const(), folded away on MicroPython: what it hides is the check)
    from iotutils import journal
    assert persist.is_secret(journal.FOLDER) and persist.is_secret(journal.FOLDER, "import")
    assert not persist.is_secret(journal.FOLDER + "x")


def test_the_less_common_kinds_load_at_their_first_use():
    # list, set, RGB and hex live in persist_kinds.py, loaded when a program first asks for one: a
    # device whose variables are all scalars never holds their classes (about 2 KB of heap)
    import sys

    import iotutils
    from iotutils import _compat

    if _compat.KEEP_LOADED:
        from mpunit import SkipTest
        raise SkipTest("the simulator's heap model keeps what it loaded")
    fresh()
    first = sys.modules.get("iotutils.persist_kinds")
    _compat.unload("iotutils.persist_kinds")
    try:
        PersistentBool("lb", folder="lazy").value = True
        assert persist.make("int", "li", folder="lazy").set("7") == 7
        assert persist.make("range", "lr", folder="lazy", lo=0, hi=3).set(9) == 3
        persist.PersistentStr("ls", folder="lazy").value = "x"
        assert persist.kind_class("float") is PersistentFloat
        assert "iotutils.persist_kinds" not in sys.modules
        rgb = persist.make("rgb", "lc", folder="lazy")
        kinds = sys.modules["iotutils.persist_kinds"]
        assert type(rgb) is kinds.PersistentRGB and persist.PersistentRGB is kinds.PersistentRGB
        assert persist.kind_class("rgb") is kinds.PersistentRGB
        from iotutils.persist import PersistentSet as lazy_set
        assert lazy_set is kinds.PersistentSet and persist.kind_class("hex") is kinds.PersistentHex
        assert rgb.set("#ff8000") == (255, 128, 0) and persist.list_folder("lazy")["lc"] == (255, 128, 0)
        assert persist.kind_class("nothing") is None
        raises(AttributeError, getattr, persist, "PersistentNothing")
        raises(ValueError, persist.make, "nothing", "ln", folder="lazy")
    finally:
        if first is not None:
            sys.modules["iotutils.persist_kinds"] = first
            iotutils.persist_kinds = first
