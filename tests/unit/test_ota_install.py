# The OTA slot writer (iotutils.ota.install) on a heap too fragmented for its 4 KB buffer, on
# CPython and MicroPython: the buffer halves, and any buffer size still writes the exact image.
# Also the OTA's rules that need no server: version order, redirects, the release scan's limits.
import hashlib
import io

from mpunit import collecting_thread, raises, silent_listener
from test_appimage import build

from iotutils.hal.flash import RamFlash
from iotutils.ota.install import Writer, buffer


def test_buffer_halves_until_the_heap_has_one():
    asked = []

    def fragmented(n):
        asked.append(n)
        if n > 1024:
            raise MemoryError
        return bytearray(n)
    assert len(buffer(4096, fragmented)) == 1024
    assert asked == [4096, 2048, 1024]

    def full(n):
        raise MemoryError
    raises(MemoryError, buffer, 4096, full)  # below 512 bytes: the install fails, cleanly


def test_any_buffer_size_writes_the_exact_image_and_erases_each_sector_once():
    img = build("3.0.0", bulk=9000)  # three sectors
    # one region for the three sizes (a fresh 32 KB one each time once found no room on the
    # firmware's small unit heap, under load)
    region = RamFlash(4 * 4096)
    region.strict = True            # a write that sets a bit without an erase raises
    erase = region.erase
    for size in (512, 1024, 4096):
        erase(0, region.size)
        region.write(0, bytes(len(img) + 100))  # old data everywhere the image goes
        erased = []

        def counting(off, n, erase=erase, erased=erased):
            erased.append((off, n))
            erase(off, n)
        region.erase = counting
        sha = hashlib.sha256()
        info = Writer(0, "micropython", 4096, 60)._write(io.BytesIO(img), len(img), region, bytearray(size),
                                                         None, sha)
        assert info["version"] == "3.0.0" and info["size"] == len(img), size
        assert region.read(0, len(img)) == img, size
        assert sha.digest() == hashlib.sha256(img).digest()
        starts = [off for off, n in erased]
        assert all(off % 4096 == 0 and n % 4096 == 0 for off, n in erased), erased
        assert sorted(set(starts)) == starts, erased          # no sector erased twice
        assert sum(n for off, n in erased) == (len(img) + 4095) // 4096 * 4096, (size, erased)


def test_ota_error_is_one_class_wherever_it_is_imported_from():
    # it lives in ota.state (loaded with every OTA), the network code re-exports it
    from iotutils.ota import OTAError
    from iotutils.ota.client import OTAError as from_client
    from iotutils.ota.install import OTAError as from_install
    from iotutils.ota.state import OTAError as from_state

    assert OTAError is from_client is from_install is from_state
    from iotutils.ota import Http, Source   # the network classes, through the package's lazy names

    assert Http.timeout == 15 and Source.__name__ == "Source"


def test_versions_order_releases_and_the_known_pre_releases():
    # what update() calls older (refused unless downgrade=True): a replayed old release must be
    # older, whatever its spelling; builds whose pre-release is not a known label stay unordered
    from iotutils.ota.version import older_version as older
    for a, b in [("1.2", "1.10"), ("0.9.9", "1.0.0"), ("v1.0.0", "1.0.1"), ("1.0.0-rc1", "1.0.0"),
                 ("0.2.0-rc1", "0.2.0-rc2"), ("1.0.0-rc.9", "1.0.0-rc.10"), ("1.0.0a1", "1.0.0b1"),
                 ("1.0.0b2", "1.0.0rc1"), ("0.0.1b1", "1.0.0"), ("1.0.0-beta.2", "1.0.0-rc.1"),
                 ("2.0.0-rc1+build.5", "2.0.0"),
                 # post-releases come after the release (a replayed 1.0.0 installed over 1.0.0.post1)
                 ("1.0.0", "1.0.0.post1"), ("1.0.0.post1", "1.0.0.post2"), ("1.0.0rc1", "1.0.0.post1"),
                 ("1.0.0.post3", "1.0.1"), ("1.0.0-dev-3f2a91c", "1.0.0.post1")]:
        assert older(a, b), (a, b)
        assert not older(b, a), (b, a)
    for a, b in [("1.0.0", "1.0.0"), ("1.0.0", "v1.0.0"), ("1.0.0-dev-3f2a91c", "1.0.0-dev-08e1b2d"),
                 ("main", "1.0.0"), ("1.0.0", "nightly"), ("1.0.0-rc1", "1.0.0-rc1")]:
        assert not older(a, b) and not older(b, a), (a, b)


def test_the_install_path_loads_when_asked_even_after_an_unload():
    # OTA.check and OTA.update import the version rules and the installer when they need them (they
    # are network code: unloaded after an automatic check), through _compat.load. On MicroPython
    # `from iotutils.ota import install` would ask the package's own __getattr__, which knows no such
    # name: the update failed with AttributeError on the host firmware, where nothing is loaded
    # before it is asked for
    import sys

    import iotutils.ota as ota_pkg
    from iotutils import _compat

    kept = {n: sys.modules.get(n) for n in ("iotutils.ota.install", "iotutils.ota.version")}
    try:
        _compat.unload(*kept)
        assert _compat.load("iotutils.ota.version").older_version("1.0.0", "1.0.1")
        assert _compat.load("iotutils.ota.install").Writer.__name__ == "Writer"
        assert "iotutils.ota.install" in sys.modules and "iotutils.ota.version" in sys.modules
    finally:
        for name, mod in kept.items():   # the other tests keep the module objects they imported
            if mod is not None:
                sys.modules[name] = mod
                setattr(ota_pkg, name.rpartition(".")[2], mod)


def test_redirects_are_followed_by_the_rules_or_refused_clearly():
    # a hostile path's odd Locations: another host written scheme-relative (and the token stays
    # behind), other schemes, bad ports, a Location that would smuggle words into the request line
    from iotutils.ota.client import join_url, split_url
    from iotutils.ota.state import OTAError
    base = "https://api.github.com/repos/me/fw/releases/latest"
    assert join_url(base, "//objects.example/a/1") == "https://objects.example/a/1"
    assert split_url(join_url(base, "//objects.example/a/1"))[1] == "objects.example"
    assert join_url(base, "/repos/x") == "https://api.github.com:443/repos/x"
    assert join_url(base, "other") == "https://api.github.com:443/repos/me/fw/releases/other"
    def follow(base, loc):
        return split_url(join_url(base, loc))
    for loc, why in [("ftp://h/x", "unsupported"), ("http://127.0.0.1:abc/x", "bad host or port"),
                     ("http://127.0.0.1:70000/x", "bad host or port"), ("http://[::1]/x", "bad host or port"),
                     ("/a b HTTP/1.0", "space"), ("/a\r\nX-Injected: 1", "control"), ("http:///x", "no host")]:
        e = raises(OTAError, follow, base, loc)
        assert why in str(e), (loc, e)


def test_a_release_json_nested_without_end_is_refused_before_it_fills_the_heap():
    from iotutils.ota.release import ReleaseScan
    from iotutils.ota.state import OTAError
    scan = ReleaseScan(("ota.json", "firmware.bin"))
    scan.feed(b'{"tag_name": "v1", "body": ' + b"[" * 20)
    e = raises(OTAError, scan.feed, b"[" * 100000)
    assert "nested deeper" in str(e), e


def test_a_tls_server_that_never_answers_the_handshake_is_given_up_in_time():
    """A server that takes the connection and never answers the TLS handshake, while another thread
    collects garbage (as a device's threads do): the request is given up within Http.timeout.
    Before, on MicroPython the handshake blocked on the socket, whose timeout restarts at every
    signal a collection sends: it waited for as long as the server did."""
    from iotutils import hal
    from iotutils._compat import ticks_diff, ticks_ms
    from iotutils.ota import Http, OTAError
    assert hal.time_ok()   # (else the client stops before connecting: nothing would be tested)
    silent, port = silent_listener()   # the kernel completes the TCP handshake; nobody ever answers
    stop = collecting_thread()
    try:
        h = Http()
        h.timeout = 1
        t0 = ticks_ms()
        e = raises(OTAError, h.get, "https://127.0.0.1:%d/repos/me/fw/releases" % port)
        took = ticks_diff(ticks_ms(), t0)
        assert took < 5000, (took, e)
    finally:
        stop()
        silent.close()


class _Running:
    """What version.older() asks of an OTA: the running image's descriptor and the channel."""

    def __init__(self, version, kind, secure_version=0):
        self.kind = kind
        self._desc = {"version": version, "secure_version": secure_version}

    def _running_desc(self):
        return self._desc


def test_a_release_without_a_numeric_version_is_no_update_for_a_numbered_device():
    # a hostile path serves an owner-signed branch build ("dev-3f2a91c") as the latest release: it
    # cannot be shown newer than the running 3.0.0, so on the release channel it counts as a
    # downgrade (refused unless downgrade=True). A branch or commit channel follows its ref: there
    # any other build is the next one
    from iotutils.ota.version import older
    for v in ("dev-3f2a91c", "nightly", "main"):
        assert older(_Running("3.0.0", "release"), v, 0), v
        assert not older(_Running("3.0.0", "branch"), v, 0), v
        assert not older(_Running("3.0.0", "commit"), v, 0), v
    assert older(_Running("3.0.0", "release"), "3.0.0-dev-3f2a91c", 0)   # an older build of 3.0.0
    assert not older(_Running("3.0.0", "release"), "3.1.0", 0)
    assert not older(_Running("dev-3f2a91c", "release"), "3.1.0", 0)    # a branch build moves to releases
    assert not older(_Running("3.0.0", "release"), "dev-3f2a91c", 1)    # a newer secure_version decides
    assert older(_Running("3.0.0", "release", 2), "4.0.0", 1)


def test_an_ota_json_nested_without_end_is_an_ota_error_not_a_full_heap():
    # ota.json is read whole (64 KB at most) and parsed by json.loads, which recurses per level on
    # MicroPython: 20,000 "[" took the heap (MemoryError, a crash of an app that catches OTAError)
    from iotutils.ota.release import Source
    from iotutils.ota.state import OTAError

    class Resp:
        def __init__(self, body):
            self.body = body

        def read_all(self, limit):
            return self.body

        def close(self):
            pass

    class Http:
        def __init__(self, body):
            self.body = body

        def get(self, url, accept=None, api=False):
            return Resp(self.body)

    for body in (b"[" * 20000, b'{"a":' * 5000, b'{"v": "' + b"[" * 40 + b'", "a": ' + b"[" * 33 + b"]" * 33 + b"}"):
        src = Source(Http(body), "me/fw", "release", None, "http://127.0.0.1:9", "ota.json", "firmware.bin",
                     None, 0)
        e = raises(OTAError, src.get_json, "http://127.0.0.1:9/ota.json")
        assert "nested deeper than 32" in str(e), e
    ok = Source(Http(b'{"v": "' + b"[" * 40 + b'", "a": ' + b"[" * 31 + b"]" * 31 + b"}"), "me/fw", "release", None,
                "http://127.0.0.1:9", "ota.json", "firmware.bin", None, 0)
    # 32 levels in all pass, and brackets in strings do not count
    assert ok.get_json("http://127.0.0.1:9/ota.json")["v"] == "[" * 40


def test_a_content_length_that_is_not_a_number_is_refused():
    # "-1" was taken as "no length" and the body read to the end; the device's own server answers
    # the same header with 400. (The image was still checked in full: this is about honest errors)
    from iotutils._compat import _thread
    from iotutils.ota import Http, OTAError

    for cl in (b"-1", b"12, 13", b"0x10", b""):
        srv, port = silent_listener()

        def answer(srv=srv, cl=cl):
            c, _ = srv.accept()
            try:
                c.recv(1024)
                c.send(b"HTTP/1.1 200 OK\r\nContent-Length: " + cl + b"\r\nConnection: close\r\n\r\nabc")
            finally:
                c.close()
        _thread.start_new_thread(answer, ())
        try:
            h = Http(allow_http=True)
            h.timeout = 5
            e = raises(OTAError, h.get, "http://127.0.0.1:%d/ota.json" % port)
            assert "bad Content-Length" in str(e), (cl, e)
        finally:
            srv.close()


def test_an_upload_s_sha256_and_sig_are_checked_by_name_before_anything_is_read():
    # the admin page passes ?sha256= and ?sig= through: a bad one answered "image refused: non-hex
    # digit", naming no field
    from iotutils.ota import OTA
    ota = OTA(repo="me/fw")
    for kw, field in (({"sha256": "q" * 64}, "sha256"), ({"sha256": "ab"}, "sha256"),
                      ({"sig": "z" * 128}, "sig"), ({"sig": "ab" * 63}, "sig")):
        body = io.BytesIO(b"never read")
        e = raises(ValueError, ota.install_stream, body, 10, **kw)
        assert str(e).startswith(field + ":"), (kw, e)
        assert body.tell() == 0, kw
