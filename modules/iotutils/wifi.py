# Wi-Fi: station and access point, several known networks, never stranded.
#
# Why the setup access point is WPA2 with a per-device password, never open: the setup form
# carries the home network's password and the device's admin password. On an open AP anyone in
# radio range reads them off the air, and a configured device that falls back to its AP because
# the router is down would let any passer-by re-point it to their own network. A WPA2 AP fixes
# both, so it is the only default. Its password is per device: an HMAC-SHA256 of the MAC address
# keyed with a random salt made on first use and kept in the store (folder "wifi"), so it is
# stable across reboots, cannot be computed from the MAC that the AP broadcasts, and changes with
# a factory reset. It is printed on the serial console each time the AP starts (print it on a
# label in production). An open AP is still possible, but only on request:
# wifi.access_point(True, password="").
#
#   from iotutils.wifi import Wifi
#   wifi = Wifi()
#   wifi.add_network("home", "secret")
#   wifi.start()          # returns at once: station, else AP + setup portal, retried in the background
#
# Known networks live in folder "wifi" (key "networks"); their passwords are never given back by
# any method. Retry/backoff intervals are class attributes (tests make them small).

import _thread
import gc

from iotutils import hal
from iotutils._compat import before_load, call_loaded, handed_out, log, print_exception, ticks_add, ticks_diff, ticks_ms
from iotutils import auth

# network.WLAN status codes (ESP32 port)
_STAT_IDLE = const(1000)
_STAT_CONNECTING = const(1001)
_STAT_GOT_IP = const(1010)
_STAT_NO_AP_FOUND = const(201)
_STAT_WRONG_PASSWORD = const(202)
_STAT_HANDSHAKE_TIMEOUT = const(204)
_REASON_4WAY_TIMEOUT = const(15)
_AUTH_OPEN = const(0)
_AUTH_WPA2_PSK = const(3)

# manager states
_IDLE = const(0)        # not connected, nothing running (manual use)
_TRYING = const(1)      # a round over the known networks is under way
_CONNECTED = const(2)
_WAITING = const(3)     # no known network works: AP (+ portal) up, next round scheduled
_STATES = const(("idle", "connecting", "connected", "portal"))
# Wifi's methods that live in wifi_setup.py
_LATER = const(("add_network", "forget", "networks", "station", "access_point", "scan", "connect", "reconnect",
                "result", "stop"))

# errors reported by status()["error"] and networks()[i]["error"]
WRONG_PASSWORD = "wrong_password"
NO_AP_FOUND = "no_ap_found"
ASSOC_FAIL = "assoc_fail"
TIMEOUT = "timeout"     # associated but no address (DHCP) or no answer in attempt_timeout_s
LOST = "lost"           # the connection dropped

# unambiguous characters for the AP password (32 of them: no modulo bias)
_ALPHABET = const("abcdefghijkmnpqrstuvwxyz23456789")


def _error_of(status):
    """A failed station status as an error name, or None while connecting or connected."""
    if status in (_STAT_GOT_IP, _STAT_CONNECTING, _STAT_IDLE):
        return None
    if status in (_STAT_WRONG_PASSWORD, _STAT_HANDSHAKE_TIMEOUT, _REASON_4WAY_TIMEOUT):
        return WRONG_PASSWORD
    if status == _STAT_NO_AP_FOUND or 210 <= status <= 212:
        return NO_AP_FOUND
    return ASSOC_FAIL


def check_ssid(ssid):
    b = ssid.encode() if isinstance(ssid, str) else b""
    if not 1 <= len(b) <= 32:
        raise ValueError("ssid: 1 to 32 bytes")
    if min(b) < 32 or b"\x7f" in b:   # (bytes: a str's characters become qstrs never freed)
        # (the driver takes a NUL as the name's end: "ho\0me" would join "ho")
        raise ValueError("ssid: no control characters")
    return ssid


def check_password(password):
    """A station password: "" (open network), 1..63 bytes of UTF-8 without NUL (WPA/WPA2 passphrases are 8..63,
    WEP keys 5 or 13: both exist in the field, so nothing shorter is refused here), or a
    64-hex-digit PSK. The router decides; a wrong one shows as status()["error"]."""
    if password is None:
        return ""
    if not isinstance(password, str):
        raise ValueError("password: must be a string")
    if "\x00" in password:   # (the driver ends a password at its NUL, as it ends an SSID)
        raise ValueError("password: no NUL character")
    n = len(password.encode())   # the driver's limit is in bytes: "é" is two
    if n <= 63:
        return password
    if n == 64:
        try:
            int(password, 16)
            return password
        except ValueError:
            pass
    raise ValueError("password: at most 63 characters (or 64 hex digits, or empty for an open network)")


def hostname_of(name):
    """A device name as a DHCP/mDNS host name: lower case letters, digits and '-', 1..32 chars."""
    if not isinstance(name, str):   # (b"abc" became "b-abc", ["x"] "x")
        raise ValueError("hostname: a string expected, got %s" % type(name).__name__)
    out = []
    for c in name.lower().encode():   # (bytes: a str's characters become qstrs never freed)
        if 97 <= c <= 122 or 48 <= c <= 57:
            out.append(c)
        elif out and out[-1] != 45:
            out.append(45)   # "-"
    h = bytes(out).decode().strip("-")[:32].strip("-")
    if not h:
        raise ValueError("hostname: needs a letter or digit")
    return h


class Wifi:
    """Station + access point manager. See the module comment."""

    #: seconds one network may take to associate and get an address before the next is tried
    attempt_timeout_s = 12
    #: first pause (s) between rounds over the known networks when none works; doubles each time
    retry_s = 10
    #: longest pause (s) between rounds
    retry_max_s = 300
    #: in AP fallback, scan this often (s): a known network that appears is tried at once
    scan_interval_s = 20
    #: ... but only this often while the access point has a client (most likely someone on the
    #: setup page): a scan takes the one radio off the AP's channel for about 2 s, and some
    #: clients drop the network then (arduino-esp32 #4554)
    scan_busy_s = 120
    #: the fallback AP and portal stay up this long (s) after the station connected, so the
    #: phone that did the setup sees the result and the new address
    ap_linger_s = 60
    #: a network that drops within this many seconds of connecting is tried after the others, in
    #: every round until it stays up that long (else the strongest network kept winning, dropping
    #: every few seconds, while a weaker one would have held)
    stable_s = 60
    #: period of the manager's step in the housekeeping (ms)
    poll_ms = 200
    _made = 0
    #: scan results are reused for this long (ms)
    scan_cache_ms = 3000
    #: most remembered networks; adding one more forgets the least recently used
    max_networks = 8
    #: default host name / AP name prefix (a MAC suffix is added)
    name_prefix = "iotutils"

    def __init__(self):
        from iotutils.persist import PersistentJSON, PersistentStr
        self._nets = PersistentJSON("networks", default=[], folder="wifi")
        self._host = PersistentStr("hostname", default="", folder="wifi", max_length=32)
        self._salt = PersistentStr("apsalt", default="", folder="wifi", max_length=32)
        self._sta = hal.wlan(hal.STA)
        self._host_given = None   # the host name the interface was last given (_apply_hostname)
        self._ap = hal.wlan(hal.AP)
        self._plock = _thread.allocate_lock()   # one state-machine step at a time
        self._mu = _thread.allocate_lock()      # short critical sections on shared fields
        self._state = _IDLE
        self._auto = False          # start() was called: recover by itself
        self._portal_wanted = False
        self._app = None
        self._portal = None
        self._running = False
        Wifi._made += 1   # the housekeeping task's name: "wifi", then "wifi2", ... for more managers
        self._task_name = "wifi" if Wifi._made == 1 else "wifi%d" % Wifi._made
        self._cands = []
        self._idx = 0
        self._trying = None
        self._t_attempt = 0
        self._ssid = None           # connected network
        self._errors = {}           # ssid -> last error (None: no error / trying)
        self._flaky = {}            # ssid -> True: dropped within stable_s of connecting (tried last)
        self._conn_at = 0           # ticks of the current connection
        self._error = None
        self._kick = False
        self._prefer = None
        self._seen = ()
        self._backoff = self.retry_s
        self._next_retry = 0
        self._next_scan = 0
        self._ap_fallback = False   # the AP is up because no network worked (not on request)
        self._ap_manual = False
        self._ap_off_at = None
        self._ap_ssid = None
        self._ap_pw = None
        self._scan_cache = None
        self._scan_at = 0

    # ---- known networks ----
    def __getattr__(self, attr):
        # setting Wi-Fi up (known networks, scans, the interfaces by hand, a blocking connect): its
        # code loads at first use (the setup page, the admin page, the app); the background
        # manager never needs it
        return handed_out("iotutils.wifi_setup", self, attr, _LATER)

    def on_setup_ap(self, ip):
        """True when address `ip` is a client of this device's access point (see wifi_setup.py).
        Each admin login asks: its code is loaded for the call (call_loaded), not kept after."""
        return call_loaded("iotutils.wifi_setup", "on_setup_ap", self, ip)

    def _load(self):
        v = self._nets.value
        return [dict(n) for n in v] if isinstance(v, list) else []

    def configured(self):
        return bool(self._load())

    def connected(self):
        """True while the station is connected to a network (status() without building it)."""
        return self._state == _CONNECTED and self._sta.isconnected()

    # ---- names ----
    def _mac_suffix(self):
        m = hal.mac()
        return "%02x%02x" % (m[-2], m[-1])

    def hostname(self, name=None):
        """The DHCP host name (persisted); hostname("Desk lamp") sets "desk-lamp"."""
        if name is not None:
            self._host.value = hostname_of(name)
            self._apply_hostname()
        return self._host.value or "%s-%s" % (self.name_prefix, self._mac_suffix())

    def _apply_hostname(self):
        # only when it changed: a round (every retry_s without a network) asks again, and a string
        # given each time would outlive the round in the interface and split the heap
        h = self.hostname()
        if h == self._host_given:
            return
        self._host_given = h
        try:
            self._sta.config(hostname=h)
        except (ValueError, OSError, TypeError, NotImplementedError):
            pass  # a port without per-interface host names

    def _sta_up(self):
        # the station interface on, with its host name (an interface brought up is told it again)
        if not self._sta.active():
            self._sta.active(True)
            self._host_given = None
        self._apply_hostname()

    def ap_ssid(self):
        if self._ap_ssid:
            return self._ap_ssid
        h = self._host.value
        sfx = self._mac_suffix()
        return "%s-%s" % (h[:27], sfx) if h else "%s-%s" % (self.name_prefix, sfx)

    def ap_password(self):
        """This device's AP password: HMAC-SHA256(random stored salt, MAC), 12 characters."""
        salt = self._salt.value
        if not salt:
            salt = auth.token(8)
            self._salt.value = salt
        d = auth.hmac_sha256(salt.encode(), bytes(hal.mac()))
        return "".join(_ALPHABET[b & 31] for b in d[:12])

    # ---- interfaces ----
    def _ap_up(self):
        pw = self._ap_pw if self._ap_pw is not None else self.ap_password()
        ssid = self.ap_ssid()
        fresh = not self._ap.active()
        self._ap.active(True)
        if pw:
            self._ap.config(essid=ssid, password=pw, authmode=_AUTH_WPA2_PSK)
        else:
            self._ap.config(essid=ssid, authmode=_AUTH_OPEN)
        if fresh:
            log("wifi: access point %s (%s) at %s" % (ssid, ("WPA2, password " + pw) if pw else "open",
                                                         self._ap.ifconfig()[0]))

    def _ap_down(self):
        self._portal_down()
        if self._ap.active():
            self._ap.active(False)
            log("wifi: access point off")

    # ---- the setup portal ----
    @property
    def portal(self):
        """The setup portal attached to this Wi-Fi (None until the access point first needed one)."""
        return self._portal

    def attach_portal(self, portal):
        """Called by portal.Portal: the AP fallback (de)activates it."""
        self._portal = portal
        if self._ap_fallback and self._portal_wanted:
            self._portal_up()

    def _portal_up(self):
        if self._portal is None:
            make = self._portal_wanted
            if not callable(make):
                # start(portal=True) by itself promises the setup portal; Device passes its own
                # builder, so only an app that uses Wifi alone loads the portal from here
                before_load("iotutils.portal")
                from iotutils.portal import default_portal as make
            if make(self, self._app) is None:
                self._portal_wanted = False  # no portal can be had (port 80 taken): AP only
            return  # the portal attached itself; attach_portal() brought it up
        ip = self._ap.ifconfig()[0]
        if not self._portal.active:
            self._portal.activate(ip)
            log("wifi: setup portal on %s" % self._portal.url())

    def _portal_down(self):
        if self._portal is not None and self._portal.active:
            self._portal.deactivate()

    # ---- scanning ----
    def _ap_clients(self):
        try:
            return len(self._ap.status("stations"))
        except (OSError, ValueError, TypeError):
            return 0

    def _scan_raw(self):
        self._sta_up()
        # the results stay (the cache, for the portal's next question): collected first, they land
        # in the heap's lowest holes, not wherever requests' garbage left the allocator. A scan takes
        # seconds; the collection a few ms
        gc.collect()
        res = self._sta.scan()
        self._scan_cache = res
        self._scan_at = ticks_ms()
        return res

    # ---- connecting ----
    def _candidates(self, scan):
        nets = self._load()
        if not nets:
            return ()   # (a round every retry_s: no new list each time, which would outlive it)
        if scan is None:
            try:
                scan = self._scan_raw()
            except OSError:
                scan = None
        if scan is None:  # no scan possible: everything, most recently used first
            cands = [(n["ssid"], n.get("pw", "")) for n in reversed(nets)]
            self._seen = ()
        else:
            rssi = {}
            for r in scan:
                try:
                    s = bytes(r[0]).decode()
                except UnicodeError:
                    continue
                if s and (s not in rssi or r[3] > rssi[s]):
                    rssi[s] = r[3]
            known = [n for n in nets if n["ssid"] in rssi]
            flaky = self._flaky
            known.sort(key=lambda n: (n["ssid"] in flaky, -rssi[n["ssid"]]))
            cands = [(n["ssid"], n.get("pw", "")) for n in known]
            cands += [(n["ssid"], n.get("pw", "")) for n in nets if n.get("hidden") and n["ssid"] not in rssi]
            self._seen = tuple(n["ssid"] for n in known)
        prefer = self._prefer
        self._prefer = None
        if prefer is not None:
            for i in range(len(cands)):
                if cands[i][0] == prefer:
                    cands.insert(0, cands.pop(i))
                    break
            else:
                for n in nets:
                    if n["ssid"] == prefer:
                        cands.insert(0, (prefer, n.get("pw", "")))
        return cands

    def _begin_round(self, now, scan):
        self._kick = False
        self._sta_up()
        self._cands = self._candidates(scan)
        self._idx = -1
        self._state = _TRYING
        if not self._cands:
            self._error = NO_AP_FOUND if self.configured() else None
        self._next_attempt(now)

    def _next_attempt(self, now):
        while True:
            self._idx += 1
            if self._idx >= len(self._cands):
                self._end_round(now)
                return
            ssid, pw = self._cands[self._idx]
            with self._mu:
                self._errors[ssid] = None
                self._trying = ssid
            try:
                try:
                    self._sta.disconnect()
                except OSError:
                    pass
                self._sta.connect(ssid, pw)
                self._t_attempt = now
                log("wifi: connecting to %s" % ssid)
                return
            except OSError as e:
                log("wifi: cannot connect to %s: %s" % (ssid, e))
                self._attempt_failed(now, ASSOC_FAIL)

    def _attempt_failed(self, now, error):
        ssid = self._trying
        with self._mu:
            if ssid is not None:
                self._errors[ssid] = error
            # the most useful error of the round: a wrong password beats "not found"
            if self._error != WRONG_PASSWORD or self._idx == 0:
                self._error = error
            self._trying = None
        if ssid is not None:
            log("wifi: %s: %s" % (ssid, error))
        try:
            self._sta.disconnect()
        except OSError:
            pass

    def _end_round(self, now):
        with self._mu:
            self._trying = None
        if not self._auto:
            self._state = _IDLE
            return
        self._state = _WAITING
        delay = self._backoff
        self._backoff = min(self._backoff * 2, self.retry_max_s)
        self._next_retry = ticks_add(now, int(delay * 1000))
        self._next_scan = ticks_add(now, int(self.scan_interval_s * 1000))
        if not self._ap_fallback:
            self._ap_fallback = True
            self._ap_off_at = None
            log("wifi: no known network works%s: starting the access point" %
                  ("" if self.configured() else " (none configured)"))
            self._ap_up()
        self._ap_off_at = None
        if self._portal_wanted:
            self._portal_up()
        if self.configured():
            log("wifi: retrying the known networks in %ss" % delay)

    def _connected(self, now):
        ssid = self._trying
        with self._mu:
            self._state = _CONNECTED
            self._ssid = ssid
            self._trying = None
            self._error = None
            self._errors[ssid] = None
        self._backoff = self.retry_s
        self._conn_at = now
        try:
            rssi = self._sta.status("rssi")
        except (OSError, ValueError):
            rssi = 0
        log("wifi: connected to %s as %s (%s, %d dBm)" % (ssid, self.hostname(), self._sta.ifconfig()[0], rssi))
        if self._ap_fallback:
            self._ap_off_at = ticks_add(now, int(self.ap_linger_s * 1000))
        # most recently used last: the order used when no scan is possible
        with self._mu:
            nets = self._load()
            if nets and nets[-1]["ssid"] != ssid:
                for i in range(len(nets)):
                    if nets[i]["ssid"] == ssid:
                        nets.append(nets.pop(i))
                        self._nets.value = nets
                        break

    def _step(self, now):
        st = self._state
        if st == _TRYING:
            status = self._sta.status()
            if status == _STAT_GOT_IP:
                self._connected(now)
                return
            err = _error_of(status)
            if err is None and ticks_diff(now, self._t_attempt) >= self.attempt_timeout_s * 1000:
                err = TIMEOUT
            if err is not None:
                self._attempt_failed(now, err)
                self._next_attempt(now)
        elif st == _CONNECTED:
            if self._kick:
                self._begin_round(now, None)
            elif not self._sta.isconnected():
                log("wifi: lost the connection to %s" % self._ssid)
                with self._mu:
                    if ticks_diff(now, self._conn_at) < self.stable_s * 1000:
                        self._flaky[self._ssid] = True
                    else:
                        self._flaky.pop(self._ssid, None)
                    self._errors[self._ssid] = LOST
                    self._error = LOST
                    self._ssid = None
                    self._state = _IDLE
                if self._auto:
                    self._backoff = self.retry_s
                    self._begin_round(now, None)
            elif self._ap_off_at is not None and ticks_diff(now, self._ap_off_at) >= 0:
                self._ap_off_at = None
                self._ap_fallback = False
                if not self._ap_manual:
                    self._ap_down()
        elif st == _WAITING:
            if self._kick or ticks_diff(now, self._next_retry) >= 0:
                self._begin_round(now, None)
            elif ticks_diff(now, self._next_scan) >= 0:
                self._next_scan = ticks_add(now, int(self.scan_interval_s * 1000))
                if ticks_diff(now, self._scan_at) < int(self.scan_busy_s * 1000) and self._ap_clients():
                    return
                try:
                    scan = self._scan_raw()
                except OSError:
                    return
                known = [n["ssid"] for n in self._load()]
                for r in scan:
                    try:
                        s = bytes(r[0]).decode()
                    except UnicodeError:
                        continue
                    if s in known and s not in self._seen:
                        log("wifi: %s is back" % s)
                        self._begin_round(now, scan)
                        return
        elif self._kick and self._auto:
            self._begin_round(now, None)

    # ---- running ----
    def start(self, portal=True, app=None, thread=True):
        """Connect in the background; if no known network works, start the AP (+ setup portal) and keep
        retrying. Returns at once. portal: True for the setup portal on `app` (a WebServer; one is made
        if None), a callable (wifi, app) -> portal that builds it when the AP first needs it (loaded
        only then), or False for the AP alone. thread=False: not in the housekeeping
        (iotutils.tasks), the caller calls poll() often (a main loop)."""
        self._auto = True
        self._portal_wanted = portal
        if app is not None:
            self._app = app
        with self._plock:
            self._backoff = self.retry_s
            if self._state != _CONNECTED:
                self._state = _IDLE
            self._kick = True   # the first step (thread or poll) scans and connects: nothing blocks here
        if thread:
            self._running = True
            from iotutils import tasks
            # a step of the device's housekeeping (no thread of its own), woken at once by a
            # DNS query to the portal; added again after a stop(), replaced if still there
            tasks.shared().add(self._task_name, self._task, sock=self._dns_sock).start()
        return self

    def _task(self, now):
        if not self._running:
            return None   # stopped: the housekeeper drops the task
        self.poll()
        return self.poll_ms

    def _dns_sock(self):
        p = self._portal
        d = p.dns if p is not None and p.active else None
        return d.sock if d is not None else None

    def poll(self):
        """One non-blocking step of the manager (and pending portal DNS queries). Safe to call from
        a main loop while the housekeeping runs it too."""
        if not self._plock.acquire(0):
            return
        try:
            p = self._portal
            if p is not None and p.active:
                p.serve_dns(0)
            self._step(ticks_ms())
        except Exception as e:  # the manager must outlive any driver error
            log("wifi: error in poll:")
            print_exception(e)
        finally:
            self._plock.release()

    # ---- status ----
    def status(self):
        """{"mode", "connected", "ssid", "ip", "rssi", "ap_ssid", "ap_ip"} plus "state", "error",
        "trying", "hostname", "ap_clients" (MACs), "configured"."""
        sta_on = self._sta.active()
        ap_on = self._ap.active()
        mode = "sta+ap" if sta_on and ap_on else "sta" if sta_on else "ap" if ap_on else "off"
        connected = self._state == _CONNECTED and self._sta.isconnected()
        rssi = None
        if connected:
            try:
                rssi = self._sta.status("rssi")
            except (OSError, ValueError):
                pass
        clients = []
        if ap_on:
            try:
                for c in self._ap.status("stations"):
                    clients.append(":".join("%02x" % b for b in c[0]))
            except (OSError, ValueError, TypeError):
                pass
        return {
            "mode": mode, "connected": connected, "ssid": self._ssid if connected else None,
            "ip": self._sta.ifconfig()[0] if connected else None, "rssi": rssi,
            "ap_ssid": self._ap.config("essid") if ap_on else None,
            "ap_ip": self._ap.ifconfig()[0] if ap_on else None,
            "ap_clients": clients, "state": _STATES[self._state], "trying": self._trying,
            "error": None if connected else self._error, "hostname": self.hostname(),
            "configured": self.configured(),
        }
