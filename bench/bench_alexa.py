"""Alexa discovery: time from an SSDP M-SEARCH to the device's first answer, the Hue light list
fetch, and heap used per device, for 1, 16 and 32 devices on a simulated device (110wK heap model).

usage: python bench/bench_alexa.py [--rounds R] [--sizes 1,16,32]

Each size boots tests/apps/alexa_app.py with ALEXA_LIGHTS=N; the app measures gc.mem_alloc() across
its add() calls. Searches go to 239.255.255.250:1900 over loopback, as Echo's do on a LAN:
MX: 0 shows the processing time, MX: 3 (what Echo sends) the random UPnP spread (capped at
SSDP.max_delay_ms = 1000 ms). Targets: <= 512 bytes per device; the list streamed (chunked).
Printed, never asserted: this is `make bench` material, not a test.
"""
import argparse
import http.client
import json
import os
import socket
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from simdev import SimDevice  # noqa: E402

APP = os.path.join(ROOT, "tests", "apps", "alexa_app.py")
TARGET_HEAP = 512


def search_once(port, mx, timeout=4.0):
    """Seconds from sending an M-SEARCH to the first answer from the device on host port `port`."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", 0))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
        msg = ("M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: %d\r\n"
               "ST: urn:schemas-upnp-org:device:basic:1\r\n\r\n" % mx).encode()
        want = ("http://127.0.0.1:%d/description.xml" % port).encode()
        t0 = time.perf_counter()
        s.sendto(msg, ("239.255.255.250", 1900))
        deadline = t0 + timeout
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                return None
            s.settimeout(left)
            try:
                data = s.recv(2048)
            except socket.timeout:
                return None
            if want in data:
                return time.perf_counter() - t0
    finally:
        s.close()


def fetch(port, method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        t0 = time.perf_counter()
        c.request(method, path, body=body)
        r = c.getresponse()
        data = r.read()
        return time.perf_counter() - t0, r.getheader("Transfer-Encoding"), data
    finally:
        c.close()


def chunk_sizes(port, path):
    """The chunk sizes of a chunked answer, read off the wire: the largest is the most the device held."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
    data = b""
    while True:
        part = s.recv(65536)
        if not part:
            break
        data += part
    s.close()
    body = data.split(b"\r\n\r\n", 1)[1]
    sizes = []
    while body:
        line, _, body = body.partition(b"\r\n")
        n = int(line, 16)
        if n == 0:
            break
        sizes.append(n)
        body = body[n + 2:]
    return sizes


def ms(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "  (none)"
    return "%7.1f /%7.1f" % (statistics.median(xs) * 1000, max(xs) * 1000)


def run(n, rounds, tmp):
    dev = SimDevice(os.path.join(tmp, "n%d" % n), app=APP, extra_env={"ALEXA_LIGHTS": str(n)}).start()
    try:
        heap = int(dev.wait_line(r"heap per device: (\d+)", timeout=60).group(1))
        dev.wait_line(r"ALEXA READY", timeout=60)
        dev.wait_http()
        fast = [search_once(dev.port, 0) for _ in range(rounds)]
        echo = [search_once(dev.port, 3) for _ in range(rounds)]
        fetch(dev.port, "GET", "/test/pair?seconds=60")     # the owner opens Hue pairing (the app's button)
        _, _, body = fetch(dev.port, "POST", "/api", b'{"devicetype": "bench"}')
        user = json.loads(body)[0]["success"]["username"]
        lists = []
        size = 0
        enc = None
        for _ in range(rounds):
            t, enc, data = fetch(dev.port, "GET", "/api/%s/lights" % user)
            lists.append(t)
            size = len(data)
        sizes = chunk_sizes(dev.port, "/api/%s/lights" % user)
        return heap, fast, echo, lists, size, enc, max(sizes) if sizes else size
    finally:
        dev.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--sizes", default="1,16,32")
    args = ap.parse_args()
    import tempfile
    tmp = tempfile.mkdtemp(prefix="bench-alexa-")
    print("devices | heap/device (target %d B) | M-SEARCH->reply MX=0 ms med/max | MX=3 (Echo) ms med/max | "
          "light list ms med/max, bytes, encoding | largest piece held (ratio to the whole list)"
          % TARGET_HEAP)
    for n in [int(x) for x in args.sizes.split(",")]:
        heap, fast, echo, lists, size, enc, piece = run(n, args.rounds, tmp)
        print("%7d | %5d B  (%.2fx target)       | %s                 | %s         | %s, %d B, %s | %d B (%.2fx)"
              % (n, heap, heap / TARGET_HEAP, ms(fast), ms(echo), ms(lists), size, enc or "length", piece,
                 piece / size), flush=True)
    print("lost searches (no answer within 4 s) count as missing above; ratios < 1.00x are under target")


if __name__ == "__main__":
    main()
