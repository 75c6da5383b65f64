# Simulated Wi-Fi: network.WLAN's station and access point API over a JSON scenario file.
#
# Scenario (docs/design.md), re-read whenever the file changes so tests can take a router away:
#   {"networks": [{"ssid": "home", "password": "secret", "rssi": -60, "channel": 6,
#                  "up": true, "fail": null, "hidden": false}],
#    "ap_clients": ["aa:bb:cc:dd:ee:01"]}
# fail: null | "wrong_password" | "no_ip" (DHCP never answers) | "drop_after_s:N" | "assoc_fail"
# "up": false is a router that is switched off (not in scans; a connected station loses it).
# ap_clients: the phones associated with the device's access point while it is active.
# Connecting takes CONNECT_MS like a real association; status codes are the ESP32 port's.
# Several threads (the Wi-Fi manager, web workers) use the interfaces: one lock guards them.
import json
import os


from iotutils._compat import allocate_lock, ticks_diff, ticks_ms

STAT_IDLE = const(1000)
STAT_CONNECTING = const(1001)
STAT_GOT_IP = const(1010)
STAT_BEACON_TIMEOUT = const(200)
STAT_NO_AP_FOUND = const(201)
STAT_WRONG_PASSWORD = const(202)
STAT_ASSOC_FAIL = const(203)
STAT_HANDSHAKE_TIMEOUT = const(204)

AUTH_OPEN = const(0)
AUTH_WPA2_PSK = const(3)

CONNECT_MS = 300   # association + DHCP time in the simulation


def _since(t):
    return ticks_diff(ticks_ms(), t)


class Scenario:
    def __init__(self, path, data=None):
        self.path = path
        self._mtime = None
        self.networks = []
        self.ap_clients = []
        if data is not None:
            self.set(data)

    def set(self, data):
        """Replace the scenario in memory (unit tests without a file)."""
        nets = data.get("networks") if isinstance(data, dict) else None
        # (a hand-edited file: entries that are not objects are left out, not a traceback per poll)
        self.networks = [n for n in nets if isinstance(n, dict) and isinstance(n.get("ssid"), str)] \
            if isinstance(nets, list) else []
        clients = data.get("ap_clients") if isinstance(data, dict) else None
        self.ap_clients = list(clients) if isinstance(clients, list) else []

    def refresh(self):
        if not self.path:
            return self.networks
        try:
            st = os.stat(self.path)
            stamp = (st[1], st[6], st[8])  # inode (tests replace the file by rename), size, mtime
        except OSError:
            self.networks = []
            return self.networks
        if stamp != self._mtime:
            try:
                with open(self.path) as f:
                    self.set(json.load(f))
                self._mtime = stamp
            except (OSError, ValueError):
                pass  # half-written file: keep the last good scenario, re-read next time
        return self.networks

    def find(self, ssid):
        for n in self.refresh():
            if n.get("ssid") == ssid and n.get("up", True):
                return n
        return None


_lock = allocate_lock()   # each _WLAN method holds it (a `with`, not a decorator: a closure each)


class _WLAN:
    def __init__(self, scenario, is_ap):
        self._scn = scenario
        self._is_ap = is_ap
        self._active = False
        self._cfg = {"essid": "", "password": "", "channel": 1, "authmode": AUTH_OPEN,
                     "hostname": "iotutils", "mac": b"\x02\x00\x00\x00\x00\x01", "txpower": 20,
                     "reconnects": -1, "max_clients": 4, "hidden": False}
        self._target = None     # (ssid, password) of the current connect attempt
        self._since = 0
        self._status = STAT_IDLE

    def active(self, on=None):
        with _lock:
            if on is None:
                return self._active
            self._active = bool(on)
            if not on:
                self._disconnect()

    def config(self, *args, **kw):
        with _lock:
            if args:
                key = args[0]
                if key == "password" and not self._is_ap:
                    raise ValueError("password is write-only")
                if key == "ssid":
                    key = "essid"
                if key not in self._cfg:
                    raise ValueError("unknown config param")
                return self._cfg[key]
            for k, v in kw.items():
                if k == "ssid":
                    k = "essid"
                if k == "security":
                    k = "authmode"
                if k == "dhcp_hostname":
                    k = "hostname"
                if k not in self._cfg:
                    raise ValueError("unknown config param")
                self._cfg[k] = v
            if self._is_ap and self._cfg["authmode"] != AUTH_OPEN and not 8 <= len(self._cfg["password"]) <= 64:
                # esp_wifi_set_config refuses a WPA2 AP with a short password
                self._cfg["authmode"] = AUTH_OPEN
                raise OSError("invalid AP password")

    # ---- station ----
    def scan(self):
        with _lock:
            if self._is_ap or not self._active:
                raise OSError("STA must be active to scan")
            out = []
            for n in self._scn.refresh():
                if not n.get("up", True):
                    continue
                ssid = b"" if n.get("hidden") else n["ssid"].encode()
                sec = AUTH_WPA2_PSK if n.get("password") else AUTH_OPEN
                out.append((ssid, b"\x02\x11\x22\x33\x44\x55", n.get("channel", 1), n.get("rssi", -70), sec,
                            bool(n.get("hidden"))))
            return out

    def connect(self, ssid=None, key=None, bssid=None):
        with _lock:
            if not self._active:
                raise OSError("STA is not active")
            self._target = (ssid, key or "")
            self._since = ticks_ms()
            self._status = STAT_CONNECTING

    def _disconnect(self):
        self._target = None
        self._status = STAT_IDLE

    def disconnect(self):
        with _lock:
            self._disconnect()

    def status(self, what=None):
        with _lock:
            if what == "rssi":
                n = self._network()
                return n.get("rssi", -70) if n else 0
            if what == "stations":
                if not (self._is_ap and self._active):
                    return []
                self._scn.refresh()
                return [(bytes(int(x, 16) for x in m.split(":")),) for m in self._scn.ap_clients]
            self._evaluate()
            return self._status

    def isconnected(self):
        with _lock:
            if self._is_ap:
                return self._active
            self._evaluate()
            return self._status == STAT_GOT_IP

    def _network(self):
        return self._scn.find(self._target[0]) if self._target else None

    def _evaluate(self):
        if self._target is None or self._status in (STAT_WRONG_PASSWORD, STAT_NO_AP_FOUND, STAT_ASSOC_FAIL):
            return
        elapsed = _since(self._since)
        n = self._network()
        if n is None:
            # the AP vanished (or never existed): lost while connected reads as beacon timeout
            if self._status == STAT_GOT_IP:
                self._status = STAT_BEACON_TIMEOUT
                self._target = None
            elif elapsed >= CONNECT_MS:
                self._status = STAT_NO_AP_FOUND
            return
        fail = n.get("fail") or ""
        if self._status == STAT_CONNECTING:
            if elapsed < CONNECT_MS:
                return
            if (n.get("password") or "") != self._target[1] or fail == "wrong_password":
                self._status = STAT_WRONG_PASSWORD
            elif fail == "assoc_fail":
                self._status = STAT_ASSOC_FAIL
            elif fail == "no_ip":
                return  # associated, DHCP never answers: stays CONNECTING
            else:
                self._status = STAT_GOT_IP
                self._since = ticks_ms()
        elif self._status == STAT_GOT_IP and fail.startswith("drop_after_s:"):
            if _since(self._since) >= int(float(fail.split(":", 1)[1]) * 1000):
                self._status = STAT_BEACON_TIMEOUT
                self._target = None

    def ifconfig(self, *args):
        with _lock:
            if self._is_ap:
                return ("127.0.0.1", "255.255.255.0", "127.0.0.1", "127.0.0.1") if self._active else \
                    ("0.0.0.0",) * 4
            self._evaluate()
            if self._status == STAT_GOT_IP:
                return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
            return ("0.0.0.0",) * 4


_scenario = None
_ifaces = {}


def interface(which, scenario_path):
    global _scenario
    with _lock:
        if _scenario is None:
            _scenario = Scenario(scenario_path)
        w = _ifaces.get(which)
        if w is None:
            w = _ifaces[which] = _WLAN(_scenario, which == 1)
        return w


def reset(data=None, path=None):
    """Unit tests: power the radio off and use scenario `data` (a dict) or file `path` from now on."""
    global _scenario
    with _lock:
        _scenario = Scenario(path, data)
        _ifaces.clear()


def scenario():
    """The scenario in use (unit tests change it with scenario().set({...}))."""
    with _lock:
        return _scenario
