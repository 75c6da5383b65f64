# MqttDevice's code that runs at boot, when the app exposes a variable or when asked: starting and
# stopping, carrying the app's subscriptions to a new client, exposing a variable, and the update
# entity's jobs (a check, an install, its result after the reboot). These are
# iotutils.mqtt_device.MqttDevice's methods that a connected device publishing its states never
# calls. MqttDevice hands them out (its __getattr__): this module is loaded at the first call and let
# go at the end of start() and of each OTA job. Each function takes the MqttDevice as `self`; the
# state stays on it. (Callbacks the client keeps, such as the rollout subscription's, stay on the
# class: a handed-out method held for good would hold this module for good.)
from iotutils import hal
from iotutils import homeassistant as ha
from iotutils._compat import _thread, log, print_exception, sleep_ms, start_thread, ticks_diff, ticks_ms, unload
from iotutils.mqtt_device import ROLLOUT, entity_for, object_id

_FIXED = const(("restart", "firmware", "rssi", "heap", "uptime", "ip"))


def expose(self, var, name=None, kind=None):
    """Add var as an entity (ValueError if its type has none, if Home Assistant would refuse it,
    or if another variable has its id); announced at the next pass."""
    oid = object_id(var)
    with self._lock:
        if oid in _FIXED or oid.startswith("alexa_"):
            oid += "_v"
        old = self._vars.get(oid)
        if old is not None and (old[0].folder, old[0].name) != (var.folder, var.name):
            # ("x/y_z" and "x_y/z", "led 1" and "led.1": the second replaced the first in HA)
            raise ValueError("name: %s/%s has the Home Assistant id %r of %s/%s already exposed" % (
                var.folder, var.name, oid, old[0].folder, old[0].name))
        # checks now: HA's own rules too (a Range of one value, an empty choice), which the
        # announcement would otherwise meet at every connect, or at boot
        ha.check_entity(entity_for(var, oid, name or var.name, kind))
        t = dict(self._vars)   # replaced, never changed in place: the client's thread reads it
        t[oid] = [var, name or var.name, kind]
        self._vars = t
        self._dirty = True
    return oid


def start(self):
    """Announce and stay connected from a thread of its own; returns at once."""
    self._scan_lights()
    cur = self._version()
    self._fw.update(installed_version=cur, latest_version=cur)
    _outcome(self)
    m = self.client
    before = len(m.handlers()[1])
    m.on_connect(self._link)   # before the Bridge's announcement
    # (the entities as a function: the Bridge asks at each announcement and keeps no list of them)
    self.bridge = ha.Bridge(m, self._info(), self._entities, get=self._get, set=self._set,
                            prefix=self.prefix, mode=self.mode, announced=self._announced,
                            on_announced=self._announced.set, on_ha_online=self._ha_online)
    self._dirty = False
    m.on_connect(self._connected)
    m.subscribe(ROLLOUT, self._rollout_msg)
    # which on_connect callbacks are ours (for adopt()): where they begin in the client's list, and how
    # many (two numbers, not the callbacks and topics themselves)
    self._own = (before, len(m.handlers()[1]) - before)
    self._running = self._alive = True
    self._up = False
    self._net_ms = ticks_ms()
    unload("iotutils.mqtt_device_more")   # (until an OTA job, a restart or new settings)
    if _thread is None:
        return self   # no threads: poll() drives the client
    from iotutils import tasks
    tasks.shared().add("mqtt", self._task, sock=m.sock).start()
    return self


def adopt(self, old):
    """The app's own subscriptions and on_connect callbacks on the client of `old` (the
    MqttDevice these settings replace) carry over to this one."""
    first, n = getattr(old, "_own", (0, 0))
    # the topics start() and its Bridge subscribed to
    own_subs = (old.base + "/+/set", old.prefix + "/status", "homeassistant/status", ROLLOUT) if n else ()
    subs, cbs = old.client.handlers()
    for f, cb, qos in subs:
        if f not in own_subs:
            self.client.subscribe(f, cb, qos)
    for i in range(len(cbs)):
        if not first <= i < first + n:
            self.client.on_connect(cbs[i])


def stop(self):
    """Say offline, disconnect and leave the housekeeping (new settings: Device starts
    another)."""
    self._running = False
    from iotutils import tasks
    tasks.shared().wake("mqtt")   # its last step says offline and disconnects
    t0 = ticks_ms()
    while self._alive and ticks_diff(ticks_ms(), t0) < 3000:
        sleep_ms(10)


def _start_job(self, kind, version):
    if self.dev.ota is None:
        _fw_set(self, release_summary="no OTA source configured on this device")
        return kind == "check"
    with self._lock:
        if self._job is not None:
            return False
        self._job = kind
    _later(_job_run, self, kind, version)
    return True


def _job_run(self, kind, version):
    try:
        if kind == "check":
            o = self.dev.ota
            c = _check(self)
            if o is not None and (c is None or not c["newer"]):   # asked again in hours
                o.unload_network()
        else:
            _install(self, version)
    except Exception as e:
        log("mqtt: ota %s failed:" % kind)
        print_exception(e)
    finally:
        with self._lock:
            self._job = None
        unload("iotutils.mqtt_device_more")


def _check(self):
    o = self.dev.ota
    try:
        c = o.check()
    except Exception as e:  # OTAError, OSError, a full heap: say why, keep the running version
        _fw_set(self, latest_version=self._fw["installed_version"], release_url=None,
                     release_summary=("check failed: %s" % e)[:200])
        return None
    cur, new = c["current"], c["available"]
    bad = o.state.load().get("bad") or ()
    if c["newer"]:
        url = "https://github.com/%s/releases/tag/%s" % (o.repo, new) if o.kind == "release" and o.repo else None
        _fw_set(self, installed_version=cur, latest_version=new, release_url=url,
                     release_summary="%s is available (running %s)" % (new, cur))
    else:
        why = ("%s rolled back on this device (it did not pass the health check): not offered again" % new
               if new in bad else "up to date" if new == cur else
               "%s is offered, but it is older than the running %s" % (new, cur))
        _fw_set(self, installed_version=cur, latest_version=cur, release_url=None, release_summary=why)
    return c


def _install(self, version):
    o = self.dev.ota
    rollout = version is not None
    c = _check(self)
    if c is None:
        return _failed(self, version or "?", self._fw["release_summary"], rollout)
    if rollout and c["available"] != version:
        return _failed(self, version, "the OTA source offers %s, not %s" % (c["available"], version), rollout)
    if not c["newer"]:
        return _failed(self, c["available"], self._fw["release_summary"], rollout)
    version = c["available"]
    _record(self, {"v": version, "rollout": rollout})
    _fw_set(self, in_progress=True, update_percentage=0)
    log("mqtt: installing %s" % version)
    try:
        got = o.update(progress=self._progress, reboot=False)
    except Exception as e:
        return _failed(self, version, str(e) or type(e).__name__, rollout)
    _fw_set(self, update_percentage=100)
    log("mqtt: %s installed, rebooting into it" % got)
    # the result is reported once the new image is confirmed (or rolled back): after the reboot
    t0 = ticks_ms()
    while self._fw_dirty and ticks_diff(ticks_ms(), t0) < 2000:
        sleep_ms(20)
    sleep_ms(300)
    hal.reset()


def _progress(self, done, total):
    if total:
        pct = min(100, done * 100 // total)
        with self._lock:
            self._fw["update_percentage"] = pct


def _record(self, rec):
    self._rec = rec
    self._report.value = rec


def _failed(self, version, error, rollout=False):
    log("mqtt: update to %s not installed: %s" % (version, error))
    _fw_set(self, in_progress=False, update_percentage=None, release_summary=("not installed: %s" % error)[:200])
    _record(self, {"v": version, "rollout": rollout, "done": True})
    self._result = {"version": version, "ok": False, "error": error}


def _outcome(self):
    """At boot: an install started here before the last reboot, and how it ended (a new image
    still pending verify is reported once it is confirmed: _confirmed())."""
    job = self._rec
    v = job.get("v")
    if not v or job.get("done") or self.dev.ota is None:
        return
    cur = self._version()
    if cur == v and hal.ota_pending():
        self._await = v
        return
    if cur == v:
        r = {"version": v, "ok": True, "error": None}
    elif v in (self.dev.ota.state.load().get("bad") or ()):
        r = {"version": v, "ok": False, "error": "rolled back: the new image did not pass the health check"}
    else:
        r = {"version": v, "ok": False, "error": "interrupted: the device restarted before the install finished"}
    _record(self, dict(job, done=True))
    self._result = r


def _fw_set(self, **kw):
    with self._lock:
        self._fw.update(kw)
        self._fw_dirty = True


def _restart(self):
    # Home Assistant's restart button
    _later(_reset_soon)


def _later(fn, *args):
    if _thread is not None:
        start_thread("mqtt-job", fn, args, hal.JOB_STACK)   # an OTA check or install: TLS, flash
    else:
        fn(*args)


def _reset_soon():
    sleep_ms(500)   # the offline message and the command's answer leave first
    hal.reset()
