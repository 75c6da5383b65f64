"""Simulated devices running tests/apps/mqtt_device_app.py (iotutils.Device with MQTT), for
tests/integration/test_mqtt_device.py and test_mqtt_fleet.py.

    dev = Dev(tmp_path, "dev", {"mqtt": broker.url()}, env=device_env(gh)).boot()
    dev.id, dev.base, dev.t("app_on/set")          # its MQTT id and topics
    dev.admin()                                     # a logged-in admin session (requests)
"""
import json
import os

import requests

from conftest import ROOT
from simdev import SimDevice
from test_homeassistant import _check_component, _check_device

import nvs_provision

APP = os.path.join(ROOT, "tests", "apps", "mqtt_device_app.py")
BOOT_TIMEOUT = 40
ADMIN_PW = "mqtt-admin-pw"
PWHASH = nvs_provision.hash_password(ADMIN_PW)


def write_wifi(path, up):
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"networks": [{"ssid": "home", "password": "home-secret", "rssi": -55, "channel": 6,
                                 "up": up}]}, f)
    os.replace(tmp, str(path))


class Dev(SimDevice):
    """A simulated device running mqtt_device_app.py, on Wi-Fi "home"."""

    def __init__(self, tmp_path, name, cfg, env=None, write_nvs=None):
        self.wifi_path = tmp_path / (name + "-wifi.json")
        write_wifi(self.wifi_path, True)
        SimDevice.__init__(self, tmp_path / name, app=APP, wifi=self.wifi_path, extra_env=env, write_nvs=write_nvs)
        os.makedirs(os.path.join(self.state_dir, "fs"), exist_ok=True)
        self.configure(cfg)
        # the MAC (so the client id) comes from the port: scripts/sim.py
        self.id = "iotutils-020000%06x" % self.port
        self.base = "iotutils/" + self.id

    def configure(self, cfg):
        cfg = dict({"networks": [["home", "home-secret"]], "admin_pwhash": PWHASH, "wifi_retry_s": 1}, **cfg)
        with open(os.path.join(self.state_dir, "fs", "device_cfg.json"), "w") as f:
            json.dump(cfg, f)

    def boot(self):
        self.start()
        self.wait_line(r"heap free after start", timeout=BOOT_TIMEOUT)
        self.wait_http()
        return self

    def admin(self):
        s = requests.Session()
        r = s.post(self.url("/admin/api/login"), json={"password": ADMIN_PW}, timeout=10)
        assert r.status_code == 200, r.text
        s.headers["X-CSRF-Token"] = r.json()["csrf"]
        return s

    def t(self, topic=""):
        return self.base + ("/" + topic if topic else "")


def check_discovery(cfg, dev, name="mqttdev"):
    """A device-mode discovery payload as Home Assistant reads it (the rules of the unit tests)."""
    _check_device(cfg["dev"], dev.id, name)
    assert cfg["avty_t"] == dev.t("status") and cfg["o"]["name"] == "iotutils"
    for oid, c in cfg["cmps"].items():
        _check_component(c, c["p"], False, dev.base + "/")
        assert c["uniq_id"] == "%s_%s" % (dev.id, oid)
    return cfg["cmps"]
