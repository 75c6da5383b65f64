# What OTA remembers across reboots: versions that rolled back here (never offered again), the install
# in flight (to notice a rollback at the next boot) and the auto-update settings. Kept in NVS through
# iotutils.persist when it is there, else in one JSON file written atomically (stock MicroPython
# without the rest of the toolbox).
import json
import os

STATE_FILE = "ota_state.json"   # fallback state store when iotutils.persist is not there


# the version an install of this boot selected to boot next, if any (until the reset, which the
# caller of install(..., reboot=False) makes seconds later): another install would write over it
installed = [None]


class OTAError(Exception):
    """An update that cannot be done: nothing was changed (iotutils.ota re-exports it). It lives here,
    in the module an OTA always keeps, so raising and catching it never needs the network code, and it
    stays one class while that code is unloaded between checks and loaded again."""


class State:
    """Small persistent dict: bad (rolled-back) versions, the install in flight, auto-update
    settings. iotutils.persist when it is there, else one JSON file written atomically."""

    def __init__(self, path=None):
        self._p = None
        self.path = path or STATE_FILE
        if path is None:
            try:
                from iotutils.persist import PersistentJSON
                self._p = PersistentJSON("state", default={}, folder="ota")
                self._p.value  # noqa: B018 - probe the backend now
            except Exception:
                self._p = None

    def load(self):
        if self._p is not None:
            v = self._p.value
            return dict(v) if isinstance(v, dict) else {}
        try:
            with open(self.path) as f:
                v = json.load(f)
            return v if isinstance(v, dict) else {}
        except (OSError, ValueError):
            return {}

    def save(self, d):
        if self._p is not None:
            self._p.value = d
            return
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(d, f)
        os.rename(tmp, self.path)

    def update(self, **kw):
        d = self.load()
        for k in kw:
            if kw[k] is None:
                d.pop(k, None)
            else:
                d[k] = kw[k]
        self.save(d)
        return d
