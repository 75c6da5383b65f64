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
        self.wifi = None
        self.alexa = None
        self.ota = None
        self.admin = None
        self._want = {"wifi": wifi, "alexa": alexa, "admin": admin, "ota": ota}
        self._ota_args = (ota_repo, ota_channel, ota_api)
        self._tasks = []       # [period_ms, last_ms, fn]
        self._started = False
        self._boot_ms = _ticks()
        if wifi:
            from iotutils.wifi import Wifi
            self.wifi = Wifi()
        if ota:
            from iotutils.ota import OTA
            kw = {"channel": ota_channel}
            if ota_api:
                kw["api"] = ota_api
            self.ota = OTA(repo=ota_repo, **kw)
        if alexa:
            from iotutils.alexa import Alexa
            self.alexa = Alexa(self.app)

    @property
    def name(self):
        return self._name.value

    @name.setter
    def name(self, value):
        self._name.value = value

    # ---- bring-up ----

    def boot_report(self):
        """The console's first lines: what runs, why it booted, how much heap is left."""
        free = hal.mem_free()
        total = free + hal.mem_alloc()
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
        if self.wifi is not None:
            self.wifi.start(portal=True, app=self.app) if _accepts(self.wifi.start, "app") \
                else self.wifi.start(portal=True)
        if self._want["admin"]:
            try:
                from iotutils.admin import Admin
                self.admin = Admin(self)
            except ImportError as e:
                print("admin page unavailable:", e)
        if self.alexa is not None and hasattr(self.alexa, "start"):
            self.alexa.start()
        self.app.start()
        print("  web server: http://%s:%d/" % (hal.ip(), hal.port(80)))
        if self.ota is not None:
            if hasattr(self.ota, "attach"):
                self.ota.attach(self.app)
            if hal.ota_pending():
                print("  firmware: new image, confirming after a health check")
        hal.wdt_start(_WDT_TIMEOUT_MS)
        return self

    def every(self, period_ms, fn):
        """Call fn() from the main loop every period_ms (user code runs beside the server)."""
        self._tasks.append([period_ms, _ticks(), fn])
        return fn

    def healthy(self):
        """The OTA health check: the network is up (station, or the setup portal) and the
        server answers a request over its own socket."""
        if self.wifi is not None:
            st = self.wifi.status()
            if not (st.get("connected") or st.get("mode") in ("ap", "sta+ap")):
                return False
        return self.app.self_check() if hasattr(self.app, "self_check") else True

    def poll(self):
        """One pass of the main loop's housekeeping (run() calls this)."""
        hal.wdt_feed()
        now = _ticks()
        if self.wifi is not None and hasattr(self.wifi, "poll"):
            self.wifi.poll()
        if self.ota is not None:
            if hal.ota_pending() and self.healthy():
                self.ota.confirm()
                print("firmware: health check passed, image confirmed")
            elif hal.ota_pending() and _diff(now, self._boot_ms) > self.health_timeout_s * 1000:
                print("firmware: health check failed, rolling back")
                hal.reset()
            if hasattr(self.ota, "poll"):
                self.ota.poll()
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


def _accepts(fn, arg):
    # MicroPython has no inspect: probe the function's code object where it exists
    code = getattr(fn, "__code__", None)
    return code is not None and arg in code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
