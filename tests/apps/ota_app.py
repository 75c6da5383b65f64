# Device app for tests/integration/test_ota.py and tests/integration/test_ota_powercut.py: an OTA
# client driven by commands written to fs/cmd, reporting on the console.
# Configuration: fs/ota_cfg.json {"repo", "channel", "api", "timeout", "small_answer_s", "app_ota",
# "ca_file", "pubkey", "allow_http"}.
import json
import os
import sys
import time

import iotutils.hal as hal


def _orphaned():
    # scripts/sim.py sets PDEATHSIG in the child, but a power cut (SIGKILL) that lands between fork
    # and prctl leaves the device running without its supervisor: it must not act on fs/cmd
    try:
        with open("/proc/self/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        with open("/proc/%d/cmdline" % ppid, "rb") as f:
            return b"sim.py" not in f.read()
    except Exception:
        return False


if _orphaned():
    print("ORPHAN: supervisor gone, exiting")
    sys.exit(3)

try:
    with open("ota_cfg.json") as f:
        cfg = json.load(f)
except OSError:
    cfg = {}

if cfg.get("app_ota"):
    from iotutils.ota import app_boot
    path = app_boot()
    from iotutils.ota import app_status
    print("APPBOOT path=%s status=%s" % (path, json.dumps(app_status())))
    try:
        import userapp
        print("USERAPP %s" % userapp.VERSION)
    except ImportError as e:
        print("USERAPP none", e)

from iotutils.ota import OTA, OTAError, app_status

cadata = None
if cfg.get("ca_file"):
    with open(cfg["ca_file"], "rb") as f:
        cadata = f.read()
# the owner's key the releases are signed with; plain http only for the fake GitHub on loopback
keyed = {"pubkey": cfg.get("pubkey"), "allow_http": cfg.get("allow_http", False)}
ota = OTA(repo=cfg.get("repo", "me/fw"), channel=cfg.get("channel", "release"),
          api=cfg.get("api", "http://127.0.0.1:9"), cadata=cadata, **keyed)
if cfg.get("timeout"):
    ota.http_timeout = cfg["timeout"]
if cfg.get("small_answer_s"):
    ota.http.small_answer_s = cfg["small_answer_s"]
st = ota.status()
print("BOOT version=%s slot=%s pending=%s rolled_back=%s project=%s" % (
    st["version"], st["slot"], st["pending"], st["rolled_back"], st["project"]))


try:
    os.remove("cmd")  # a command written before a power cut was never received
except OSError:
    pass

# hold device port 80 so the test harness (SimDevice) can tell when this process is really gone
# after a power cut: PDEATHSIG kills it asynchronously, and two live devices would share fs/cmd
import socket
_listener = socket.socket()
_listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
_listener.bind(socket.getaddrinfo("127.0.0.1", hal.port(80))[0][-1])
_listener.listen(1)


class FakeServer:
    # stands in for WebServer: only last_request_ms matters to auto-update
    last_request_ms = None


app = FakeServer()


def progress(done, total):
    if done == total or done % (64 * 1024) < 4096:
        print("PROGRESS %d %d" % (done, total))


def run(cmd):
    if cmd == "check":
        print("CHECK " + json.dumps(ota.check()))
    elif cmd.startswith("update"):
        print("UPDATING")
        v = ota.update(progress=progress, reboot=False, force=cmd == "update_force",
                       downgrade=cmd == "update_downgrade")
        print("SETBOOT %s" % v)
        hal.reset()
    elif cmd == "confirm":
        ota.confirm()
        print("CONFIRMED pending=%s" % ota.status()["pending"])
    elif cmd == "status":
        print("STATUS " + json.dumps(ota.status()))
    elif cmd.startswith("channel "):
        ota.__init__(repo=ota.repo, channel=cmd[8:], api=ota.api, cadata=cadata, **keyed)
        print("CHANNEL %s" % ota.channel)
    elif cmd.startswith("auto "):
        h, m = cmd.split()[1:3]
        print("AUTO " + json.dumps(ota.auto_update(True, float(h), float(m), app=app)))
    elif cmd == "request":
        app.last_request_ms = time.ticks_ms()
        print("REQUEST")
    elif cmd.startswith("busy "):
        print("BUSY %s" % ota.busy(cmd[5:] == "1"))
    elif cmd.startswith("app_update "):
        ota.update_app(cmd.split()[1], reboot=False)
        print("APPSWITCH " + json.dumps(app_status()))
        hal.reset()
    elif cmd == "app_status":
        print("APPSTATUS " + json.dumps(app_status()))
    elif cmd == "reset":
        hal.reset()
    elif cmd == "heap":
        import gc
        gc.collect()
        print("HEAP free=%d" % gc.mem_free())
    elif cmd == "exit":
        sys.exit(0)


print("READY")
while True:
    try:
        with open("cmd") as f:
            cmd = f.read().strip()
        os.remove("cmd")
    except OSError:
        time.sleep(0.02)
        continue
    print("CMD " + cmd)
    try:
        run(cmd)
    except OTAError as e:
        print("OTAERROR %s" % e)
    except ValueError as e:
        print("VALUEERROR %s" % e)
