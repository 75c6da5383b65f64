# Signed releases, checked on the device: ECDSA over the NIST P-256 curve with SHA-256.
#
#   point = load_pubkey(pem_text_or_der)   # the 65-byte uncompressed point, validated; ValueError otherwise
#   point = default_pubkey()               # the device's key: frozen (make OTA_PUBKEY=...), else NVS ota/pubkey
#   key_id(point)                          # "1a2b3c4d5e6f7081": first 8 bytes of sha256(point), hex
#   verify_digest(point, digest, sig)      # True/False; sig = r||s (64 bytes, or 128 hex digits)
#   precheck(point, manifest)              # ota.json before downloading: SignatureError if unsigned/other key
#   verify_release(point, manifest, digest, desc)   # ota.json + the image's digest and app descriptor
#   verify_manifest(point, manifest)       # app.json: the signature over its canonical JSON
#
# Why P-256: the ESP32 firmware already links mbedTLS, which has it (and no Ed25519). A firmware
# built with the C module verifies through _iotsig (mbedtls_ecdsa_verify); stock MicroPython uses
# the pure-Python verifier below: Jacobian coordinates, Shamir's trick for u1*G + u2*Q, big ints,
# ~5 ms and ~4.5 KB of heap on a PC's micropython runtime (bench/bench_sign.py); a board is much
# slower, but it runs once per update.
#
# What a signature covers (scripts/release.py makes them, docs/security.md explains):
#   firmware  sig = ECDSA(key, SHA-256(firmware.bin)): the image's app descriptor carries project,
#             version and secure_version, so the signed bytes prove them; verify_release() checks
#             the manifest says the same as the image.
#   app.json  sig = ECDSA(key, SHA-256(canonical JSON of the manifest without "sig")), canonical =
#             CPython's json.dumps(m, sort_keys=True, separators=(",", ":")) (ASCII, \uXXXX escapes);
#             each file's sha256 is in the signed part.
# High-s signatures are accepted: ECDSA is malleable ((r, s) and (r, n-s) both verify), which only
# matters where a signature's bytes identify something (transaction ids); here a second valid
# signature of the same image gains nothing: the image is the same.
import binascii
import hashlib

from iotutils.auth import hexstr

try:
    from _iotsig import verify as _c_verify
except ImportError:  # stock MicroPython, CPython: the pure-Python verifier
    _c_verify = None

# NIST P-256 (FIPS 186-4, D.1.2.3): y^2 = x^3 - 3x + b over GF(p), prime order n, cofactor 1
_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
_GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
_GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5

# DER object identifiers (the value bytes), to name what a key is when it is not ours
_OID_EC = b"\x2a\x86\x48\xce\x3d\x02\x01"  # 1.2.840.10045.2.1 id-ecPublicKey
_OID_P256 = b"\x2a\x86\x48\xce\x3d\x03\x01\x07"  # 1.2.840.10045.3.1.7 prime256v1
_OTHER_KEYS = (
    (b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01", "an RSA key"),
    (b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0a", "an RSA-PSS key"),
    (b"\x2b\x65\x70", "an Ed25519 key"),
    (b"\x2b\x65\x71", "an Ed448 key"),
    (b"\x2a\x86\x48\xce\x38\x04\x01", "a DSA key"),
)
_OTHER_CURVES = (
    (b"\x2b\x81\x04\x00\x22", "P-384"),
    (b"\x2b\x81\x04\x00\x23", "P-521"),
    (b"\x2b\x81\x04\x00\x0a", "secp256k1"),
    (b"\x2a\x86\x48\xce\x3d\x03\x01\x01", "P-192"),
    (b"\x2b\x81\x04\x00\x21", "P-224"),
)


class SignatureError(ValueError):
    """A release refused for its signature (unsigned, another key, bad signature, edited manifest).
    A ValueError, so code that turns ValueError into a refused update handles it too."""


# ---------------------------------------------------------------- field and curve arithmetic


def _inv(a, m):
    # a^-1 mod m (m prime, a not a multiple of m) by the extended Euclidean algorithm:
    # MicroPython ports may lack pow(a, b, m)
    lm, hm = 1, 0
    low, high = a % m, m
    while low > 1:
        q = high // low
        lm, hm = hm - lm * q, lm
        low, high = high - low * q, low
    return lm % m


def _powmod(b, e, m):
    try:
        return pow(b, e, m)
    except (TypeError, NotImplementedError):  # a port built without 3-argument pow
        r = 1
        b %= m
        while e:
            if e & 1:
                r = r * b % m
            b = b * b % m
            e >>= 1
        return r


def _on_curve(x, y):
    p = _P
    return 0 <= x < p and 0 <= y < p and (y * y - x * x * x + 3 * x - _B) % p == 0


def _dbl(X, Y, Z, p):
    # 2*(X, Y, Z) in Jacobian coordinates for a = -3 (dbl-2001-b); Z == 0 is the point at infinity.
    # Y is never 0 for a finite point: the group has odd prime order, so no point of order 2.
    if not Z:
        return X, Y, Z
    d = Z * Z % p
    g = Y * Y % p
    b = X * g % p
    a = 3 * (X - d) * (X + d) % p
    X3 = (a * a - 8 * b) % p
    return X3, (a * (4 * b - X3) - 8 * g * g) % p, 2 * Y * Z % p


def _madd(X, Y, Z, x2, y2, p):
    # (X, Y, Z) + (x2, y2, 1): Jacobian plus affine (8M + 3S)
    if not Z:
        return x2, y2, 1
    z2 = Z * Z % p
    h = (x2 * z2 - X) % p
    r = (y2 * z2 % p * Z - Y) % p
    if not h:
        if r:
            return 1, 1, 0  # P + (-P)
        return _dbl(x2, y2, 1, p)  # P + P
    h2 = h * h % p
    h3 = h2 * h % p
    v = X * h2 % p
    X3 = (r * r - h3 - 2 * v) % p
    return X3, (r * (v - X3) - Y * h3) % p, Z * h % p


def _verify_py(qx, qy, e, r, s):
    """ECDSA verify on P-256 for a validated point (qx, qy), digest integer e and 0 < r, s < n."""
    p, n = _P, _N
    w = _inv(s, n)
    u1 = e * w % n
    u2 = r * w % n
    # Shamir's trick: one pass over the bits of u1 and u2 with the table G, Q, G+Q (affine)
    X, Y, Z = _madd(_GX, _GY, 1, qx, qy, p)
    gq = None
    if Z:
        zi = _inv(Z, p)
        zi2 = zi * zi % p
        gq = (X * zi2 % p, Y * zi2 % p * zi % p)
    b1 = u1.to_bytes(32, "big")
    b2 = u2.to_bytes(32, "big")
    X, Y, Z = 1, 1, 0
    for i in range(256):
        X, Y, Z = _dbl(X, Y, Z, p)
        m = 0x80 >> (i & 7)
        k = (1 if b1[i >> 3] & m else 0) | (2 if b2[i >> 3] & m else 0)
        if k == 1:
            X, Y, Z = _madd(X, Y, Z, _GX, _GY, p)
        elif k == 2:
            X, Y, Z = _madd(X, Y, Z, qx, qy, p)
        elif k == 3 and gq is not None:
            X, Y, Z = _madd(X, Y, Z, gq[0], gq[1], p)
    if not Z:
        return False
    # x(R) mod n == r without inverting Z: x = X / Z^2, and x mod n == r means x is r or r + n (< p)
    z2 = Z * Z % p
    if X == r * z2 % p:
        return True
    return r + n < p and X == (r + n) * z2 % p


# ---------------------------------------------------------------- keys


def _der(buf, pos, tag, what):
    """(start, end) of the value of the DER element with this tag at pos; ValueError otherwise."""
    if pos + 2 > len(buf) or buf[pos] != tag:
        raise ValueError("key: not a public key in DER/PEM form (%s expected)" % what)
    ln = buf[pos + 1]
    pos += 2
    if ln & 0x80:
        k = ln & 0x7F
        if not 1 <= k <= 2 or pos + k > len(buf):
            raise ValueError("key: bad DER length")
        ln = int.from_bytes(buf[pos : pos + k], "big")
        pos += k
    if pos + ln > len(buf):
        raise ValueError("key: truncated DER")
    return pos, pos + ln


def _spki_point(der):
    """The public point bytes of a SubjectPublicKeyInfo for an EC P-256 key."""
    start, end = _der(der, 0, 0x30, "SEQUENCE")
    if end != len(der):
        raise ValueError("key: bytes after the public key")
    a, alg_end = _der(der, start, 0x30, "AlgorithmIdentifier")
    o, o_end = _der(der, a, 0x06, "algorithm OID")
    oid = bytes(der[o:o_end])
    if oid != _OID_EC:
        for known, name in _OTHER_KEYS:
            if oid == known:
                raise ValueError("key: this is %s: only ECDSA P-256 (prime256v1) keys are supported" % name)
        raise ValueError("key: not an EC key (algorithm OID %s): only ECDSA P-256 is supported" % hexstr(oid))
    if o_end >= alg_end or der[o_end] != 0x06:
        raise ValueError("key: EC key without a named curve: only P-256 (prime256v1) is supported")
    c, c_end = _der(der, o_end, 0x06, "curve OID")
    curve = bytes(der[c:c_end])
    if curve != _OID_P256:
        for known, name in _OTHER_CURVES:
            if curve == known:
                raise ValueError("key: curve %s: only P-256 (prime256v1) is supported" % name)
        raise ValueError("key: unknown curve (OID %s): only P-256 (prime256v1) is supported" % hexstr(curve))
    b, b_end = _der(der, alg_end, 0x03, "BIT STRING")
    if b_end != end or b == b_end or der[b] != 0:
        raise ValueError("key: bad public key BIT STRING")
    return bytes(der[b + 1 : b_end])


def _pem_body(text):
    if "PRIVATE KEY-----" in text:
        raise ValueError("key: this is a PRIVATE key: give the device the .pub file and keep the .key offline")
    head = "-----BEGIN PUBLIC KEY-----"
    i = text.find(head)
    j = text.find("-----END PUBLIC KEY-----")
    if i < 0 or j < i:
        raise ValueError("key: no '-----BEGIN PUBLIC KEY-----' block (a .pub file from scripts/keygen.py)")
    try:
        return binascii.a2b_base64("".join(text[i + len(head) : j].split()))
    except (ValueError, TypeError):
        raise ValueError("key: bad base64 in the PEM block")


def _check_point(pt):
    """(x, y) of an encoded P-256 point (65 bytes 04|x|y, or 33 bytes 02/03|x), on the curve."""
    if len(pt) == 65 and pt[0] == 4:
        x = int.from_bytes(pt[1:33], "big")
        y = int.from_bytes(pt[33:65], "big")
    elif len(pt) == 33 and pt[0] in (2, 3):
        x = int.from_bytes(pt[1:33], "big")
        if x >= _P:
            raise ValueError("key: point coordinate out of range")
        # p = 3 mod 4: the square root of a is a^((p+1)/4) when one exists
        a = (x * x * x - 3 * x + _B) % _P
        y = _powmod(a, (_P + 1) // 4, _P)
        if (y & 1) != (pt[0] & 1):
            y = _P - y
    elif len(pt) == 1 and pt[0] == 0:
        raise ValueError("key: the point at infinity is not a public key")
    else:
        raise ValueError("key: not a P-256 point (want 65 bytes starting 04, got %d bytes)" % len(pt))
    if not _on_curve(x, y):
        raise ValueError("key: the point is not on the P-256 curve")
    return x, y


def load_pubkey(key):
    """The validated 65-byte uncompressed point (04 | x | y) of a P-256 public key.

    key: PEM text (str or bytes, a .pub file from scripts/keygen.py), DER SubjectPublicKeyInfo
    bytes, or the point itself (65 bytes, or 33 compressed). ValueError saying what is wrong for
    anything else: another algorithm (RSA, Ed25519) or curve (P-384), a private key, a point off
    the curve."""
    text = isinstance(key, str)  # text can only be PEM; bytes may also be DER or a raw point
    if text:
        key = key.encode()
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise ValueError("key: expected PEM text or bytes, got %s" % type(key).__name__)
    key = bytes(key)
    if text or key[:5] == b"-----" or b"-----BEGIN" in key:
        try:
            text = key.decode()
        except UnicodeError:
            raise ValueError("key: PEM text is not ASCII")
        key = _pem_body(text)
        pt = _spki_point(key)
    elif key[:1] == b"\x30":
        pt = _spki_point(key)
    else:
        pt = key
    x, y = _check_point(pt)
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")


def key_id(point):
    """Short public id of a key: the first 8 bytes of SHA-256 of its 65-byte point, as hex."""
    return hexstr(hashlib.sha256(_point_bytes(point)).digest()[:8])


def _point_bytes(point):
    if isinstance(point, (bytes, bytearray, memoryview)) and len(point) == 65 and point[0] == 4:
        return bytes(point)
    raise ValueError("key: expected the 65-byte point from load_pubkey()")


# ---------------------------------------------------------------- signatures


def _sig_bytes(sig):
    """64 bytes r||s from bytes or 128 hex digits; None when malformed."""
    if isinstance(sig, str):
        if len(sig) != 128:
            return None
        try:
            sig = binascii.unhexlify(sig)
        except (ValueError, TypeError):
            return None
    if not isinstance(sig, (bytes, bytearray, memoryview)) or len(sig) != 64:
        return None
    return bytes(sig)


def verify_digest(point, digest, sig):
    """True if sig is a valid ECDSA P-256 signature of the SHA-256 digest (32 bytes) by point.

    sig: r||s, 64 bytes big-endian (or 128 hex digits). Anything malformed in sig (length,
    hex, r or s outside [1, n-1]) gives False, never an exception. A bad point (not from
    load_pubkey) or a digest that is not 32 bytes is the caller's error: ValueError."""
    pt = _point_bytes(point)
    if not isinstance(digest, (bytes, bytearray, memoryview)) or len(digest) != 32:
        raise ValueError("digest: expected the 32-byte SHA-256 digest")
    raw = _sig_bytes(sig)
    if _c_verify is not None:
        # a malformed sig still goes through as zeros, so a bad key raises the same way
        return bool(_c_verify(pt, bytes(digest), raw or bytes(64))) and raw is not None
    x, y = _check_point(pt)  # the key's fault before the signature's, as in the C core
    if raw is None:
        return False
    r = int.from_bytes(raw[:32], "big")
    s = int.from_bytes(raw[32:], "big")
    if not (0 < r < _N and 0 < s < _N):
        return False
    return _verify_py(x, y, int.from_bytes(bytes(digest), "big"), r, s)


def precheck(point, manifest):
    """Before downloading: SignatureError unless the manifest (ota.json dict) carries a signature
    in the right form made by this key (its "key_id", when present, names the key)."""
    if not isinstance(manifest, dict) or "sig" not in manifest:
        raise SignatureError("release is not signed (no \"sig\" in the manifest): refused")
    if _sig_bytes(manifest["sig"]) is None:
        raise SignatureError("release signature is malformed (want 128 hex digits: r||s)")
    kid = manifest.get("key_id")
    mine = key_id(point)
    if kid is not None and kid != mine:
        raise SignatureError("release signed by key %s, this device trusts key %s: refused" % (kid, mine))


def verify_release(point, manifest, digest, desc=None):
    """Check a downloaded firmware release; SignatureError (a ValueError) naming what is wrong.

    manifest: the ota.json dict; digest: SHA-256 (32 bytes) of the image as received (better:
    as read back from the slot); desc: the image's app descriptor (appimage's finish()/parse_desc()
    dict). The signature covers the image only, so the manifest's own fields are trusted only where
    they equal what the signed image says: its sha256 must be the digest, its version and
    secure_version (when present) the descriptor's."""
    precheck(point, manifest)
    want = manifest.get("sha256")
    if want is not None and str(want).lower() != hexstr(digest):
        raise SignatureError("image sha256 differs from the manifest's")
    if not verify_digest(point, digest, manifest["sig"]):
        raise SignatureError("bad signature: the image was not signed by key %s" % key_id(point))
    if desc is not None:
        if "version" in manifest and manifest["version"] != desc.get("version"):
            raise SignatureError("manifest says version %s but the signed image is %s"
                                 % (manifest["version"], desc.get("version")))
        if "secure_version" in manifest and manifest["secure_version"] != desc.get("secure_version"):
            raise SignatureError("manifest says secure_version %s but the signed image has %s"
                                 % (manifest["secure_version"], desc.get("secure_version")))
    return True


# ---------------------------------------------------------------- canonical JSON (app.json)

_ESC = {0x22: '\\"', 0x5C: "\\\\", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x08: "\\b", 0x0C: "\\f"}


def _jstr(s, out):
    # walked as bytes: the manifest comes from the network and is written out before its signature
    # is checked, and MicroPython keeps each character taken out of a str as a qstr for good
    out.append('"')
    b = s.encode("utf-8", "surrogatepass")   # (CPython: a lone surrogate as the 3 bytes MicroPython has)
    n = len(b)
    i = 0
    while i < n:
        j = i
        while j < n and 0x20 <= b[j] < 0x7F and b[j] != 0x22 and b[j] != 0x5C:
            j += 1
        if j > i:
            out.append(b[i:j].decode())   # a run of printable ASCII as it is
            i = j
            continue
        c = b[i]
        k = 1 if c < 0x80 else 2 if c < 0xE0 else 3 if c < 0xF0 else 4   # (the str's own UTF-8)
        if k > 1:
            c &= 0x7F >> k
            for m in range(i + 1, i + k):
                c = c << 6 | b[m] & 0x3F
        i += k
        if c in _ESC:
            out.append(_ESC[c])
        elif c < 0x10000:
            out.append("\\u%04x" % c)
        else:  # outside the BMP: a UTF-16 surrogate pair, as CPython writes it
            c -= 0x10000
            out.append("\\u%04x\\u%04x" % (0xD800 | (c >> 10), 0xDC00 | (c & 0x3FF)))
    out.append('"')


def _jval(v, out, depth):
    if depth > 16:
        raise ValueError("canonical JSON: nested too deep")
    if v is None:
        out.append("null")
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif isinstance(v, int):
        out.append(str(v))
    elif isinstance(v, str):
        _jstr(v, out)
    elif isinstance(v, (list, tuple)):
        out.append("[")
        for i, x in enumerate(v):
            if i:
                out.append(",")
            _jval(x, out, depth + 1)
        out.append("]")
    elif isinstance(v, dict):
        out.append("{")
        first = True
        for k in sorted(v):
            if not isinstance(k, str):
                raise ValueError("canonical JSON: keys must be strings")
            if not first:
                out.append(",")
            first = False
            _jstr(k, out)
            out.append(":")
            _jval(v[k], out, depth + 1)
        out.append("}")
    else:  # floats print differently on each runtime (single precision on the firmware)
        raise ValueError("canonical JSON: %s values are not allowed" % type(v).__name__)


def canonical_json(obj):
    """The bytes CPython's json.dumps(obj, sort_keys=True, separators=(",", ":")) gives, for
    dicts, lists, str, int, bool and None (floats are refused: runtimes print them differently)."""
    out = []
    _jval(obj, out, 0)
    return "".join(out).encode()


def manifest_digest(manifest):
    """SHA-256 of the canonical JSON of a manifest without its "sig": what its signature signs."""
    body = {}
    for k in manifest:
        if k != "sig":
            body[k] = manifest[k]
    return hashlib.sha256(canonical_json(body)).digest()


def verify_manifest(point, manifest):
    """True if an app.json dict carries a valid signature by point over the rest of it; False for
    anything else (unsigned, malformed, floats, another key). Then check each file's sha256."""
    if not isinstance(manifest, dict) or "sig" not in manifest:
        return False
    try:
        d = manifest_digest(manifest)
    except (ValueError, TypeError):
        return False
    return verify_digest(point, d, manifest["sig"])


# ---------------------------------------------------------------- the device's key


def default_pubkey():
    """The key this device trusts for OTA, as a point, or None: a key frozen into the firmware
    (iotutils._ota_key, from `make OTA_PUBKEY=...`) wins; else the provisioned one (NVS folder
    "ota", key "pubkey"). A frozen key cannot be replaced by anyone who can write NVS."""
    try:
        from iotutils._ota_key import PUBKEY
    except ImportError:
        PUBKEY = None
    if PUBKEY is not None:
        return load_pubkey(PUBKEY)
    try:
        from iotutils import store

        pem = store.get("ota", "pubkey")
    except Exception:  # no store on this runtime: nothing provisioned
        return None
    return load_pubkey(pem) if pem else None
