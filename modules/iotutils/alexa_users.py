# Alexa's Hue pairing window, its Hue users and its SSDP counters: the methods of iotutils.alexa.Alexa
# that only a pairing, the admin page or a new Hue client needs. Alexa hands them out (its __getattr__)
# and this module is loaded at the first call: a device that Echo only switches on and off never holds
# their code. Each function takes the Alexa as `self`; the state stays on it.
import time

from iotutils._compat import ticks_add, ticks_diff, ticks_ms
from iotutils.auth import token
from iotutils.hue import is_num

_U_KEY = const(0)            # a Hue user, as alexa.py keeps it: [app key, device type, hour created, hour last used]
_U_TYPE = const(1)
_U_USED = const(3)


def pair(self, seconds=60):
    """Open Hue pairing for `seconds` (up to max_pair_s), like pressing a Hue bridge's link button:
    until then new Hue users may register. pair(0) closes it. Returns the seconds left."""
    if not is_num(seconds) or not 0 <= seconds <= self.max_pair_s:
        raise ValueError("seconds: 0..%d expected, got %r" % (self.max_pair_s, seconds))
    ms = int(seconds * 1000)
    with self._lock:
        self._pair_end = ticks_add(ticks_ms(), ms)
        self._pair_end_s = time.time() + seconds
        self._pair_on = ms > 0
    return pairing_left_s(self)


def pairing(self, allowed=None):
    """Whether new Hue users may register now. pairing(True) opens pairing for 60 s (as pair()),
    pairing(False) closes it (pairing used to be a switch)."""
    if allowed is not None:
        pair(self, 60 if allowed else 0)
    return _pair_left_ms(self) > 0


def pairing_left_s(self):
    """Seconds until the pairing window closes (0: closed)."""
    return (_pair_left_ms(self) + 999) // 1000


def _pair_left_ms(self):
    if not self._pair_on:
        return 0
    with self._lock:
        left = ticks_diff(self._pair_end, ticks_ms())
        # the wall clock as well: ticks wrap (12 days on a board), an old window must never reopen
        if left <= 0 or time.time() > self._pair_end_s + 1:
            self._pair_on = False
            return 0
    return left


def users(self):
    """The Hue user names (app keys: credentials, like passwords), oldest first."""
    with self._lock:
        return [u[_U_KEY] for u in self._users]


def user_list(self):
    """The Hue users without their keys: [{"n": 1.., "name": device type, "idle_h": hours since
    last use}] (what the admin page shows; n is what forget_user() takes)."""
    now = self._hours()
    with self._lock:
        return [{"n": i + 1, "name": u[_U_TYPE], "idle_h": max(0, now - u[_U_USED])}
                for i, u in enumerate(self._users)]


def forget_user(self, n):
    """Drop the n-th Hue user of user_list() (1..); False if there is none."""
    with self._lock:
        if not is_num(n) or not 1 <= n <= len(self._users):
            return False
        self._users = self._users[:n - 1] + self._users[n:]
    self._save_users()
    return True


def forget_users(self):
    with self._lock:
        self._users = []
    self._save_users()


def _new_user(self, devicetype):
    """Register a new Hue user: its key, or None when all max_users were used within keep_days."""
    user = token(16)
    now = self._hours()
    idle = self.keep_days * 24
    with self._lock:
        users = list(self._users)
        while len(users) >= self.max_users:
            old = None
            for u in users:
                if now - u[_U_USED] >= idle and (old is None or u[_U_USED] < old[_U_USED]):
                    old = u
            if old is None:
                return None
            users.remove(old)
        users.append([user, devicetype[:40], now, now])
        self._users = users
    self._save_users()
    return user


def discovery_stats(self):
    """SSDP counters: searches for us, answers sent, searches dropped (rate limits, off the subnet)."""
    return dict(self._ssdp.stats) if self._ssdp is not None else {}
