"""scripts/espimage.py (build/parse ESP32 app images), scripts/release.py, and agreement with
Espressif's own checker (`esptool image-info`) and the device-side streaming verifier."""
import hashlib
import json
import os
import random
import re
import subprocess
import sys

import pytest

from conftest import ROOT

import espimage
import release
from iotutils import appimage

ESPTOOL = os.path.join(ROOT, ".venv", "bin", "esptool")


def esptool_info(path):
    if not os.path.exists(ESPTOOL):
        pytest.skip("esptool not installed in .venv")
    p = subprocess.run([ESPTOOL, "image-info", str(path)], capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


@pytest.mark.parametrize("version,project,size", [
    ("1.2.3", "micropython", None),
    ("v2.0.0-rc1+g1234abc", "iotutils", 65536),
    ("0.9", "micropython", 200000),
])
def test_built_images_pass_esptool_image_info(tmp_path, version, project, size):
    img = espimage.build_app_image(version, project=project, size=size)
    if size:
        assert len(img) == size
    path = tmp_path / "app.bin"
    path.write_bytes(img)
    rc, out = esptool_info(path)
    assert rc == 0, out
    assert "Detected image type: ESP32" in out
    assert re.search(r"Checksum: 0x[0-9a-f]{2} \(valid\)", out), out
    assert re.search(r"Validation hash: [0-9a-f]{64} \(valid\)", out), out
    assert "Project name: %s" % project in out
    assert "App version: %s" % version in out
    # the descriptor sits in the first DROM segment, code in IRAM/IROM, data in DRAM
    types = re.findall(r"^\s+\d+\s+0x[0-9a-f]+\s+0x[0-9a-f]+\s+0x[0-9a-f]+\s+(.+)$", out, re.M)
    assert types[0] == "DROM" and "IROM" in types and "IRAM" in types, types
    assert "invalid" not in out.lower()


def test_esptool_sees_our_corruption_too(tmp_path):
    img = bytearray(espimage.build_app_image("1.0.0", size=8192))
    img[3000] ^= 0x01
    path = tmp_path / "bad.bin"
    path.write_bytes(bytes(img))
    rc, out = esptool_info(path)
    assert "invalid" in out, out
    with pytest.raises(ValueError, match="checksum"):
        espimage.parse_app_image(bytes(img))


def test_parse_roundtrip_and_trailing_flash():
    img = espimage.build_app_image("3.1.4", project="micropython", size=40000, idf_ver="v5.4")
    info = espimage.parse_app_image(img + b"\xff" * 5000)
    assert info["version"] == "3.1.4" and info["project"] == "micropython" and info["idf_ver"] == "v5.4"
    assert info["size"] == len(img) and info["chip_id"] == 0
    assert info["sha256"] == img[-32:].hex()
    assert info["segments"][0][0] == espimage.DROM_START + 0x20


def test_images_differ_per_version_and_are_deterministic():
    a = espimage.build_app_image("1.0.0", size=20000)
    assert a == espimage.build_app_image("1.0.0", size=20000)
    assert a != espimage.build_app_image("1.0.1", size=20000)


@pytest.mark.parametrize("mutate,match", [
    (lambda b: b.__setitem__(0, 0xE8), "magic"),
    (lambda b: b.__setitem__(12, 5), "chip id"),
    (lambda b: b.__setitem__(len(b) - 1, b[-1] ^ 1), "SHA-256"),
    (lambda b: b.__setitem__(1000, b[1000] ^ 0x80), "checksum"),
    (lambda b: b.__setitem__(1, 0), "segment count"),
])
def test_parse_rejects(mutate, match):
    img = bytearray(espimage.build_app_image("1.0.0", size=8192))
    mutate(img)
    with pytest.raises(ValueError, match=match):
        espimage.parse_app_image(bytes(img))


def test_parse_rejects_truncation_everywhere():
    img = espimage.build_app_image("1.0.0")
    for cut in list(range(64)) + list(range(len(img) - 40, len(img))):
        with pytest.raises(ValueError):
            espimage.parse_app_image(img[:cut])


def test_bad_fields_refused():
    with pytest.raises(ValueError, match="version"):
        espimage.build_app_image("x" * 32)
    with pytest.raises(ValueError, match="project_name"):
        espimage.build_app_image("1.0", project="")
    with pytest.raises(ValueError, match="size"):
        espimage.build_app_image("1.0", size=100)


def test_wrong_chip_image_parses_only_for_that_chip():
    img = espimage.build_app_image("1.0.0", chip_id=5)
    with pytest.raises(ValueError, match="chip id 5"):
        espimage.parse_app_image(img)
    assert espimage.parse_app_image(img, chip_id=5)["chip_id"] == 5


def test_streaming_verifier_agrees_with_espimage():
    rnd = random.Random(6)
    for size in (None, 20000, 70000, 131072 + 37 * 16):
        img = espimage.build_app_image("4.%d" % (size or 0), size=size)
        want = espimage.parse_app_image(img)
        v = appimage.AppImageVerifier(project="micropython")
        i = 0
        while i < len(img):
            n = rnd.choice((1, 5, 100, 1500, 4096, 10000))
            v.feed(img[i:i + n])
            i += n
        got = v.finish()
        assert (got["version"], got["project"], got["size"], got["segments"]) == \
            (want["version"], want["project"], want["size"], len(want["segments"]))
    # and both refuse the same corruptions
    for pos in range(0, 300, 7):
        bad = bytearray(espimage.build_app_image("5.0", size=8192))
        bad[pos] ^= 0x04
        try:
            espimage.parse_app_image(bytes(bad))
            ok_py = True
        except ValueError:
            ok_py = False
        v = appimage.AppImageVerifier()
        try:
            v.feed(bytes(bad))
            v.finish()
            ok_dev = True
        except ValueError:
            ok_dev = False
        assert ok_py == ok_dev, pos


def test_release_assets(tmp_path):
    img = espimage.build_app_image("1.4.0", size=30000)
    src = tmp_path / "micropython.bin"
    src.write_bytes(img)
    out = tmp_path / "rel"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "release.py"), "--image", str(src),
                        "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    man = json.loads((out / "ota.json").read_text())
    assert man == {"version": "1.4.0", "project": "iotutils", "size": 30000,
                   "sha256": hashlib.sha256(img).hexdigest()}
    assert (out / "firmware.bin").read_bytes() == img


def test_release_refuses_invalid_and_mismatched(tmp_path):
    img = bytearray(espimage.build_app_image("1.4.0", size=30000))
    with pytest.raises(ValueError, match="differs"):
        release.make_assets(bytes(img), str(tmp_path / "a"), version="1.5.0")
    img[5000] ^= 1
    with pytest.raises(ValueError):
        release.make_assets(bytes(img), str(tmp_path / "b"))
    assert not (tmp_path / "b").exists()


def test_release_test_image_passes_esptool(tmp_path):
    out = tmp_path / "rel"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "release.py"), "--test-image", "2.0.1",
                        "--size", "65536", "-o", str(out), "--url", "https://example.invalid/fw.bin"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    man = json.loads((out / "ota.json").read_text())
    assert man["version"] == "2.0.1" and man["size"] == 65536 and man["url"].endswith("fw.bin")
    rc, info = esptool_info(out / "firmware.bin")
    assert rc == 0 and "App version: 2.0.1" in info and "(valid)" in info
