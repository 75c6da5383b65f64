# Setting Wi-Fi up: the known networks (add, forget, list), scans, the interfaces by hand, a blocking
# connect, how the last attempt on a network went, stopping, and whether a client is one of the
# setup access point's (the admin page's and the setup page's password checks). These are iotutils.wifi.Wifi's methods that the
# setup page, the admin page or an app call; the background manager never does. Wifi hands them out
# (its __getattr__) and this module is loaded at the first call; Device.start() lets it go (an app
# may have added its network at boot). on_setup_ap, which every login asks, is loaded for the call
# only (Wifi.on_setup_ap). Each function takes the Wifi as `self`; the state stays on it.
from iotutils._compat import sleep_ms, ticks_add, ticks_diff, ticks_ms
from iotutils.wifi import TIMEOUT, check_password, check_ssid

# wifi.py's manager states, and the open network's auth mode (network.WLAN)
_IDLE = const(0)
_TRYING = const(1)
_CONNECTED = const(2)
_AUTH_OPEN = const(0)


def add_network(self, ssid, password="", hidden=False):
    """Remember a network (replacing one with the same SSID). hidden: not in scans, try it blind."""
    check_ssid(ssid)
    password = check_password(password)
    if type(hidden) is not bool:   # ("no" counted as true)
        raise ValueError("hidden: true or false expected")
    with self._mu:
        nets = [n for n in self._load() if n.get("ssid") != ssid]
        nets.append({"ssid": ssid, "pw": password, "hidden": hidden})
        while len(nets) > self.max_networks:
            nets.pop(0)
        self._nets.value = nets
        self._errors.pop(ssid, None)


def forget(self, ssid):
    """Forget a network; returns True if it was known. Leaves it if connected to it now."""
    with self._mu:
        nets = self._load()
        left = [n for n in nets if n.get("ssid") != ssid]
        if len(left) == len(nets):
            return False
        self._nets.value = left
        self._errors.pop(ssid, None)
    if self._ssid == ssid:
        self._kick = True
        try:
            self._sta.disconnect()
        except OSError:
            pass
    return True


def networks(self):
    """Known networks, most recently used last: [{"ssid", "secure", "hidden", "error"}] (no passwords)."""
    with self._mu:
        return [{"ssid": n["ssid"], "secure": bool(n.get("pw")), "hidden": bool(n.get("hidden")),
                 "connected": n["ssid"] == self._ssid and self._state == _CONNECTED,
                 "error": self._errors.get(n["ssid"])} for n in self._load()]


def station(self, on=True):
    """Station interface on/off. Off also stops the background reconnecting."""
    if not isinstance(on, bool):   # ("no" turned it on)
        raise ValueError("on: True or False expected, got %r" % (on,))
    if on:
        self._sta_up()
    else:
        with self._mu:
            self._state = _IDLE
            self._ssid = None
        self._sta.active(False)


def access_point(self, on=True, ssid=None, password=None):
    """Access point on/off. Default name "<hostname>-xxxx"; default password: ap_password()
    (WPA2); password="" opens it."""
    if on:
        # both checked before either is kept
        if ssid is not None:
            check_ssid(ssid)
        if password is not None and not isinstance(password, str):
            raise ValueError("password: a string expected")
        if password is not None and password and (not 8 <= len(password.encode()) <= 63 or "\x00" in password):
            raise ValueError("password: 8 to 63 bytes without NUL, or empty for an open AP")
        if ssid is not None:
            self._ap_ssid = ssid
        if password is not None:
            self._ap_pw = password
        self._ap_manual = True
        self._ap_up()
    else:
        # a name and password given for a manual AP go with it: the setup fallback AP is the
        # default one again (WPA2, its per-device password; an open one stayed open)
        self._ap_manual = False
        self._ap_fallback = False
        self._ap_ssid = self._ap_pw = None
        self._ap_down()


def scan(self):
    """Visible networks, strongest first, one entry per SSID: [{"ssid", "rssi", "channel", "secure"}]."""
    with self._plock:
        res = self._scan_cache
        if res is None or ticks_diff(ticks_ms(), self._scan_at) > self.scan_cache_ms:
            try:
                res = self._scan_raw()
            except OSError:
                res = res or []  # busy connecting: the last results
    best = {}
    for r in res:
        try:
            ssid = bytes(r[0]).decode()
        except UnicodeError:
            continue
        if not ssid:
            continue  # hidden networks have no name to show
        if ssid not in best or r[3] > best[ssid]["rssi"]:
            best[ssid] = {"ssid": ssid, "rssi": r[3], "channel": r[2], "secure": r[4] != _AUTH_OPEN}
    out = list(best.values())
    out.sort(key=lambda n: -n["rssi"])
    return out


def connect(self, timeout=15):
    """Try the known networks (visible ones strongest first, then hidden ones) until one
    connects or timeout seconds pass. Returns True when connected."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 <= timeout <= 3600:
        raise ValueError("timeout: seconds from 0 to 3600 expected, got %r" % (timeout,))
    deadline = ticks_add(ticks_ms(), int(timeout * 1000))
    with self._plock:
        if self._state == _CONNECTED and self._sta.isconnected():
            return True
        self._begin_round(ticks_ms(), None)
    while True:
        with self._plock:
            now = ticks_ms()
            if self._state != _TRYING:
                break
            if ticks_diff(now, deadline) >= 0:
                self._attempt_failed(now, TIMEOUT)
                self._end_round(now)
                break
            self._step(now)
        sleep_ms(50)
    return self._state == _CONNECTED


def reconnect(self, prefer=None):
    """Start a new round at the next step (the portal calls this after saving), trying `prefer` first."""
    with self._mu:
        self._prefer = prefer
        if prefer is not None:
            self._errors[prefer] = None
        self._kick = True


def result(self, ssid):
    """How the last attempt on `ssid` went: "connected", "connecting", an error name, or None."""
    with self._mu:
        if self._state == _CONNECTED and self._ssid == ssid and not self._kick:
            return "connected"
        if ssid not in self._errors:
            return None
        return self._errors[ssid] or "connecting"


def stop(self):
    """Stop the background work, the portal and both interfaces."""
    self._running = False
    self._auto = False
    with self._plock:
        self._state = _IDLE
        self._ssid = None
    self._ap_manual = False
    self._ap_fallback = False
    self._ap_down()
    self._sta.active(False)


def on_setup_ap(self, ip):
    """True when address `ip` is a client of this device's access point (not of the home network:
    where both share a subnet, the home network wins). Such a client holds the AP's WPA2 password,
    that is, the device itself: the admin lock-out never locks it out for others' guesses."""
    if not ip or not self._ap.active():
        return False
    a = self._ap.ifconfig()
    if not _same_subnet(ip, a[0], a[1]):
        return False
    if self._state == _CONNECTED and self._sta.isconnected():
        s = self._sta.ifconfig()
        if _same_subnet(ip, s[0], s[1]):
            return False
    return True


def _ip_int(ip):
    p = ip.split(".")
    if len(p) != 4:
        raise ValueError(ip)
    return (int(p[0]) << 24) | (int(p[1]) << 16) | (int(p[2]) << 8) | int(p[3])


def _same_subnet(ip, net_ip, mask):
    try:
        m = _ip_int(mask)
        return _ip_int(ip) & m == _ip_int(net_ip) & m
    except ValueError:
        return False
