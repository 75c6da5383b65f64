# The device side of MQTT (iotutils/mqtt_settings.py, iotutils/mqtt_device.py) without a broker:
# settings checked as the admin page and provisioning check them, the entity each persistent type
# becomes, colours, an RGB variable as a light, persist.changes() and PersistentStr(choices=).
# Runs on CPython and MicroPython. The wiring itself: tests/integration/test_mqtt_device.py.
from mpunit import failing_at_write, flash_writes, raises

from iotutils import homeassistant as ha
from iotutils import mqtt_settings as ms
from iotutils import nvs, persist, store
from iotutils.hal.flash import RamFlash
from iotutils.mqtt.codec import parse_url
from iotutils.mqtt_device import MqttDevice, entity_for, hs_rgb, object_id, rgb_command, rgb_hs
from iotutils.persist import (PersistentBool, PersistentFloat, PersistentHex, PersistentInt, PersistentJSON,
                              PersistentRange, PersistentRGB, PersistentStr)

CA = "-----BEGIN CERTIFICATE-----\nMIIBdgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n-----END CERTIFICATE-----\n"


_FLASH = []


def fresh():
    # the board's 24 KB NVS partition, erased for each use: one buffer for the whole module (a new
    # one per call made the all-or-nothing loop below depend on where the host firmware's unit heap
    # happened to have a free 24 KB block)
    if not _FLASH:
        _FLASH.append(RamFlash(0x6000))
    buf = _FLASH[0].buf
    ff = b"\xff" * 256
    for i in range(0, len(buf), 256):
        buf[i:i + 256] = ff
    store.use(nvs.NVS(_FLASH[0]), "nvs")


def test_settings_are_checked_and_credentials_leave_the_url():
    out = ms.check({"url": "mqtt://dev:p%40ss:w@broker.lan", "prefix": "ha", "mode": "component",
                    "base": "home/lamp"})
    assert out == {"url": "mqtt://broker.lan:1883", "user": "dev", "password": "p@ss:w", "prefix": "ha",
                   "mode": "component", "base": "home/lamp"}
    # given separately, the fields win over the URL's credentials
    assert ms.check({"url": "mqtt://a:b@h", "user": "x"}) == {"url": "mqtt://h:1883", "user": "x", "password": "b"}
    assert ms.check({"url": "", "prefix": None}) == {"url": "", "prefix": ""}
    for bad, field in (({"url": "http://h"}, "url"), ({"url": "mqtts://h"}, "ca"), ({"mode": "x"}, "mode"),
                       ({"prefix": "a/+/b"}, "prefix"), ({"base": "a/"}, "base"), ({"base": "x#"}, "base"),
                       ({"ca": "-----BEGIN CERTIFICATE-----\n!!\n"}, "ca"), ({"user": 1}, "user"),
                       ({"password": "p" * 129}, "password"), ({"host": "h"}, "host"),
                       # what the client refuses later is refused when saved (it turned MQTT off)
                       ({"user": "a\x00b"}, "user"), ({"user": "a\x01"}, "user"), ({"url": "mqtt://h\x00st"}, "url"),
                       ({"base": "a\x1fb"}, "base"), ({"prefix": "h\x7fa"}, "prefix"),
                       ({"ca": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}, "ca")):
        e = raises(ValueError, ms.check, bad)
        assert str(e).startswith(field + ":"), (bad, e)
    raises(ValueError, ms.check, "mqtt://h")
    assert ms.check({"url": "mqtts://h", "ca": CA})["url"] == "mqtts://h:8883"
    assert ms.check({"url": "mqtts://h"}, {"ca": CA}) == {"url": "mqtts://h:8883"}   # a CA stored before
    # the URL the client gets back parses to the same credentials, whatever they hold
    u = ms._url(False, "::1", 1884, "us@r/é", "p:w d%")
    assert parse_url(u) == (False, "::1", 1884, "us@r/é", "p:w d%")
    assert ms.redact(u) == "mqtt://us%40r%2F%C3%A9@[::1]:1884" and ms.redact("") == ""


def test_settings_stored_load_and_precedence():
    fresh()
    assert ms.load()["url"] == "" and ms.load()["source"] is None
    s = ms.load("mqtt://c:cpw@code.lan")
    assert s["url"] == "mqtt://c:cpw@code.lan:1883" and s["source"] == "code" and s["prefix"] == "homeassistant"
    ms.save({"user": "admin", "password": "apw"}, "mqtt://c:cpw@code.lan")
    assert ms.load("mqtt://c:cpw@code.lan")["url"] == "mqtt://admin:apw@code.lan:1883"
    ms.save({"url": "mqtt://code.lan:1999"}, "mqtt://c:cpw@code.lan")   # the same host: its credentials stay
    assert ms.load("mqtt://c:cpw@code.lan")["url"] == "mqtt://admin:apw@code.lan:1999"
    ms.save({"url": "mqtt://stored.lan:1999", "password": "spw"}, "mqtt://c:cpw@code.lan")
    s = ms.load("mqtt://c:cpw@code.lan")
    # another host: the user given for code.lan is not sent to it, the password given with it is
    assert s["url"] == "mqtt://stored.lan:1999" and s["source"] == "admin" and s["password"] == "spw"
    assert ms.setting("url").value == "mqtt://stored.lan:1999"         # no credentials on flash
    assert persist.is_secret("mqtt", "password") and "spw" not in persist.export_json()
    ms.save({"url": "", "user": "u"}, "mqtt://c:cpw@code.lan")          # back to the code's
    assert ms.load("mqtt://c:cpw@code.lan")["url"] == "mqtt://u:cpw@code.lan:1883"
    # cleared, then another broker: the old password never reaches it
    ms.save({"url": "mqtt://a.lan", "user": "au", "password": "apw"})
    ms.save({"url": ""})
    ms.save({"url": "mqtt://evil.lan"})
    assert ms.load()["url"] == "mqtt://evil.lan:1883" and ms.setting("password").value == ""
    ms.save({"url": "mqtt://a.lan", "user": "au", "password": "apw"})
    ms.save({"url": "mqtts://a.lan", "ca": CA})                         # TLS to the same host keeps them
    assert ms.load()["url"] == "mqtts://au:apw@a.lan:8883"
    raises(ValueError, ms.save, {"mode": "both"})
    assert ms.load()["mode"] == "device"
    # a test of settings not saved: laid over the stored ones, nothing written
    assert ms.load(None, ms.check({"url": "mqtt://t.lan", "prefix": ""}))["url"] == "mqtt://au:apw@t.lan:1883"
    assert ms.load(None, ms._changes({"url": "mqtt://t.lan"}, None))["url"] == "mqtt://t.lan:1883"
    assert ms.setting("url").value == "mqtts://a.lan:8883" and ms.setting("password").value == "apw"


def test_settings_are_saved_all_or_nothing():
    """A move from one broker to another that fails at any flash write (full partition, no memory)
    keeps the old settings whole: before, a new plain mqtt:// URL could be stored with the old
    broker's password still in place, and the device sent it to the new broker in the clear."""
    old_url = "mqtts://u1:p1@a.lan"
    move = {"url": "mqtt://b.lan", "user": "u2", "password": "p2", "ca": ""}
    fresh()
    ms.save({"url": old_url, "ca": CA})
    before = ms.load()["url"]
    writes = flash_writes(ms.save, move)
    after = ms.load()["url"]
    assert (before, after) == ("mqtts://u1:p1@a.lan:8883", "mqtt://u2:p2@b.lan:1883"), (before, after)
    for k in range(1, writes + 1):
        fresh()
        ms.save({"url": old_url, "ca": CA})
        failing_at_write(k, ms.save, move)
        assert ms.load()["url"] in (before, after), (k, ms.load()["url"])


def _pem(n, fill):
    from binascii import b2a_base64
    der = b"\x30\x82" + bytes((n >> 8, n & 255)) + bytes([fill]) * n
    body = b2a_base64(der).decode().replace("\n", "")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


def test_the_largest_ca_can_be_replaced_on_the_boards_partition():
    """A CA near its 8000-character limit replaced by another on the board's 24 KB NVS partition
    that holds other values too (in the settings' journal it needed room for three copies: ENOSPC)."""
    fresh()
    for i in range(30):
        PersistentInt("v%d" % i, folder="app").value = i
    a, b = _pem(5800, 1), _pem(5800, 2)
    assert 7500 < len(a) <= 8000
    ms.save({"url": "mqtts://u:p@h.lan", "ca": a})
    ms.save({"url": "mqtts://u2:p2@h2.lan", "ca": b})
    assert ms.load()["ca"] == b and ms.load()["url"] == "mqtts://u2:p2@h2.lan:8883"


class _Var:
    pass


def test_each_persistent_type_becomes_the_entity_it_implies():
    fresh()
    x = [entity_for(v, object_id(v), "N") for v in (
        PersistentBool("on", folder="app"), PersistentRange("bri", 0, 100, folder="app"),
        PersistentRange("temp", 5.0, 30.0, folder="app"), PersistentInt("n", folder="app"),
        PersistentFloat("f", folder="app"), PersistentStr("s", folder="app", max_length=40),
        PersistentStr("long", folder="app"), PersistentStr("fx", folder="app", choices=("a", "b")),
        PersistentHex("mask", folder="app"), PersistentRGB("col", folder="my app"))]
    assert [e[0] for e in x] == ["switch", "number", "number", "number", "number", "text", "text", "select",
                                 "text", "light"]
    assert x[1][3] == {"min": 0, "max": 100, "step": 1, "int": True, "mode": "slider"}
    assert x[2][3]["step"] == 0.25 and not x[2][3]["int"]
    assert x[5][3] == {"max": 40} and x[6][3] == {"max": 255} and x[7][3] == {"options": ["a", "b"]}
    assert x[8][3]["hex"] and x[9][1] == "my_app_col" and x[9][3]["rgb"]
    t = entity_for(PersistentRGB("col", folder="app"), "c", "C", "text")
    assert t[0] == "text" and t[3]["pattern"]
    # every one makes a valid discovery message
    assert ha.discovery({"id": "iotutils-0200", "name": "d"}, x)
    e = raises(ValueError, entity_for, PersistentJSON("cfg", folder="app"), "c", "C")
    assert "app/cfg" in str(e) and "json" in str(e)
    raises(ValueError, entity_for, PersistentBool("b", folder="app"), "b", "B", "text")


def test_choices_and_the_change_counter():
    fresh()
    fx = PersistentStr("fx", folder="app", choices=("none", "rainbow"))
    assert fx.value == "none"
    assert "not one of none, rainbow" in str(raises(ValueError, fx.set, "disco"))
    raises(ValueError, PersistentStr, "fx2", "disco", "app", None, ("none",))
    n = persist.changes()
    fx.value = "rainbow"
    fx.value = "rainbow"                     # the same value: nothing written, still counted
    assert persist.changes() == n + 2
    fx.reset()
    persist.delete("fx", "app")
    persist.import_json({"app": {"fx": "none"}})
    assert persist.changes() == n + 5


def test_colours():
    assert hs_rgb(0, 254) == (255, 0, 0) and hs_rgb(21845, 254) == (0, 255, 0) and hs_rgb(43690, 254) == (0, 0, 255)
    assert hs_rgb(12345, 0) == (255, 255, 255)
    for rgb in ((255, 0, 0), (0, 128, 255), (255, 200, 10), (10, 255, 80)):
        h, s = rgb_hs(rgb)
        back = hs_rgb(h, s)
        m = max(rgb)
        assert all(abs(a - b * 255 // m) <= 3 for a, b in zip(back, rgb)), (rgb, h, s, back)
    assert rgb_hs((0, 0, 0)) == (0, 0) and rgb_hs((90, 90, 90)) == (0, 0)


def test_an_rgb_variable_as_a_light():
    assert rgb_command((255, 128, 0), {"rgb": (0, 0, 255), "brightness": 128}) == (0, 0, 128)
    assert rgb_command((0, 0, 128), {"on": False}) == (0, 0, 0)
    assert rgb_command((0, 0, 0), {"on": True}, (0, 0, 128)) == (0, 0, 128)     # the colour it had
    assert rgb_command((0, 0, 0), {"on": True}) == (255, 255, 255)
    assert rgb_command((0, 0, 128), {"brightness": 255}) == (0, 0, 255)
    assert rgb_command((0, 0, 128), {"rgb": (255, 0, 0)}) == (128, 0, 0)       # keeps its brightness
    # a command's colour is at full brightness, its brightness separate (Home Assistant sends both):
    # (10, 20, 30) with brightness 255 is that hue at full brightness, not a dim light
    assert rgb_command((0, 0, 128), {"on": True, "rgb": (10, 20, 30), "brightness": 255}) == (85, 170, 255)
    assert rgb_command((0, 0, 128), {"rgb": (1, 2, 3)}) == (42, 85, 128)      # a colour alone keeps it too


def test_an_rgb_light_dimmed_to_almost_nothing_keeps_its_colour():
    """The variable holds the dimmed channels only: orange (255, 128, 0) at brightness 1 is (1, 0, 0),
    red. Brightened again from Home Assistant it came back red, and the state said red meanwhile."""
    fresh()
    md = MqttDevice(None, "mqtt://127.0.0.1:1")
    var = PersistentRGB("glow", default=(255, 128, 0), folder="rgbmem")
    oid = md.expose(var)
    md._set(oid, {"brightness": 1})
    assert var.value == (1, 0, 0)
    assert md._value(oid) == {"on": True, "brightness": 1, "rgb": (255, 128, 0)}
    md._set(oid, {"brightness": 255})
    assert var.value == (255, 128, 0)
    md._set(oid, {"brightness": 2})
    md._set(oid, {"on": False})
    assert var.value == (0, 0, 0) and md._value(oid)["on"] is False
    md._set(oid, {"on": True, "brightness": 200})   # back on: the colour it had
    assert var.value == (200, 100, 0)
    var.value = (0, 1, 0)   # set by the program meanwhile: its own channels are its colour
    md._set(oid, {"brightness": 255})
    assert var.value == (0, 255, 0)
    assert md._value(oid) == {"on": True, "brightness": 255, "rgb": (0, 255, 0)}


def test_a_rollout_message_names_a_version_in_printable_ascii():
    # anyone on the broker may publish iotutils/fleet/rollout: an escaped lone surrogate for a
    # version came back in the device's result topic and its NVS record as no UTF-8 at all
    fresh()
    md = MqttDevice(None, "mqtt://127.0.0.1:1")
    md._rollout_msg("iotutils/fleet/rollout", b'{"version": "2.1.0", "percent": 50}')
    assert md._rollout == {"version": "2.1.0", "percent": 50}
    for bad in (b'{"version": "\\ud800", "percent": 100}', b'{"version": "", "percent": 100}',
                b'{"version": "1.0 beta", "percent": 100}', b'{"version": "caf\xc3\xa9", "percent": 100}',
                b'{"version": "%s", "percent": 100}' % (b"9" * 33), b'{"version": 2, "percent": 100}', b"[1"):
        md._rollout = None
        md._rollout_msg("iotutils/fleet/rollout", bad)
        assert md._rollout is None, bad


def test_a_code_url_that_is_not_a_broker_url():
    fresh()
    s = ms.load("http://broker.lan")
    assert s["url"] == "" and "mqtt://" in s["error"] and s["source"] == "code"
    ms.save({"url": "mqtt://fixed.lan"})                 # the admin page's wins, and works
    s = ms.load("http://broker.lan")
    assert s["url"] == "mqtt://fixed.lan:1883" and s["error"] is None


def test_the_settings_code_is_let_go_once_the_client_is_made():
    # the admin page's MQTT tab is its only other user: a device keeps none of it while it runs
    import sys

    from iotutils import _compat
    from iotutils import mqtt_device
    fresh()
    _compat.unload("iotutils.mqtt_settings")
    md = MqttDevice(None, "mqtt://127.0.0.1:1")
    assert "iotutils.mqtt_settings" not in sys.modules
    assert md.id == ms.device_id() and md.client.client_id == md.id and md.base == "iotutils/" + md.id
    assert mqtt_device.FOLDER == ms.FOLDER   # the job record and the announced entities live there


def test_expose_refuses_what_home_assistant_would_and_an_id_already_taken():
    """Two variables with one object id: the second replaced the first in HA without a word. A
    variable HA refuses (a Range of one value, an empty choice) was accepted, and the announcement
    then failed at every connect (at boot: the device restarted in a loop)."""
    fresh()
    md = MqttDevice(None, "mqtt://127.0.0.1:1")
    assert md.expose(PersistentBool("y_z", folder="x")) == "x_y_z"
    e = raises(ValueError, md.expose, PersistentRange("z", 0, 10, folder="x_y"))
    assert str(e).startswith("name: x_y/z has the Home Assistant id 'x_y_z' of x/y_z"), e
    assert md.expose(PersistentBool("led 1")) == "default_led_1"
    raises(ValueError, md.expose, PersistentBool("led.1"))
    assert md.expose(PersistentBool("y_z", folder="x"), "Again") == "x_y_z"   # the same variable: fine
    assert str(raises(ValueError, md.expose, PersistentRange("fixed", 5, 5))).startswith("max:")
    assert str(raises(ValueError, md.expose, PersistentStr("m", choices=("", "eco")))).startswith("options:")
    assert md.expose(PersistentBool("restart")) == "default_restart"
    assert sorted(md._vars) == ["default_led_1", "default_restart", "x_y_z"]
    assert sorted(e[1] for e in md._entities()[:3]) == ["default_led_1", "default_restart", "x_y_z"]
