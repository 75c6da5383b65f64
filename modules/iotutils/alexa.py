# Amazon Alexa local control: the device emulates a Philips Hue bridge (v1 API on the web server's own
# port, which must be 80 on a board: current Echo generations talk to port 80 only) and, per device on
# request, a Belkin WeMo socket (wemo.py). Echo finds both with SSDP (ssdp.py). No cloud, no skill.
# The Hue protocol's answers are hue_api.py, loaded at the first Hue request.
#
#     from iotutils.alexa import Alexa
#     alexa = Alexa(app)                       # routes on app (a WebServer)
#     lamp = alexa.add("Desk lamp", on_change=changed, dimmable=True)
#     alexa.start()                            # SSDP responder + WeMo ports (iotutils.Device does this)
#     def changed(light): print(light.on, light.brightness)    # brightness 0..100 %
#     lamp.set(on=True, brightness=40)         # a local change: Hue clients and WeMo subscribers see it
#     alexa.pair(60)                           # the pairing button: "Alexa, discover devices" within 60 s
#
# Threads: Hue/WeMo requests are served by the web server's worker threads. on_change(light) is called
#   - from alexa.poll() once the app calls it (iotutils.Device's main loop does): callbacks then run in
#     the app's thread, one per light per poll, with the latest state;
#   - until then, directly from the worker thread that served the request: keep it short, and guard
#     whatever it shares with the app with a lock.
# Light state is guarded by the Alexa lock; read light.on / .brightness anywhere.
#
# Persisted (folder "alexa"): the device list (key, name, Hue id, flags, WeMo port slot) and the Hue users
# (app key, device type, hour created, hour last used). A light is found again by its key (the name first
# given to add(), or key=...), so renaming it from a Hue client or the admin page survives reboots and
# keeps its id and uniqueid. On/off and brightness are the app's to persist (it knows what the lamp shows).
#
# Pairing is closed, as on a Hue bridge until its link button is pressed: alexa.pair(seconds=60) (the
# admin page, or the device's own button) opens it, and only then may a new Hue user register (an Echo
# asked to discover devices, a Hue app). The window lives in RAM: a reboot closes it. At most max_users
# users are kept; when they are all there, a new one takes the place of the least recently used user
# that has not been used for keep_days, and is refused when every one was used more recently. A user's
# last use is written to flash at most once an hour.
import _thread
import time

from iotutils import hal
from iotutils import hue as _hue   # (its names through the module: a slot each here otherwise)
from iotutils._compat import before_load, handed_out, load, log, sleep_ms, ticks_diff, ticks_ms
from iotutils.coerce import check_name   # (the lights' and the bridge's name rule: Hue's 32 characters)

_MAX_LIGHTS = const(64)
_MAX_SENDING = const(3)      # WeMo NOTIFYs under way at once (each holds a socket)
_MAX_INDEX = const(127)      # light index 1..127 (7 bits of the Hue id)
_WEMO_BASE = const(49153)   # first WeMo device port (like fauxmo / Espalexa)
_F_KEPT = const(8)           # record flag: added on the admin page, served by the device on every boot
_R_KEY = const(0)            # persisted record: [key, name, index, flags, wemo slot (-1: none)]
_R_NAME = const(1)
_R_INDEX = const(2)
_R_FLAGS = const(3)
_R_SLOT = const(4)
_U_KEY = const(0)            # persisted Hue user: [app key, device type, hour created, hour last used]
_U_USED = const(3)
_SANE_H = const(473352)      # 2024-01-01 in hours since 1970: a wall clock before it was never set

_HUE_TYPES = const(("upnp:rootdevice", "urn:schemas-upnp-org:device:basic:1"))
# Alexa's methods that live in alexa_users.py
_LATER = const(("pair", "pairing", "pairing_left_s", "_pair_left_ms", "users", "user_list", "forget_user",
                "forget_users", "_new_user", "discovery_stats"))


def check_devices(d):
    """d, the stored device list [next index, [[key, name, index, flags, WeMo slot]...], bridge name?],
    if Alexa can load it; else ValueError saying what is wrong (the admin page's import and editor
    check with this, and a list that does not pass is not loaded at boot)."""
    if not isinstance(d, list) or not 2 <= len(d) <= 3 or not _hue.is_int(d[0]) or not 1 <= d[0] <= _MAX_INDEX + 1 \
            or not isinstance(d[1], list) or len(d) == 3 and not isinstance(d[2], str):
        raise ValueError("devices: [next index, [records], name?] expected")
    keys = set()
    indexes = set()
    for r in d[1]:
        if not isinstance(r, list) or len(r) != 5 or not _hue.is_int(r[_R_INDEX]) or not 1 <= r[_R_INDEX] <= _MAX_INDEX \
                or not _hue.is_int(r[_R_FLAGS]) or not 0 <= r[_R_FLAGS] <= 15 or not _hue.is_int(r[_R_SLOT]) \
                or not -1 <= r[_R_SLOT] < _MAX_LIGHTS or r[_R_INDEX] in indexes:
            raise ValueError("devices: a record [key, name, index 1..%d, flags, slot] expected, got %r"
                             % (_MAX_INDEX, r))
        check_name(r[_R_KEY], "key")
        check_name(r[_R_NAME], "name")
        if r[_R_KEY] in keys:
            raise ValueError("devices: key %r twice" % r[_R_KEY])
        keys.add(r[_R_KEY])
        indexes.add(r[_R_INDEX])
        if r[_R_INDEX] >= d[0]:   # add() hands out the next index: it would give this one twice
            raise ValueError("devices: next index %d is not above index %d in use" % (d[0], r[_R_INDEX]))
    return d


_VIEWS = const(("name", "index", "flags", "key", "id", "wemo", "dimmable", "color", "brightness", "uniqueid", "hue",
          "sat", "ct", "xy", "colormode"))


class Light:
    """One device as Alexa sees it. Read .on, .brightness (0..100 %), .bri (Hue 1..254), .hue, .sat,
    .ct, .xy, .colormode, .name, .id; change it locally with set(); rename(); remove()."""

    def __init__(self, alexa, rec, on_change):
        self._alexa = alexa
        self._rec = rec              # the persisted record (shared with the Alexa's list)
        self.on_change = on_change
        self.on = False
        self.bri = 254
        # colour lights only: [hue, sat, ct, x, y, colormode, effect]
        self._col = [8418, 140, 366, 0.4573, 0.41, "ct", "none"] if rec[_R_FLAGS] & _hue.F_COLOR else None

    # ---- identity and state, read-only ----
    # One __getattr__ (asked only for what the instance does not hold) stands for fifteen read-only
    # properties: each cost the heap a property object, a function and a class table slot (~1.2 KB
    # host for the fifteen, loaded by every device with Alexa on).
    def __getattr__(self, attr):
        if attr[:1] == "_":
            raise AttributeError(attr)   # (_rec itself, before __init__ set it: no recursion)
        r = self._rec
        if attr == "name":
            return r[_R_NAME]
        if attr == "index":
            return r[_R_INDEX]
        if attr == "flags":
            return r[_R_FLAGS]
        if attr == "key":
            return r[_R_KEY]
        if attr == "id":
            # the Hue light id: the MAC's last 3 bytes and the index, as a number (as Tasmota and
            # newer Espalexa do): unique among all the bridges in a home, where several devices
            # would all have "1"
            return str(self._alexa._id_base | r[_R_INDEX])
        if attr == "wemo":
            return bool(r[_R_FLAGS] & _hue.F_WEMO)
        if attr == "dimmable":
            return bool(r[_R_FLAGS] & (_hue.F_DIMMABLE | _hue.F_COLOR))
        if attr == "color":
            return self._col is not None
        if attr == "brightness":
            return _hue.bri_to_pct(self.bri)
        if attr == "uniqueid":
            # Hue-style "aa:bb:cc:dd:ee:ff:00:11-0b": the MAC then the index (2 bytes)
            i = r[_R_INDEX]
            return ":".join("%02x" % b for b in bytes(self._alexa.mac) + bytes(((i >> 8) & 255, i & 255))) + "-0b"
        c = self._col   # colour lights only: None for the others
        if attr == "hue":
            return c[0] if c else None
        if attr == "sat":
            return c[1] if c else None
        if attr == "ct":
            return c[2] if c else None
        if attr == "xy":
            return (c[3], c[4]) if c else None
        if attr == "colormode":
            return c[5] if c else None
        raise AttributeError(attr)

    def __setattr__(self, attr, value):
        # the views above stay read-only, as properties were (a stored attribute would hide one)
        if attr in _VIEWS:
            raise AttributeError("%s: read-only (use set() or rename())" % attr)
        object.__setattr__(self, attr, value)

    def set(self, on=None, brightness=None, hue=None, sat=None, ct=None, xy=None):
        """A local change (button, own web page): Hue clients see it at their next read, WeMo subscribers
        get a NOTIFY. on_change is not called (the app made the change). brightness 0 turns it off."""
        if on is not None and on not in (True, False):   # (bool, or 0/1: 5 was taken as True)
            raise ValueError("on: bool expected, got %r" % (on,))
        if brightness is not None:
            if not _hue.is_num(brightness) or not 0 <= brightness <= 100:
                raise ValueError("brightness: 0..100 expected, got %r" % (brightness,))
        if (hue, sat, ct, xy) != (None, None, None, None) and self._col is None:
            raise ValueError("hue/sat/ct/xy: %r is not a colour light" % self.name)
        if hue is not None and (not _hue.is_int(hue) or not 0 <= hue <= 65535):
            raise ValueError("hue: 0..65535 expected, got %r" % (hue,))
        if sat is not None and (not _hue.is_int(sat) or not 0 <= sat <= 254):
            raise ValueError("sat: 0..254 expected, got %r" % (sat,))
        if ct is not None and (not _hue.is_int(ct) or not 153 <= ct <= 500):
            raise ValueError("ct: 153..500 expected, got %r" % (ct,))
        if xy is not None and not _hue.is_xy(xy):
            raise ValueError("xy: (x, y) in 0..1 expected, got %r" % (xy,))
        a = self._alexa
        with a._lock:
            was = self.on
            if on is not None:
                self.on = bool(on)
            if brightness is not None:
                if brightness <= 0:
                    self.on = False
                else:
                    self.bri = _hue.pct_to_bri(int(brightness + 0.5))
            c = self._col
            if hue is not None:
                c[0] = hue
                c[5] = "hs"
            if sat is not None:
                c[1] = sat
                c[5] = "hs"
            if ct is not None:
                c[2] = ct
                c[5] = "ct"
            if xy is not None:
                c[3] = float(xy[0])
                c[4] = float(xy[1])
                c[5] = "xy"
            changed = was != self.on
        if changed and self.wemo:
            a._wemo_changed(self)
        return self

    def rename(self, name):
        """New display name (persisted; the key, Hue id and uniqueid stay)."""
        self._alexa._rename(self, name)

    def remove(self):
        self._alexa.remove(self)


class Alexa:
    """The Hue bridge (and WeMo devices) of this device. See the module comment."""

    #: advertised bridge name (Hue "name" in /api/config)
    name = "iotutils"
    #: once callbacks run in the app's main loop (alexa.poll()), a Hue/WeMo change is answered only
    #: after its callback ran, waiting at most this long (ms) for a busy main loop
    ack_timeout_ms = 2000
    #: WeMo socket read/write timeout (s) when sending event NOTIFYs to subscribers
    notify_timeout = 2
    #: re-announce (NOTIFY ssdp:alive) this often, in ms (UPnP: well within CACHE-CONTROL max-age)
    alive_ms = 45000
    #: retry binding the SSDP socket this often (ms) when start() ran before the network was up, and
    #: check this often whether the address changed
    retry_ms = 10000
    #: most Hue users kept; beyond it a new user replaces the least recently used one that has not been
    #: used for keep_days, or is refused (Hue error 11) when every user was used more recently
    max_users = 16
    #: a Hue user used within this many days is never pushed out by a new one
    keep_days = 14
    #: longest pairing window pair() opens (s)
    max_pair_s = 300
    #: print Hue/WeMo state changes on the console
    log = False

    def __init__(self, app, name=None, folder="alexa"):
        self.app = app
        if name is not None:
            self.name = check_name(name, "bridge name")
        self.folder = folder
        self._lock = _thread.allocate_lock()
        self._save_lock = _thread.allocate_lock()   # one writer of the users at a time (see _save_users)
        self.mac = hal.mac()
        m = bytes(self.mac)
        self._id_base = ((m[3] << 16) | (m[4] << 8) | m[5]) << 7   # < 2**31: a signed int for every client
        self._lights = []          # Light objects served now
        self._byid = {}            # Hue id -> Light
        self._queue = None         # None: call on_change at once; else lights waiting for poll()
        self._delivering = None    # poll()'s other list: the two swap, so a poll makes no list
        self._polls_started = 0    # poll() passes that took the queue ...
        self._polls_done = 0       # ... and those that finished their callbacks
        self._owed = False         # a WeMo subscriber is owed an event (see _task)
        self._sending = []         # WeMo NOTIFYs under way: [subscriber, generator]
        self._running = False
        self._ssdp = None
        self._wemo = {}            # Light -> wemo.WemoDevice
        self._dirty = False        # the device list has changes not yet written
        # persisted state
        self._pair_on = False      # the pairing window: open until _pair_end (ticks) / _pair_end_s (time)
        self._pair_end = 0
        self._pair_end_s = 0
        from iotutils.persist import PersistentJSON
        self._p_devices = PersistentJSON("devices", default=[1, []], folder=folder)
        self._p_users = PersistentJSON("users", default=[], folder=folder)
        try:
            d = check_devices(self._p_devices.value)
        except ValueError as e:
            # imported or edited by hand: the device must still boot (it restarted in a loop)
            log("alexa: the stored device list is not usable (%s): starting without it" % e)
            d = [1, []]
        self._next = d[0]
        self._records = d[1]
        self._named = d[2] if len(d) > 2 and isinstance(d[2], str) else None   # a Hue client's bridge name
        if self._named:
            self.name = self._named
        # [[key, device type, created, used]]: hours on the clock of _hours() (older versions kept
        # [key, device type]: those count as used when this boot began)
        self._t0 = int(time.time())
        self._h0 = 0
        try:  # the pairing switch of older versions (pairing is a window in RAM now)
            from iotutils import store
            store.delete(folder, "pairing")
        except (OSError, ValueError):
            pass
        users = self._p_users.value
        users = [u for u in (users if isinstance(users, list) else ()) if isinstance(u, list) and
                 (len(u) == 2 or len(u) == 4 and _hue.is_int(u[2]) and _hue.is_int(u[3])) and isinstance(u[0], str)]
        for u in users:
            if len(u) == 4 and u[_U_USED] > self._h0:
                self._h0 = u[_U_USED]
        now = self._hours()
        self._users = [u if len(u) == 4 else [u[0], u[1], now, now] for u in users]
        h = self._hue   # (one bound method for the five routes)
        app.add_route("/description.xml", h, ("GET",))
        app.add_route("/api", h, ("POST",))
        app.add_route("/api/", h, ("POST",))
        app.add_route("/api/config", h, ("GET",))
        # a catch-all goes after every other route: the app's own /api/... routes still win
        app.add_route("/api/<path:p>", h, ("GET", "PUT", "POST", "DELETE"))

    def __getattr__(self, attr):
        # pairing, the Hue users and the SSDP counters: their code is loaded at first use (a pairing
        # window, the admin page), so a device that is only switched on and off never holds it
        return handed_out("iotutils.alexa_users", self, attr, _LATER)

    def _hue(self, req, p=None):
        # the Hue protocol is not needed before a Hue client's first request: one handler stands for it
        return load("iotutils.hue_api").serve(self, req, p)

    # ---- devices ----
    def add(self, name, on_change=None, dimmable=True, color=False, wemo=False, key=None, keep=False):
        """Serve a light named `name` (1..32 chars). A WeMo device (wemo=True) is a plain on/off socket
        that Alexa finds as a Belkin WeMo instead of a Hue light. Returns the Light.
        keep=True (the admin page's devices): the device serves it again on every boot by itself, with
        no on_change (set light.on_change, or add() it from the app, which then takes it over)."""
        check_name(name, "name")
        key = check_name(key if key is not None else name, "key")
        for field, v in (("dimmable", dimmable), ("color", color), ("wemo", wemo), ("keep", keep)):
            if not isinstance(v, bool):   # ("no" was taken as True)
                raise ValueError("%s: True or False expected, got %r" % (field, v))
        if wemo and color:
            raise ValueError("wemo: a WeMo device is on/off only (no colour)")
        flags = ((_hue.F_DIMMABLE if dimmable and not wemo else 0) | (_hue.F_COLOR if color else 0) | (_hue.F_WEMO if wemo else 0)
                 | (_F_KEPT if keep else 0))
        if not keep:
            for light in self.lights():
                if light.key == key and light.flags & _F_KEPT:
                    self.remove(light, forget=False)   # a kept device the app now serves itself
        save = False
        with self._lock:
            for light in self._lights:
                if light.key == key:
                    raise ValueError("name: a light %r was already added" % key)
            if len(self._lights) >= _MAX_LIGHTS:
                raise ValueError("name: at most %d lights" % _MAX_LIGHTS)
            rec = None
            for r in self._records:
                if r[_R_KEY] == key:
                    rec = r
                    break
            if rec is None:
                index = self._next
                if index > _MAX_INDEX:  # ids carry 7 bits of index: reuse the lowest free one
                    used = [r[_R_INDEX] for r in self._records]
                    index = 1
                    while index in used:
                        index += 1
                    if index > _MAX_INDEX:
                        raise ValueError("name: no free light index: forget old lights with remove()")
                else:
                    self._next += 1
                rec = [key, name, index, flags, -1]
                self._records.append(rec)
                save = True
            elif rec[_R_FLAGS] != flags:
                rec[_R_FLAGS] = flags
                save = True
            if wemo and rec[_R_SLOT] < 0:
                used = [r[_R_SLOT] for r in self._records]
                slot = 0
                while slot in used:
                    slot += 1
                rec[_R_SLOT] = slot
                save = True
            elif not wemo and rec[_R_SLOT] >= 0:
                rec[_R_SLOT] = -1
                save = True
            light = Light(self, rec, on_change)
            self._lights.append(light)
            if not wemo:
                self._byid[light.id] = light
        if save:
            # written once for a whole run of add()s: at start(), poll(), the next Hue request or save()
            self._dirty = True
        if wemo and self._running:
            self._start_wemo(light)
        return light

    def lights(self):
        """The lights served now (a new list)."""
        with self._lock:
            return list(self._lights)

    def get(self, name):
        """The Light with this display name or key, or None."""
        for light in self.lights():
            if light.name == name or light.key == name:
                return light
        return None

    def remove(self, light, forget=True):
        """Stop serving a light (by Light, name or key); forget=True also drops its persisted entry, so a
        later add() of the same name gets a new id."""
        if isinstance(light, str):
            light = self.get(light)
            if light is None:
                raise ValueError("name: no such light")
        elif not isinstance(light, Light):   # (None and 5 did nothing, silently)
            raise ValueError("light: a Light, a name or a key expected, got %r" % (light,))
        with self._lock:
            if light not in self._lights:
                return   # (one removed already: nothing to do)
            self._lights.remove(light)
            self._byid.pop(light.id, None)
            if forget:
                self._records = [r for r in self._records if r is not light._rec]
        with self._lock:
            w = self._wemo.pop(light, None)
        if w is not None:
            w.stop()
            if self._ssdp is not None and w.entry is not None:
                self._ssdp.notify("ssdp:byebye", [w.entry])
                self._ssdp.remove(w.entry)
        if forget:
            self._save()

    def _rename(self, light, name):
        check_name(name, "name")
        with self._lock:
            for other in self._lights:
                if other is not light and (other.name == name or other.key == name):
                    raise ValueError("name: a light %r exists" % name)   # (get(name) would find either)
            light._rec[_R_NAME] = name
        self._save()

    def _save(self):
        with self._lock:
            data = [self._next, self._records] + ([self._named] if self._named else [])
            self._dirty = False
        self._p_devices.value = data

    def save(self):
        """Write the device list now if add() changed it (start(), poll() and Hue requests do this too)."""
        if self._dirty:
            self._save()

    def _save_users(self):
        # Writers take turns, and each writes the list as it is once its turn came: whatever the
        # order threads changed it in, the last write holds the last change (a user's last use
        # changes in place, adding or removing one replaces the list).
        with self._save_lock:
            with self._lock:
                data = list(self._users)
            self._p_users.value = data

    def _hours(self):
        """The clock of users' last use, in hours: the wall clock when the device knows the date (NTP,
        the simulator), else the latest hour on record plus the hours since boot; never before the record."""
        t = int(time.time())
        h = t // 3600 + _hue.EPOCH_H
        if h < _SANE_H:
            h = self._h0 + (t - self._t0) // 3600
        return h if h > self._h0 else self._h0

    def _user(self, name):
        """The entry of Hue user `name`, its use recorded (on flash at most once an hour), or None."""
        now = self._hours()
        with self._lock:
            for u in self._users:
                if u[_U_KEY] == name:
                    break
            else:
                return None
            if u[_U_USED] >= now:
                return u
            u[_U_USED] = now
        self._save_users()
        return u

    # ---- life cycle ----
    def start(self):
        """Start the SSDP responder and the WeMo devices' ports (call once the network is up; if it is
        not, discovery keeps retrying in the background while the Hue API already answers)."""
        if self._running:
            return
        self.save()
        before_load("iotutils.ssdp")
        from iotutils.ssdp import SSDP
        self._ssdp = SSDP()
        self._ssdp.add("http://%s:%d/description.xml", "uuid:" + _hue.HUE_UUID + self.serial, _HUE_TYPES,
                       "hue-bridgeid: %s\r\n" % self.bridgeid, self.app.port)
        for r in list(self._records):
            # the admin page's devices, which no app code adds
            f = r[_R_FLAGS]
            if f & _F_KEPT and self.get(r[_R_KEY]) is None:
                try:
                    self.add(r[_R_NAME], dimmable=bool(f & _hue.F_DIMMABLE), color=bool(f & _hue.F_COLOR),
                             wemo=bool(f & _hue.F_WEMO), key=r[_R_KEY], keep=True)
                except ValueError as e:
                    log("alexa: %s not served: %s" % (r[_R_NAME], e))
        self._running = True
        for light in self.lights():
            if light.wemo:
                self._start_wemo(light)
        try:
            self._ssdp.start()
        except OSError as e:
            log("alexa: ssdp not started yet:", repr(e))
        from iotutils import tasks
        self._alive_ms = self._check_ms = ticks_ms()
        # SSDP answers, alive NOTIFYs and WeMo event NOTIFYs: a step of the device's housekeeping
        # thread (socket I/O kept out of the server's workers), woken at once by an M-SEARCH
        tasks.shared().add("alexa", self._task, sock=self._ssdp_sock).start()

    def stop(self):
        """NOTIFY byebye, close the SSDP socket and the WeMo ports."""
        if not self._running:
            return
        self._running = False
        with self._lock:
            ws = list(self._wemo.values())
            self._wemo = {}
        for w in ws:
            w.stop()
        self._ssdp.stop()
        sending, self._sending = self._sending, []
        for _, g in sending:
            try:
                g.close()   # (its socket closes in its finally)
            except ValueError:
                pass        # the housekeeping is advancing it right now

    def _ssdp_sock(self):
        return self._ssdp._sock if self._ssdp is not None else None

    def _task(self, now):
        if not self._running:
            return None
        ssdp = self._ssdp
        if self._pair_on:
            self._pair_left_ms()   # closes the pairing window on time, whether or not anyone asks
        if not ssdp.started():
            if not ssdp.closed() and ticks_diff(now, self._check_ms) >= self.retry_ms:
                self._check_ms = now
                try:
                    ssdp.start()
                except OSError:
                    pass
        else:
            try:
                ssdp.serve(0)
                if ticks_diff(now, self._check_ms) > self.retry_ms:
                    self._check_ms = now
                    if ssdp.moved():  # a new address (setup AP -> home network): join the group there
                        ssdp.rejoin()
                if ticks_diff(now, self._alive_ms) > self.alive_ms:
                    self._alive_ms = now
                    ssdp.notify("ssdp:alive", None)
            except Exception as e:  # never let discovery die silently
                log("alexa: ssdp:", repr(e))
        # WeMo events: a subscriber is owed the light's state as it is when its NOTIFY starts (a change
        # while one is under way owes another, so every subscriber ends with the last state, however
        # many changes came). Up to _MAX_SENDING go at once, each a generator advanced here a step at
        # a time (10 ms apart) until it ends or gives its subscriber up: a slow subscriber delays
        # only its own (a queue of every change, one NOTIFY after another, dropped the newest and left
        # fast subscribers with an old state behind a slow one)
        sending = self._sending
        if self._owed and len(sending) < _MAX_SENDING:
            self._owed = False
            for w in list(self._wemo.values()):
                for sub in w.owed():
                    if len(sending) >= _MAX_SENDING:
                        self._owed = True   # the rest when one ends
                        break
                    if [1 for x in sending if x[0] is sub]:
                        self._owed = True   # after the one under way
                        continue
                    sub[6] = 0
                    sending.append([sub, w._notify(sub, w.light.on)])
        if sending:
            for x in list(sending):
                try:
                    next(x[1])
                except StopIteration:
                    sending.remove(x)
                except Exception as e:
                    sending.remove(x)
                    log("alexa: notify:", repr(e))
            return 10 if sending else 0
        due = ssdp.next_due_ms(None) if ssdp.started() else None
        return 300 if due is None else min(due, 300)

    def _owe(self):
        # a WeMo subscriber is owed an event: the housekeeping sends it
        self._owed = True
        from iotutils import tasks
        tasks.shared().wake("alexa")

    def poll(self):
        """Deliver queued on_change callbacks in this thread (call it from the app's main loop). From the
        first call on, callbacks are queued for poll() instead of running in the server's worker."""
        self.save()
        if not self._queue:
            # nothing to deliver (the usual pass): no new list, the loop runs many times a second
            if self._queue is None:
                with self._lock:
                    self._queue = []
                    self._delivering = []
            return
        with self._lock:
            # swap the two lists made once: a new list per change would outlive the request that
            # made it and stay wherever the heap had room then, splitting the free space
            pending = self._queue
            self._queue = self._delivering
            self._delivering = pending
            self._polls_started += 1
            n = self._polls_started
        try:
            for light in pending:
                self._call(light)
        finally:
            del pending[:]   # (in place: a slice delete keeps the list's room)
            self._polls_done = n

    def _changed(self, light):
        """A Hue/WeMo client changed light (called without the lock held)."""
        if self.log:
            log("alexa: %s on=%s brightness=%d" % (light.name, light.on, light.brightness))
        if light.wemo:
            self._wemo_changed(light)
        self.deliver(light)

    def deliver(self, light):
        """Call light's on_change for a change the app did not make itself (a Hue or WeMo client, the
        admin page): in the app's main loop once it calls poll(), returning when the callback ran (or
        after ack_timeout_ms)."""
        with self._lock:
            q = self._queue
            if q is not None:
                if light not in q:
                    q.append(light)
                ticket = self._polls_started + 1  # the next poll() to start delivers it
        if q is None:
            self._call(light)
            return
        # Answer the client only after the app's callback ran (and persisted what it keeps): an
        # acknowledged switch must survive a power cut right after the answer. A main loop stuck
        # for longer than ack_timeout_ms gets the answer sent anyway.
        t0 = ticks_ms()
        while self._polls_done < ticket:
            if ticks_diff(ticks_ms(), t0) > self.ack_timeout_ms:
                break
            sleep_ms(5)

    def _call(self, light):
        cb = light.on_change
        if cb is not None:
            try:
                cb(light)
            except Exception as e:
                log("alexa: on_change of %r failed: %r" % (light.name, e))

    # ---- identity ----
    @property
    def serial(self):
        """The MAC as 12 lower-case hex digits."""
        from iotutils.auth import hexstr   # (here, not at the top: a slot in this module's full table)
        return hexstr(bytes(self.mac))

    @property
    def bridgeid(self):
        """Hue bridge id: MAC with FFFE in the middle, upper case (16 hex digits)."""
        s = self.serial.upper()
        return s[:6] + "FFFE" + s[6:]

    # ---- WeMo ----
    def _start_wemo(self, light):
        before_load("iotutils.wemo")
        from iotutils.wemo import WemoDevice
        w = WemoDevice(self, light, _WEMO_BASE + light._rec[_R_SLOT])
        try:
            w.start()
        except OSError as e:  # its port is taken: the other devices still work
            log("alexa: WeMo %r on port %d: %r" % (light.name, w.port, e))
            return
        with self._lock:
            self._wemo[light] = w
        if self._ssdp is not None:
            w.entry = self._ssdp.add("http://%s:%d/setup.xml", "uuid:" + w.udn_tail, w.SSDP_TYPES, "", w.port)
            self._ssdp.notify("ssdp:alive", [w.entry])

    def _wemo_changed(self, light):
        with self._lock:
            w = self._wemo.get(light)
        if w is not None:
            w.changed()
