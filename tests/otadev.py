"""A simulated device running tests/apps/ota_app.py (an OTA client driven by commands) against a fake
GitHub: shared by the OTA test files."""
import json
import os

from conftest import ROOT
from fake_github import OWNER
from simdev import SimDevice

import espimage
from iotutils.hal import layout
from iotutils.hal.flash import FileFlash

APP = os.path.join(ROOT, "tests", "apps", "ota_app.py")
TABLE = {p[0]: p for p in layout.DEFAULT}
FACTORY = "0.1.0"   # iotutils.__version__: the simulator's factory image
SIZE = 96 * 1024


def image(version, **kw):
    kw.setdefault("size", SIZE)
    return espimage.build_app_image(version, **kw)


class Dev:
    """A simulated device running tests/apps/ota_app.py against the fake GitHub."""

    def __init__(self, tmp_path, gh, channel="release", app_ota=False, timeout=5, ca_file=None,
                 pubkey=OWNER.pem, env=None, small_answer_s=None):
        self.dir = tmp_path / "dev"
        os.makedirs(self.dir / "fs", exist_ok=True)
        with open(self.dir / "fs" / "ota_cfg.json", "w") as f:
            json.dump({"repo": "me/fw", "channel": channel, "api": gh.api_url, "timeout": timeout,
                       "small_answer_s": small_answer_s,
                       "app_ota": app_ota, "ca_file": ca_file, "pubkey": pubkey,
                       "allow_http": gh.api_url.startswith("http:")}, f)
        self.sim = SimDevice(self.dir, app=APP, extra_env=env)

    def boot(self, timeout=30):
        m = self.sim.wait_line(r"BOOT version=(\S+) slot=(\S+) pending=(\S+) rolled_back=(\S+)", timeout)
        self.sim.wait_line("READY", timeout)
        return {"version": m.group(1), "slot": m.group(2), "pending": m.group(3) == "True",
                "rolled_back": m.group(4) == "True"}

    def start(self):
        self.sim.start()
        return self.boot()

    def cmd(self, c, expect, timeout=30):
        since = len(self.sim.lines)
        p = os.path.join(self.dir, "fs", "cmd")
        with open(p + ".tmp", "w") as f:
            f.write(c)
        os.replace(p + ".tmp", p)
        return self.sim.wait_line(expect, timeout, since=since)

    def update_expect_reboot(self):
        self.cmd("update", r"SETBOOT (\S+)")
        self.sim.mark = len(self.sim.lines)
        return self.boot()

    def update_expect_error(self):
        return self.cmd("update", r"OTAERROR (.*)|SETBOOT").group(1)

    def reset(self):
        self.cmd("reset", "CMD reset")
        self.sim.mark = len(self.sim.lines)
        return self.boot()

    def flash(self, name):
        p = TABLE[name]
        r = FileFlash(str(self.dir / "flash.bin"), p[3], p[4], name)
        try:
            return r.read(0, p[4])
        finally:
            r.close()

    def stop(self):
        self.sim.stop()
