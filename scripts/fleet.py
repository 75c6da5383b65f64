#!/usr/bin/env python3
"""The fleet over MQTT: which devices are there, and a staged OTA rollout that stops itself.

    fleet.py --url mqtt://user:pw@broker:1883 list [--wait 2]
    fleet.py --url ... rollout 1.4.0 [--steps 1,10,50,100] [--step-wait 300] [--max-failures 0.1]
    fleet.py --url ... set 1.4.0 25          # set the rollout by hand
    fleet.py --url ... clear                 # remove the rollout message

Topics (devices publish, retained): iotutils/<id>/status ("online"/"offline", the will),
iotutils/<id>/info ({"version", "uptime", "heap", "rssi", "ip", ...}); after an update attempt:
iotutils/<id>/ota/result ({"version", "ok", "error"}). This script publishes, retained,
iotutils/fleet/rollout = {"version": V, "percent": N}: a device takes V when
iotutils.mqtt.rollout_selected(<id>, N) (the first 4 bytes of sha256(id) mod 100 < N), so the
devices in at 10 % are still in at 50 %.

rollout raises the percentage step by step; after each step it waits until every device newly in
reported (or --step-wait seconds passed: a silent device counts as failed), and it halts when the
failures of that step pass --max-failures (a fraction of the step's devices, or a count if >= 1):
the rollout message goes back to the step before, with "halted" and the reason, and it exits 1.
"""
import argparse
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "modules"))

from iotutils.mqtt.codec import parse_url, rollout_selected  # the devices' own rule

ROLLOUT = "iotutils/fleet/rollout"


class Fleet:
    def __init__(self, url, client_id="iotutils-fleet", cafile=None):
        import paho.mqtt.client as mc
        tls, host, port, user, password = parse_url(url)
        self.devices = {}        # id -> {"status", "info", "results": [...]}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.c = mc.Client(mc.CallbackAPIVersion.VERSION2, client_id=client_id)
        if user is not None:
            self.c.username_pw_set(user, password)
        if tls:
            self.c.tls_set(ca_certs=cafile)
        self.c.on_message = self._message
        self.c.on_connect = self._connected
        self.c.connect(host, port, keepalive=30)
        self.c.loop_start()
        deadline = time.time() + 10
        while not self.c.is_connected():
            if time.time() > deadline:
                raise SystemExit("fleet: cannot connect to %s:%d" % (host, port))
            time.sleep(0.02)

    def _connected(self, c, userdata, flags, rc, props=None):
        c.subscribe([("iotutils/+/status", 1), ("iotutils/+/info", 1), ("iotutils/+/ota/result", 1)])

    def _message(self, c, userdata, msg):
        parts = msg.topic.split("/")
        if len(parts) < 3 or parts[1] == "fleet":
            return
        dev_id = parts[1]
        with self._lock:
            d = self.devices.setdefault(dev_id, {"status": None, "info": {}, "results": []})
            kind = "/".join(parts[2:])
            if kind == "status":
                d["status"] = msg.payload.decode(errors="replace")
            elif kind == "info":
                try:
                    d["info"] = json.loads(msg.payload)
                except ValueError:
                    d["info"] = {}
            elif kind == "ota/result" and msg.payload:
                try:
                    d["results"].append(json.loads(msg.payload))
                except ValueError:
                    d["results"].append({"ok": False, "error": "unreadable result"})
            self._changed.notify_all()

    def snapshot(self):
        with self._lock:
            return {k: {"status": v["status"], "info": dict(v["info"]), "results": list(v["results"])}
                    for k, v in self.devices.items()}

    def set_rollout(self, version, percent, **extra):
        msg = dict({"version": version, "percent": percent}, **extra)
        self.c.publish(ROLLOUT, json.dumps(msg), qos=1, retain=True).wait_for_publish(10)
        return msg

    def clear(self):
        self.c.publish(ROLLOUT, b"", qos=1, retain=True).wait_for_publish(10)

    def rollout(self, version, steps=(1, 10, 50, 100), step_wait=300.0, max_failures=0.1, log=print):
        """Raise the rollout step by step; {"completed", "percent", "failed": [ids], "reason"}."""
        done = set()
        prev = 0
        for pct in steps:
            snap = self.snapshot()
            todo = [i for i, d in snap.items() if d["status"] == "online" and rollout_selected(i, pct)
                    and i not in done and d["info"].get("version") != version]
            start_counts = {i: len(snap[i]["results"]) for i in todo}
            self.set_rollout(version, pct)
            log("fleet: rollout of %s at %d %%: %d device(s) to update" % (version, pct, len(todo)))
            ok, failed = self._wait_results(version, todo, start_counts, step_wait)
            done.update(ok)
            limit = max_failures if max_failures >= 1 else max_failures * len(todo)
            if todo and len(failed) > limit:
                reason = "%d of %d device(s) failed at %d %%: %s" % (len(failed), len(todo), pct, ", ".join(sorted(failed)))
                self.set_rollout(version, prev, halted=True, reason=reason)
                log("fleet: HALTED, rollout back to %d %%: %s" % (prev, reason))
                return {"completed": False, "percent": prev, "failed": sorted(failed), "reason": reason}
            if failed:
                log("fleet: %d failure(s) at %d %% (within the limit): %s" % (len(failed), pct, ", ".join(sorted(failed))))
            prev = pct
        log("fleet: rollout of %s complete at %d %%" % (version, prev))
        return {"completed": True, "percent": prev, "failed": [], "reason": None}

    def _wait_results(self, version, todo, start_counts, step_wait):
        deadline = time.time() + step_wait
        ok, failed = set(), set()
        with self._lock:
            while True:
                for i in todo:
                    if i in ok or i in failed:
                        continue
                    for r in self.devices[i]["results"][start_counts[i]:]:
                        if r.get("version") == version:
                            (ok if r.get("ok") else failed).add(i)
                            break
                left = deadline - time.time()
                if len(ok) + len(failed) == len(todo) or left <= 0:
                    break
                self._changed.wait(min(left, 0.5))
        failed |= {i for i in todo if i not in ok and i not in failed}   # silent: failed
        return ok, failed

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def print_devices(snap, out=None):
    out = out or sys.stdout
    cols = ("id", "status", "version", "uptime", "heap", "rssi", "ip")
    rows = [cols]
    for dev_id in sorted(snap):
        d = snap[dev_id]
        info = d["info"]
        rows.append((dev_id, d["status"] or "?") + tuple(str(info.get(k, "")) for k in cols[2:]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    for r in rows:
        out.write("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default=os.getenv("IOTUTILS_MQTT", "mqtt://127.0.0.1:1883"))
    ap.add_argument("--cafile", help="CA certificate for mqtts://")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("list", help="devices seen on iotutils/+/status and iotutils/+/info")
    p.add_argument("--wait", type=float, default=2.0, help="seconds to collect retained messages")
    p = sub.add_parser("rollout", help="staged rollout of VERSION, halting on failures")
    p.add_argument("version")
    p.add_argument("--steps", default="1,10,50,100")
    p.add_argument("--step-wait", type=float, default=300.0)
    p.add_argument("--max-failures", type=float, default=0.1,
                   help="per step: a fraction of its devices (< 1) or a count (>= 1) (default 0.1)")
    p.add_argument("--wait", type=float, default=2.0, help="seconds to collect the fleet first")
    p = sub.add_parser("set", help="set the rollout message by hand")
    p.add_argument("version")
    p.add_argument("percent", type=int)
    sub.add_parser("clear", help="remove the rollout message")
    a = ap.parse_args(argv)
    f = Fleet(a.url, cafile=a.cafile)
    try:
        if a.cmd == "list":
            time.sleep(a.wait)
            print_devices(f.snapshot())
        elif a.cmd == "rollout":
            time.sleep(a.wait)
            steps = [int(s) for s in a.steps.split(",")]
            if not steps or steps != sorted(steps) or not all(0 < s <= 100 for s in steps):
                ap.error("--steps: increasing percentages in 1..100")
            r = f.rollout(a.version, steps, a.step_wait, a.max_failures)
            return 0 if r["completed"] else 1
        elif a.cmd == "set":
            print(json.dumps(f.set_rollout(a.version, a.percent)))
        elif a.cmd == "clear":
            f.clear()
    finally:
        f.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
