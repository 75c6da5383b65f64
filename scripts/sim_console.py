# The simulated device's serial console (runs inside MicroPython, started by scripts/sim_boot.py when
# scripts/sim.py has --serial PATH).
#
# MicroPython's own REPL is C code of the port (shared/runtime/pyexec.c, shared/readline/readline.c);
# the unix runtime's REPL has no raw REPL and cannot run beside a script. This module is that C code
# written again in Python, byte for byte where a host tool can tell (mpremote, pyboard.py,
# pytest-embedded), driven by the console bytes sim.py relays from the PTY:
# - boot: boot.py from the device filesystem, then the app as main.py (friendly REPL mode only), in
#   the globals the REPL then uses; an exception in either is printed and the REPL starts, as on a board;
# - friendly REPL: banner, ">>> " / "... " with echo and auto-indent, Ctrl-A raw REPL, Ctrl-B banner,
#   Ctrl-C cancel, Ctrl-D soft reset, Ctrl-E paste mode;
# - raw REPL: "raw REPL; CTRL-B to exit", Ctrl-D runs the input (OK, output, \x04, error, \x04, ">"),
#   Ctrl-D on an empty input soft-resets, raw-paste mode (\x05A\x01: R\x01, a 128-byte window, \x01 per
#   window) as pyboard.py and mpremote use it;
# - Ctrl-C while code runs raises KeyboardInterrupt in it (sim.py sends the process SIGINT, which the
#   unix runtime turns into KeyboardInterrupt as the board's UART interrupt does);
# - soft reset: "MPY: soft reboot", then sim.py restarts this process (threads, sockets and heap are
#   gone, flash stays; no bootloader), in raw REPL mode if the soft reset came from the raw REPL;
# - the device filesystem is the root: "/" is the state's fs/ folder (open("/main.py") is
#   <state>/fs/main.py, never the host's /), and sys.path is the board's ['', '.frozen', '/lib'];
# - `machine` answers reset(), soft_reset(), reset_cause() and unique_id() as on the board.
# Not emulated: readline's history, cursor keys and tab completion; code that reads sys.stdin itself.
import gc
import os
import sys
import time

import _thread

try:
    import vfs
except ImportError:  # MicroPython before 1.23
    vfs = os

_CTRL_A = 1
_CTRL_B = 2
_CTRL_C = 3
_CTRL_D = 4
_CTRL_E = 5
_SOFT = 0x100                 # PYEXEC_FORCED_EXIT: a soft reset is wanted
_PASTE_WINDOW = 128           # MICROPY_REPL_STDIN_BUFFER_MAX (256) / 2, as the ESP32 port sends
_BOARD = "iotutils ESP32 (simulated) with ESP32"
_out = sys.stdout.buffer


def _w(b):
    _out.write(b)


def print_exception(exc):
    """sys.print_exception without this module's own frame (on a board the REPL is C code)."""
    import io
    buf = io.StringIO()
    sys.print_exception(exc, buf)
    for line in buf.getvalue().split("\n"):
        if line and "sim_console.py" not in line:
            print(line)


def _text(line):
    try:
        return bytes(line).decode()
    except UnicodeError:   # half a UTF-8 sequence: compile() will say what is wrong
        return ""


def _banner():
    v = sys.version.partition("; ")[2] or "MicroPython"
    _w(b"%s; %s\r\nType \"help()\" for more information.\r\n" % (v.encode(), _BOARD.encode()))


def continue_with_input(s):
    """py/repl.c mp_repl_continue_with_input: does the friendly REPL wait for more lines?"""
    if not s:
        return False
    word = ""
    for c in s:
        if not (c.isalpha() or c.isdigit() or c == "_"):
            break
        word += c
    compound = s[0] == "@" or word in ("if", "while", "for", "try", "with", "def", "class", "async")
    paren = brack = brace = 0
    q = None   # None, "'", '"', "'''", '"""'
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c in "'\"":
            if (q is None or q == c * 3) and s[i + 1:i + 3] == c * 2:
                q = None if q == c * 3 else c * 3
                i += 2
            elif q is None or q == c:
                q = None if q == c else c
        elif c == "\\" and i + 1 < n and s[i + 1] in "'\"\\":
            if q is not None:
                i += 1
        elif q is None:
            if c == "(":
                paren += 1
            elif c == ")":
                paren -= 1
            elif c == "[":
                brack += 1
            elif c == "]":
                brack -= 1
            elif c == "{":
                brace += 1
            elif c == "}":
                brace -= 1
        i += 1
    if q is not None and len(q) == 3:
        return True
    if (paren > 0 or brack > 0 or brace > 0) and q is None:
        return True
    if s[-1] == "\\":
        return True
    return compound and s[-1] != "\n"


class _Machine:
    """The board's `machine` functions that matter on a console (the unix runtime's own module
    answers the rest)."""
    PWRON_RESET = 1
    HARD_RESET = 2
    WDT_RESET = 3
    DEEPSLEEP_RESET = 4
    SOFT_RESET = 5

    def __init__(self, real):
        self._real = real

    def reset(self):
        from iotutils import hal
        hal.reset()

    def soft_reset(self):
        raise SystemExit

    def reset_cause(self):
        from iotutils import hal
        from iotutils.hal import sim
        if sim.config().get("soft_reboot"):
            return self.SOFT_RESET
        # machine.reset() and a panic are a HARD_RESET on the ESP32 port
        return {"power_on": 1, "watchdog": 3, "deepsleep": 4}.get(hal.reset_cause(), 2)

    def unique_id(self):
        from iotutils import hal
        return hal.unique_id()

    def __getattr__(self, name):
        return getattr(self._real, name)


class _DeviceFS:
    """The device's filesystem mounted at "/": <state>/fs. The simulator's own host files (the Wi-Fi
    scenario, /proc for the power-cut watcher) stay reachable by their host paths, unlisted."""

    def __init__(self, root, host_paths):
        self.fs = vfs.VfsPosix(root)
        self.host = vfs.VfsPosix()
        self.host_paths = host_paths

    def _for(self, path):
        for p in self.host_paths:
            if path == p or (p[-1] == "/" and path.startswith(p)):
                return self.host
        return self.fs

    def mount(self, readonly, mkfs):
        pass

    def umount(self):
        pass

    def ilistdir(self, path):
        # (name, type, inode, size) as LittleFS on the board gives them (VfsPosix leaves out the size)
        for e in self.fs.ilistdir(path):
            size = 0
            if e[1] == 0x8000:
                sep = b"/" if isinstance(e[0], bytes) else "/"
                try:
                    size = self.fs.stat(path.rstrip(sep) + sep + e[0] if path else e[0])[6]
                except OSError:
                    pass
            yield (e[0], e[1], e[2], size)

    def chdir(self, path):
        return self.fs.chdir(path)

    def getcwd(self):
        return self.fs.getcwd()

    def mkdir(self, path):
        return self.fs.mkdir(path)

    def remove(self, path):
        return self.fs.remove(path)

    def rename(self, old, new):
        return self.fs.rename(old, new)

    def rmdir(self, path):
        return self.fs.rmdir(path)

    def stat(self, path):
        return self._for(path).stat(path)

    def statvfs(self, path):
        return self.fs.statvfs(path)

    def open(self, path, mode):
        return self._for(path).open(path, mode)


class Console:
    def __init__(self, cfg):
        self.cfg = cfg
        self.mode = cfg.get("repl") or "friendly"
        self.g = {"__name__": "__main__"}
        self.lock = _thread.allocate_lock()
        self.wake = _thread.allocate_lock()
        self.wake.acquire()
        self.waiting = False
        self.buf = bytearray()
        self.pos = 0
        self.executing = False
        self.kbd = False          # a Ctrl-C was turned into SIGINT and has not arrived yet
        self.kbd_at = 0           # when (ticks_ms) it was sent
        self.ctl_addr = None
        self.indent = False       # readline: auto-indent state

    # ---- the UART: bytes from sim.py (framed: length byte + data), Ctrl-C as an interrupt ----
    def _reader(self):
        inp = sys.stdin.buffer
        hdr = bytearray(1)
        data = bytearray(255)
        mv = memoryview(data)
        while True:
            if not inp.readinto(hdr):
                return  # sim.py is gone
            n = hdr[0]
            if inp.readinto(mv[:n]) != n:
                return
            chunk = bytes(mv[:n])
            if 3 in chunk:
                self._with_ctrl_c(chunk)
                continue
            self._put(chunk)

    def _with_ctrl_c(self, chunk):
        start = 0
        for i in range(len(chunk)):
            if chunk[i] != 3:
                continue
            with self.lock:
                # another Ctrl-C while the last one has not landed for a second is sent again: its
                # datagram to sim.py can be lost on a busy host, and the code would run on for good
                now = time.ticks_ms()
                intr = self.executing and (not self.kbd or time.ticks_diff(now, self.kbd_at) > 1000)
                if intr:
                    self.kbd = True
                    self.kbd_at = now
            if intr:   # code runs: Ctrl-C is KeyboardInterrupt, not a character (the UART IRQ's rule)
                self._put(chunk[start:i])
                start = i + 1
                self._ctl("intr")
        self._put(chunk[start:])

    def _put(self, data):
        if not data:
            return
        with self.lock:
            self.buf.extend(data)
            wake = self.waiting
            self.waiting = False
        if wake:
            self.wake.release()

    def getc(self):
        # every lock is taken with `with`: a KeyboardInterrupt that lands anywhere leaves none held
        while True:
            with self.lock:
                if self.pos < len(self.buf):
                    c = self.buf[self.pos]
                    self.pos += 1
                    if self.pos == len(self.buf):
                        self.buf = bytearray()
                        self.pos = 0
                    return c
                self.waiting = True
            try:
                self.wake.acquire()
            except KeyboardInterrupt:  # a Ctrl-C that came as code finished: it is a Ctrl-C character
                with self.lock:
                    self.waiting = False
                    self.kbd = False
                return _CTRL_C

    def _ctl(self, msg):
        import socket
        if self.ctl_addr is None:
            self.ctl_addr = socket.getaddrinfo("127.0.0.1", self.cfg["ctl_port"])[0][-1]
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.sendto(msg.encode(), self.ctl_addr)
        finally:
            s.close()

    # ---- running code (pyexec.c parse_compile_execute) ----
    def execute(self, src, kind, name, eof=False):
        """Compile and run src in the REPL globals. Returns 1 (PYEXEC_NORMAL_EXIT), 0 (an exception,
        printed) or _SOFT (SystemExit: a soft reset)."""
        exc = None
        ret = 1
        try:
            with self.lock:
                self.executing = True
            if not isinstance(src, str):
                src = bytes(src).decode()
            code = compile(src, name, kind)
            src = None
            exec(code, self.g)
        except BaseException as e:  # the REPL prints whatever the code raised, SystemExit included
            exc = e
        self._idle(isinstance(exc, KeyboardInterrupt))
        if eof:
            _w(b"\x04")
        if isinstance(exc, SystemExit):
            ret = _SOFT
        elif exc is not None:
            ret = 0
            print_exception(exc)
        if eof:
            _w(b"\x04")
        return ret

    def _idle(self, interrupted):
        """The code ended. If a Ctrl-C was sent to it and did not land (it ended first), wait for
        it here: it must not land in the REPL."""
        while True:
            try:
                with self.lock:
                    self.executing = False
                    if interrupted:
                        self.kbd = False
                    pending = self.kbd
                if pending:
                    deadline = time.ticks_add(time.ticks_ms(), 500)
                    while time.ticks_diff(deadline, time.ticks_ms()) > 0:
                        time.sleep_ms(1)
                self.kbd = False
                return
            except KeyboardInterrupt:
                interrupted = True

    def run_file(self, name, source=None):
        """pyexec_file_if_exists: boot.py from the device filesystem, or the app as main.py."""
        if source is None:
            try:
                with open(name) as f:
                    source = f.read()
            except OSError:
                return 1   # no file runs like an empty one
        return self.execute(source, "exec", name)

    # ---- readline.c (no history, cursor keys or tab completion) ----
    def readline(self, prompt, line):
        """Read one more line into `line` (a bytearray holding the input so far). Returns the
        control character that ended it, or 0 for a newline."""
        orig = len(line)
        _w(prompt)
        self._auto_indent(line)
        esc = 0
        last_nl = 0
        while True:
            c = self.getc()
            if esc:
                # ESC [ ... : cursor keys and the like, consumed without effect
                if esc == 1:
                    esc = 2 if c == 91 or c == 79 else 0
                elif not (48 <= c <= 57 or c == 59):
                    esc = 0
                continue
            if _CTRL_A <= c <= _CTRL_E and len(line) == orig:
                return c
            if c == _CTRL_C:
                return c
            if c == 13 or c == 10:
                if last_nl == 0 or last_nl == c:
                    last_nl = c
                    _w(b"\r\n")
                    return 0
                last_nl = 0
                continue   # the LF of a CR LF
            last_nl = 0
            if c == 27:
                esc = 1
            elif c == 8 or c == 127:
                n = len(line) - orig
                if n:
                    # a run of only spaces goes back by an indent level
                    n = 4 if n >= 4 and line[orig:] == b" " * n else 1
                    line[:] = line[:-n]
                    _w(b"\x08" * n + b"\x1b[K")
            elif self.indent and (c == 9 or c == 32):
                self.indent = False   # a tab keeps the auto-indent, a space takes 3 of its 4 spaces back
                if c == 32:
                    line[:] = line[:-3]
                    _w(b"\x08\x08\x08\x1b[K")
            elif c >= 32 and c != 127:
                self.indent = False
                line.append(c)
                _w(bytes((c,)))

    def _auto_indent(self, line):
        self.indent = False
        if len(line) < 2 or line[-1] != 10:
            return
        start = line.rfind(b"\n", 0, len(line) - 1) + 1
        last = line[start:-1]
        spaces = len(last) - len(last.lstrip(b" "))
        if start > 0 and spaces == len(last):
            # the line just entered is all spaces: no indent when the one before it is too
            before = line.rfind(b"\n", 0, start - 1)
            if before >= 0 and line[before + 1:start - 1].strip(b" ") == b"":
                return
        n = spaces // 4 + (1 if line[-2] == 58 else 0)
        if n:
            line.extend(b"    " * n)
            _w(b"    " * n)
            self.indent = True

    # ---- friendly REPL (pyexec_friendly_repl) ----
    def friendly(self):
        _banner()
        while True:
            line = bytearray()
            ret = self.readline(b">>> ", line)
            kind = "single"
            if ret == _CTRL_A:
                _w(b"\r\n")
                self.mode = "raw"
                return 0
            if ret == _CTRL_B:
                _w(b"\r\n")
                _banner()
                continue
            if ret == _CTRL_C:
                _w(b"\r\n")
                continue
            if ret == _CTRL_D:
                _w(b"\r\n")
                return _SOFT
            if ret == _CTRL_E:
                _w(b"\r\npaste mode; Ctrl-C to cancel, Ctrl-D to finish\r\n=== ")
                while True:
                    c = self.getc()
                    if c == _CTRL_C or c == _CTRL_D:
                        _w(b"\r\n")
                        break
                    line.append(c)
                    _w(b"\r\n=== " if c == 13 else bytes((c,)))
                if c == _CTRL_C:
                    continue
                kind = "exec"
            elif not line:
                continue
            else:
                while continue_with_input(_text(line)):
                    line.append(10)
                    ret = self.readline(b"... ", line)
                    if ret == _CTRL_C or ret == _CTRL_D:
                        break
                if ret == _CTRL_C:
                    _w(b"\r\n")
                    continue
            if self.execute(line, kind, "<stdin>") & _SOFT:
                return _SOFT

    # ---- raw REPL (pyexec_raw_repl) ----
    def raw(self):
        _w(b"raw REPL; CTRL-B to exit\r\n")
        line = bytearray()
        _w(b">")
        while True:
            c = self.getc()
            if c == _CTRL_A:
                if len(line) == 2 and line[0] == _CTRL_E:
                    if self.raw_paste(line[1]) & _SOFT:
                        return _SOFT
                    line = bytearray()
                    _w(b">")
                    continue
                line = bytearray()
                _w(b"raw REPL; CTRL-B to exit\r\n>")
                continue
            if c == _CTRL_B:
                _w(b"\r\n")
                self.mode = "friendly"
                return 0
            if c == _CTRL_C:
                line = bytearray()
                continue
            if c != _CTRL_D:
                line.append(c)
                continue
            _w(b"OK")
            if not line:
                _w(b"\r\n")
                return _SOFT
            src = bytes(line)
            line = bytearray()
            if self.execute(src, "exec", "<stdin>", eof=True) & _SOFT:
                return _SOFT
            gc.collect()
            _w(b">")

    def raw_paste(self, cmd):
        if cmd != ord("A"):
            _w(b"R\x00")
            return 0
        _w(b"R\x01")
        _w(bytes((_PASTE_WINDOW & 0xFF, _PASTE_WINDOW >> 8, 1)))
        remain = _PASTE_WINDOW
        data = bytearray()
        while True:
            c = self.getc()
            if c == _CTRL_C:
                _w(b"\x04\x04")
                print_exception(KeyboardInterrupt())
                _w(b"\x04")
                return 0
            if c == _CTRL_D:
                _w(b"\x04")
                break
            data.append(c)
            remain -= 1
            if remain == 0:
                _w(b"\x01")
                remain = _PASTE_WINDOW
        return self.execute(bytes(data), "exec", "<stdin>", eof=True)

    # ---- the board's main loop (ports/esp32/main.c) ----
    def run(self, app_source):
        _thread.start_new_thread(self._reader, ())
        ret = self.run_file("boot.py")
        if ret == 1 and self.mode == "friendly":   # main.py only after a boot.py that went well
            ret = self.run_file("main.py", app_source)
        app_source = None
        gc.collect()
        while not ret & _SOFT:
            try:
                ret = self.raw() if self.mode == "raw" else self.friendly()
            except KeyboardInterrupt:   # a Ctrl-C that arrived between two commands
                _w(b"\r\n")
                ret = 0
        _w(b"MPY: soft reboot\r\n")
        self._ctl("soft " + self.mode)
        while True:       # sim.py ends this process and starts the next one
            time.sleep(1)


def mount_device_fs(root, host_paths):
    """Make <state>/fs the device's "/" (files the simulator needs stay reachable, unlisted)."""
    vfs.umount("/")
    vfs.mount(_DeviceFS(root, host_paths), "/")
    os.chdir("/")
    sys.path[:] = ["", ".frozen", "/lib"]


def start(cfg, app_source, host_paths):
    """Called by sim_boot.py once the toolbox is loaded: never returns."""
    import machine
    sys.modules["machine"] = _Machine(machine)
    mount_device_fs(cfg["fs"], host_paths)
    Console(cfg).run(app_source)
