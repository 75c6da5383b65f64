"""The real ESP32 hardware layer (iotutils/hal/esp32.py) over the esp32 port fakes (tests/esp32fakes).

- otadata written through the fake esp32.Partition (ESP-IDF v5.5.1's rules, coded in the fake) is
  what scripts/sim.py's emulated bootloader (iotutils/hal/otadata.py) decodes, and the other way round;
- the toolbox on the esp32 layer in the `micropython` runtime: persist (through store_esp32nvs and
  the fake esp32.NVS), Wi-Fi, and an OTA update from the fake GitHub on loopback into the fake
  partition, the reboot, the pending boot, confirm.
Unit-level checks of the layer are in tests/unit/test_hal_esp32.py.
"""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, micropython_cmd, micropython_path

FAKES = os.path.join(ROOT, "tests", "esp32fakes")
if FAKES not in sys.path:
    sys.path.insert(0, FAKES)

import esp32  # noqa: E402  (the fake)
import espimage  # noqa: E402
import sim  # noqa: E402  (scripts/sim.py: its bootloader)
from fake_github import OWNER, FakeGitHub  # noqa: E402
from iotutils.hal import esp32 as hal  # noqa: E402
from iotutils.hal import layout, otadata  # noqa: E402

TABLE = {p[0]: p for p in layout.DEFAULT}
SLOTS = list(layout.APP_SLOTS)


def write_slot(path, name, image):
    p = TABLE[name]
    with open(path, "r+b") as f:
        f.seek(p[3])
        f.write(b"\xff" * ((len(image) + 4095) // 4096 * 4096))
        f.seek(p[3])
        f.write(image)


def power_on(path, running=None):
    esp32.fake_setup(str(path), running)
    hal._regions.clear()
    del hal._ota[:]


def sim_boot(path):
    """scripts/sim.py's bootloader on the same image: (slot name, rolled_back, state name)."""
    slot, _, rolled_back, state = sim.bootloader(sim.Flash(str(path), layout.DEFAULT), SLOTS)
    return SLOTS[slot], rolled_back, otadata.STATE_NAMES.get(state)


def sim_entry(path):
    """The slot and state the active otadata entry names, read as the simulator reads it (no boot)."""
    od = sim.Flash(str(path), layout.DEFAULT).region("otadata")
    try:
        cur = otadata.active(od)
        return SLOTS[otadata.slot_of_seq(cur[1])], otadata.STATE_NAMES[cur[2]]
    finally:
        od.close()


@pytest.fixture
def flash(tmp_path):
    path = tmp_path / "flash.bin"
    power_on(path, "ota_0")  # creates the blank 4 MB image
    write_slot(path, "ota_0", espimage.build_app_image("1.0.0"))
    write_slot(path, "ota_1", espimage.build_app_image("2.0.0"))
    return path


def test_fake_set_boot_is_what_the_sim_bootloader_reads(flash):
    power_on(flash, "ota_0")
    hal.ota_set_boot("ota_1")                      # the fake's esp_ota_set_boot_partition
    assert sim_boot(flash) == ("ota_1", False, "pending_verify")
    power_on(flash, "ota_1")                       # the sim bootloader chose it: that app runs
    assert hal.ota_pending() and hal.ota_running() == "ota_1"
    hal.ota_mark_valid()                           # the fake's esp_ota_mark_app_valid_cancel_rollback
    assert sim_boot(flash) == ("ota_1", False, "valid")
    power_on(flash, "ota_1")
    hal.ota_set_boot("ota_0")
    assert sim_boot(flash) == ("ota_0", False, "pending_verify")
    # never confirmed: the sim bootloader rolls back, the esp32 layer sees it
    assert sim_boot(flash) == ("ota_1", True, "valid")
    power_on(flash, "ota_1")
    assert hal.ota_rolled_back() and not hal.ota_pending()


def test_sim_written_otadata_boots_the_same_in_the_fake(flash):
    # the other direction: the simulator's otadata writer, the fake's own bootloader
    od = sim.Flash(str(flash), layout.DEFAULT).region("otadata")
    otadata.set_boot(od, 1)
    od.close()
    power_on(flash)                                # fake bootloader: NEW -> PENDING_VERIFY
    assert hal.ota_running() == "ota_1" and hal.ota_pending()
    power_on(flash)                                # unconfirmed: ABORTED, back to ota_0
    assert hal.ota_running() == "ota_0" and hal.ota_rolled_back()
    assert sim_boot(flash) == ("ota_0", True, "undefined")


def test_bootloader_skips_a_slot_without_a_valid_image(flash):
    power_on(flash, "ota_0")
    hal.ota_set_boot("ota_1")
    hal.partition("ota_1").erase(0, 4096)          # the image is gone before the reboot
    assert sim_boot(flash)[0] == "ota_0"
    od = sim.Flash(str(flash), layout.DEFAULT).region("otadata")
    assert otadata.read_entries(od)[0][1] == otadata.STATE_INVALID
    od.close()
    power_on(flash)
    assert hal.ota_running() == "ota_0"


# ---- the toolbox over the esp32 layer, in the micropython runtime ----

DEVICE = r"""
import json, sys
cfg = json.load(open("cfg.json"))
sys.path.insert(0, cfg["fakes"])
import esp32hal
hal = esp32hal.install()
import esp32, network
esp32.fake_setup(cfg["flash"])         # power-on: the fake bootloader picks the app
from iotutils import store
from iotutils.persist import PersistentInt
from iotutils.ota import OTA
boots = PersistentInt("boots", default=0, folder="stats")
boots.value = boots.value + 1
ota = OTA(repo="me/fw", api=cfg["api"], pubkey=cfg["pubkey"], allow_http=True)
st = ota.status()
print("BOOT", json.dumps({"platform": hal.PLATFORM, "backend": store.BACKEND, "boots": boots.value,
                          "slot": st["slot"], "version": st["version"], "pending": st["pending"],
                          "rolled_back": st["rolled_back"]}))
step = cfg["step"]
if step == "wifi":
    from iotutils.wifi import Wifi
    network.fake_air["networks"] = [{"ssid": "home", "password": "secret", "rssi": -50, "channel": 11}]
    w = Wifi()
    w.add_network("home", "secret")
    ok = w.connect(timeout=10)
    w.access_point(True, ssid="lamp-setup", password="12345678")
    network.fake_air["ap_clients"] = [b"\x02\x00\x00\x00\x00\x09"]
    s = w.status()
    ap = network.WLAN(network.AP_IF)
    print("WIFI", json.dumps({"ok": ok, "ssid": s["ssid"], "ip": s["ip"], "rssi": s["rssi"], "mode": s["mode"],
                              "ap": [s["ap_ssid"], s["ap_ip"], ap.config("authmode")],
                              "scan": [n["ssid"] for n in w.scan()]}))
elif step == "update":
    import machine
    try:
        ota.update()
    except machine.FakeReset:
        print("RESET", machine.fake_resets)
elif step == "confirm":
    ota.confirm()
    print("CONFIRMED", json.dumps(ota.status()["pending"]))
"""


def run_device(tmp_path, flash, step, api="http://127.0.0.1:9"):
    d = tmp_path / "fs"
    d.mkdir(exist_ok=True)
    (d / "main.py").write_text(DEVICE)
    (d / "cfg.json").write_text(json.dumps({"fakes": FAKES, "flash": str(flash), "api": api, "step": step,
                                                 "pubkey": OWNER.pem}))
    env = dict(os.environ, MICROPYPATH=micropython_path())
    p = subprocess.run(micropython_cmd() + ["main.py"], cwd=str(d), env=env, capture_output=True, text=True,
                       timeout=120)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    lines = {}
    for line in p.stdout.splitlines():
        tag, _, rest = line.partition(" ")
        lines[tag] = rest
    return lines, out


def test_toolbox_persist_wifi_and_ota_on_the_esp32_layer(tmp_path):
    import mpcode
    from conftest import micropython_exe
    if mpcode.has_frozen_toolbox(micropython_exe()):
        pytest.skip("the host firmware's _iotutils.KVStore is the host variant (image file): this test drives "
                    "the stock-MicroPython esp32.NVS path, which the PyPI runtime runs")
    flash = tmp_path / "flash.bin"
    power_on(flash, "ota_0")
    write_slot(flash, "ota_0", espimage.build_app_image("1.0.0"))
    gh = FakeGitHub().start()
    try:
        new = espimage.build_app_image("2.0.0", size=64 * 1024)
        gh.add_release("me/fw", "2.0.0", new)

        lines, out = run_device(tmp_path, flash, "wifi")
        boot = json.loads(lines["BOOT"])
        assert boot == {"platform": "esp32", "backend": "esp32nvs", "boots": 1, "slot": "ota_0",
                        "version": "1.0.0", "pending": False, "rolled_back": False}, out
        wifi = json.loads(lines["WIFI"])
        assert wifi == {"ok": True, "ssid": "home", "ip": "192.168.1.50", "rssi": -50, "mode": "sta+ap",
                        "ap": ["lamp-setup", "192.168.4.1", 3], "scan": ["home"]}, out

        lines, out = run_device(tmp_path, flash, "update", gh.api_url)
        assert json.loads(lines["BOOT"])["boots"] == 2, out      # persisted across "reboots"
        assert "RESET" in lines, out
        # the image landed in ota_1 through esp32.Partition, and otadata selects it (sim's reading)
        with open(flash, "rb") as f:
            f.seek(TABLE["ota_1"][3])
            assert f.read(len(new)) == new
        assert sim_entry(flash) == ("ota_1", "new")
        lines, out = run_device(tmp_path, flash, "confirm", gh.api_url)
        boot = json.loads(lines["BOOT"])
        assert (boot["slot"], boot["version"], boot["pending"], boot["boots"]) == ("ota_1", "2.0.0", True, 3), out
        assert lines["CONFIRMED"] == "false", out
        lines, out = run_device(tmp_path, flash, "none")
        boot = json.loads(lines["BOOT"])
        assert (boot["slot"], boot["version"], boot["pending"], boot["rolled_back"]) == \
            ("ota_1", "2.0.0", False, False), out
        assert sim_boot(flash) == ("ota_1", False, "valid")
    finally:
        gh.stop()


def test_random_sequences_fake_and_sim_bootloaders_agree(flash, tmp_path):
    # the fake's ESP-IDF code and iotutils' otadata.py are separate implementations: after any mix of
    # installs, confirms, broken images and reboots both bootloaders pick the same slot and leave
    # byte-identical otadata
    import random
    import shutil
    rnd = random.Random(1234)
    images = {"ota_0": espimage.build_app_image("1.0.0"), "ota_1": espimage.build_app_image("2.0.0")}
    twin = tmp_path / "twin.bin"
    power_on(flash)
    boots = 0
    for step in range(120):
        running = hal.ota_running()
        other = "ota_1" if running == "ota_0" else "ota_0"
        op = rnd.choice(("install", "install", "confirm", "confirm", "boot", "boot", "boot", "break"))
        if op == "install":
            write_slot(flash, other, images[other])
            hal.ota_set_boot(other)
        elif op == "confirm":
            hal.ota_mark_valid()
            assert not hal.ota_pending()
        elif op == "break":
            hal.partition(other).erase(0, 4096)    # never the running one: a slot stays bootable
        else:
            shutil.copyfile(str(flash), str(twin))
            want = sim_boot(twin)
            power_on(flash)
            boots += 1
            assert hal.ota_running() == want[0], step
            assert hal.ota_rolled_back() == want[1], step
            with open(flash, "rb") as a, open(twin, "rb") as b:
                a.seek(TABLE["otadata"][3])
                b.seek(TABLE["otadata"][3])
                assert a.read(TABLE["otadata"][4]) == b.read(TABLE["otadata"][4]), step
    assert boots > 20
