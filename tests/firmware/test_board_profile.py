"""The board profile in iotutils.hal (thread stacks, socket table) agrees with the board's sdkconfig
(the threads and sockets a running device reports: tests/integration/test_device.py)."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _hal_constant(name):
    with open(os.path.join(ROOT, "modules", "iotutils", "hal", "__init__.py")) as f:
        m = re.search(r"^%s = (\d+)" % name, f.read(), re.M)
    assert m, "%s missing from iotutils/hal/__init__.py" % name
    return int(m.group(1))


def _sdkconfig(name):
    with open(os.path.join(ROOT, "boards", "ESP32_GENERIC", "sdkconfig.board")) as f:
        m = re.search(r"^%s=(\d+)$" % name, f.read(), re.M)
    return int(m.group(1)) if m else None


def test_socket_table_matches_sdkconfig():
    n = _sdkconfig("CONFIG_LWIP_MAX_SOCKETS")
    assert n is not None, "sdkconfig.board must size lwIP's socket table (the default 10 is too few)"
    assert _hal_constant("MAX_SOCKETS") == n
    # every socket may be a TCP connection at once (web clients, MQTT, OTA)
    assert _sdkconfig("CONFIG_LWIP_MAX_ACTIVE_TCP") >= n


def test_thread_stacks_are_at_least_the_ports_minimum():
    for name in ("WEB_STACK", "HOUSEKEEPER_STACK", "JOB_STACK"):
        size = _hal_constant(name)
        assert size >= 4096, name   # MP_THREAD_MIN_STACK_SIZE of ports/esp32
        assert size % 512 == 0, name
