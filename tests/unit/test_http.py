# iotutils.http on CPython and MicroPython: the shared corpus (tests/corpus/http/cases.json) and the
# interface details the web server relies on. The C core is checked against the same corpus in
# tests/test_httpparse.py.
import json
from array import array

from mpunit import raises
from iotutils import http

MAX_HEADERS = 32


def _corpus_path():
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    return here + "/../corpus/http/cases.json"


def _latin1(s):
    # MicroPython has no latin-1 codec; the corpus keeps raw bytes as chars 0..255
    b = s.encode()
    if len(b) == len(s):
        return b
    b = bytearray(len(s))
    i = 0
    for ch in s:
        b[i] = ord(ch)
        i += 1
    return bytes(b)


def _cases():
    # one case at a time: the MicroPython heap is an ESP32's
    with open(_corpus_path()) as f:
        cases = json.load(f)
    while cases:
        c = cases.pop(0)
        c["raw"] = _latin1(c["raw"])
        yield c


def _text(b):
    return "".join([chr(x) for x in b])


def _out(n=MAX_HEADERS):
    return array("i", [0] * (http.OUT_FIXED + 4 * n))


def _run(raw, max_headers=MAX_HEADERS):
    out = _out(max_headers)
    r = http.parse_head(raw, len(raw), out)
    if r < 0:
        return {"verdict": "reject", "status": -r, "reason": http.REASONS[out[0]]}
    if r == 0:
        return {"verdict": "incomplete"}
    res = {"verdict": "accept", "minor": out[4], "body_kind": out[6], "content_length": out[7], "flags": out[8],
           "method": _text(raw[out[0]:out[0] + out[1]]), "target": _text(raw[out[2]:out[2] + out[3]]),
           "headers": [[_text(raw[out[i]:out[i] + out[i + 1]]), _text(raw[out[i + 2]:out[i + 2] + out[i + 3]])]
                       for i in range(http.OUT_FIXED, http.OUT_FIXED + 4 * out[5], 4)]}
    if out[6] == http.BODY_LENGTH:
        if len(raw) - r < out[7]:
            return {"verdict": "incomplete"}
        res["body"] = _text(raw[r:r + out[7]])
    elif out[6] == http.BODY_CHUNKED:
        buf = bytearray(raw)
        st = array("i", [0] * http.CHUNK_STATE_LEN)
        n = http.chunked_decode(buf, r, len(buf), st)
        if n < 0:
            return {"verdict": "reject", "status": -n, "reason": http.REASONS[st[3]]}
        if st[0] != http.CS_DONE:
            return {"verdict": "incomplete"}
        res["body"] = _text(buf[r:r + n])
    else:
        res["body"] = ""
    return res


def test_corpus_cases():
    n = 0
    for case in _cases():
        got = _run(case["raw"], case.get("max_headers", MAX_HEADERS))
        assert got["verdict"] == case["verdict"], (case["name"], got)
        for key in ("status", "reason", "method", "target", "minor", "headers", "body", "flags", "body_kind",
                    "content_length"):
            if key in case:
                assert got[key] == case[key], (case["name"], key, got)
        n += 1
    assert n > 90


def test_constants_and_reasons():
    assert (http.NEED_MORE, http.BODY_NONE, http.BODY_LENGTH, http.BODY_CHUNKED) == (0, 0, 1, 2)
    assert (http.FLAG_CLOSE, http.FLAG_KEEP_ALIVE, http.FLAG_EXPECT_CONTINUE, http.FLAG_UPGRADE) == (1, 2, 4, 8)
    assert http.OUT_FIXED == 9 and http.CHUNK_STATE_LEN == 4 and http.CS_DONE == -1
    assert http.REASONS[0] == ""
    assert len(set(http.REASONS)) == len(http.REASONS)


def test_offsets_and_fields():
    raw = b"POST /api/led/3?x=1 HTTP/1.1\r\nHost: dev\r\nContent-Length: 2\r\nConnection: close\r\n\r\nonNEXT"
    out = _out(4)
    r = http.parse_head(raw, len(raw), out)
    assert r == raw.index(b"\r\n\r\n") + 4
    assert raw[out[0]:out[0] + out[1]] == b"POST"
    assert raw[out[2]:out[2] + out[3]] == b"/api/led/3?x=1"
    assert list(out[4:9]) == [1, 3, http.BODY_LENGTH, 2, http.FLAG_CLOSE]
    names = [raw[out[i]:out[i] + out[i + 1]] for i in (9, 13, 17)]
    assert names == [b"Host", b"Content-Length", b"Connection"]
    assert raw[out[19]:out[19] + out[20]] == b"close"


def test_buffer_types_same_answer():
    raw = b"GET /x HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\n"
    want = _out()
    r = http.parse_head(raw + b"tail", len(raw), want)
    assert r == len(raw)
    for buf in (bytearray(raw), memoryview(bytearray(raw)), memoryview(raw), raw + b"tail"):
        out = _out()
        assert http.parse_head(buf, len(raw), out) == r
        assert list(out) == list(want)


def test_need_more_and_line_flag():
    raw = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
    out = _out()
    line_end = raw.index(b"\r\n") + 2
    for cut in range(len(raw)):
        assert http.parse_head(raw, cut, out) == http.NEED_MORE
        assert out[0] == (1 if cut >= line_end else 0)
    assert http.parse_head(raw, len(raw), out) == len(raw)


def test_error_sets_reason():
    out = _out()
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert http.parse_head(raw, len(raw), out) == -400
    assert http.REASONS[out[0]] == "Transfer-Encoding with Content-Length"
    assert http.parse_head(b"GET / HTTP/3.0\r\n", 16, out) == -505


def test_bad_arguments():
    raises(ValueError, http.parse_head, b"GET", 3, array("i", [0] * 8))
    raises(ValueError, http.parse_head, b"GET", 4, _out())
    raises(ValueError, http.parse_head, b"GET", -1, _out())
    st = array("i", [0] * http.CHUNK_STATE_LEN)
    raises(ValueError, http.chunked_decode, bytearray(b"0\r\n\r\n"), 3, 2, st)
    raises(ValueError, http.chunked_decode, bytearray(b"0\r\n\r\n"), 0, 6, st)
    raises(ValueError, http.chunked_decode, bytearray(b"0\r\n\r\n"), 0, 5, array("i", [0] * 3))
    raises(ValueError, http.chunked_decode, bytearray(b"0\r\n\r\n"), 0, 5, array("i", [42, 0, 0, 0]))


BODY = b"4\r\nWiki\r\n5;x=\"y\"\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nTrailer: z\r\n\r\nGET / HTTP/1.1\r\n"


def test_chunked_one_shot_and_next_offset():
    buf = bytearray(b"HEAD" + BODY)
    st = array("i", [0] * http.CHUNK_STATE_LEN)
    n = http.chunked_decode(buf, 4, len(buf), st)
    assert bytes(buf[4:4 + n]) == b"Wikipedia in\r\n\r\nchunks."
    assert st[0] == http.CS_DONE
    assert bytes(buf[st[1]:]) == b"GET / HTTP/1.1\r\n"
    assert http.chunked_decode(buf, st[1], len(buf), st) == 0


def test_chunked_byte_at_a_time_and_memoryview():
    want = b"Wikipedia in\r\n\r\nchunks."
    for wrap in (bytearray, lambda b: memoryview(bytearray(b))):
        buf = wrap(BODY)
        st = array("i", [0] * http.CHUNK_STATE_LEN)
        got = b""
        for i in range(len(BODY)):
            k = http.chunked_decode(buf, i, i + 1, st)
            got += bytes(buf[i:i + k])
            if st[0] == http.CS_DONE:
                break
        assert got == want
        assert st[1] == BODY.index(b"GET")


def test_chunked_error_is_sticky():
    buf = bytearray(b"zz\r\n")
    st = array("i", [0] * http.CHUNK_STATE_LEN)
    assert http.chunked_decode(buf, 0, 4, st) == -400
    assert st[0] == http.CS_ERROR and http.REASONS[st[3]] == "bad chunk size"
    assert http.chunked_decode(bytearray(b"0\r\n\r\n"), 0, 5, st) == -400
