# Device's arguments and dev.every(): bad input is a ValueError (TypeError for what is not a
# function) naming the field, at the call, on CPython and MicroPython.
from mpunit import raises

from iotutils import device_more
from iotutils.device import Device


def test_allowed_hosts_is_a_list_of_names():
    # "example.com" was taken as its letters ('e', 'x', ...), None was an unclear TypeError
    for bad in ("example.com", [5], [b"x.example"]):
        assert raises(ValueError, Device, allowed_hosts=bad).args[0].startswith("allowed_hosts"), bad


class _Loop:
    # what every() touches of a Device: its task list (the rest of a Device is the integration tests');
    # Device hands every() out from device_more.py
    every = device_more.every

    def __init__(self):
        self._tasks = []


def test_every_takes_a_function_and_a_period_that_comes_round():
    loop = _Loop()
    for bad in (-1, 1 << 29, 10 ** 40, 1.5, "10", True, None):
        assert raises(ValueError, loop.every, bad, print).args[0].startswith("period_ms"), bad
    for bad in (5, "f"):   # it failed at every pass of the main loop instead
        assert raises(TypeError, loop.every, 10, bad).args[0].startswith("fn"), bad
    assert loop._tasks == []
    assert loop.every(10, print) is print and len(loop._tasks) == 1
    assert loop.every(20)(len) is len and len(loop._tasks) == 2   # the decorator form


def test_the_name_is_printable_text_of_1_to_32_characters():
    # "" gave a device without a name; 40 characters were cut at 32 without a word
    for bad in ("", "   ", "x" * 33, "a\nb", "tab\there", 5, None, b"lamp"):
        assert raises(ValueError, Device, name=bad).args[0].startswith("name"), bad

    class Named:
        name = Device.name

        def __init__(self):
            from iotutils.persist import PersistentStr
            self._name = PersistentStr("name", default="lamp", folder="devargs")

    dev = Named()
    for bad in ("", "x" * 33, 7):
        assert raises(ValueError, setattr, dev, "name", bad).args[0].startswith("name"), bad
    assert dev.name == "lamp"
    dev.name = "Kitchen lamp \u00e9"
    assert dev.name == "Kitchen lamp \u00e9"


def test_the_programs_broker_and_ota_source_are_checked_at_once():
    # they were logged ("mqtt: settings not usable", "ota: source not usable") and the device ran
    # without them: a typo in the program looked like a device that would not connect
    for bad in (5, "http://broker", "mqtt://host/path", b"mqtt://host"):
        e = raises(ValueError, Device, mqtt=bad, wifi=False, alexa=False, admin=False, ota=False)
        assert e.args[0].startswith("mqtt: "), (bad, e.args)
    for kw, field in ((dict(ota_repo="no-slash"), "ota_repo"), (dict(ota_repo="a/b/c"), "ota_repo"),
                      (dict(ota_repo=5), "ota_repo"), (dict(ota_channel="nightly"), "ota_channel"),
                      (dict(ota_repo="acme/lamp", ota_channel="branch:"), "ota_channel"),
                      (dict(ota_api="ftp://example"), "ota_api"), (dict(ota_allow_http="yes"), "ota_allow_http"),
                      (dict(ota_pubkey=5), "ota_pubkey")):
        e = raises(ValueError, Device, wifi=False, alexa=False, admin=False, **kw)
        assert e.args[0].startswith(field + ": "), (kw, e.args)
    # ota=False: its arguments are not used, so not checked; no repo yet is fine (the admin page may
    # set one), and so are good values
    Device(ota=False, ota_repo="no-slash", wifi=False, alexa=False, admin=False)
    Device(wifi=False, alexa=False, admin=False)
    Device(ota_api="", wifi=False, alexa=False, admin=False)   # (empty: GitHub's, as before the check)
    dev = Device(ota_repo="acme/lamp", ota_channel="branch:main", mqtt="mqtt://user:pw@broker.local:1883",
                 wifi=False, alexa=False, admin=False)
    assert dev.ota is not None and dev.mqtt is not None
