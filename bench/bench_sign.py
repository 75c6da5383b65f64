"""OTA signature check: what verifying a release's ECDSA P-256 signature costs on the device, next to
what the update already costs (hashing the image).

usage: python bench/bench_sign.py [--runs N]

In the `micropython` host runtime (the simulated device's 110 KB heap; stock MicroPython: the
pure-Python verifier of iotutils.sign) and, when FIRMWARE names a host firmware with _iotsig (or one
is built in build/unix), in that firmware too (the C core over mbedTLS, and the pure-Python verifier
on the same interpreter for a like-for-like ratio):
- verify: iotutils.sign.verify_digest on a fresh signature (median of N runs, gc.collect() first);
- SHA-256 of a 1.5 MB image in 4 KB blocks (the digest the update computes anyway; from RAM, so
  the network and flash are left out: this is the CPU part alone);
- peak heap: the smallest free MicroPython heap in which one verify still succeeds (the heap is
  filled with blocks until only that much is free, then verify runs; found by bisection). The
  garbage the big-int arithmetic leaves is collected as it goes, so this is the live peak, not the
  total allocated. The C core takes (almost) nothing from it: mbedTLS allocates with calloc, from
  the C heap (ESP-IDF's heap on the board); that peak is measured apart, with the core built
  against Debian's mbedTLS and calloc/free counted.
Numbers are for this PC; a board is slower (an ESP32 at 240 MHz: expect tens of times slower for
the pure-Python verifier; mbedTLS there uses the MPI accelerator). This is `make bench` material,
not a test.
"""
import argparse
import hashlib
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

IMAGE_BYTES = 1536 * 1024

WORKLOAD = r'''
import binascii, gc, hashlib, sys, time
from iotutils import sign

PT, D, SIG = [binascii.unhexlify(a) for a in sys.argv[1:4]]
RUNS = int(sys.argv[4])
IMAGE = int(sys.argv[5])
MODE = sys.argv[6]   # "py": the pure-Python verifier even where _iotsig exists; "c": _iotsig
if MODE == "py":
    sign._c_verify = None
elif sign._c_verify is None:
    print("NO_C")
    sys.exit(0)


def verify():
    return sign.verify_digest(PT, D, SIG)


def median_ms(fn, runs):
    out = []
    for _ in range(runs):
        gc.collect()
        t0 = time.ticks_us()
        ok = fn()
        out.append(time.ticks_diff(time.ticks_us(), t0) / 1000)
        assert ok
    out.sort()
    return out[len(out) // 2]


def sha_image():
    h = hashlib.sha256()
    buf = bytearray(4096)
    for i in range(IMAGE // 4096):
        buf[0] = i & 0xFF
        h.update(buf)
    return len(h.digest()) == 32


def attempt(room):
    gc.collect()
    filler = None
    size = 1 << 20
    while size >= 16:
        while gc.mem_free() - size - 64 > room:
            try:
                filler = (bytearray(size), filler)   # a chain: no list to grow
            except MemoryError:
                break
        size //= 2
    try:
        return verify()
    except MemoryError:
        return False
    finally:
        filler = None


def min_headroom():
    lo, hi = 0, 65536
    if not attempt(hi):
        return -1
    while hi - lo > 32:
        mid = (lo + hi) // 2
        if attempt(mid):
            hi = mid
        else:
            lo = mid
    return hi


assert verify()
t_verify = median_ms(verify, RUNS)
t_sha = median_ms(sha_image, max(3, RUNS // 3))
peak = min_headroom()
print("RESULT %.3f %.3f %d" % (t_verify, t_sha, peak))
'''


# mbedTLS allocates with calloc, outside the MicroPython heap (the unix port's libc heap; ESP-IDF's
# heap on the board): this driver counts the peak of those allocations for one verify, with the
# core built against Debian's libmbedtls (2.28) as tests/c/test_sigverify.py builds it
C_HEAP_DRIVER = r"""
#include <malloc.h>
#include <stdio.h>
#include "sigverify.h"
extern void *__libc_calloc(size_t, size_t);
extern void __libc_free(void *);
static size_t cur, peak, calls;
void *calloc(size_t n, size_t s) {
    void *p = __libc_calloc(n, s);
    if (p) {
        cur += malloc_usable_size(p);
        peak = cur > peak ? cur : peak;
        calls++;
    }
    return p;
}
void free(void *p) {
    if (p) {
        cur -= malloc_usable_size(p);
    }
    __libc_free(p);
}
static void unhex(const char *s, unsigned char *o, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(s + 2 * i, "%2x", &v);
        o[i] = (unsigned char)v;
    }
}
int main(int argc, char **argv) {
    unsigned char p[65], d[32], s[64];
    if (argc != 4) {
        return 2;
    }
    unhex(argv[1], p, 65);
    unhex(argv[2], d, 32);
    unhex(argv[3], s, 64);
    cur = peak = calls = 0;
    int r = sigverify_p256(p, d, s);
    printf("CHEAP %d %zu %zu %zu\n", r, peak, calls, cur);
    return 0;
}
"""


def c_heap(case, tmp):
    """(peak bytes, calloc calls) of one verify by the core over Debian's mbedTLS, or a reason string."""
    if not os.path.exists("/usr/include/mbedtls/ecdsa.h"):
        return "libmbedtls-dev not installed"
    src = os.path.join(tmp, "cheap.c")
    exe = os.path.join(tmp, "cheap")
    with open(src, "w") as f:
        f.write(C_HEAP_DRIVER)
    c_dir = os.path.join(ROOT, "c_modules", "iotutils")
    p = subprocess.run([os.environ.get("CC", "cc"), "-O2", "-I", c_dir, src, os.path.join(c_dir, "sigverify.c"), "-o",
                        exe, "-lmbedcrypto"], capture_output=True, text=True)
    if p.returncode:
        return "could not build the driver: " + p.stderr[-200:]
    out = subprocess.run([exe] + list(case), capture_output=True, text=True, timeout=60).stdout.split()
    if len(out) != 5 or out[1] != "0" or out[4] != "0":
        return "driver failed: %r" % out
    return int(out[2]), int(out[3])


def make_case():
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, utils

    k = ec.generate_private_key(ec.SECP256R1())
    pt = k.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    d = hashlib.sha256(b"bench image").digest()
    r, s = utils.decode_dss_signature(k.sign(d, ec.ECDSA(utils.Prehashed(hashes.SHA256()))))
    return pt.hex(), d.hex(), "%064x%064x" % (r, s)


def run(cmd, env, case, runs, mode, tmp):
    script = os.path.join(tmp, "bench_sign_device.py")
    with open(script, "w") as f:
        f.write(WORKLOAD)
    out = subprocess.run(cmd + [script] + list(case) + [str(runs), str(IMAGE_BYTES), mode], env=env,
                         capture_output=True, text=True, timeout=600, cwd=tmp)
    for line in out.stdout.splitlines():
        if line == "NO_C":
            return None
        if line.startswith("RESULT "):
            f = line.split()
            return {"verify_ms": float(f[1]), "sha_ms": float(f[2]), "peak": int(f[3])}
    raise RuntimeError("benchmark run failed:\n%s%s" % (out.stdout, out.stderr))


def report(rows):
    print("\n  %-44s %11s %14s %9s %12s" % ("", "verify (ms)", "SHA-256 1.5MB", "ratio", "peak heap"))
    for label, r in rows:
        peak = "> 64 KB" if r["peak"] < 0 else "<= 32 B" if r["peak"] <= 32 else "%d B" % r["peak"]
        print("  %-44s %11.2f %11.1f ms %8.2fx %12s" % (label, r["verify_ms"], r["sha_ms"],
                                                        r["verify_ms"] / r["sha_ms"], peak))
    print("  (ratio: one verify / hashing the 1.5 MB image the update hashes anyway)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    import mpcode

    case = make_case()
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([os.path.join(ROOT, "modules"), ".frozen"]))

    def cmd(exe):
        return [exe, "-X", "heapsize=" + mpcode.runtime_setup(exe, "110wK")[0]]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        mpy = os.path.join(ROOT, ".venv", "bin", "micropython")
        rows.append(("micropython host runtime, pure Python", run(cmd(mpy if os.path.exists(mpy) else "micropython"),
                                                                 env, case, args.runs, "py", tmp)))
        fw = os.environ.get("FIRMWARE")
        built = os.path.join(ROOT, "build", "unix", "micropython")
        if not fw and os.path.exists(built):
            fw = built
        note = "(C core: set FIRMWARE=<host firmware built with _iotsig> (make BOARD=UNIX) to include it)"
        if fw:
            fw = os.path.abspath(fw)
            try:
                c = run(cmd(fw), env, case, args.runs, "c", tmp)
                if c is None:
                    note = "(%s has no _iotsig: rebuild it with make BOARD=UNIX)" % fw
                else:
                    rows.append(("host firmware, _iotsig (mbedTLS)", c))
                    rows.append(("host firmware, pure Python", run(cmd(fw), env, case, args.runs, "py", tmp)))
                    note = None
            except RuntimeError as e:
                note = "(host firmware: could not run: %s)" % str(e).splitlines()[0]
        heap = c_heap(case, tmp)
    report(rows)
    if note:
        print("\n" + note)
    if isinstance(heap, tuple):
        print("\n  the C core's own heap (mbedTLS calloc, outside the MicroPython heap; Debian's mbedTLS 2.28):")
        print("  peak %d B in %d calloc calls per verify, all freed" % heap)
    else:
        print("\n  (the C core's own heap: not measured: %s)" % heap)


if __name__ == "__main__":
    main()
