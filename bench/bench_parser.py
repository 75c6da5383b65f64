"""HTTP request parser throughput: C core vs llhttp vs the pure-Python parser (CPython, MicroPython).

usage: python bench/bench_parser.py [--seconds S] [--sdist httptools-0.9.0.tar.gz]

All four parse the same realistic browser request mix (page loads with many headers, static assets,
XHR JSON posts with a body, a curl call). The C core and llhttp run in tiny -O2 C drivers built
under build/bench/ at bench time; llhttp is compiled from the httptools 0.9.0 sdist
(`pip download --no-deps --no-binary :all: httptools==0.9.0`, fetched into build/bench/ if not
given). Nothing built here is committed. Prints MB/s and ratios; target: C core >= 1.0x llhttp.
This is `make bench` material, not a test.
"""
import argparse
import glob
import os
import subprocess
import sys
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C_DIR = os.path.join(ROOT, "c_modules", "iotutils")
OUT = os.path.join(ROOT, "build", "bench")
sys.path.insert(0, os.path.join(ROOT, "modules"))

CHROME = (b"Host: 192.168.4.1\r\nConnection: keep-alive\r\nCache-Control: max-age=0\r\n"
          b"sec-ch-ua: \"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\"\r\n"
          b"sec-ch-ua-mobile: ?0\r\nsec-ch-ua-platform: \"Linux\"\r\nUpgrade-Insecure-Requests: 1\r\n"
          b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
          b"Chrome/124.0.0.0 Safari/537.36\r\n"
          b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
          b"image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7\r\n"
          b"Sec-Fetch-Site: none\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-User: ?1\r\nSec-Fetch-Dest: document\r\n"
          b"Accept-Encoding: gzip, deflate\r\nAccept-Language: en-US,en;q=0.9,de;q=0.8\r\n"
          b"Cookie: session=4f9a8c2e1b7d4e6f; theme=dark\r\n")
FIREFOX = (b"Host: lamp.local\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0\r\n"
           b"Accept: image/avif,image/webp,*/*\r\nAccept-Language: en-US,en;q=0.5\r\n"
           b"Accept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\nReferer: http://lamp.local/\r\n"
           b"Sec-Fetch-Dest: image\r\nSec-Fetch-Mode: no-cors\r\nSec-Fetch-Site: same-origin\r\n")
JSON_BODY = b'{"on": true, "bri": 180, "rgb": [255, 128, 0], "name": "Desk lamp"}'


def request_mix():
    mix = [
        b"GET / HTTP/1.1\r\n" + CHROME + b"\r\n",
        b"GET /static/app.css HTTP/1.1\r\n" + FIREFOX + b"\r\n",
        b"GET /static/app.js?v=1.4.0 HTTP/1.1\r\n" + FIREFOX + b"\r\n",
        b"GET /favicon.ico HTTP/1.1\r\n" + FIREFOX + b"\r\n",
        b"POST /api/led/1 HTTP/1.1\r\n" + CHROME + b"Content-Type: application/json\r\nContent-Length: "
        + str(len(JSON_BODY)).encode() + b"\r\nOrigin: http://192.168.4.1\r\n\r\n" + JSON_BODY,
        b"GET /api/status HTTP/1.1\r\nHost: 192.168.4.1\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
    ]
    return mix


DRIVER_COMMON = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    fseek(f, 0, SEEK_END); *n = (size_t)ftell(f); fseek(f, 0, SEEK_SET);
    char *b = malloc(*n);
    if (fread(b, 1, *n, f) != *n) { exit(2); }
    fclose(f);
    return b;
}
static double now(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
"""

CORE_DRIVER = DRIVER_COMMON + r"""
#include "httpparse.h"
int main(int argc, char **argv) {
    size_t n; char *buf = slurp(argv[1], &n); double secs = atof(argv[2]);
    int32_t out[HP_OUT_FIXED + 4 * 64];
    long iters = 0, reqs = 0; double t0 = now(), t;
    do {
        for (int k = 0; k < 64; k++) {
            size_t pos = 0;
            while (pos < n) {
                int r = httpparse_head(buf + pos, n - pos, out, sizeof(out) / sizeof(out[0]));
                if (r <= 0) { fprintf(stderr, "parse failed %d at %zu\n", r, pos); return 1; }
                pos += (size_t)r + (size_t)out[HP_OUT_CONTENT_LENGTH];
                reqs++;
            }
            iters++;
        }
        t = now() - t0;
    } while (t < secs);
    printf("%f %ld\n", (double)n * iters / t / 1e6, reqs);
    return 0;
}
"""

LLHTTP_DRIVER = DRIVER_COMMON + r"""
#include "llhttp.h"
// record offsets like the core does, so both do comparable work
static const char *base; static int32_t rec[4 * 64 + 8]; static int nrec; static long msgs;
static int on_data(llhttp_t *p, const char *at, size_t len) {
    (void)p; if (nrec < 4 * 64) { rec[nrec++] = (int32_t)(at - base); rec[nrec++] = (int32_t)len; } return 0;
}
static int on_done(llhttp_t *p) { (void)p; nrec = 0; msgs++; return 0; }
int main(int argc, char **argv) {
    size_t n; char *buf = slurp(argv[1], &n); double secs = atof(argv[2]);
    base = buf;
    llhttp_settings_t s; llhttp_settings_init(&s);
    s.on_url = on_data; s.on_header_field = on_data; s.on_header_value = on_data; s.on_body = on_data;
    s.on_message_complete = on_done;
    llhttp_t p;
    long iters = 0; double t0 = now(), t;
    do {
        for (int k = 0; k < 64; k++) {
            llhttp_init(&p, HTTP_REQUEST, &s);
            if (llhttp_execute(&p, buf, n) != HPE_OK) { fprintf(stderr, "llhttp: %s\n", llhttp_get_error_reason(&p)); return 1; }
            iters++;
        }
        t = now() - t0;
    } while (t < secs);
    printf("%f %ld\n", (double)n * iters / t / 1e6, msgs);
    return 0;
}
"""

MP_BENCH = r"""
import sys, time
from array import array
from iotutils.http import parse_head, OUT_FIXED
reqs = []
with open(sys.argv[1], "rb") as f:
    data = f.read()
n = len(data)
out = array("i", [0] * (OUT_FIXED + 4 * 64))
pos = 0
while pos < n:
    r = parse_head(data[pos:], n - pos, out)
    reqs.append(data[pos:pos + r + out[7]])
    pos += r + out[7]
secs = float(sys.argv[2])
clock = time.ticks_us if hasattr(time, "ticks_us") else None
t0 = time.ticks_us() if clock else time.perf_counter()
done = 0
while True:
    for req in reqs:
        if parse_head(req, len(req), out) <= 0:
            raise SystemExit("parse failed")
    done += 1
    el = time.ticks_diff(time.ticks_us(), t0) / 1e6 if clock else time.perf_counter() - t0
    if el >= secs:
        break
print(n * done / el / 1e6)
"""


def cc(out, sources, includes):
    cmd = [os.environ.get("CC", "cc"), "-O2", "-std=c99", "-D_POSIX_C_SOURCE=200809L", "-o", out] + \
          ["-I" + i for i in includes] + sources
    subprocess.run(cmd, check=True)
    return out


def llhttp_tree(sdist):
    if not sdist:
        found = glob.glob(os.path.join(OUT, "httptools-0.9.0.tar.gz"))
        if not found:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                            "-d", OUT, "httptools==0.9.0"], check=True)
        sdist = os.path.join(OUT, "httptools-0.9.0.tar.gz")
    dest = os.path.join(OUT, "httptools-src")
    if not os.path.isdir(dest):
        with tarfile.open(sdist) as tf:
            members = [m for m in tf.getmembers() if "/vendor/llhttp/" in m.name]
            tf.extractall(dest, members=members)
    return glob.glob(os.path.join(dest, "*", "vendor", "llhttp"))[0]


def run_driver(exe, mix_path, seconds):
    out = subprocess.run([exe, mix_path, str(seconds)], check=True, capture_output=True, text=True).stdout.split()
    return float(out[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of the C drivers (best kept)")
    ap.add_argument("--sdist", help="httptools-0.9.0.tar.gz (default: build/bench/, downloaded if missing)")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    mix = request_mix()
    mix_path = os.path.join(OUT, "mix.bin")
    with open(mix_path, "wb") as f:
        f.write(b"".join(mix * 8))
    size = os.path.getsize(mix_path)

    results = {}
    src = os.path.join(OUT, "core_driver.c")
    with open(src, "w") as f:
        f.write(CORE_DRIVER)
    exe = cc(os.path.join(OUT, "core_driver"), [src, os.path.join(C_DIR, "httpparse.c")], [C_DIR])
    core_exe = exe

    ll = llhttp_tree(args.sdist)
    src = os.path.join(OUT, "llhttp_driver.c")
    with open(src, "w") as f:
        f.write(LLHTTP_DRIVER)
    exe = cc(os.path.join(OUT, "llhttp_driver"), [src] + sorted(glob.glob(os.path.join(ll, "src", "*.c"))),
             [os.path.join(ll, "include")])
    # alternate the two C drivers and keep each one's best round: fair on a shared, noisy machine
    core_runs, ll_runs = [], []
    for _ in range(args.rounds):
        core_runs.append(run_driver(core_exe, mix_path, args.seconds))
        ll_runs.append(run_driver(exe, mix_path, args.seconds))
    results["C core (httpparse.c)"] = max(core_runs)
    results["llhttp 9 (httptools 0.9.0)"] = max(ll_runs)

    script = os.path.join(OUT, "mp_bench.py")
    with open(script, "w") as f:
        f.write(MP_BENCH)
    py = subprocess.run([sys.executable, script, mix_path, str(args.seconds)], check=True, capture_output=True,
                        text=True, env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "modules")))
    results["Python parser, CPython %d.%d" % sys.version_info[:2]] = float(py.stdout.split()[-1])
    mpy = os.path.join(ROOT, ".venv", "bin", "micropython")
    if os.path.exists(mpy):
        mp = subprocess.run([mpy, script, mix_path, str(args.seconds)], check=True, capture_output=True, text=True,
                            env=dict(os.environ, MICROPYPATH=os.path.join(ROOT, "modules")))
        results["Python parser, MicroPython (host runtime)"] = float(mp.stdout.split()[-1])

    core = results["C core (httpparse.c)"]
    ref = results["llhttp 9 (httptools 0.9.0)"]
    print("request mix: %d requests, %d bytes per pass (%d B average)" % (len(mix) * 8, size, size // (len(mix) * 8)))
    print("%-44s %10s %10s %10s" % ("parser", "MB/s", "vs llhttp", "C core x"))
    for name, mbs in results.items():
        print("%-44s %10.1f %9.2fx %9.1fx" % (name, mbs, mbs / ref, core / mbs))
    print("C core / llhttp = %.2fx (target >= 1.0x): %s" % (core / ref, "OK" if core >= ref else "BELOW TARGET"))


if __name__ == "__main__":
    main()
