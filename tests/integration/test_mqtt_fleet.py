"""A fleet of 20 simulated devices (iotutils.Device with MQTT, tests/apps/mqtt_device_app.py) on one
Mosquitto: the discovery storm (every device's config reaches Home Assistant, played by paho), then
scripts/fleet.py rolling out a signed release from the fake GitHub in stages, and a bad release (its
image crashes at boot, so the bootloader goes back) halting the next rollout at its first step.

About 10 s of wall time on two idle cores, up to ~40 s on a busy machine (20 device processes
booting four at a time, installs, reboots): it runs in `make test`."""
import hashlib
import time

import pytest

import espimage
import fleet
from fake_github import FakeGitHub, device_env
from iotutils import __version__
from iotutils.mqtt import rollout_selected
from mosquitto import HomeAssistant, own_broker_fixture  # noqa: F401
from mqttdev import BOOT_TIMEOUT, Dev, check_discovery

pytestmark = pytest.mark.timeout(240)
N = 20


def bucket(dev_id):
    """The percentage from which rollout_selected(dev_id, p) is true."""
    return int.from_bytes(hashlib.sha256(dev_id.encode()).digest()[:4], "big") % 100 + 1


def versions(f, ids):
    snap = f.snapshot()
    return {i: snap.get(i, {}).get("info", {}).get("version") for i in ids}


def test_discovery_storm_and_a_staged_rollout_halted_by_a_bad_release(tmp_path, own_broker):
    gh = FakeGitHub().start()
    ha = HomeAssistant(own_broker)
    devs = []
    t_start = time.time()
    try:
        gh.add_release("acme/lamp", "0.2.0", espimage.build_app_image("0.2.0", size=96 * 1024))
        cfg = {"mqtt": own_broker.url(), "expose": [], "bad_version": "0.3.0", "health_timeout_s": 60,
               "info_every_s": 5}
        devs = [Dev(tmp_path, "d%02d" % i, cfg, env=device_env(gh)) for i in range(N)]
        # power on the house four devices at a time (twenty processes starting at once would starve
        # whatever else runs on a 2-core machine), each batch as soon as the last one booted
        for i in range(0, N, 4):
            for d in devs[i:i + 4]:
                d.start()
            for d in devs[i:i + 4]:
                d.wait_line(r"heap free after start", timeout=BOOT_TIMEOUT)
        for d in devs:
            d.wait_line(r"mqtt: announced", timeout=BOOT_TIMEOUT)
        ids = sorted(d.id for d in devs)
        assert len(set(ids)) == N
        # the discovery storm: Home Assistant sees every device, each config as it must be
        for d in devs:
            cmps = check_discovery(ha.wait_json("homeassistant/device/%s/config" % d.id, timeout=20), d)
            assert set(cmps) >= {"alexa_1", "restart", "firmware", "rssi", "heap", "uptime", "ip"}
            assert ha.wait("%s/status" % d.base, b"online") == b"online"
        t_storm = time.time() - t_start

        f = fleet.Fleet(own_broker.url(), client_id="fleet-test")
        try:
            deadline = time.time() + 15
            while time.time() < deadline and not (len(f.snapshot()) == N and all(versions(f, ids).values())):
                time.sleep(0.1)
            assert versions(f, ids) == dict.fromkeys(ids, __version__)
            # steps chosen from the ids' buckets so each step has devices: 2, then 5 of 20
            b = sorted(bucket(i) for i in ids)
            steps = [b[1], b[4]]
            t0 = time.time()
            r = f.rollout("0.2.0", steps=steps, step_wait=60, max_failures=0, log=print)
            t_good = time.time() - t0
            assert r == {"completed": True, "percent": steps[-1], "failed": [], "reason": None}
            good = {i for i in ids if rollout_selected(i, steps[-1])}
            assert len(good) >= 5
            want = {i: "0.2.0" if i in good else __version__ for i in ids}
            deadline = time.time() + 15
            while time.time() < deadline and versions(f, ids) != want:
                time.sleep(0.1)
            assert versions(f, ids) == want
            for d in devs:
                fw = ha.wait_json(d.t("firmware"), lambda x, d=d: x["installed_version"] == want[d.id], timeout=10)
                assert fw["in_progress"] is False

            # a bad release: the first step's device rolls back, the rollout halts there
            gh.add_release("acme/lamp", "0.3.0", espimage.build_app_image("0.3.0", size=96 * 1024))
            first = [i for i in ids if rollout_selected(i, b[0])]
            t0 = time.time()
            r = f.rollout("0.3.0", steps=[b[0], 50, 100], step_wait=90, max_failures=0, log=print)
            t_bad = time.time() - t0
            assert not r["completed"] and r["percent"] == 0 and r["failed"] == sorted(first), r
            assert ha.wait_json("iotutils/fleet/rollout", lambda x: x.get("halted")) == {
                "version": "0.3.0", "percent": 0, "halted": True, "reason": r["reason"]}
            results = f.snapshot()[first[0]]["results"]
            assert results[-1]["version"] == "0.3.0" and results[-1]["ok"] is False
            assert "rolled back" in results[-1]["error"]
            # the device runs its previous version again, and is not offered the bad one any more
            bad_dev = [d for d in devs if d.id == first[0]][0]
            bad_dev.wait_line(r"BAD IMAGE 0\.3\.0", timeout=5, since=0)
            fw = ha.wait_json(bad_dev.t("firmware"), lambda x: x["installed_version"] == want[first[0]]
                              and "rolled back" in (x.get("release_summary") or ""), timeout=30)
            assert fw["latest_version"] == fw["installed_version"] and fw["in_progress"] is False
            # nobody else tried it
            assert versions(f, ids) == want
            for d in devs:
                if d.id not in first:
                    assert "BAD IMAGE" not in d.output() and "rollout of 0.3.0" not in d.output()
                assert "reset cause: panic" not in d.output() or d.id in first
        finally:
            f.close()
        print("fleet of %d: discovery storm %.1f s, good rollout (2 steps) %.1f s, bad rollout halted %.1f s"
              % (N, t_storm, t_good, t_bad))
    finally:
        for d in devs:
            d.stop()
        ha.close()
        gh.stop()
