"""Wi-Fi manager and setup portal on simulated devices (tests/apps/wifi_app.py), with real clients:
requests for HTTP, dnspython and dig for the captive DNS. The Wi-Fi scenario file is replaced
atomically while the device runs to switch routers off and on."""
import json
import os
import re
import shutil
import socket
import subprocess
import time

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.resolver
import pytest
import requests

from conftest import ROOT
from simdev import SimDevice

APP = os.path.join(ROOT, "tests", "apps", "wifi_app.py")

# what each OS expects from its connectivity probe when the Internet is reachable
ONLINE = {
    ("connectivitycheck.gstatic.com", "/generate_204"): (204, ""),
    ("captive.apple.com", "/hotspot-detect.html"): (200, "<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>"),
    ("www.msftconnecttest.com", "/connecttest.txt"): (200, "Microsoft Connect Test"),
    ("www.msftncsi.com", "/ncsi.txt"): (200, "Microsoft NCSI"),
    ("detectportal.firefox.com", "/canonical.html"):
        (200, '<meta http-equiv="refresh" content="0;url=https://support.mozilla.org/kb/captive-portal"/>\n'),
    ("detectportal.firefox.com", "/success.txt"): (200, "success\n"),
}


def net(ssid, password, rssi=-60, up=True, fail=None, channel=6):
    return {"ssid": ssid, "password": password, "rssi": rssi, "channel": channel, "up": up, "fail": fail}


def write_scenario(path, networks):
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"networks": networks}, f)
    os.replace(tmp, str(path))  # atomic: the device never reads half a file


@pytest.fixture
def boot(tmp_path):
    devices = []

    def start(networks, preset=None):
        scn = tmp_path / "wifi.json"
        write_scenario(scn, networks)
        state = tmp_path / "dev"
        (state / "fs").mkdir(parents=True)
        if preset:
            (state / "fs" / "preset.json").write_text(json.dumps(preset))
        dev = SimDevice(state, app=APP, wifi=scn)
        devices.append(dev)
        dev.start()
        dev.wait_line(r"wifi-app ready")
        dev.wait_http()
        return dev, scn

    yield start
    for d in devices:
        d.stop()


def get(dev, path, **kw):
    kw.setdefault("timeout", 5)
    return requests.get(dev.url(path), **kw)


def wait_status(dev, pred, timeout=15.0, path="/setup/status"):
    deadline = time.time() + timeout
    st = None
    while time.time() < deadline:
        st = get(dev, path).json()
        if pred(st):
            return st
        time.sleep(0.1)
    raise AssertionError("status never matched; last: %r\nconsole:\n%s" % (st, dev.output()))


def lines_since(dev, start):
    return dev.lines[start:]


def test_first_boot_portal_setup_then_station_across_power_cut(boot):
    dev, scn = boot([net("home", "secret-home", -55), net("neighbour", "not-yours-1", -70)])
    # nothing stored: access point + portal at once, WPA2 with the per-device password on the console
    m = dev.wait_line(r"wifi: access point (iotutils-[0-9a-f]{4}) \(WPA2, password ([a-z2-9]{12})\)")
    dev.wait_line(r"wifi: setup portal on http://")  # the portal comes up right after the AP
    st = get(dev, "/setup/status").json()
    assert st["state"] == "portal" and st["portal"] and not st["configured"] and not st["connected"]
    assert st["ap_ssid"] == m.group(1) and st["ap_ip"] == "127.0.0.1" and "ap" in st["mode"]

    # the setup page at "/" (and /setup): small, no external assets, lists the scan
    r = get(dev, "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert len(r.content) < 8192
    assert '<form method="post" action="/setup">' in page and 'name="password"' in page
    assert 'value="home"' in page and 'value="neighbour"' in page and 'name="other"' in page
    assert 'name="admin"' in page and 'name="name"' in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched from elsewhere
    assert get(dev, "/setup").text.count("<form") == 1

    # bad input: 400 with the reason, nothing stored
    r = requests.post(dev.url("/setup"), data={"ssid": "home", "password": "p" * 70, "admin": "admin-pass-1"},
                      timeout=5)
    assert r.status_code == 400 and "password" in r.text
    r = requests.post(dev.url("/setup"), data={"ssid": "home", "password": "secret-home", "admin": "x"}, timeout=5)
    assert r.status_code == 400 and "admin" in r.text
    assert get(dev, "/test/networks").json() == []

    # a result page for a network the device does not know says so: it polled "Connecting" for ever
    page = get(dev, "/setup/result?ssid=home").text
    assert "does not know a network <b>home</b>" in page and 'href="/setup"' in page, page
    assert "Connecting" not in page and "<script>" not in page

    # the form POST as a browser without JS sends it: 303 to the result page
    r = requests.post(dev.url("/setup"), data={"ssid": "home", "other": "", "password": "secret-home",
                                               "name": "Desk lamp", "admin": "admin-pass-1"},
                      timeout=5, allow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/setup/result?ssid=home"
    st = wait_status(dev, lambda s: s.get("result") != "connecting", path="/setup/status?ssid=home")
    assert st["result"] == "connected" and st["connected"] and st["ssid"] == "home"
    assert st["ip"] == "127.0.0.1" and st["rssi"] == -55 and st["hostname"] == "desk-lamp"
    page = get(dev, "/setup/result?ssid=home").text
    assert "Connected to <b>home</b>" in page and "http://127.0.0.1:%d/" % dev.port in page
    dev.wait_line(r"wifi: connected to home as desk-lamp \(127\.0\.0\.1, -55 dBm\)")
    dev.wait_line(r"wifi: access point off")   # the fallback AP goes after the linger time
    st = get(dev, "/setup/status").json()
    assert st["mode"] == "sta" and not st["portal"] and st["connected"]

    # passwords never come back through any page or API
    for path in ("/", "/setup", "/setup/status", "/setup/scan", "/test/networks", "/setup/result?ssid=home"):
        assert "secret-home" not in get(dev, path).text, path
    assert get(dev, "/test/networks").json() == [
        {"ssid": "home", "secure": True, "hidden": False, "connected": True, "error": None}]
    # the admin password is stored as a salted PBKDF2-SHA256 hash
    assert get(dev, "/test/admin", params={"pw": "admin-pass-1"}).json() == {"scheme": "pbkdf2_sha256", "ok": True}
    assert get(dev, "/test/admin", params={"pw": "admin-pass-2"}).json()["ok"] is False
    # once configured, changing the setup needs the current admin password (JSON, as the admin page sends)
    r = requests.post(dev.url("/setup"), json={"ssid": "neighbour", "password": "not-yours-1", "admin": "nope-nope"},
                      timeout=5)
    assert r.status_code == 403 and "admin" in r.json()["error"]
    # configured and connected: "/" is the app's again (this app has none)
    assert get(dev, "/").status_code == 404

    # power cut and power on: straight back to the station, no access point
    dev.power_cut()
    dev.start()
    mark = dev.mark
    dev.wait_line(r"wifi: connected to home as desk-lamp")
    assert not any("access point" in line for line in lines_since(dev, mark)), dev.output()
    dev.wait_http()
    st = get(dev, "/setup/status").json()
    assert st["connected"] and st["ssid"] == "home" and st["mode"] == "sta"


def test_strongest_known_network_first_and_wrong_password_reported(boot):
    # "mid" is the strongest known one but its stored password is wrong; "stranger" is unknown
    dev, scn = boot([net("weak", "pw-weak-1", -85), net("strong", "pw-strong-1", -60),
                     net("mid", "right-password", -40), net("stranger", "xxxxxxxx", -20)],
                    preset=[["weak", "pw-weak-1"], ["strong", "pw-strong-1"], ["mid", "wrong-password"]])
    dev.wait_line(r"wifi: connected to strong")
    # (anywhere in a line: the app's own print from the main thread may share the line with the
    # housekeeper's, as on a board's UART)
    tried = [m for line in dev.lines[dev.mark:] for m in re.findall(r"wifi: connecting to (\S+)", line)]
    assert tried == ["mid", "strong"], dev.output()
    st = get(dev, "/setup/status").json()
    assert st["connected"] and st["ssid"] == "strong" and st["rssi"] == -60 and st["error"] is None
    errors = {n["ssid"]: n["error"] for n in get(dev, "/test/networks").json()}
    assert errors == {"weak": None, "strong": None, "mid": "wrong_password"}

    # only the wrong-password network left: reported by status(), portal up, backing off
    write_scenario(scn, [net("mid", "right-password", -40)])
    st = wait_status(dev, lambda s: s["state"] == "portal")
    assert st["error"] == "wrong_password" and not st["connected"] and st["ap_ip"] == "127.0.0.1"
    assert get(dev, "/setup/status?ssid=mid").json()["result"] == "wrong_password"
    page = get(dev, "/setup/result?ssid=mid").text
    assert "wrong password" in page


def test_router_off_portal_dns_probes_router_back_without_reboot(boot):
    dev, scn = boot([net("home", "secret-home", -50)], preset=[["home", "secret-home"]])
    dev.wait_line(r"wifi: connected to home")
    assert get(dev, "/setup/status").json()["mode"] == "sta"
    for (host, path), (status, body) in ONLINE.items():   # online: each OS hears "Internet works"
        r = get(dev, path, headers={"Host": host}, allow_redirects=False)
        assert (r.status_code, r.text) == (status, body), (host, path)

    # the router goes off: lost -> access point + portal (same boot)
    write_scenario(scn, [net("home", "secret-home", -50, up=False)])
    dev.wait_line(r"wifi: lost the connection to home")
    dev.wait_line(r"wifi: setup portal on http://127\.0\.0\.1:%d/setup" % dev.port)
    st = get(dev, "/setup/status").json()
    assert st["portal"] and st["ap_ip"] == "127.0.0.1" and not st["connected"]

    # the captive DNS, asked by real resolvers: every A name -> the device, AAAA -> no answer
    dns_port = dev.port + 1
    res = dns.resolver.Resolver(configure=False)
    res.nameservers = ["127.0.0.1"]
    res.port = dns_port
    res.lifetime = 3
    for name in ("connectivitycheck.gstatic.com", "captive.apple.com", "www.msftconnecttest.com", "example.org"):
        assert [a.address for a in res.resolve(name, "A")] == ["127.0.0.1"], name
    with pytest.raises(dns.resolver.NoAnswer):
        res.resolve("example.org", "AAAA")
    q = dns.message.make_query("Some.Host.example", "A", use_edns=0)
    a = dns.query.udp(q, "127.0.0.1", port=dns_port, timeout=3)
    assert a.id == q.id and a.rcode() == dns.rcode.NOERROR
    assert a.flags & dns.flags.QR and a.flags & dns.flags.AA and a.flags & dns.flags.RD
    assert a.question == q.question and str(a.answer[0]).split()[-1] == "127.0.0.1"
    # malformed packets get no answer and do not stop the server
    junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    junk.settimeout(0.5)
    for pkt in (b"", b"\x00" * 5, b"\xff" * 40, q.to_wire()[:-3], bytes(range(256)) * 3):
        junk.sendto(pkt, ("127.0.0.1", dns_port))
    with pytest.raises(socket.timeout):
        junk.recv(1024)
    junk.close()
    if shutil.which("dig"):
        out = subprocess.run(["dig", "@127.0.0.1", "-p", str(dns_port), "+short", "+time=2", "+tries=2",
                              "www.msftncsi.com", "A"], capture_output=True, text=True, timeout=15).stdout
        assert out.split() == ["127.0.0.1"]
        out = subprocess.run(["dig", "@127.0.0.1", "-p", str(dns_port), "+time=2", "+tries=2", "example.org",
                              "AAAA"], capture_output=True, text=True, timeout=15).stdout
        assert "status: NOERROR" in out and "ANSWER: 0" in out

    # the OS probes: not "online" but a redirect to the setup page (the sign-in window opens there)
    portal = "http://127.0.0.1:%d/setup" % dev.port
    for host, path in ONLINE:
        r = get(dev, path, headers={"Host": host}, allow_redirects=False)
        assert r.status_code == 302 and r.headers["location"] == portal, (host, path)
        assert r.headers.get("cache-control") == "no-store"
    r = get(dev, "/redirect", headers={"Host": "www.msftconnecttest.com"}, allow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == portal
    r = get(dev, "/some/page", headers={"Host": "example.org"}, allow_redirects=False)  # any other site
    assert r.status_code == 302 and r.headers["location"] == portal
    r = get(dev, "/generate_204", headers={"Host": "connectivitycheck.gstatic.com"})   # followed: the page
    assert r.status_code == 200 and '<form method="post" action="/setup">' in r.text
    assert "<form" in get(dev, "/").text   # "/" is the setup page while the portal is up

    # the router comes back: station again by itself, without a reboot, and the AP goes
    write_scenario(scn, [net("home", "secret-home", -50)])
    dev.wait_line(r"wifi: connected to home")
    dev.wait_line(r"wifi: access point off")
    st = get(dev, "/setup/status").json()
    assert st["connected"] and st["mode"] == "sta" and not st["portal"]
    assert sum("wifi-app ready" in line for line in dev.lines) == 1   # one boot only
    r = get(dev, "/generate_204", headers={"Host": "connectivitycheck.gstatic.com"}, allow_redirects=False)
    assert r.status_code == 204
    with pytest.raises(dns.exception.Timeout):   # the captive DNS is gone with the AP
        dns.query.udp(q, "127.0.0.1", port=dns_port, timeout=0.5)


def test_the_result_page_without_a_network_sends_back_to_the_setup_page(boot):
    # (it answered 500: the portal called a method by a name it no longer had)
    dev, _ = boot([net("home", "secret-home", -50, up=False)])
    dev.wait_line(r"wifi: setup portal on")
    for path in ("/setup/result", "/setup/result?ssid="):
        r = get(dev, path, allow_redirects=False)
        assert r.status_code == 302 and r.headers["location"].endswith("/setup"), (path, r.status_code, r.text)


def test_a_hidden_network_s_name_is_joined_as_typed(boot):
    # an SSID may begin or end with a space: the "other network" field was stripped, so " guest"
    # was saved and tried as "guest" (not found) and the device never joined
    dev, _ = boot([dict(net(" guest ", "guest-pass-1", -50), hidden=True), net("guest", "other-pass", -70)])
    dev.wait_line(r"wifi: setup portal on")
    r = requests.post(dev.url("/setup"), data={"ssid": "", "other": " guest ", "password": "guest-pass-1",
                                               "admin": "admin-pass-1"}, timeout=5, allow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/setup/result?ssid=%20guest%20", r.headers
    st = wait_status(dev, lambda s: s.get("result") != "connecting", path="/setup/status?ssid=%20guest%20")
    assert st["result"] == "connected" and st["ssid"] == " guest ", st
    assert [n["ssid"] for n in get(dev, "/test/networks").json()] == [" guest "]


def test_the_setup_form_offers_the_device_s_own_name(tmp_path):
    # a Device(name="lamp") with no known network: the form's name field said "iotutils" (the
    # portal's own default), and saving the form unchanged renamed the lamp
    scn = tmp_path / "wifi.json"
    scn.write_text(json.dumps({"networks": []}))
    dev = SimDevice(tmp_path / "dev", app=os.path.join(ROOT, "examples", "lamp.py"), wifi=scn).start()
    try:
        dev.wait_line(r"wifi: setup portal on http://", timeout=30)
        page = get(dev, "/setup").text
        assert re.search(r'<input id="d" name="name"[^>]*value="lamp"', page), page[-800:]
    finally:
        dev.stop()
