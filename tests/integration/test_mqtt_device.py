"""iotutils.Device with MQTT on simulated devices (tests/apps/mqtt_device_app.py), a real Mosquitto,
and paho-mqtt playing Home Assistant: discovery as HA reads it, states and commands of every exposed
type, changes made elsewhere (the app, the admin page, a Hue client) published, the restart button,
no ghost entities, the admin page's MQTT section and provisioning; and the faults: the broker killed
and restarted, a half-open link, Wi-Fi dropped and back, Home Assistant restarting, a power cut in
the middle of an update started from the update entity."""
import json
import os
import shlex
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from conftest import ROOT
from fake_github import FakeGitHub, device_env
from mosquitto import USER, HomeAssistant, Mosquitto, Proxy, broker_fixture, own_broker_fixture  # noqa: F401
from mqttdev import BOOT_TIMEOUT, Dev, check_discovery, write_wifi
from simdev import SimDevice, wait_until
from test_homeassistant import _check_component, _check_device

import espimage
import nvs_provision
from iotutils import __version__

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def devices():
    made = []
    yield made
    for d in made:
        d.stop()


@pytest.fixture
def ha(broker):
    h = HomeAssistant(broker)
    yield h
    h.close()


def boot(devices, tmp_path, name, cfg, env=None, **kw):
    d = Dev(tmp_path, name, cfg, env, **kw)
    devices.append(d)
    return d.boot()


# ---- discovery, states, commands ----

def test_entities_states_and_commands_through_home_assistant(tmp_path, broker, ha, devices):
    dev = boot(devices, tmp_path, "dev", {"mqtt": broker.url()})
    dev.wait_line(r"mqtt: announced 15 entities to homeassistant \(device mode\) under " + dev.base)
    cmps = check_discovery(ha.wait_json("homeassistant/device/%s/config" % dev.id), dev)
    kinds = {oid: c["p"] for oid, c in cmps.items()}
    assert kinds == {"app_on": "switch", "app_bri": "number", "app_count": "number", "app_gain": "number",
                     "app_label": "text", "app_effect": "select", "app_mask": "text", "app_colour": "light",
                     "alexa_1": "light", "restart": "button", "firmware": "update", "rssi": "sensor",
                     "heap": "sensor", "uptime": "sensor", "ip": "sensor"}
    assert (cmps["app_bri"]["min"], cmps["app_bri"]["max"], cmps["app_bri"]["step"]) == (0, 100, 1)
    assert cmps["app_effect"]["ops"] == ["none", "rainbow", "breathe"] and cmps["app_mask"]["ptrn"]
    assert cmps["alexa_1"]["name"] == "Desk lamp" and cmps["alexa_1"]["bri_scl"] == 100
    assert cmps["firmware"]["dev_cla"] == "firmware" and cmps["restart"]["dev_cla"] == "restart"
    # availability and a state for every entity that has one
    assert ha.wait(dev.t("status")) == b"online"
    want = {"app_on": b"OFF", "app_bri": b"50", "app_count": b"0", "app_gain": b"1.5", "app_label": b"hello",
            "app_effect": b"none", "app_mask": b"0x1f"}
    for oid, v in want.items():
        assert ha.wait(dev.t(oid)) == v, oid
    assert ha.wait_json(dev.t("app_colour")) == {"state": "ON", "brightness": 255, "color_mode": "rgb",
                                                 "color": {"r": 255, "g": 128, "b": 0}}
    assert ha.wait_json(dev.t("alexa_1"))["state"] == "OFF"
    fw = ha.wait_json(dev.t("firmware"))
    assert fw["installed_version"] == __version__ and fw["in_progress"] is False
    info = ha.wait_json(dev.t("info"))
    assert info["version"] == __version__ and info["ip"] == "127.0.0.1" and info["rssi"] == -55 and info["heap"] > 0

    # commands: each goes through the variable's coercion, the new state comes back
    def cmd(oid, payload, want):
        m = ha.mark()
        ha.send(dev.t(oid + "/set"), payload)
        return ha.wait(dev.t(oid), want, since=m, timeout=5)
    cmd("app_on", "ON", b"ON")
    cmd("app_bri", "250", b"100")                  # clamped to the range
    cmd("app_count", "42.6", b"42")                # the Int's own coercion: Int(42.6) is 42
    cmd("app_gain", "0.25", b"0.25")
    cmd("app_label", "a new label", b"a new label")
    cmd("app_effect", "rainbow", b"rainbow")
    cmd("app_mask", "0xFF", b"0xff")
    p = json.loads(cmd("app_colour", '{"state":"ON","color":{"r":0,"g":0,"b":255},"brightness":128}', None))
    assert p["color"] == {"r": 0, "g": 0, "b": 255} and p["brightness"] == 128
    # the colour HA sends is at full brightness, its brightness separate: (0, 0, 10) at 128 is blue at 128
    p = json.loads(cmd("app_colour", '{"state":"ON","color":{"r":0,"g":0,"b":10},"brightness":128}', None))
    assert p["color"] == {"r": 0, "g": 0, "b": 255} and p["brightness"] == 128
    assert json.loads(cmd("app_colour", '{"state":"OFF"}', None))["state"] == "OFF"
    p = json.loads(cmd("app_colour", '{"state":"ON"}', None))     # back to the colour it had
    assert p["color"] == {"r": 0, "g": 0, "b": 255} and p["brightness"] == 128
    # refused values: a log line, and the unchanged state published again (HA snaps back)
    for oid, bad, state in (("app_effect", "disco", b"rainbow"), ("app_bri", "lots", b"100"),
                            ("app_on", "maybe", b"ON"), ("app_mask", "xyz", b"0xff")):
        since = len(dev.lines)
        assert cmd(oid, bad, None) == state
        dev.wait_line(r"homeassistant: %s: " % oid, since=since, timeout=5)
    cmd("app_label", "longer than sixteen", b"longer than sixt")   # the Str truncates (max_length=16)
    cmd("app_mask", "-0x1f", b"-0x1f")             # a negative Hex as it prints (the pattern allows it)
    s = dev.admin()
    got = s.get(dev.url("/admin/api/vars/app"), timeout=10).json()["vars"]
    assert (got["on"]["value"], got["bri"]["value"], got["effect"]["value"], got["count"]["value"]) == \
        (True, 100, "rainbow", 42)
    # the Alexa light: the same on_change as a Hue client's, from the main loop
    since = len(dev.lines)
    p = json.loads(cmd("alexa_1", '{"state":"ON","brightness":40,"color":{"r":255,"g":0,"b":0}}', None))
    assert p["state"] == "ON" and p["brightness"] == 40 and p["color"] == {"r": 255, "g": 0, "b": 0}
    dev.wait_line(r"ONCHANGE Desk lamp on=True bri=40", since=since, timeout=5)

    # changes made elsewhere are published: the app, the admin page, a Hue client
    m = ha.mark()
    assert requests.post(dev.url("/t/set"), json={"name": "count", "value": 7}, timeout=10).json() == {"value": 7}
    ha.wait(dev.t("app_count"), b"7", since=m, timeout=3)
    r = s.put(dev.url("/admin/api/vars/app/label"), json={"value": "from the page"}, timeout=10)
    assert r.status_code == 200, r.text
    ha.wait(dev.t("app_label"), b"from the page", since=m, timeout=3)
    r = s.put(dev.url("/admin/api/alexa/devices/1"), json={"on": False}, timeout=10)
    assert r.status_code == 200, r.text
    ha.wait_json(dev.t("alexa_1"), lambda d: d["state"] == "OFF", since=m, timeout=3)
    assert "Traceback" not in dev.output()


def test_restart_button_and_no_ghost_entities(tmp_path, broker, ha, devices):
    dev = boot(devices, tmp_path, "dev", {"mqtt": broker.url()})
    topic = "homeassistant/device/%s/config" % dev.id
    assert "app_mask" in ha.wait_json(topic, lambda d: "app_mask" in d["cmps"])["cmps"]
    # the app no longer exposes mask and colour: after the restart HA is told to delete them
    dev.configure({"mqtt": broker.url(), "expose": ["on", "bri", "count", "gain", "label", "effect"]})
    m = ha.mark()
    since = len(dev.lines)
    ha.send(dev.t("restart/set"), "PRESS")
    assert ha.wait(dev.t("status"), b"offline", since=m, timeout=5)
    dev.wait_line(r"^  reset cause: soft$", since=since, timeout=BOOT_TIMEOUT)
    first = ha.wait_json(topic, since=m, timeout=20)
    assert first["cmps"]["app_mask"] == {"p": "text"} and first["cmps"]["app_colour"] == {"p": "light"}
    final = ha.wait_json(topic, lambda d: "app_mask" not in d["cmps"], since=m, timeout=5)
    assert "app_colour" not in final["cmps"] and "app_on" in final["cmps"]
    assert ha.wait(dev.t("status"), b"online", since=m) == b"online"
    assert json.loads(ha.last[topic]) == final          # what stays retained: no ghosts


def test_the_app_subscribes_from_a_web_handler_long_after_the_connect(tmp_path, broker, ha, devices):
    """The client's subscribing code is let go after each connect (mqtt/link.py, host firmware): a
    handler that subscribes loads it on the web thread's stack. The device must live on and get
    the messages (before the stack check: an app doing this could crash the device)."""
    dev = boot(devices, tmp_path, "dev", {"mqtt": broker.url(), "expose": ["on"]})
    assert ha.wait(dev.t("status")) == b"online"
    topic = "app/%s/late" % dev.id
    m = requests.get(dev.url("/t/modules"), timeout=10).json()
    assert m["preloaded"] or "iotutils.mqtt.link" not in m["loaded"], m   # (let go: the handler loads it)
    r = requests.post(dev.url("/t/subscribe"), json={"topic": topic}, timeout=10)
    assert r.status_code == 200 and r.json() == {"ok": True}, r.text
    since = len(dev.lines)
    ha.send(topic, "hello")
    dev.wait_line(r"^GOT %s hello$" % topic, since=since, timeout=5)
    r = requests.post(dev.url("/t/subscribe"), json={"topic": topic, "unsubscribe": True}, timeout=10)
    assert r.status_code == 200, r.text
    since = len(dev.lines)
    ha.send(topic, "gone")
    ha.send("app/%s/ping" % dev.id, "still here")   # (after the message that must not arrive)
    dev.wait_line(r"^PING still here$", since=since, timeout=5)
    assert not [line for line in dev.lines[since:] if line.startswith("GOT ")]
    assert requests.get(dev.url("/healthz"), timeout=10).status_code == 200


def test_component_mode_and_prefix_from_the_admin_page_clear_the_old_topics(tmp_path, broker, ha, devices):
    dev = boot(devices, tmp_path, "dev", {"mqtt": broker.url(), "expose": ["on", "bri"]})
    old = "homeassistant/device/%s/config" % dev.id
    ha.wait_json(old)
    s = dev.admin()
    m = ha.mark()
    r = s.put(dev.url("/admin/api/mqtt"), json={"mode": "component"}, timeout=10)
    assert r.status_code == 200, r.text
    assert ha.wait(old, b"", since=m, timeout=10) == b""            # the device-mode config is cleared
    c = ha.wait_json("homeassistant/switch/%s/app_on/config" % dev.id, since=m)
    _check_component(c, "switch", True, dev.base + "/")
    _check_device(c["dev"], dev.id, "mqttdev")
    assert c["avty_t"] == dev.t("status")
    ha.wait_json("homeassistant/update/%s/firmware/config" % dev.id, since=m)
    # the new client carries the app's own subscription and on_connect callback
    since = len(dev.lines)
    ha.send("app/%s/ping" % dev.id, "after the restart")
    dev.wait_line(r"^PING after the restart$", since=since, timeout=5)
    assert dev.output().count("APP CONNECTED") == 2
    # and back: every per-component config is cleared
    m = ha.mark()
    r = s.put(dev.url("/admin/api/mqtt"), json={"mode": ""}, timeout=10)
    assert r.status_code == 200, r.text
    ha.wait_json(old, since=m)
    assert ha.wait("homeassistant/switch/%s/app_on/config" % dev.id, b"", since=m) == b""


# ---- the admin page's MQTT section, provisioning ----

def test_admin_page_sets_and_tests_the_broker(tmp_path, devices):
    b = Mosquitto(tmp_path / "broker", extra=["allow_anonymous false"]).start()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)                      # accepts and never answers: a timeout
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))         # bound, not listening: refused at once
    try:
        dev = boot(devices, tmp_path, "dev", {"expose": ["on"]})
        s = dev.admin()
        r = s.get(dev.url("/admin/api/mqtt"), timeout=10).json()
        assert r["status"] is None and r["source"] is None and r["device_id"] == dev.id
        assert r["base_topic"] == dev.base and r["prefix"] == "homeassistant" and r["mode"] == "device"
        # a connection test of settings not saved yet: refused (no password), refused (wrong), connected
        t = s.post(dev.url("/admin/api/mqtt/test"), json={"url": b.url()}, timeout=15).json()
        assert t["result"] == "refused" and "not authorized" in t["reason"], t
        t = s.post(dev.url("/admin/api/mqtt/test"), json={"url": b.url(USER, "wrong")}, timeout=15).json()
        assert t["result"] == "refused", t
        t = s.post(dev.url("/admin/api/mqtt/test"), json={"url": b.url(), "user": USER, "password": "devpw"},
                   timeout=15).json()
        assert t["result"] == "connected", t
        t = s.post(dev.url("/admin/api/mqtt/test"), json={"url": "mqtt://127.0.0.1:%d" % silent.getsockname()[1]},
                   timeout=15).json()
        assert t["result"] == "timeout", t
        t = s.post(dev.url("/admin/api/mqtt/test"), json={"url": "mqtt://127.0.0.1:%d" % closed.getsockname()[1]},
                   timeout=15).json()
        assert t["result"] == "failed" and "refused" in t["reason"].lower(), t
        r = s.post(dev.url("/admin/api/mqtt/test"), json={"url": "http://x"}, timeout=15)
        assert r.status_code == 400 and "url" in r.json()["error"]
        r = s.put(dev.url("/admin/api/mqtt"), json={"url": "mqtts://127.0.0.1:8883"}, timeout=10)
        assert r.status_code == 400 and "ca" in r.json()["error"]
        # saved: credentials in the URL go to user/password; the password never comes back
        since = len(dev.lines)
        r = s.put(dev.url("/admin/api/mqtt"), json={"url": b.url(USER, "devpw"), "base": "iotutils/kitchen"},
                  timeout=10)
        assert r.status_code == 200, r.text
        dev.wait_line(r"mqtt: connected to 127.0.0.1:%d" % b.port, since=since, timeout=10)
        r = s.get(dev.url("/admin/api/mqtt"), timeout=10)
        j = r.json()
        assert "devpw" not in r.text and j["password_set"] is True and j["user"] == USER
        assert j["url"] == "mqtt://127.0.0.1:%d" % b.port and j["source"] == "admin"
        assert j["status"]["connected"] is True and j["base_topic"] == "iotutils/kitchen"
        # a test does not disturb the running client
        connects = j["status"]["connects"]
        t = s.post(dev.url("/admin/api/mqtt/test"), json={}, timeout=15).json()
        assert t["result"] == "connected", t
        time.sleep(1)
        st = s.get(dev.url("/admin/api/mqtt"), timeout=10).json()["status"]
        assert st["connected"] and st["connects"] == connects
        # secrets stay out of the variables page and the export
        assert "password" not in s.get(dev.url("/admin/api/vars/mqtt"), timeout=10).json()["vars"]
        assert "devpw" not in s.get(dev.url("/admin/api/export"), timeout=10).text
        # the page carries the section
        page = s.get(dev.url("/admin"), timeout=10).text
        assert 'data-page="mqtt"' in page and 'href="#mqtt"' in page
        assert "Traceback" not in dev.output()
    finally:
        silent.close()
        closed.close()
        b.stop()


def test_provisioned_broker_settings(tmp_path, devices):
    b = Mosquitto(tmp_path / "broker", extra=["allow_anonymous false"]).start()
    try:
        settings = tmp_path / "settings.json"
        settings.write_text(json.dumps({"mqtt": {"url": b.url(), "user": USER, "password": "devpw",
                                                 "prefix": "ha", "mode": "component"}}))
        image = tmp_path / "nvs.bin"
        out = nvs_provision.main([str(settings), "-o", str(image)])
        assert out == 0
        peer = HomeAssistant(b, prefix="ha", user=USER, password="devpw")
        dev = boot(devices, tmp_path, "dev", {"expose": ["on"]}, write_nvs=image)
        c = peer.wait_json("ha/switch/%s/app_on/config" % dev.id)
        assert c["cmd_t"] == dev.t("app_on/set")
        assert peer.wait(dev.t("status")) == b"online"
        peer.close()
    finally:
        b.stop()


# ---- faults ----

def test_broker_killed_and_restarted(tmp_path, own_broker, devices):
    ha = HomeAssistant(own_broker)
    dev = boot(devices, tmp_path, "dev", {"mqtt": own_broker.url(), "keepalive": 5, "expose": ["on", "bri"]})
    topic = "homeassistant/device/%s/config" % dev.id
    ha.wait_json(topic)
    ha.close()
    since = len(dev.lines)
    own_broker.kill()
    dev.wait_line(r"mqtt: connection lost", since=since, timeout=10)
    # the device goes on: the web server answers while the broker is away
    for _ in range(5):
        assert requests.get(dev.url("/healthz"), timeout=5).status_code == 200
        time.sleep(0.4)
    own_broker.start()                     # same port, no retained messages: they are all gone
    ha = HomeAssistant(own_broker)
    try:
        dev.wait_line(r"mqtt: connected to", since=since, timeout=15)
        check_discovery(ha.wait_json(topic, timeout=10), dev)        # announced again
        assert ha.wait(dev.t("status")) == b"online" and ha.wait(dev.t("app_bri")) == b"50"
        m = ha.mark()
        ha.send(dev.t("app_on/set"), "ON")
        ha.wait(dev.t("app_on"), b"ON", since=m, timeout=5)
        assert "reset cause" not in "\n".join(dev.lines[since:])   # never rebooted
        assert requests.get(dev.url("/healthz"), timeout=5).status_code == 200
    finally:
        ha.close()


def test_half_open_link(tmp_path, broker, ha, devices):
    proxy = Proxy(broker.port)
    try:
        dev = boot(devices, tmp_path, "dev", {"mqtt": "mqtt://127.0.0.1:%d" % proxy.port, "keepalive": 2,
                                              "expose": ["on"]})
        dev.wait_line(r"mqtt: announced")
        assert ha.wait(dev.t("status")) == b"online"
        time.sleep(1)
        since = len(dev.lines)
        m = ha.mark()
        proxy.frozen = True                     # the TCP link stays up, nothing gets through
        t0 = time.time()
        dev.wait_line(r"mqtt: connection lost: nothing from the broker .* link dead", since=since, timeout=8)
        assert time.time() - t0 <= 3.0 + 1.0
        ha.wait(dev.t("status"), b"offline", since=m, timeout=8)   # the broker gave up on it too: the will
        proxy.frozen = False
        dev.wait_line(r"mqtt: announced", since=since, timeout=10)
        ha.wait(dev.t("status"), b"online", since=m, timeout=5)
        assert requests.get(dev.url("/healthz"), timeout=5).status_code == 200
    finally:
        proxy.close()


def test_wifi_dropped_and_back(tmp_path, broker, ha, devices):
    dev = boot(devices, tmp_path, "dev", {"mqtt": broker.url(), "expose": ["on"]})
    dev.wait_line(r"mqtt: announced")
    m = ha.mark()
    since = len(dev.lines)
    write_wifi(dev.wifi_path, False)                   # the router goes away
    dev.wait_line(r"wifi: lost the connection", since=since, timeout=10)
    dev.wait_line(r"mqtt: connection lost: Wi-Fi lost", since=since, timeout=5)
    ha.wait(dev.t("status"), b"offline", since=m, timeout=5)
    time.sleep(2)
    assert "mqtt: connected" not in "\n".join(dev.lines[since:])   # no attempt without a network
    write_wifi(dev.wifi_path, True)
    t0 = time.time()
    dev.wait_line(r"wifi: connected to home", since=since, timeout=20)
    t1 = time.time()
    dev.wait_line(r"mqtt: the network is back: connecting now", since=since, timeout=5)   # no backoff wait
    dev.wait_line(r"mqtt: announced", since=since, timeout=5)
    assert time.time() - t1 < 2.0, "reconnected %.1f s after Wi-Fi" % (time.time() - t1)   # kicked, no backoff
    ha.wait(dev.t("status"), b"online", since=m, timeout=5)
    assert t1 - t0 < 20


def test_home_assistant_restart_is_answered_with_a_new_announcement(tmp_path, broker, ha, devices):
    dev = boot(devices, tmp_path, "dev", {"mqtt": broker.url(), "expose": ["on"], "announce_delay_ms": 1500})
    topic = "homeassistant/device/%s/config" % dev.id
    ha.wait_json(topic)
    delays = []
    for _ in range(4):
        m = ha.mark()
        since = len(dev.lines)
        t0 = time.time()
        ha.birth()
        ms = int(dev.wait_line(r"mqtt: Home Assistant is back: announcing again in (\d+) ms", since=since,
                               timeout=5).group(1))
        ha.wait_json(topic, since=m, timeout=5)
        delays.append((ms, time.time() - t0))
        assert ha.wait(dev.t("app_on"), since=m, timeout=2) and ha.wait(dev.t("status"), b"online", since=m)
    # a random delay in 0..announce_delay_ms (a house of devices does not answer all at once), kept
    assert all(0 <= ms <= 1500 and ms / 1000 - 0.05 <= dt <= ms / 1000 + 2.0 for ms, dt in delays), delays
    assert len({ms for ms, _ in delays}) > 1, delays


# ---- the update entity ----

@pytest.fixture
def gh():
    g = FakeGitHub().start()
    yield g
    g.stop()


def test_update_entity_power_cut_during_the_install_then_a_whole_install(tmp_path, broker, ha, gh, devices):
    gh.add_release("acme/lamp", "0.2.0", espimage.build_app_image("0.2.0", size=160 * 1024))
    gh.chunk_delay_s = 0.12            # 40 blocks of 4 KB: ~5 s of download
    dev = boot(devices, tmp_path, "dev", {"mqtt": broker.url(), "expose": ["on"], "health_timeout_s": 60},
               env=device_env(gh))
    fw = ha.wait_json(dev.t("firmware"), lambda d: d.get("latest_version") == "0.2.0", timeout=20)
    assert fw["installed_version"] == __version__ and fw["release_url"].endswith("/acme/lamp/releases/tag/0.2.0")
    m = ha.mark()
    ha.send(dev.t("firmware/set"), "install")
    ha.wait_json(dev.t("firmware"), lambda d: d["in_progress"] and (d["update_percentage"] or 0) >= 40,
                 since=m, timeout=20)
    dev.power_cut()                                       # in the middle of the download
    progress = [(t, json.loads(p)) for t, p in ha.messages(dev.t("firmware"), m)]
    pcts = [(t, d["update_percentage"]) for t, d in progress if d["in_progress"]]
    for (t0, a), (t1, b) in zip(pcts, pcts[1:]):         # at most every 5 % or 2 s
        assert b - a >= 5 or t1 - t0 >= 1.8, pcts
    m = ha.mark()
    dev.boot()
    r = ha.wait_json(dev.t("ota/result"), since=m, timeout=20)
    assert r["version"] == "0.2.0" and r["ok"] is False and "interrupted" in r["error"]
    fw = ha.wait_json(dev.t("firmware"), lambda d: d.get("latest_version") == "0.2.0", since=m, timeout=20)
    assert fw["installed_version"] == __version__ and fw["in_progress"] is False
    # again, and the power goes the moment the image is installed, before the device's own reset:
    # it comes back on the new image, which is confirmed once it reached the broker
    gh.chunk_delay_s = 0
    m = ha.mark()
    since = len(dev.lines)
    ha.send(dev.t("firmware/set"), "install")
    dev.wait_line(r"mqtt: 0\.2\.0 installed, rebooting into it", since=since, timeout=30)
    dev.power_cut()
    since = len(dev.lines)
    dev.boot()
    dev.wait_line(r"^  firmware: slot ota_1 \(pending verify\), micropython 0\.2\.0", since=since, timeout=5)
    dev.wait_line(r"health check passed, image confirmed", since=since, timeout=30)
    r = ha.wait_json(dev.t("ota/result"), since=m, timeout=20)
    assert r == {"version": "0.2.0", "ok": True, "error": None}
    fw = ha.wait_json(dev.t("firmware"), lambda d: d["installed_version"] == "0.2.0", since=m, timeout=10)
    assert fw["latest_version"] == "0.2.0" and fw["in_progress"] is False
    ha.wait_json(dev.t("info"), lambda d: d["version"] == "0.2.0", since=m, timeout=10)


def test_the_update_entitys_check_lets_the_network_code_go_when_nothing_is_newer(tmp_path, broker, ha, gh, devices):
    # Home Assistant's update entity asks the OTA source every few hours; when nothing newer is
    # offered, the HTTP client, the release scanner and the image format leave the heap until the
    # next question (an install would load them again)
    gh.add_release("acme/lamp", "0.0.1", espimage.build_app_image("0.0.1", size=64 * 1024))   # older
    dev = boot(devices, tmp_path, "dev", {"mqtt": broker.url(), "expose": ["on"]}, env=device_env(gh))
    fw = ha.wait_json(dev.t("firmware"), lambda d: "older than" in (d.get("release_summary") or ""), timeout=20)
    assert fw["latest_version"] == fw["installed_version"] == __version__

    def loaded():
        return requests.get(dev.url("/t/modules"), timeout=10).json()

    if loaded()["preloaded"]:
        pytest.skip("the simulator's heap model (PyPI runtime) imports the whole toolbox at boot, as if "
                    "frozen, and keeps it; the host firmware (FIRMWARE=build/unix/micropython) unloads")
    network = {"iotutils.ota.client", "iotutils.ota.release", "iotutils.appimage"}
    wait_until(lambda: not network & set(loaded()["loaded"]), what="the network code unloaded after the check")
    # nor the settings' code, which only the client's making and the admin page's MQTT tab use, nor
    # the discovery configs, which the device needed while it announced itself, nor the client's
    # connecting code (let go after the connect), nor MqttDevice's start and OTA jobs (let go after
    # start() and after this check)
    held = loaded()["loaded"]
    assert "iotutils.mqtt_device" in held and "iotutils.homeassistant" in held and "iotutils.mqtt" in held
    assert not {"iotutils.mqtt_settings", "iotutils.ha_discovery", "iotutils.mqtt.link",
                "iotutils.mqtt_device_more"} & set(held), held


# ---- make sim SIM_MQTT=... ----

class MakeSimLamp(SimDevice):
    """examples/lamp.py started with exactly the command line of `make sim SIM_MQTT=<url>`."""

    def __init__(self, state, url):
        SimDevice.__init__(self, state)
        out = subprocess.run(["make", "-n", "--no-print-directory", "sim", "SIM_STATE=" + str(state),
                              "SIM_PORT=%d" % self.port, "SIM_MQTT=" + url], cwd=ROOT, capture_output=True,
                             text=True, timeout=30).stdout
        self.cmd = shlex.split([x for x in out.splitlines() if "scripts/sim.py" in x][0])
        self.id = "iotutils-020000%06x" % self.port
        self.base = "iotutils/" + self.id

    def start(self):
        self.mark = len(self.lines)
        self.proc = subprocess.Popen([sys.executable] + self.cmd[1:], cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        return self

    def t(self, topic):
        return self.base + "/" + topic


def test_make_sim_lamp_on_a_broker(tmp_path, broker, ha):
    lamp = MakeSimLamp(tmp_path / "lamp", broker.url())
    assert lamp.cmd[-3:] == ["--mqtt", broker.url(), "examples/lamp.py"], lamp.cmd
    lamp.start()
    try:
        # as for `make sim` alone, the lamp first joins the simulated Wi-Fi through its setup page
        lamp.wait_line(r"wifi: setup portal on", timeout=BOOT_TIMEOUT)
        assert "mqtt: connected" not in lamp.output()          # no network yet, no broker
        r = requests.post(lamp.url("/setup"), json={"ssid": "home", "password": "secret-home", "admin": "lamp-admin-1"},
                          timeout=10)
        assert r.status_code == 200, r.text
        lamp.wait_line(r"mqtt: announced 9 entities", timeout=20)
        cmps = check_discovery(ha.wait_json("homeassistant/device/%s/config" % lamp.id), lamp, "lamp")
        assert (cmps["lamp_on"]["p"], cmps["lamp_on"]["name"]) == ("switch", "Lamp")
        assert (cmps["lamp_bri"]["p"], cmps["lamp_bri"]["min"], cmps["lamp_bri"]["max"]) == ("number", 0, 100)
        assert (cmps["alexa_1"]["p"], cmps["alexa_1"]["name"]) == ("light", "Desk lamp")
        # Home Assistant switches the lamp on at 35 %: the LED and the Alexa light follow
        m = ha.mark()
        since = len(lamp.lines)
        ha.send(lamp.t("lamp_bri/set"), "35")
        ha.send(lamp.t("lamp_on/set"), "ON")
        lamp.wait_line(r"LED rgb=\(89,63,35\)", since=since, timeout=5)
        ha.wait_json(lamp.t("alexa_1"), lambda d: d["state"] == "ON" and d["brightness"] == 35, since=m, timeout=5)
        # and its Alexa light, as a Hue client would: the lamp's own on_change
        ha.send(lamp.t("alexa_1/set"), '{"state":"ON","brightness":80}')
        ha.wait(lamp.t("lamp_bri"), b"80", since=m, timeout=5)
        lamp.wait_line(r"LED rgb=\(204,144,80\)", since=since, timeout=5)
        r = requests.get(lamp.url("/api/lamp"), timeout=10).json()
        assert r == {"on": True, "brightness": 80, "rgb": [255, 180, 100]}
    finally:
        lamp.stop()


def test_mqtt_that_does_not_fit_in_the_heap_is_left_off_and_the_device_goes_on(broker, devices, tmp_path):
    # a Bridge whose entity table ran the heap out at start (too many exposed variables) raised out
    # of Device.start(): the device restarted in a loop, its web server and admin page gone
    dev = Dev(tmp_path, "oom", {"mqtt": broker.url(), "bridge_oom": True})
    devices.append(dev)
    dev.boot()
    dev.wait_line(r"mqtt: not started: out of memory for \d+ exposed variables", timeout=10)
    s = dev.admin()
    assert s.get(dev.url("/admin/api/status"), timeout=10).status_code == 200
    assert s.get(dev.url("/admin/api/mqtt"), timeout=10).json()["status"] is None
    time.sleep(2)
    assert dev.alive() and "crashed" not in "\n".join(dev.lines)
