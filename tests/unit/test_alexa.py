# Alexa local control units (iotutils.alexa, iotutils.hue) on CPython and MicroPython: the Hue v1 API
# answered by the route handlers (no sockets), persistence across Alexa objects, and the heap cost per
# device on MicroPython. SSDP and WeMo units are in test_alexa_discovery.py (one module for all would not
# fit the simulated heap when compiled from source).
import gc
import json

from mpunit import is_micropython, raises

import alexa_setup  # noqa: F401  (real server and store; see there)
from iotutils import alexa as A
from iotutils._compat import ticks_add, ticks_ms
from iotutils import hal, hue
gc.collect()

_folder = [0]


def _new_folder():
    _folder[0] += 1
    seed = int.from_bytes(__import__("os").urandom(2), "little")
    return "ax%d_%d" % (_folder[0], seed)


class Req:
    def __init__(self, method, path, body=b"", headers=None):
        self.method = method
        self.path = path
        self.body = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.headers = headers or {}

    def json(self):
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            raise ValueError("invalid JSON body")


class App:
    """Stands for a WebServer: records routes, dispatches like it (literal, then <path:p> catch-all)."""

    def __init__(self):
        self.port = 80
        self.routes = []

    def add_route(self, path, fn, methods=("GET",)):
        self.routes.append((path, fn, methods))

    def call(self, method, path, body=b"", headers=None):
        req = Req(method, path, body, headers)
        for pattern, fn, methods in self.routes:
            if pattern == path and method in methods:
                return fn(req)
        for pattern, fn, methods in self.routes:
            if pattern.endswith("<path:p>"):
                prefix = pattern[:-8]
                if path.startswith(prefix) and len(path) > len(prefix) and method in methods:
                    return fn(req, path[len(prefix):])
        return None


def body_of(resp):
    b = resp.body
    if isinstance(b, (bytes, str)):
        return b.decode() if isinstance(b, bytes) else b
    return "".join(p.decode() if isinstance(p, bytes) else p for p in b)


def jcall(app, method, path, body=b""):
    resp = app.call(method, path, body)
    assert resp is not None, "no route for %s %s" % (method, path)
    assert resp.status == 200, resp.status
    assert resp.content_type == "application/json", resp.content_type
    return json.loads(body_of(resp))


def setup(folder=None):
    app = App()
    alexa = A.Alexa(app, folder=folder or _new_folder())
    app.alexa = alexa
    return app, alexa


def user_of(app, devicetype="Echo#unit"):
    """A new Hue user, registered the way the owner lets one in: pairing opened first."""
    app.alexa.pair()
    r = jcall(app, "POST", "/api", {"devicetype": devicetype})
    return r[0]["success"]["username"]


class Clock:
    """Stands for Alexa._hours(): the hour, set by the test."""

    def __init__(self, alexa, hour=500000):
        self.hour = hour
        alexa._hours = self

    def __call__(self):
        return self.hour


class CountWrites:
    """Stands for a PersistentJSON and counts the writes to flash."""

    def __init__(self, p):
        self.p = p
        self.writes = 0

    @property
    def value(self):
        return self.p.value

    @value.setter
    def value(self, v):
        self.writes += 1
        self.p.value = v


def closed_now(alexa):
    # time passes: the pairing window ended a moment ago
    alexa._pair_end = ticks_add(ticks_ms(), -1)


# ---- brightness mapping ----
def test_brightness_mapping_round_trip():
    for pct in range(1, 101):
        bri = hue.pct_to_bri(pct)
        assert 1 <= bri <= 254
        assert hue.bri_to_pct(bri) == pct, (pct, bri)
    assert hue.pct_to_bri(100) == 254
    assert hue.pct_to_bri(0) == 1
    assert hue.bri_to_pct(1) == 1
    assert hue.bri_to_pct(254) == 100
    # monotonic both ways
    for bri in range(1, 254):
        assert hue.bri_to_pct(bri) <= hue.bri_to_pct(bri + 1)


# ---- identity ----
def test_a_lights_views_read_its_record_and_stay_read_only():
    app, alexa = setup()
    lamp = alexa.add("Desk lamp", dimmable=True)
    bulb = alexa.add("Bulb", color=True)
    assert (lamp.name, lamp.index, lamp.key, lamp.dimmable, lamp.color, lamp.wemo) == \
        ("Desk lamp", 1, "Desk lamp", True, False, False)
    assert lamp.id == str(alexa._id_base | 1) and lamp.brightness == 100 and lamp.flags == 1
    assert (lamp.hue, lamp.sat, lamp.ct, lamp.xy, lamp.colormode) == (None, None, None, None, None)
    bulb.set(hue=100, sat=20)
    assert (bulb.hue, bulb.sat, bulb.colormode, bulb.color) == (100, 20, "hs", True)
    assert bulb.xy == (0.4573, 0.41) and bulb.ct == 366
    for attr in ("name", "brightness", "id", "hue", "uniqueid"):
        # refused, as read-only properties were: a stored value would hide the view
        raises(AttributeError, setattr, lamp, attr, 5)
    assert lamp.name == "Desk lamp" and lamp.brightness == 100
    raises(AttributeError, getattr, lamp, "nope")
    raises(AttributeError, getattr, lamp, "_nope")
    assert not hasattr(lamp, "volume")


def test_bridgeid_and_uniqueid_from_mac():
    app, alexa = setup()
    mac = bytes(hal.mac())
    hexmac = "".join("%02X" % b for b in mac)
    assert alexa.bridgeid == hexmac[:6] + "FFFE" + hexmac[6:]
    lamp = alexa.add("Desk lamp")
    fan = alexa.add("Fan", dimmable=False)
    assert lamp.uniqueid == ":".join("%02x" % b for b in mac) + ":00:%02x-0b" % lamp.index
    assert lamp.uniqueid != fan.uniqueid
    assert fan.index == lamp.index + 1
    # ids: MAC's last 3 bytes + 7-bit index, unique across the bridges of a home, a positive int32
    base = ((mac[3] << 16) | (mac[4] << 8) | mac[5]) << 7
    assert lamp.id == str(base | lamp.index) and 0 < int(fan.id) < 2 ** 31
    alexa._next = 128          # indexes ran out after many add/remove cycles: the lowest free one is reused
    third = alexa.add("Third")
    assert third.index == 3 and len({lamp.id, fan.id, third.id}) == 3
    cfg = jcall(app, "GET", "/api/config")
    assert cfg["bridgeid"] == alexa.bridgeid
    assert cfg["modelid"] == "BSB002"
    assert cfg["mac"] == ":".join("%02x" % b for b in mac)
    assert "apiversion" in cfg and "swversion" in cfg
    assert "whitelist" not in cfg   # unauthenticated: the public part only


def test_description_xml():
    app, alexa = setup()
    resp = app.call("GET", "/description.xml")
    text = body_of(resp)
    assert resp.content_type.startswith("text/xml")
    assert "<modelNumber>BSB002</modelNumber>" in text
    assert "uuid:2f402f80-da50-11e1-9b23-" + alexa.serial in text
    assert "http://%s:%d/" % (hal.ip(), hal.port(80)) in text


def test_the_hue_protocol_loads_at_the_first_hue_request():
    # a device nobody has asked holds only the routes; the answers' code comes with the first request
    import sys

    from iotutils import _compat
    _compat.unload("iotutils.hue_api")
    app, alexa = setup()
    assert "iotutils.hue_api" not in sys.modules
    assert jcall(app, "GET", "/api/config")["bridgeid"] == alexa.bridgeid
    assert "iotutils.hue_api" in sys.modules
    assert len({id(fn) for _, fn, _ in app.routes}) == 1   # one handler stands for the five routes


# ---- users ----
def test_user_creation_pairing_and_errors():
    app, alexa = setup()
    alexa.pair()
    r = jcall(app, "POST", "/api", {"devicetype": "Echo", "generateclientkey": True})
    user = r[0]["success"]["username"]
    assert len(user) == 32 and len(r[0]["success"]["clientkey"]) == 32
    assert user in alexa.users()
    r = jcall(app, "POST", "/api/", {"devicetype": "phue"})
    assert "success" in r[0] and r[0]["success"]["username"] != user
    assert jcall(app, "POST", "/api", b"{nope")[0]["error"]["type"] == 2
    assert jcall(app, "POST", "/api", {"foo": 1})[0]["error"]["type"] == 5
    alexa.pairing(False)
    r = jcall(app, "POST", "/api", {"devicetype": "Echo"})
    assert r[0]["error"] == {"type": 101, "address": "", "description": "link button not pressed"}
    assert len(alexa.users()) == 2
    alexa.pairing(True)
    assert "success" in jcall(app, "POST", "/api", {"devicetype": "Echo"})[0]


def test_pairing_is_closed_until_the_owner_opens_it_and_closes_by_itself():
    app, alexa = setup()
    assert alexa.pairing() is False and alexa.pairing_left_s() == 0
    r = jcall(app, "POST", "/api", {"devicetype": "Echo"})
    assert r[0]["error"]["type"] == 101 and alexa.users() == []
    assert alexa.pair() == 60 and alexa.pairing() is True      # the default window: 60 s
    assert 59 <= alexa.pairing_left_s() <= 60
    u = user_of(app)
    assert jcall(app, "GET", "/api/%s/config" % u)["linkbutton"] is True
    closed_now(alexa)                                           # the window ends by itself
    assert alexa.pairing() is False and alexa.pairing_left_s() == 0
    assert jcall(app, "POST", "/api", {"devicetype": "late"})[0]["error"]["type"] == 101
    assert jcall(app, "GET", "/api/%s/config" % u)["linkbutton"] is False
    assert alexa.users() == [u]
    assert 299 <= alexa.pair(300) <= 300
    alexa._pair_end_s = 0                    # ticks say open, the wall clock says long over: closed
    assert alexa.pairing() is False
    assert alexa.pair(2.5) == 3 and alexa.pair(0) == 0 and alexa.pairing() is False
    for bad in (-1, 301, "60", None, True, [60]):
        assert "seconds" in str(raises(ValueError, alexa.pair, bad)), bad
    assert alexa.pairing() is False
    assert alexa.pairing(True) is True and 59 <= alexa.pairing_left_s() <= 60   # the old switch: 60 s
    assert alexa.pairing(False) is False


def test_config_shows_the_callers_own_whitelist_entry_only():
    app, alexa = setup()
    alexa.add("Lamp")
    echo = user_of(app, "Echo#kitchen")
    other = user_of(app, "phone#app")
    for path in ("/api/%s/config" % echo, "/api/%s" % echo, "/api/%s/" % echo):
        text = body_of(app.call("GET", path))
        assert other not in text and "phone" not in text, path
        cfg = json.loads(text)
        cfg = cfg.get("config", cfg)
        assert list(cfg["whitelist"]) == [echo] and cfg["whitelist"][echo]["name"] == "Echo#kitchen"
        assert cfg["whitelist"][echo]["create date"][:2] == "20"
    assert "whitelist" not in jcall(app, "GET", "/api/config")
    assert other not in body_of(app.call("GET", "/api/config")) + body_of(app.call("GET", "/api/nobody/config"))


def test_unauthorized_user():
    app, alexa = setup()
    alexa.add("Lamp")
    for path in ("/api/nobody", "/api/nobody/", "/api/nobody/lights", "/api/nobody/lights/1"):
        r = jcall(app, "GET", path)
        assert r[0]["error"]["type"] == 1, (path, r)
        assert r[0]["error"]["description"] == "unauthorized user"
    r = jcall(app, "PUT", "/api/nobody/lights/1/state", {"on": True})
    assert r[0]["error"]["type"] == 1
    assert alexa.get("Lamp").on is False


def test_users_are_capped_and_a_used_one_is_never_pushed_out():
    app, alexa = setup()
    clock = Clock(alexa)
    echo = user_of(app, "Echo")
    # pairing closed: 16 more registrations are all refused
    alexa.pair(0)
    for i in range(alexa.max_users):
        assert jcall(app, "POST", "/api", {"devicetype": "x%d" % i})[0]["error"]["type"] == 101
    assert alexa.users() == [echo]
    # pairing open: the table fills up; beyond it, while every user was used within keep_days, refused
    others = [user_of(app, "other%d" % i) for i in range(alexa.max_users - 1)]
    assert alexa.users() == [echo] + others
    for _ in range(3):
        alexa.pair()
        r = jcall(app, "POST", "/api", {"devicetype": "one too many"})
        assert r[0]["error"]["type"] == 11 and "too many" in r[0]["error"]["description"]
    assert alexa.users() == [echo] + others
    # days pass; the Echo goes on using its user, the others not
    clock.hour += alexa.keep_days * 24 - 1
    assert jcall(app, "GET", "/api/%s/lights" % echo) == {}
    clock.hour += 1
    assert jcall(app, "GET", "/api/%s/lights" % others[1]) == {}     # used again: stays too
    # now the least recently used of the idle ones makes room, never the Echo
    newer = [user_of(app, "new%d" % i) for i in range(3)]
    assert alexa.users() == [echo, others[1]] + others[4:] + newer   # others 0, 2, 3 made room
    assert jcall(app, "GET", "/api/%s/lights" % echo) == {}
    assert jcall(app, "GET", "/api/%s/lights" % others[0])[0]["error"]["type"] == 1
    assert len(alexa.users()) == alexa.max_users


def test_last_use_on_flash_at_most_once_an_hour_per_user():
    folder = _new_folder()
    app, alexa = setup(folder)
    clock = Clock(alexa)
    a, b = user_of(app), user_of(app)
    p = alexa._p_users = CountWrites(alexa._p_users)
    for _ in range(20):
        jcall(app, "GET", "/api/%s/lights" % a)
        jcall(app, "GET", "/api/%s/lights" % b)
    assert p.writes == 0                      # used in the hour they were made: nothing to write
    clock.hour += 1
    for _ in range(20):
        jcall(app, "GET", "/api/%s/lights" % a)
    assert p.writes == 1
    for _ in range(20):
        jcall(app, "GET", "/api/%s/lights" % b)
    assert p.writes == 2
    clock.hour += 3
    jcall(app, "GET", "/api/%s/" % a)
    jcall(app, "GET", "/api/%s/config" % a)
    assert p.writes == 3
    assert [u["idle_h"] for u in alexa.user_list()] == [0, 3]
    # a reboot: the last use came back from flash, and unknown users wrote nothing
    app2, alexa2 = setup(folder)
    Clock(alexa2, clock.hour + 1)
    assert [(u["name"], u["idle_h"]) for u in alexa2.user_list()] == [("Echo#unit", 1), ("Echo#unit", 4)]
    p2 = alexa2._p_users = CountWrites(alexa2._p_users)
    for _ in range(5):
        jcall(app2, "GET", "/api/%s/lights" % ("0" * 32))
    assert p2.writes == 0
    assert alexa2.forget_user(2) is True and alexa2.users() == [a] and p2.writes == 1
    assert alexa2.forget_user(2) is False and alexa2.forget_user(0) is False


class RaceWrites(CountWrites):
    """The first write lets another thread register a user right then, and waits a while for it."""

    def __init__(self, p, app):
        super().__init__(p)
        self.app = app
        self.done = []

    @CountWrites.value.setter
    def value(self, v):
        if self.writes == 0:
            self.writes += 1
            import _thread
            _thread.start_new_thread(lambda: self.done.append(user_of(self.app, "late")), ())
            for _ in range(40):
                if self.done:
                    break
                A.sleep_ms(5)
        self.p.value = v


def test_users_written_by_two_threads_keep_the_last_change():
    # a last use being written while another thread registers a user: the new user reaches flash
    folder = _new_folder()
    app, alexa = setup(folder)
    clock = Clock(alexa)
    u = user_of(app)
    clock.hour += 1
    race = alexa._p_users = RaceWrites(alexa._p_users, app)
    jcall(app, "GET", "/api/%s/lights" % u)         # writes u's last use; "late" registers meanwhile
    for _ in range(200):
        if race.done:
            break
        A.sleep_ms(5)
    A.sleep_ms(50)
    assert len(race.done) == 1
    app2, alexa2 = setup(folder)
    assert alexa2.users() == [u, race.done[0]]


def test_users_of_older_versions_and_their_pairing_switch():
    # before: users were [key, device type] and pairing a persisted switch (open by default)
    from iotutils import store
    folder = _new_folder()
    store.set(folder, "users", json.dumps([["a" * 32, "Echo"], ["b" * 32, "phue"]]))
    store.set(folder, "pairing", 1, 0x01)
    app, alexa = setup(folder)
    assert alexa.users() == ["a" * 32, "b" * 32] and alexa.pairing() is False
    assert store.get(folder, "pairing") is None
    assert jcall(app, "GET", "/api/%s/lights" % ("a" * 32)) == {}
    assert [u["idle_h"] for u in alexa.user_list()] == [0, 0]


def test_malformed_paths_get_hue_errors_never_an_exception():
    # /api//, empty segments, dot segments, percent signs left after decoding, long and odd user names:
    # each one a Hue JSON answer (the real server turned an exception here into a 500)
    app, alexa = setup()
    lamp = alexa.add("Lamp")
    alexa.pairing(True)
    u = user_of(app)
    bad = ["/api//", "/api///", "/api//lights", "/api//lights/", "/api/" + "/" * 40, "/api//config",
           "/api/%s//" % u, "/api/%s//lights" % u, "/api/%s/lights//" % u, "/api/%s/lights//state" % u,
           "/api/%s/lights/%s//state/" % (u, lamp.id), "/api/%s/lights/%s/state/x/y" % (u, lamp.id),
           "/api/%s/lights/new/x" % u, "/api/%s/config/x" % u, "/api/%s/groups/1/action" % u,
           "/api/..", "/api/../config", "/api/%s/../../lights" % u, "/api/%s/lights/../lights" % u,
           "/api/.", "/api/%s/./lights" % u, "/api/%25", "/api/%s/lights/%%41" % u, "/api/%s/lights/%%" % u,
           "/api/" + "x" * 3000, "/api/" + "x" * 3000 + "/lights", "/api/%s/" % u + "a/" * 400,
           "/api/%s/lights/" % u + "9" * 400, "/api/%s/lights/-1" % u, "/api/%s/lights/0" % u,
           "/api/\u00fc/lights", "/api/%s/lights/\u0661" % u, "/api/%s/lights/\u00b2" % u,
           "/api/\ufffd\ufffd", "/api/\x00", "/api/%s/\x00" % u, "/api/%s/lights/ 1" % u,
           "/api/config/", "/api/config/x", "/api/config//"]
    for path in bad:
        for method in ("GET", "PUT", "POST", "DELETE"):
            for body in (b"", b"{}", b'{"on": true}', b"\xff\xfe", b"[]"):
                resp = app.call(method, path, body)
                assert resp is not None, (method, path)
                assert resp.status == 200 and resp.content_type == "application/json", (method, path, resp.status)
                r = json.loads(body_of(resp))
                if isinstance(r, list):
                    assert r and all("error" in e or "success" in e for e in r), (method, path, r)
                    for e in r:
                        if "error" in e:
                            assert isinstance(e["error"]["type"], int) and "address" in e["error"], e
                else:
                    assert isinstance(r, dict), (method, path, r)


# ---- lights ----
def test_lights_list_with_and_without_slash_and_get_light():
    app, alexa = setup()
    lamp = alexa.add("Desk lamp", dimmable=True)
    plug = alexa.add("Heater", dimmable=False)
    bulb = alexa.add("Colour bulb", color=True)
    wemo = alexa.add("Fan", wemo=True)
    u = user_of(app)
    a = jcall(app, "GET", "/api/%s/lights" % u)
    b = jcall(app, "GET", "/api/%s/lights/" % u)
    assert a == b
    assert sorted(a) == sorted([lamp.id, plug.id, bulb.id])   # WeMo devices are not Hue lights
    assert wemo.id not in a
    assert a[lamp.id]["name"] == "Desk lamp"
    assert a[lamp.id]["type"] == "Dimmable light"
    assert a[lamp.id]["uniqueid"] == lamp.uniqueid
    assert "bri" in a[lamp.id]["state"] and "hue" not in a[lamp.id]["state"]
    assert a[plug.id]["type"] == "On/Off plug-in unit" and "bri" not in a[plug.id]["state"]
    assert a[bulb.id]["type"] == "Extended color light"
    for k in ("hue", "sat", "xy", "ct", "colormode"):
        assert k in a[bulb.id]["state"]
    one = jcall(app, "GET", "/api/%s/lights/%s" % (u, lamp.id))
    assert one == a[lamp.id]
    err = jcall(app, "GET", "/api/%s/lights/99" % u)
    assert err[0]["error"]["type"] == 3 and err[0]["error"]["address"] == "/lights/99"
    assert jcall(app, "GET", "/api/%s/lights/%s" % (u, wemo.id))[0]["error"]["type"] == 3
    assert jcall(app, "GET", "/api/%s/nothing" % u)[0]["error"]["type"] == 3


def test_full_state_and_config():
    app, alexa = setup()
    lamp = alexa.add("Desk lamp")
    u = user_of(app)
    full = jcall(app, "GET", "/api/%s/" % u)
    assert jcall(app, "GET", "/api/%s" % u) == full
    assert list(full["lights"]) == [lamp.id]
    assert full["groups"] == {}
    assert full["config"]["bridgeid"] == alexa.bridgeid
    assert list(full["config"]["whitelist"]) == [u]
    assert full["config"]["linkbutton"] is True      # user_of() opened pairing
    assert jcall(app, "GET", "/api/%s/config" % u) == full["config"]
    assert jcall(app, "GET", "/api/%s/groups" % u) == {}


def test_put_state_on_bri_and_callback():
    app, alexa = setup()
    seen = []
    lamp = alexa.add("Desk lamp", on_change=lambda light: seen.append((light.on, light.brightness)))
    u = user_of(app)
    r = jcall(app, "PUT", "/api/%s/lights/%s/state" % (u, lamp.id), {"on": True, "bri": 127})
    assert r == [{"success": {"/lights/%s/state/on" % lamp.id: True}},
                 {"success": {"/lights/%s/state/bri" % lamp.id: 127}}]
    assert seen == [(True, 50)]
    assert lamp.on is True and lamp.bri == 127 and lamp.brightness == 50
    st = jcall(app, "GET", "/api/%s/lights/%s" % (u, lamp.id))["state"]
    assert st["on"] is True and st["bri"] == 127
    r = jcall(app, "PUT", "/api/%s/lights/%s/state" % (u, lamp.id), {"on": False})
    assert seen[-1] == (False, 50)
    # same value again: success, but no callback (nothing changed)
    n = len(seen)
    jcall(app, "PUT", "/api/%s/lights/%s/state" % (u, lamp.id), {"on": False})
    assert len(seen) == n
    r = jcall(app, "PUT", "/api/%s/lights/%s/state" % (u, lamp.id), {"bri_inc": -200})
    assert r[0]["success"]["/lights/%s/state/bri_inc" % lamp.id] == 1 and lamp.bri == 1
    # the plain index works as an alias of the id; answers echo the id the client used
    r = jcall(app, "PUT", "/api/%s/lights/%d/state" % (u, lamp.index), {"on": True})
    assert r == [{"success": {"/lights/%d/state/on" % lamp.index: True}}] and lamp.on is True
    assert jcall(app, "GET", "/api/%s/lights/%d" % (u, lamp.index))["uniqueid"] == lamp.uniqueid


def test_put_state_errors():
    app, alexa = setup()
    lamp = alexa.add("Desk lamp")
    plug = alexa.add("Plug", dimmable=False)
    u = user_of(app)
    path = "/api/%s/lights/%s/state" % (u, lamp.id)
    assert jcall(app, "PUT", path, b"{not json")[0]["error"]["type"] == 2
    assert jcall(app, "PUT", path, b"[1, 2]")[0]["error"]["type"] == 2
    assert jcall(app, "PUT", path, {})[0]["error"]["type"] == 5
    r = jcall(app, "PUT", path, {"bri": 300, "on": "yes", "foo": 1, "transitiontime": 4})
    assert [list(e)[0] for e in r] == ["error", "error", "error", "success"]
    assert r[0]["error"]["type"] == 7 and r[0]["error"]["address"] == "/lights/%s/state/bri" % lamp.id
    assert r[1]["error"]["type"] == 7
    assert r[2]["error"]["type"] == 6 and "foo" in r[2]["error"]["description"]
    assert lamp.bri == 254 and lamp.on is False
    r = jcall(app, "PUT", "/api/%s/lights/%s/state" % (u, plug.id), {"on": True, "bri": 100})
    assert "success" in r[0] and r[1]["error"]["type"] == 6
    assert jcall(app, "PUT", path, {"hue": 100})[0]["error"]["type"] == 6
    assert jcall(app, "PUT", "/api/%s/lights/99/state" % u, {"on": True})[0]["error"]["type"] == 3
    assert jcall(app, "DELETE", "/api/%s/lights/%s" % (u, lamp.id))[0]["error"]["type"] == 4
    # a state with hundreds of unknown keys: one error, not one (ten times the body's size) per key
    many = {"k%03d" % i: 1 for i in range(300)}
    r = jcall(app, "PUT", path, dict(many, on=True))
    assert len(r) == 1 and r[0]["error"]["type"] == 5 and "too many" in r[0]["error"]["description"], r
    assert lamp.on is False
    r = jcall(app, "PUT", path, {"bri": "x" * 5000})
    assert r[0]["error"]["type"] == 7 and len(r[0]["error"]["description"]) < 120, r


def test_colour_state():
    app, alexa = setup()
    got = []
    bulb = alexa.add("Bulb", color=True, on_change=lambda light: got.append(light.colormode))
    u = user_of(app)
    path = "/api/%s/lights/%s/state" % (u, bulb.id)
    r = jcall(app, "PUT", path, {"hue": 21845, "sat": 254})
    assert len(r) == 2 and bulb.hue == 21845 and bulb.sat == 254 and bulb.colormode == "hs"
    jcall(app, "PUT", path, {"xy": [0.3, 0.6]})
    assert bulb.xy == (0.3, 0.6) and bulb.colormode == "xy"
    jcall(app, "PUT", path, {"ct": 600})
    assert bulb.ct == 500 and bulb.colormode == "ct"
    assert jcall(app, "PUT", path, {"xy": [2, 0]})[0]["error"]["type"] == 7
    assert jcall(app, "PUT", path, {"xy": "red"})[0]["error"]["type"] == 7
    assert got == ["hs", "xy", "ct"]
    st = jcall(app, "GET", "/api/%s/lights/%s" % (u, bulb.id))["state"]
    assert st["ct"] == 500 and st["colormode"] == "ct" and st["xy"] == [0.3, 0.6]


def test_local_set_is_reported():
    app, alexa = setup()
    seen = []
    lamp = alexa.add("Desk lamp", on_change=seen.append)
    u = user_of(app)
    lamp.set(on=True, brightness=40)
    st = jcall(app, "GET", "/api/%s/lights/%s" % (u, lamp.id))["state"]
    assert st["on"] is True and st["bri"] == hue.pct_to_bri(40)
    lamp.set(brightness=0)
    assert lamp.on is False
    assert seen == []    # local changes are the app's own: no callback
    assert isinstance(raises(ValueError, lamp.set, brightness=101), ValueError)
    assert "hue" in str(raises(ValueError, lamp.set, hue=3))
    # flags are bools ("no" was taken as True, on=5 as on)
    for bad in ({"on": 5}, {"on": "no"}):
        assert str(raises(ValueError, lamp.set, **bad)).startswith("on"), bad
    for bad in ({"dimmable": "no"}, {"wemo": "false"}, {"color": 1}, {"keep": None}):
        assert str(raises(ValueError, alexa.add, "Odd", **bad)).startswith(list(bad)[0]), bad
    assert alexa.get("Odd") is None
    for bad in (None, 5):   # (did nothing, silently)
        assert str(raises(ValueError, alexa.remove, bad)).startswith("light"), bad
    assert str(raises(ValueError, alexa.remove, "No such")).startswith("name")
    lamp.set(on=1)
    assert lamp.on is True
    bulb = alexa.add("Bulb", color=True)
    assert "sat" in str(raises(ValueError, bulb.set, sat=300))
    assert "xy" in str(raises(ValueError, bulb.set, xy=(1, 2, 3)))
    bulb.set(xy=(0.1, 0.2))
    assert bulb.colormode == "xy"


def test_add_validation():
    app, alexa = setup()
    alexa.add("Lamp")
    assert "name" in str(raises(ValueError, alexa.add, "Lamp"))
    assert "name" in str(raises(ValueError, alexa.add, ""))
    assert "name" in str(raises(ValueError, alexa.add, "x" * 33))
    assert "name" in str(raises(ValueError, alexa.add, 42))
    assert "wemo" in str(raises(ValueError, alexa.add, "Fan", wemo=True, color=True))


def test_poll_queues_callbacks_to_the_app():
    app, alexa = setup()
    seen = []
    lamp = alexa.add("Lamp", on_change=lambda light: seen.append(light.bri))
    u = user_of(app)
    path = "/api/%s/lights/%s/state" % (u, lamp.id)
    jcall(app, "PUT", path, {"on": True, "bri": 10})
    assert seen == [10]         # no poll() yet: called at once
    alexa.poll()                # from now on: queued for poll()
    jcall(app, "PUT", path, {"bri": 20})
    jcall(app, "PUT", path, {"bri": 30})
    assert seen == [10]
    alexa.poll()
    assert seen == [10, 30]     # one call per light per poll, with the latest state
    alexa.poll()
    assert seen == [10, 30]
    # the queue is one of two lists made once, swapped: a new list per poll would outlive the
    # request that filled it, wherever the heap had room then, and split the free heap
    lists = (alexa._queue, alexa._delivering)
    for bri in (40, 50, 60):
        jcall(app, "PUT", path, {"bri": bri})
        alexa.poll()
        assert alexa._queue in lists and alexa._delivering in lists and alexa._queue is not alexa._delivering
    assert seen == [10, 30, 40, 50, 60] and not alexa._queue


def test_callback_exception_does_not_break_api():
    app, alexa = setup()

    def boom(light):
        raise RuntimeError("app bug")
    lamp = alexa.add("Lamp", on_change=boom)
    u = user_of(app)
    r = jcall(app, "PUT", "/api/%s/lights/%s/state" % (u, lamp.id), {"on": True})
    assert "success" in r[0] and lamp.on is True


# ---- persistence ----
def test_persisted_devices_users_pairing_and_rename():
    folder = _new_folder()
    app, alexa = setup(folder)
    lamp = alexa.add("Desk lamp")
    fan = alexa.add("Fan", dimmable=False)
    u = user_of(app)
    r = jcall(app, "PUT", "/api/%s/lights/%s" % (u, lamp.id), {"name": "Reading lamp"})
    assert r == [{"success": {"/lights/%s/name" % lamp.id: "Reading lamp"}}]
    assert jcall(app, "PUT", "/api/%s/lights/%s" % (u, lamp.id), {"name": ""})[0]["error"]["type"] == 7
    # a refused value is shown as JSON, as a bridge shows it (Python's repr said {'a': None})
    for path, name in (("/api/%s/lights/%s" % (u, lamp.id), "name"), ("/api/%s/config" % u, "name")):
        r = jcall(app, "PUT", path, {name: {"a": None, "b": True}})
        assert r[0]["error"]["description"] == \
            'invalid value, {"a": null, "b": true}, for parameter, name', r
    r = jcall(app, "PUT", "/api/%s/lights/%s" % (u, lamp.id), {"name": "x" * 100})
    assert r[0]["error"]["description"] == 'invalid value, "%s..., for parameter, name' % ("x" * 39), r
    alexa.pair()
    ids = (lamp.id, fan.id, lamp.uniqueid)
    # a reboot: a new Alexa on the same folder; the app adds the same lights in another order
    app2, alexa2 = setup(folder)
    fan2 = alexa2.add("Fan", dimmable=False)
    lamp2 = alexa2.add("Desk lamp")
    assert (lamp2.id, fan2.id, lamp2.uniqueid) == ids
    assert lamp2.name == "Reading lamp" and lamp2.key == "Desk lamp"
    assert alexa2.pairing() is False      # a reboot closes pairing
    assert u in alexa2.users()
    lights = jcall(app2, "GET", "/api/%s/lights" % u)
    assert lights[lamp2.id]["name"] == "Reading lamp"
    # removing forgets: the same name later gets a new id
    alexa2.remove("Fan")
    assert alexa2.get("Fan") is None
    app3, alexa3 = setup(folder)
    lamp3 = alexa3.add("Desk lamp")
    fan3 = alexa3.add("Fan", dimmable=False)
    assert lamp3.id == lamp2.id and fan3.id != fan2.id


# ---- heap ----
def test_heap_per_device_on_micropython():
    if not is_micropython():
        return  # the heap model is MicroPython's (CPython objects are several times larger)
    app, alexa = setup()
    alexa.add("warm-up")   # first add allocates the persisted list etc.
    names = ["Light number %d" % i for i in range(32)]
    gc.collect()
    before = gc.mem_alloc()
    for n in names:
        alexa.add(n, dimmable=True)
    gc.collect()
    per = (gc.mem_alloc() - before) // 32
    print("heap per device: %d bytes" % per)
    assert per <= 512, per


def test_a_kept_device_is_taken_over_by_the_app_s_own_add():
    # the admin page's devices are kept (served on every boot by the device itself, without a
    # callback); an app that adds one of the same name takes it over: its callback, its flags, and
    # the device stops restoring it
    app, alexa = setup()
    kept = alexa.add("Extra", keep=True)
    assert kept.on_change is None and kept.flags & 8
    seen = []
    mine = alexa.add("Extra", on_change=seen.append, dimmable=False)
    assert [l.name for l in alexa.lights()] == ["Extra"] and alexa.get("Extra") is mine
    assert mine.id == kept.id and not mine.flags & 8 and not mine.dimmable
    raises(ValueError, alexa.add, "Extra")            # the app's own light is not taken over again


def test_hue_state_commands_as_a_bridge_takes_them():
    # one command with several colour values takes a Hue bridge's precedence (xy over ct over
    # hue/sat, whatever order the keys come in); an increment beside its value is ignored; xy_inc is
    # applied (-0.5..0.5); effect stays as set; a rename to another light's name, to blanks or to
    # control characters is error 7
    app, alexa = setup()
    bulb = alexa.add("Bulb", color=True)
    alexa.add("Plug", dimmable=False)
    u = user_of(app)
    path = "/api/%s/lights/%s/state" % (u, bulb.id)
    jcall(app, "PUT", path, {"on": True, "hue": 100, "sat": 200, "ct": 300, "xy": [0.3, 0.4]})
    assert bulb.colormode == "xy" and bulb.xy == (0.3, 0.4)
    jcall(app, "PUT", path, {"hue": 100, "ct": 250})
    assert bulb.colormode == "ct" and bulb.ct == 250
    jcall(app, "PUT", path, {"bri": 50, "bri_inc": 10})
    assert bulb.bri == 50
    r = jcall(app, "PUT", path, {"xy_inc": [0.1, -0.1]})
    assert bulb.colormode == "xy" and abs(bulb.xy[0] - 0.4) < 1e-6 and abs(bulb.xy[1] - 0.3) < 1e-6, r
    assert jcall(app, "PUT", path, {"xy_inc": [0.9, 0.9]})[0]["error"]["type"] == 7
    assert r[0]["success"]["/lights/%s/state/xy" % bulb.id] == [0.4, 0.3], r   # (rounded as a bridge does)
    # an increment sets the colour mode as its value does; beside its value it has no answer of its
    # own (it answered success with the value sent, next to the value's own error or clamped success)
    jcall(app, "PUT", path, {"hue_inc": 100})
    assert bulb.colormode == "hs"
    jcall(app, "PUT", path, {"ct_inc": 10})
    assert bulb.colormode == "ct"
    r = jcall(app, "PUT", path, {"ct": 600, "ct_inc": 10})
    assert r == [{"success": {"/lights/%s/state/ct" % bulb.id: 500}}] and bulb.ct == 500, r
    r = jcall(app, "PUT", path, {"hue": "x", "hue_inc": 5})
    assert len(r) == 1 and r[0]["error"]["type"] == 7, r
    jcall(app, "PUT", path, {"effect": "colorloop"})
    assert jcall(app, "GET", "/api/%s/lights/%s" % (u, bulb.id))["state"]["effect"] == "colorloop"
    for bad in ("Plug", "  ", "a\nb"):
        r = jcall(app, "PUT", "/api/%s/lights/%s" % (u, bulb.id), {"name": bad})
        assert r[0]["error"]["type"] == 7, (bad, r)
    assert bulb.name == "Bulb"


def test_a_devicetype_is_at_most_40_printable_characters():
    # the Hue API's limit ("application#device"); the admin page lists it as the user's name
    app, alexa = setup()
    alexa.pair()
    for bad in ("x" * 41, "echo#a\nb"):
        r = jcall(app, "POST", "/api", {"devicetype": bad})
        assert r[0]["error"]["type"] == 7, (bad, r)
    assert "success" in jcall(app, "POST", "/api", {"devicetype": "a" * 20 + "#" + "b" * 19})[0]


def test_a_bridge_name_set_by_a_hue_client_is_kept():
    # a real bridge keeps its name: after PUT /config {"name"} a new Alexa on the same store (a
    # reboot) answers with it
    folder = _new_folder()
    app, alexa = setup(folder)
    u = user_of(app)
    r = jcall(app, "PUT", "/api/%s/config" % u, {"name": "Living room"})
    assert r == [{"success": {"/config/name": "Living room"}}]
    assert jcall(app, "PUT", "/api/%s/config" % u, {"name": "a\nb c"})[0]["error"]["type"] == 7
    app2, alexa2 = setup(folder)
    assert jcall(app2, "GET", "/api/config")["name"] == "Living room"
    assert "<friendlyName>Living room" in body_of(app2.call("GET", "/description.xml", b""))


def test_a_stored_device_list_that_does_not_load_is_refused_and_never_stops_the_boot():
    """An import or the variables editor stored any JSON as alexa/devices, and Alexa() then raised at
    every boot: the device restarted in a loop, its admin page never came back."""
    from iotutils.persist import PersistentJSON
    good = [3, [["Lamp", "Lamp", 1, 1, -1], ["Plug", "Plug", 2, 4 | 8, 0]], "My bridge"]
    assert A.check_devices(good) is good and A.check_devices([1, []]) == [1, []]
    for bad in ("garbage", [1, 5], [1], [0, []], [1, [], 5], [1, [["Lamp", "Lamp", 1, 1]]],
                [1, [["Lamp", "Lamp", 0, 1, -1]]], [1, [["Lamp", "Lamp", 1, 99, -1]]],
                [3, [["Lamp", "Lamp", 1, 1, -1], ["Lamp", "Other", 2, 1, -1]]],
                [3, [["Lamp", "Lamp", 1, 1, -1], ["Other", "Other", 1, 1, -1]]],
                # a next index not above every index in use: the next add() would give one twice
                [1, [["Lamp", "Lamp", 1, 1, -1]]], [2, [["Lamp", "Lamp", 1, 1, -1], ["Plug", "Plug", 2, 4, 0]]],
                [1, [[["k"], "Lamp", 1, 1, -1]]], [1, [["Lamp", "", 1, 1, -1]]], [1, [["Lamp", "Lamp", True, 1, -1]]],
                None, {}):
        assert str(raises(ValueError, A.check_devices, bad)).startswith(("devices:", "key:", "name:")), bad
    folder = _new_folder()
    devices = PersistentJSON("devices", default=[1, []], folder=folder)
    users = PersistentJSON("users", default=[], folder=folder)
    for stored in ("garbage", [1, 5], [1, [["Lamp", 5, 1, 1, -1]]], None):
        devices.value = stored
        users.value = [["k", "Echo", "x", None], 5, [1, "y"]]
        app, alexa = setup(folder)
        assert alexa.lights() == [] and alexa.users() == []
        light = alexa.add("Desk")   # and it works
        assert light.index == 1
    devices.value = good
    app, alexa = setup(folder)
    assert alexa.name == "My bridge" and [r[1] for r in alexa._records] == ["Lamp", "Plug"]
    del app, alexa, light
    gc.collect()
