"""scripts/fleet.py against Mosquitto, with a fleet of fake devices (one paho client speaking for
20 device ids): the device list, a rollout that completes, one that halts on failures."""
import io
import json
import threading

import pytest

import fleet
from iotutils.mqtt import rollout_selected
from mosquitto import Peer, own_broker_fixture  # noqa: F401  (the "own_broker" fixture)

pytestmark = pytest.mark.timeout(60)
IDS = ["dev-%02d" % i for i in range(20)]


class FakeFleet:
    """Devices that answer the rollout as iotutils devices do: update when selected, report."""

    def __init__(self, broker, version="1.0.0", bad=()):
        self.version = dict.fromkeys(IDS, version)
        self.bad = set(bad)
        self.updates = []
        self.lock = threading.Lock()
        self.peer = Peer(broker, "fake-fleet")
        for i in IDS:
            self.peer.publish("iotutils/%s/status" % i, "online", qos=1, retain=True)
            self._info(i)
        self.peer.c.message_callback_add(fleet.ROLLOUT, self._rollout)
        self.peer.subscribe(fleet.ROLLOUT)

    def _info(self, i):
        info = {"version": self.version[i], "uptime": 100 + IDS.index(i), "heap": 40000, "rssi": -50 - IDS.index(i),
                "ip": "10.0.0.%d" % IDS.index(i)}
        self.peer.c.publish("iotutils/%s/info" % i, json.dumps(info), qos=1, retain=True)

    def _rollout(self, c, userdata, msg):
        if not msg.payload:
            return
        r = json.loads(msg.payload)
        if r.get("halted"):
            return
        for i in IDS:
            if rollout_selected(i, r["percent"]) and self.version[i] != r["version"]:
                ok = i not in self.bad
                with self.lock:
                    self.updates.append((i, r["percent"], ok))
                if ok:
                    self.version[i] = r["version"]
                    self._info(i)
                c.publish("iotutils/%s/ota/result" % i, json.dumps(
                    {"version": r["version"], "ok": ok, "error": None if ok else "image rejected"}), qos=1)

    def close(self):
        self.peer.close()


def _snapshot_when(f, n):
    import time
    deadline = time.time() + 5
    while time.time() < deadline:
        snap = f.snapshot()
        if len(snap) >= n and all(d["info"] for d in snap.values()):
            return snap
        time.sleep(0.05)
    return f.snapshot()


def test_list_shows_every_device(own_broker):
    fake = FakeFleet(own_broker)
    f = fleet.Fleet(own_broker.url(), client_id="fleet-list")
    try:
        snap = _snapshot_when(f, 20)
        assert sorted(snap) == IDS
        out = io.StringIO()
        fleet.print_devices(snap, out)
        lines = out.getvalue().splitlines()
        assert lines[0].split() == ["id", "status", "version", "uptime", "heap", "rssi", "ip"]
        assert lines[1].split() == ["dev-00", "online", "1.0.0", "100", "40000", "-50", "10.0.0.0"]
        assert len(lines) == 21
    finally:
        f.close()
        fake.close()


def test_rollout_goes_step_by_step_to_everyone(own_broker):
    fake = FakeFleet(own_broker)
    f = fleet.Fleet(own_broker.url(), client_id="fleet-ok")
    log = []
    try:
        _snapshot_when(f, 20)
        r = f.rollout("1.1.0", steps=(1, 10, 50, 100), step_wait=5, max_failures=0.1, log=log.append)
        assert r == {"completed": True, "percent": 100, "failed": [], "reason": None}
        assert set(fake.version.values()) == {"1.1.0"}
        # each device updated once, at the first step that selected it
        firsts = {i: min(p for p in (1, 10, 50, 100) if rollout_selected(i, p)) for i in IDS}
        assert sorted((i, p) for i, p, _ in fake.updates) == sorted(firsts.items())
        retained = Peer(own_broker, "check-ok")
        retained.subscribe(fleet.ROLLOUT)
        assert json.loads(retained.expect(fleet.ROLLOUT).payload) == {"version": "1.1.0", "percent": 100}
        retained.close()
        assert log[-1] == "fleet: rollout of 1.1.0 complete at 100 %"
    finally:
        f.close()
        fake.close()


def test_rollout_halts_when_failures_pass_the_threshold(own_broker):
    at50 = [i for i in IDS if rollout_selected(i, 50) and not rollout_selected(i, 10)]
    assert len(at50) >= 3
    fake = FakeFleet(own_broker, bad=at50[:3])
    f = fleet.Fleet(own_broker.url(), client_id="fleet-bad")
    log = []
    try:
        _snapshot_when(f, 20)
        r = f.rollout("2.0.0", steps=(1, 10, 50, 100), step_wait=5, max_failures=0.1, log=log.append)
        assert not r["completed"] and r["percent"] == 10 and r["failed"] == sorted(at50[:3])
        assert "3 of %d device(s) failed at 50 %%" % len(at50) in r["reason"]
        assert any("HALTED, rollout back to 10 %" in line for line in log)
        retained = Peer(own_broker, "check-bad")
        retained.subscribe(fleet.ROLLOUT)
        msg = json.loads(retained.expect(fleet.ROLLOUT).payload)
        assert msg["percent"] == 10 and msg["halted"] is True and msg["version"] == "2.0.0"
        retained.close()
        # nobody beyond 50 % was offered the version
        assert all(rollout_selected(i, 50) for i, _, _ in fake.updates)
    finally:
        f.close()
        fake.close()


def test_command_line_set_and_list(own_broker, capsys):
    fake = FakeFleet(own_broker)
    try:
        assert fleet.main(["--url", own_broker.url(), "list", "--wait", "1"]) == 0
        out = capsys.readouterr().out
        assert "dev-19" in out and "online" in out
        assert fleet.main(["--url", own_broker.url(), "set", "1.2.0", "5"]) == 0
        assert json.loads(capsys.readouterr().out) == {"version": "1.2.0", "percent": 5}
    finally:
        fake.close()
