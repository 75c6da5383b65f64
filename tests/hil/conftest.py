"""Hardware-in-the-loop: the same scenarios on a real ESP32 flashed with `make BOARD=ESP32_GENERIC flash`.

    .venv/bin/pip install -r requirements-hil.txt
    .venv/bin/python -m pytest tests/hil --embedded-services esp,serial --port /dev/ttyUSB0

Without pytest-embedded or without --port every test here is skipped, saying why.
"""
import pytest

try:
    import pytest_embedded  # noqa: F401
    HAVE_EMBEDDED = True
except ImportError:
    HAVE_EMBEDDED = False


def pytest_collection_modifyitems(config, items):
    port = config.getoption("port", default=None) if HAVE_EMBEDDED else None
    if port:
        return
    why = "no board: needs pytest-embedded (requirements-hil.txt) and --port /dev/ttyUSB0" if not HAVE_EMBEDDED \
        else "no board: pass --embedded-services esp,serial --port /dev/ttyUSB0"
    for item in items:
        if "/hil/" in str(item.fspath):
            item.add_marker(pytest.mark.skip(reason=why))
