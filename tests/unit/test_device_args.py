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
