#!/usr/bin/env python3
"""Write package.json, the mip package description, from modules/iotutils.

    python scripts/gen_package_json.py          # (re)write package.json at the repo root
    python scripts/gen_package_json.py --check  # exit 1 if package.json is out of date

Stock-MicroPython users install the pure-Python toolbox with
`mip.install("github:<owner>/<repo>")` (or `mpremote mip install ...`): mip reads package.json from
the repo root and fetches each listed file relative to it, into <target>/iotutils/. The version is
iotutils.__version__ (read from the source, not imported: modules/ is MicroPython code).

That install compiles every module on import, which a stock ESP32 without PSRAM has no heap for:
scripts/build_mip.py builds the precompiled (.mpy) packages, one per capability and one with
everything, using render() from here so the files have the same format.
"""
import argparse
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = os.path.join(ROOT, "modules")
PACKAGE = "iotutils"
PACKAGE_JSON = os.path.join(ROOT, "package.json")

_VERSION_RE = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.M)


def version(modules_dir=MODULES):
    with open(os.path.join(modules_dir, PACKAGE, "__init__.py")) as f:
        m = _VERSION_RE.search(f.read())
    if not m:
        raise ValueError("no __version__ in %s/__init__.py" % PACKAGE)
    return m.group(1)


def package_files(modules_dir=MODULES):
    """Every .py of the package, as paths relative to modules_dir with / separators, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(modules_dir, PACKAGE)):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in filenames:
            if name.endswith(".py"):
                found.append(os.path.relpath(os.path.join(dirpath, name), modules_dir).replace(os.sep, "/"))
    return sorted(found)


def describe(modules_dir=MODULES, root=ROOT, urls=None):
    """The package.json dict: [installed path, URL relative to package.json] for each file.
    urls: those pairs when they are not the sources' own paths (the .mpy package)."""
    if urls is None:
        prefix = os.path.relpath(modules_dir, root).replace(os.sep, "/")
        urls = [[rel, prefix + "/" + rel] for rel in package_files(modules_dir)]
    return {
        "urls": urls,
        "deps": [],
        "version": version(modules_dir),
    }


def render(desc):
    """JSON with one file per line, so adding a module is a one-line diff."""
    urls = ",\n".join("    " + json.dumps(u) for u in desc["urls"])
    return '{\n  "urls": [\n%s\n  ],\n  "deps": %s,\n  "version": %s\n}\n' % (
        urls, json.dumps(desc["deps"]), json.dumps(desc["version"]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when package.json differs")
    ap.add_argument("--output", default=PACKAGE_JSON, help="file to write or check (default: package.json)")
    args = ap.parse_args(argv)
    want = render(describe())
    if args.check:
        try:
            with open(args.output) as f:
                have = f.read()
        except OSError:
            print("package.json: missing; run scripts/gen_package_json.py")
            return 1
        if have == want:
            print("package.json: up to date (%d files)" % len(describe()["urls"]))
            return 0
        try:
            have_desc = json.loads(have)
        except ValueError as e:
            print("package.json: not valid JSON (%s); run scripts/gen_package_json.py" % e)
            return 1
        want_desc = json.loads(want)
        have_files = {tuple(u) for u in have_desc.get("urls", ())}
        want_files = {tuple(u) for u in want_desc["urls"]}
        for u in sorted(want_files - have_files):
            print("package.json: missing %s" % u[0])
        for u in sorted(have_files - want_files):
            print("package.json: stale entry %s" % u[0])
        if have_desc.get("version") != want_desc["version"]:
            print("package.json: version %r, iotutils.__version__ is %r"
                  % (have_desc.get("version"), want_desc["version"]))
        print("package.json: out of date; run scripts/gen_package_json.py")
        return 1
    with open(args.output, "w") as f:
        f.write(want)
    print("wrote %s (%d files, version %s)" % (os.path.relpath(args.output, ROOT), len(describe()["urls"]),
                                                describe()["version"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
