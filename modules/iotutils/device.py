# The device: one call brings up Wi-Fi (+ setup portal), the web server with the admin page,
# OTA (confirm after a health check, auto-update) and Alexa, then runs the main loop.
#
#   import iotutils
#   dev = iotutils.Device(name="lamp")
#   @dev.app.route("/hello")
#   def hello(req): return "hi"
#   dev.every(1000, my_tick)      # user code in the main loop
#   dev.run()
import sys
import time

from iotutils import __version__, hal

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_WDT_TIMEOUT_MS = const(10000)
_LOOP_SLEEP_MS = const(20)


def _ticks():
    return time.ticks_ms() if hasattr(time, "ticks_ms") else int(time.time() * 1000)


def _diff(a, b):
    return time.ticks_diff(a, b) if hasattr(time, "ticks_diff") else a - b


def _sleep_ms(ms):
    if hasattr(time, "sleep_ms"):
        time.sleep_ms(ms)
    else:
        time.sleep(ms / 1000)


class Device:
    #: seconds the health check waits for Wi-Fi (station or portal) before confirming an OTA image
    health_timeout_s = 60

    def __init__(self, name="iotutils", port=80, workers=3, ota_repo=None, ota_channel="release",
                 ota_api=None, wifi=True, alexa=True, admin=True, ota=True):
        from iotutils.persist import PersistentStr
        self._name = PersistentStr("name", default=name, folder="device", max_length=32)
        from iotutils.server import WebServer
        self.app = WebServer(port=port, workers=workers)
        self.app.add_route("/healthz", _health, ("GET",))
        self.wifi = None
        self.alexa = None
        self.ota = None
        self.admin = None
        self._want = {"wifi": wifi, "alexa": alexa, "admin": admin, "ota": ota}
        self._tasks = []       # [period_ms, last_ms, fn]
        self._started = False
        self._boot_ms = _ticks()
        self._confirmed = False
        if wifi:
            from iotutils.wifi import Wifi
            self.wifi = Wifi()
        if ota:
            # the source set in the admin page (folder "ota") wins over the one in the code
            self._ota_repo = PersistentStr("repo", default=ota_repo or "", folder="ota", max_length=100)
            self._ota_channel = PersistentStr("channel", default=ota_channel, folder="ota", max_length=120)
            self._ota_api = ota_api
            self._make_ota()
        if alexa:
            from iotutils.alexa import Alexa
            self.alexa = Alexa(self.app)

    def _make_ota(self):
        from iotutils.ota import OTA
        repo = self._ota_repo.value or None
        channel = self._ota_channel.value or "release"
        kw = {"channel": channel}
        if self._ota_api:
            kw["api"] = self._ota_api
        try:
            self.ota = OTA(repo=repo, **kw) if (repo or channel.startswith("url:")) else None
        except ValueError as e:
            print("ota: source not usable:", e)
            self.ota = None

    def set_ota_source(self, repo, channel="release"):
        """Change where OTA looks for updates (persisted). ValueError for a bad repo/channel."""
        from iotutils.ota import OTA
        kw = {"channel": channel or "release"}
        if self._ota_api:
            kw["api"] = self._ota_api
        OTA(repo=repo or None, **kw)  # validates before anything is stored
        self._ota_repo.value = repo or ""
        self._ota_channel.value = channel or "release"
        self._make_ota()
        if self.ota is not None and self._started:
            self._resume_auto_update()
        return self.ota

    def _resume_auto_update(self):
        st = self.ota.state.load().get("auto") if hasattr(self.ota, "state") else None
        if st and st.get("on"):
            self.ota.auto_update(True, app=self.app)

    @property
    def name(self):
        return self._name.value

    @name.setter
    def name(self, value):
        self._name.value = value

    # ---- bring-up ----

    def boot_report(self):
        """The console's first lines: what runs, why it booted, how much heap is left."""
        import gc
        gc.collect()
        free = hal.mem_free()
        total = hal.heap_total()
        state = "pending verify" if hal.ota_pending() else "valid"
        lines = [
            "iotutils %s on %s: %s" % (__version__, hal.PLATFORM, self.name),
            "  firmware: slot %s (%s)%s" % (hal.ota_running(), state,
                                            ", last update rolled back" if hal.ota_rolled_back() else ""),
            "  reset cause: %s" % hal.reset_cause(),
            "  heap free: %d of %d bytes" % (free, total),
        ]
        return "\n".join(lines)

    def start(self):
        """Bring everything up and return (the server runs in background threads)."""
        if self._started:
            return self
        self._started = True
        print(self.boot_report())
        if self._want["admin"]:
            from iotutils.admin import Admin
            self.admin = Admin(self)
        if self.alexa is not None:
            self.alexa.start()
        self.app.start()
        if self.wifi is not None:
            self.wifi.start(portal=True, app=self.app)
        print("  web server: http://%s:%d/  admin: /admin" % (hal.ip(), hal.port(80)))
        if self.ota is not None:
            self._resume_auto_update()
        if hal.ota_pending():
            print("  firmware: new image, confirming after a health check")
        hal.wdt_start(_WDT_TIMEOUT_MS)
        return self

    def every(self, period_ms, fn):
        """Call fn() from the main loop every period_ms (user code runs beside the server)."""
        self._tasks.append([period_ms, _ticks(), fn])
        return fn

    def healthy(self):
        """The OTA health check: the network is up (station, or the setup portal when no network
        is configured) and the web server answers a request over a real socket."""
        if self.wifi is not None:
            st = self.wifi.status()
            if not (st.get("connected") or (st.get("ap_ssid") and not st.get("configured"))):
                return False
        return _self_request(hal.port(80))

    def poll(self):
        """One pass of the main loop's housekeeping (run() calls this)."""
        hal.wdt_feed()
        now = _ticks()
        if self.wifi is not None and hasattr(self.wifi, "poll"):
            self.wifi.poll()
        if not self._confirmed and hal.ota_pending():
            if self.healthy():
                if self.ota is not None:
                    self.ota.confirm()
                else:
                    hal.ota_mark_valid()
                self._confirmed = True
                print("firmware: health check passed, image confirmed")
            elif _diff(now, self._boot_ms) > self.health_timeout_s * 1000:
                print("firmware: health check failed, rolling back")
                hal.reset()
        if self.alexa is not None and hasattr(self.alexa, "poll"):
            self.alexa.poll()
        for task in self._tasks:
            if _diff(now, task[1]) >= task[0]:
                task[1] = now
                try:
                    task[2]()
                except Exception as e:  # user code must not stop the device
                    sys.print_exception(e) if hasattr(sys, "print_exception") else print(repr(e))

    def run(self):
        """start() if needed, then the main loop forever."""
        self.start()
        while True:
            self.poll()
            _sleep_ms(_LOOP_SLEEP_MS)


def _health(req):
    return {"ok": True}


def _self_request(port):
    """GET /healthz from the device's own server over loopback: True on a 200."""
    import socket
    s = socket.socket()
    try:
        s.settimeout(3)
        s.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        s.send(b"GET /healthz HTTP/1.1\r\nHost: self\r\nConnection: close\r\n\r\n")
        head = s.recv(16)
        return head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.0 200")
    except OSError:
        return False
    finally:
        s.close()
