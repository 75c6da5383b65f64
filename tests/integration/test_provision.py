"""Provisioning without flashing firmware: scripts/nvs_provision.py and scripts/nvs_dump.py.

Settings (JSON or CSV) become an NVS image made by esp-idf-nvs-partition-gen; a simulated device
whose flash holds that image at the nvs offset of partitions.csv sees the values through the
Persistent* API; a dump of the device's flash after it changed values shows them as typed JSON,
and edits made with nvs_dump reach the device at its next boot.
"""
import base64
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from simdev import SimDevice

import nvs_dump
import nvs_provision
from iotutils import nvs
from iotutils.hal import layout
from iotutils.hal.flash import RamFlash
from test_nvs_py import idf_check

PROVISION = os.path.join(ROOT, "scripts", "nvs_provision.py")
DUMP = os.path.join(ROOT, "scripts", "nvs_dump.py")
NVS_OFF, NVS_SIZE = [(p[3], p[4]) for p in layout.DEFAULT if p[0] == "nvs"][0]

SETTINGS = {
    "device_name": "Desk lamp",
    "wifi_networks": [{"ssid": "home", "password": "secret-pass"}, {"ssid": "cafe"}],
    "admin_password": "correct horse",
    "lamp": {
        "on": True,
        "bri": {"type": "range", "value": 170, "lo": 0, "hi": 100},
        "col": {"type": "rgb", "value": "#ff8000"},
        "mask": {"type": "hex", "value": "0x1f"},
        "gain": 0.75,
        "tags": {"type": "set", "value": ["b", "a"]},
        "cfg": {"type": "json", "value": {"modes": [1, 2], "note": "a, \"quoted\" text"}},
        "boots": {"type": "u8", "value": 7},
        "key": {"type": "bytes", "value": base64.b64encode(b"\x00\x01secret\xff").decode()},
    },
}

APP = r'''
import json, time
from iotutils import store
from iotutils.persist import (PersistentBool, PersistentInt, PersistentFloat, PersistentStr, PersistentJSON,
    PersistentList, PersistentSet, PersistentRange, PersistentRGB, PersistentHex)
v = {
    "name": PersistentStr("name", folder="device").value,
    "nets": PersistentJSON("networks", default=[], folder="wifi").value,
    "pwhash": PersistentStr("pwhash", folder="admin").value,
    "on": PersistentBool("on", folder="lamp").value,
    "bri": PersistentRange("bri", 0, 100, default=50, folder="lamp").value,
    "col": PersistentRGB("col", folder="lamp").value,
    "mask": str(PersistentHex("mask", folder="lamp")),
    "gain": PersistentFloat("gain", folder="lamp").value,
    "tags": sorted(PersistentSet("tags", folder="lamp").value),
    "cfg": PersistentJSON("cfg", folder="lamp").value,
    "boots": PersistentInt("boots", folder="lamp").value,
    "key": list(store.get("lamp", "key") or b""),
    "extra": PersistentStr("extra", default="none", folder="lamp").value,
}
print("VALUES " + json.dumps(v))
b = PersistentInt("boots", folder="lamp")
b.value = b.value + 1
PersistentStr("extra", folder="lamp").value = "written by the device"
print("UPDATED")
while True:
    time.sleep(1)
'''


def _flash_with(state, image):
    os.makedirs(os.path.join(state, "fs"), exist_ok=True)
    path = os.path.join(state, "flash.bin")
    with open(path, "wb") as f:
        f.write(b"\xff" * layout.FLASH_SIZE)
        f.seek(NVS_OFF)
        f.write(image)
    return path


def _run(cmd, **kw):
    return subprocess.run([sys.executable] + cmd, capture_output=True, text=True, timeout=120, **kw)


def _boot_values(tmp_path, state):
    app = tmp_path / "prov_app.py"
    app.write_text(APP)
    dev = SimDevice(state, app=str(app))
    try:
        dev.start()
        m = dev.wait_line(r"^VALUES (.*)$", 30)
        dev.wait_line(r"^UPDATED$", 30)
    finally:
        dev.stop()
    return json.loads(m.group(1))


def test_json_settings_to_image_to_device(tmp_path):
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps(SETTINGS))
    image = tmp_path / "nvs.bin"
    out = _run([PROVISION, str(settings), "-o", str(image), "--port", "/dev/ttyUSB0"])
    assert out.returncode == 0, out.stderr
    assert "esptool --chip esp32 --port /dev/ttyUSB0 write-flash 0x9000 %s" % image in out.stdout
    data = image.read_bytes()
    assert len(data) == NVS_SIZE
    idf_check(data, "provisioned image")

    state = str(tmp_path / "dev")
    _flash_with(state, data)
    v = _boot_values(tmp_path, state)
    assert v["name"] == "Desk lamp"
    assert v["nets"] == [{"ssid": "home", "pw": "secret-pass", "hidden": False},
                         {"ssid": "cafe", "pw": "", "hidden": False}]
    from iotutils.auth import verify_password
    assert verify_password("correct horse", v["pwhash"]) and not verify_password("wrong", v["pwhash"])
    assert v["on"] is True and v["bri"] == 100 and v["col"] == [255, 128, 0] and v["mask"] == "0x1f"
    assert v["gain"] == 0.75 and v["tags"] == ["a", "b"]
    assert v["cfg"] == {"modes": [1, 2], "note": "a, \"quoted\" text"}
    assert v["boots"] == 7 and bytes(v["key"]) == b"\x00\x01secret\xff" and v["extra"] == "none"

    # the device changed values: dump its whole flash image as typed JSON
    flash = os.path.join(state, "flash.bin")
    out = _run([DUMP, flash])
    assert out.returncode == 0, out.stderr
    dumped = json.loads(out.stdout)
    assert dumped["lamp"]["boots"] == {"type": "i64", "value": 8}  # rewritten as PersistentInt stores ints
    assert dumped["lamp"]["extra"] == {"type": "string", "value": "written by the device"}
    assert dumped["lamp"]["col"] == {"type": "u32", "value": 0xFF8000}
    assert dumped["device"]["name"]["value"] == "Desk lamp"

    # edit the image offline; the device sees the edits at its next boot
    edits = tmp_path / "edits.json"
    edits.write_text(json.dumps({"lamp": {"boots": {"type": "u8", "value": 41}, "extra": None,
                                          "gain": "0.5"},
                                 "device": {"name": "Porch"}}))
    out = _run([DUMP, flash, "--set", str(edits)])
    assert out.returncode == 0, out.stderr
    assert "applied 4 edits" in out.stderr
    v = _boot_values(tmp_path, state)
    assert v["boots"] == 41 and v["extra"] == "none" and v["gain"] == 0.5 and v["name"] == "Porch"
    with open(flash, "rb") as f:
        f.seek(NVS_OFF)
        idf_check(f.read(NVS_SIZE), "device flash after edits and device writes")


def test_csv_settings(tmp_path):
    settings = tmp_path / "s.csv"
    settings.write_text('folder,name,type,value\n'
                        'lamp,on,bool,yes\n'
                        'lamp,name,,"Kitchen, left"\n'
                        'lamp,col,rgb,"[1, 2, 3]"\n'
                        'stats,boots,i32,-5\n'
                        'stats,list,list,"[1, ""two""]"\n')
    image = tmp_path / "nvs.bin"
    out = _run([PROVISION, str(settings), "-o", str(image)])
    assert out.returncode == 0, out.stderr
    f = RamFlash(NVS_SIZE)
    f.buf[:] = image.read_bytes()
    s = nvs.NVS(f)
    assert s.get_typed("lamp", "on") == (nvs.U8, 1)
    assert s.get_typed("lamp", "name") == (nvs.STR, "Kitchen, left")
    assert s.get_typed("lamp", "col") == (nvs.U32, 0x010203)
    assert s.get_typed("stats", "boots") == (nvs.I32, -5)
    assert s.get("stats", "list") == '[1,"two"]'


def test_bad_settings_name_the_entry_and_write_nothing(tmp_path):
    bad = {"lamp": {"bri": {"type": "range", "value": 5}, "col": {"type": "rgb", "value": "#12"},
                    "n" * 16: 1, "ok": 1, "u": {"type": "u8", "value": 300}},
           "wifi_networks": [{"ssid": "x", "password": "p" * 64}], "admin_password": "short"}
    settings = tmp_path / "bad.json"
    image = tmp_path / "nvs.bin"
    settings.write_text(json.dumps(bad))
    out = _run([PROVISION, str(settings), "-o", str(image)])
    assert out.returncode == 2
    assert "wifi_networks x" in out.stderr
    assert not image.exists()
    del bad["wifi_networks"]
    settings.write_text(json.dumps(bad))
    out = _run([PROVISION, str(settings), "-o", str(image)])
    assert out.returncode == 2 and "admin_password" in out.stderr
    del bad["admin_password"]
    settings.write_text(json.dumps(bad))
    out = _run([PROVISION, str(settings), "-o", str(image)])
    assert out.returncode == 2
    for name in ("lamp/bri", "lamp/col", "n" * 16, "lamp/u"):
        assert name in out.stderr, out.stderr
    assert "lamp/ok" not in out.stderr
    assert not image.exists()
    settings.write_text("{not json")
    assert _run([PROVISION, str(settings), "-o", str(image)]).returncode == 2
    # a setting given twice was lost without a word (the last one won); settings too large for the
    # partition ended in the generator's traceback
    for text, words in (('{"lamp": {"a": 1, "a": 2}}', "'a' is given twice"),
                        ('{"device_name": "x", "device": {"name": "y"}}', "device/name: given twice"),
                        (json.dumps({"lamp": {"long": "a" * 30000}}), "do not fit in the nvs partition")):
        settings.write_text(text)
        out = _run([PROVISION, str(settings), "-o", str(image)])
        assert out.returncode == 2 and words in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert not image.exists()
    csv_settings = tmp_path / "twice.csv"
    csv_settings.write_text("folder,name,type,value\nlamp,x,int,1\nlamp,x,int,2\n")
    out = _run([PROVISION, str(csv_settings), "-o", str(image)])
    assert out.returncode == 2 and "lamp/x: given twice" in out.stderr and not image.exists()


def test_too_much_for_the_partition(tmp_path):
    settings = tmp_path / "big.json"
    settings.write_text(json.dumps({"f%d" % i: {"k%d" % j: "x" * 900 for j in range(10)} for i in range(4)}))
    out = _run([PROVISION, str(settings), "-o", str(tmp_path / "nvs.bin")])
    assert out.returncode == 2 and "nvs_provision:" in out.stderr


def test_dump_edit_validation_and_partition_lookup(tmp_path):
    entries = [("a", "n", "int", 5, {}), ("a", "s", "str", "text", {}), ("b", "blob", "bytes", "AAEC", {})]
    image, enc = nvs_provision.build(entries, NVS_SIZE, str(tmp_path))
    path = tmp_path / "nvs.bin"
    path.write_bytes(image)
    assert nvs_dump.locate(str(path)) == (0, NVS_SIZE)
    full = tmp_path / "full.bin"
    _flash_with(str(tmp_path / "st"), image)
    os.replace(str(tmp_path / "st" / "flash.bin"), str(full))
    assert nvs_dump.locate(str(full)) == (NVS_OFF, NVS_SIZE)
    out = _run([DUMP, str(full)])
    assert json.loads(out.stdout) == {"a": {"n": {"type": "i64", "value": 5}, "s": {"type": "string", "value": "text"}},
                                      "b": {"blob": {"type": "blob", "value": "AAEC"}}}
    before = path.read_bytes()
    edits = tmp_path / "e.json"
    edits.write_text(json.dumps({"a": {"n": {"type": "i8", "value": 200}, "s": {"type": "what", "value": 1},
                                       "z": [1]}}))
    out = _run([DUMP, str(path), "--set", str(edits), "-o", str(tmp_path / "new.bin")])
    assert out.returncode == 2
    for name in ("a/n", "a/s", "a/z"):
        assert name in out.stderr
    assert path.read_bytes() == before
    edits.write_text(json.dumps({"a": {"n": {"type": "i8", "value": -3}}, "b": None}))
    out = _run([DUMP, str(path), "--set", str(edits), "-o", str(tmp_path / "new.bin")])
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"a": {"n": {"type": "i8", "value": -3}, "s": {"type": "string", "value": "text"}}}
    assert path.read_bytes() == before  # -o: the original stays as it was
    assert "write-flash 0x9000 %s" % (tmp_path / "new.bin") in out.stderr


def test_mqtt_settings_are_checked_and_stored_as_the_device_reads_them(tmp_path):
    ca = ("-----BEGIN CERTIFICATE-----\n" + base64.b64encode(b"\x30\x82" + bytes(300)).decode() +
          "\n-----END CERTIFICATE-----\n")
    entries = nvs_provision.settings_from_json({"mqtt": {
        "url": "mqtts://dev:p%40ss@broker.lan:8883", "ca": ca, "prefix": "ha", "mode": "component",
        "base": "iotutils/kitchen"}})
    got = {e[1]: e[3] for e in entries}
    # credentials in the URL go to user/password: the stored URL carries none
    assert got == {"url": "mqtts://broker.lan:8883", "user": "dev", "password": "p@ss", "ca": ca,
                   "prefix": "ha", "mode": "component", "base": "iotutils/kitchen"}
    assert all(e[0] == "mqtt" and e[2] == "str" for e in entries)
    image, _ = nvs_provision.build(entries, NVS_SIZE, str(tmp_path))
    f = RamFlash(NVS_SIZE)
    f.buf[:] = image
    s = nvs.NVS(f)
    assert s.get("mqtt", "url") == "mqtts://broker.lan:8883" and s.get("mqtt", "password") == "p@ss"
    # the device's rules: each bad one named
    for bad, field in (({"url": "http://x"}, "url"), ({"url": "mqtts://x"}, "ca"), ({"mode": "both"}, "mode"),
                       ({"prefix": "home/#"}, "prefix"), ({"base": "/x/"}, "base"), ({"ca": "not a cert"}, "ca"),
                       ({"port": 1883}, "port"), ({"user": 5}, "user"), ("mqtt://x", "")):
        settings = tmp_path / "bad.json"
        settings.write_text(json.dumps({"mqtt": bad}))
        out = _run([PROVISION, str(settings), "-o", str(tmp_path / "nvs.bin")])
        want = "mqtt %s: " % field if field else "mqtt: an object of settings expected"
        assert out.returncode == 2 and want in out.stderr, (bad, out.stderr)


def test_the_generic_form_gets_the_named_settings_checks_and_a_csv_needs_its_header():
    # folder/name entries for the places the device reads at boot were written unchecked: a plain
    # text as admin/pwhash locked the admin page for good, a network list with "password" (the
    # named setting's word) joined with no password, a garbage key was kept; and a CSV without its
    # header took the first value for it: an empty image, which erases the settings when flashed
    for bad, words in (({"admin": {"pwhash": "plain"}}, "admin_password_hash"),
                       ({"ota": {"pubkey": "garbage"}}, "ota_pubkey"),
                       ({"device": {"name": "x" * 60}}, "device/name"),
                       ({"wifi": {"networks": [{"ssid": "home", "password": "p" * 70}]}}, "wifi_networks home"),
                       ({"wifi_networks": [{"ssid": "home", "hidden": "no"}]}, "wifi_networks home: hidden: true or false"),
                       ({"wifi_networks": [{"ssid": "ho\x00me"}]}, "wifi_networks ho.me: ssid: no control")):
        with pytest.raises(nvs_provision.ProvisionError, match=words):
            nvs_provision.settings_from_json(bad)
    want = [("wifi", "networks", "json", [{"ssid": "home", "pw": "secret-home", "hidden": False}], {})]
    assert nvs_provision.settings_from_json(
        {"wifi": {"networks": {"type": "json", "value": [{"ssid": "home", "password": "secret-home"}]}}}) == want
    assert nvs_provision.settings_from_csv(
        'folder,name,type,value\nwifi,networks,json,"[{""ssid"":""home"",""password"":""secret-home""}]"\n') == want
    with pytest.raises(nvs_provision.ProvisionError, match="header"):
        nvs_provision.settings_from_csv("app,x,int,5\n")
    assert nvs_provision.settings_from_csv("\ufefffolder,name,type,value\napp,x,int,5\n") == [("app", "x", "int", "5", {})]


def test_bytes_that_are_not_nvs_are_refused_before_anything_is_written(tmp_path):
    # garbage loaded as an empty store: a dump printed {} as if the partition were empty, an edit in
    # place erased the "corrupt" pages (a wrong file or offset lost its bytes), and the simulator's
    # --write-nvs flashed it
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(bytes((i * 7919 + 13) & 0xFF for i in range(NVS_SIZE)))
    before = garbage.read_bytes()
    edits = tmp_path / "e.json"
    edits.write_text(json.dumps({"a": {"n": 1}}))
    for cmd in ([DUMP, str(garbage)], [DUMP, str(garbage), "--set", str(edits)]):
        out = _run(cmd)
        assert out.returncode == 2 and "not an NVS partition" in out.stderr and not out.stdout, out
        assert garbage.read_bytes() == before
    blank = tmp_path / "blank.bin"
    blank.write_bytes(b"\xff" * NVS_SIZE)
    out = _run([DUMP, str(blank)])
    assert out.returncode == 0 and json.loads(out.stdout) == {}
    # a whole flash read at the wrong offset
    image, _ = nvs_provision.build([("a", "n", "int", 5, {})], NVS_SIZE, str(tmp_path))
    full = _flash_with(str(tmp_path / "st"), image)
    assert json.loads(_run([DUMP, full]).stdout) == {"a": {"n": {"type": "i64", "value": 5}}}
    with open(full, "r+b") as f:   # an app image's bytes, say
        f.seek(0x100000)
        f.write(before)
    flash_before = open(full, "rb").read()
    out = _run([DUMP, full, "--offset", "0x100000", "--size", hex(NVS_SIZE), "--set", str(edits)])
    assert out.returncode == 2 and "not an NVS partition" in out.stderr
    assert open(full, "rb").read() == flash_before
    out = _run([os.path.join(ROOT, "scripts", "sim.py"), "--state", str(tmp_path / "st"), "--write-nvs", str(garbage)])
    assert out.returncode != 0 and "not an NVS partition" in out.stderr, out
    assert open(full, "rb").read() == flash_before
