"""The heap under sustained use, side by side: what an idle device makes in garbage, and the largest
free block after a long stretch of the traffic a smart plug lives with, for the same device
(tests/apps/device_bench.py: Wi-Fi with the setup portal up, web server + admin page, OTA with
auto-update, Alexa with a Hue light and a WeMo socket).

usage: python bench/bench_heap_use.py [--before REV] [--rounds N] [--runtime PATH]

- before: the tree at REV (default 5a38069, the last commit before the idle loops stopped making
  garbage and the device began to collect when it falls idle): its modules and simulator (with this
  tree's power watcher, which no longer makes garbage of its own), this tree's app; its host
  firmware too when MICROPY_DIR names a MicroPython tree (bench_memory.py's build cache).
- after: this tree; and this tree with the idle collection off (Device.tidy_idle_ms = 0), to show
  what each part does.
- idle garbage: the app's own "HEAP free=N garbage=G" lines over 6 s of rest (G: what the heap
  gained in a second before the app's collection), median, in the chip's bytes.
- sustained use: N rounds (default 120) of what Alexa and Home Assistant do to a plug, a quarter of
  a second apart: the Hue light list, a state change, the light; WeMo GetBinaryState and
  SetBinaryState; an SSDP search every fifth round; the admin page's status every tenth. Then the
  largest free block, read exactly by the firmware's C module (a bisection elsewhere), in the
  chip's KB. The app collects nothing of its own there (IOTUTILS_BENCH_QUIET): only the runtime's
  and the device's own collections run.
- the admin page driven without rest: N/2 rounds (default 60) of every tab of the page (status,
  memory, Wi-Fi, variables, OTA, Alexa, MQTT, session), a variable edit and a refused one, a delete
  of a missing variable, an Alexa pairing, an update check, the OTA settings; a Wi-Fi scan and an export
  every third round, a wrong and a right login every tenth; 0.25 s apart. Then the largest free block.
Issue #16's target for the largest block after use is 16 KB on the chip. Printed, never asserted.
"""
import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_memory as bm  # (the simulator runner, tree export and firmware cache)

APP = os.path.join(bm.ROOT, "tests", "apps", "device_bench.py")
SOAP = ('<?xml version="1.0"?><s:Envelope><s:Body><u:%s>%s</u:%s></s:Body></s:Envelope>')


def _soap(port, action, inner=""):
    body = SOAP % (action, inner, action)
    return requests.post("http://127.0.0.1:%d/upnp/control/basicevent1" % port, data=body, timeout=10,
                         headers={"SOAPACTION": '"urn:Belkin:service:basicevent:1#%s"' % action,
                                  "Content-Type": "text/xml", "Connection": "close"})


def _boot(tree, runtime, env):
    state = tempfile.mkdtemp(prefix="benchheap-")
    sim = bm.Sim(tree, state, runtime, env, None, None, None, APP)
    sim.state = state
    sim.wait(r"heap free after start", 90)
    time.sleep(2.5)   # the portal settles; the first auto-update check fails fast
    return sim


def _stop(sim):
    sim.stop()
    shutil.rmtree(sim.state, ignore_errors=True)


def idle_garbage(tree, runtime):
    """Median bytes a second the idle device adds to its heap (this runtime's bytes)."""
    sim = _boot(tree, runtime, {})
    try:
        since = len(sim.lines)
        time.sleep(6.5)
        got = [int(x) for x in _matches(sim, r"HEAP free=\d+ garbage=(-?\d+)", since)]
        got = [g for g in got[1:] if g >= 0]   # the first counts from boot; < 0: the runtime collected
        return statistics.median(got) if got else None
    finally:
        _stop(sim)


def _matches(sim, pattern, since):
    import re
    return [m.group(1) for m in (re.search(pattern, line) for line in sim.lines[since:]) if m]


def sustained(tree, runtime, rounds, tidy=True):
    """The largest free block (this runtime's bytes) after `rounds` of Alexa and Home Assistant
    traffic, and how many idle collections the device made (None: a tree without them)."""
    env = {"IOTUTILS_BENCH_QUIET": "1"}
    if not tidy:
        env["IOTUTILS_BENCH_TIDY"] = "0"
    sim = _boot(tree, runtime, env)
    try:
        s = bm.session(sim)
        r = s.put(sim.url("/admin/api/alexa/pairing"), json={"seconds": 300}, timeout=10)
        r.raise_for_status()
        r = requests.post(sim.url("/api"), json={"devicetype": "bench#echo"}, timeout=10)
        user = r.json()[0]["success"]["username"]
        wemo = sim.port + 3   # device port 49153 (scripts/sim.py: 49152+k -> N+2+k)
        search = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        search.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        close = {"Connection": "close"}
        for i in range(rounds):
            requests.get(sim.url("/api/%s/lights" % user), headers=close, timeout=10).raise_for_status()
            requests.put(sim.url("/api/%s/lights/1/state" % user), json={"on": bool(i % 2), "bri": i % 254 + 1},
                         headers=close, timeout=10).raise_for_status()
            requests.get(sim.url("/api/%s/lights/1" % user), headers=close, timeout=10).raise_for_status()
            _soap(wemo, "GetBinaryState").raise_for_status()
            _soap(wemo, "SetBinaryState", "<BinaryState>%d</BinaryState>" % (i % 2)).raise_for_status()
            if i % 5 == 0:
                search.sendto(b'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\n'
                              b"MX: 1\r\nST: ssdp:all\r\n\r\n", ("239.255.255.250", 1900))
            if i % 10 == 0:
                s.get(sim.url("/admin/api/status"), timeout=10).raise_for_status()
            time.sleep(0.25)
        search.close()
        time.sleep(1.5)
        heap = s.get(sim.url("/admin/api/memory?largest=1"), timeout=10).json()["heap"]
        return heap["largest"], heap.get("tidied")
    finally:
        _stop(sim)


def admin_use(tree, runtime, rounds):
    """The largest free block (this runtime's bytes) after `rounds` of the admin page's requests."""
    sim = _boot(tree, runtime, {"IOTUTILS_BENCH_QUIET": "1"})
    try:
        s = bm.session(sim)
        api = sim.url("/admin/api/")
        for i in range(rounds):
            for p in ("status", "memory", "wifi", "vars", "vars/wifi", "ota", "alexa", "mqtt", "session"):
                s.get(api + p, timeout=20)
            if i % 3 == 0:
                s.get(api + "wifi/scan", timeout=20)
                s.get(api + "export", timeout=20)
            s.put(api + "vars/bench/on", json={"value": bool(i % 2)}, timeout=20)
            s.put(api + "vars/bench/on", json={"value": "maybe"}, timeout=20)   # refused: not a bool
            s.delete(api + "vars/bench/missing%d" % i, timeout=20)
            s.put(api + "alexa/pairing", json={"seconds": 60 + i}, timeout=20)
            s.post(api + "ota/check", json={}, timeout=20)
            s.put(api + "ota/settings", json={"auto": True, "channel": "release"}, timeout=20)
            if i % 10 == 0:
                requests.post(api + "login", json={"password": "wrong%d" % i}, timeout=20)
                r = s.post(api + "login", json={"password": bm.PASSWORD}, timeout=20)
                if r.status_code == 200:
                    s.headers["X-CSRF-Token"] = r.json().get("csrf", "")
            time.sleep(0.25)
        time.sleep(1.5)
        return s.get(api + "memory?largest=1", timeout=10).json()["heap"]["largest"]
    finally:
        _stop(sim)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", default="5a38069", help="the tree to compare with (a git revision)")
    ap.add_argument("--rounds", type=int, default=120)
    ap.add_argument("--runtime", default=None, help="micropython for the simulator model's rows")
    args = ap.parse_args()
    pypi = args.runtime or os.path.join(bm.ROOT, ".venv", "bin", "micropython")
    old = bm.export_tree(args.before)
    # the simulator's power watcher made garbage of its own before 933b531 (a chip has no such
    # thread): both trees run this one, so only the device's code differs
    shutil.copy(os.path.join(bm.ROOT, "scripts", "sim_boot.py"), os.path.join(old, "scripts", "sim_boot.py"))
    runtimes = [("simulator model (PyPI runtime)", pypi, pypi)]
    try:
        fw = os.path.join(bm.ROOT, "build", "unix", "micropython")
        if os.path.exists(fw):
            fw_old = bm.old_firmware(old, args.before[:7])
            runtimes.append(("host firmware (frozen, bare 110wK)", fw_old, fw))
        scale = bm.memory.heap_scale()
        print("The heap under sustained use (chip bytes: this runtime's x %.2f); %d rounds of Alexa and Home "
              "Assistant traffic, 0.25 s apart" % (scale, args.rounds))
        print("  %-38s %-30s %18s %26s %8s" % ("", "", "idle garbage KB/s", "largest block after (KB)", "tidied"))
        for what, rt_old, rt_new in runtimes:
            rows = []
            if rt_old:
                rows.append(("before (%s)" % args.before[:7], old, rt_old, True))
            rows.append(("after, idle collection off", bm.ROOT, rt_new, False))
            rows.append(("after", bm.ROOT, rt_new, True))
            for label, tree, rt, tidy in rows:
                g = idle_garbage(tree, rt) if tidy else None
                largest, tidied = sustained(tree, rt, args.rounds, tidy)
                print("  %-38s %-30s %18s %26s %8s" % (
                    what, label, "-" if g is None else "%.1f" % (g * scale / 1024),
                    "%.1f (>= 16: %s)" % (largest * scale / 1024, "met" if largest * scale >= 16384 else "MISSED"),
                    "-" if tidied is None else tidied), flush=True)
        n = args.rounds // 2
        print("\nThe admin page driven without rest: %d rounds of every tab, edits, checks and logins, 0.25 s apart" % n)
        print("  %-38s %-30s %26s" % ("", "", "largest block after (KB)"))
        for what, rt_old, rt_new in runtimes:
            rows = ([("before (%s)" % args.before[:7], old, rt_old)] if rt_old else []) + [("after", bm.ROOT, rt_new)]
            for label, tree, rt in rows:
                largest = admin_use(tree, rt, n)
                print("  %-38s %-30s %26s" % (
                    what, label,
                    "%.1f (>= 16: %s)" % (largest * scale / 1024, "met" if largest * scale >= 16384 else "MISSED")),
                    flush=True)
    finally:
        shutil.rmtree(old, ignore_errors=True)


if __name__ == "__main__":
    main()
