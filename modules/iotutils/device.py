# The device: one call brings up Wi-Fi (+ setup portal), the web server with the admin page,
# OTA (confirm after a health check, auto-update) and Alexa, then runs the main loop.
#
#   import iotutils
#   dev = iotutils.Device(name="lamp")
#   @dev.app.route("/hello")
#   def hello(req): return "hi"
#   dev.every(1000, my_tick)      # user code in the main loop
#   dev.run()
#
# An app with its own loop calls dev.start() and then dev.poll() often (well within
# Device.wdt_timeout_ms): the first poll() arms the task watchdog, and poll() is also what confirms
# a new firmware image after the health check and delivers Alexa changes to on_change.
#
# MQTT and Home Assistant (iotutils.mqtt_device, loaded only when a broker is configured: in the
# code, on the admin page or by provisioning; the stored setting wins):
#   dev = iotutils.Device(name="lamp", mqtt="mqtt://user:pw@192.168.1.5")   # dev.mqtt: the client
#   dev.expose(brightness, "Brightness")   # a persistent variable as the entity its type implies
import gc

from iotutils import hal, tasks
from iotutils._compat import (allocate_lock, before_load, call_loaded, handed_out, log, print_exception, recv_for,
                              sleep_ms, ticks_diff, ticks_ms, unload)
from iotutils.coerce import check_name   # (a device's name follows the lights' rule)

_LOOP_SLEEP_MS = const(20)
_MAX_LOOP_FAILURES = const(50)   # passes of the main loop failing in a row before the device reboots
_FEED_EVERY_MS = const(500)     # the watchdog needs a feed well within its timeout, not every pass
_HEALTH_EVERY_MS = const(1000)  # a failing self-request costs up to 3 s: not on every pass
_TIDY_EVERY_MS = const(250)     # how often the heap's tidying looks whether the device is idle
# Device's methods that live in device_more.py
_LATER = const(("boot_report", "every", "memory", "sockets", "_fit_sockets", "set_ota_source",
                "check_ota_source", "set_ota_settings", "reload_mqtt"))


class Device:
    #: seconds a new OTA image may take to pass the health check (Wi-Fi up, or the setup portal on a
    #: device with no network configured, and the server answering /healthz); then it is rolled back
    health_timeout_s = 60
    #: run() runs the housekeeping steps in the main loop (the main task's stack, no task of their
    #: own: ~10 KB less internal RAM on the chip). A user task that takes long delays them (an SSDP
    #: answer, an MQTT keepalive): set False (before Device()) to give them their thread back.
    #: Programs that call start() and keep a loop of their own always get the thread.
    housekeep_in_main_loop = True
    #: task watchdog timeout (ms), armed when the main loop starts: a main loop stuck for longer
    #: (a user task that never returns) resets the device
    wdt_timeout_ms = 10000
    #: collect the heap once the web server has had no request for this long and the heap holds at
    #: least tidy_min_garbage bytes of garbage (see _tidy_heap); 0: never
    tidy_idle_ms = 100
    #: None: 1/64 of the heap (the board's; a few ms of the chip's time per collection)
    tidy_min_garbage = None

    def __init__(self, name="iotutils", port=80, workers=None, ota_repo=None, ota_channel="release",
                 ota_api=None, wifi=True, alexa=True, admin=True, ota=True, allowed_hosts=(), ota_pubkey=None,
                 ota_cadata=None, ota_allow_http=False, mqtt=None):
        if ota:
            call_loaded("iotutils.ota.checks", "check_device_args", ota_repo, ota_channel, ota_api, ota_pubkey,
                        ota_allow_http)
        from iotutils.persist import PersistentStr
        self._name = PersistentStr("name", default=check_name(name, "name"), folder="device", max_length=32)
        before_load("iotutils.web.engine")
        from iotutils.web.engine import WebServer
        #: host names the device answers to besides its own (a reverse proxy's, a DNS name you gave
        #: it); IP literals and the device's host name (+ ".local") are always accepted
        if isinstance(allowed_hosts, str) or not all(isinstance(h, str) for h in allowed_hosts or ()):
            # ("example.com" was taken as its letters)
            raise ValueError("allowed_hosts: a list of host names expected, got %r" % (allowed_hosts,))
        self.allowed_hosts = tuple(h.lower() for h in allowed_hosts or ())
        # every server of this device (the web server, each WeMo device) checks the Host first
        WebServer.host_guard = self._host_guard
        # None: the board's (hal.WEB_WORKERS)
        self.app = WebServer(port=port, workers=hal.WEB_WORKERS if workers is None else workers)
        self.app.add_route("/healthz", _health, ("GET",))
        self.wifi = None
        self.alexa = None
        self.ota = None
        self._admin = None
        self._lock = allocate_lock()   # parts made later, one at a time: the admin page, MQTT again
        self._want = {"wifi": wifi, "alexa": alexa, "admin": admin, "ota": ota}
        self._tasks = []       # [period_ms, last_ms, fn]
        self.heap_tidies = 0   # collections made by _tidy_heap
        self._tidy_base = 0    # heap in use (live + garbage) after the last one
        self._started = False
        self._main_loop = False   # run() is the main loop: it runs the housekeeping steps
        if self.housekeep_in_main_loop:
            tasks.shared().host(True)   # until start() knows whether run() will run them
        self._boot_ms = ticks_ms()
        self._confirmed = False
        self._app_waits = None   # an App OTA folder waits for confirmation (None: not asked yet)
        self._wdt = False          # armed by the first poll(): start() alone must not arm it
        self._fed_ms = 0
        self._health_ms = None     # last health check (rate limit)
        if wifi:
            before_load("iotutils.wifi")
            from iotutils.wifi import Wifi
            self.wifi = Wifi()
        if ota:
            # the source set in the admin page (folder "ota") wins over the one in the code
            self._ota_repo = PersistentStr("repo", default=ota_repo or "", folder="ota", max_length=100)
            self._ota_channel = PersistentStr("channel", default=ota_channel, folder="ota", max_length=120)
            self._ota_api = ota_api
            # releases must be signed with the owner's key: this one (PEM/DER bytes), else the one
            # frozen into the firmware or provisioned (iotutils.sign.default_pubkey)
            self._ota_kw = {"pubkey": ota_pubkey, "cadata": ota_cadata, "allow_http": ota_allow_http}
            self._make_ota()
        if alexa:
            before_load("iotutils.alexa")
            from iotutils.alexa import Alexa
            self.alexa = Alexa(self.app)
        #: the broker URL given in the code (the one set on the admin page or provisioned wins)
        self.mqtt_url = mqtt
        self.mqtt = None           # the MQTT client (iotutils.mqtt.MQTT) when a broker is configured
        self._mq = None            # its Home Assistant side (iotutils.mqtt_device)
        self._exposed = []         # (var, name, kind) for Home Assistant
        self._make_mqtt()

    def __getattr__(self, attr):
        # the reports, the memory budget and the settings the admin page changes: their code is
        # loaded when one is asked for (start() lets it go again after its reports)
        return handed_out("iotutils.device_more", self, attr, _LATER)

    def _make_mqtt(self):
        from iotutils import persist
        if not self.mqtt_url:
            stored = persist.PersistentStr("url", default="", folder="mqtt", max_length=200).value
            persist.undeclare("url", "mqtt")   # a device without MQTT shows no "mqtt" folder
            if not stored:
                return
        before_load("iotutils.mqtt_device")
        from iotutils.mqtt_device import MqttDevice, check_code_url
        if self.mqtt_url:
            check_code_url(self.mqtt_url)
        try:
            self._mq = MqttDevice(self, self.mqtt_url)
        except ValueError as e:
            log("mqtt: settings not usable:", e)
            return
        for x in self._exposed:
            try:
                self._mq.expose(*x)
            except ValueError as e:
                log("mqtt: not exposed:", e)
        self.mqtt = self._mq.client

    def expose(self, var, name=None, kind=None):
        """Show a persistent variable in Home Assistant as the entity its type implies (bool: switch,
        range/int/float: number, str: text or select (choices=), hex: text, rgb: light, or
        kind="text"), named `name` (default: the variable's name). Changes made anywhere are published;
        HA's commands go through the variable's coercion. ValueError for a type with no entity
        (checked now when MQTT is configured, else when it is). Returns var."""
        if self._mq is not None:
            self._mq.expose(var, name, kind)
        self._exposed.append((var, name, kind))
        return var

    def _make_ota(self):
        before_load("iotutils.ota")
        from iotutils.ota import OTA
        old = self.ota
        if old is not None:
            old._auto = None  # its auto-update timer ends; the new source resumes the schedule
        repo = self._ota_repo.value or None
        channel = self._ota_channel.value or "release"
        kw = dict(self._ota_kw, channel=channel)
        if self._ota_api:
            kw["api"] = self._ota_api
        try:
            self.ota = OTA(repo=repo, **kw) if (repo or channel.startswith("url:")) else None
        except ValueError as e:
            log("ota: source not usable:", e)
            self.ota = None

    def _resume_auto_update(self):
        st = self.ota.state.load().get("auto") if hasattr(self.ota, "state") else None
        if st and st.get("on"):
            self.ota.auto_update(True, app=self.app)

    @property
    def name(self):
        return self._name.value

    @name.setter
    def name(self, value):
        self._name.value = check_name(value, "name")

    # ---- bring-up ----

    def start(self):
        """Bring everything up and return (the server runs in background threads)."""
        if self._started:
            return self
        self._started = True
        log(self.boot_report())
        if self._want["admin"]:
            # one handler for every admin route: the page's code is loaded at the first request, and
            # a function per route would stay in the heap of every device that is never administered
            app = self.app
            h = self._admin_route
            app.before_request(self._admin_guard)
            app.add_route("/admin", h, ("GET",))
            app.add_route("/admin/", h, ("GET",))
            app.add_route("/admin/admin.js", h, ("GET",))
            app.add_route("/admin/admin.css", h, ("GET",))
            app.add_route("/admin/api/ota/upload", h, ("POST",), stream=True)
            app.add_route("/admin/api/<path:p>", h, ("GET", "POST", "PUT", "DELETE"))
        if self.alexa is not None:
            self.alexa.start()
        self.app.start()
        if self.wifi is not None:
            # the setup portal, made when the access point first needs it: a device on its home
            # network never loads it
            self.wifi.start(portal=lambda wifi, app: _portal(self, wifi, app), app=self.app)
        log("  web server: http://%s:%d/  admin: /admin" % (hal.ip(), self._http_port()))
        if self.ota is not None:
            self._resume_auto_update()
        if self._mq is not None:
            try:
                self._mq.start()
            except MemoryError:
                # (too many entities for this heap: the device goes on without MQTT, not in a loop of
                # restarts; it says so, and the admin page shows MQTT as not connected)
                gc.collect()
                log("mqtt: not started: out of memory for %d exposed variables" % len(self._exposed))
                self._mq = self.mqtt = None
        if self._pending():
            log("  firmware: new %s, confirming after a health check (within %d s)"
                  % ("image" if hal.ota_pending() else "app", self.health_timeout_s))
        if self.tidy_idle_ms and hasattr(gc, "mem_alloc"):
            tasks.shared().add("heap", self._tidy_heap, first_ms=_TIDY_EVERY_MS)
        if not self._main_loop:   # a loop of the program's own: the steps get a thread
            hk = tasks.shared().host(False)
            if hk.has_tasks():
                hk.start()
        self._fit_sockets()
        if self.memory_report:
            for line in self.memory(True, lines=True):
                log("  " + line)
        # the code only a start needs (the reports, the server's life cycle) goes again: until the
        # admin page asks for the budget or a setting, or a port comes or goes; and Wi-Fi's setting-up
        # code, which an app that adds its network at boot loaded (the background manager never uses it)
        unload("iotutils.device_more", "iotutils.web.lifecycle", "iotutils.wifi_setup")
        log("  " + self.heap_report())   # (after the unload: what the device at rest has)
        return self

    def _tidy_heap(self, now):
        # Between two collections MicroPython allocates further and further up the heap, and it never
        # moves an object. So what outlives a burst of requests (a session, a queue's grown array,
        # a thread's frame) lands wherever the burst left the allocator, and splits what would be
        # the largest free block; after hours of Alexa polls the heap was in pieces of a few KB.
        # Collecting once the device falls idle sends the next burst back to the lowest holes, and
        # what outlives it lands low. Only when idle (no cost under load) and only when the garbage
        # is worth a collection (a few ms on the chip). A gc.threshold() would do the same at every
        # request: on the host firmware it cut the web server's throughput to 25-40 %.
        if self.app.idle_ms() < self.tidy_idle_ms:
            return _TIDY_EVERY_MS
        used = gc.mem_alloc()
        if used < self._tidy_base:
            self._tidy_base = used   # the runtime collected since
        elif used - self._tidy_base >= (self.tidy_min_garbage or hal.heap_total() // 64):
            gc.collect()
            self._tidy_base = gc.mem_alloc()
            self.heap_tidies += 1
        return _TIDY_EVERY_MS

    # ---- the admin page, loaded at its first request ----

    @property
    def admin(self):
        """The admin page and API (iotutils.admin.Admin), made at first use: a device nobody
        administers never holds their code. None with Device(admin=False) or before start()."""
        if self._admin is None and self._want["admin"] and self._started:
            with self._lock:
                if self._admin is None:
                    before_load("iotutils.admin")
                    from iotutils.admin import Admin
                    self._admin = Admin(self, routes=False)
        return self._admin

    def _admin_guard(self, req):
        return self.admin._guard(req) if req.path.startswith("/admin/api/") else None

    def _admin_route(self, req, *p):
        a = self.admin
        if p:
            return a._dispatch(req, p[0])
        path = req.path
        if path.endswith(".js"):
            return a._script(req)
        if path.endswith(".css"):
            return a._style(req)
        return a.upload(req) if path.endswith("/upload") else a._page(req)

    #: print the whole device's memory budget at start (heap, thread stacks, sockets)
    memory_report = True

    def heap_report(self):
        """'heap free after start: F of T bytes (P %)' (T: the heap the board gives to data)."""
        gc.collect()
        free = hal.mem_free()
        total = hal.heap_total()
        return "heap free after start: %d of %d bytes (%d %%)" % (free, total, free * 100 // total if total else 0)

    def _http_port(self):
        # the port the server really listens on (the simulator maps device ports to host ports)
        p = self.app.bound_port
        if p:
            return p
        try:
            return hal.port(self.app.port)
        except ValueError:
            return self.app.port

    def _host_guard(self, req):
        """Only the device's own names reach its servers: a DNS-rebinding page (a name the attacker
        controls, resolving to the device) gets 421, or the setup page's address while the portal is
        up. IP literals are safe (no name to rebind), and so is no Host at all (HTTP/1.0)."""
        host = req.host
        if not host or host == "localhost" or _ip_literal(host) or host in self.allowed_hosts:
            return None
        w = self.wifi
        if w is not None:
            h = w.hostname().lower()
            if host == h or host == h + ".local":
                return None
        from iotutils.web.response import Response

        # (not on the device's own names: an invalid Host is rare, and a 400, RFC 9112 3.2. strip(),
        # not a loop over the characters, each of which MicroPython would keep as a qstr for good)
        if host.strip("abcdefghijklmnopqrstuvwxyz0123456789-._~%!$&'()*+,;="):
            return Response("Bad Request: not a host name\n", 400, None, "text/plain")
        p = w.portal if w is not None else None
        if p is not None and p.active:
            return p.redirect()
        return Response("Misdirected Request: not a name of this device\n", 421, None,
                        "text/plain")

    def healthy(self):
        """The OTA health check: the network is up (station, or the setup portal when no network
        is configured), the web server answers a request over a real socket, and, when MQTT is
        configured, the device is connected to the broker."""
        if self.wifi is not None:
            st = self.wifi.status()
            if not (st.get("connected") or (st.get("ap_ssid") and not st.get("configured"))):
                return False
        if self._mq is not None and not self._mq.healthy():
            return False
        return _self_request(self._http_port())

    def poll(self):
        """One pass of the main loop's housekeeping (run() calls this): feeds the watchdog (armed
        at the first call), confirms or rolls back a new firmware image, delivers Alexa changes and
        runs the every() tasks."""
        now = ticks_ms()
        if not self._wdt:
            self._wdt = True
            hal.wdt_start(self.wdt_timeout_ms)
            self._fed_ms = now
        else:
            self._feed()
        hk = tasks.shared()
        if not hk.running():
            hk.run_once(0)   # a port without threads: the housekeeping steps run in the main loop
        if not self._confirmed:
            self._check_health(now)
        if self.alexa is not None and hasattr(self.alexa, "poll"):
            self.alexa.poll()
        if self._mq is not None:
            self._mq.poll()
        for task in self._tasks:
            if ticks_diff(now, task[1]) >= task[0]:
                task[1] = now
                try:
                    task[2]()
                except Exception as e:  # user code must not stop the device
                    log("device: task %r failed:" % (task[2],))
                    print_exception(e)

    def _feed(self):
        # the main loop is alive: feed the watchdog (armed by the first poll()), at most every 0.5 s
        now = ticks_ms()
        if self._wdt and ticks_diff(now, self._fed_ms) >= _FEED_EVERY_MS:
            hal.wdt_feed()
            self._fed_ms = now

    def _check_health(self, now):
        if self._health_ms is not None and ticks_diff(now, self._health_ms) < _HEALTH_EVERY_MS:
            return
        self._health_ms = now
        if not self._pending():
            self._confirmed = True  # nothing to confirm on this boot
            return
        if self.healthy():
            if self.ota is not None:
                self.ota.confirm()
            else:
                hal.ota_mark_valid()
            self._confirmed = True
            log("firmware: health check passed, image confirmed")
        elif ticks_diff(ticks_ms(), self._boot_ms) > self.health_timeout_s * 1000:
            # a reset while the image is pending verify makes the bootloader boot the previous one
            # (and app_boot() the previous App OTA folder)
            log("firmware: health check failed for %d s, rolling back" % self.health_timeout_s)
            hal.reset()

    def _pending(self):
        """A new firmware image, or a new App OTA folder (ota.update_app), waits for confirmation."""
        if hal.ota_pending():
            return True
        if self.ota is None:
            return False
        if self._app_waits is None:
            # asked once a boot (start() and the health check ask again every second until confirmed):
            # only confirm() changes it, and that ends the checks
            self._app_waits = self.ota.app_pending()
        return self._app_waits

    def run(self):
        """start() if needed, then the main loop forever. An error in one pass (a module's poll, a full
        heap) is printed and the loop goes on; only one that repeats pass after pass ends it (a reboot).
        With housekeep_in_main_loop, the housekeeping steps (Wi-Fi, SSDP, MQTT, the auto-update timer)
        run in this loop too, between passes, instead of in a thread of their own."""
        hk = tasks.shared()
        self._main_loop = True
        self.start()
        if not hk.running():
            hk.before_step = self._feed   # its steps are this loop's (never a thread's: that would hide a stuck loop)
        failures = 0
        while True:
            try:
                self.poll()
                failures = 0
                if not hk.running():
                    # the steps are this loop's: wait on their sockets (SSDP, DNS, MQTT) instead of
                    # sleeping, so data there is answered at once
                    hk.run_once(_LOOP_SLEEP_MS)
                    continue
            except Exception as e:
                failures += 1
                print_exception(e)
                if failures >= _MAX_LOOP_FAILURES:
                    raise
                if isinstance(e, MemoryError):
                    gc.collect()
            sleep_ms(_LOOP_SLEEP_MS)


def _ip_literal(host):
    if host.startswith("["):
        return True
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() and len(p) <= 3 for p in parts)


def _health(req):
    return {"ok": True}


def _self_request(port):
    """GET /healthz from the device's own server over loopback: True on a 200. The Host header is
    the device's own address: while the setup portal is up, any other host is redirected to it."""
    import socket
    s = socket.socket()
    try:
        s.settimeout(3)
        s.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        s.send(b"GET /healthz HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % hal.ip().encode())
        head = recv_for(s, 16, 3000)
        return head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.0 200")
    except OSError:
        return False
    finally:
        s.close()


def _portal(dev, wifi, app):
    before_load("iotutils.portal")
    from iotutils.portal import Portal

    return Portal(app, wifi, name=dev._name)   # (the form shows this device's name, not the default)
