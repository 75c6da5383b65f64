"""The scenarios that matter on a board, written once: the same test runs on an ESP32 and on the
simulated device's serial console (tests/hil/conftest.py says which). The board runs
examples/lamp.py as main.py and was provisioned with an NVS image before its first boot."""
import os
import re
import socket
import subprocess
import sys
import time

import pytest
import requests

import fake_github
from hil.board import ADMIN_PASSWORD, DEVICE_NAME, SCRIPTS, bump

# pytest-embedded's fixtures use record_xml_attribute, "experimental" for pytest: one warning per test
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestExperimentalApiWarning")

# ---- boot and console ----

def test_boot_report(board):
    info = board.reset()
    assert info["rst"] == "SW_CPU_RESET"                  # the ROM's line for machine.reset()
    assert info["platform"] in ("esp32", "sim")
    assert info["name"] == DEVICE_NAME                    # provisioned before the first boot
    assert info["cause"] == "soft"                        # hal's word for a reset the software asked for
    assert re.fullmatch(r"ota_[01]", info["slot"]) and info["project"] == "micropython"
    assert info["version"] and info["fw_version"]
    free, total = info["heap"]
    assert 0 < free < total
    assert info["wifi"] == "sta" and info["ssid"] == board.wifi[0]
    assert requests.get(board.url("/healthz"), timeout=10).json() == {"ok": True}


def test_repl_raw_repl_and_soft_reset(board):
    board.running()
    board.dut.write(b"\x03")
    board.expect(rb"KeyboardInterrupt: ?\r\n")           # main.py stopped where it was...
    board.expect(rb"MicroPython \S+ on \S+; .+ with ESP32\r\n")   # ...and the REPL greets
    board.repl()
    assert board.eval("6 * 7") == 42
    assert board.eval("dev.name") == DEVICE_NAME          # main.py's globals are the REPL's
    out = board.raw_exec("import sys\nprint(sys.platform in ('esp32', 'linux'), 1 + 1)\n")
    assert out.strip() == b"True 2"
    info = board.soft_reset()                             # Ctrl-D: main.py runs again, no ROM banner
    assert info["cause"] == "soft" and info["wifi"] == "sta"


# ---- persistent values ----

_COUNTER = "__import__('iotutils.persist').persist.PersistentInt('hil', default=0, folder='hiltest')"


def _bump_counter(board):
    board.exec("v = %s; v.value = v.value + 1" % _COUNTER)
    return board.eval("v.value")


def test_persistent_value_across_soft_and_hard_reset(board):
    board.running()
    board.repl()
    n = _bump_counter(board)
    board.soft_reset(wifi=False)
    board.repl()
    assert board.eval(_COUNTER + ".value") == n
    n = _bump_counter(board)
    board.reset(wifi=False)
    board.repl()
    assert board.eval(_COUNTER + ".value") == n


def test_persistent_value_across_power_cut(board):
    if not board.sim:
        pytest.skip("a power cut needs the simulated device: this suite does not switch a board's power")
    board.running()
    board.repl()
    n = _bump_counter(board)                  # on flash before the REPL answers
    board.power_cut()
    info = board.wait_boot()
    assert info["rst"] == "POWERON_RESET" and info["cause"] == "power_on"
    board.repl()
    assert board.eval(_COUNTER + ".value") == n


# ---- provisioning ----

def test_nvs_image_written_before_boot(board):
    image = board.nvs_image({"hiltest": {"greeting": "written before boot",
                                         "level": {"type": "range", "value": 7, "lo": 0, "hi": 10}}})
    board.write_nvs(image)                    # esptool write-flash 0x9000 / sim.py --write-nvs, then boot
    info = board.wait_boot()
    assert info["name"] == DEVICE_NAME
    assert info["wifi"] == "sta" and info["ssid"] == board.wifi[0]   # provisioned network
    board.admin(ADMIN_PASSWORD)                                      # provisioned admin password
    board.repl()
    assert board.eval("__import__('iotutils.persist').persist.PersistentStr('greeting', folder='hiltest').value") \
        == "written before boot"
    assert board.eval("__import__('iotutils.persist').persist.PersistentRange('level', 0, 10, folder='hiltest')"
                      ".value") == 7
    # what the image did not carry is gone, as after any NVS write
    assert board.eval(_COUNTER + ".value") == 0


# ---- Wi-Fi ----

def test_wifi_joins_the_given_network(board):
    board.running()
    board.repl()
    board.exec("[dev.wifi.forget(n['ssid']) for n in dev.wifi.networks()]")
    board.exec("dev.wifi.add_network(%r, %r)" % board.wifi)
    info = board.reset()
    assert info["wifi"] == "sta" and info["ssid"] == board.wifi[0]
    assert info["hostname"]
    assert requests.get(board.url("/healthz"), timeout=10).status_code == 200
    board.repl()
    st = board.eval("dev.wifi.status()")
    assert st["connected"] is True and st["ssid"] == board.wifi[0] and st["ip"] == info["ip"]


def test_wifi_falls_back_to_the_setup_access_point(board):
    board.running()
    board.repl()
    board.exec("dev.wifi.forget(%r); dev.wifi.add_network('hil-nowhere', 'not-a-network-9')" % board.wifi[0])
    try:
        info = board.reset()
        assert info["wifi"] == "ap", info
        assert info["ap_ssid"].startswith("iotutils-")
        pw = info["ap_password"]
        assert 8 <= len(pw) <= 63, "the setup AP must be WPA2 with the password on the console: %r" % info
        board.expect_after_boot(rb"wifi: setup portal on http://", timeout=30)
        if board.sim:
            # the simulated AP's address is loopback: the portal answers this host too
            r = requests.get(board.url("/setup"), timeout=10)
            assert r.status_code == 200 and "hil-net" in r.text   # the scan lists the visible network
        # the same password after a reboot (stable, from the device's salt)
        again = board.reset()
        assert again["wifi"] == "ap" and again["ap_password"] == pw
    finally:
        board.repl()
        board.exec("dev.wifi.forget('hil-nowhere'); dev.wifi.add_network(%r, %r)" % board.wifi)
    assert board.reset()["wifi"] == "sta"


# ---- web server and admin ----

def test_web_server_and_admin_login(board):
    board.running()
    r = requests.get(board.url("/lamp"), timeout=10)
    assert r.status_code == 200 and "<h1>%s</h1>" % DEVICE_NAME in r.text
    r = requests.get(board.url("/admin"), timeout=10)
    assert r.status_code == 200 and "text/html" in r.headers["Content-Type"]
    assert requests.get(board.url("/admin/api/status"), timeout=10).status_code == 401
    bad = requests.post(board.url("/admin/api/login"), json={"password": "wrong-password"}, timeout=10)
    assert bad.status_code == 401
    s = board.admin()
    st = s.get(board.url("/admin/api/status"), timeout=10).json()
    assert st["name"] == DEVICE_NAME and st["firmware"]["slot"] == board.info["slot"]
    assert st["wifi"]["connected"] is True
    # the app's own API changes the lamp; the console shows the LED
    r = requests.put(board.url("/api/lamp"), json={"on": True, "brightness": 40, "rgb": "#ff8000"}, timeout=10)
    assert r.json() == {"on": True, "brightness": 40, "rgb": [255, 128, 0]}
    board.expect(rb"LED rgb=\(102,51,0\)", timeout=10)


# ---- Alexa ----

def _m_search(board, timeout=10):
    """SSDP discovery from this host: the Hue bridge's description URL."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    iface = board.ssdp_interface()
    s.bind((iface, 0))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(iface))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    s.settimeout(0.5)
    want = board.url("/description.xml")
    search = (b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\n"
              b"ST: urn:schemas-upnp-org:device:basic:1\r\n\r\n")
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:
            s.sendto(search, ("239.255.255.250", 1900))
            end = time.time() + 1.5
            while time.time() < end:
                try:
                    data = s.recvfrom(4096)[0].decode(errors="replace")
                except socket.timeout:
                    continue
                # every simulated device on this host answers: ours is the one at our address
                m = re.search(r"(?im)^LOCATION: *(\S+)", data)
                if m and m.group(1) == want:
                    return data
        raise AssertionError("no SSDP answer with LOCATION %s" % want)
    finally:
        s.close()


def test_alexa_discovery_and_hue_switch(board):
    board.running()
    reply = _m_search(board)
    assert re.search(r"(?im)^hue-bridgeid: *[0-9A-F]{16}\r?$", reply), reply
    desc = requests.get(board.url("/description.xml"), timeout=10).text
    assert "<URLBase>http://%s:%d/</URLBase>" % (board.info["ip"], board.info["port"]) in desc
    board.admin().put(board.url("/admin/api/alexa/pairing"), json={"allowed": True}, timeout=10)
    user = requests.post(board.url("/api"), json={"devicetype": "hil#test"}, timeout=10).json()[0]["success"]["username"]
    lights = requests.get(board.url("/api/%s/lights" % user), timeout=10).json()
    lid = [k for k, v in lights.items() if v["name"] == "Desk lamp"][0]
    r = requests.put(board.url("/api/%s/lights/%s/state" % (user, lid)), json={"on": True, "bri": 254}, timeout=10)
    assert all("success" in x for x in r.json()), r.text
    m = board.expect(rb"LED rgb=\((\d+),(\d+),(\d+)\)", timeout=10)
    assert int(m.group(1)) > 0
    assert requests.get(board.url("/api/lamp"), timeout=10).json()["on"] is True
    requests.put(board.url("/api/%s/lights/%s/state" % (user, lid)), json={"on": False}, timeout=10)
    board.expect(rb"LED rgb=\(0,0,0\)", timeout=10)
    assert requests.get(board.url("/api/lamp"), timeout=10).json()["on"] is False


# ---- OTA ----

@pytest.fixture
def releases(board):
    """A fake GitHub on this host that the board reaches (tests/fake_github.py), and a way to publish."""
    servers = []
    workdir = os.path.join(board.workdir, "releases")

    def publish(image, version):
        """Release assets made by scripts/release.py, signed with the session's key (--key);
        returns the url: channel that names its ota.json."""
        if not servers:   # on the address facing the board (known once it booted)
            servers.append(_fake_github(board.host_ip or board.lan_ip()))
        gh = servers[0]
        src = os.path.join(workdir, version + ".bin")
        out = os.path.join(workdir, version)
        os.makedirs(workdir, exist_ok=True)
        with open(src, "wb") as f:
            f.write(image)
        cmd = [sys.executable, os.path.join(SCRIPTS, "release.py"), src, "-o", out, "--url", "firmware.bin"]
        if board.signing:
            cmd += ["--key", board.signing[0]]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assets = {}
        for name in os.listdir(out):
            with open(os.path.join(out, name), "rb") as f:
                assets[name] = f.read()
        gh.add_release("hil/lamp-firmware", version, assets=assets)
        return "url:%s/hil/lamp-firmware/releases/download/%s/ota.json" % (gh.api_url, version)

    yield publish
    for gh in servers:
        gh.stop()


def _fake_github(ip):
    # a board reaches this host over its network: serve there
    return fake_github.FakeGitHub().start(api_host=ip, asset_host=ip, bind=ip)


def _install(board, s, channel):
    r = s.put(board.url("/admin/api/ota/settings"), json={"channel": channel}, timeout=10)
    assert r.status_code == 200, r.text
    chk = s.post(board.url("/admin/api/ota/check"), timeout=30)
    assert chk.status_code == 200, chk.text
    r = s.post(board.url("/admin/api/ota/update"), json={}, timeout=30)
    assert r.status_code == 202, r.text
    return chk.json()


_UNHEALTHY = """# the OTA scenario: the image {bad} never gets healthy (its health check fails); rolls back sooner
from iotutils import appimage, hal
iotutils.device.Device.health_timeout_s = 10
if (appimage.read_desc(hal.partition(hal.ota_running())) or {{}}).get("version") == {bad!r}:
    iotutils.device.Device.healthy = lambda self: False
"""


def test_ota_install_confirm_then_unhealthy_image_rolls_back(board, releases):
    info = board.running()
    current, slot = info["fw_version"], info["slot"]
    other = "ota_1" if slot == "ota_0" else "ota_0"
    good, bad = bump(current, 2), bump(current, 3)   # newer than anything an earlier run left behind
    # a good release: installed, booted pending verify, confirmed by the health check
    s = board.admin()
    chk = _install(board, s, releases(board.base_image(good), good))
    assert chk == {"current": current, "available": good, "newer": True}
    info = board.wait_boot()
    assert (info["fw_version"], info["slot"], info["pending"]) == (good, other, True)
    board.expect(rb"firmware: health check passed, image confirmed", timeout=90)
    st = board.admin().get(board.url("/admin/api/ota"), timeout=10).json()["status"]
    assert st["version"] == good and st["pending"] is False
    # an image that never gets healthy: after health_timeout_s the device resets, the bootloader rolls back
    board.repl()
    board.write_boot_py(_UNHEALTHY.format(bad=bad))
    try:
        board.soft_reset()
        s = board.admin()
        _install(board, s, releases(board.base_image(bad), bad))
        info = board.wait_boot()
        assert (info["fw_version"], info["slot"], info["pending"]) == (bad, slot, True)
        board.expect(rb"firmware: health check failed for \d+ s, rolling back", timeout=90)
        info = board.wait_boot()
        assert (info["fw_version"], info["slot"], info["pending"], info["rolled_back"]) == (good, other, False, True)
        # and that version is not offered again
        chk = board.admin().post(board.url("/admin/api/ota/check"), timeout=30).json()
        assert chk == {"current": good, "available": bad, "newer": False}
    finally:
        board.repl()
        board.write_boot_py()
    board.reset()


def test_ota_release_signing(board, releases):
    if not board.signing:
        pytest.skip("no scripts/keygen.py in this tree: no OTA release signing to test")
    info = board.running()
    # a release without a signature is refused: nothing is written, the board keeps running
    v = bump(info["fw_version"], 5)
    src = os.path.join(board.workdir, "unsigned.bin")
    with open(src, "wb") as f:
        f.write(board.base_image(v))
    out = os.path.join(board.workdir, "unsigned")
    r = subprocess.run([sys.executable, os.path.join(SCRIPTS, "release.py"), src, "-o", out, "--url", "firmware.bin"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    gh = _fake_github(board.host_ip or board.lan_ip())
    try:
        gh.add_release("hil/unsigned", v, assets={n: open(os.path.join(out, n), "rb").read() for n in os.listdir(out)})
        s = board.admin()
        s.put(board.url("/admin/api/ota/settings"),
              json={"channel": "url:%s/hil/unsigned/releases/download/%s/ota.json" % (gh.api_url, v)}, timeout=10)
        r = s.post(board.url("/admin/api/ota/update"), json={}, timeout=30)
        if r.status_code == 202:
            deadline = time.time() + 60
            while time.time() < deadline:
                p = s.get(board.url("/admin/api/ota/progress"), timeout=10).json()
                if p["state"] in ("error", "failed", "rebooting"):
                    break
                time.sleep(0.3)
            assert p["state"] in ("error", "failed"), p
        else:
            assert r.status_code >= 400, r.text
        st = s.get(board.url("/admin/api/ota"), timeout=10).json()["status"]
        assert st["version"] == info["fw_version"] and st["slot"] == info["slot"]
    finally:
        gh.stop()
