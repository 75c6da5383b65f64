# OTA's arguments, on CPython and MicroPython (in-process: no server).
from mpunit import raises, rmtree, tempdir

from iotutils import tasks
from iotutils.ota import OTA

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
