"""The C signature core (c_modules/iotutils/sigverify.c over mbedTLS), loaded with ctypes.

Built against Debian's libmbedtls-dev (2.28: mbedtls_ecdsa_verify has the same signature and rules
in the 3.6 that MicroPython v1.28.0 and ESP-IDF v5.5 link; the host firmware build compiles it
against 3.6, and with FIRMWARE=<host firmware> the _iotsig binding is tested too). Checked against
the corpus of tests/corpus/sign (made with `cryptography`), fresh signatures from `cryptography`,
a flip of every bit of the signature, the digest and the point, r/s = 0 and n, points off the
curve, and the pure-Python verifier of modules/iotutils/sign.py on the same inputs; once more
under ASan/UBSan.
"""
import ctypes
import hashlib
import json
import os
import subprocess

import pytest

from cbuild import C_DIR, WARN_FLAGS, build_shared
from conftest import ROOT, micropython_cmd, micropython_exe, micropython_path

from iotutils import sign

OK, BAD_SIG, BAD_KEY, NO_MEM, ERROR = 0, 1, -1, -2, -3
N = sign._N
P = sign._P
CORPUS = os.path.join(ROOT, "tests", "corpus", "sign")
MBEDTLS_HEADER = "/usr/include/mbedtls/ecdsa.h"
# --no-as-needed: the core's only user of libmbedcrypto is itself, so a linker that drops unused
# libraries by default would leave the symbols unresolved at load time
LINK = ["-Wl,--no-as-needed", "-lmbedcrypto"]


@pytest.fixture(scope="module")
def lib():
    if not os.path.exists(MBEDTLS_HEADER):
        pytest.skip("libmbedtls-dev is not installed (apt-get install libmbedtls-dev; scripts/debian-packages.txt)")
    L = build_shared("sigverify", ["sigverify.c"], LINK)
    L.sigverify_p256.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p]
    L.sigverify_p256.restype = ctypes.c_int
    return L


def verify(L, point, digest, sig):
    assert len(point) == 65 and len(digest) == 32 and len(sig) == 64
    return L.sigverify_p256(bytes(point), bytes(digest), bytes(sig))


def _vectors():
    with open(os.path.join(CORPUS, "vectors.json")) as f:
        return json.load(f)


def _flip(b, bit):
    b = bytearray(b)
    b[bit >> 3] ^= 0x80 >> (bit & 7)
    return bytes(b)


def _fresh(n=8):
    """n (point, digest, sig) made now by cryptography."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, utils

    out = []
    for i in range(n):
        k = ec.generate_private_key(ec.SECP256R1())
        pt = k.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        d = hashlib.sha256(os.urandom(16) + bytes([i])).digest()
        r, s = utils.decode_dss_signature(k.sign(d, ec.ECDSA(utils.Prehashed(hashes.SHA256()))))
        out.append((pt, d, r.to_bytes(32, "big") + s.to_bytes(32, "big")))
    return out


def _rs(r, s):
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def test_corpus(lib):
    for v in _vectors():
        got = verify(lib, bytes.fromhex(v["Q"]), bytes.fromhex(v["digest"]), bytes.fromhex(v["R"] + v["S"]))
        assert got == (OK if v["Result"] == "P" else BAD_SIG), v["note"]


def test_fresh_signatures_from_cryptography(lib):
    for pt, d, sig in _fresh(16):
        assert verify(lib, pt, d, sig) == OK
        r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
        assert verify(lib, pt, d, _rs(r, N - s)) == OK  # high s: accepted, as in sign.py
        assert verify(lib, pt, d, _rs(s, r)) == BAD_SIG


def test_every_bit_flip_refused(lib):
    pt, d, sig = _fresh(1)[0]
    for bit in range(512):
        assert verify(lib, pt, d, _flip(sig, bit)) == BAD_SIG, ("sig", bit)
    for bit in range(256):
        assert verify(lib, pt, _flip(d, bit), sig) == BAD_SIG, ("digest", bit)
    for bit in range(520):
        # a flipped point is off the curve (or not 04-prefixed): reported as a bad key
        assert verify(lib, _flip(pt, bit), d, sig) == BAD_KEY, ("point", bit)


def test_r_s_out_of_range(lib):
    pt, d, sig = _fresh(1)[0]
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    for rr, ss in ((0, s), (r, 0), (0, 0), (N, s), (r, N), (N + 1, s), (r, N + 1), ((1 << 256) - 1, s),
                   (r, (1 << 256) - 1)):
        assert verify(lib, pt, d, _rs(rr, ss)) == BAD_SIG, (rr, ss)
    assert verify(lib, pt, d, _rs(r, s)) == OK


def test_bad_points(lib):
    pt, d, sig = _fresh(1)[0]
    x, y = pt[1:33], int.from_bytes(pt[33:], "big")
    bad = {
        "y + 1": b"\x04" + x + ((y + 1) % P).to_bytes(32, "big"),
        "zeros": b"\x04" + bytes(64),
        "x = p": b"\x04" + P.to_bytes(32, "big") + pt[33:],
        "y + p (not reduced)": b"\x04" + x + ((y + P) % (1 << 256)).to_bytes(32, "big"),
        "prefix 02": b"\x02" + pt[1:],
        "prefix 03": b"\x03" + pt[1:],
        "prefix 00": b"\x00" + pt[1:],
        "prefix 06 (hybrid)": b"\x06" + pt[1:],
        "all ff": b"\xff" * 65,
    }
    for name, p in bad.items():
        assert verify(lib, p, d, sig) == BAD_KEY, name
    # -y: a valid point, another key: the signature just does not verify
    neg = b"\x04" + x + (P - y).to_bytes(32, "big")
    assert verify(lib, neg, d, sig) == BAD_SIG


def test_same_answers_as_pure_python(lib):
    cases = []
    for pt, d, sig in _fresh(4):
        cases.append((pt, d, sig))
        cases.append((pt, _flip(d, 100), sig))
        cases.append((pt, d, _flip(sig, 300)))
    for pt, d, sig in cases:
        c = verify(lib, pt, d, sig)
        x, y = sign._check_point(pt)
        r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
        assert (c == OK) == sign._verify_py(x, y, int.from_bytes(d, "big"), r, s)


ASAN_DRIVER = r"""
// Reads lines "point digest sig expected" (hex, decimal) and checks sigverify_p256 on each.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sigverify.h"

static int unhex(const char *s, unsigned char *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1) {
            return -1;
        }
        out[i] = (unsigned char)v;
    }
    return 0;
}

int main(void) {
    char p[200], d[100], s[200];
    int want, n = 0;
    while (scanf("%199s %99s %199s %d", p, d, s, &want) == 4) {
        // exact-size heap copies, so ASan sees any read past the end
        unsigned char *pb = malloc(65), *db = malloc(32), *sb = malloc(64);
        if (!pb || !db || !sb || unhex(p, pb, 65) || unhex(d, db, 32) || unhex(s, sb, 64)) {
            return 2;
        }
        int got = sigverify_p256(pb, db, sb);
        free(pb);
        free(db);
        free(sb);
        if (got != want) {
            printf("case %d: got %d, want %d\n", n, got, want);
            return 1;
        }
        n++;
    }
    printf("ran %d cases\n", n);
    return 0;
}
"""


def test_under_asan_ubsan(lib, tmp_path):
    cc = os.environ.get("CC", "cc")
    src = tmp_path / "driver.c"
    src.write_text(ASAN_DRIVER)
    exe = tmp_path / "sig_driver"
    cmd = [cc] + WARN_FLAGS + ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                               "-fno-omit-frame-pointer", "-I", C_DIR, str(src), os.path.join(C_DIR, "sigverify.c"),
                               "-o", str(exe)] + LINK
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode and "sanitize" in proc.stderr:
        pytest.skip("compiler without ASan/UBSan: " + proc.stderr[-300:])
    assert proc.returncode == 0, proc.stderr
    lines = []
    for v in _vectors():
        lines.append("%s %s %s %d" % (v["Q"], v["digest"], v["R"] + v["S"], OK if v["Result"] == "P" else BAD_SIG))
    pt, d, sig = _fresh(1)[0]
    for bit in range(0, 520, 3):
        lines.append("%s %s %s %d" % (_flip(pt, bit).hex(), d.hex(), sig.hex(), BAD_KEY))
    proc = subprocess.run([str(exe)], input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "runtime error" not in proc.stderr
    assert ("ran %d cases" % len(lines)) in proc.stdout


# ---- the binding, on a host firmware built with it (make BOARD=UNIX; FIRMWARE=build/unix/micropython)

BINDING_CHECK = r"""
import _iotsig, json
from iotutils import sign
assert _iotsig.abi == 1
assert sign._c_verify is _iotsig.verify
with open(%(corpus)r) as f:
    vs = json.load(f)
import binascii
h = binascii.unhexlify
for v in vs:
    got = _iotsig.verify(h(v["Q"]), h(v["digest"]), h(v["R"] + v["S"]))
    assert got is (v["Result"] == "P"), v["note"]
v = vs[0]
pt, d, sig = h(v["Q"]), h(v["digest"]), h(v["R"] + v["S"])
for args in ((pt[:64], d, sig), (pt, d[:31], sig), (pt, d, sig + b"0"), (pt[:64] + b"\x00", d, sig),
             (b"\x02" + pt[1:], d, sig)):
    try:
        _iotsig.verify(*args)
    except ValueError as e:
        print("ValueError", e)
    else:
        raise AssertionError("accepted %%r" %% (args,))
for bad in (None, 1, [4] * 65):
    try:
        _iotsig.verify(bad, d, sig)
    except TypeError:
        pass
print("BINDING OK")
"""


def test_binding_on_host_firmware(tmp_path):
    exe = micropython_exe()
    if not os.environ.get("FIRMWARE"):
        pytest.skip("the _iotsig binding is in the host firmware only: make BOARD=UNIX, then FIRMWARE=%s"
                    % os.path.join(ROOT, "build", "unix", "micropython"))
    probe = subprocess.run([exe, "-c", "import _iotsig"], capture_output=True, text=True)
    if probe.returncode:
        pytest.fail("FIRMWARE=%s has no _iotsig (built before sigverify.c was added?)" % exe)
    script = tmp_path / "check.py"
    script.write_text(BINDING_CHECK % {"corpus": os.path.join(CORPUS, "vectors.json")})
    env = dict(os.environ, MICROPYPATH=micropython_path())
    proc = subprocess.run(micropython_cmd() + [str(script)], capture_output=True, text=True, env=env, timeout=120,
                          cwd=str(tmp_path))
    assert proc.returncode == 0 and "BINDING OK" in proc.stdout, proc.stdout + proc.stderr
    assert proc.stdout.count("ValueError") == 5, proc.stdout
