# OTA's arguments, and the network code that every OTA object of a process shares, on CPython and
# MicroPython. No server: a closed loopback port answers every check with an OTAError at once.
from mpunit import raises, rmtree, tempdir

from iotutils import tasks
from iotutils._compat import _thread, sleep_ms, ticks_diff, ticks_ms
from iotutils.ota import OTA, OTAError

_CLOSED = "url:http://127.0.0.1:1/ota.json"


def test_the_constructor_checks_every_argument():
    # each was taken and failed at the first check or install (api=None: AttributeError there)
    d = tempdir("otaargs")
    try:
        for kw, field in (({"api": None}, "api"), ({"api": "ftp://x"}, "api"), ({"api": "https://a b"}, "api"),
                          ({"token": 5}, "token"), ({"sha256": "zz"}, "sha256"), ({"sig": "nothex"}, "sig"),
                          ({"pubkey": 5}, "pubkey"), ({"state_path": 5}, "state_path"), ({"asset": ""}, "asset"),
                          ({"manifest": None}, "manifest"), ({"allow_http": "yes"}, "allow_http")):
            e = raises(ValueError, OTA, repo="me/fw", **kw)
            assert str(e).startswith(field), (kw, e)
        o = OTA(repo="me/fw", state_path=d + "/state.json", api="http://127.0.0.1:9", allow_http=True)
        assert o.api == "http://127.0.0.1:9"
    finally:
        rmtree(d)


class _NoThread:
    # the auto-update timer's housekeeping: no thread in this process
    def add(self, *args, **kwargs):
        return self

    def start(self):
        pass


def test_auto_update_settings_are_checked_before_anything_is_stored():
    # enable="no" was bool("no"): auto-update turned on, and that was stored
    d = tempdir("otaauto")
    shared = tasks.shared
    tasks.shared = _NoThread
    try:
        o = OTA(repo="me/fw", state_path=d + "/state.json")
        for bad in ({"enable": "no"}, {"enable": "false"}, {"enable": 1}, {"every_hours": "24"},
                    {"every_hours": 0}, {"idle_minutes": -1}, {"every_hours": float("nan")}):
            e = raises(ValueError, o.auto_update, **bad)
            assert list(bad)[0] in str(e) or "every_hours" in str(e), (bad, e)
        assert o.state.load().get("auto") is None   # nothing stored
        assert o.auto_update(True, 12, 5)["on"] is True
        assert o.auto_update(False)["on"] is False and o.state.load()["auto"]["every_h"] == 12
    finally:
        tasks.shared = shared
        rmtree(d)


def test_one_ota_letting_the_network_code_go_does_not_break_another_ones_check():
    # the network modules are the process's: one OTA object's timed check that found nothing
    # unloads them (unload_network) while another object's check may be using them. That broke with
    # KeyError('iotutils.ota.release') or AttributeError; an unload now waits until no OTA call of
    # the process uses them
    d = tempdir("otarace")
    timer = OTA(channel=_CLOSED, allow_http=True, state_path=d + "/a.json")
    other = OTA(channel=_CLOSED, allow_http=True, state_path=d + "/b.json")
    errors, rounds, done = [], [0, 0], []
    t0 = ticks_ms()

    def loop(i, o, unload):
        try:
            while ticks_diff(ticks_ms(), t0) < 1500:
                try:
                    o.check()
                except OTAError:
                    pass   # (the closed port)
                except Exception as e:
                    errors.append(repr(e))
                if unload:
                    o.unload_network()
                rounds[i] += 1
        finally:
            done.append(i)   # (one append per thread: no read-modify-write shared by threads)
    try:
        _thread.start_new_thread(loop, (0, timer, True))
        _thread.start_new_thread(loop, (1, other, False))
        while len(done) < 2:
            sleep_ms(20)
        assert not errors, errors[:5]
        assert rounds[0] > 5 and rounds[1] > 5, rounds
    finally:
        rmtree(d)


def test_a_file_name_goes_into_a_url_percent_encoded():
    from iotutils.auth import quote   # (App OTA's file names: "/" kept between folder and file)
    assert quote("app/userapp.py", "/") == "app/userapp.py"
    assert quote("app/my page.html", "/") == "app/my%20page.html"
    assert quote("caf\u00e9 50%?#.txt", "/") == "caf%C3%A9%2050%25%3F%23.txt"
    assert quote("a-b_c.d~e", "/") == "a-b_c.d~e"
    assert quote("a/b c") == "a%2Fb%20c"   # (no safe characters: one field, as the portal and MQTT need)
