"""The admin page in a real browser: headless Debian chromium driven by Playwright against a simulated
device. Log in, change a persistent value, add a Wi-Fi network, run an OTA update from the fake
GitHub with the progress bar reaching 100 %, toggle an Alexa device. Screenshots of each page go to
build/screenshots/ (SCREENSHOTS_TO_DOCS=1: also docs/screenshots/, shown in the README)."""
import json
import os
import shutil

import pytest
import requests

from conftest import ROOT
from simdev import SimDevice

import espimage
from fake_github import FakeGitHub, device_env

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (requirements.txt)")
pytestmark = pytest.mark.skipif(not CHROMIUM, reason="Debian chromium not installed (scripts/setup.sh)")

APP = os.path.join(ROOT, "tests", "apps", "admin_app.py")
# every run saves its screenshots in build/screenshots; SCREENSHOTS_TO_DOCS=1 refreshes the README's
SHOTS = os.path.join(ROOT, "build", "screenshots")
DOCS_SHOTS = os.path.join(ROOT, "docs", "screenshots")
PASSWORD = "browser-pass-123"


@pytest.fixture(scope="module")
def github():
    gh = FakeGitHub().start()
    # a 600 KB image so the progress bar moves through several steps
    gh.add_release("acme/lamp", "0.2.0", espimage.build_app_image("0.2.0", size=600 * 1024))
    gh.chunk_delay_s = 0.01  # ~400 KB/s, a home connection's pace: the bar has time to move
    yield gh
    gh.stop()


@pytest.fixture(scope="module")
def device(tmp_path_factory, github):
    d = tmp_path_factory.mktemp("browser")
    wifi = d / "wifi.json"
    wifi.write_text(json.dumps({"networks": [{"ssid": "home", "password": "home-pass-42", "rssi": -48,
                                              "channel": 6, "up": True},
                                             {"ssid": "cafe", "password": "", "rssi": -75, "channel": 1,
                                              "up": True}]}))
    dev = SimDevice(d / "dev", app=APP, wifi=wifi, extra_env=device_env(github)).start()
    dev.wait_line("READY", timeout=30)
    dev.wait_line("wifi: setup portal on", timeout=30)  # unconfigured: the first password may be set now
    yield dev
    dev.stop()


@pytest.fixture(scope="module")
def page(device):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        ctx = browser.new_context(viewport={"width": 420, "height": 900})  # a phone-sized window
        pg = ctx.new_page()
        pg.set_default_timeout(15000)
        yield pg
        browser.close()


def shot(page, name):
    os.makedirs(SHOTS, exist_ok=True)
    path = os.path.join(SHOTS, name + ".png")
    page.screenshot(path=path, full_page=True)
    assert os.path.getsize(path) > 5000  # a real rendering, not an empty page
    if os.environ.get("SCREENSHOTS_TO_DOCS"):
        os.makedirs(DOCS_SHOTS, exist_ok=True)
        shutil.copy(path, os.path.join(DOCS_SHOTS, name + ".png"))


def flash_text(page):
    page.wait_for_selector("#flash .msg")
    return page.inner_text("#flash")


def test_1_set_password_and_log_in(device, page):
    asked = []
    page.on("request", lambda r: asked.append(r.url))
    page.goto(device.url("/admin"))
    page.wait_for_selector("text=Set the admin password")
    # the login screen shows no links to pages it cannot open, and the page asks for no favicon (404)
    assert not page.is_visible("#nav") and not [u for u in asked if "favicon" in u], asked
    page.fill("#pw", PASSWORD)
    page.click("#loginbtn")
    page.wait_for_selector("#statustable >> text=admintest")
    assert "ota_0" in page.inner_text("#statustable") and page.is_visible("#nav")
    shot(page, "status")
    # no answer at all (the device went away): said in words, not the browser's "Failed to fetch"
    page.route("**/admin/api/status", lambda route: route.abort())
    page.click("[data-page=status] [data-act=load]")
    assert "no answer from the device" in flash_text(page)
    page.unroute("**/admin/api/status")
    # a new browser context must log in with that password
    ctx = page.context.browser.new_context()
    other = ctx.new_page()
    other.goto(device.url("/admin"))
    other.wait_for_selector("#logintitle >> text=Log in")
    other.fill("#pw", "wrong-password")
    other.click("#loginbtn")
    assert "wrong password" in flash_text(other)
    other.fill("#pw", PASSWORD)
    other.click("#loginbtn")
    other.wait_for_selector("#statustable >> text=admintest")
    ctx.close()
    # the tab that set the first password logs out, then in again: its form is the login form now
    # (it offered "Set password" again, which the device answered with 401)
    page.goto(device.url("/admin#system"))
    page.click("[data-act=logout]")
    page.wait_for_selector("#logintitle >> text=Log in")
    assert page.inner_text("#loginbtn") == "Log in"
    page.fill("#pw", PASSWORD)
    page.click("#loginbtn")
    page.wait_for_selector("[data-page=system] >> text=Log out")   # logged in, back on the page it was on


def test_2_change_a_persistent_value(device, page):
    page.goto(device.url("/admin#vars"))
    page.wait_for_selector("#folders option:has-text('lamp')", state="attached")
    page.select_option("#folders", "lamp")
    page.click("text=Open")
    page.wait_for_selector("#vartable input[data-name=bri]")
    page.fill("#vartable input[data-name=bri]", "abc")
    page.click("#vartable tr:has(input[data-name=bri]) >> text=Save")
    assert "bri" in flash_text(page) and "int" in page.inner_text("#flash")
    page.fill("#vartable input[data-name=bri]", "42")
    page.click("#vartable tr:has(input[data-name=bri]) >> text=Save")
    page.wait_for_selector("#flash >> text=Saved bri = 42")
    shot(page, "variables")
    # the device really stored it: a fresh read of the folder says 42
    page.reload()
    page.wait_for_selector("#folders option:has-text('lamp')", state="attached")
    page.select_option("#folders", "lamp")
    page.click("text=Open")
    page.wait_for_selector("#vartable input[data-name=bri]")
    assert page.input_value("#vartable input[data-name=bri]") == "42"
    # an RGB value is shown as [r, g, b], and saved back as shown
    shown = page.input_value("#vartable input[data-name=rgb]")
    assert shown.startswith("["), shown
    page.fill("#vartable input[data-name=rgb]", "[1,2,3]")
    page.click("#vartable tr:has(input[data-name=rgb]) >> text=Save")
    page.wait_for_selector("#flash >> text=Saved rgb")


def test_3_add_a_wifi_network(device, page):
    page.goto(device.url("/admin#wifi"))
    page.click("button:has-text('Scan')")
    page.wait_for_selector("#scanlist option:has-text('home')", state="attached")
    page.select_option("#scanlist", "home")
    assert page.input_value("#ssid") == "home"
    page.fill("#wpw", "home-pass-42")
    page.click("#wifiaddbtn")
    page.wait_for_selector("#flash >> text=Network added")
    page.wait_for_selector("#knownnets >> text=home")
    # the device joins the router; the page shows it
    page.click("#nav >> text=Status")
    for _ in range(50):
        page.click("text=Refresh")
        page.wait_for_timeout(200)
        if "home 127.0.0.1" in page.inner_text("#statustable"):
            break
    assert "home 127.0.0.1" in page.inner_text("#statustable")
    page.goto(device.url("/admin#wifi"))
    page.wait_for_selector("#knownnets >> text=home")
    shot(page, "wifi")
    assert "home-pass-42" not in page.content()


def test_4_toggle_an_alexa_device(device, page):
    page.goto(device.url("/admin#alexa"))
    page.wait_for_selector("#alexatable >> text=on")
    box = page.locator("#alexatable input[type=checkbox]").first
    assert not box.is_checked()
    box.check()
    page.wait_for_selector("#flash >> text=Switched on")
    shot(page, "alexa")
    # the Hue API (what an Echo reads) sees the light on, once the owner let a Hue user pair
    page.click("text=Allow pairing for 60 s")
    page.wait_for_selector("#flash >> text=Pairing open for 60 s")
    user = requests.post(device.url("/api"), json={"devicetype": "test#browser"}, timeout=10).json()[0]
    state = requests.get(device.url("/api/%s/lights/1" % user["success"]["username"]), timeout=10).json()
    assert state["state"]["on"] is True
    # the app's own device cannot be removed here (its code adds it back at every boot, under a new
    # id); a WeMo device is added with the form as it comes (its "dimmable" box was ticked: a 400)
    assert page.locator("#alexatable >> text=from the app").count() == 1
    page.fill("#alexaname", "Heater")
    page.check("#alexawemo")
    assert page.locator("#alexadim").is_disabled() and not page.is_checked("#alexadim")
    page.click("#alexaadd button")
    page.wait_for_selector("#flash >> text=Added")
    page.wait_for_selector("#alexatable >> text=WeMo")
    page.click("#alexatable [data-act=removeDev]")
    page.wait_for_selector("#flash >> text=Removed")


def test_5_ota_update_with_progress_to_100(device, page):
    page.goto(device.url("/admin#ota"))
    page.wait_for_selector("#otastatus >> text=0.1.0")
    page.click("text=Check")
    page.wait_for_selector("#otacheck >> text=update available")
    seen = set()
    page.click("#otaupdate")
    for _ in range(300):
        seen.add(int(page.eval_on_selector("#otabar", "e => e.value")))
        if "100 %" in page.inner_text("#otatext"):
            break
        page.wait_for_timeout(50)
    assert "100 %" in page.inner_text("#otatext"), page.inner_text("#otatext")
    assert page.eval_on_selector("#otabar", "e => e.value") == 100
    assert len(seen) >= 2, seen  # it moved, not jumped from nothing to done
    shot(page, "ota")
    # the device reboots into the new image and confirms it after its health check
    device.wait_line(r"slot ota_1 \(pending verify\)", timeout=30)
    device.wait_line(r"health check passed", timeout=30)
