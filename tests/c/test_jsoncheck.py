"""The strict JSON checker: the C core (c_modules/iotutils/jsoncheck.c, loaded with ctypes) and its
Python twin (modules/iotutils/web/json_body.JSONCheck), against CPython's json module as the judge.

MicroPython's json.loads takes {"a": 1] for {"a": 1}, [1 2] for [1, 2] and trailing commas, so a
request body is checked first. Both checkers must say exactly what CPython's strict parser says
(valid or not) for hand-written cases, for random JSON and for random one-byte mutations of it, fed
whole and in random pieces; and the error must come at the same byte from both.

The libFuzzer harness (tests/c/fuzz/fuzz_jsoncheck.c: `make fuzz`) holds the C core to a second,
independent reading of the grammar under ASan/UBSan; here its driver runs the cases below (every
prefix, several limits) and a bounded fuzzing run, when clang has libFuzzer.
"""
import ctypes
import json
import os
import random
import shutil
import subprocess

import pytest

from cbuild import FUZZ_DIR, JSONCHECK_SOURCES, build_shared, run_sanitized_driver

from iotutils.web.json_body import JSONCheck

LIMIT = 32

CASES = [
    # (text, valid)
    ('{"a": 1}', True), ("[]", True), ("{}", True), ('  "s"  ', True), ("0", True), ("-0.5E+10", True),
    ("[1, 2.5e-3, -0, true, false, null]", True), ('"\\u00e9\\n\\t\\"\\\\\\/"', True),
    # UTF-16 surrogate escapes: only a high half followed at once by a low one is a character
    ('"\\ud83d\\udca1"', True), ('{"\\uD83D\\uDCA1 x": "a\\udbff\\udfffb"}', True), ('"\\ud800"', False),
    ('"\\udc00"', False), ('"\\udca1\\ud83d"', False), ('"\\ud83da"', False), ('"\\ud83d\\n"', False),
    ('"\\ud83d\\ud83d"', False), ('"\\ud83d\\u0041"', False), ('"\\ud83d', False), ('"\\ud83d\\', False),
    ('"h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9f\x98\x80"', True), ("[[[[]]]]", True), ('{"a":{"b":[{"c":null}]}}', True),
    ('{"a": 1]', False), ("[1, 2}", False), ("[1,2,]", False), ('{"a" 1}', False), ("[01]", False),
    ('["\\x41"]', False), ('{"a":1,}', False), ("[1 2]", False), ("{,}", False), ("[,1]", False),
    ("tru", False), ("truex", False), ('{"a":1}}', False), ("[1]]", False), ('{"a":1} x', False), ("", False),
    ("   ", False), ("-", False), ("1.", False), ("1e", False), ("1e+", False), (".5", False), ("+1", False),
    ("NaN", False), ("Infinity", False), ("[1,,2]", False), ('{"a":}', False), ('{1:2}', False),
    ('"a\x01b"', False), ('"unterminated', False), ('"\\u12"', False), ('"\\u12g4"', False),
    ('"\xc3"', False), ('"\xc0\x80"', False), ('"\xed\xa0\x80"', False), ('"\xf4\x90\x80\x80"', False),
    ('"\xff"', False), ("\xef\xbb\xbf{}", False), ("[" * 32 + "]" * 32, True), ("[" * 33 + "]" * 33, False),
    ("01", False), ("-01", False), ("1.5.2", False), ("1e5e5", False), ("[true false]", False), ("nul", False),
]


def judge(text):
    """CPython's strict answer: the text is one JSON text (no NaN/Infinity), at most LIMIT deep."""
    try:
        v = json.loads(text.decode("utf-8"), parse_constant=_refuse)
        # a lone surrogate half (CPython keeps "\ud800" as such) is no character: it has no UTF-8
        json.dumps(v, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):
        return False
    return _depth(text) <= LIMIT


def _refuse(name):
    raise ValueError(name)


def _depth(b):
    depth = most = 0
    in_str = esc = False
    for c in b:
        if in_str:
            if esc:
                esc = False
            elif c == 0x5C:
                esc = True
            elif c == 0x22:
                in_str = False
        elif c == 0x22:
            in_str = True
        elif c in b"[{":
            depth += 1
            most = max(most, depth)
        elif c in b"]}":
            depth -= 1
    return most


@pytest.fixture(scope="module")
def lib():
    L = build_shared("jsoncheck", JSONCHECK_SOURCES)
    L.jsoncheck_init.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    L.jsoncheck_feed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    L.jsoncheck_feed.restype = ctypes.c_int
    L.jsoncheck_end.argtypes = [ctypes.c_void_p]
    L.jsoncheck_end.restype = ctypes.c_int
    return L


def c_check(lib, text, pieces):
    """(valid, error offset or None) from the C core, fed in `pieces` (their lengths)."""
    st = ctypes.create_string_buffer(64)   # (jsoncheck_t is 32 bytes)
    lib.jsoncheck_init(st, LIMIT)
    off = 0
    for n in pieces:
        if lib.jsoncheck_feed(st, text[off:off + n], n) != 0:
            return False, ctypes.c_uint32.from_buffer(st).value
        off += n
    r = lib.jsoncheck_end(st)
    return r == 0, (None if r == 0 else ctypes.c_uint32.from_buffer(st).value)


def py_check(text, pieces):
    c = JSONCheck(LIMIT)
    off = 0
    try:
        for n in pieces:
            c.feed(text[off:off + n])
            off += n
        c.end()
    except ValueError:
        return False, c.pos
    return True, None


def split(rng, n):
    out = []
    while n > 0:
        k = rng.randint(1, max(1, min(n, 7)))
        out.append(k)
        n -= k
    return out


def _random_value(rng, depth=0):
    kind = rng.randrange(7 if depth < 6 else 5) if depth < 9 else 3   # (depth 9: a key's text)
    if kind == 0:
        return rng.choice([True, False, None])
    if kind == 1:
        return rng.randint(-10 ** rng.randint(0, 20), 10 ** rng.randint(0, 20))
    if kind == 2:
        return rng.uniform(-1e6, 1e6) * 10 ** rng.randint(-30, 30)
    if kind in (3, 4):
        return "".join(rng.choice("ab\"\\/\n\t\u00e9\u2713\U0001F600 \x01") for _ in range(rng.randint(0, 8)))
    if kind == 5:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {"k%d" % i + _random_value(rng, 9): _random_value(rng, depth + 1) for i in range(rng.randint(0, 4))}


def test_hand_written_cases_agree_with_cpython(lib):
    for text, valid in CASES:
        b = text.encode("latin-1")
        assert judge(b) == valid, (text, "the case list is wrong")
        for pieces in ([len(b)] if b else [0], [1] * len(b)):
            got_c, at_c = c_check(lib, b, pieces)
            got_py, at_py = py_check(b, pieces)
            assert got_c == valid, ("C", text, pieces, at_c)
            assert got_py == valid, ("Python", text, pieces, at_py)
            assert at_c == at_py, (text, at_c, at_py)


def test_random_json_and_its_mutations_agree_with_cpython(lib):
    rng = random.Random(1620)
    n = bad = 0
    for _ in range(600):
        b = json.dumps(_random_value(rng), ensure_ascii=rng.random() < 0.5,
                       indent=rng.choice([None, 1])).encode()
        texts = [b]
        for _ in range(6):   # one byte changed, removed or added
            i = rng.randrange(len(b) + 1)
            op = rng.randrange(3)
            ch = bytes([rng.choice(b'{}[],:"\\ 0123456789.eE+-tfnulasx\x00\x7f\xc3\xa9\xff')])
            texts.append(b[:i] + ch + b[i + 1:] if op == 0 else b[:i] + b[i + 1:] if op == 1 else b[:i] + ch + b[i:])
        for t in texts:
            valid = judge(t)
            pieces = split(rng, len(t)) if t else [0]
            got_c, at_c = c_check(lib, t, pieces)
            got_py, at_py = py_check(t, pieces)
            assert got_c == valid and got_py == valid, (t, valid, got_c, got_py)
            assert at_c == at_py, (t, at_c, at_py)
            n += 1
            bad += not valid
    assert n == 600 * 7 and 1000 < bad < n - 600, bad   # most mutations break the text, not all


def test_depth_is_bounded_and_said(lib):
    deep = b"[" * 40 + b"]" * 40
    st = ctypes.create_string_buffer(64)
    lib.jsoncheck_init(st, LIMIT)
    assert lib.jsoncheck_feed(st, deep, len(deep)) == -2       # JSONCHECK_DEEP
    assert ctypes.c_uint32.from_buffer(st).value == LIMIT        # at the 33rd "["
    c = JSONCheck(LIMIT)
    with pytest.raises(ValueError, match="nested deeper than 32"):
        c.feed(deep)
    lib.jsoncheck_init(st, 200)                                  # limits above 64 are 64
    assert lib.jsoncheck_feed(st, b"[" * 65, 65) == -2


def test_the_fuzz_harness_agrees_on_the_cases_under_asan_ubsan(tmp_path):
    files = []
    for i, (text, _) in enumerate(CASES):
        for limit in (1, 2, 32, 64):
            # the harness's input: a byte for the limit, the text, a byte for where to cut it
            p = tmp_path / ("c%03d-%d" % (i, limit))
            p.write_bytes(bytes([limit - 1]) + text.encode("latin-1") + bytes([i * 37 % 256]))
            files.append(str(p))
    run_sanitized_driver(tmp_path, "fuzz_jsoncheck.c", JSONCHECK_SOURCES, "JC_STANDALONE_MAIN", files)


def test_fuzz_bounded(tmp_path):
    clang = shutil.which("clang")
    if not clang:
        pytest.skip("clang not installed (apt-get install clang)")
    probe = subprocess.run([clang, "-fsanitize=fuzzer", "-x", "c", "-", "-o", os.devnull],
                           input="int LLVMFuzzerTestOneInput(const char *d, long n) { return 0; }",
                           capture_output=True, text=True)
    if probe.returncode:
        pytest.skip("clang without libFuzzer: " + probe.stderr[-200:])
    env = dict(os.environ, FUZZ_WORK=str(tmp_path))
    proc = subprocess.run(["sh", os.path.join(FUZZ_DIR, "run_fuzz.sh"), "10", "jsoncheck"], capture_output=True,
                          text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Done" in proc.stderr or "DONE" in proc.stderr, proc.stderr[-2000:]
