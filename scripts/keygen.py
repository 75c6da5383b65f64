#!/usr/bin/env python3
"""The OTA signing key: make one, name one, freeze one into the firmware.

    keygen.py -o DIR [--name ota] [--passphrase-file FILE]   DIR/<name>.key (private) + DIR/<name>.pub
    keygen.py --id FILE                                      the key id of a .pub or .key file
    keygen.py --freeze PUBFILE -o DIR                        DIR/iotutils/_ota_key.py (frozen key module)
    keygen.py --freeze none -o DIR                           the same module with no key (PUBKEY = None)
    keygen.py --freeze "" -o DIR                             keep it as it is; say which key it holds

The key is ECDSA over NIST P-256 (the curve the ESP32's mbedTLS verifies): <name>.key is the
private key (PEM, PKCS#8, file mode 0600; encrypted with the passphrase in FILE when given), to be
kept offline and backed up; <name>.pub is the public key (PEM SubjectPublicKeyInfo) that devices
trust: frozen into the firmware (`make BOARD=... OTA_PUBKEY=DIR/<name>.pub`) or provisioned
(settings.json "ota_pubkey", scripts/nvs_provision.py). Existing files are never overwritten.
Sign releases with scripts/release.py --key DIR/<name>.key. See docs/security.md.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "modules"))

from iotutils import sign  # noqa: E402

FROZEN_MODULE = os.path.join("iotutils", "_ota_key.py")


def _write_new(path, data, mode):
    """Create path with mode (never replacing a file: O_EXCL) and write data."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)  # whatever the umask


def generate(out_dir, name="ota", passphrase=None):
    """Write out_dir/<name>.key and .pub; returns (key path, pub path, key id). FileExistsError if
    either exists (a key is never replaced: devices may trust it)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if not name or "/" in name or name.startswith("."):
        raise ValueError("--name must be a plain file name, got %r" % name)
    os.makedirs(out_dir, exist_ok=True)
    key_path = os.path.join(out_dir, name + ".key")
    pub_path = os.path.join(out_dir, name + ".pub")
    for p in (key_path, pub_path):
        if os.path.exists(p):
            raise FileExistsError("%s exists: refusing to overwrite a key (devices may trust it)" % p)
    priv = ec.generate_private_key(ec.SECP256R1())
    enc = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    pem_priv = priv.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    pem_pub = priv.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    _write_new(key_path, pem_priv, 0o600)
    try:
        _write_new(pub_path, pem_pub, 0o644)
    except OSError:
        os.remove(key_path)  # both or neither
        raise
    return key_path, pub_path, sign.key_id(sign.load_pubkey(pem_pub))


def load_private_key(path, passphrase=None):
    """The P-256 private key in a PEM file (ValueError naming the problem otherwise)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    with open(path, "rb") as f:
        data = f.read()
    if b"PRIVATE KEY" not in data:
        raise ValueError("%s: not a private key (sign with the .key file, not the .pub)" % path)
    try:
        key = serialization.load_pem_private_key(data, passphrase)
    except TypeError as e:  # encrypted without a passphrase, or a passphrase for a plain key
        raise ValueError("%s: %s (--passphrase-file)" % (path, e))
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("%s: not an ECDSA P-256 key (make one with scripts/keygen.py)" % path)
    return key


def public_point(path, passphrase=None):
    """The 65-byte public point of a .pub or .key file."""
    with open(path, "rb") as f:
        data = f.read()
    if b"PRIVATE KEY" in data:
        from cryptography.hazmat.primitives import serialization

        key = load_private_key(path, passphrase)
        return key.public_key().public_bytes(serialization.Encoding.X962,
                                             serialization.PublicFormat.UncompressedPoint)
    return sign.load_pubkey(data)


def frozen_point(out_dir):
    """The point in out_dir/iotutils/_ota_key.py; None when it holds no key or does not exist."""
    mod = os.path.join(out_dir, FROZEN_MODULE)
    if not os.path.exists(mod):
        return None
    ns = {}
    with open(mod) as f:
        exec(f.read(), ns)
    return None if ns.get("PUBKEY") is None else sign.load_pubkey(ns["PUBKEY"])


def freeze(pub_path, out_dir):
    """Write out_dir/iotutils/_ota_key.py for the public key in pub_path; "none": a module with
    no key (PUBKEY = None); "": keep the module as it is (a keyless one if there is none).
    Returns the frozen point, or None.

    The module always exists once this ran: MicroPython's makemanifest regenerates the frozen
    code only when a frozen file is newer than it, so a module that disappeared would stay frozen."""
    mod = os.path.join(out_dir, FROZEN_MODULE)
    if not pub_path and os.path.exists(mod):
        return frozen_point(out_dir)
    if pub_path and pub_path != "none":
        with open(pub_path, "rb") as f:
            point = sign.load_pubkey(f.read())  # ValueError: not a P-256 public key
        text = ("# Generated by scripts/keygen.py --freeze from %s: the OTA public key frozen into this\n"
                "# firmware (iotutils.sign.default_pubkey() prefers it to a provisioned one). Key id %s.\n"
                "PUBKEY = %r\n" % (os.path.basename(pub_path), sign.key_id(point), point))
    else:
        point = None
        text = ("# Generated by scripts/keygen.py --freeze: no OTA public key is frozen into this firmware\n"
                "# (iotutils.sign.default_pubkey() uses the provisioned one, NVS ota/pubkey).\n"
                "PUBKEY = None\n")
    os.makedirs(os.path.dirname(mod), exist_ok=True)
    old = None
    if os.path.exists(mod):
        with open(mod) as f:
            old = f.read()
    if old != text:  # unchanged: keep the timestamp, so the firmware build does not redo work
        with open(mod + ".tmp", "w") as f:
            f.write(text)
        os.replace(mod + ".tmp", mod)
    return point


def _passphrase(path):
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read().rstrip(b"\r\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", help="folder for the new key pair (or the frozen module with --freeze)")
    ap.add_argument("--name", default="ota", help="file name of the pair: NAME.key and NAME.pub (default ota)")
    ap.add_argument("--passphrase-file", help="encrypt the private key with the passphrase in this file")
    ap.add_argument("--id", metavar="FILE", help="print the key id of a .pub or .key file")
    ap.add_argument("--freeze", metavar="PUBFILE", help="write OUT/iotutils/_ota_key.py for this public key "
                                                        "('none': no key; '': keep it)")
    args = ap.parse_args(argv)
    try:
        if args.id:
            print(sign.key_id(public_point(args.id, _passphrase(args.passphrase_file))))
            return 0
        if not args.out:
            ap.error("-o DIR is required")
        if args.freeze is not None:
            point = freeze(args.freeze, args.out)
            if point is not None:
                print("firmware OTA key: %s (frozen: %s; OTA_PUBKEY=none for no key)"
                      % (sign.key_id(point), os.path.join(args.out, FROZEN_MODULE)))
            else:
                print("firmware OTA key: none frozen: devices need a provisioned key (ota/pubkey) or "
                      "OTA(pubkey=...) to accept releases; OTA_PUBKEY=keys/ota.pub freezes one")
            return 0
        key, pub, kid = generate(args.out, args.name, _passphrase(args.passphrase_file))
    except (OSError, ValueError) as e:
        print("keygen: %s" % e, file=sys.stderr)
        return 1
    print("%s   private key: keep it offline and backed up; sign with release.py --key %s" % (key, key))
    print("%s   public key, id %s: freeze it (make OTA_PUBKEY=%s) or provision it (\"ota_pubkey\")"
          % (pub, kid, pub))
    return 0


if __name__ == "__main__":
    sys.exit(main())
