"""The admin page's MQTT section in headless Debian chromium (Playwright) against a simulated device
and a real Mosquitto: a connection test of values typed in, saving them (the device connects and
announces itself to Home Assistant, played by paho), the password never coming back to the page, and
no Content-Security-Policy violation on the way. Screenshot: build/screenshots/mqtt.png."""
import os
import shutil

import pytest

from mosquitto import USER, HomeAssistant, Mosquitto
from mqttdev import ADMIN_PW, Dev

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (requirements.txt)")
pytestmark = [pytest.mark.skipif(not CHROMIUM, reason="Debian chromium not installed (scripts/setup.sh)"),
              pytest.mark.timeout(120)]
SHOTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "build",
                     "screenshots")


def test_mqtt_section_tests_and_saves_the_broker(tmp_path):
    b = Mosquitto(tmp_path / "broker", extra=["allow_anonymous false"]).start()
    dev = Dev(tmp_path, "dev", {"expose": ["on", "bri"]})
    ha = None
    try:
        dev.boot()
        ha = HomeAssistant(b, user=USER, password="devpw")
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            try:
                page = browser.new_context(viewport={"width": 420, "height": 1000}).new_page()
                page.set_default_timeout(15000)
                problems = []
                # CSP violations and script errors show on the console; failed loads are checked by URL
                page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning")
                        and not m.text.startswith("Failed to load resource") else None)
                page.on("pageerror", lambda e: problems.append(str(e)))
                page.on("response", lambda r: problems.append("%d %s" % (r.status, r.url))
                        if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
                page.goto(dev.url("/admin"))
                page.fill("#pw", ADMIN_PW)
                page.click("#loginbtn")
                page.wait_for_selector("#statustable >> text=mqttdev")
                page.click("#nav >> text=MQTT")
                page.wait_for_selector("#mqttstatus >> text=not configured")
                assert dev.id in page.inner_text("#mqttstatus")
                page.fill("#mqtturl", b.url())
                page.fill("#mqttuser", USER)
                page.fill("#mqttpw", "wrong")
                page.click("text=Test connection")
                page.wait_for_selector("#mqtttest >> text=refused")
                page.fill("#mqttpw", "devpw")
                page.click("text=Test connection")
                page.wait_for_selector("#mqtttest >> text=connected")
                page.click("#mqttform button")
                page.wait_for_selector("#flash >> text=MQTT settings saved")
                ha.wait_json("homeassistant/device/%s/config" % dev.id)
                page.reload()
                page.wait_for_selector("#mqttstatus >> text=connected to 127.0.0.1")
                assert page.input_value("#mqttpw") == "" and "kept for the same host" in page.get_attribute("#mqttpw", "placeholder")
                assert page.input_value("#mqtturl") == b.url() and page.input_value("#mqttuser") == USER
                assert "devpw" not in page.content()
                os.makedirs(SHOTS, exist_ok=True)
                page.screenshot(path=os.path.join(SHOTS, "mqtt.png"), full_page=True)
                assert not problems, problems
            finally:
                browser.close()
    finally:
        if ha is not None:
            ha.close()
        dev.stop()
        b.stop()
