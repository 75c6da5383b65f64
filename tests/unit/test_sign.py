# iotutils.sign on CPython and MicroPython (tests/unit/test_on_micropython.py runs this file on the
# micropython runtime, and on the host firmware when FIRMWARE= names one: there the C core
# _iotsig verifies, and the pure-Python verifier is checked beside it).
# The vectors come from tests/corpus/sign/make_vectors.py (NIST CAVP SigVer-style records made and
# checked with `cryptography`, plus RFC 6979's published P-256 signatures).
import binascii
import hashlib
import json

from mpunit import is_micropython, raises

from iotutils import sign


def _here():
    return __file__.rsplit("/", 1)[0] if "/" in __file__ else "."


def _corpus(name):
    with open(_here() + "/../corpus/sign/" + name) as f:
        return json.load(f)


_cache = {}


def vectors():
    if "v" not in _cache:
        _cache["v"] = _corpus("vectors.json")
    return _cache["v"]


def keys():
    if "k" not in _cache:
        _cache["k"] = _corpus("keys.json")
    return _cache["k"]


def unhex(s):
    return binascii.unhexlify(s)


def _sig(v):
    return unhex(v["R"] + v["S"])


def _flip(b, bit):
    b = bytearray(b)
    b[bit >> 3] ^= 0x80 >> (bit & 7)
    return bytes(b)


def _valid():
    return [v for v in vectors() if v["Result"] == "P"]


# ---------------------------------------------------------------- vectors


def test_vectors_cover_the_cases():
    notes = [v["note"] for v in vectors()]
    for want in ("RFC 6979", "r = 0", "s = n", "r + n", "another key", "malleable", "digest >= n", "x(R) >= n"):
        assert any(want in n for n in notes), want
    assert len(_valid()) >= 10 and len(vectors()) - len(_valid()) >= 10


def test_vectors():
    for v in vectors():
        got = sign.verify_digest(unhex(v["Q"]), unhex(v["digest"]), _sig(v))
        assert got == (v["Result"] == "P"), v["note"]


def test_vectors_hex_signature():
    for v in vectors():
        got = sign.verify_digest(unhex(v["Q"]), unhex(v["digest"]), v["R"] + v["S"])
        assert got == (v["Result"] == "P"), v["note"]
        assert sign.verify_digest(unhex(v["Q"]), unhex(v["digest"]), (v["R"] + v["S"]).upper()) == got


def test_digest_is_the_message_sha256():
    for v in vectors():
        if v["Msg"] is not None:
            assert hashlib.sha256(unhex(v["Msg"])).digest() == unhex(v["digest"]), v["note"]


def test_pure_python_verifier_matches():
    # whichever path verify_digest takes (the C core on a firmware), the pure-Python one agrees
    for v in vectors():
        pt = unhex(v["Q"])
        x, y = sign._check_point(pt)
        r, s = int(v["R"], 16), int(v["S"], 16)
        want = v["Result"] == "P"
        if 0 < r < sign._N and 0 < s < sign._N:
            assert sign._verify_py(x, y, int(v["digest"], 16), r, s) == want, v["note"]
        else:
            assert not want


def test_bit_flips_refused():
    v = _valid()[2]
    pt, d, sig = unhex(v["Q"]), unhex(v["digest"]), _sig(v)
    assert sign.verify_digest(pt, d, sig)
    for bit in range(0, 512, 7):
        assert not sign.verify_digest(pt, d, _flip(sig, bit)), bit
    for bit in range(0, 256, 5):
        assert not sign.verify_digest(pt, _flip(d, bit), sig), bit


def test_high_s_accepted():
    # ECDSA is malleable: (r, n - s) verifies too. Accepted on purpose (see sign.py's header).
    v = _valid()[3]
    r, s = int(v["R"], 16), int(v["S"], 16)
    other = r.to_bytes(32, "big") + (sign._N - s).to_bytes(32, "big")
    assert sign.verify_digest(unhex(v["Q"]), unhex(v["digest"]), other)


# ---------------------------------------------------------------- malformed input


def test_malformed_signatures_are_false():
    v = _valid()[0]
    pt, d, sig = unhex(v["Q"]), unhex(v["digest"]), _sig(v)
    h = v["R"] + v["S"]
    for bad in (None, b"", sig[:63], sig + b"\x00", sig[:32], bytes(64), b"\xff" * 64, h[:127], h + "0",
                "zz" + h[2:], " " + h[1:], 12345, [1, 2], {"r": 1}, 1.5, True):
        assert sign.verify_digest(pt, d, bad) is False, bad
    n = sign._N.to_bytes(32, "big")
    assert not sign.verify_digest(pt, d, sig[:32] + n)
    assert not sign.verify_digest(pt, d, n + sig[32:])
    assert not sign.verify_digest(pt, d, bytes(32) + sig[32:])
    assert not sign.verify_digest(pt, d, sig[:32] + bytes(32))
    assert sign.verify_digest(pt, d, bytearray(sig)) and sign.verify_digest(pt, d, memoryview(sig))


def test_bad_digest_or_point_raise():
    v = _valid()[0]
    pt, d, sig = unhex(v["Q"]), unhex(v["digest"]), _sig(v)
    for bad in (d[:31], d + b"\x00", None, v["digest"]):
        raises(ValueError, sign.verify_digest, pt, bad, sig)
    off = pt[:64] + bytes([pt[64] ^ 1])
    e = raises(ValueError, sign.verify_digest, off, d, sig)
    assert "curve" in str(e)
    raises(ValueError, sign.verify_digest, off, d, b"short")  # the key is checked even then
    for bad in (pt[1:], b"\x02" + pt[1:33], pt.hex() if hasattr(pt, "hex") else "04", None):
        raises(ValueError, sign.verify_digest, bad, d, sig)


# ---------------------------------------------------------------- keys


def _key_input(k):
    return k["key"] if "key" in k else unhex(k["key_hex"])


def test_load_good_keys():
    for k in keys()["good"]:
        pt = sign.load_pubkey(_key_input(k))
        assert pt == unhex(k["point"]), k["name"]
        if "key" in k:
            assert sign.load_pubkey(k["key"].encode()) == pt  # bytes as well as str
    assert sign.load_pubkey(bytearray(unhex(keys()["good"][0]["point"]))) == unhex(keys()["good"][0]["point"])


def test_load_bad_keys():
    for k in keys()["bad"]:
        try:
            sign.load_pubkey(_key_input(k))
        except ValueError as e:
            assert k["says"] in str(e), (k["name"], str(e))
            assert str(e).startswith("key:"), str(e)
        else:
            raise AssertionError("accepted: " + k["name"])
    for bad in (None, 42, ["04"]):
        raises(ValueError, sign.load_pubkey, bad)


def test_private_key_message_says_what_to_do():
    k = [k for k in keys()["bad"] if k["name"] == "PKCS#8 private key"][0]
    e = raises(ValueError, sign.load_pubkey, k["key"])
    assert ".pub" in str(e) and "offline" in str(e)


def test_key_id():
    pt = unhex(keys()["good"][0]["point"])
    kid = sign.key_id(pt)
    assert len(kid) == 16 and kid == binascii.hexlify(hashlib.sha256(pt).digest()[:8]).decode()
    assert sign.key_id(bytearray(pt)) == kid
    other = unhex(vectors()[0]["Q"])
    assert sign.key_id(other) != kid
    raises(ValueError, sign.key_id, pt[:64])


# ---------------------------------------------------------------- releases (ota.json)


def _release():
    v = _valid()[1]
    pt, d = unhex(v["Q"]), unhex(v["digest"])
    man = {"version": "1.4.0", "project": "iotutils", "size": 1000, "sha256": v["digest"], "secure_version": 2,
           "sig": v["R"] + v["S"], "key_id": sign.key_id(pt)}
    return pt, d, man, {"version": "1.4.0", "project": "micropython", "secure_version": 2}


def test_verify_release_accepts():
    pt, d, man, desc = _release()
    sign.precheck(pt, man)
    assert sign.verify_release(pt, man, d, desc) is True
    assert sign.verify_release(pt, man, d) is True
    del man["key_id"]  # key_id is a hint for a clear message; the signature decides
    assert sign.verify_release(pt, man, d, desc)


def test_verify_release_refusals():
    pt, d, man, desc = _release()
    cases = []
    m = dict(man)
    del m["sig"]
    cases.append((m, d, desc, "not signed"))
    cases.append((dict(man, sig=man["sig"][:126]), d, desc, "malformed"))
    cases.append((dict(man, sig=man["sig"][:-2] + ("00" if man["sig"][-2:] != "00" else "01")), d, desc,
                  "bad signature"))
    cases.append((dict(man, key_id="0011223344556677"), d, desc, "signed by key 0011223344556677"))
    # the manifest's version edited without re-signing: the signed image still says 1.4.0
    cases.append((dict(man, version="9.9.9"), d, desc, "version 9.9.9"))
    cases.append((dict(man, secure_version=7), d, desc, "secure_version 7"))
    cases.append((man, d, dict(desc, version="1.3.0"), "signed image is 1.3.0"))
    cases.append((man, _flip(d, 3), desc, "sha256 differs"))
    m = dict(man)
    del m["sha256"]
    cases.append((m, _flip(d, 3), desc, "bad signature"))
    other = unhex(_valid()[6]["Q"])
    for m, dg, ds, says in cases:
        e = raises(sign.SignatureError, sign.verify_release, pt, m, dg, ds)
        assert isinstance(e, ValueError)
        assert says in str(e), (says, str(e))
    m = dict(man)
    del m["key_id"]
    if sign.key_id(other) != sign.key_id(pt):
        e = raises(sign.SignatureError, sign.verify_release, other, m, d, desc)
        assert "bad signature" in str(e)
    raises(sign.SignatureError, sign.precheck, pt, None)
    raises(sign.SignatureError, sign.precheck, pt, ["sig"])


# ---------------------------------------------------------------- app.json and canonical JSON


def test_canonical_json():
    cases = [
        ({}, b"{}"),
        ([], b"[]"),
        ({"b": 1, "a": [True, False, None, -5, 10 ** 30]}, b'{"a":[true,false,null,-5,1000000000000000000000000000000],"b":1}'),
        ({"z": {"y": "x", "X": ""}}, b'{"z":{"X":"","y":"x"}}'),
        ("\"\\/\b\f\n\r\t\x00\x1f \x7e\x7f\x80\u00e9\u20ac\ufffd",
         b'"\\"\\\\/\\b\\f\\n\\r\\t\\u0000\\u001f ~\\u007f\\u0080\\u00e9\\u20ac\\ufffd"'),
        ("\U0001f600", b'"\\ud83d\\ude00"'),
        ({"\u00e9": 1, "e": 2, "f": 3}, b'{"e":2,"f":3,"\\u00e9":1}'),
    ]
    for obj, want in cases:
        assert sign.canonical_json(obj) == want, (obj, sign.canonical_json(obj))
    if not is_micropython():  # CPython: the definition itself gives the same bytes
        for obj, want in cases:
            assert json.dumps(obj, sort_keys=True, separators=(",", ":")).encode() == want
    for bad in (1.5, {"a": 0.0}, {1: 2}, b"x", {"a": {1, 2}}):
        raises(ValueError, sign.canonical_json, bad)


def test_canonical_json_of_the_corpus_manifest():
    a = keys()["app_manifest"]
    body = dict(a["manifest"])
    del body["sig"]
    assert sign.canonical_json(body).decode() == a["canonical"]


def test_verify_manifest():
    a = keys()["app_manifest"]
    pt, man = unhex(a["point"]), a["manifest"]
    assert sign.verify_manifest(pt, man)
    assert sign.verify_manifest(pt, json.loads(json.dumps(man)))  # a round trip changes nothing
    bad = []
    m = json.loads(json.dumps(man))
    m["files"][0]["sha256"] = "0" * 64
    bad.append(m)
    m = json.loads(json.dumps(man))
    m["files"].pop()
    bad.append(m)
    m = json.loads(json.dumps(man))
    m["version"] = "2.1.1"
    bad.append(m)
    m = json.loads(json.dumps(man))
    m["extra"] = 1
    bad.append(m)
    m = json.loads(json.dumps(man))
    m["files"][0]["size"] = 120.0  # a float is not canonical: refused, not rounded
    bad.append(m)
    m = json.loads(json.dumps(man))
    del m["sig"]
    bad.append(m)
    bad.append(dict(man, sig=man["sig"][:-1]))
    bad.append(None)
    bad.append([man])
    for m in bad:
        assert sign.verify_manifest(pt, m) is False, m
    other = unhex(_valid()[0]["Q"])
    assert sign.verify_manifest(other, man) is False


def test_manifest_digest_ignores_only_sig():
    a = keys()["app_manifest"]
    man = a["manifest"]
    d = sign.manifest_digest(man)
    assert d == hashlib.sha256(a["canonical"].encode()).digest()
    assert sign.manifest_digest(dict(man, sig="00")) == d
    assert sign.manifest_digest(dict(man, key_id="x")) != d
