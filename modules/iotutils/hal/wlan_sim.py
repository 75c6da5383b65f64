# Simulated Wi-Fi: network.WLAN's station and access point API over a JSON scenario file.
#
# Scenario (DESIGN.md), re-read whenever the file changes so tests can take a router away:
#   {"networks": [{"ssid": "home", "password": "secret", "rssi": -60, "channel": 6,
#                  "up": true, "fail": null, "hidden": false}]}
# fail: null | "wrong_password" | "no_ip" (DHCP never answers) | "drop_after_s:N" | "assoc_fail"
# Connecting takes CONNECT_MS like a real association; status codes are the ESP32 port's.
import json
import os
import time

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

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


def _now():
    return time.ticks_ms() if hasattr(time, "ticks_ms") else int(time.time() * 1000)


def _since(t):
    return time.ticks_diff(_now(), t) if hasattr(time, "ticks_diff") else _now() - t


class Scenario:
    def __init__(self, path):
        self.path = path
        self._mtime = None
        self.networks = []

    def refresh(self):
        if not self.path:
            return self.networks
        try:
            st = os.stat(self.path)
            stamp = (st[6], st[8])  # size, mtime
        except OSError:
            self.networks = []
            return self.networks
        if stamp != self._mtime:
            try:
                with open(self.path) as f:
                    self.networks = json.load(f).get("networks", [])
                self._mtime = stamp
            except (OSError, ValueError):
                pass  # half-written file: keep the last good scenario, re-read next time
        return self.networks

    def find(self, ssid):
        for n in self.refresh():
            if n.get("ssid") == ssid and n.get("up", True):
                return n
        return None


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
        if on is None:
            return self._active
        self._active = bool(on)
        if not on:
            self.disconnect()

    def config(self, *args, **kw):
        if args:
            key = args[0]
            if key == "password" and not self._is_ap:
                raise ValueError("password is write-only")
            if key == "ssid":
                key = "essid"
            return self._cfg[key]
        for k, v in kw.items():
            if k == "ssid":
                k = "essid"
            if k == "security":
                k = "authmode"
            self._cfg[k] = v

    # ---- station ----
    def scan(self):
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
        if not self._active:
            raise OSError("STA is not active")
        self._target = (ssid, key or "")
        self._since = _now()
        self._status = STAT_CONNECTING

    def disconnect(self):
        self._target = None
        self._status = STAT_IDLE

    def status(self, what=None):
        if what == "rssi":
            n = self._network()
            return n.get("rssi", -70) if n else 0
        if what == "stations":
            return []
        self._evaluate()
        return self._status

    def isconnected(self):
        if self._is_ap:
            return self._active
        return self.status() == STAT_GOT_IP

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
                self._since = _now()
        elif self._status == STAT_GOT_IP and fail.startswith("drop_after_s:"):
            if _since(self._since) >= int(float(fail.split(":", 1)[1]) * 1000):
                self._status = STAT_BEACON_TIMEOUT
                self._target = None

    def ifconfig(self, *args):
        if self._is_ap:
            return ("127.0.0.1", "255.255.255.0", "127.0.0.1", "127.0.0.1") if self._active else \
                ("0.0.0.0",) * 4
        if self.isconnected():
            return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
        return ("0.0.0.0",) * 4


_scenario = None
_ifaces = {}


def interface(which, scenario_path):
    global _scenario
    if _scenario is None:
        _scenario = Scenario(scenario_path)
    w = _ifaces.get(which)
    if w is None:
        w = _ifaces[which] = _WLAN(_scenario, which == 1)
    return w
