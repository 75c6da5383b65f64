"""OTA installs only what its owner released, over a verified connection (simulated devices).

The device updates from a fake GitHub served over HTTPS under GitHub's own host names (the simulator
maps api.github.com and release-assets.githubusercontent.com to loopback; the servers' certificate
comes from a test CA the device trusts, as it trusts GitHub's real roots on a board). Refused, with
nothing written to the boot slot: a server with a self-signed certificate for the same name, a
plain-http source, an unsigned release, a release signed by another key (announced, or not), a
truncated signature, an edited manifest, an older signed release. Installed and confirmed: the
owner's signed newer release.
"""
import hashlib
import json
import re
import shutil
import subprocess

import pytest

from fake_github import OWNER, FakeGitHub, SigningKey, manifest
from otadev import FACTORY, Dev, image

HOSTS = "api.github.com=127.0.0.1,release-assets.githubusercontent.com=127.0.0.1"
NAMES = ("api.github.com", "release-assets.githubusercontent.com")


def _openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A test CA and a server certificate it issued for GitHub's names; and a self-signed one for
    the same names that no device trusts."""
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca = str(d / "ca.key"), str(d / "ca.pem")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=iotutils test root",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    key, csr, cert = str(d / "srv.key"), str(d / "srv.csr"), str(d / "srv.pem")
    san = "subjectAltName=" + ",".join("DNS:" + n for n in NAMES)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
             "-out", csr, "-subj", "/CN=api.github.com", "-addext", san)
    (d / "ext.cnf").write_text(san + "\n")
    _openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
             "-days", "2", "-extfile", str(d / "ext.cnf"))
    evil_key, evil = str(d / "evil.key"), str(d / "evil.pem")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", evil_key, "-out", evil, "-days", "2", "-subj", "/CN=api.github.com", "-addext", san)
    return {"ca": ca, "cert": (cert, key), "evil": (evil, evil_key)}


def _github(tls):
    return FakeGitHub().start(tls=tls, api_host="api.github.com", asset_host="release-assets.githubusercontent.com")


def _release(gh, version, key=OWNER, edit=None, **kw):
    img = image(version, **kw)
    man = json.loads(manifest(version, img, key=key))
    if edit:
        edit(man)
    gh.add_release("me/fw", version, img, version=version, manifest_bytes=json.dumps(man).encode())
    return img


def _boot_slot(dev):
    """(otadata bytes, the other slot's first sector): what an install would have changed."""
    return dev.flash("otadata"), dev.flash("ota_1")[:4096]


def test_only_the_owners_signed_newer_release_over_verified_tls(tmp_path, pki):
    gh = _github(pki["cert"])
    evil = _github(pki["evil"])
    try:
        # a server that answers for api.github.com with a certificate no trusted root issued
        _release(evil, "9.9.9")
        dev = Dev(tmp_path / "mitm", evil, ca_file=pki["ca"], env={"IOTUTILS_SIM_HOSTS": HOSTS})
        dev.start()
        before = _boot_slot(dev)
        err = dev.cmd("check", r"OTAERROR (.*)").group(1)
        assert "TLS" in err or "certificate" in err.lower(), err
        assert "not signed" not in err
        assert not evil.requests  # refused in the handshake: not one request was sent
        assert _boot_slot(dev) == before
        dev.stop()

        dev = Dev(tmp_path / "dev", gh, ca_file=pki["ca"], env={"IOTUTILS_SIM_HOSTS": HOSTS})
        assert dev.start()["version"] == FACTORY
        before = _boot_slot(dev)
        refusals = [
            ("unsigned", dict(key=None), "not signed"),
            ("another key, announced", dict(key=SigningKey()), "signed by key"),
            ("another key, not announced", dict(key=SigningKey(), edit=lambda m: m.pop("key_id")), "bad signature"),
            ("truncated signature", dict(edit=lambda m: m.update(sig=m["sig"][:100])), "malformed"),
            ("edited version", dict(edit=lambda m: m.update(version="2.0.1")), "2.0.1|version"),
        ]
        for n, (what, kw, pattern) in enumerate(refusals):
            v = "2.0.%d" % n if what != "edited version" else "2.0.0"
            _release(gh, v, **kw)
            if n < 2:   # what update() refuses before its download is not offered by check() either
                chk = json.loads(dev.cmd("check", r"CHECK (.*)").group(1))
                assert chk["available"] == v and chk["newer"] is False and re.search(pattern, chk["refused"]), chk
            err = dev.update_expect_error()
            assert err is not None and re.search(pattern, err), (what, err)
            od, _ = _boot_slot(dev)
            assert od == before[0], what  # nothing was made bootable
        # the owner's release installs, boots pending verify and is confirmed
        _release(gh, "3.0.0", size=120000)
        st = dev.update_expect_reboot()
        assert st == {"version": "3.0.0", "slot": "ota_1", "pending": True, "rolled_back": False}
        dev.cmd("confirm", "CONFIRMED")
        assert dev.reset()["pending"] is False
        # an older release, even signed by the owner, is refused (it may have known holes)
        _release(gh, "2.5.0")
        assert "older than the running 3.0.0" in dev.update_expect_error()
        assert dev.reset()["version"] == "3.0.0"
        dev.stop()
    finally:
        gh.stop()
        evil.stop()


def test_secure_version_decides_before_the_version(tmp_path, pki):
    gh = _github(pki["cert"])
    try:
        dev = Dev(tmp_path / "dev", gh, ca_file=pki["ca"], env={"IOTUTILS_SIM_HOSTS": HOSTS})
        dev.start()
        _release(gh, "4.0.0", secure_version=2)
        assert dev.update_expect_reboot()["version"] == "4.0.0"
        dev.cmd("confirm", "CONFIRMED")
        dev.reset()
        # a higher version number with a lower anti-rollback counter: older
        _release(gh, "5.0.0", secure_version=1)
        assert "older" in dev.update_expect_error()
        _release(gh, "4.0.1", secure_version=3)
        assert dev.update_expect_reboot()["version"] == "4.0.1"
    finally:
        gh.stop()


def test_plain_http_and_a_missing_key_are_refused_with_how_to_fix(tmp_path):
    gh = FakeGitHub().start()  # plain http on loopback
    try:
        _release(gh, "1.9.0")
        dev = Dev(tmp_path / "http", gh)
        cfg = dev.dir / "fs" / "ota_cfg.json"
        c = json.loads(cfg.read_text())
        c["allow_http"] = False
        cfg.write_text(json.dumps(c))
        dev.start()
        err = dev.update_expect_error()
        assert "http://" in err and "allow_http" in err, err
        assert not gh.requests
        dev.stop()
        nokey = Dev(tmp_path / "nokey", gh, pubkey=None)
        nokey.start()
        err = nokey.update_expect_error()
        assert "no OTA public key" in err and "keygen.py" in err, err
        assert not [r for r in gh.requests if r[0] == "asset"]  # nothing downloaded without a key
        nokey.stop()
    finally:
        gh.stop()


def test_the_image_is_what_was_signed(tmp_path):
    """A manifest signed for one image, served with another of the same version and size: the
    download is refused after it (its SHA-256 is not the signed one) and the slot is scrubbed."""
    gh = FakeGitHub().start()
    try:
        good = image("1.8.0")
        other = image("1.8.0", project="micropython", idf_ver="v5.5.2")
        assert len(good) == len(other) and good != other
        gh.add_release("me/fw", "1.8.0", other, version="1.8.0", manifest_bytes=manifest("1.8.0", good))
        dev = Dev(tmp_path / "dev", gh)
        dev.start()
        try:
            err = dev.update_expect_error()
            assert "sha256" in err.lower(), err
            assert dev.flash("ota_1")[:4] == b"\xff" * 4  # scrubbed: it never looks like an image
        finally:
            dev.stop()
        assert hashlib.sha256(good).hexdigest() in json.loads(manifest("1.8.0", good))["sha256"]
    finally:
        gh.stop()


def test_an_uploaded_image_needs_its_signature(tmp_path):
    """The admin page's upload: the image and the signature from its ota.json."""
    import os

    import requests

    from conftest import ROOT
    from fake_github import device_env
    from simdev import SimDevice
    gh = FakeGitHub().start()
    dev = SimDevice(tmp_path / "dev", app=os.path.join(ROOT, "tests", "apps", "admin_app.py"),
                    extra_env=device_env(gh)).start()
    try:
        dev.wait_line("READY", timeout=40)
        dev.wait_line("setup portal on", timeout=30)
        s = requests.Session()
        csrf = s.post(dev.url("/admin/api/password"), json={"new": "upload-test-pw"}, timeout=10).json()["csrf"]
        img = image("6.1.0", size=60000)
        sig = OWNER.sign(hashlib.sha256(img).digest())

        def upload(query):
            return s.post(dev.url("/admin/api/ota/upload" + query), data=img, timeout=30,
                          headers={"X-CSRF-Token": csrf, "Content-Type": "application/octet-stream"})
        r = upload("")
        assert r.status_code == 400 and "not signed" in r.json()["error"], r.text
        r = upload("?sig=" + SigningKey().sign(hashlib.sha256(img).digest()))
        assert r.status_code == 400 and "bad signature" in r.json()["error"], r.text
        assert s.get(dev.url("/admin/api/ota/progress"), timeout=10).json()["state"] == "failed"
        since = len(dev.lines)
        r = upload("?sig=%s&sha256=%s" % (sig, hashlib.sha256(img).hexdigest()))
        assert r.status_code == 200 and r.json()["version"] == "6.1.0", r.text
        dev.wait_line(r"firmware: slot ota_1 \(pending verify\), \S+ 6\.1\.0", since=since, timeout=30)
        # the power fails before the new image confirmed itself: the next boot rolls it back, and
        # the version is refused from then on unless forced, which the upload could not say
        dev.power_cut(at_once=True)
        dev.start()
        dev.wait_line("READY", timeout=40)
        s = requests.Session()
        csrf = s.post(dev.url("/admin/api/login"), json={"password": "upload-test-pw"}, timeout=10).json()["csrf"]
        r = upload("?sig=" + sig)
        assert r.status_code == 400 and "rolled back" in r.json()["error"], r.text
        assert "reinstall a version that rolled back" in r.json()["error"], r.text
        since = len(dev.lines)
        r = upload("?sig=%s&force=1" % sig)
        assert r.status_code == 200 and r.json()["version"] == "6.1.0", r.text
        dev.wait_line(r"firmware: slot ota_1 \(pending verify\), \S+ 6\.1\.0", since=since, timeout=30)
    finally:
        dev.stop()
        gh.stop()
