#!/usr/bin/env python3
"""Turn a built ESP32 app image into the assets of a GitHub release for iotutils.ota.

    release.py IMAGE|--image IMAGE [-o|--out DIR] [--version V] [--url URL] [--project iotutils]
    release.py --test-image VERSION [--size N] [--app-project micropython] [-o DIR]

IMAGE is the app image `make BOARD=ESP32_GENERIC ota-image` builds (micropython.bin). The image is
verified first (header, segments, checksum, appended SHA-256, app descriptor) and refused if invalid.
DIR receives:
    firmware.bin   the image, unchanged
    ota.json       {"version", "project", "size", "sha256"[, "url"]}
Attach both to a release whose tag is the version (GitHub: `gh release create V DIR/*`). For the
branch/commit channels commit ota.json (with "url" naming the image: an absolute URL or a path in
the repository) at that ref instead.
The version defaults to the image's app descriptor version (PROJECT_VER); a different --version is
an error, as devices compare both. --test-image builds a small valid image through espimage.py.
"""
import argparse
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import espimage


def make_assets(image, out_dir, version=None, url=None, project="iotutils"):
    """Write firmware.bin + ota.json into out_dir; returns the manifest dict. ValueError if invalid."""
    info = espimage.parse_app_image(image)
    if info["size"] != len(image):
        raise ValueError("image: %d trailing bytes after the image" % (len(image) - info["size"]))
    if version is None:
        version = info["version"]
    elif version != info["version"]:
        raise ValueError("version %r differs from the image's app descriptor version %r" % (version, info["version"]))
    man = {"version": version, "project": project, "size": len(image), "sha256": hashlib.sha256(image).hexdigest()}
    if url:
        man["url"] = url
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "firmware.bin"), "wb") as f:
        f.write(image)
    with open(os.path.join(out_dir, "ota.json"), "w") as f:
        json.dump(man, f, indent=1)
        f.write("\n")
    return man


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("image", nargs="?", help="built app image (micropython.bin)")
    ap.add_argument("--image", dest="image_opt", metavar="IMAGE", help="the same, as an option (Makefile)")
    ap.add_argument("-o", "--out", default="release", help="output folder (default: release/)")
    ap.add_argument("--version", help="release version (default: the image's)")
    ap.add_argument("--url", help="image URL to put in ota.json (branch/commit channels)")
    ap.add_argument("--project", default="iotutils", help='ota.json "project" (default iotutils)')
    ap.add_argument("--test-image", metavar="VERSION", help="build a small valid test image instead")
    ap.add_argument("--size", type=int, default=None, help="test image size in bytes")
    ap.add_argument("--app-project", default="micropython", help="test image app descriptor project name")
    args = ap.parse_args(argv)
    if args.test_image:
        image = espimage.build_app_image(args.test_image, project=args.app_project, size=args.size)
    elif args.image or args.image_opt:
        with open(args.image or args.image_opt, "rb") as f:
            image = f.read()
    else:
        ap.error("give IMAGE or --test-image VERSION")
    try:
        man = make_assets(image, args.out, args.version, args.url, args.project)
    except ValueError as e:
        print("release: refused: %s" % e, file=sys.stderr)
        return 1
    print("%s/firmware.bin  %d bytes  sha256 %s" % (args.out, man["size"], man["sha256"]))
    print("%s/ota.json      version %s" % (args.out, man["version"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
