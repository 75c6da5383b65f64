# A fake of MicroPython v1.28's `network` module on the esp32 port (ports/esp32/network_wlan.c,
# network_common.c, modnetwork_globals.h): WLAN(STA_IF/AP_IF) with the port's status codes.
# The radio's surroundings are test control: fake_air["networks"] = [{"ssid", "password", "rssi",
# "channel", "authmode", "up"}], fake_air["ap_clients"] = [mac bytes]; a connect resolves after
# CONNECT_MS, as the port's event handler would (status() stays STAT_CONNECTING until then).
import time

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_BEACON_TIMEOUT = 200
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202        # WIFI_REASON_AUTH_FAIL
STAT_ASSOC_FAIL = 203
STAT_CONNECT_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204
AUTH_OPEN = 0
AUTH_WEP = 1
AUTH_WPA_PSK = 2
AUTH_WPA2_PSK = 3
AUTH_WPA_WPA2_PSK = 4

CONNECT_MS = 30
_REASON_ASSOC_LEAVE = 8

fake_air = {"networks": [], "ap_clients": []}
_mode = [0]  # bit 1: STA, bit 2: AP (wifi_mode_t)
_sta = {"ssid": "", "key": "", "requested": False, "connected": False, "reason": 0, "t": 0}
_ap = {"ssid": "ESP_123456", "password": "", "authmode": AUTH_OPEN, "hidden": False, "channel": 1,
       "max_clients": 10}
_hostname = ["mpy-esp32"]
_ifs = []


def _ms():
    return time.ticks_ms() if hasattr(time, "ticks_ms") else int(time.time() * 1000)


def _elapsed(t):
    return time.ticks_diff(_ms(), t) if hasattr(time, "ticks_diff") else _ms() - t


def _find(ssid):
    for n in fake_air["networks"]:
        if n.get("ssid") == ssid and n.get("up", True):
            return n
    return None


def _settle():
    """What the Wi-Fi task would have done by now."""
    s = _sta
    if s["requested"] and not s["connected"] and s["reason"] == 0 and _elapsed(s["t"]) >= CONNECT_MS:
        n = _find(s["ssid"])
        if n is None:
            s["reason"] = STAT_NO_AP_FOUND
        elif (n.get("password") or "") != s["key"]:
            s["reason"] = STAT_WRONG_PASSWORD
        else:
            s["connected"] = True
    if s["connected"] and _find(s["ssid"]) is None:  # the router went away
        s["connected"] = False
        s["reason"] = STAT_BEACON_TIMEOUT


class WLAN:
    IF_STA = STA_IF
    IF_AP = AP_IF

    def __new__(cls, interface=STA_IF):
        # the port returns one static object per interface
        if interface not in (STA_IF, AP_IF):
            raise ValueError("invalid WLAN interface identifier")
        while len(_ifs) < 2:
            o = object.__new__(cls)
            o._if = len(_ifs)
            _ifs.append(o)
        return _ifs[interface]

    def __init__(self, interface=STA_IF):
        pass

    def _bit(self):
        return 1 if self._if == STA_IF else 2

    def active(self, *on):
        if on:
            if on[0]:
                _mode[0] |= self._bit()
            else:
                _mode[0] &= ~self._bit()
                if self._if == STA_IF:
                    _sta.update(requested=False, connected=False, reason=0)
        return bool(_mode[0] & self._bit())

    def connect(self, ssid=None, key=None, bssid=None):
        if self._if != STA_IF or not _mode[0] & 1:
            raise OSError("Wifi Not Started" if not _mode[0] else "Wifi Invalid Mode")
        if ssid is not None:
            _sta["ssid"] = ssid
            _sta["key"] = key or ""
        _sta.update(requested=True, connected=False, reason=0, t=_ms())

    def disconnect(self):
        _sta.update(requested=False, connected=False, reason=_REASON_ASSOC_LEAVE)

    def status(self, *param):
        _settle()
        if not param:
            if self._if != STA_IF:
                return None
            if _sta["connected"]:
                return STAT_GOT_IP
            r = _sta["reason"]
            if r in (STAT_NO_AP_FOUND, STAT_WRONG_PASSWORD):
                return r
            if r == _REASON_ASSOC_LEAVE:
                return STAT_IDLE
            if _sta["requested"]:
                return STAT_CONNECTING
            return r or STAT_IDLE
        if param[0] == "rssi":
            if self._if != STA_IF:
                raise OSError("STA required")
            if not _sta["connected"]:
                raise OSError("Wifi Not Connected")  # esp_wifi_sta_get_ap_info: ESP_ERR_WIFI_NOT_CONNECT
            return _find(_sta["ssid"]).get("rssi", -60)
        if param[0] == "stations":
            if self._if != AP_IF:
                raise OSError("AP required")
            return [(bytes(m),) for m in fake_air.get("ap_clients", [])] if _mode[0] & 2 else []
        raise ValueError("unknown status param")

    def isconnected(self):
        _settle()
        if self._if == STA_IF:
            return _sta["connected"]
        return bool(_mode[0] & 2 and fake_air.get("ap_clients"))

    def scan(self):
        if not _mode[0] & 1:
            raise OSError("STA must be active")
        out = []
        for i, n in enumerate(fake_air["networks"]):
            if n.get("up", True):
                auth = n.get("authmode", AUTH_WPA2_PSK if n.get("password") else AUTH_OPEN)
                out.append((n["ssid"].encode(), bytes((0x10, 0, 0, 0, 0, i)), n.get("channel", 1),
                            n.get("rssi", -60), auth, False))
        return out

    def ifconfig(self, *cfg):
        _settle()
        if cfg:
            raise OSError("static IP not supported by this fake")
        if self._if == AP_IF:
            return ("192.168.4.1", "255.255.255.0", "192.168.4.1", "0.0.0.0")
        if _sta["connected"]:
            return ("192.168.1.50", "255.255.255.0", "192.168.1.1", "192.168.1.1")
        return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")

    def config(self, *args, **kw):
        if args and kw:
            raise TypeError("either pos or kw args are allowed")
        if kw:
            for k, v in kw.items():
                if k in ("ssid", "essid", "hidden", "security", "authmode", "key", "password", "max_clients"):
                    if self._if != AP_IF:
                        raise OSError("AP required")
                    k = {"essid": "ssid", "security": "authmode", "key": "password"}.get(k, k)
                    _ap[k] = v
                elif k in ("hostname", "dhcp_hostname"):
                    _hostname[0] = v
                elif k == "channel":
                    _ap["channel"] = v
                elif k not in ("reconnects", "txpower", "pm", "protocol"):
                    raise ValueError("unknown config param")
            return None
        if len(args) != 1:
            raise TypeError("can query only one param")
        k = args[0]
        if k == "mac":
            import machine
            mac = bytearray(machine.fake_mac)
            mac[5] = (mac[5] + self._if) & 0xFF  # the soft-AP MAC is the base MAC + 1
            return bytes(mac)
        if k in ("ssid", "essid"):
            return _sta["ssid"] if self._if == STA_IF else _ap["ssid"]
        if k in ("hidden", "security", "authmode"):
            if self._if != AP_IF:
                raise OSError("AP required")
            return _ap["authmode" if k == "security" else k]
        if k == "channel":
            return _ap["channel"]
        if k in ("hostname", "dhcp_hostname"):
            if self._if != STA_IF:
                raise OSError("STA required")
            return _hostname[0]
        if k == "max_clients":
            return _ap["max_clients"]
        raise ValueError("unknown config param")


def fake_reset():
    """Power-on state of the radio (between tests)."""
    _mode[0] = 0
    _sta.update(ssid="", key="", requested=False, connected=False, reason=0, t=0)
    fake_air["networks"] = []
    fake_air["ap_clients"] = []
