# The strict JSON check a request body gets before json.loads (iotutils.web.request.json_check): the
# C module's JSONCheck on the host firmware, the Python one (web/json_body.py) elsewhere, on CPython
# and MicroPython. MicroPython's json.loads alone takes {"a": 1] for {"a": 1} and [1 2] for [1, 2].
# (tests/c/test_jsoncheck.py holds both to CPython's parser on random JSON and its mutations.)
from mpunit import raises

from iotutils.web.json_body import JSONCheck
from iotutils.web.request import json_check

GOOD = ('{"a": 1}', "[]", "  0 ", "-0.5E+10", '[true, false, null, "x\\u00e9"]', '"h\xc3\xa9llo"', "[" * 32 + "]" * 32)
BAD = ('{"a": 1]', "[1, 2}", "[1,2,]", '{"a" 1}', "[01]", '["\\x41"]', "[1 2]", "{,}", "tru", '{"a":1} x', "",
       "1.", '"a\x01"', '"\xc3"', '"\xed\xa0\x80"', "[" * 33 + "]" * 33,
       # a UTF-16 surrogate escape alone, or its halves the wrong way round, is no character
       '"\\ud800"', '"\\udca1"', '"\\udca1\\ud83d"', '"\\ud83d\\n"', '"\\ud83dx"', '"\\ud83d\\u0041"')


def _check(make, text):
    b = bytes(ord(c) for c in text)   # (latin-1: the cases' bytes as written)
    c = make(32)
    c.feed(b)
    c.end()


def test_both_checkers_take_json_and_refuse_what_is_not():
    makers = [JSONCheck, json_check]
    for make in makers:
        for t in GOOD:
            _check(make, t)
        for t in BAD:
            e = raises(ValueError, _check, make, t)
            assert "invalid JSON at byte" in str(e) or "nested deeper than 32" in str(e), (make, t, e)


def test_pieces_of_any_size_and_the_error_s_place():
    for make in (JSONCheck, json_check):
        c = make(32)
        for ch in b'{"a": [1, 2.5, "\xe2\x9c\x93"]}':
            c.feed(bytes([ch]))
        c.end()
        c = make(32)
        c.feed(b'{"a": 1')
        e = raises(ValueError, c.feed, b"]")
        assert str(e) == "invalid JSON at byte 7", e
        raises(ValueError, c.end)   # the error stays


def test_escaped_surrogate_pairs_are_counted_and_joined_into_their_characters():
    import json

    from iotutils.web.json_body import astral
    for make in (JSONCheck, json_check):
        c = make(32)
        text = b'{"\\ud83d\\udca1": ["a\\uD83D\\uDE00b", "\\ud55c", 1]}'
        for i in range(len(text)):   # (a pair cut anywhere between pieces)
            c.feed(text[i:i + 1])
        assert c.end() == 2, make
        c = make(32)
        c.feed(b'"\\ud55c \\u00e9"')
        assert c.end() == 0
    v = astral(json.loads(text))
    assert v == {"\U0001F4A1": ["a\U0001F600b", "\ud55c", 1]}, v
    assert list(v)[0].encode() == b"\xf0\x9f\x92\xa1" and v[list(v)[0]][0].encode() == b"a\xf0\x9f\x98\x80b"
