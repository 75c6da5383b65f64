#!/usr/bin/env python3
"""Generate tests/corpus/sign/{vectors,keys}.json: ECDSA P-256/SHA-256 cases in the manner of NIST
CAVP's SigVer files (Qx, Qy, Msg, R, S, Result), made and checked with `cryptography` (pinned in
requirements.txt). Run once; the JSON files are committed and read by tests/unit/test_sign.py
(CPython and MicroPython) and tests/c/test_sigverify.py.

    .venv/bin/python tests/corpus/sign/make_vectors.py

Keys are derived from fixed seeds (stable across runs); ECDSA signatures are randomised, so a
re-run gives other r, s values for the same cases. Every "P" case is verified, and every "F" case
is refused, by cryptography before it is written.
"""
import hashlib
import json
import os

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, utils

HERE = os.path.dirname(os.path.abspath(__file__))
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5
CURVE = ec.SECP256R1()
PREHASHED = ec.ECDSA(utils.Prehashed(hashes.SHA256()))

# RFC 6979 A.2.5 (P-256, SHA-256): a published key and two deterministic signatures
RFC6979_Q = ("60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6",
             "7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299")
RFC6979 = (
    (b"sample", "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716",
     "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8"),
    (b"test", "F1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367",
     "019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083"),
)


def point_of(pub):
    return pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def pub_from_point(pt):
    return ec.EllipticCurvePublicKey.from_encoded_point(CURVE, pt)


def key(seed):
    d = int.from_bytes(hashlib.sha256(b"iotutils sign vectors " + seed).digest(), "big") % (N - 1) + 1
    return ec.derive_private_key(d, CURVE)


def sign(priv, digest):
    return utils.decode_dss_signature(priv.sign(digest, PREHASHED))


def cryptography_says(pt, digest, r, s):
    if not (0 < r < N and 0 < s < N):
        return False  # cryptography cannot even encode these
    try:
        pub_from_point(pt).verify(utils.encode_dss_signature(r, s), digest, PREHASHED)
        return True
    except InvalidSignature:
        return False


def case(pt, msg, r, s, result, note, digest=None):
    """One CAVP SigVer-style record; Msg is null when the case is about the digest itself."""
    if digest is None:
        digest = hashlib.sha256(msg).digest()
    ok = cryptography_says(pt, digest, r, s)
    assert ok == (result == "P"), (note, ok)
    return {"Q": pt.hex(), "Msg": None if msg is None else msg.hex(), "digest": digest.hex(),
            "R": "%064x" % r, "S": "%064x" % s, "Result": result, "note": note}


# affine P-256 arithmetic, only to build the x(R) >= n case (cryptography has no point addition)
def ec_add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    if a[0] == b[0]:
        if (a[1] + b[1]) % P == 0:
            return None
        lam = (3 * a[0] * a[0] - 3) * pow(2 * a[1], -1, P) % P
    else:
        lam = (b[1] - a[1]) * pow(b[0] - a[0], -1, P) % P
    x = (lam * lam - a[0] - b[0]) % P
    return x, (lam * (a[0] - x) - a[1]) % P


def ec_neg(a):
    return None if a is None else (a[0], (-a[1]) % P)


def ec_mul(k, a):
    out = None
    while k:
        if k & 1:
            out = ec_add(out, a)
        a = ec_add(a, a)
        k >>= 1
    return out


def backwards(x, digest):
    """(key point, r, s) of a valid signature over digest whose R has the first x coordinate >= x
    on the curve: R is chosen first, then the key Q = (R - u1*G) / u2 that makes it verify."""
    while True:
        y = sqrt_mod_p((x ** 3 - 3 * x + B) % P)
        if y is not None:
            break
        x += 1
    r = x % N
    s = 0x1234567 * 0x89ABCDEF + 17
    e = int.from_bytes(digest, "big")
    w = pow(s, -1, N)
    u1, u2 = e * w % N, r * w % N
    q = ec_mul(pow(u2, -1, N), ec_add((x, y), ec_neg(ec_mul(u1, (GX, GY)))))
    return b"\x04" + q[0].to_bytes(32, "big") + q[1].to_bytes(32, "big"), r, s


def sqrt_mod_p(v):
    y = pow(v, (P + 1) // 4, P)
    return y if y * y % P == v else None


def vectors():
    out = []
    q = bytes.fromhex("04" + "".join(RFC6979_Q))
    for msg, r, s in RFC6979:
        out.append(case(q, msg, int(r, 16), int(s, 16), "P", "RFC 6979 A.2.5 %r" % msg.decode()))
    keys = [key(b"%d" % i) for i in range(4)]
    for i, k in enumerate(keys):
        pt = point_of(k.public_key())
        for j in range(4):
            msg = b"message %d for key %d" % (j, i) + os.urandom(8 * j)
            digest = hashlib.sha256(msg).digest()
            r, s = sign(k, digest)
            out.append(case(pt, msg, r, s, "P", "valid"))
            if j == 0:
                out.append(case(pt, msg, r, N - s, "P", "valid: the same signature with s -> n - s (malleable)"))
                out.append(case(pt, msg + b"!", r, s, "F", "message changed"))
                out.append(case(pt, msg, s, r, "F", "r and s swapped"))
                out.append(case(pt, msg, r, (s + 1) % N, "F", "s + 1"))
                out.append(case(pt, msg, (r + 1) % N, s, "F", "r + 1"))
                other = point_of(keys[(i + 1) % len(keys)].public_key())
                out.append(case(other, msg, r, s, "F", "another key"))
                out.append(case(pt, msg, 0, s, "F", "r = 0"))
                out.append(case(pt, msg, r, 0, "F", "s = 0"))
                out.append(case(pt, msg, N, s, "F", "r = n"))
                out.append(case(pt, msg, r, N, "F", "s = n"))
                out.append(case(pt, msg, (1 << 256) - 1, s, "F", "r = 2^256 - 1"))
    # a digest that is >= n as an integer (it must be used mod n, not refused or truncated)
    k = keys[0]
    pt = point_of(k.public_key())
    digest = b"\xff" * 32
    r, s = sign(k, digest)
    out.append(case(pt, None, r, s, "P", "digest >= n", digest))
    # x(R) >= n, so r = x(R) - n: verifiers that compare x(R) with r without reducing mod n refuse
    # it. A random signature is like that once in 2^128, so the case is built backwards: a point R
    # with x >= n, then the key Q = (R - u1*G) / u2 for which (r, s) verifies.
    digest = hashlib.sha256(b"x(R) >= n").digest()
    qpt, r, s = backwards(N, digest)
    out.append(case(qpt, None, r, s, "P", "x(R) >= n (r = x(R) - n)", digest))
    # a small r, so that r + n still fits 32 bytes: the same value mod n, and out of range
    digest = hashlib.sha256(b"small r").digest()
    qpt, r, s = backwards(1, digest)
    out.append(case(qpt, None, r, s, "P", "small r", digest))
    out.append(case(qpt, None, r + N, s, "F", "r + n (fits 32 bytes; out of range)", digest))
    out.append(case(qpt, None, r, s + N, "F", "s + n (fits 32 bytes; out of range)", digest))
    return out


def pem(pub):
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def keys():
    k = key(b"pem")
    pub = k.public_key()
    pt = point_of(pub)
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    compressed = pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    # the same SubjectPublicKeyInfo with the compressed point (OpenSSL's -conv_form compressed)
    der_c = der[:2] + der[2:2 + 21] + bytes([0x03, 34, 0]) + compressed
    der_c = bytes([0x30, len(der_c) - 2]) + der_c[2:]
    # a point off the curve (y + 1) inside an otherwise well-formed SubjectPublicKeyInfo
    off = pt[:64] + bytes([pt[64] ^ 1])
    der_off = der[:-65] + off
    good = [
        {"name": "pem", "key": pem(pub), "point": pt.hex()},
        {"name": "pem with CRLF and no trailing newline", "key": pem(pub).replace("\n", "\r\n").rstrip(),
         "point": pt.hex()},
        {"name": "der (hex)", "key_hex": der.hex(), "point": pt.hex()},
        {"name": "der with a compressed point (hex)", "key_hex": der_c.hex(), "point": pt.hex()},
        {"name": "raw point (hex)", "key_hex": pt.hex(), "point": pt.hex()},
        {"name": "compressed point (hex)", "key_hex": compressed.hex(), "point": pt.hex()},
    ]
    bad = [
        {"name": "RSA public key", "key": pem(rsa.generate_private_key(65537, 2048).public_key()), "says": "RSA"},
        {"name": "P-384 public key", "key": pem(ec.generate_private_key(ec.SECP384R1()).public_key()),
         "says": "P-384"},
        {"name": "secp256k1 public key", "key": pem(ec.generate_private_key(ec.SECP256K1()).public_key()),
         "says": "secp256k1"},
        {"name": "Ed25519 public key", "key": pem(ed25519.Ed25519PrivateKey.generate().public_key()),
         "says": "Ed25519"},
        {"name": "PKCS#8 private key", "says": "PRIVATE",
         "key": k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()},
        {"name": "SEC1 EC private key", "says": "PRIVATE",
         "key": k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()},
        {"name": "truncated PEM", "key": pem(pub)[:120], "says": "PUBLIC KEY"},
        {"name": "PEM with bad base64", "key": "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n",
         "says": ""},
        {"name": "DER cut short (hex)", "key_hex": der[:-10].hex(), "says": "DER"},
        {"name": "DER with a point off the curve (hex)", "key_hex": der_off.hex(), "says": "curve"},
        {"name": "raw point off the curve (hex)", "key_hex": off.hex(), "says": "curve"},
        {"name": "x >= p (hex)", "key_hex": "04" + "%064x" % P + pt[33:].hex(), "says": ""},
        {"name": "point at infinity (hex)", "key_hex": "00", "says": "infinity"},
        {"name": "64 bytes, no prefix (hex)", "key_hex": pt[1:].hex(), "says": "point"},
        {"name": "empty", "key": "", "says": ""},
    ]
    for b in bad:  # what cryptography thinks, so the corpus cannot drift from a real parser
        raw = bytes.fromhex(b["key_hex"]) if "key_hex" in b else b["key"].encode()
        if raw[:1] == b"-":
            try:
                got = serialization.load_pem_public_key(raw)
                assert not isinstance(got, ec.EllipticCurvePublicKey) or got.curve.name != "secp256r1", b
            except ValueError:
                pass
    # an app.json (scripts/release.py --app) signed by this key: the signature is over the
    # canonical JSON of everything but "sig" (json.dumps(sort_keys=True, separators=(",", ":")))
    man = {"version": "2.1.0", "files": [
        {"path": "main.py", "size": 120, "sha256": hashlib.sha256(b"main").hexdigest()},
        {"path": "caf\u00e9 \"\\\t\x7f\U0001f600.py", "size": 3, "sha256": hashlib.sha256(b"odd").hexdigest()},
    ]}
    body = json.dumps(man, sort_keys=True, separators=(",", ":")).encode()
    r, s = sign(k, hashlib.sha256(body).digest())
    man["sig"] = "%064x%064x" % (r, s)
    return {"good": good, "bad": bad, "app_manifest": {"point": pt.hex(), "manifest": man,
                                                        "canonical": body.decode()}}


def main():
    with open(os.path.join(HERE, "vectors.json"), "w") as f:
        json.dump(vectors(), f, indent=0)
        f.write("\n")
    with open(os.path.join(HERE, "keys.json"), "w") as f:
        json.dump(keys(), f, indent=1)
        f.write("\n")
    print("wrote vectors.json and keys.json in", HERE)


if __name__ == "__main__":
    main()
