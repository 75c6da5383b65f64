"""Signed releases end to end: scripts/keygen.py -> scripts/release.py --key -> the device's checks.

The device side runs in the real MicroPython runtime (the PyPI one, or the host firmware with
FIRMWARE=..., where _iotsig verifies in C): the release's ota.json is prechecked before any
download (iotutils.sign.precheck), firmware.bin is streamed through the app image verifier and a
running SHA-256 in 4 KB blocks, as ota.py streams an update, and iotutils.sign.verify_release
decides. A release signed with the device's key is accepted; one signed with another key, a
truncated signature, a flipped byte of the image (even with the image's own checksum and SHA-256
recomputed, which anyone can do), an unsigned release and an ota.json whose version was edited
without re-signing are all refused.

Why an edited version is refused although the signature does not cover ota.json: the signature
covers the image, and the image's app descriptor carries its version and secure_version. The
device takes both from the signed bytes it received and refuses a manifest that says otherwise
(verify_release compares them), so a manifest can only ever repeat what the signed image says.
Replaying an older release signed with the same key passes these checks (it is authentic):
refusing it is the downgrade rule's job (version/secure_version against the running image), shown
at the end.

Also here: App OTA bundles (app.json signed over its canonical JSON, then each file's sha256),
the signature's interoperability (cryptography and the openssl command line verify it as plain
ECDSA-SHA256 over firmware.bin), keygen's file rules, and provisioning the key into NVS
(settings "ota_pubkey" / --ota-pubkey) as a simulated device reads it back.
"""
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

from conftest import ROOT, micropython_cmd, micropython_path
from simdev import SimDevice

import espimage
from iotutils import sign

KEYGEN = os.path.join(ROOT, "scripts", "keygen.py")
RELEASE = os.path.join(ROOT, "scripts", "release.py")
PROVISION = os.path.join(ROOT, "scripts", "nvs_provision.py")
IMAGE_SIZE = 200000

DEVICE_CHECK = r'''
import sys, json, hashlib
from iotutils import sign, appimage


def firmware(pt, rel):
    with open(rel + "/ota.json") as f:
        man = json.load(f)
    sign.precheck(pt, man)  # before downloading: unsigned, another key, malformed signature
    v = appimage.AppImageVerifier(appimage.CHIP_ESP32, "micropython")
    h = hashlib.sha256()
    buf = bytearray(4096)
    with open(rel + "/firmware.bin", "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            mv = memoryview(buf)[:n]
            v.feed(mv)
            h.update(mv)
    info = v.finish()
    sign.verify_release(pt, man, h.digest(), info)
    return info["version"]


def app(pt, rel):
    with open(rel + "/app.json") as f:
        man = json.load(f)
    if not sign.verify_manifest(pt, man):
        raise ValueError("app.json: not signed by key %s" % sign.key_id(pt))
    for e in man["files"]:
        h = hashlib.sha256()
        with open(rel + "/" + e["path"], "rb") as f:
            h.update(f.read())
        if h.digest() != bytes(int(e["sha256"][i:i + 2], 16) for i in range(0, 64, 2)):
            raise ValueError("%s: sha256 mismatch" % e["path"])
    return man["version"]


with open(sys.argv[1]) as f:
    point = sign.load_pubkey(f.read())
print("C" if sign._c_verify else "PY")
for rel in sys.argv[2:]:
    name = rel.rsplit("/", 1)[-1]
    try:
        got = (app if name.startswith("app_") else firmware)(point, rel)
        print("ACCEPT %s %s" % (name, got))
    except ValueError as e:
        print("REFUSE %s %s" % (name, e))
'''


def run(script, *args, **kw):
    return subprocess.run([sys.executable, script] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=120, **kw)


def device_check(tmp_path, pub, rels):
    """{release folder name: "ACCEPT <version>" | "REFUSE <reason>"} from the micropython runtime."""
    script = tmp_path / "device_check.py"
    script.write_text(DEVICE_CHECK)
    env = dict(os.environ, MICROPYPATH=micropython_path())
    proc = subprocess.run(micropython_cmd() + [str(script), str(pub)] + [str(r) for r in rels], capture_output=True,
                          text=True, timeout=300, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the verifier used: the C core in a firmware built with it, else pure Python
    probe = subprocess.run(micropython_cmd() + ["-c", "import _iotsig"], capture_output=True, env=env)
    assert proc.stdout.splitlines()[0] == ("C" if probe.returncode == 0 else "PY"), proc.stdout
    out = {}
    for line in proc.stdout.splitlines()[1:]:
        verdict, name, rest = line.split(" ", 2)
        out[name] = verdict + " " + rest
    assert len(out) == len(rels), proc.stdout
    return out


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _edit_manifest(rel, name="ota.json", **changes):
    path = rel / name
    man = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            man.pop(k, None)
        else:
            man[k] = v
    path.write_text(json.dumps(man))
    return man


def _flip_keeping_image_valid(img, pos):
    """img with one data byte flipped and the image's checksum and appended SHA-256 redone: still a
    valid app image (those are no secret), so only the signature can tell."""
    info = espimage.parse_app_image(img)
    addr, off, n = info["segments"][0]
    assert off + 512 < pos < off + n
    out = bytearray(img)
    out[pos] ^= 0x5A
    csum = info["size"] - 33
    out[csum] ^= 0x5A
    out[csum + 1:csum + 33] = hashlib.sha256(bytes(out[:csum + 1])).digest()
    assert espimage.parse_app_image(bytes(out))["version"] == info["version"]
    return bytes(out)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    for name in ("ota", "other"):
        p = run(KEYGEN, "-o", d, "--name", name)
        assert p.returncode == 0, p.stderr
    return d


def test_keygen_files(keys, tmp_path):
    key, pub = keys / "ota.key", keys / "ota.pub"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")  # SubjectPublicKeyInfo
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    k = serialization.load_pem_private_key(key.read_bytes(), None)
    assert isinstance(k, ec.EllipticCurvePrivateKey) and k.curve.name == "secp256r1"
    point = k.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    assert sign.load_pubkey(pub.read_text()) == point
    before = key.read_bytes(), pub.read_bytes()
    p = run(KEYGEN, "-o", keys)  # the same name again: refused, nothing replaced
    assert p.returncode == 1 and "refusing to overwrite" in p.stderr
    assert (key.read_bytes(), pub.read_bytes()) == before
    ids = {run(KEYGEN, "--id", f).stdout.strip() for f in (key, pub)}
    assert ids == {sign.key_id(point)}


def test_keygen_passphrase(tmp_path):
    pw = tmp_path / "pw.txt"
    pw.write_text("correct horse battery\n")
    p = run(KEYGEN, "-o", tmp_path / "k", "--passphrase-file", pw)
    assert p.returncode == 0, p.stderr
    assert "ENCRYPTED PRIVATE KEY" in (tmp_path / "k" / "ota.key").read_text()
    p = run(RELEASE, "--test-image", "1.0.0", "-o", tmp_path / "r1", "--key", tmp_path / "k" / "ota.key")
    assert p.returncode == 1 and "passphrase" in p.stderr
    p = run(RELEASE, "--test-image", "1.0.0", "-o", tmp_path / "r2", "--key", tmp_path / "k" / "ota.key",
            "--passphrase-file", pw)
    assert p.returncode == 0, p.stderr
    man = json.loads((tmp_path / "r2" / "ota.json").read_text())
    assert man["key_id"] == sign.key_id(sign.load_pubkey((tmp_path / "k" / "ota.pub").read_text()))


def test_release_manifest_and_interop(keys, tmp_path):
    rel = tmp_path / "rel"
    p = run(RELEASE, "--test-image", "1.5.0", "--size", IMAGE_SIZE, "-o", rel, "--key", keys / "ota.key")
    assert p.returncode == 0, p.stderr
    assert "WARNING" not in p.stderr
    assert sorted(os.listdir(rel)) == ["firmware.bin", "ota.json"]  # each file one asset
    img = (rel / "firmware.bin").read_bytes()
    man = json.loads((rel / "ota.json").read_text())
    point = sign.load_pubkey((keys / "ota.pub").read_text())
    assert set(man) == {"version", "project", "size", "sha256", "secure_version", "sig", "key_id"}
    assert man["version"] == "1.5.0" and man["size"] == len(img) == IMAGE_SIZE
    assert man["sha256"] == hashlib.sha256(img).hexdigest() and man["secure_version"] == 0
    assert man["key_id"] == sign.key_id(point) and len(man["sig"]) == 128
    # plain ECDSA P-256 with SHA-256 over the file: any tool verifies it
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, utils

    r, s = int(man["sig"][:64], 16), int(man["sig"][64:], 16)
    der = utils.encode_dss_signature(r, s)
    serialization.load_pem_public_key((keys / "ota.pub").read_bytes()).verify(der, img, ec.ECDSA(hashes.SHA256()))
    if shutil.which("openssl"):
        (tmp_path / "sig.der").write_bytes(der)
        o = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(keys / "ota.pub"), "-signature",
                            str(tmp_path / "sig.der"), str(rel / "firmware.bin")], capture_output=True, text=True)
        assert o.returncode == 0 and "Verified OK" in o.stdout, o.stdout + o.stderr


def test_unsigned_release_warns_loudly(tmp_path):
    p = run(RELEASE, "--image", _image(tmp_path, "1.5.0"), "--out", tmp_path / "rel")  # the Makefile's call
    assert p.returncode == 0, p.stderr
    assert "WARNING: UNSIGNED RELEASE" in p.stderr and "refuse" in p.stderr
    man = json.loads((tmp_path / "rel" / "ota.json").read_text())
    assert "sig" not in man and "key_id" not in man


def _image(tmp_path, version, **kw):
    path = tmp_path / ("img-%s.bin" % version)
    path.write_bytes(espimage.build_app_image(version, size=IMAGE_SIZE, **kw))
    return path


def test_device_accepts_only_what_the_key_signed(keys, tmp_path):
    key, pub = keys / "ota.key", keys / "ota.pub"
    rels = {}

    def release(name, version, key_file=key, **kw):
        out = tmp_path / name
        args = ["--image", _image(tmp_path, version, **kw), "-o", out]
        if key_file:
            args += ["--key", key_file]
        p = run(RELEASE, *args)
        assert p.returncode == 0, p.stderr
        rels[name] = out
        return out

    good = release("good", "1.5.0")
    release("old_good", "1.4.0")
    release("other_key", "1.5.0", key_file=keys / "other.key")
    rels["other_key_no_id"] = _copy(rels["other_key"], tmp_path / "other_key_no_id")
    _edit_manifest(rels["other_key_no_id"], key_id=None)
    release("unsigned", "1.5.0", key_file=None)
    man = json.loads((good / "ota.json").read_text())
    for name, sig in (("sig_truncated", man["sig"][:-2]), ("sig_half", man["sig"][:64]), ("sig_empty", ""),
                      ("sig_flipped", man["sig"][:100] + ("0" if man["sig"][100] != "0" else "1") + man["sig"][101:])):
        rels[name] = _copy(good, tmp_path / name)
        _edit_manifest(rels[name], sig=sig)
    # a flipped byte: the image's own checks catch a naive flip ...
    img = (good / "firmware.bin").read_bytes()
    rels["image_flipped"] = _copy(good, tmp_path / "image_flipped")
    bad = bytearray(img)
    bad[IMAGE_SIZE // 2] ^= 1
    (rels["image_flipped"] / "firmware.bin").write_bytes(bytes(bad))
    # ... and the signature one whose checksum and appended SHA-256 were redone (manifest sha256 too)
    rels["image_flipped_rehashed"] = _copy(good, tmp_path / "image_flipped_rehashed")
    bad = _flip_keeping_image_valid(img, 5000)
    (rels["image_flipped_rehashed"] / "firmware.bin").write_bytes(bad)
    _edit_manifest(rels["image_flipped_rehashed"], sha256=hashlib.sha256(bad).hexdigest())
    # another valid image with the same version, under the good release's signature
    rels["swapped_image"] = _copy(good, tmp_path / "swapped_image")
    evil = espimage.build_app_image("1.5.0", size=IMAGE_SIZE, idf_ver="v5.5.9")
    (rels["swapped_image"] / "firmware.bin").write_bytes(evil)
    _edit_manifest(rels["swapped_image"], sha256=hashlib.sha256(evil).hexdigest())
    # the old release's signed image under the new release's manifest
    rels["old_image_new_manifest"] = _copy(good, tmp_path / "old_image_new_manifest")
    shutil.copy(rels["old_good"] / "firmware.bin", rels["old_image_new_manifest"] / "firmware.bin")
    # ota.json edited without re-signing: the signature still matches the image, whose descriptor
    # says 1.5.0 / secure_version 0, so the manifest's claims are caught
    rels["version_edited"] = _copy(good, tmp_path / "version_edited")
    _edit_manifest(rels["version_edited"], version="9.9.9")
    rels["secure_version_edited"] = _copy(good, tmp_path / "secure_version_edited")
    _edit_manifest(rels["secure_version_edited"], secure_version=5)

    got = device_check(tmp_path, pub, list(rels.values()))
    want = {
        "good": "ACCEPT 1.5.0",
        "old_good": "ACCEPT 1.4.0",  # authentic: the downgrade rule (ota.py) must refuse it, not the signature
        "other_key": "REFUSE release signed by key %s" % sign.key_id(
            sign.load_pubkey((keys / "other.pub").read_text())),
        "other_key_no_id": "REFUSE bad signature",
        "unsigned": "REFUSE release is not signed",
        "sig_truncated": "REFUSE release signature is malformed",
        "sig_half": "REFUSE release signature is malformed",
        "sig_empty": "REFUSE release signature is malformed",
        "sig_flipped": "REFUSE bad signature",
        "image_flipped": "REFUSE image: ",
        "image_flipped_rehashed": "REFUSE bad signature",
        "swapped_image": "REFUSE bad signature",
        "old_image_new_manifest": "REFUSE image sha256 differs from the manifest's",
        "version_edited": "REFUSE manifest says version 9.9.9 but the signed image is 1.5.0",
        "secure_version_edited": "REFUSE manifest says secure_version 5 but the signed image has 0",
    }
    for name, w in want.items():
        assert got[name].startswith(w), (name, got[name])


def test_app_bundle(keys, tmp_path):
    src = tmp_path / "app_src"
    src.mkdir()
    (src / "main.py").write_text("print('hello')\n")
    (src / "lamp.py").write_text("BRIGHTNESS = 5\n")
    (src / "caf\u00e9.txt").write_text("unicode name\n")
    (src / ".hidden").write_text("left out\n")
    out = tmp_path / "app_good"
    p = run(RELEASE, "--app", src, "-o", out, "--key", keys / "ota.key", "--version", "3.1.0")
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(out)) == sorted(["app.json", "caf\u00e9.txt", "lamp.py", "main.py"])
    man = json.loads((out / "app.json").read_text())
    assert set(man) == {"version", "files", "key_id", "sig"}
    assert [f["path"] for f in man["files"]] == sorted(["caf\u00e9.txt", "lamp.py", "main.py"])
    p = run(RELEASE, "--app", src, "-o", tmp_path / "app_nover", "--key", keys / "ota.key")
    assert p.returncode == 1 and "--version" in p.stderr

    rels = [out]
    t = _copy(out, tmp_path / "app_file_changed")
    (t / "lamp.py").write_text("BRIGHTNESS = 100\n")
    rels.append(t)
    t = _copy(out, tmp_path / "app_file_and_manifest_changed")
    (t / "lamp.py").write_text("BRIGHTNESS = 100\n")
    m = json.loads((t / "app.json").read_text())
    for f in m["files"]:
        if f["path"] == "lamp.py":
            f["sha256"] = hashlib.sha256(b"BRIGHTNESS = 100\n").hexdigest()
            f["size"] = 17
    (t / "app.json").write_text(json.dumps(m, ensure_ascii=False))  # raw UTF-8 now: the same canonical form
    rels.append(t)
    t = _copy(out, tmp_path / "app_reformatted")
    m = json.loads((t / "app.json").read_text())
    (t / "app.json").write_text(json.dumps(m, ensure_ascii=False, indent=4, sort_keys=False))
    rels.append(t)
    t = tmp_path / "app_unsigned"
    p = run(RELEASE, "--app", src, "-o", t, "--version", "3.1.0")
    assert p.returncode == 0 and "UNSIGNED" in p.stderr
    rels.append(t)
    t = tmp_path / "app_other_key"
    p = run(RELEASE, "--app", src, "-o", t, "--key", keys / "other.key", "--version", "3.1.0")
    rels.append(t)

    got = device_check(tmp_path, keys / "ota.pub", rels)
    assert got == {
        "app_good": "ACCEPT 3.1.0",
        "app_file_changed": "REFUSE lamp.py: sha256 mismatch",
        "app_file_and_manifest_changed": "REFUSE app.json: not signed by key %s" % man["key_id"],
        "app_reformatted": "ACCEPT 3.1.0",  # whitespace and key order are not signed: the content is
        "app_unsigned": "REFUSE app.json: not signed by key %s" % man["key_id"],
        "app_other_key": "REFUSE app.json: not signed by key %s" % man["key_id"],
    }


def test_release_dir_holds_only_assets(keys, tmp_path):
    out = tmp_path / "rel"
    out.mkdir()
    (out / "notes.txt").write_text("stale")
    p = run(RELEASE, "--test-image", "1.5.0", "-o", out, "--key", keys / "ota.key")
    assert p.returncode == 1 and "notes.txt" in p.stderr and not (out / "ota.json").exists()
    p = run(RELEASE, "--test-image", "1.5.0", "-o", out, "--key", keys / "ota.pub")
    assert p.returncode == 1 and "not a private key" in p.stderr


# ---- the key on the device: provisioned into NVS

KEY_APP = r'''
import time
from iotutils import sign
p = sign.default_pubkey()
print("KEY " + (sign.key_id(p) if p else "none"))
while True:
    time.sleep(1)
'''


def _boot_key_id(tmp_path, nvs_image, name):
    from iotutils.hal import layout

    nvs_off = [p[3] for p in layout.DEFAULT if p[0] == "nvs"][0]
    state = tmp_path / name
    (state / "fs").mkdir(parents=True)
    with open(state / "flash.bin", "wb") as f:
        f.write(b"\xff" * layout.FLASH_SIZE)
        f.seek(nvs_off)
        f.write(nvs_image)
    app = tmp_path / "key_app.py"
    app.write_text(KEY_APP)
    dev = SimDevice(str(state), app=str(app))
    try:
        dev.start()
        return dev.wait_line(r"^KEY (\S+)$", 30).group(1)
    finally:
        dev.stop()


def test_provisioned_key_reaches_the_device(keys, tmp_path):
    pub = keys / "ota.pub"
    want = sign.key_id(sign.load_pubkey(pub.read_text()))
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"device_name": "lamp", "ota_pubkey": pub.read_text()}))
    p = run(PROVISION, settings, "-o", tmp_path / "nvs.bin")
    assert p.returncode == 0, p.stderr
    # the CLI option instead of the settings key (and it wins over one)
    settings2 = tmp_path / "settings2.json"
    settings2.write_text(json.dumps({"ota_pubkey": (keys / "other.pub").read_text()}))
    p = run(PROVISION, settings2, "-o", tmp_path / "nvs2.bin", "--ota-pubkey", pub)
    assert p.returncode == 0, p.stderr
    (tmp_path / "notes.txt").write_text("not a key\n")
    for bad, says in ((keys / "ota.key", "PRIVATE"), (tmp_path / "notes.txt", "PUBLIC KEY")):
        p = run(PROVISION, settings, "-o", tmp_path / "nvs3.bin", "--ota-pubkey", bad)
        assert p.returncode == 2 and says in p.stderr, p.stderr
    settings3 = tmp_path / "settings3.json"
    settings3.write_text(json.dumps({"ota_pubkey": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}))
    p = run(PROVISION, settings3, "-o", tmp_path / "nvs4.bin")
    assert p.returncode == 2 and "ota_pubkey: key:" in p.stderr
    assert _boot_key_id(tmp_path, (tmp_path / "nvs.bin").read_bytes(), "dev1") == want
    assert _boot_key_id(tmp_path, (tmp_path / "nvs2.bin").read_bytes(), "dev2") == want


def test_frozen_key_wins_over_provisioned(keys, tmp_path):
    # the module `make OTA_PUBKEY=...` freezes, placed beside the toolbox (a firmware freezes both)
    tree = tmp_path / "modules"
    shutil.copytree(os.path.join(ROOT, "modules", "iotutils"), tree / "iotutils")
    p = run(KEYGEN, "--freeze", keys / "other.pub", "-o", tree)
    assert p.returncode == 0, p.stderr
    assert (tree / "iotutils" / "_ota_key.py").exists()
    code = ("from iotutils import sign, store\n"
            "store.set('ota', 'pubkey', %r)\n"
            "print(sign.key_id(sign.default_pubkey()))\n" % (keys / "ota.pub").read_text())
    env = dict(os.environ, MICROPYPATH=str(tree))
    proc = subprocess.run(micropython_cmd() + ["-c", code], capture_output=True, text=True, env=env, timeout=60,
                          cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == sign.key_id(sign.load_pubkey((keys / "other.pub").read_text()))
    p = run(KEYGEN, "--freeze", "none", "-o", tree)
    assert "PUBKEY = None" in (tree / "iotutils" / "_ota_key.py").read_text()
    proc = subprocess.run(micropython_cmd() + ["-c", code], capture_output=True, text=True, env=env, timeout=60,
                          cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == sign.key_id(sign.load_pubkey((keys / "ota.pub").read_text()))
