# MQTT and Home Assistant for iotutils.Device: the client's step, and the device's entities in
# Home Assistant: exposed persistent variables, every Alexa light, diagnostics, a restart button and
# the firmware as an `update` entity; plus the device's side of fleet rollouts (scripts/fleet.py).
# Device loads this module only when a broker is configured: a device without MQTT never holds it.
# The settings (URL, credentials, CA, discovery prefix and mode, base topic) are iotutils.mqtt_settings.
# Starting, stopping, exposing a variable and the OTA jobs are iotutils.mqtt_device_more (loaded
# when called, let go after start() and after each job): a connected device holds only its publishing.
#
#   dev = iotutils.Device(name="lamp", mqtt="mqtt://user:pw@192.168.1.5")   # dev.mqtt: the client
#   dev.expose(brightness, "Brightness")     # a PersistentRange -> a Home Assistant number
#
# Topics: Home Assistant's (iotutils.homeassistant) under <base> ("iotutils/<device id>"), plus
# <base>/ota/result {"version", "ok", "error"} after an install started here (over MQTT: HA's
# Install or a fleet rollout), sent once its outcome is known (after the reboot: confirmed, rolled
# back, or interrupted), and the retained iotutils/fleet/rollout {"version", "percent"[, "halted"]}
# read: a device takes the version when rollout_selected(<its id in the topics>, percent) and the
# OTA source offers exactly that version. Kept in folder "mqtt": "announced" (what HA was told, so
# entities that went are removed: no ghosts) and "ota_job" (the install whose result is owed).
#
# Entities, by the variable's type: Bool -> switch; Range -> number (its lo..hi); Int, Float ->
# number (a box); Str -> text, or select when it has choices; Hex -> text (hexadecimal); RGB -> a
# light (colour + brightness; off is black), or text "#rrggbb" with kind="text". HA's commands go
# through the variable's own coercion: a refused value is logged and the real state published again.
# Every change, wherever it is made (admin page, Alexa, the app, HA), is published: the client's
# step compares the exposed values when persist.changes() moved, and the Alexa lights every pass.
#
# Threads: one step of the device's housekeeping (iotutils.tasks) runs the client and does all
# the publishing (states, diagnostics every info_every_s, the update entity's progress), woken at once
# by data from the broker; it connects only while Wi-Fi is up, drops the link
# when Wi-Fi goes and reconnects at once when it is back. HA's commands run there; an Alexa light's
# on_change is delivered from Device.poll() (the main loop), as for Hue clients. OTA checks and
# installs run in a thread of their own. Home Assistant's birth message ("online" on
# <prefix>/status) is answered with a new announcement after a random 0..announce_delay_ms.
import json

from iotutils import hal, persist
from iotutils import homeassistant as ha
from iotutils._compat import _thread, allocate_lock, call_loaded, handed_out, log, ticks_add, ticks_diff, ticks_ms
from iotutils.mqtt import MQTT
from iotutils.mqtt.codec import parse_url, rollout_selected

ROLLOUT = "iotutils/fleet/rollout"
FOLDER = "mqtt"   # mqtt_settings.FOLDER: the job record and the announced entities live beside the settings
# MqttDevice's methods that live in mqtt_device_more.py (starting, stopping, exposing, the OTA jobs)
_LATER = const(("expose", "start", "adopt", "stop", "_start_job", "_job_run", "_check", "_install", "_progress", "_record",
                "_failed", "_outcome", "_fw_set", "_restart"))


# ---- colours ----

def hs_rgb(hue, sat):
    """Hue's hue (0..65535) and sat (0..254) as (r, g, b) at full brightness."""
    h = (hue or 0) * 6.0 / 65536
    s = (sat or 0) / 254.0
    i = int(h)
    f = h - i
    p, q, t = 1 - s, 1 - s * f, 1 - s * (1 - f)
    c = ((1, t, p), (q, 1, p), (p, 1, t), (p, q, 1), (t, p, 1), (1, p, q))[i % 6]
    return tuple(int(x * 255 + 0.5) for x in c)


def rgb_hs(rgb):
    """(hue 0..65535, sat 0..254) of an (r, g, b) colour."""
    r, g, b = (x / 255.0 for x in rgb)
    mx, mn = max(r, g, b), min(r, g, b)
    d = mx - mn
    if mx <= 0 or d <= 0:
        return 0, 0
    if mx == r:
        h = ((g - b) / d) % 6
    elif mx == g:
        h = (b - r) / d + 2
    else:
        h = (r - g) / d + 4
    return int(h / 6 * 65536 + 0.5) % 65536, int(d / mx * 254 + 0.5)


def check_code_url(url):
    """Device(mqtt=url): the program's own broker URL. A mistake in it is the program's, a ValueError
    "mqtt: ..." at once (a URL stored on the device was checked when it was stored)."""
    try:
        parse_url(url)
    except ValueError as e:
        raise ValueError("mqtt" + str(e)[3:])   # ("url: ..." -> "mqtt: ...")


def _rgb_light(rgb):
    # an RGB variable as a light: on unless black; brightness its brightest channel; the colour at
    # full brightness
    m = max(rgb)
    if not m:
        return {"on": False, "brightness": None, "rgb": None}
    return {"on": True, "brightness": m, "rgb": tuple(c * 255 // m for c in rgb)}


def rgb_command(cur, cmd, mem=None, colour=None):
    """The colour an RGB variable showing `cur` takes for a light command {"on", "brightness",
    "rgb"} (brightness 0..255); mem: its colour before it was switched off (white if unknown);
    colour: the light's colour at full brightness when known exactly (a dimmed value's channels
    lose it: (255, 128, 0) at brightness 1 is (1, 0, 0), red)."""
    if cmd.get("on") is False:
        return (0, 0, 0)
    st = _rgb_light(cur)
    m = _rgb_light(mem or (255, 255, 255))
    bri = cmd.get("brightness")
    if bri is None:
        bri = st["brightness"] or m["brightness"]
    return tuple(c * bri // 255 for c in _command_colour(cur, cmd, mem, colour))


def _command_colour(cur, cmd, mem=None, colour=None):
    """The colour at full brightness rgb_command() gives the light (same arguments)."""
    # a command's colour is a colour at full brightness, as the state reports it: its brightness comes
    # separately (Home Assistant sends both; a colour alone keeps the light's brightness)
    return (cmd.get("rgb") and _rgb_light(cmd["rgb"])["rgb"]) or colour or _rgb_light(cur)["rgb"] or \
        _rgb_light(mem or (255, 255, 255))["rgb"]


def entity_for(var, oid, name, kind=None):
    """(kind, object_id, name, extra) of the Home Assistant entity for a Persistent variable."""
    k = var.kind
    if kind == "text" and k == "rgb":
        return ("text", oid, name, {"max": 7, "pattern": "^#?[0-9a-fA-F]{6}$"})
    if kind not in (None, ha_kind(var)):
        raise ValueError("kind: %s cannot be shown as %r" % (k, kind))
    if k == "bool":
        return ("switch", oid, name, None)
    if k == "range":
        f = isinstance(var.lo, float) or isinstance(var.hi, float)
        step = max(0.001, round((var.hi - var.lo) / 100.0, 3)) if f else 1
        return ("number", oid, name, {"min": var.lo, "max": var.hi, "step": step, "int": not f, "mode": "slider"})
    if k == "int":
        # the range an Int stores as a number (NVS i64): Home Assistant ignores a state outside min..max
        return ("number", oid, name, {"min": -9223372036854775808, "max": 9223372036854775807, "int": True,
                                      "mode": "box"})
    if k == "float":
        # the chip's single-precision range
        return ("number", oid, name, {"min": -3.4e38, "max": 3.4e38, "step": 0.001, "mode": "box"})
    if k == "str":
        if getattr(var, "choices", None):
            return ("select", oid, name, {"options": list(var.choices)})
        return ("text", oid, name, {"max": min(var.max_length or 255, 255)})
    if k == "hex":
        return ("text", oid, name, {"max": 255, "hex": True})
    if k == "rgb":
        return ("light", oid, name, {"rgb": True, "scale": 255})
    raise ValueError("%s/%s: a %s variable has no Home Assistant entity (bool, int, float, str, range, "
                     "rgb and hex have)" % (var.folder, var.name, k))


def ha_kind(var):
    k = var.kind
    return {"bool": "switch", "range": "number", "int": "number", "float": "number", "hex": "text",
            "rgb": "light"}.get(k, "select" if getattr(var, "choices", None) else "text" if k == "str" else None)


def object_id(var):
    oid = "%s_%s" % (var.folder, var.name)
    return "".join(c if (c.isalpha() and c < "\x80") or c.isdigit() or c in "_-" else "_" for c in oid)


# ---- the device's link ----

class MqttDevice:
    """What Device runs when a broker is configured (see the top of this file)."""

    #: seconds between keepalive exchanges (a link gone without a FIN is noticed after 1.5 x)
    keepalive = 30
    #: seconds between diagnostics messages (<base>/info: version, uptime, heap, rssi, ip)
    info_every_s = 60
    #: hours between questions to the OTA source (the update entity's latest version; at most 72)
    check_every_h = 12
    #: the update entity's progress is published when it moved this many percent, or ...
    progress_step = 5
    #: ... when this many ms passed since the last (and no more often otherwise)
    progress_every_ms = 2000
    #: Home Assistant came back: announce again after a random delay up to this (ms), so that a
    #: whole house of devices does not answer at the same moment
    announce_delay_ms = 5000

    def __init__(self, dev, code_url=None):
        s = call_loaded("iotutils.mqtt_settings", "client_settings", code_url)   # (not kept: see there)
        if not s["url"]:
            raise ValueError(s["error"] or "url: no broker configured")
        self.dev = dev
        self.source = s["source"]
        self.prefix = s["prefix"] or "homeassistant"
        self.mode = s["mode"] or "device"
        self.client = MQTT(s["url"], client_id=s["id"], keepalive=self.keepalive, cadata=s["ca"] or None)
        self.id = self.client.client_id
        self.base = s["base"] or "iotutils/" + self.id
        parts = self.base.split("/")
        # scripts/fleet.py knows a device by the level after iotutils/
        self.fleet_id = parts[1] if len(parts) == 2 and parts[0] == "iotutils" else self.id
        self.bridge = None
        self._lock = allocate_lock()
        self._vars = {}          # object_id -> [var, kind]
        self._lights = {}        # object_id -> Alexa light
        self._light_sig = None
        self._lights_ms = 0
        self._scans = 0
        self._last = {}          # object_id -> the value last published (MQTT step only)
        self._raw = {}           # object_id -> an Alexa light's (on, bri, hue, sat) last looked at
        self._rgb_mem = {}       # object_id -> an RGB light's (value last lit, its colour at full brightness)
        self._calls = []         # Alexa lights whose on_change the main loop owes (HA changed them)
        self._seen = -1          # persist.changes() when the exposed values were last compared
        self._dirty = False      # the entity list changed
        self._running = False
        self._alive = False
        self._announce_at = None
        self._info_at = None
        self._check_at = None
        self._job = None         # "check" / "install" while an OTA job runs
        self._fw = {"installed_version": None, "latest_version": None, "release_url": None,
                    "release_summary": None, "in_progress": False, "update_percentage": None}
        self._fw_dirty = False
        self._pct_pub = (-100, 0)  # (percent, ms) of the last progress published
        self._rollout = None
        self._result = None      # {"version", "ok", "error"} waiting for <base>/ota/result
        self._report = persist.PersistentJSON("ota_job", default={}, folder=FOLDER)
        self._rec = self._report.value or {}   # {"v": version, "rollout": bool, "done": bool}
        self._await = None       # a new image, pending verify: its result once confirmed
        self._await_ms = 0
        self._announced = persist.PersistentJSON("announced", default=None, folder=FOLDER)

    def __getattr__(self, attr):
        # the code of a boot, an exposed variable, new settings and the OTA jobs (mqtt_device_more.py),
        # loaded when first called
        return handed_out("iotutils.mqtt_device_more", self, attr, _LATER)

    # ---- what HA shows ----

    def _entities(self):
        out = []
        with self._lock:
            for oid in self._vars:
                v = self._vars[oid]
                try:   # (expose() checked it: a variable changed since is left out, not the device)
                    out.append(ha.check_entity(entity_for(v[0], oid, v[1], v[2])))
                except ValueError as e:
                    log("mqtt: %s not exposed: %s" % (oid, e))
        for oid in self._lights:
            lt = self._lights[oid]
            x = {"rgb": True, "scale": 100} if lt.color else {"scale": 100} if lt.dimmable else {"brightness": False}
            out.append(("light", oid, lt.name, x))
        out.append(("button", "restart", "Restart", {"device_class": "restart"}))
        out.append(("update", "firmware", "Firmware", None))
        return out + ha.diagnostics()

    def _scan_lights(self):
        a = self.dev.alexa
        lights = a.lights() if a is not None else ()
        sig = [(lt.index, lt.name, lt.dimmable, lt.color) for lt in lights]
        if sig != self._light_sig:
            self._light_sig = sig
            self._lights = {"alexa_%d" % lt.index: lt for lt in lights}
            return True
        return False

    def _info(self):
        return {"id": self.id, "name": self.dev.name, "model": "iotutils", "sw": self._version(), "base": self.base,
                "url": self._url()}

    def _url(self):
        port = hal.port(80)
        return "http://%s%s/admin" % (hal.ip(), "" if port == 80 else ":%d" % port)

    def _version(self):
        o = self.dev.ota
        if o is not None:
            return o.status()["version"]
        from iotutils import appimage
        try:
            return (appimage.read_desc(hal.partition(hal.ota_running())) or {}).get("version")
        except (OSError, ValueError):
            return None

    # ---- running ----

    def healthy(self):
        """Part of the OTA health check: connected to the broker (a new image must reach it)."""
        return self.client.connected

    def poll(self):
        """From the main loop: the on_change of Alexa lights HA changed (as for a Hue client)."""
        if _thread is None and self._running:
            self._step(0)
        if not self._calls:
            return
        with self._lock:
            calls = self._calls
            self._calls = []
        for lt in calls:
            cb = lt.on_change
            if cb is not None:
                try:
                    cb(lt)
                except Exception as e:
                    log("mqtt: on_change of %r failed: %r" % (lt.name, e))

    def _net_up(self):
        w = self.dev.wifi
        return w is None or w.connected()

    def _task(self, now):
        # one step in the housekeeping: follow Wi-Fi, then the client and the publishing
        m = self.client
        if not self._running:
            try:
                if m.connected:
                    m.publish(self.base + "/status", "offline", retain=True)
                m.stop()
            finally:
                self._alive = False
            return None
        if ticks_diff(now, self._net_ms) >= (500 if self._up else 200):
            self._net_ms = now
            net = self._net_up()
            if self._up and not net:
                m.drop("Wi-Fi lost")
            elif net and not self._up:
                if m.status()["failures"]:
                    log("mqtt: the network is back: connecting now")
                m.kick()
            self._up = net
        if not self._up:
            return 200
        wait = m.hosted_connect_step()   # (the steps run in the main loop: connects get a job thread)
        if wait is not None:
            return wait
        n = m._received
        self._step(0)
        if not m.connected:
            return min(max(50, ticks_diff(m._next_ms, ticks_ms())), 200)
        return 0 if m._received != n else 200   # more may wait inside TLS

    def _step(self, wait_ms):
        m = self.client
        m.loop_once(wait_ms)
        if not m.connected:
            return
        now = ticks_ms()
        lights = ticks_diff(now, self._lights_ms) >= 250   # (Hue clients change them: look 4 times a second)
        if lights:
            self._lights_ms = now
            self._scans += 1
        if (lights and self._scans % 4 == 0 and self._scan_lights()) or self._dirty:
            self._dirty = False
            self.bridge.set_entities(self._entities)
        if self._announce_at is not None and ticks_diff(now, self._announce_at) >= 0:
            self._announce_at = None
            self.bridge.announce()
        c = persist.changes()
        if c != self._seen:
            self._seen = c
            for oid in self._vars:
                self._publish_if_changed(oid)
        if lights:
            for oid in self._lights:
                lt = self._lights[oid]
                raw = (lt.on, lt.bri, lt.hue, lt.sat)   # (no conversions while nothing changed)
                if raw != self._raw.get(oid):
                    self._raw[oid] = raw
                    self._publish_if_changed(oid)
        self._firmware(now)
        if self._info_at is not None and ticks_diff(now, self._info_at) >= 0:
            self._info_at = ticks_add(now, self.info_every_s * 1000)
            self.bridge.publish_info(self._diagnostics())
        self._confirmed(now)
        if self._result is not None:
            r = self._result
            self._result = None
            log("mqtt: ota result %s" % json.dumps(r))
            m.publish(self.base + "/ota/result", json.dumps(r), qos=1)
        self._consider_rollout()

    def _link(self):
        # the "Visit" link from the address in use now: at start the station may have none yet
        # (0.0.0.0 on a board until DHCP answers), and DHCP may give another one later
        self.bridge.info["url"] = self._url()

    def _connected(self):
        # after the Bridge's announcement (registered first): diagnostics now, a check soon
        now = ticks_ms()
        self._info_at = now
        if self._check_at is None:
            self._check_at = ticks_add(now, 1000)
        self._seen = -1
        if self.bridge.error is None:
            log("mqtt: announced %d entities to %s (%s mode) under %s" % (
                self.bridge.count, self.prefix, self.mode, self.base))

    def _ha_online(self):
        import os
        b = os.urandom(2)
        ms = (b[0] << 8 | b[1]) * self.announce_delay_ms // 65536
        log("mqtt: Home Assistant is back: announcing again in %d ms" % ms)
        self._announce_at = ticks_add(ticks_ms(), ms)

    def _diagnostics(self):
        import gc
        gc.collect()   # the heap in use, not what garbage happens to hold
        w = self.dev.wifi.status() if self.dev.wifi is not None else {}
        return {"version": self._version(), "uptime": hal.uptime_ms() // 1000, "heap": hal.mem_free(),
                "rssi": w.get("rssi"), "ip": w.get("ip") or hal.ip()}

    # ---- states and commands (the Bridge calls these in the client's thread) ----

    def _value(self, oid):
        v = self._vars.get(oid)
        if v is not None:
            var = v[0]
            if var.kind == "rgb":
                if v[2] == "text":
                    return "#%02x%02x%02x" % var.value
                st = _rgb_light(var.value)
                mem = self._rgb_mem.get(oid)
                if mem is not None and mem[0] == var.value and mem[1] and st["on"]:
                    st["rgb"] = mem[1]   # the colour Home Assistant set, not its dimmed channels' rounding
                return st
            x = var.value
            return x[:255] if isinstance(x, str) else x   # (HA takes no longer text)
        lt = self._lights.get(oid)
        if lt is not None:
            return {"on": lt.on, "brightness": lt.brightness, "rgb": hs_rgb(lt.hue, lt.sat) if lt.color else None}
        if oid == "firmware":
            with self._lock:
                return dict(self._fw)
        return None

    def _get(self, oid):
        v = self._value(oid)
        self._last[oid] = v
        return v

    def _publish_if_changed(self, oid):
        v = self._value(oid)
        if v != self._last.get(oid, self):
            self._last[oid] = v
            if v is not None:
                self.bridge.publish_state(oid, v)

    def _set(self, oid, value):
        v = self._vars.get(oid)
        if v is not None:
            var = v[0]
            if var.kind == "rgb" and v[2] != "text":
                cur = var.value
                mem = self._rgb_mem.get(oid)   # (the value last lit, its colour at full brightness)
                if max(cur) and (mem is None or mem[0] != cur):
                    mem = (cur, None)   # changed elsewhere since (the program, the admin page)
                lit, colour = mem or (None, None)
                colour = _command_colour(cur, value, lit, colour)   # (the same rgb_command then takes)
                new = var.set(rgb_command(cur, value, lit, colour))
                self._rgb_mem[oid] = (new, colour) if max(new) else mem
                return
            var.set(value)   # its own coercion: ValueError is logged, the real state published
            return
        lt = self._lights.get(oid)
        if lt is not None:
            hue = sat = None
            if value.get("rgb") is not None and lt.color:
                hue, sat = rgb_hs(value["rgb"])
            lt.set(on=value.get("on"), brightness=value.get("brightness"), hue=hue, sat=sat)
            with self._lock:
                if lt not in self._calls:
                    self._calls.append(lt)
            return
        if oid == "restart":
            log("mqtt: restart pressed in Home Assistant")
            self.client.publish(self.base + "/status", "offline", retain=True)
            self._restart()
        elif oid == "firmware":
            if self.dev.ota is None:
                raise ValueError("no OTA source configured on this device")
            if not self._start_job("install", None):
                raise ValueError("an update or check is already running")

    # ---- firmware: the update entity, installs, fleet rollouts ----

    def _firmware(self, now):
        o = self.dev.ota
        if self._check_at is not None and ticks_diff(now, self._check_at) >= 0:
            # (a tick difference holds a few days on a board: 72 h at most)
            self._check_at = ticks_add(now, int(min(self.check_every_h, 72) * 3600000))
            if o is None:
                self._fw_set(release_summary="no OTA source configured on this device")
            else:
                self._start_job("check", None)
        with self._lock:
            fw = self._fw
            pct = fw["update_percentage"]
            if fw["in_progress"] and pct is not None:
                last, t = self._pct_pub
                if pct - last >= self.progress_step or (pct != last and ticks_diff(now, t) >= self.progress_every_ms):
                    self._fw_dirty = True
                if self._fw_dirty:
                    self._pct_pub = (pct, now)
            dirty = self._fw_dirty
            self._fw_dirty = False
        if dirty:
            v = self._value("firmware")
            self._last["firmware"] = v
            self.bridge.publish_state("firmware", v)

    def _confirmed(self, now):
        # the new image waits for the health check (which wants this connection): once it is
        # confirmed, say so
        if self._await is None or ticks_diff(now, self._await_ms) < 500:
            return
        self._await_ms = now
        if not hal.ota_pending():
            self._record(dict(self._rec, done=True))
            self._result = {"version": self._await, "ok": True, "error": None}
            self._await = None

    def _rollout_msg(self, topic, payload):
        try:
            r = json.loads(payload) if payload else None
            if r is not None and not (isinstance(r.get("version"), str) and isinstance(r.get("percent"), (int, float))):
                raise ValueError("version and percent expected")
            if r is not None:
                # a version is printable ASCII (an image descriptor's 32 bytes): an escaped lone
                # surrogate came back in the result topic and the NVS record as no UTF-8 at all
                b = r["version"].encode()
                if not 0 < len(b) <= 32 or len(b) != len(r["version"]) or min(b) < 33 or max(b) > 126:
                    raise ValueError("version: 1..32 printable ASCII characters")
        except (ValueError, AttributeError) as e:
            log("mqtt: rollout message not understood: %s" % e)
            return
        self._rollout = r

    def _consider_rollout(self):
        r = self._rollout
        if r is None or r.get("halted") or self._job is not None or self._await is not None:
            return
        v = r["version"]
        if v == self._fw["installed_version"] or (self._rec.get("v") == v and self._rec.get("rollout")):
            return   # running it, or tried it already (its result was reported)
        if not rollout_selected(self.fleet_id, r["percent"]):
            return
        if self.dev.ota is None:
            self._failed(v, "no OTA source configured on this device", True)
            return
        log("mqtt: rollout of %s at %s %%: this device is in" % (v, r["percent"]))
        self._record({"v": v, "rollout": True})
        self._start_job("install", v)

