"""Our discovery messages, judged by Home Assistant's own MQTT discovery code (homeassistant 2024.3.3
in .venv-ha, `make ha-venv`; `make test` builds it): tests/ha_schema_check.py runs there.
What it cannot check: device-based discovery as one message (HA 2024.11+, newer than any release for
Python 3.11; its components are checked one by one against 2024.3.3's platform schemas), and how HA
reads the states (checked against the documented contract in tests/unit/test_homeassistant.py)."""
import json
import os
import subprocess

import pytest

from conftest import ROOT

HA_PYTHON = os.environ.get("HA_PYTHON") or os.path.join(ROOT, ".venv-ha", "bin", "python")


def test_home_assistant_accepts_every_discovery_message_as_sent():
    if not os.path.exists(HA_PYTHON):
        pytest.skip("no Home Assistant environment at %s: `make ha-venv` builds it (make test does)" % HA_PYTHON)
    proc = subprocess.run([HA_PYTHON, os.path.join(ROOT, "tests", "ha_schema_check.py")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["checked"] >= 30, result          # both modes, every kind of entity
    assert result["failures"] == [], "\n".join(result["failures"])   # HA would drop these messages
    assert result["dropped"] == [], "\n".join(result["dropped"])     # options HA ignores
