#!/usr/bin/env python3
"""Turn a built ESP32 app image (or an app folder) into the signed assets of a release for iotutils.ota.

    release.py IMAGE -o DIR --key KEYFILE [--project iotutils] [--version V] [--url URL]
    release.py --image IMAGE --out DIR [--key KEYFILE] ...        (the Makefile's ota-image target)
    release.py --app FOLDER -o DIR --key KEYFILE --version V      App OTA bundle of .py files
    release.py --test-image VERSION [--size N] [--app-project micropython] [-o DIR] [--key KEYFILE]

IMAGE is the app image `make BOARD=ESP32_GENERIC ota-image` builds (micropython.bin). The image is
verified first (header, segments, checksum, appended SHA-256, app descriptor) and refused if invalid.
Every file written to DIR is one release asset:
    firmware.bin   the image, unchanged
    ota.json       {"version", "project", "size", "sha256", "secure_version", "sig", "key_id"[, "url"]}
sig is the ECDSA P-256 signature of SHA-256(firmware.bin) by KEYFILE (from scripts/keygen.py) as
128 hex digits, r then s (32 bytes each, big-endian); key_id names the public key (first 8 bytes of
SHA-256 of its 65-byte point, hex). The image's app descriptor carries project, version and
secure_version, so the signature covers them; devices compare the manifest's with the image's.
Without --key the release is unsigned (ota.json as before: version, project, size, sha256) and a
loud warning says devices will refuse it.
Attach the files to a release whose tag is the version (GitHub: `gh release create V DIR/*`). For the
branch/commit channels commit ota.json (with "url" naming the image: an absolute URL or a path in
the repository) at that ref instead.
The version defaults to the image's app descriptor version (PROJECT_VER); a different --version is
an error, as devices compare both. --test-image builds a small valid image through espimage.py.

--app: DIR receives app.json = {"version", "key_id", "files": [{"path", "size", "sha256"}], "sig"}
and a copy of each file. sig signs SHA-256 of the canonical JSON of app.json without "sig":
json.dumps(m, sort_keys=True, separators=(",", ":")) (ASCII, \\uXXXX escapes; no floats). The
device verifies that signature, then each file's sha256. The folder is flat (App OTA installs one
folder of files); hidden files and __pycache__ are left out.
See docs/security.md.
"""
import argparse
import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "modules"))
import espimage  # noqa: E402
import keygen  # noqa: E402

from iotutils import sign  # noqa: E402

FIRMWARE_ASSETS = ("firmware.bin", "ota.json")
UNSIGNED_WARNING = """\
********************************************************************************
WARNING: UNSIGNED RELEASE (no --key). Devices refuse unsigned releases by default:
this release installs only on devices that explicitly allow unsigned updates.
Make a key once with scripts/keygen.py -o KEYDIR, then: release.py ... --key KEYDIR/ota.key
********************************************************************************"""


class Signer:
    """An ECDSA P-256 private key that signs SHA-256 digests as r||s (64 bytes)."""

    def __init__(self, path, passphrase=None):
        self.key = keygen.load_private_key(path, passphrase)
        self.point = keygen.public_point(path, passphrase)
        self.key_id = sign.key_id(self.point)

    def sign_digest(self, digest):
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, utils

        r, s = utils.decode_dss_signature(self.key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256()))))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        # the device's own verifier must accept it (pure Python here): a wrong key type or encoding
        # fails now, not on every device in the field
        if not sign.verify_digest(self.point, digest, sig):
            raise ValueError("signature check failed after signing (bug)")
        return sig


def _check_out_dir(out_dir, names):
    """DIR may hold only what this release writes: every file in it is one asset."""
    if os.path.isdir(out_dir):
        extra = sorted(set(os.listdir(out_dir)) - set(names))
        if extra:
            raise ValueError("%s holds other files (%s): every file there becomes a release asset; "
                             "use an empty folder" % (out_dir, ", ".join(extra[:5])))


def _write_json(path, obj):
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.replace(path + ".tmp", path)


def make_assets(image, out_dir, version=None, url=None, project="iotutils", signer=None):
    """Write firmware.bin + ota.json into out_dir; returns the manifest dict. ValueError if invalid.
    signer: a Signer (signed release) or None (unsigned: the old manifest, refused by devices)."""
    info = espimage.parse_app_image(image)
    if info["size"] != len(image):
        raise ValueError("image: %d trailing bytes after the image" % (len(image) - info["size"]))
    if version is None:
        version = info["version"]
    elif version != info["version"]:
        raise ValueError("version %r differs from the image's app descriptor version %r" % (version, info["version"]))
    digest = hashlib.sha256(image).digest()
    man = {"version": version, "project": project, "size": len(image), "sha256": digest.hex()}
    if signer is not None:
        man["secure_version"] = info["secure_version"]
        man["sig"] = signer.sign_digest(digest).hex()
        man["key_id"] = signer.key_id
    if url:
        man["url"] = url
    _check_out_dir(out_dir, FIRMWARE_ASSETS)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "firmware.bin"), "wb") as f:
        f.write(image)
    _write_json(os.path.join(out_dir, "ota.json"), man)
    return man


def canonical(man):
    """The bytes an app.json signature signs: the manifest without "sig", canonical JSON."""
    body = {k: v for k, v in man.items() if k != "sig"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _app_files(folder):
    out = []
    for name in sorted(os.listdir(folder)):
        if name.startswith(".") or name == "__pycache__":
            continue
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            raise ValueError("%s: App OTA installs a flat folder of files; %s is a folder" % (folder, name))
        if name == "app.json":
            raise ValueError("%s: a file named app.json would clash with the manifest" % folder)
        with open(path, "rb") as f:
            data = f.read()
        out.append((name, data))
    if not out:
        raise ValueError("%s: no files" % folder)
    return out


def make_app_bundle(folder, out_dir, version, signer=None):
    """Write app.json and a copy of each file of folder into out_dir; returns the manifest."""
    if not isinstance(version, str) or not version:
        raise ValueError("--app needs --version")
    files = _app_files(folder)
    man = {"version": version,
           "files": [{"path": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in files]}
    if signer is not None:
        man["key_id"] = signer.key_id  # inside the signed part
        body = canonical(man)
        if sign.canonical_json(json.loads(body)) != body:  # the device's encoder gives the same bytes
            raise ValueError("app.json: the device would not reproduce the signed bytes")
        man["sig"] = signer.sign_digest(hashlib.sha256(body).digest()).hex()
    _check_out_dir(out_dir, ["app.json"] + [n for n, _ in files])
    os.makedirs(out_dir, exist_ok=True)
    for name, data in files:
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)
    _write_json(os.path.join(out_dir, "app.json"), man)
    return man


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("image", nargs="?", help="built app image (micropython.bin)")
    ap.add_argument("--image", dest="image_opt", metavar="IMAGE", help="the same, as an option (Makefile)")
    ap.add_argument("-o", "--out", default="release", help="output folder (default: release/)")
    ap.add_argument("--key", help="private key from scripts/keygen.py: sign the release (without it: unsigned)")
    ap.add_argument("--passphrase-file", help="passphrase of an encrypted --key")
    ap.add_argument("--version", help="release version (default: the image's; required with --app)")
    ap.add_argument("--url", help="image URL to put in ota.json (branch/commit channels)")
    ap.add_argument("--project", default="iotutils", help='ota.json "project" (default iotutils)')
    ap.add_argument("--app", metavar="FOLDER", help="make an App OTA bundle of this folder's files")
    ap.add_argument("--test-image", metavar="VERSION", help="build a small valid test image instead")
    ap.add_argument("--size", type=int, default=None, help="test image size in bytes")
    ap.add_argument("--app-project", default="micropython", help="test image app descriptor project name")
    args = ap.parse_args(argv)
    try:
        signer = None
        if args.key:
            passphrase = None
            if args.passphrase_file:
                with open(args.passphrase_file, "rb") as f:
                    passphrase = f.read().rstrip(b"\r\n")
            signer = Signer(args.key, passphrase)
        if args.app:
            man = make_app_bundle(args.app, args.out, args.version, signer)
            print("%s/app.json  version %s, %d files%s" % (args.out, man["version"], len(man["files"]),
                                                            ", signed by key " + signer.key_id if signer else ""))
        else:
            if args.test_image:
                image = espimage.build_app_image(args.test_image, project=args.app_project, size=args.size)
            elif args.image or args.image_opt:
                with open(args.image or args.image_opt, "rb") as f:
                    image = f.read()
            else:
                ap.error("give IMAGE, --app FOLDER or --test-image VERSION")
            man = make_assets(image, args.out, args.version, args.url, args.project, signer)
            print("%s/firmware.bin  %d bytes  sha256 %s" % (args.out, man["size"], man["sha256"]))
            print("%s/ota.json      version %s%s" % (args.out, man["version"],
                                                    ", signed by key " + signer.key_id if signer else ""))
    except (ValueError, OSError) as e:
        print("release: refused: %s" % e, file=sys.stderr)
        return 1
    if signer is None:
        print(UNSIGNED_WARNING, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
