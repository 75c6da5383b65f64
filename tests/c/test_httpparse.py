"""HTTP request parser: the C core (httpparse.c via ctypes) and the Python twin (iotutils.http).

One corpus-driven test runs over both implementations:
- tests/corpus/http/cases.json: our own vectors (smuggling, strictness, bodies) with expected verdicts;
- tests/corpus/http/httptools_vectors.json: the request vectors of the httptools 0.9.0 sdist.
Differential: every vector also goes through llhttp (httptools) and h11; we must agree with the
stricter of the two (reject if either rejects), apart from the deliberate differences in DIFFERENCES.
Also: C == Python on every vector, every prefix and random mutations; incremental feeding; chunked
byte-at-a-time == one shot; the core under ASan/UBSan on the whole corpus; a bounded libFuzzer run.
"""
import ctypes
import json
import os
import random
import shutil
import subprocess
from array import array

import pytest

from cbuild import FUZZ_DIR, HTTPPARSE_SOURCES, build_shared, run_sanitized_driver
from conftest import ROOT
from iotutils import http as pyhttp

CORPUS = os.path.join(ROOT, "tests", "corpus", "http")
MAX_HEADERS = 32


def _load(name):
    with open(os.path.join(CORPUS, name)) as f:
        items = json.load(f)
    for it in items:
        it["raw"] = it["raw"].encode("latin-1")
    return items


CASES = _load("cases.json")
VECTORS = _load("httptools_vectors.json")


# ---- the C core behind the same Python signature as iotutils.http ----

class CHttp:
    """iotutils.http's interface over httpparse.c (what _iotutils exports on the firmware)."""

    def __init__(self, lib):
        self.lib = lib
        lib.httpparse_head.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t]
        lib.httpparse_head.restype = ctypes.c_int
        lib.httpparse_chunked.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p]
        lib.httpparse_chunked.restype = ctypes.c_int
        lib.httpparse_reason.argtypes = [ctypes.c_int]
        lib.httpparse_reason.restype = ctypes.c_char_p
        self.REASONS = tuple(lib.httpparse_reason(i).decode() for i in range(lib.httpparse_reason_count()))
        for name in ("NEED_MORE", "BODY_NONE", "BODY_LENGTH", "BODY_CHUNKED", "FLAG_CLOSE", "FLAG_KEEP_ALIVE",
                     "FLAG_EXPECT_CONTINUE", "FLAG_UPGRADE", "OUT_FIXED", "CHUNK_STATE_LEN", "CS_DONE", "CS_ERROR"):
            setattr(self, name, getattr(pyhttp, name))

    @staticmethod
    def _ints(arr):
        assert arr.itemsize == 4
        return (ctypes.c_int32 * len(arr)).from_buffer(arr)

    def parse_head(self, buf, length, out):
        if len(out) < pyhttp.OUT_FIXED:
            raise ValueError("out too short")
        if length < 0 or length > len(buf):
            raise ValueError("length")
        data = bytes(buf[:length])
        r = self.lib.httpparse_head(data, length, ctypes.addressof(self._ints(out)), len(out))
        assert r != -1
        return r

    def chunked_decode(self, buf, start, end, state):
        if len(state) < pyhttp.CHUNK_STATE_LEN:
            raise ValueError("state too short")
        if start < 0 or end < start or end > len(buf):
            raise ValueError("range")
        cbuf = (ctypes.c_char * max(len(buf), 1)).from_buffer(buf) if len(buf) else None
        r = self.lib.httpparse_chunked(ctypes.addressof(cbuf) if cbuf is not None else None, start, end,
                                       ctypes.addressof(self._ints(state)))
        if r == -1:
            raise ValueError("state")
        return r


_C = []


def chttp():
    if not _C:
        _C.append(CHttp(build_shared("httpparse", HTTPPARSE_SOURCES)))
    return _C[0]


@pytest.fixture(params=["python", "c"])
def impl(request):
    return pyhttp if request.param == "python" else chttp()


# ---- running one request through an implementation: head, then the body ----

def run(h, raw, max_headers=MAX_HEADERS, as_type=bytes):
    """Parse raw with implementation h; a dict describing the verdict and every field."""
    out = array("i", [0] * (h.OUT_FIXED + 4 * max_headers))
    buf = as_type(raw)
    r = h.parse_head(buf, len(raw), out)
    if r < 0:
        return {"verdict": "reject", "status": -r, "reason": h.REASONS[out[0]]}
    if r == 0:
        return {"verdict": "incomplete", "line_done": out[0]}
    res = {"verdict": "accept", "consumed": r, "minor": out[4], "body_kind": out[6], "content_length": out[7],
           "flags": out[8],
           "method": raw[out[0]:out[0] + out[1]].decode("latin-1"),
           "target": raw[out[2]:out[2] + out[3]].decode("latin-1"),
           "headers": [[raw[out[i]:out[i] + out[i + 1]].decode("latin-1"),
                        raw[out[i + 2]:out[i + 2] + out[i + 3]].decode("latin-1")]
                       for i in range(h.OUT_FIXED, h.OUT_FIXED + 4 * out[5], 4)]}
    if out[6] == h.BODY_LENGTH:
        if len(raw) - r < out[7]:
            return {"verdict": "incomplete", "line_done": 1}
        res["body"] = raw[r:r + out[7]].decode("latin-1")
    elif out[6] == h.BODY_CHUNKED:
        body = bytearray(raw)
        state = array("i", [0] * h.CHUNK_STATE_LEN)
        n = h.chunked_decode(body, r, len(body), state)
        if n < 0:
            return {"verdict": "reject", "status": -n, "reason": h.REASONS[state[3]]}
        if state[0] != h.CS_DONE:
            return {"verdict": "incomplete", "line_done": 1}
        res["body"] = bytes(body[r:r + n]).decode("latin-1")
        res["next"] = state[1]
    else:
        res["body"] = ""
    return res


def case_id(c):
    return c["name"]


def max_headers_for(case):
    return case.get("max_headers", MAX_HEADERS)


# ---- our corpus: expected verdicts and fields, on both implementations ----

@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_corpus_case(impl, case):
    got = run(impl, case["raw"], max_headers_for(case))
    assert got["verdict"] == case["verdict"], got
    for key in ("status", "reason", "method", "target", "minor", "headers", "body", "flags", "body_kind",
                "content_length"):
        if key in case:
            assert got[key] == case[key], (key, got)


def test_pipelined_offsets(impl):
    raw = b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /b HTTP/1.1\r\n"
    got = run(impl, raw)
    assert got["body"] == "abc"
    assert raw[got["next"]:] == b"GET /b HTTP/1.1\r\n"


def test_reason_tables_identical():
    assert chttp().REASONS == pyhttp.REASONS
    assert pyhttp.REASONS[0] == ""
    assert len(set(pyhttp.REASONS)) == len(pyhttp.REASONS)


def test_bad_arguments(impl):
    out = array("i", [0] * (impl.OUT_FIXED - 1))
    with pytest.raises(ValueError):
        impl.parse_head(b"GET / HTTP/1.0\r\n\r\n", 18, out)
    out = array("i", [0] * impl.OUT_FIXED)
    with pytest.raises(ValueError):
        impl.parse_head(b"GET", 4, out)
    state = array("i", [0] * impl.CHUNK_STATE_LEN)
    with pytest.raises(ValueError):
        impl.chunked_decode(bytearray(b"0\r\n"), 2, 1, state)
    with pytest.raises(ValueError):
        impl.chunked_decode(bytearray(b"0\r\n"), 0, 4, state)
    with pytest.raises(ValueError):
        impl.chunked_decode(bytearray(b"0\r\n"), 0, 3, array("i", [99, 0, 0, 0]))


def test_zero_header_capacity(impl):
    out = array("i", [0] * impl.OUT_FIXED)
    assert impl.parse_head(b"GET / HTTP/1.0\r\n\r\n", 18, out) == 18
    assert impl.parse_head(b"GET / HTTP/1.0\r\nA: b\r\n\r\n", 24, out) == -431


def test_buffer_types(impl):
    raw = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\nnext"
    want = run(impl, raw)
    assert run(impl, raw, as_type=bytearray) == want
    if impl is pyhttp:
        assert run(impl, raw, as_type=memoryview) == want


# ---- C and Python agree on everything ----

def all_raw():
    return [c["raw"] for c in CASES] + [v["raw"] for v in VECTORS]


def test_c_equals_python_with_prefixes():
    c = chttp()
    for raw in all_raw():
        for cut in range(len(raw) + 1):
            for mh in (0, 2, MAX_HEADERS):
                assert run(c, raw[:cut], mh) == run(pyhttp, raw[:cut], mh), (raw[:cut], mh)


def _mutate(rng, raw):
    raw = bytearray(raw)
    alphabet = b"\r\n \t:;,0aF\x00\x7f\x80-xchunkedTransfer-EncodingContent-LengthHost"
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        pos = rng.randrange(len(raw) + 1)
        if op == 0 and raw:
            del raw[min(pos, len(raw) - 1)]
        elif op == 1:
            raw[pos:pos] = bytes([rng.choice(alphabet)])
        elif op == 2 and raw:
            raw[min(pos, len(raw) - 1)] = rng.randrange(256)
        else:
            tokens = (b"\r\n", b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n", b"Host: x\r\n",
                      b"\r\n\r\n", b"0\r\n\r\n", b"ffffffff\r\n", b" chunked")
            raw[pos:pos] = rng.choice(tokens)
    return bytes(raw)


def test_c_equals_python_random_mutations():
    rng = random.Random(20261125)
    c = chttp()
    seeds = all_raw()
    for _ in range(10000):
        raw = _mutate(rng, rng.choice(seeds))
        mh = rng.choice((1, 4, MAX_HEADERS))
        assert run(c, raw, mh) == run(pyhttp, raw, mh), raw


# ---- incremental: prefixes need more, chunked decoding splits anywhere ----

def accepted_raw():
    return [raw for raw in all_raw() if run(pyhttp, raw)["verdict"] == "accept"]


def test_every_prefix_needs_more(impl):
    n = 0
    for raw in accepted_raw():
        out = array("i", [0] * (impl.OUT_FIXED + 4 * MAX_HEADERS))
        full = impl.parse_head(raw, len(raw), out)
        assert full > 0
        want = list(out)
        line_end = raw.index(b"\r\n", len(raw) - len(raw.lstrip(b"\r\n")))
        for cut in range(full):
            assert impl.parse_head(raw, cut, out) == impl.NEED_MORE, (raw, cut)
            assert out[0] == (1 if cut >= line_end + 2 else 0), (raw, cut)
        assert impl.parse_head(raw, full, out) == full
        assert list(out) == want
        n += 1
    assert n > 30


def test_chunked_byte_at_a_time_equals_one_shot(impl):
    n = 0
    for raw in accepted_raw():
        out = array("i", [0] * (impl.OUT_FIXED + 4 * MAX_HEADERS))
        head = impl.parse_head(raw, len(raw), out)
        if out[6] != impl.BODY_CHUNKED:
            continue
        one = bytearray(raw)
        st1 = array("i", [0] * impl.CHUNK_STATE_LEN)
        k = impl.chunked_decode(one, head, len(one), st1)
        bytewise = bytearray(raw)
        st2 = array("i", [0] * impl.CHUNK_STATE_LEN)
        data = bytearray()
        for i in range(head, len(raw)):
            got = impl.chunked_decode(bytewise, i, i + 1, st2)
            data += bytewise[i:i + got]
            if st2[0] == impl.CS_DONE:
                break
        assert bytes(data) == bytes(one[head:head + k])
        assert list(st1) == list(st2)
        # and at every split point in two calls
        for cut in range(head, len(raw)):
            two = bytearray(raw)
            st3 = array("i", [0] * impl.CHUNK_STATE_LEN)
            a = impl.chunked_decode(two, head, cut, st3)
            part = bytes(two[head:head + a])
            if st3[0] != impl.CS_DONE:
                b = impl.chunked_decode(two, cut, len(two), st3)
                part += bytes(two[cut:cut + b])
            assert part == bytes(one[head:head + k]) and list(st3) == list(st1), cut
        n += 1
    assert n >= 5


# ---- differential against llhttp (httptools) and h11 ----

def ref_llhttp(raw):
    import httptools

    class Cb:
        def __init__(self):
            self.url = b""
            self.headers = []
            self.body = b""
            self.done = False
            self.in_head = True

        def on_headers_complete(self):
            self.in_head = False

        def on_url(self, u):
            if not self.done:
                self.url += u

        def on_header(self, n, v):
            if self.in_head:
                self.headers.append([n.decode("latin-1"), v.decode("latin-1")])

        def on_body(self, b):
            if not self.done:
                self.body += b

        def on_message_complete(self):
            self.done = True

    cb = Cb()
    p = httptools.HttpRequestParser(cb)
    upgraded = False
    try:
        p.feed_data(raw)
    except httptools.HttpParserUpgrade:
        # llhttp stops at an upgrade/CONNECT head and leaves the rest (even a body) to the caller
        cb.done = upgraded = True
    except httptools.HttpParserError:
        if not cb.done:
            return {"verdict": "reject"}
    if not cb.done:
        return {"verdict": "incomplete"}
    return {"verdict": "accept", "method": p.get_method().decode("latin-1"), "target": cb.url.decode("latin-1"),
            "minor": int(p.get_http_version().split(".")[1]), "headers": cb.headers,
            "body": cb.body.decode("latin-1"), "upgraded": upgraded}


def ref_h11(raw):
    import h11
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    res = {"verdict": "incomplete"}
    body = b""
    try:
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA or ev is h11.PAUSED:
                return {"verdict": "incomplete"}
            if isinstance(ev, h11.Request):
                res = {"method": ev.method.decode("latin-1"), "target": ev.target.decode("latin-1"),
                       "minor": int(ev.http_version.split(b".")[1]),
                       "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in ev.headers.raw_items()]}
            elif isinstance(ev, h11.Data):
                body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                res["verdict"] = "accept"
                res["body"] = body.decode("latin-1")
                return res
    except h11.RemoteProtocolError:
        return {"verdict": "reject"}


# Deliberate differences from "the stricter of llhttp and h11": vector name -> (our verdict, why).
_LIMIT = "our 31-bit / 4 KB / header-array limits; llhttp and h11 would wait for more data or accept"
DIFFERENCES = {
    # we are stricter
    "te in http/1.0": ("reject", "brief + RFC 9112 6.1: a 1.0 server cannot trust Transfer-Encoding (both accept)"),
    "http/2.0": ("reject", "505: only 1.0/1.1 are served (llhttp and h11 parse it as HTTP/2.0 framing-less)"),
    "content-length 2**31": ("reject", _LIMIT),
    "chunk size 2**31": ("reject", _LIMIT),
    "chunk extension too long": ("reject", _LIMIT),
    "trailers too large": ("reject", _LIMIT),
    "chunk extension empty name": ("reject", "RFC 9112 7.1.1: chunk-ext-name is a token (both skip it unchecked)"),
    "chunk extension empty value": ("reject", "RFC 9112 7.1.1: chunk-ext-val is token / quoted-string"),
    # we are more lenient
    "leading empty lines skipped": ("accept", "RFC 9112 2.2: ignore CRLF before the request line (llhttp does; h11 rejects)"),
    "any token method": ("accept", "methods are any token; the server answers 405/501 (h11 too; llhttp has a list)"),
}
DIFFERENCES.update(("bad_methods %s +host" % m, DIFFERENCES["any token method"]) for m in
                   ("ASDF", "C******", "COLA", "GEM", "GETA", "M****", "MKCOLA", "PROPPATCHA", "PUN", "PX", "SA"))

FIELDS = ("method", "target", "minor", "headers", "body")


def _stricter(a, b):
    for verdict in ("reject", "incomplete"):
        if verdict in (a["verdict"], b["verdict"]):
            return verdict
    return "accept"


def _with_host(vectors):
    """Upstream vectors often lack Host, so every parser stops at "missing Host" (ours, h11): a copy
    with a Host field lets the differential reach the rest of the request."""
    out = []
    for v in vectors:
        raw = v["raw"]
        i = raw.find(b"\r\n")
        if i < 0 or b"\nhost:" in raw.lower() or not raw.startswith(b"%s " % raw.split(b" ")[0]):
            continue
        out.append(dict(v, name=v["name"] + " +host", raw=raw[:i + 2] + b"Host: example.com\r\n" + raw[i + 2:]))
    return out


ALL_VECTORS = CASES + VECTORS + _with_host(VECTORS)


@pytest.mark.parametrize("vec", ALL_VECTORS, ids=lambda v: "%s: %s" % (v.get("source", "ours"), v["name"]))
def test_differential(vec):
    raw = vec["raw"]
    ll = ref_llhttp(raw)
    h = ref_h11(raw)
    ours = run(pyhttp, raw, 64)
    assert ours == run(chttp(), raw, 64)
    want = _stricter(ll, h)
    if vec["name"] in DIFFERENCES:
        verdict, why = DIFFERENCES[vec["name"]]
        assert want != verdict, "no longer a difference: " + why
        assert ours["verdict"] == verdict
        return
    assert ours["verdict"] == want, (ours, ll, h)
    if want == "accept":
        for key in FIELDS:
            if key == "headers":
                # h11 lower-cases Transfer-Encoding values; llhttp keeps trailing OWS in values
                low = [[n, v.lower() if n.lower() == "transfer-encoding" else v] for n, v in ours[key]]
                assert low == h[key], (key, ours, h)
                assert ours[key] == [[n, v.rstrip(" \t")] for n, v in ll[key]], (key, ours, ll)
            else:
                assert ours[key] == h[key], (key, ours, h)
                if not (key == "body" and ll["upgraded"]):
                    assert ours[key] == ll[key], (key, ours, ll)


# ---- sanitizers and fuzzing ----

def test_corpus_under_asan_ubsan(tmp_path):
    files = []
    for i, raw in enumerate(all_raw()):
        p = tmp_path / ("v%03d" % i)
        p.write_bytes(raw)
        files.append(str(p))
    seeds = os.path.join(FUZZ_DIR, "corpus")
    files += [os.path.join(seeds, f) for f in sorted(os.listdir(seeds))]
    run_sanitized_driver(tmp_path, "fuzz_httpparse.c", HTTPPARSE_SOURCES, "HP_STANDALONE_MAIN", files)


def _libfuzzer_available():
    clang = shutil.which("clang")
    if not clang:
        return "clang not installed (apt-get install clang)"
    probe = subprocess.run([clang, "-fsanitize=fuzzer", "-x", "c", "-", "-o", os.devnull],
                           input="int LLVMFuzzerTestOneInput(const char *d, long n) { return 0; }",
                           capture_output=True, text=True)
    if probe.returncode:
        return "clang without libFuzzer: " + probe.stderr[-200:]
    return None


def test_fuzz_bounded(tmp_path):
    why = _libfuzzer_available()
    if why:
        pytest.skip(why)
    env = dict(os.environ, FUZZ_WORK=str(tmp_path))
    proc = subprocess.run(["sh", os.path.join(FUZZ_DIR, "run_fuzz.sh"), "20"], capture_output=True, text=True,
                          timeout=180, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Done" in proc.stderr or "DONE" in proc.stderr, proc.stderr[-2000:]
