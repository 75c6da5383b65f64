"""A serial Dut without pytest-embedded: the same write()/expect() the scenarios use, over pyserial.

pytest-embedded's SerialDut (its `dut` fixture with `--embedded-services serial`) reads the port in a
thread and matches with pexpect; this does the same in a few lines, so `make test` runs the HIL
scenarios without loading the pytest-embedded plugin into every other test of the suite. `make hil`
uses pytest-embedded's own Dut (tests/hil/conftest.py). Semantics kept: write(str) appends "\\n",
bytes go as they are; expect(pattern) searches what arrived since the last match (bytes or str
patterns compile with re.DOTALL, as pexpect does; compiled patterns are used as they are), consumes
up to the end of the match and returns the re.Match; return_what_before_match=True returns the
bytes before it; expect_exact() matches a literal.
"""
import re
import threading
import time

import serial


class ExpectTimeout(AssertionError):
    pass


class SimDut:
    def __init__(self, port, baud=115200, logfile=None):
        self.port = port
        self.serial = serial.Serial(port, baud, timeout=0.05)
        self._buf = b""
        self._cond = threading.Condition()
        self._closed = False
        self._log = open(logfile, "ab") if logfile else None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        while not self._closed:
            try:
                data = self.serial.read(4096)
            except (OSError, serial.SerialException, TypeError):
                if self._closed:
                    return
                time.sleep(0.05)
                continue
            if data:
                if self._log:
                    self._log.write(data)
                    self._log.flush()
                with self._cond:
                    self._buf += data
                    self._cond.notify_all()

    def write(self, data):
        if isinstance(data, str):
            data = (data + "\n").encode()
        self.serial.write(data)

    def _expect(self, search, what, timeout, return_what_before_match):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                m = search(self._buf)
                if m is not None:
                    before = self._buf[:m.start()]
                    self._buf = self._buf[m.end():]
                    return before if return_what_before_match else m
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = self._buf[-600:].decode(errors="replace")
                    raise ExpectTimeout("Not found %r within %.0f s; bytes since the last match (tail):\n%s"
                                        % (what, timeout, tail))
                self._cond.wait(min(left, 0.2))

    def expect(self, pattern, timeout=30, return_what_before_match=False):
        if isinstance(pattern, str):
            pattern = pattern.encode()
        rx = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern, re.DOTALL)
        return self._expect(rx.search, rx.pattern, timeout, return_what_before_match)

    def expect_exact(self, pattern, timeout=30, return_what_before_match=False):
        lit = pattern.encode() if isinstance(pattern, str) else pattern

        class _Match:
            def __init__(self, start):
                self._start = start

            def start(self):
                return self._start

            def end(self):
                return self._start + len(lit)

            def group(self, n=0):
                return lit

        def search(buf):
            i = buf.find(lit)
            return _Match(i) if i >= 0 else None
        return self._expect(search, lit, timeout, return_what_before_match)

    def close(self):
        self._closed = True
        self._thread.join(2)
        self.serial.close()
        if self._log:
            self._log.close()
