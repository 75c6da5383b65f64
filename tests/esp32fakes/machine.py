# A fake of MicroPython v1.28's `machine` module on the esp32 port (ports/esp32/modmachine.c,
# machine_wdt.c), only what iotutils/hal/esp32.py uses. Test control: fake_reset_cause (what
# reset_cause() returns), fake_resets (machine.reset() calls), fake_wdt (the armed WDT).
import os

PWRON_RESET = 1
HARD_RESET = 2       # esp_restart() (machine.reset()), a panic, ESP_RST_EXT
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

fake_reset_cause = int(os.getenv("ESP32FAKE_RESET_CAUSE") or PWRON_RESET) if hasattr(os, "getenv") else 1
fake_resets = []
fake_wdt = None
fake_mac = b"\x24\x0a\xc4\x12\x34\x56"  # the chip's base MAC (esp_efuse_mac_get_default)


class FakeReset(BaseException):
    """machine.reset() never returns: the fake ends the caller with this (not an Exception, so a
    broad `except Exception` in the code under test cannot swallow the reboot)."""


def reset_cause():
    return fake_reset_cause


def reset():
    fake_resets.append(HARD_RESET)
    raise FakeReset


def unique_id():
    return bytes(fake_mac)


class WDT:
    def __init__(self, id=0, timeout=5000):
        global fake_wdt
        if id != 0:
            raise ValueError
        if timeout <= 0:
            raise ValueError("WDT timeout too short")
        self.timeout = timeout
        self.feeds = 0
        fake_wdt = self

    def feed(self):
        self.feeds += 1
