"""Run every tests/unit/test_*.py module under the MicroPython runtime too.

pytest collects the same modules directly on CPython; this file runs them in the
`micropython` host runtime (or the host firmware given by FIRMWARE=...), one process per
module, and fails with the runtime's own output when any unit test fails there.
"""
import os
import subprocess

import pytest

from conftest import ROOT, micropython_cmd, micropython_path

UNIT_DIR = os.path.join(ROOT, "tests", "unit")
THIS = os.path.splitext(os.path.basename(__file__))[0]
MODULES = sorted(f[:-3] for f in os.listdir(UNIT_DIR)
                 if f.startswith("test_") and f.endswith(".py") and f[:-3] != THIS)


@pytest.mark.parametrize("module", MODULES)
def test_unit_module_on_micropython(module, tmp_path):
    env = dict(os.environ, MICROPYPATH=micropython_path(UNIT_DIR),
               IOTUTILS_TEST_TMP=str(tmp_path))
    proc = subprocess.run(micropython_cmd() + [os.path.join(UNIT_DIR, "mp_runner.py"), module],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert " passed, 0 failed" in out, out
    assert "\n0 passed" not in "\n" + out.strip().splitlines()[-1], "no unit test ran:\n" + out
