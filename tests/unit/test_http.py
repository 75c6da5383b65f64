# iotutils.http on CPython and MicroPython: the shared corpus (tests/corpus/http/cases.json) and the
# interface details the web server relies on. The C core is checked against the same corpus in
# tests/c/test_httpparse.py.
import json
from array import array

from mpunit import raises, is_micropython
from iotutils import http

if is_micropython():
    from mpunit import SkipTest
else:
    # pytest reports unittest.SkipTest as a skip (mpunit.SkipTest would count as a failure there)
    from unittest import SkipTest

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


def _impls():
    # the pure-Python parser, and the firmware's C core when http.py picked it up
    impls = [(http.py_parse_head, http.py_chunked_decode)]
    if http.parse_head is not http.py_parse_head:
        impls.append((http.parse_head, http.chunked_decode))
    return impls


def _run(raw, max_headers=MAX_HEADERS, impl=None):
    parse_head, chunked_decode = impl or _impls()[0]
    out = _out(max_headers)
    r = parse_head(raw, len(raw), out)
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
        n = chunked_decode(buf, r, len(buf), st)
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
    impls = _impls()
    for case in _cases():
        for impl in impls:
            got = _run(case["raw"], case.get("max_headers", MAX_HEADERS), impl)
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


def test_c_core_when_present():
    try:
        import _iotutils
        _iotutils.parse_head  # noqa: B018 - AttributeError when the module lacks the parser
    except (ImportError, AttributeError):
        raise SkipTest("no _iotutils C module (host runtime / stock MicroPython)")
    assert http.parse_head is _iotutils.parse_head and http.chunked_decode is _iotutils.chunked_decode
    for i, reason in enumerate(http.REASONS):
        assert _iotutils.http_reason(i) == reason
    assert _iotutils.http_reason(len(http.REASONS)) == ""
    for name in ("NEED_MORE", "BODY_NONE", "BODY_LENGTH", "BODY_CHUNKED", "FLAG_CLOSE", "FLAG_KEEP_ALIVE",
                 "FLAG_EXPECT_CONTINUE", "FLAG_UPGRADE", "OUT_FIXED", "CHUNK_STATE_LEN", "CS_DONE", "CS_ERROR"):
        assert getattr(_iotutils, name) == getattr(http, name), name
    raises(ValueError, _iotutils.parse_head, b"GET", 3, array("h", [0] * 40))
    raises(ValueError, _iotutils.parse_head, b"GET", 3, array("i", [0] * 8))
    raises(TypeError, _iotutils.chunked_decode, b"0\r\n\r\n", 0, 5, array("i", [0] * 4))


def test_offsets_and_fields():
    for ph, _cd in _impls():
        raw = b"POST /api/led/3?x=1 HTTP/1.1\r\nHost: dev\r\nContent-Length: 2\r\nConnection: close\r\n\r\nonNEXT"
        out = _out(4)
        r = ph(raw, len(raw), out)
        assert r == raw.index(b"\r\n\r\n") + 4
        assert raw[out[0]:out[0] + out[1]] == b"POST"
        assert raw[out[2]:out[2] + out[3]] == b"/api/led/3?x=1"
        assert list(out[4:9]) == [1, 3, http.BODY_LENGTH, 2, http.FLAG_CLOSE]
        names = [raw[out[i]:out[i] + out[i + 1]] for i in (9, 13, 17)]
        assert names == [b"Host", b"Content-Length", b"Connection"]
        assert raw[out[19]:out[19] + out[20]] == b"close"


def test_buffer_types_same_answer():
    for ph, _cd in _impls():
        raw = b"GET /x HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\n"
        want = _out()
        r = ph(raw + b"tail", len(raw), want)
        assert r == len(raw)
        for buf in (bytearray(raw), memoryview(bytearray(raw)), memoryview(raw), raw + b"tail"):
            out = _out()
            assert ph(buf, len(raw), out) == r
            assert list(out) == list(want)


def test_need_more_and_line_flag():
    for ph, _cd in _impls():
        raw = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
        out = _out()
        line_end = raw.index(b"\r\n") + 2
        for cut in range(len(raw)):
            assert ph(raw, cut, out) == http.NEED_MORE
            assert out[0] == (1 if cut >= line_end else 0)
        assert ph(raw, len(raw), out) == len(raw)


def test_error_sets_reason():
    for ph, _cd in _impls():
        out = _out()
        raw = b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        assert ph(raw, len(raw), out) == -400
        assert http.REASONS[out[0]] == "Transfer-Encoding with Content-Length"
        assert ph(b"GET / HTTP/3.0\r\n", 16, out) == -505


def test_bad_arguments():
    for ph, cd in _impls():
        raises(ValueError, ph, b"GET", 3, array("i", [0] * 8))
        raises(ValueError, ph, b"GET", 4, _out())
        raises(ValueError, ph, b"GET", -1, _out())
        st = array("i", [0] * http.CHUNK_STATE_LEN)
        raises(ValueError, cd, bytearray(b"0\r\n\r\n"), 3, 2, st)
        raises(ValueError, cd, bytearray(b"0\r\n\r\n"), 0, 6, st)
        raises(ValueError, cd, bytearray(b"0\r\n\r\n"), 0, 5, array("i", [0] * 3))
        raises(ValueError, cd, bytearray(b"0\r\n\r\n"), 0, 5, array("i", [42, 0, 0, 0]))


BODY = b"4\r\nWiki\r\n5;x=\"y\"\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nTrailer: z\r\n\r\nGET / HTTP/1.1\r\n"


def test_chunked_one_shot_and_next_offset():
    for _ph, cd in _impls():
        buf = bytearray(b"HEAD" + BODY)
        st = array("i", [0] * http.CHUNK_STATE_LEN)
        n = cd(buf, 4, len(buf), st)
        assert bytes(buf[4:4 + n]) == b"Wikipedia in\r\n\r\nchunks."
        assert st[0] == http.CS_DONE
        assert bytes(buf[st[1]:]) == b"GET / HTTP/1.1\r\n"
        assert cd(buf, st[1], len(buf), st) == 0


def test_chunked_byte_at_a_time_and_memoryview():
    for _ph, cd in _impls():
        want = b"Wikipedia in\r\n\r\nchunks."
        for wrap in (bytearray, lambda b: memoryview(bytearray(b))):
            buf = wrap(BODY)
            st = array("i", [0] * http.CHUNK_STATE_LEN)
            got = b""
            for i in range(len(BODY)):
                k = cd(buf, i, i + 1, st)
                got += bytes(buf[i:i + k])
                if st[0] == http.CS_DONE:
                    break
            assert got == want
            assert st[1] == BODY.index(b"GET")


def test_chunked_error_is_sticky():
    for _ph, cd in _impls():
        buf = bytearray(b"zz\r\n")
        st = array("i", [0] * http.CHUNK_STATE_LEN)
        assert cd(buf, 0, 4, st) == -400
        assert st[0] == http.CS_ERROR and http.REASONS[st[3]] == "bad chunk size"
        assert cd(bytearray(b"0\r\n\r\n"), 0, 5, st) == -400


def test_large_parse_frame_allocates_nothing_on_the_usual_path():
    # http._parse has too many locals for MicroPython to keep its frame on the C stack: the frame is
    # a heap block, and if the parse allocated while it lived, the next request's frame would have
    # to be looked for further up the heap (see server.py). So a valid head with the usual fields
    # must parse without a single allocation.
    if not is_micropython():
        raise SkipTest("allocation counting needs MicroPython's gc.mem_alloc")
    import gc
    out = array("i", [0] * (http.OUT_FIXED + 4 * MAX_HEADERS))
    heads = [
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
        b"POST /api/x?y=1 HTTP/1.1\r\nHost: dev\r\nUser-Agent: Mozilla/5.0 (X11)\r\nAccept: */*\r\n"
        b"Content-Type: application/json\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\n",
        b"GET /lamp HTTP/1.0\r\nconnection: Keep-Alive\r\nhost: d\r\n\r\n",
    ]
    for head in heads:
        assert http._parse(head, out, MAX_HEADERS) == len(head)
        gc.collect()
        gc.disable()
        try:
            before = gc.mem_alloc()
            for _ in range(20):
                http._parse(head, out, MAX_HEADERS)
            grown = gc.mem_alloc() - before
        finally:
            gc.enable()
        assert grown == 0, (head[:20], grown)
