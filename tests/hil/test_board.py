"""Scenarios on a real board (see conftest.py). The board runs examples/lamp.py as main.py."""
import re

import pytest

try:
    from pytest_embedded import Dut
except ImportError:
    Dut = None


@pytest.fixture
def dut_or_skip(request):
    if Dut is None:
        pytest.skip("pytest-embedded not installed")
    return request.getfixturevalue("dut")


def test_boot_report(dut_or_skip):
    dut = dut_or_skip
    dut.write(b"\x04")  # soft reset: main.py runs again and prints the boot report
    dut.expect(re.compile(rb"iotutils \S+ on esp32"), timeout=30)
    dut.expect(re.compile(rb"firmware: slot ota_[01]"), timeout=10)
    dut.expect(re.compile(rb"heap free: \d+ of \d+ bytes"), timeout=10)


def test_persistent_value_survives_hard_reset(dut_or_skip):
    dut = dut_or_skip
    dut.write(b"\x03\x03")  # stop main.py, get the REPL
    dut.write(b"from iotutils.persist import PersistentInt\r\n")
    dut.write(b"v = PersistentInt('hil', default=0, folder='test'); v.value = v.value + 1; print('HIL', v.value)\r\n")
    first = int(dut.expect(re.compile(rb"HIL (\d+)"), timeout=10).group(1))
    dut.write(b"import machine; machine.reset()\r\n")
    dut.expect(re.compile(rb"iotutils \S+ on esp32"), timeout=30)
    dut.write(b"\x03\x03")
    dut.write(b"from iotutils.persist import PersistentInt\r\n")
    dut.write(b"print('HIL', PersistentInt('hil', default=0, folder='test').value)\r\n")
    assert int(dut.expect(re.compile(rb"HIL (\d+)"), timeout=10).group(1)) == first
