#!/usr/bin/env python3
"""Check a built ESP32 app image against its OTA slot and its app descriptor.

    python scripts/check_app_size.py IMAGE [PARTITIONS_CSV] [--version V] [--project P] [--min-free N]

IMAGE is the app (build/esp32/micropython.bin, what OTA installs), PARTITIONS_CSV the board's
table (default boards/ESP32_GENERIC/partitions.csv). The image must be a valid ESP32 app image
(checksum and appended SHA-256), fit the smallest app slot with at least --min-free bytes to
spare, and its app descriptor must name the project "micropython" and the version
iotutils.__version__ (PROJECT_VER, set by the board's mpconfigboard.cmake): OTA relies on both.
Prints one line per check; exits 1 if any fails.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.join(ROOT, "modules"))

import espimage  # noqa: E402
import gen_package_json  # noqa: E402
from iotutils.hal import layout  # noqa: E402

DEFAULT_CSV = os.path.join(ROOT, "boards", "ESP32_GENERIC", "partitions.csv")
PROJECT = "micropython"


def app_slots(csv_path):
    """[(name, size)] of the app partitions in a partitions.csv."""
    with open(csv_path) as f:
        rows = layout.parse_csv(f.read())
    return [(name, size) for name, ptype, _sub, _off, size in rows if ptype == "app"]


def check(image_path, csv_path=DEFAULT_CSV, version=None, project=PROJECT, min_free=0, out=sys.stdout):
    """Run the checks; returns the number of failures."""
    failures = 0
    with open(image_path, "rb") as f:
        data = f.read()
    slots = app_slots(csv_path)
    if not slots:
        out.write("FAIL %s has no app partition\n" % csv_path)
        return 1
    name, slot = min(slots, key=lambda s: s[1])
    free = slot - len(data)
    ok = free >= min_free
    failures += not ok
    out.write("%s size: %d bytes (%.2f MiB) in %s of %d bytes (0x%x): %.1f%% used, %d bytes free%s\n"
              % ("ok  " if ok else "FAIL", len(data), len(data) / 1048576.0, name, slot, slot,
                 100.0 * len(data) / slot, free, "" if ok else " (need %d)" % min_free))
    try:
        info = espimage.parse_app_image(data)
    except ValueError as e:
        out.write("FAIL %s\n" % e)
        return failures + 1
    out.write("ok   image: valid ESP32 app image, %d segments, sha256 %s\n"
              % (len(info["segments"]), (info["sha256"] or "none")[:16]))
    want_version = version if version is not None else gen_package_json.version()
    for field, want in (("project", project), ("version", want_version)):
        ok = info[field] == want
        failures += not ok
        out.write("%s app descriptor %s: %r%s\n" % ("ok  " if ok else "FAIL", field, info[field],
                                                    "" if ok else " (want %r)" % want))
    return failures


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image")
    ap.add_argument("partitions", nargs="?", default=DEFAULT_CSV)
    ap.add_argument("--version", default=None, help="expected descriptor version (default iotutils.__version__)")
    ap.add_argument("--project", default=PROJECT, help="expected descriptor project name")
    ap.add_argument("--min-free", type=int, default=0, help="bytes the slot must keep free")
    args = ap.parse_args(argv)
    if not os.path.isfile(args.image):
        print("check_app_size: no image at %s: build it first (make BOARD=ESP32_GENERIC)" % args.image)
        return 1
    return 1 if check(args.image, args.partitions, args.version, args.project, args.min_free) else 0


if __name__ == "__main__":
    sys.exit(main())
