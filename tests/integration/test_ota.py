"""OTA integration: simulated devices (real MicroPython processes, scripts/sim.py) updating from a fake
GitHub on loopback (tests/fake_github.py: REST API, redirect to an asset host, rate limits, faults).
Plus in-process checks of the HTTP client and the OTA source logic on CPython."""
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

from fake_github import OWNER, FakeGitHub, app_manifest, git_blob_sha1, manifest

import espimage
from iotutils.hal import otadata

from otadev import APP, FACTORY, SIZE, TABLE, Dev, image  # noqa: F401 - shared with the other OTA tests


@pytest.fixture
def gh():
    g = FakeGitHub().start()
    yield g
    g.stop()


@pytest.fixture
def mkdev(tmp_path, gh):
    devs = []

    def make(**kw):
        d = Dev(tmp_path, gh, **kw)
        devs.append(d)
        return d
    yield make
    for d in devs:
        d.stop()


def _self_signed(tmp_path, name):
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    key, cert = str(tmp_path / (name + ".key")), str(tmp_path / (name + ".pem"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:127.0.0.1"], check=True, capture_output=True,
                   timeout=60)
    return cert, key


def test_https_with_certificate_validation(tmp_path):
    cert, key = _self_signed(tmp_path, "server")
    other, _ = _self_signed(tmp_path, "other")
    g = FakeGitHub().start(tls=(cert, key))
    try:
        assert g.api_url.startswith("https://") and g.asset_url.startswith("https://")
        g.add_release("me/fw", "1.0.5", image("1.0.5"))
        # a device trusting another CA refuses the server before any byte of the image
        bad = Dev(tmp_path / "a", g, ca_file=other)
        bad.start()
        err = bad.cmd("check", r"OTAERROR (.*)").group(1)
        assert "TLS" in err or "certificate" in err.lower(), err
        bad.stop()
        dev = Dev(tmp_path / "b", g, ca_file=cert)
        dev.start()
        st = dev.update_expect_reboot()
        assert st["version"] == "1.0.5" and st["pending"]
        assert any(r[0] == "asset" for r in g.requests)
        dev.stop()
    finally:
        g.stop()


def test_over_tls_a_pause_loses_no_bytes_and_a_trickle_cannot_hold_a_check(tmp_path):
    """The same hostile path as the plain-http tests below, over verified TLS (GitHub's own way):
    an honest pause in the middle of every answer loses no bytes, and a release JSON that arrives
    a byte every 0.3 s is given up within small_answer_s. On MicroPython the TLS stream is now
    non-blocking and polled like a plain socket (the handshake too: test_ota_install.py has the
    server that never answers it); this checks that path reads every byte and keeps the limits."""
    cert, key = _self_signed(tmp_path, "server")
    g = FakeGitHub().start(tls=(cert, key))
    try:
        g.add_release("me/fw", "1.1.0", image("1.1.0", size=60000))
        g.fault = "pause"
        g.api_slow = "pause"
        dev = Dev(tmp_path / "a", g, ca_file=cert, timeout=3, small_answer_s=6)
        dev.start()
        chk = json.loads(dev.cmd("check", r"CHECK (.*)").group(1))
        assert chk["available"] == "1.1.0" and chk["newer"] is True
        g.fault = None
        g.api_slow = "body"
        g.slow_s = 60
        t0 = time.time()
        err = dev.cmd("check", r"OTAERROR (.*)|CHECK", timeout=40).group(1)
        took = time.time() - t0
        assert err and "too slow" in err, err
        assert took < 15, took
        g.api_slow = None
        g.fault = "pause"
        assert dev.update_expect_reboot()["version"] == "1.1.0"
        dev.stop()
    finally:
        g.stop()


def test_release_update_reboot_confirm(gh, mkdev):
    gh.add_release("me/fw", "1.0.9", image("1.0.9"))
    gh.add_release("me/fw", "1.1.0", image("1.1.0", size=150000))
    dev = mkdev()
    st = dev.start()
    assert st == {"version": FACTORY, "slot": "ota_0", "pending": False, "rolled_back": False}
    chk = json.loads(dev.cmd("check", r"CHECK (.*)").group(1))
    assert chk == {"current": FACTORY, "available": "1.1.0", "newer": True}
    st = dev.update_expect_reboot()
    assert st == {"version": "1.1.0", "slot": "ota_1", "pending": True, "rolled_back": False}
    assert "PROGRESS 150000 150000" in dev.sim.output()
    # the image went to the asset host through the API's redirect, with Accept: octet-stream
    hosts = [(r[0], r[1].split("?")[0]) for r in gh.requests]
    assert ("asset", "/a/%d" % gh.releases["me/fw"][1]["assets"][0]["id"]) in hosts
    assert dev.cmd("confirm", r"CONFIRMED pending=(\S+)").group(1) == "False"
    st = dev.reset()
    assert st == {"version": "1.1.0", "slot": "ota_1", "pending": False, "rolled_back": False}
    assert espimage.parse_app_image(dev.flash("ota_1"))["version"] == "1.1.0"
    chk = json.loads(dev.cmd("check", r"CHECK (.*)").group(1))
    assert chk["newer"] is False
    assert "already running" in dev.update_expect_error()


def test_branch_commit_and_tag_channels(gh, mkdev):
    img_b = image("2.0.0-dev1")
    # branch: ota.json names the image with an absolute URL on the asset host
    gh.set_file("me/fw", "main", "ota.json", manifest("2.0.0-dev1", img_b, url=gh.asset_link(img_b)))
    # commit: ota.json names a file in the repository at that ref
    sha = "0123456789abcdef0123456789abcdef01234567"
    img_c = image("2.0.0-c0123")
    gh.set_file("me/fw", sha, "build/fw.bin", img_c)
    gh.set_file("me/fw", sha, "ota.json", manifest("2.0.0-c0123", img_c, url="build/fw.bin"))
    gh.add_release("me/fw", "1.5.0", image("1.5.0"))
    gh.add_release("me/fw", "1.6.0", image("1.6.0"))
    dev = mkdev(channel="branch:main")
    dev.start()
    st = dev.update_expect_reboot()
    assert st["version"] == "2.0.0-dev1" and st["pending"]
    dev.cmd("confirm", "CONFIRMED")
    dev.cmd("channel commit:" + sha, "CHANNEL")
    st = dev.update_expect_reboot()
    assert st == {"version": "2.0.0-c0123", "slot": "ota_0", "pending": True, "rolled_back": False}
    dev.cmd("confirm", "CONFIRMED")
    dev.cmd("channel release:1.5.0", "CHANNEL")   # a given tag, not the latest (1.6.0)
    assert "older than the running 2.0.0-c0123" in dev.update_expect_error()  # a downgrade: refused
    dev.cmd("update_downgrade", r"SETBOOT (\S+)")                               # unless the owner says so
    dev.sim.mark = len(dev.sim.lines)
    assert dev.boot()["version"] == "1.5.0"
    raw = [r for r in gh.requests if "/contents/" in r[1]]
    assert raw and all("ref=" in r[1] for r in raw)


def test_unconfirmed_update_rolls_back_and_is_not_offered_again(gh, mkdev):
    gh.add_release("me/fw", "1.2.0", image("1.2.0"))
    dev = mkdev()
    dev.start()
    st = dev.update_expect_reboot()
    assert st["version"] == "1.2.0" and st["pending"]
    # the new app never confirms (it hangs, crashes or is reset): the bootloader rolls back
    st = dev.reset()
    assert st == {"version": FACTORY, "slot": "ota_0", "pending": False, "rolled_back": True}
    status = json.loads(dev.cmd("status", r"STATUS (.*)").group(1))
    assert status["rolled_back"] is True and status["version"] == FACTORY
    chk = json.loads(dev.cmd("check", r"CHECK (.*)").group(1))
    assert chk == {"current": FACTORY, "available": "1.2.0", "newer": False}
    assert "rolled back" in dev.update_expect_error()
    # still remembered after a power cut, and a newer release is offered again
    dev.sim.power_cut()
    dev.start()
    assert json.loads(dev.cmd("check", r"CHECK (.*)").group(1))["newer"] is False
    gh.add_release("me/fw", "1.2.1", image("1.2.1"))
    assert json.loads(dev.cmd("check", r"CHECK (.*)").group(1))["newer"] is True
    assert dev.update_expect_reboot()["version"] == "1.2.1"


def _bad_releases():
    """(what, image, manifest version, error pattern): each must be refused before set_boot."""
    good = image("3.0.0")
    corrupt = bytearray(good)
    corrupt[50000] ^= 0x20
    return [
        ("corrupt", bytes(corrupt), "3.0.0", "checksum|SHA-256"),
        ("truncated", good[:70000], "3.0.0", "truncated"),
        ("wrong chip", image("3.0.0", chip_id=5), "3.0.0", "chip id 5"),
        ("wrong project", image("3.0.0", project="otherfw"), "3.0.0", "project 'otherfw'"),
        ("same version", image(FACTORY), FACTORY, "already running"),
        ("descriptor differs from manifest", image("3.0.1"), "3.0.0", "signed image is 3.0.1"),
        ("not an image", b"<html>oops</html>" * 1000, "3.0.0", "magic"),
    ]


def test_bad_images_are_refused_with_nothing_changed(gh, mkdev):
    dev = mkdev()
    dev.start()
    before = {n: hashlib.sha256(dev.flash(n)).hexdigest() for n in ("otadata", "ota_0")}
    for what, data, version, match in _bad_releases():
        gh.add_release("me/fw", version, data, version=version)
        err = dev.update_expect_error()
        assert err is not None and re.search(match, err), (what, err)
    # ota.json whose sha256 does not match the (valid) image
    good = image("3.0.2")
    gh.add_release("me/fw", "3.0.2", good, manifest_bytes=manifest("3.0.2", good[:-1] + b"\0"))
    err = dev.update_expect_error()
    assert err and re.search("server sends|sha256", err), err
    # transport faults: truncated body, corrupted bytes, stalled server (timeout), connection reset
    gh.add_release("me/fw", "3.1.0", image("3.1.0"))
    gh.slow_s = 20
    for fault, match in (("truncate", "truncated"), ("corrupt", "checksum|sha256|SHA-256"),
                         ("slow", "network|timed out"), ("reset", "no response|network"),
                         ("short_length", "server sends")):
        gh.fault = fault
        err = dev.update_expect_error()
        assert err and re.search(match, err), (fault, err, dev.sim.output()[-1500:])
    gh.fault = None
    after = {n: hashlib.sha256(dev.flash(n)).hexdigest() for n in ("otadata", "ota_0")}
    assert after == before
    assert dev.reset() == {"version": FACTORY, "slot": "ota_0", "pending": False, "rolled_back": False}
    # and a good image still installs afterwards (chunked transfer encoding this time)
    gh.fault = "chunked"
    assert dev.update_expect_reboot()["version"] == "3.1.0"


def test_rate_limits_give_clear_errors(gh, mkdev):
    gh.add_release("me/fw", "1.3.0", image("1.3.0"))
    dev = mkdev()
    dev.start()
    gh.rate_limit_remaining = 0
    err = dev.cmd("check", r"OTAERROR (.*)").group(1)
    assert "rate limit" in err and "403" in err and "resets at" in err
    gh.rate_limit_remaining = None
    gh.secondary_limit = True
    err = dev.update_expect_error()
    assert "rate limit" in err and "429" in err and "retry after 60" in err
    gh.secondary_limit = False
    gh.releases["me/fw"].clear()
    assert "not found" in dev.cmd("check", r"OTAERROR (.*)").group(1)


def test_an_ota_json_near_its_size_limit_is_an_answer_or_an_ota_error_never_a_crash(gh, mkdev):
    """A hostile path pads ota.json to just under the 64 KB it may have. On the device's heap
    the copy of it once raised a bare MemoryError out of check() and update(): an app that
    catches OTAError, as the design asks, died. Whatever fits, the answer is a check or an
    OTAError; nothing is written."""
    img = image("3.2.0")
    padded = json.loads(manifest("3.2.0", img))
    padded["notes"] = "n" * 60000   # fields ota.json does not know are ignored
    gh.add_release("me/fw", "3.2.0", img, manifest_bytes=json.dumps(padded).encode())
    dev = mkdev()
    dev.start()
    before = hashlib.sha256(dev.flash("otadata")).hexdigest()
    m = dev.cmd("check", r"CHECK (.*)|OTAERROR (.*)")
    assert m.group(1) is None or json.loads(m.group(1))["available"] == "3.2.0", m.group(0)
    assert m.group(2) is None or "memory" in m.group(2), m.group(0)
    m = dev.cmd("update", r"SETBOOT|OTAERROR (.*)")
    if m.group(1) is not None:
        assert "memory" in m.group(1), m.group(0)
        assert hashlib.sha256(dev.flash("otadata")).hexdigest() == before
        assert dev.cmd("status", r"STATUS (.*)").group(1)   # the app is alive and answers
    else:
        assert dev.boot()["version"] == "3.2.0"


def test_auto_update_waits_for_idle_and_not_busy(gh, mkdev):
    gh.add_release("me/fw", "1.4.0", image("1.4.0"))
    fw_key = "/a/%d" % gh.releases["me/fw"][-1]["assets"][0]["id"]

    def downloaded(since):
        return any(r[1].startswith(fw_key) for r in gh.requests[since:])

    dev = mkdev()
    dev.start()
    dev.cmd("busy 1", "BUSY True")
    n0 = len(gh.requests)
    dev.cmd("auto 0.0002 0.02", "AUTO")   # check every 0.72 s, install after 1.2 s without requests
    dev.sim.wait_line("ota: auto: 1.4.0 available")
    # busy: nothing is downloaded, however long it stays idle (observed for longer than the idle time)
    t_end = time.time() + 1.8
    while time.time() < t_end:
        assert not downloaded(n0), "downloaded while busy"
        time.sleep(0.05)
    # not busy, but HTTP requests every 0.3 s keep it from being idle
    dev.cmd("busy 0", "BUSY False")
    t_end = time.time() + 2.5
    while time.time() < t_end:
        dev.cmd("request", "REQUEST")
        assert not downloaded(n0), "downloaded while requests were coming in"
        time.sleep(0.3)
    # requests stop: after 1.2 s idle it installs and reboots into the new image
    n1 = len(gh.requests)
    dev.sim.mark = len(dev.sim.lines)
    st = dev.boot()
    assert st["version"] == "1.4.0" and st["pending"]
    assert downloaded(n1)


def test_app_ota_switches_atomically_and_rolls_back(gh, mkdev):
    v1 = {"userapp.py": b"VERSION = '1'\n", "util.py": b"X = 1\n" * 50}
    gh.set_app("me/fw", "main", "app", v1)
    dev = mkdev(channel="branch:main", app_ota=True)
    dev.sim.start()
    assert dev.sim.wait_line(r"APPBOOT path=(\S+)").group(1) == "None"
    dev.boot()
    dev.cmd("app_update app", "APPSWITCH")
    dev.sim.mark = len(dev.sim.lines)
    assert dev.sim.wait_line(r"USERAPP (\S+)").group(1) == "1"
    dev.boot()
    dev.cmd("confirm", "CONFIRMED")
    # v2 changes userapp.py only; a corrupted download is refused and nothing switches
    gh.set_app("me/fw", "main", "app", dict(v1, **{"userapp.py": b"VERSION = '2'\n"}), version="2")
    gh.corrupt_files.add("app/userapp.py")
    assert "sha256 mismatch" in dev.cmd("app_update app", r"OTAERROR (.*)").group(1)
    assert json.loads(dev.cmd("app_status", r"APPSTATUS (.*)").group(1))["active"] == "a"
    gh.corrupt_files.clear()
    # a file far larger than its signed size: stopped at that size, and nothing is left staged
    # (before: all of it was written, then refused, and it stayed: a board's filesystem is small)
    gh.padded_files["app/userapp.py"] = 3 * 1024 * 1024
    assert "larger than its signed size" in dev.cmd("app_update app", r"OTAERROR (.*)").group(1)
    assert os.listdir(dev.dir / "fs" / "apps" / "b") == []
    assert json.loads(dev.cmd("app_status", r"APPSTATUS (.*)").group(1))["active"] == "a"
    gh.padded_files.clear()
    dev.cmd("app_update app", "APPSWITCH")
    dev.sim.mark = len(dev.sim.lines)
    assert dev.sim.wait_line(r"USERAPP (\S+)").group(1) == "2"
    dev.boot()
    files_b = sorted(os.listdir(dev.dir / "fs" / "apps" / "b"))
    assert files_b == ["userapp.py", "util.py"]
    assert git_blob_sha1((dev.dir / "fs" / "apps" / "b" / "util.py").read_bytes()) == git_blob_sha1(v1["util.py"])
    # not confirmed: the next boot runs the previous app again
    dev.cmd("reset", "CMD reset")
    dev.sim.mark = len(dev.sim.lines)
    assert dev.sim.wait_line(r"USERAPP (\S+)").group(1) == "1"
    dev.boot()
    st = json.loads(dev.cmd("app_status", r"APPSTATUS (.*)").group(1))
    assert st["active"] == "a" and st["rolled_back"] is True and st["pending"] is False


# ---------------------------------------------------------------- in-process (CPython) checks

@pytest.fixture
def local(tmp_path, monkeypatch):
    """OTA on CPython over the RAM-flash hardware layer, factory image 1.0.0 in ota_0."""
    monkeypatch.delenv("IOTUTILS_SIM", raising=False)
    monkeypatch.delenv("IOTUTILS_SIM_STATE", raising=False)
    from iotutils.hal import sim
    monkeypatch.setattr(sim, "_config", None)
    monkeypatch.setattr(sim, "_flash", {})
    from iotutils import hal
    hal.partition("ota_0").write(0, espimage.build_app_image("1.0.0", size=20000))
    _rebooted()
    return str(tmp_path / "state.json")


def _rebooted():
    """What a reset clears in this process: the install that was to boot next (after one, another
    install is refused until the reset)."""
    from iotutils.ota import state
    state.installed[0] = None


def _ota(**kw):
    """An OTA in this process that trusts the fake GitHub's key and its plain-http loopback servers."""
    from iotutils.ota import OTA
    kw.setdefault("pubkey", OWNER.pem)
    kw.setdefault("allow_http", True)
    return OTA(**kw)


def test_http_client_redirect_loop_and_token_not_leaked(gh, local):
    from iotutils.ota import OTAError
    gh.add_release("me/fw", "1.0.1", image("1.0.1", size=20000))
    o = _ota(repo="me/fw", api=gh.api_url, token="s3cret", state_path=local)
    assert o.update(reboot=False) == "1.0.1"
    api = [r for r in gh.requests if r[0] == "api"]
    assets = [r for r in gh.requests if r[0] == "asset"]
    assert api and all(r[2].get("authorization") == "Bearer s3cret" for r in api)
    assert assets and all("authorization" not in r[2] for r in assets)
    assert all(r[2].get("user-agent") for r in gh.requests)

    # a server that redirects forever
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]

    def loop():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            c.recv(4096)
            c.sendall(b"HTTP/1.1 302 Found\r\nLocation: /again\r\nContent-Length: 0\r\n\r\n")
            c.close()
    threading.Thread(target=loop, daemon=True).start()
    o2 = _ota(channel="url:http://127.0.0.1:%d/ota.json" % port, state_path=local)
    with pytest.raises(OTAError, match="too many redirects"):
        o2.check()
    srv.close()


def test_a_hostile_path_gets_the_token_never_and_an_ota_error_always(gh, local):
    """ota.json is not signed: a host it names for the image got the device's GitHub token (only a
    redirect dropped it); a size of 1e999 or a url of 1 escaped as OverflowError / AttributeError
    (an app that catches OTAError crashed; the admin page's check answered an empty 500); and an
    image trickled a byte at a time was never stopped at deadline_s (only after a whole block)."""
    import json
    import time
    from iotutils.ota import OTAError
    img = image("1.0.3", size=30000)
    other = gh.asset_link(img)   # another origin than the API's
    gh.add_release("me/fw", "1.0.3", img, manifest_bytes=manifest("1.0.3", img, url=other))
    o = _ota(repo="me/fw", api=gh.api_url, token="s3cret", state_path=local)
    assert o.update(reboot=False) == "1.0.3"
    assert [r for r in gh.requests if r[0] == "api"] and all(
        ("authorization" in r[2]) == (r[0] == "api") for r in gh.requests), gh.requests
    _rebooted()
    good = json.loads(manifest("1.0.4", img))
    for field, value, words in (("size", "1e999", "size is not a whole number"), ("size", '"30000"', "size"),
                                ("url", "1", "url is not text"), ("url", "[1]", "url is not text")):
        text = json.dumps(dict(good, **{field: "@"})).replace('"@"', value)
        gh.add_release("me/fw", "1.0.4", img, manifest_bytes=text.encode())
        for call in (o.check, lambda: o.update(reboot=False)):
            with pytest.raises(OTAError, match=words):
                call()
    gh.add_release("me/fw", "1.0.5", image("1.0.5", size=30000))
    gh.fault = "trickle"
    gh.trickle_s = 0.2
    o.deadline_s = 2
    t0 = time.time()
    with pytest.raises(OTAError, match="download took longer than 2 s"):
        o.update(reboot=False)
    assert time.time() - t0 < 6


def test_plain_url_source_with_sha256(gh, local):
    from iotutils.ota import OTAError
    img = image("1.7.0", size=30000)
    url = gh.asset_link(img)
    digest = hashlib.sha256(img).digest()
    # an image URL has no ota.json: its signature comes with it (sig=, from the release's ota.json)
    unsigned = _ota(channel="url:" + url, sha256=digest.hex(), state_path=local)
    with pytest.raises(OTAError, match="not signed"):
        unsigned.update(reboot=False)
    o = _ota(channel="url:" + url, sha256=digest.hex(), sig=OWNER.sign(digest), state_path=local)
    assert o.check() == {"current": "1.0.0", "available": "1.7.0", "newer": True}
    done = []
    assert o.update(progress=lambda a, b: done.append((a, b)), reboot=False) == "1.7.0"
    assert done[-1] == (30000, 30000) and all(b == 30000 for _, b in done)
    # without sha256= the URL names an ota.json manifest (its "url" may be relative to it)
    man = gh.asset_link(manifest("1.7.1", image("1.7.1", size=30000), url=url), "ota.json")
    with pytest.raises(OTAError, match="bad JSON"):
        _ota(channel="url:" + url, state_path=local).check()
    assert _ota(channel="url:" + man, state_path=local).check()["available"] == "1.7.1"
    bad = _ota(channel="url:" + url, sha256="0" * 64, sig=OWNER.sign(digest), state_path=local)
    from iotutils import hal
    hal.ota_mark_valid()
    # 1.7.0 waits for the reset: nothing else installs before it (a second install, even a refused
    # one, wiped the slot just chosen to boot)
    with pytest.raises(OTAError, match="1.7.0 is installed and boots at the next reset"):
        bad.update(reboot=False)
    _rebooted()
    with pytest.raises(OTAError, match="sha256"):
        bad.update(reboot=False)


def test_constructor_validates_arguments(local):
    from iotutils.ota import OTA
    for kw in ({"repo": "nope"}, {"repo": "a/b", "channel": "tag"}, {"repo": "a/b", "channel": "branch:"},
               {"channel": "release"}, {"repo": "<img src=x onerror=alert(1)>/x"}, {"repo": "a/b?c"},
               {"repo": "a/../b"}, {"repo": "a/b", "channel": "branch:<b>"}, {"repo": "a/b", "channel": "commit:xyz"},
               {"repo": "a/b", "channel": "release:v1 2"}, {"channel": "url:javascript:alert(1)"},
               {"channel": 'url:https://x/"><script>'}):
        with pytest.raises(ValueError, match="repo|channel"):
            OTA(state_path=local, **kw)
    for ok in ({"repo": "Owner-1/my_repo.fw"}, {"repo": "a/b", "channel": "branch:feature/x"},
               {"repo": "a/b", "channel": "commit:0123abc"}, {"repo": "a/b", "channel": "release:v1.2.3"}):
        OTA(state_path=local, **ok)


def test_update_refused_while_running_image_unconfirmed(gh, local):
    from iotutils import hal
    from iotutils.ota import OTAError
    gh.add_release("me/fw", "1.0.2", image("1.0.2", size=20000))
    od = hal.partition("otadata")
    otadata.set_boot(od, 0)
    otadata.set_state(od, otadata.STATE_PENDING_VERIFY)
    o = _ota(repo="me/fw", api=gh.api_url, state_path=local)
    assert o.status()["pending"] is True
    with pytest.raises(OTAError, match="not confirmed"):
        o.update(reboot=False)
    o.confirm()
    assert o.status()["pending"] is False
    assert o.update(reboot=False) == "1.0.2"


def test_install_stream_upload(local):
    import io
    from iotutils import hal
    from iotutils.ota import OTAError
    o = _ota(repo="me/fw", api="http://127.0.0.1:9", state_path=local)
    img = image("1.9.0", size=40000)
    sig = OWNER.sign(hashlib.sha256(img).digest())
    with pytest.raises(OTAError, match="not signed"):   # refused before a byte is read
        o.install_stream(io.BytesIO(img), len(img))
    with pytest.raises(OTAError, match="sha256 mismatch"):
        o.install_stream(io.BytesIO(img), len(img), sha256="ab" * 32, sig=sig)
    bad = bytearray(img)
    bad[20000] ^= 1
    with pytest.raises(OTAError, match="checksum|SHA-256"):
        o.install_stream(io.BytesIO(bytes(bad)), len(bad), sig=sig)
    other = image("1.9.0", project="other", size=40000)
    with pytest.raises(OTAError, match="project"):
        o.install_stream(io.BytesIO(other), sig=OWNER.sign(hashlib.sha256(other).digest()))
    with pytest.raises(OTAError, match="truncated"):
        o.install_stream(io.BytesIO(img[:30000]), len(img), sig=sig)
    # a complete, valid image signed by another key: everything checked, then refused
    from fake_github import SigningKey
    with pytest.raises(OTAError, match="bad signature"):
        o.install_stream(io.BytesIO(img), len(img), sig=SigningKey().sign(hashlib.sha256(img).digest()))
    assert hal.ota_next() == "ota_1"
    assert otadata.active(hal.partition("otadata")) is None   # the refusals set nothing to boot
    seen = []
    assert o.install_stream(io.BytesIO(img), None, progress=lambda a, b: seen.append((a, b)),
                            sha256=hashlib.sha256(img).hexdigest(), sig=sig) == "1.9.0"
    assert seen[-1] == (40000, None)
    assert espimage.parse_app_image(hal.partition("ota_1").read(0, 65536))["version"] == "1.9.0"


def test_release_scan_streams_like_json_loads():
    import random as _r
    from iotutils.ota import OTAError, ReleaseScan
    gh = FakeGitHub()
    gh.api_url = "http://127.0.0.1:1"
    rel = gh.add_release("o/r", "v1.2.3", b"x" * 100, version="1.2.3", body_kb=12)
    rel["body"] += ' quotes " and \\ backslashes \u00e9\u4e2d {"tag_name": "fake"} [1, 2]'
    rel["assets"].insert(0, {"id": 1, "name": "firmware.bin.sig", "size": 3, "key": "x", "state": "uploaded",
                             "content_type": "x"})
    doc = gh.release_json("o/r", rel)
    doc["assets"][1]["url"] = doc["assets"][1]["url"].replace("/", "\\/")  # an escaped form is still read
    raw = json.dumps(doc, indent=_r.choice((None, 2))).replace("\\\\/", "\\/").encode()
    want = json.loads(raw)
    rnd = _r.Random(1)
    for _ in range(30):
        scan = ReleaseScan(("ota.json", "firmware.bin"))
        i = 0
        while i < len(raw):
            n = rnd.choice((1, 2, 7, 64, 512, 5000))
            scan.feed(raw[i:i + n])
            i += n
        assert scan.done() and scan.tag == "v1.2.3"
        got = {k: (v.get("url"), v.get("browser_download_url")) for k, v in scan.assets.items()}
        exp = {a["name"]: (a["url"], a["browser_download_url"]) for a in want["assets"]
               if a["name"] in ("ota.json", "firmware.bin")}
        assert got == exp
    for bad in (b'[1, 2]', b'{"a": [1}', b'{"a": 1}}', b'"str"'):
        with pytest.raises(OTAError):
            s = ReleaseScan(("x",))
            s.feed(bad)
            if not s.done():
                raise OTAError("incomplete")


def _canned_server(responses):
    """A loopback server answering request i with responses[i] (bytes; None: stall without answering)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    conns = []

    def loop():
        for resp in responses:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            conns.append(c)
            c.recv(4096)
            if resp is not None:
                c.sendall(resp)
                c.close()
    threading.Thread(target=loop, daemon=True).start()
    return srv, "http://127.0.0.1:%d" % srv.getsockname()[1], conns


def test_the_network_code_is_made_when_first_used_and_can_be_replaced(gh, local):
    # OTA() makes no HTTP client or source (their modules load at the first check); the attributes
    # still read and write as before, and a client set by the program is the one the source uses
    from iotutils.ota import OTA, Http
    o = _ota(repo="me/fw", api=gh.api_url, state_path=local)
    assert o._http is None and o._source is None
    o.http_timeout = 3
    assert o.http.timeout == 3 and o.source.http is o.http
    mine = Http(allow_http=True)
    o.http = mine
    assert o.source.http is mine
    gh.add_release("me/fw", "1.0.1", image("1.0.1", size=20000))
    assert o.check()["available"] == "1.0.1"
    assert isinstance(o.http, Http) and OTA.http_timeout is None


def test_after_an_automatic_check_the_network_code_goes_unless_it_is_in_use(gh, local, monkeypatch):
    # an automatic check that found nothing unloads the client, the release scanner, the signature
    # code and the image format until the next check; not while an update holds the install lock,
    # and not when the program set a client of its own (it would lose it)
    import sys

    import iotutils.ota as ota_pkg
    from iotutils.ota import _NETWORK_MODULES, Http
    o = _ota(repo="me/fw", api=gh.api_url, state_path=local)
    gh.add_release("me/fw", "0.9.0", image("0.9.0", size=20000))   # older: nothing to install
    assert o.check()["newer"] is False
    o.owner_key()
    for name in _NETWORK_MODULES:        # the other tests of this process keep their module objects
        __import__(name)
        monkeypatch.setitem(sys.modules, name, sys.modules[name])
        pkg, _, attr = name.rpartition(".")
        monkeypatch.setattr(sys.modules[pkg], attr, sys.modules[name])

    def loaded():
        return {n for n in _NETWORK_MODULES if n in sys.modules}

    assert o._lock.acquire(0)            # an update runs: everything stays
    try:
        o._auto_check()
        assert loaded() == set(_NETWORK_MODULES) and o._http is not None
    finally:
        o._lock.release()
    o._auto_check()
    assert not loaded() and o._http is None and o._source is None
    assert not hasattr(ota_pkg, "client")
    assert o.check()["available"] == "0.9.0"      # loaded again on demand, same answer
    assert {"iotutils.ota.client", "iotutils.ota.release", "iotutils.appimage"} <= loaded()
    o._auto_check()                      # gone again; an update after that loads all it needs
    assert not loaded()
    gh.add_release("me/fw", "1.0.1", image("1.0.1", size=20000))
    assert o.update(reboot=False) == "1.0.1"
    assert {"iotutils.sign", "iotutils.ota.install"} <= loaded()
    mine = Http(allow_http=True)         # (the module object from before the unload)
    o.http = mine
    o._auto_check()
    assert o.http is mine and "iotutils.ota.client" in sys.modules


def test_http_client_edge_cases():
    from iotutils.ota import Http, OTAError
    body = b"0123456789" * 500
    chunked = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(body[i:i + 777]), body[i:i + 777])
                       for i in range(0, len(body), 777)) + b"0\r\nX-Trailer: 1\r\n\r\n"
    srv, base, conns = _canned_server([
        b"HTTP/1.1 301 Moved\r\nLocation: sub/file\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Bin: \xff\xfe\r\n\r\n" + chunked,
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: 24\r\n\r\n"
        b'{"message": "it broke"}\n',
        b"SMTP ready\r\n\r\n",
        None,   # accepts, never answers: the read times out
    ])
    h = Http(allow_http=True)
    h.timeout = 0.5
    r = h.get(base + "/dir/start")
    assert r.url.endswith("/dir/sub/file")   # a relative Location resolves against the request path
    assert r.read_all(1 << 20) == body
    r.close()
    with pytest.raises(OTAError, match="HTTP 500.*it broke"):
        h.get(base + "/x")
    with pytest.raises(OTAError, match="bad HTTP status line"):
        h.get(base + "/y")
    t0 = time.time()
    with pytest.raises(OTAError, match="network|timed out"):
        h.get(base + "/z")
    assert time.time() - t0 < 10
    srv.close()
    for c in conns:
        c.close()


def test_app_ota_from_a_url_manifest(gh, local, tmp_path, monkeypatch):
    import sys
    from iotutils import ota as ota_mod
    from iotutils.ota import OTAError
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    files = {"userapp.py": b"VERSION = 'u1'\n", "helper.py": b"def f():\n    return 42\n"}
    urls = {n: gh.asset_link(d, n) for n, d in files.items()}
    man = gh.asset_link(app_manifest(files, urls=urls), "app.json")
    unsigned = _ota(channel="url:" + gh.asset_link(app_manifest(files, urls=urls, key=None), "app.json"),
                    state_path=local)
    with pytest.raises(OTAError, match="not signed"):
        unsigned.update_app(reboot=False)
    o = _ota(channel="url:" + man, state_path=local)
    seen = []
    assert o.update_app(progress=lambda a, b: seen.append((a, b)), reboot=False) == "a"
    assert seen[-1] == (sum(len(d) for d in files.values()),) * 2
    assert ota_mod.app_status() == {"active": "a", "pending": True, "rolled_back": False, "ref": man, "version": "1"}
    assert sorted(os.listdir("apps/a")) == ["helper.py", "userapp.py"]
    assert ota_mod.app_boot() == "apps/a" and sys.path[0] == "apps/a"
    o.confirm()
    assert ota_mod.app_status()["pending"] is False
    # a file whose bytes do not match the (signed) manifest: refused, the running app stays
    # (the same size, so the digest is what refuses it; a larger one stops at its signed size)
    v2 = dict(files, **{"userapp.py": b"VERSION = 'u2'\n"})
    swapped = dict(urls, **{"userapp.py": gh.asset_link(b"VERSION = 'ev'\n", "userapp.py")})
    o2 = _ota(channel="url:" + gh.asset_link(app_manifest(v2, urls=swapped, version="2"), "app.json"), state_path=local)
    with pytest.raises(OTAError, match="sha256 mismatch"):
        o2.update_app(reboot=False)
    assert ota_mod.app_status()["active"] == "a"
    for junk in ({"../x.py": b"x"}, {}):
        o3 = _ota(channel="url:" + gh.asset_link(app_manifest(junk), "app.json"), state_path=local)
        with pytest.raises(OTAError):
            o3.update_app(reboot=False)
    # an update confirmed without a reboot: the app still runs from apps/a, so the next update
    # must not take apps/a for the free folder (before: it wrote the new files over the running app)
    o4 = _ota(channel="url:" + gh.asset_link(app_manifest(v2, urls={n: gh.asset_link(d, n) for n, d in v2.items()},
                                                          version="2"), "app.json"), state_path=local)
    assert o4.update_app(reboot=False) == "b"
    o4.confirm()
    assert ota_mod.app_status()["active"] == "b" and sys.path[0] == "apps/a"
    with pytest.raises(OTAError, match="running app's folder"):
        o4.update_app(reboot=False, force=True)   # (the same version again: force)
    assert (tmp_path / "apps" / "a" / "userapp.py").read_bytes() == files["userapp.py"]


def _app_release(gh, local, files, version):
    """An OTA whose url: channel names a signed app.json for {name: bytes}, each file served apart."""
    urls = {n: gh.asset_link(d, n) for n, d in files.items()}
    return _ota(channel="url:" + gh.asset_link(app_manifest(files, urls=urls, version=version), "app.json"),
                state_path=local)


def _reboot_app(main=None):
    """A reboot as App OTA sees it in this process: a fresh sys.path (and no app module), then main.py's
    app_boot(main)."""
    import sys
    from iotutils import ota as ota_mod
    sys.path[:] = [p for p in sys.path if not p.startswith("apps/")]
    if main is not None:
        sys.modules.pop(main, None)
    return ota_mod.app_boot(main)


def test_app_ota_file_names_with_spaces_and_accents(gh, local, tmp_path, monkeypatch):
    """A file name goes into the contents URL percent-encoded: "my page.html" was a request line
    with a space in it, refused as a bad URL, so an app with such a file could not be installed."""
    import sys
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    files = {"userapp.py": b"VERSION = 's1'\n", "my page.html": b"<h1>hi</h1>\n", "caf\u00e9 50%.txt": b"ok\n"}
    gh.set_app("me/fw", "main", "app", files)
    o = _ota(repo="me/fw", channel="branch:main", api=gh.api_url, state_path=local)
    assert o.update_app(reboot=False) == "a"
    for name, data in files.items():
        with open("apps/a/" + name, "rb") as f:
            assert f.read() == data, name
    paths = [r[1] for r in gh.requests if r[0] == "api" and "/contents/" in r[1]]
    assert any("/contents/app/my%20page.html?" in p for p in paths), paths
    assert any("/contents/app/caf%C3%A9%2050%25.txt?" in p for p in paths), paths


def test_app_ota_refuses_replays_of_old_and_rolled_back_bundles(gh, local, tmp_path, monkeypatch):
    """A hostile server may replay genuine, older signed app bundles: an older version is refused
    (downgrade=True installs it), so is the running one and one that rolled back here (force=True).
    Before, the signed version was never compared: v1 replaced v3, and a v2 that had just rolled
    back was installed again at once."""
    import sys
    from iotutils import ota as ota_mod
    from iotutils.ota import OTAError
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))

    def offer(version):
        return _app_release(gh, local, {"userapp.py": ("VERSION = %r\n" % version).encode()}, version)
    boot = _reboot_app
    o = offer("3.0.0")
    assert o.update_app(reboot=False) == "a"
    boot()
    o.confirm()
    for version, words in (("1.0.0", "older than the running 3.0.0"), ("3.0.0", "already running")):
        with pytest.raises(OTAError, match=words):
            offer(version).update_app(reboot=False)
    assert ota_mod.app_status()["active"] == "a" and ota_mod.app_status()["version"] == "3.0.0"
    assert offer("1.0.0").update_app(reboot=False, downgrade=True) == "b"   # the owner asks for it
    boot()   # boots pending, never confirmed ...
    boot()   # ... so the next boot rolls it back
    st = ota_mod.app_status()
    assert st["active"] == "a" and st["rolled_back"] and st["version"] == "3.0.0" and st["ref"], st
    assert offer("4.0.0").update_app(reboot=False) == "b"
    boot()
    boot()
    with pytest.raises(OTAError, match="rolled back on this device"):
        offer("4.0.0").update_app(reboot=False)
    assert offer("4.0.0").update_app(reboot=False, force=True) == "b"


def test_a_new_app_that_fails_to_import_resets_to_roll_back(gh, local, tmp_path, monkeypatch):
    """app_boot(main="userapp"): a new, pending app that raises at import resets the device at once,
    and the next boot runs the previous app. Imported by main.py itself, such an app stopped main.py
    and nothing reset the device, so it stayed down (the Device that arms the watchdog never came)."""
    import sys
    from iotutils import hal
    from iotutils import ota as ota_mod
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    resets = []
    monkeypatch.setattr(hal, "reset", lambda: resets.append(1))

    boot = _reboot_app

    def offer(version, body):
        return _app_release(gh, local, {"userapp.py": body}, version)
    o = offer("1.0.0", b"VERSION = '1'\n")
    o.update_app(reboot=False)
    assert boot("userapp") == "apps/a" and sys.modules["userapp"].VERSION == "1"
    o.confirm()
    offer("2.0.0", b"raise RuntimeError('a bug in the new app')\n").update_app(reboot=False)
    with pytest.raises(RuntimeError):
        boot("userapp")
    assert resets == [1]                       # reset at once ...
    assert boot("userapp") == "apps/a"         # ... and the next boot is the previous app
    assert sys.modules["userapp"].VERSION == "1" and ota_mod.app_status()["rolled_back"]
    # a confirmed app that fails to import is the app's own error: no reset loop
    sys.modules.pop("userapp", None)
    (tmp_path / "apps" / "a" / "userapp.py").write_bytes(b"raise ValueError('edited by hand')\n")
    with pytest.raises(ValueError):
        boot("userapp")
    assert resets == [1]


class _Faulty:
    """A stream that raises `exc` at its k-th read (a network error or a full heap mid-download)."""

    def __init__(self, data, k, exc):
        self.f = __import__("io").BytesIO(data)
        self.k = k
        self.exc = exc
        self.n = 0

    def readinto(self, b):
        self.n += 1
        if self.n == self.k:
            raise self.exc
        return self.f.readinto(b)


def test_a_failure_at_any_step_of_an_install_leaves_nothing_behind(local):
    """MemoryError or OSError at every flash write/erase and at every network read of an install:
    the update fails with the reason, nothing is bootable, the OTA lock and state are free, and the
    next install works."""
    import io

    from iotutils import hal
    from iotutils.hal.flash import Region
    from iotutils.ota import OTAError
    o = _ota(repo="me/fw", api="http://127.0.0.1:9", state_path=local)
    img = image("2.2.0", size=30000)
    sig = OWNER.sign(hashlib.sha256(img).digest())
    boot_before = hal.partition("otadata").read(0, 8192)
    count = [0]

    def counting(op, name, off, n):
        if op != "read":
            count[0] += 1
    Region.fault = counting
    try:
        assert o.install_stream(io.BytesIO(img), len(img), sig=sig) == "2.2.0"
    finally:
        Region.fault = None
    steps = count[0]
    reads = _Faulty(img, 10 ** 6, None)
    hal.ota_set_boot("ota_0")  # back to the factory image for the runs below
    od = hal.partition("otadata")
    od.erase(0, 8192)
    od.write(0, boot_before)
    _rebooted()
    o.install_stream(reads, len(img), sig=sig)  # (counts the reads of a clean install)
    od.erase(0, 8192)
    od.write(0, boot_before)
    _rebooted()
    n_reads = reads.n
    assert steps > 5 and n_reads > 5, (steps, n_reads)
    failures = []
    for exc in (MemoryError(), OSError(5, "EIO")):
        for where, k in [("flash", k) for k in range(1, steps + 1)] + [("net", k) for k in range(1, n_reads)]:
            hit = [0]
            from iotutils.ota import state
            assert state.installed[0] is None   # (else every run below is refused before it starts)

            def fault(op, name, off, n, k=k, exc=exc, hit=hit):
                if op != "read":
                    hit[0] += 1
                    if hit[0] == k:
                        raise exc
            stream = io.BytesIO(img) if where == "flash" else _Faulty(img, k, exc)
            if where == "flash":
                Region.fault = fault
            try:
                o.install_stream(stream, len(img), sig=sig)
                failures.append((where, k, type(exc).__name__, "installed anyway"))
            except (OTAError, MemoryError, OSError):
                pass
            finally:
                Region.fault = None
            if hal.partition("otadata").read(0, 8192) != boot_before:
                failures.append((where, k, type(exc).__name__, "boot slot changed"))
                od.erase(0, 8192)
                od.write(0, boot_before)
            first = hal.partition("ota_1").read(0, 4)
            if first[0] == 0xE9:
                failures.append((where, k, type(exc).__name__, "a half image looks like an image"))
            assert not o.state.load().get("installing")
            assert o._lock.acquire(0)  # released
            o._lock.release()
    assert not failures, failures[:10]
    assert o.install_stream(io.BytesIO(img), len(img), sig=sig) == "2.2.0"  # and the next one works


def test_a_failed_app_update_leaves_no_pointer_to_the_folder_it_emptied(gh, local, tmp_path, monkeypatch):
    """The staging folder is the previous app's; a failed update empties it, and current.json named it
    as "previous" all the same (a rollback to it would have found no app)."""
    import json
    import sys
    from iotutils.ota import OTAError
    from iotutils.ota import app as app_mod
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))

    def offer(version):
        return _app_release(gh, local, {"userapp.py": ("VERSION = %r\n" % version).encode()}, version)
    for version, folder in (("1", "a"), ("2", "b")):
        assert offer(version).update_app(reboot=False) == folder
        _reboot_app()
        app_mod.app_confirm()
    pointer = json.loads((tmp_path / "apps" / "current.json").read_text())
    assert (pointer["active"], pointer["previous"], pointer["previous_version"]) == ("b", "a", "1")

    def broken(*a):
        raise OTAError("userapp.py: 3 bytes, its signed size is 15")
    monkeypatch.setattr(app_mod, "_download", broken)
    with pytest.raises(OTAError, match="signed size"):
        offer("3").update_app(reboot=False)
    pointer = json.loads((tmp_path / "apps" / "current.json").read_text())
    assert pointer["active"] == "b" and pointer["version"] == "2" and not pointer["pending"]
    assert pointer["previous"] is None and pointer["previous_version"] is None
    assert os.listdir(tmp_path / "apps" / "a") == [] and _reboot_app() == "apps/b"


def test_a_failure_at_any_step_of_an_app_update_leaves_the_running_app_alone(gh, local, tmp_path, monkeypatch):
    """MemoryError or OSError at every file operation and at every network read of an App OTA:
    the update fails, the running app and its pointer are untouched (or, for a failure after the
    switch was written, the new app is complete), nothing half-written stays, the install lock is
    free and the next update works."""
    import builtins
    import sys

    from iotutils import ota as ota_mod
    from iotutils.ota import OTAError
    from iotutils.ota import app as app_mod
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    v1 = {"userapp.py": b"VERSION = 'u1'\n", "helper.py": b"def f():\n    return 42\n" * 40}
    v2 = dict(v1, **{"userapp.py": b"VERSION = 'u2'\n" * 90, "extra.py": b"E = 1\n" * 300})

    def release(files, version):
        return _app_release(gh, local, files, version)
    assert release(v1, "1").update_app(reboot=False) == "a"
    app_mod.app_confirm()
    o = release(v2, "2")
    fs_ops = [0]
    net_reads = [0]
    faults = {"fs": 0, "net": 0, "exc": None}

    def step(kind):
        counter = fs_ops if kind == "fs" else net_reads
        counter[0] += 1
        if faults[kind] == counter[0]:
            raise faults["exc"]

    real_open, real_os = builtins.open, os

    class FaultyFile:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def __getattr__(self, name):
            attr = getattr(self.f, name)
            if name in ("write", "readinto", "read"):
                def op(*a):
                    step("fs")
                    return attr(*a)
                return op
            return attr

    def faulty_open(*a, **kw):
        step("fs")
        return FaultyFile(real_open(*a, **kw))

    class FaultyOs:
        def __getattr__(self, name):
            attr = getattr(real_os, name)
            if name in ("remove", "rename", "mkdir", "listdir", "stat"):
                def op(*a):
                    step("fs")
                    return attr(*a)
                return op
            return attr

    http_get = type(o.http).get

    def faulty_get(self, *a, **kw):
        resp = http_get(self, *a, **kw)
        readinto = resp.readinto

        def counted(b):
            step("net")
            return readinto(b)
        resp.readinto = counted
        return resp
    monkeypatch.setattr(app_mod, "open", faulty_open, raising=False)
    monkeypatch.setattr(app_mod, "os", FaultyOs())
    monkeypatch.setattr(type(o.http), "get", faulty_get)

    def app_files(folder):
        return {n: (tmp_path / "apps" / folder / n).read_bytes() for n in os.listdir(tmp_path / "apps" / folder)}
    before = app_mod.app_status()
    assert before["active"] == "a" and not before["pending"] and app_files("a") == v1
    # count the steps of a clean run of the same update (then undo its switch)
    ptr = (tmp_path / "apps" / "current.json").read_bytes()
    assert o.update_app(reboot=False) == "b"
    n_fs, n_net = fs_ops[0], net_reads[0]
    assert n_fs > 10 and n_net > 2, (n_fs, n_net)
    failures = []

    def undo_switch():
        (tmp_path / "apps" / "current.json").write_bytes(ptr)
        shutil.rmtree(tmp_path / "apps" / "b")
        os.mkdir(tmp_path / "apps" / "b")
    undo_switch()
    for exc in (MemoryError(), OSError(28, "ENOSPC")):
        for kind, k in [("fs", k) for k in range(1, n_fs + 1)] + [("net", k) for k in range(1, n_net + 1)]:
            fs_ops[0] = net_reads[0] = 0
            faults.update(fs=k if kind == "fs" else 0, net=k if kind == "net" else 0, exc=exc)
            try:
                o.update_app(reboot=False)
                switched = True
            except (OTAError, MemoryError, OSError):
                switched = False
            faults.update(fs=0, net=0)
            st = app_mod.app_status()
            where = (kind, k, type(exc).__name__)
            if st["active"] == "b":
                # the pointer was written before the failure: the new app must be whole
                if app_files("b") != v2:
                    failures.append(where + ("switched to an incomplete app",))
                undo_switch()
            elif st != before:
                failures.append(where + ("pointer changed: %r" % (st,),))
            elif switched:
                failures.append(where + ("reported success without switching",))
            elif any(app_files("b")):
                failures.append(where + ("left staged files %r" % sorted(app_files("b")),))
            if app_files("a") != v1:
                failures.append(where + ("the running app changed",))
            assert o._lock.acquire(0), where  # the install lock is free again
            o._lock.release()
    assert not failures, "\n".join(map(repr, failures))
    assert o.update_app(reboot=False) == "b" and app_files("b") == v2   # and the next one works
    assert ota_mod.app_boot() == "apps/b"


def test_one_ota_letting_the_network_code_go_does_not_break_another_ones_check(gh, local, tmp_path):
    """The network modules are the process's: one OTA object's automatic check that found nothing
    unloads them (unload_network) while another object's check or install may be using them. They
    broke with KeyError('iotutils.ota.release') and AttributeError (the probe's two OTA objects, 3
    of 3 runs); now an unload waits until no OTA call of the process uses them."""
    gh.add_release("me/fw", "0.1.0", image("0.1.0"))
    timer = _ota(repo="me/fw", api=gh.api_url, state_path=local)
    other = _ota(repo="me/fw", api=gh.api_url, state_path=str(tmp_path / "other.json"))
    stop = time.time() + 3
    errors, checks = [], [0, 0]

    def auto():   # what _auto_check does when nothing is newer, back to back
        while time.time() < stop:
            try:
                timer.check()
            except Exception as e:
                errors.append(("timer", repr(e)))
            timer.unload_network()
            checks[0] += 1

    def admin():
        while time.time() < stop:
            try:
                c = other.check()
                assert c["available"] == "0.1.0", c
                other.owner_key()
            except Exception as e:
                errors.append(("other", repr(e)))
            checks[1] += 1
    ts = [threading.Thread(target=auto), threading.Thread(target=admin)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert not errors, errors[:5]
    assert checks[0] > 5 and checks[1] > 5, checks


def test_an_automatic_check_never_runs_beside_another_check(gh, local):
    """While a check runs (the admin page's), the automatic one does not start a second (each holds
    the network code's buffers: two at once failed for memory on a fragmented heap); it comes a
    minute later. Two checks called at once run one after the other."""
    gh.add_release("me/fw", "1.1.0", image("1.1.0"))
    o = _ota(repo="me/fw", api=gh.api_url, state_path=local)
    o._auto_cfg = {"on": True, "every_h": 24, "idle_min": 10}
    o._auto_since = o._auto_pending = None
    o.check()   # (the network code is loaded)
    n = len(gh.requests)
    with o._checking:
        o._auto_check()
        o.unload_network()
        assert o._source is not None   # the running check's network code stays
        assert o.check(wait=False) is None   # (the admin page answers 409 to this)
    assert len(gh.requests) == n and o._auto_pending is None
    assert o._auto_since == 24 * 3600000 - 60000   # due again in a minute
    o._auto_check()
    assert o._auto_pending == "1.1.0" and len(gh.requests) > n
    # two at once: never inside resolve() together
    inside, most = [0], [0]
    resolve = o.source.resolve

    def counting():
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        time.sleep(0.2)
        try:
            return resolve()
        finally:
            inside[0] -= 1
    o.source.resolve = counting
    ts = [threading.Thread(target=o.check) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(20)
    assert most[0] == 1


def test_no_download_on_a_clock_that_cannot_check_certificates(local, monkeypatch):
    """After a power-on an ESP32's clock is at its epoch: every certificate looks not yet valid. The
    client sets it by NTP first and refuses to connect when that fails (never "verify" on it)."""
    from iotutils import hal
    from iotutils.ota import OTAError
    synced = []
    monkeypatch.setattr(hal, "time_ok", lambda: False)
    monkeypatch.setattr(hal, "sync_time", lambda: synced.append(1) or False)
    o = _ota(repo="me/fw", api="https://127.0.0.1:9", state_path=local)
    with pytest.raises(OTAError, match="clock is not set"):
        o.check()
    assert synced  # it tried NTP first
    monkeypatch.setattr(hal, "sync_time", lambda: synced.append(2) or True)
    with pytest.raises(OTAError, match="network error"):  # the clock is fine now: on to the (closed) port
        o.check()


def test_a_server_that_pauses_mid_answer_loses_no_bytes(gh, mkdev):
    """An honest server that pauses once in the middle of an answer (the image, and every API
    answer), not at a 4 KB boundary. MicroPython's blocking readinto threw away what it had read
    when a read timed out part-way: the image came out short and the JSON broken."""
    gh.add_release("me/fw", "1.1.0", image("1.1.0", size=150000))
    gh.fault = "pause"
    gh.api_slow = "pause"
    dev = mkdev()
    dev.start()
    chk = json.loads(dev.cmd("check", r"CHECK (.*)").group(1))
    assert chk["available"] == "1.1.0" and chk["newer"] is True
    assert dev.update_expect_reboot()["version"] == "1.1.0"


@pytest.mark.parametrize("where", ["head", "body"])
def test_a_server_that_keeps_sending_a_byte_now_and_then_cannot_hold_a_check(gh, mkdev, where):
    """A hostile path to GitHub answers a byte every 0.3 s, under every read timeout: a head that
    never ends, or a release JSON that never does. The check gives up within the head's time (the
    read timeout) or the small answers' time (small_answer_s), and the device checks again later.
    Before, it never returned: the OTA lock stayed taken, and an admin page's check held its thread."""
    gh.add_release("me/fw", "1.1.0", image("1.1.0"))
    gh.api_slow = where
    gh.slow_s = 60
    dev = mkdev(timeout=3, small_answer_s=6)
    dev.start()
    t0 = time.time()
    err = dev.cmd("check", r"OTAERROR (.*)|CHECK", timeout=30).group(1)
    took = time.time() - t0
    assert err and "too slow" in err, err
    assert took < (10 if where == "head" else 15), took
    gh.api_slow = None
    assert json.loads(dev.cmd("check", r"CHECK (.*)").group(1))["available"] == "1.1.0"
