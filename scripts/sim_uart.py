#!/usr/bin/env python3
"""The simulated device's USB-serial adapter: a pseudo-terminal that outlives the device.

Started by `scripts/sim.py --serial PATH` (never by hand): it makes a PTY, points the symlink PATH at
its slave (/dev/pts/N, which a host tool opens like /dev/ttyUSB0) and relays bytes between the PTY
and whichever sim.py supervisor is connected to its Unix socket. A power cut (SIGKILL of sim.py)
drops that connection but not the PTY: a host tool keeps its port open and sees the next boot's
banner, as with a board whose USB-serial chip stays powered. A clean stop of sim.py ends it; so
does LINGER_S seconds without any supervisor (a power cut nobody ends).

Like a UART, bytes the device sends while no host has the port open are lost, not queued for the
next one to open it; bytes the host sends while the device is off are lost too.

Supervisor -> adapter: frames b"L" + 4-byte length + the symlink path (hello), b"D" + 4-byte
length + console bytes, b"Q" (quit). Adapter -> supervisor: the host's bytes, unframed.
"""
import argparse
import os
import select
import signal
import socket
import struct
import sys
import time
import tty

LINGER_S = 120           # no supervisor for this long (a power cut nobody ended): exit
MAX_PENDING = 256 * 1024  # device output the host has not read yet; beyond, it is dropped like a UART overrun


def _relink(link, target):
    tmp = "%s.tmp%d" % (link, os.getpid())
    try:
        os.unlink(tmp)
    except OSError:
        pass
    os.symlink(target, tmp)
    os.replace(tmp, link)


class Adapter:
    def __init__(self, sock_path, link):
        self.master, slave = os.openpty()
        tty.setraw(slave)  # raw until the host sets its own mode: no echo of the device's output
        self.name = os.ttyname(slave)
        os.close(slave)    # the PTY "hangs up" (POLLHUP) while no host has it open
        os.set_blocking(self.master, False)
        self.link = None
        self.relink(link)
        self.sock_path = sock_path
        try:
            os.unlink(sock_path)
        except OSError:
            pass
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(sock_path)
        self.srv.listen(2)
        self.conn = None
        self.inbuf = b""        # partial frames from the supervisor
        self.pending = bytearray()
        self.alone_since = time.monotonic()

    def relink(self, link):
        if link and link != self.link:
            _relink(link, self.name)
            self.link = link

    def host_present(self):
        p = select.poll()
        p.register(self.master, select.POLLIN)
        return not any(ev & select.POLLHUP for _, ev in p.poll(0))

    def close(self):
        if self.link:
            try:
                if os.readlink(self.link) == self.name:
                    os.unlink(self.link)
            except OSError:
                pass
        try:
            os.unlink(self.sock_path)
        except OSError:
            pass
        os.close(self.master)

    def _drop_conn(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None
            self.inbuf = b""
            self.alone_since = time.monotonic()

    def _frames(self, data):
        """Handle supervisor frames; returns False on quit."""
        self.inbuf += data
        while self.inbuf:
            kind = self.inbuf[:1]
            if kind == b"Q":
                return False
            if len(self.inbuf) < 5:
                break
            n = struct.unpack(">I", self.inbuf[1:5])[0]
            if len(self.inbuf) < 5 + n:
                break
            body, self.inbuf = self.inbuf[5:5 + n], self.inbuf[5 + n:]
            if kind == b"L":
                self.relink(body.decode())
            elif kind == b"D":
                if self.host_present():
                    self.pending += body
                    if len(self.pending) > MAX_PENDING:
                        del self.pending[:len(self.pending) - MAX_PENDING]
        return True

    def run(self):
        while True:
            present = self.host_present()
            if not present:
                self.pending.clear()
            rl = [self.srv] + ([self.conn] if self.conn is not None else []) + ([self.master] if present else [])
            wl = [self.master] if present and self.pending else []
            # while no host has the port open the master is always "ready" (HUP): poll it slowly instead
            r, w, _ = select.select(rl, wl, [], 1.0 if present else 0.05)
            if self.srv in r:
                conn, _ = self.srv.accept()
                self._drop_conn()   # a new supervisor (the old one lost power)
                self.conn = conn
            if self.conn is not None and self.conn in r:
                try:
                    data = self.conn.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self._drop_conn()
                elif not self._frames(data):
                    return
            if self.master in r:
                try:
                    data = os.read(self.master, 4096)
                except OSError:
                    data = b""
                if data and self.conn is not None:
                    try:
                        self.conn.sendall(data)
                    except OSError:
                        self._drop_conn()
            if self.master in w and self.pending:
                try:
                    n = os.write(self.master, self.pending)
                    del self.pending[:n]
                except BlockingIOError:
                    pass
                except OSError:
                    self.pending.clear()
            if self.conn is None and time.monotonic() - self.alone_since > LINGER_S:
                return


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sock", required=True, help="Unix socket the supervisor (sim.py) connects to")
    ap.add_argument("--link", required=True, help="symlink to create, pointing at the PTY")
    args = ap.parse_args(argv)
    adapter = Adapter(args.sock, args.link)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    try:
        adapter.run()
    finally:
        adapter.close()


if __name__ == "__main__":
    main()
