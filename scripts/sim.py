#!/usr/bin/env python3
"""The simulated device: a MicroPython process on a simulated ESP32 (docs/design.md).

    python3 scripts/sim.py --state DIR --port N [--wifi FILE] [--heap SIZE] [--runtime PATH] [APP]

- flash: DIR/flash.bin (4 MB), laid out by boards/ESP32_GENERIC/partitions.csv; the device
  filesystem is DIR/fs/ (the device's working directory);
- boot: an emulated ESP-IDF bootloader reads otadata, boots the selected slot if it holds a valid
  app image (NEW -> PENDING_VERIFY; an unconfirmed PENDING_VERIFY -> ABORTED and roll back) and
  tells the device which slot runs. The first power-on writes a factory image (app descriptor
  version = iotutils.__version__) into ota_0;
- reboot: machine.reset() (hal.reset) asks this supervisor to restart the process; a crash
  reboots too (reset cause "panic"); the task watchdog (hal.wdt_start) reboots a stuck device;
- power cut: SIGKILL this process; the device process dies with it (it watches its parent, and
  the next power-on kills a device still dying);
- ports: device port 80 -> N, 53 -> N+1, 1900 -> 1900, 49152+k -> N+2+k (README);
- heap: -X heapsize (default 110wK: an ESP32 without PSRAM, scaled for 64-bit objects), plus what
  holding iotutils' own code costs on a runtime that cannot freeze it (scripts/mpcode.py).
The device's console (stdout/stderr) is this process's.
"""
import argparse
import ctypes
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "modules"))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from iotutils import __version__  # noqa: E402
from iotutils.hal import layout, otadata  # noqa: E402
from iotutils.hal.flash import FileFlash  # noqa: E402

PARTITIONS_CSV = os.path.join(ROOT, "boards", "ESP32_GENERIC", "partitions.csv")
DEFAULT_APP = os.path.join(ROOT, "examples", "lamp.py")
DEFAULT_HEAP = "110wK"
BOOT = os.path.join(ROOT, "scripts", "sim_boot.py")
CRASH_REBOOT_DELAY_S = 0.5   # a crash loop must not spin the host CPU
PR_SET_PDEATHSIG = 1


def load_layout():
    with open(PARTITIONS_CSV) as f:
        return layout.parse_csv(f.read())


def ensure_flash(path, size):
    if not os.path.exists(path):
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            blank = b"\xff" * 65536
            for _ in range(size // len(blank)):
                f.write(blank)
        os.replace(tmp, path)


class Flash:
    """The flash image seen by the bootloader."""

    def __init__(self, path, table):
        self.path = path
        self.table = {p[0]: p for p in table}

    def region(self, name):
        p = self.table[name]
        return FileFlash(self.path, p[3], p[4], name)


def image_info(flash, slot_name):
    """The app descriptor of the image in a slot, or None if the slot holds no valid image."""
    import espimage
    region = flash.region(slot_name)
    try:
        return espimage.parse_app_image(region.read(0, region.size))
    except ValueError:
        return None
    finally:
        region.close()


def write_partition(flash, name, image_path):
    with open(image_path, "rb") as f:
        data = f.read()
    region = flash.region(name)
    try:
        if len(data) > region.size:
            sys.exit("sim: %s is %d bytes, the %s partition only %d" % (image_path, len(data), name, region.size))
        region.erase(0, region.size)
        region.write(0, data)
    finally:
        region.close()


def write_factory_image(flash):
    import espimage
    image = espimage.build_app_image(version=__version__, project="micropython")
    region = flash.region("ota_0")
    try:
        for off in range(0, len(image) + 4095 & ~4095, 4096):
            region.erase(off, 4096)
        region.write(0, image)
    finally:
        region.close()


def bootloader(flash, slots):
    """Pick the slot to boot like ESP-IDF's bootloader with rollback enabled."""
    od = flash.region("otadata")
    try:
        infos = {}

        def ok(i):
            if i not in infos:
                infos[i] = image_info(flash, slots[i])
            return infos[i] is not None

        slot = otadata.choose_boot(od, ok, len(slots))
        if not ok(slot):
            # nothing valid where otadata points and no fallback: try every slot, like the ROM would
            for i in range(len(slots)):
                if ok(i):
                    slot = i
                    break
            else:
                return None, None, False, None
        rolled_back = otadata.last_invalid_slot(od, len(slots)) is not None
        state = otadata.running_state(od)
        return slot, infos[slot], rolled_back, state
    finally:
        od.close()


def kill_stale_device(state):
    """A power cut (SIGKILL of this supervisor) leaves the device process to notice on its own that
    its parent is gone (scripts/sim_boot.py) and die. Power-on must not race it for the flash
    file and the ports: kill the previous device of this state directory and wait until it is gone."""
    path = os.path.join(state, "device.pid")
    try:
        with open(path) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read()
    except OSError:
        return
    if b"sim_boot.py" not in cmd:
        return  # the pid was reused by something else
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and os.path.exists("/proc/%d" % pid):
        try:
            with open("/proc/%d/stat" % pid) as f:
                if f.read().rpartition(")")[2].split()[0] == "Z":
                    break  # a zombie holds nothing any more
        except OSError:
            break
        time.sleep(0.01)


# The power-cut reaper: a tiny process holding the read end of a pipe whose write end only this
# supervisor holds. When the supervisor dies (SIGKILL: a power cut) the read returns EOF and the
# reaper kills the device at once, within milliseconds, wherever the kernel ignores PDEATHSIG.
REAPER = r"""
import os, signal, sys
fd, pidfile = int(sys.argv[1]), sys.argv[2]
while os.read(fd, 64):
    pass
try:
    pid = int(open(pidfile).read().strip() or 0)
    if b"sim_boot.py" in open("/proc/%d/cmdline" % pid, "rb").read():
        os.kill(pid, signal.SIGKILL)
except (OSError, ValueError):
    pass
"""


def start_reaper(state):
    r, w = os.pipe()
    subprocess.Popen([sys.executable, "-c", REAPER, str(r), os.path.join(state, "device.pid")],
                     pass_fds=(r,), stdin=subprocess.DEVNULL, preexec_fn=os.setpgrp)
    os.close(r)
    os.set_inheritable(w, False)
    return w  # kept open (never written) for the life of this process


_SUPERVISOR = os.getpid()


def _pdeathsig():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass
    if os.getppid() != _SUPERVISOR:
        os._exit(1)  # the supervisor died between fork and prctl: no device without it
    os.setpgrp()  # Ctrl-C in a terminal reaches the supervisor, which then ends the device


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--state", required=True, help="state directory (flash.bin, fs/)")
    ap.add_argument("--port", type=int, default=8080, help="host port for device port 80 (53 -> N+1)")
    ap.add_argument("--wifi", help="Wi-Fi scenario JSON file")
    ap.add_argument("--heap", default=DEFAULT_HEAP, help="MicroPython heap (-X heapsize), default 110wK")
    ap.add_argument("--runtime", help="micropython binary (default: the venv's, or $FIRMWARE)")
    ap.add_argument("--mac", default=None, help="device MAC address (default: derived from --port)")
    ap.add_argument("--max-boots", type=int, default=0, help="stop after this many boots (0: never)")
    ap.add_argument("--write-nvs", metavar="IMAGE",
                    help="write an NVS partition image (scripts/nvs_provision.py) into the nvs partition "
                         "before booting, as `esptool write-flash 0x9000 IMAGE` does on a board")
    ap.add_argument("app", nargs="?", default=DEFAULT_APP, help="main program (default: examples/lamp.py)")
    args = ap.parse_args(argv)

    state = os.path.abspath(args.state)
    fs = os.path.join(state, "fs")
    os.makedirs(fs, exist_ok=True)
    table = load_layout()
    flash_path = os.path.join(state, "flash.bin")
    ensure_flash(flash_path, layout.FLASH_SIZE)
    kill_stale_device(state)
    reaper_pipe = start_reaper(state)  # noqa: F841 (its write end must stay open)
    flash = Flash(flash_path, table)
    if args.write_nvs:
        write_partition(flash, "nvs", args.write_nvs)
    slots = [p[0] for p in table if p[1] == "app"]
    if image_info(flash, slots[0]) is None and image_info(flash, slots[1]) is None:
        write_factory_image(flash)

    runtime = args.runtime or os.environ.get("FIRMWARE") or os.path.join(ROOT, ".venv", "bin", "micropython")
    runtime = os.path.abspath(runtime) if os.path.exists(runtime) else runtime
    import mpcode
    heap_arg, mpy_dir, allowance = mpcode.runtime_setup(runtime, args.heap)
    app = os.path.abspath(args.app)
    mac = args.mac or "02:00:00:%02x:%02x:%02x" % ((args.port >> 16) & 255, (args.port >> 8) & 255, args.port & 255)
    ctl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ctl.bind(("127.0.0.1", 0))

    child = None

    def stop(signum, frame):
        if child and child.poll() is None:
            child.kill()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    cause = "power_on"
    boots = 0
    while True:
        boots += 1
        picked = bootloader(flash, slots)
        if picked[0] is None:
            print("sim: no valid app image in any slot: device bricked", file=sys.stderr, flush=True)
            return 2
        slot, info, rolled_back, ota_state = picked
        cfg = {
            "state": state, "flash": flash_path, "fs": fs,
            "partitions": [list(p) for p in table],
            "port": args.port, "wifi": os.path.abspath(args.wifi) if args.wifi else None,
            "ctl_port": ctl.getsockname()[1], "slot": slots[slot], "version": info.get("version"),
            "project": info.get("project"), "rolled_back": rolled_back,
            "ota_state": otadata.STATE_NAMES.get(ota_state, "undefined"),
            "reset_cause": cause, "boot": boots, "mac": mac,
            "heap_model": mpcode.heap_bytes(args.heap), "code_allowance": allowance,
        }
        cfg_path = os.path.join(state, "sim.json")
        with open(cfg_path + ".tmp", "w") as f:
            json.dump(cfg, f)
        os.replace(cfg_path + ".tmp", cfg_path)
        env = dict(os.environ)
        env["IOTUTILS_SIM"] = cfg_path
        env["MICROPYPATH"] = os.pathsep.join([p for p in (".", mpy_dir, ".frozen", os.path.join(ROOT, "modules"),
                                                          "lib") if p])
        if allowance:
            env["IOTUTILS_PRELOAD"] = ",".join(mpcode.preload_modules())
        child = subprocess.Popen([runtime, "-X", "heapsize=" + heap_arg, BOOT, app], cwd=fs, env=env,
                                 preexec_fn=_pdeathsig)
        with open(os.path.join(state, "device.pid"), "w") as f:
            f.write("%d\n" % child.pid)
        cause = supervise(child, ctl)
        if cause is None:
            return child.returncode
        if args.max_boots and boots >= args.max_boots:
            return 0
        if cause == "panic":
            time.sleep(CRASH_REBOOT_DELAY_S)


def supervise(child, ctl):
    """Run the device until it ends. Returns the next reset cause, or None if the app exited cleanly."""
    wdt_timeout = None
    wdt_fed = 0.0
    while True:
        timeout = 0.1
        r, _, _ = select.select([ctl], [], [], timeout)
        if r:
            msg = ctl.recv(64).decode(errors="replace").split()
            if msg and msg[0] == "reset":
                child.kill()
                child.wait()
                return "soft"
            if msg and msg[0] == "wdt":
                wdt_timeout = int(msg[1]) / 1000.0
                wdt_fed = time.monotonic()
            if msg and msg[0] == "feed":
                wdt_fed = time.monotonic()
        if wdt_timeout and time.monotonic() - wdt_fed > wdt_timeout:
            print("sim: task watchdog expired: reset", file=sys.stderr, flush=True)
            child.kill()
            child.wait()
            return "watchdog"
        rc = child.poll()
        if rc is not None:
            if rc == 0:
                return None
            print("sim: device crashed (exit %d): reboot" % rc, file=sys.stderr, flush=True)
            return "panic"


if __name__ == "__main__":
    sys.exit(main())
