# SSDP (UPnP discovery) responder: answers M-SEARCH on 239.255.255.250:1900 for the services it
# announces, and sends NOTIFY ssdp:alive / ssdp:byebye. Used by alexa.py for the Hue bridge and the
# WeMo devices; not tied to them.
#
#     s = SSDP()
#     s.add("http://%s:%d/description.xml", "uuid:2f402f80-...", ("upnp:rootdevice",
#           "urn:schemas-upnp-org:device:basic:1"), "hue-bridgeid: 001788FFFE0A0B0C\r\n", 80)
#     s.start()        # binds; then call s.serve(timeout_ms) from a thread of yours, or s.run()
#
# LOCATION is a format with two %-slots (ip, port) filled at answer time from hal.ip()/hal.port(80)
# (or the port given to add()), so a Wi-Fi reconnect with a new address needs nothing here.
# Replies to a search are delayed at random by up to MX seconds (capped by max_delay_ms), as UPnP asks,
# without blocking: they wait in a small queue that serve() flushes when due.
#
# Not an amplifier: a search is answered only when it comes from the device's own subnet (hal.ip() and
# hal.netmask()), and answers are rate-limited: a token bucket per source address (a small table, the
# least recently heard source goes) and one for all sources together. Whatever is over the limits is
# dropped without a word; stats counts it.
import gc
import os
import socket

from iotutils import hal
from iotutils._compat import allocate_lock, log, ready, ticks_diff, ticks_ms

_GROUP = const("239.255.255.250")
_PORT = const(1900)
_IPPROTO_IP = const(0)
# Linux numbers (the simulator); lwIP (ESP32) sends multicast on the station interface by default
_IP_MULTICAST_IF = const(32)
_IP_MULTICAST_TTL = const(33)
_MAX_PACKET = const(1024)

def _rand(n):
    """A random int in [0, n)."""
    if n <= 0:
        return 0
    return int.from_bytes(os.urandom(4), "little") % n


def ip4(text):
    """A dotted IPv4 address ("192.168.1.5") as 4 bytes, or None for anything else (a host name, IPv6)."""
    parts = text.split(".")
    if len(parts) != 4:
        return None
    out = bytearray(4)
    for i in range(4):
        p = parts[i]
        if not 0 < len(p) < 4 or p.strip("0123456789"):
            return None
        n = int(p)
        if n > 255:
            return None
        out[i] = n
    return bytes(out)


def addr_ip(addr):
    """The IPv4 address of a socket address as 4 bytes, or None: a (host, port) tuple (CPython, the
    ESP32 port) or the unix port's raw sockaddr_in (family, port, address)."""
    if isinstance(addr, tuple):
        return ip4(addr[0]) if addr and isinstance(addr[0], str) else None
    if isinstance(addr, (bytes, bytearray)) and len(addr) >= 8 and 2 in (addr[0], addr[1]):  # AF_INET
        return bytes(addr[4:8])
    return None


def _ip_bytes(ip):
    b = ip4(ip)
    if b is None:
        raise ValueError("not an IPv4 address: %r" % (ip,))
    return b


def _refill(b, burst, rate, now):
    """Token bucket b ([..., milli-answers, ms of the last refill]) refilled at `rate` answers a second
    up to `burst`: the whole answers it holds now."""
    el = ticks_diff(now, b[-1])
    if el > 0:
        b[-2] = min(burst * 1000, b[-2] + min(el, 60000) * rate)
    b[-1] = now
    return b[-2] // 1000


def parse(data):
    """An SSDP datagram -> (start line, {lower-case header: value}) or None if it is not one."""
    try:
        text = bytes(data).decode()
    except UnicodeError:
        return None
    lines = text.split("\r\n")
    if len(lines) < 2:
        lines = text.split("\n")
    start = lines[0].strip()
    if not start:
        return None
    headers = {}
    for line in lines[1:]:
        k, sep, v = line.partition(":")
        if sep:
            headers[k.strip().lower()] = v.strip()
    return start, headers


def st_matches(st, types):
    """The announced types that answer search target st (ssdp:all -> all of them; urn:x:device:** is a
    prefix wildcard as Echo uses for Belkin). Compared without case (Hue's own description says
    "Basic:1", searchers send "basic:1"); an exact match answers with the searcher's spelling."""
    if st == "ssdp:all":
        return list(types)
    low = st.lower()
    if low.endswith("**"):
        prefix = low[:-2]
        return [t for t in types if t.lower().startswith(prefix)]
    return [st for t in types if t.lower() == low]


class SSDP:
    """One multicast socket, a list of announced services, a queue of delayed replies."""

    #: upper bound for the random reply delay (ms) whatever MX asks: Echo and HA wait 1-3 s
    max_delay_ms = 1000
    #: CACHE-CONTROL max-age of announcements (s)
    max_age = 100
    #: SERVER header (Echo does not check it; Hue bridges send this form)
    server = "Linux/3.14.0 UPnP/1.0 IpBridge/1.24.0"
    #: most queued answers; more searches are dropped (a flood must not eat the heap)
    max_pending = 24
    #: answers to one source address: a burst of source_burst, then source_rate a second (a token
    #: bucket per source, kept for the max_sources most recently heard; the oldest goes)
    source_burst = 24
    source_rate = 8
    max_sources = 8
    #: answers to all sources together: a burst of total_burst, then total_rate a second
    total_burst = 64
    total_rate = 32
    #: print each answered search on the console
    log = False

    def __init__(self):
        self._services = []   # [location_fmt, uuid, types, extra, port]
        # [due_ms, addr, service, st]; made with room for max_pending at once and changed in place
        # (slice deletes: they never shrink it), so a burst of searches does not move it up the heap
        # between two collections, where it would stay and split the free space
        self._pending = [None] * self.max_pending
        del self._pending[:]
        self._turn = 0   # the service a search cut short by the limits begins with
        self._lock = allocate_lock()
        self._sock = None
        self._poller = None
        self._running = False
        self._closed = False
        self.ip = None        # the address the group was joined on
        self._net = None      # (own address, netmask), 4 bytes each: who is local
        # token buckets [address (4 bytes), milli-answers, ms], most recently heard last; with room
        # for max_sources, changed in place (as _pending)
        self._sources = [None] * self.max_sources
        del self._sources[:]
        # the bucket of all sources: [milli-answers, ms], filled at the first search (total_burst may
        # be set after construction); made here, not in the middle of traffic
        self._all = [None, 0]
        #: searches for something announced here; answers sent; searches dropped in whole or part
        #: (rate limits, queue full, off the subnet); of those, from off the subnet
        self.stats = {"searches": 0, "answered": 0, "dropped": 0, "offnet": 0}

    # ---- what we announce ----
    def add(self, location, uuid, types, extra, port):
        """Announce service `uuid` (e.g. "uuid:Socket-1_0-X") of the given types at location
        (a format taking (ip, host_port)); extra: more header lines ("" for none); port: the device
        port that serves it."""
        entry = [location, uuid, tuple(types), extra, port]
        with self._lock:
            self._services = self._services + [entry]
        return entry

    def remove(self, entry):
        with self._lock:
            self._services = [e for e in self._services if e is not entry]
            pending = self._pending
            for i in range(len(pending) - 1, -1, -1):
                if pending[i][2] is entry:
                    del pending[i:i + 1]

    # ---- socket ----
    def start(self):
        """Bind 0.0.0.0:1900 (shared with other listeners) and join the group; then NOTIFY alive."""
        if self._sock is not None or self._closed:
            return
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(socket.getaddrinfo("0.0.0.0", hal.port(_PORT))[0][-1])
            ip = hal.ip()
            s.setsockopt(_IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, _ip_bytes(_GROUP) + _ip_bytes(ip))
        except Exception:  # no network yet (no address, no interface): the caller retries later
            s.close()
            raise OSError("ssdp: cannot join %s on %s" % (_GROUP, hal.ip()))
        if getattr(hal, "PLATFORM", "") != "esp32":
            try:
                s.setsockopt(_IPPROTO_IP, _IP_MULTICAST_IF, _ip_bytes(ip))
                s.setsockopt(_IPPROTO_IP, _IP_MULTICAST_TTL, 2)
            except OSError:
                pass
        self._poller = None
        self._sock = s
        self.ip = ip
        self._net = None
        self._local(b"\0\0\0\0")   # works out (address, netmask) now, not at the first search mid-traffic
        self._running = True
        self.notify("ssdp:alive", None)

    def started(self):
        return self._sock is not None

    def moved(self):
        """True when the device's address is no longer the one the group was joined on (Wi-Fi went from
        the setup access point to the home network): the caller restarts with rejoin()."""
        try:
            return self._sock is not None and hal.ip() != self.ip
        except Exception:
            return False

    def rejoin(self):
        """Close the socket (no byebye: the old address is gone) and start again on the current one."""
        s = self._sock
        self._sock = None
        if s is not None:
            s.close()
        self.start()

    def closed(self):
        return self._closed

    def stop(self):
        """NOTIFY byebye and close (for good: start() does nothing afterwards)."""
        self._closed = True
        if self._sock is None:
            return
        try:
            self.notify("ssdp:byebye", None)
        except OSError:
            pass
        self._running = False
        s = self._sock
        self._sock = None
        s.close()

    def run(self):
        """Serve until stop() (for a thread of its own)."""
        while self._running:
            self.serve(500)

    # ---- messages ----
    def _location(self, entry):
        return entry[0] % (hal.ip(), hal.port(entry[4]))

    def response(self, entry, st):
        """The unicast answer to a search for st."""
        usn = entry[1] if st == entry[1] else entry[1] + "::" + st
        return ("HTTP/1.1 200 OK\r\nHOST: %s:%d\r\nEXT:\r\nCACHE-CONTROL: max-age=%d\r\n"
                "LOCATION: %s\r\nSERVER: %s\r\n%sST: %s\r\nUSN: %s\r\n\r\n"
                % (_GROUP, _PORT, self.max_age, self._location(entry), self.server, entry[3], st, usn))

    def notify_message(self, entry, nt, nts):
        usn = entry[1] if nt == entry[1] else entry[1] + "::" + nt
        loc = "LOCATION: %s\r\n" % self._location(entry) if nts == "ssdp:alive" else ""
        return ("NOTIFY * HTTP/1.1\r\nHOST: %s:%d\r\nCACHE-CONTROL: max-age=%d\r\n%sSERVER: %s\r\n"
                "%sNTS: %s\r\nNT: %s\r\nUSN: %s\r\n\r\n"
                % (_GROUP, _PORT, self.max_age, loc, self.server, entry[3], nts, nt, usn))

    def notify(self, nts, entries):
        """Multicast NOTIFY nts (ssdp:alive / ssdp:byebye) for every type of every service."""
        s = self._sock
        if s is None:
            return
        dest = socket.getaddrinfo(_GROUP, _PORT)[0][-1]
        for entry in (entries or self._services):
            for nt in entry[2] + (entry[1],):
                try:
                    s.sendto(self.notify_message(entry, nt, nts).encode(), dest)
                except OSError:
                    pass  # no route yet (Wi-Fi down): the next alive or search answer will do

    def handle(self, data, addr, now):
        """Queue the answers to one datagram. Returns how many were queued."""
        msg = parse(data)
        if msg is None or not msg[0].startswith("M-SEARCH"):
            return 0
        h = msg[1]
        if h.get("man", "").strip('"') != "ssdp:discover":
            return 0
        st = h.get("st", "")
        try:
            mx = int(h.get("mx", "1"))
        except ValueError:
            mx = 1
        limit = min(max(mx, 0) * 1000, self.max_delay_ms)
        if now is None:
            now = ticks_ms()
        with self._lock:
            want = 0
            for entry in self._services:
                want += len(st_matches(st, entry[2] + (entry[1],)))
            if not want:
                return 0
            stats = self.stats
            stats["searches"] += 1
            ip = addr_ip(addr)
            if ip is None or not self._local(ip):
                stats["dropped"] += 1
                stats["offnet"] += 1
                return 0
            src = self._source(ip, now)
            if self._all[0] is None:
                self._all[0], self._all[1] = self.total_burst * 1000, now
            n = min(want, self.max_pending - len(self._pending),
                    _refill(src, self.source_burst, self.source_rate, now),
                    _refill(self._all, self.total_burst, self.total_rate, now))
            if n < want:
                stats["dropped"] += 1
            if n <= 0:
                return 0
            src[1] -= n * 1000
            self._all[0] -= n * 1000
            left = n
            services = self._services
            k = len(services)
            # cut short (ssdp:all with many WeMo devices): the next such search begins where this one
            # stopped, so every service is answered in turn, not the same ones every time
            first = self._turn % k if n < want else 0
            for j in range(k):
                entry = services[(first + j) % k]
                for t in st_matches(st, entry[2] + (entry[1],)):
                    if left:
                        # MX asks for a random spread; unicast answers to one searcher stay in order
                        self._pending.append([now + _rand(limit + 1) if limit else now, addr, entry, t])
                        left -= 1
                        if not left and n < want:
                            self._turn = (first + j + 1) % k
        return n

    def _local(self, ip):
        """Whether address ip (4 bytes) is on the device's own subnet."""
        net = self._net
        if net is None:
            a, m = ip4(hal.ip()), ip4(hal.netmask())
            if a is None or m is None:
                return False
            net = self._net = (a, m)
        a, m = net
        for i in range(4):
            if (ip[i] ^ a[i]) & m[i]:
                return False
        return True

    def _source(self, ip, now):
        """The token bucket of source ip, now the most recently heard (a new one starts full)."""
        srcs = self._sources
        for i in range(len(srcs)):
            if srcs[i][0] == ip:
                b = srcs[i]
                del srcs[i:i + 1]   # (pop() would shrink the list's room)
                srcs.append(b)
                return b
        if len(srcs) >= self.max_sources:
            b = srcs[0]   # the least recently heard one's bucket, reused
            del srcs[0:1]
        else:
            # a bucket lives as long as the device: made among this search's garbage it would stay
            # there and split the free heap once that is collected (a collection at each of the first
            # max_sources addresses only; later ones reuse buckets). The address is copied: the
            # packet's own bytes would stay where the packet was read
            gc.collect()
            b = [bytearray(4), 0, 0]
        b[0][:] = ip
        b[1], b[2] = self.source_burst * 1000, now
        srcs.append(b)
        return b

    def due(self, now):
        """Remove and return the queued answers whose time has come: [(addr, bytes)]."""
        if not self._pending:
            return ()   # the usual pass: nothing made
        if now is None:
            now = ticks_ms()
        out = []
        with self._lock:
            pending = self._pending   # changed in place: it lives as long as the device
            i = 0
            while i < len(pending):
                p = pending[i]
                if ticks_diff(now, p[0]) >= 0:
                    out.append((p[1], self.response(p[2], p[3]).encode()))
                    del pending[i:i + 1]   # (pop() would shrink the list's room)
                else:
                    i += 1
        return out

    def next_due_ms(self, now):
        """Milliseconds until the next queued answer (None: nothing queued)."""
        if now is None:
            now = ticks_ms()
        with self._lock:
            soonest = None
            for p in self._pending:   # (a generator over `now` would cost a cell at every call)
                d = ticks_diff(p[0], now)
                if soonest is None or d < soonest:
                    soonest = d
        return None if soonest is None else max(0, soonest)

    def _recv(self, s, wait_ms):
        # Wait in short poll() slices against our own clock, never with a socket timeout: on the
        # unix port other threads' garbage collections interrupt a blocking recv, which restarts
        # with its whole timeout and so may never time out, starving the NOTIFY jobs of this thread.
        if self._poller is None:
            import select
            s.setblocking(False)
            self._poller = select.poll()
            self._poller.register(s, select.POLLIN)
        t0 = ticks_ms()
        wait = 0
        while True:
            # asked before reading: a recvfrom() that finds nothing costs a buffer and an exception
            try:
                if ready(self._poller, wait):
                    return s.recvfrom(_MAX_PACKET)
            except OSError:  # woken for nothing (EAGAIN), or closed by stop()
                pass
            left = wait_ms - ticks_diff(ticks_ms(), t0)
            if left <= 0 or self._sock is not s:
                return None
            wait = min(left, 50)

    def serve(self, timeout_ms):
        """Wait up to timeout_ms for a datagram (less when an answer is due), handle it, send due answers."""
        s = self._sock
        if s is None:
            return
        wait = self.next_due_ms(None)
        if wait is None or wait > timeout_ms:
            wait = timeout_ms
        got = self._recv(s, wait)
        data, addr = got if got is not None else (None, None)
        if data is not None and self.handle(data, addr, None) and self.log:
            log("ssdp: search", parse(data)[1].get("st"))
        for addr, packet in self.due(None):
            try:
                s.sendto(packet, addr)
                self.stats["answered"] += 1
            except OSError:
                pass
