# The admin password: its salted PBKDF2-SHA256 hash, checking a password against it, and the one count
# of wrong passwords on the device (the admin login, the setup form and a password change all go
# through login_guard, so neither is a way around the other). Loaded at the first password: a device
# whose owner is not logging in holds none of it. iotutils.auth hands out these names too.
#
# MicroPython has no pbkdf2_hmac: it is built here from sha256 alone; CPython's C implementation is
# used when present (host tools and unit tests). PBKDF2_ITERATIONS stays a setting of iotutils.auth.
import binascii
import hashlib
import os

from iotutils import auth
from iotutils._compat import allocate_lock, ticks_add, ticks_diff, ticks_ms
from iotutils.auth import consteq, hexstr, hmac_pads

_PBKDF2_MAX_ITERATIONS = 1000000


def pbkdf2_sha256(password, salt, iterations):
    """PBKDF2-HMAC-SHA256 (RFC 8018), one 32-byte block."""
    fast = getattr(hashlib, "pbkdf2_hmac", None)
    if fast is not None:
        return fast("sha256", password, salt, iterations)  # CPython: C speed
    return _pbkdf2(password, salt, iterations)


def _pbkdf2(password, salt, iterations):
    ipad, opad = hmac_pads(password)  # the pads are built once, not per iteration
    u = hashlib.sha256(opad + hashlib.sha256(ipad + salt + b"\x00\x00\x00\x01").digest()).digest()
    acc = int.from_bytes(u, "big")
    for _ in range(iterations - 1):
        u = hashlib.sha256(opad + hashlib.sha256(ipad + u).digest()).digest()
        acc ^= int.from_bytes(u, "big")
    return acc.to_bytes(32, "big")


def hash_password(pw, iterations=None, salt=None):
    """ "pbkdf2_sha256$<iterations>$<salt hex>$<hash hex>" for password pw (str)."""
    if not isinstance(pw, str):
        raise ValueError("password: must be a string")
    iterations = iterations or auth.PBKDF2_ITERATIONS
    if salt is None:
        salt = os.urandom(16)
    dk = pbkdf2_sha256(pw.encode(), salt, iterations)
    return "pbkdf2_sha256$%d$%s$%s" % (iterations, hexstr(salt), hexstr(dk))


def verify_password(pw, stored):
    """True if pw matches a hash_password() string; False for anything malformed."""
    try:
        algo, it, salt, want = stored.split("$")
        it = int(it)
        if algo != "pbkdf2_sha256" or not 1 <= it <= _PBKDF2_MAX_ITERATIONS:
            return False
        salt = binascii.unhexlify(salt)
        want = binascii.unhexlify(want)
        got = pbkdf2_sha256(pw.encode(), salt, it)
    except (ValueError, AttributeError, TypeError):
        return False
    return consteq(got, want)


class Locked(ValueError):
    """A password check refused because too many wrong ones came before (HTTP 429)."""

    def __init__(self, wait):
        super().__init__("admin: too many wrong passwords: try again in %d s" % wait)
        self.wait = wait


class LoginGuard:
    """Wrong admin passwords, wherever they are tried (the admin login, the setup form, a password
    change), so that neither is a way around the other.

    An attempt is counted *before* the password is hashed (attempt()), so guesses sent in parallel
    each use one up, and only a right password (ok()) gives it back. Each client address gets `free`
    wrong passwords, then a lock-out of `lockout_s` that doubles with every further one up to
    `max_lockout_s`; a lock-out of one address does not lock out another (the owner). All addresses
    together get `global_free` (a guesser with many addresses), then everyone waits - except clients
    the caller calls trusted (on the setup access point: WPA2 with the device's own password), so the
    owner is never locked out of a device in hand."""

    free = 3
    lockout_s = 2
    max_lockout_s = 300
    global_free = 12
    #: client addresses remembered (the least recently seen one is forgotten)
    max_clients = 16
    _DEFAULTS = (free, lockout_s, max_lockout_s, global_free, max_clients)   # (the figures above, as shipped)

    def customised(self):
        """True when the program changed this guard's settings (on the class or on the guard): the
        admin page then keeps this module loaded, since loading it again would bring the defaults back."""
        return (self.free, self.lockout_s, self.max_lockout_s, self.global_free, self.max_clients) != self._DEFAULTS

    def __init__(self, state=None):
        # state: (lock, {address: [wrong passwords, locked until (ticks), last seen, counted globally]},
        # [wrong passwords of everyone, locked until]); a guard of its own without it
        if state is None:
            state = (allocate_lock(), {}, [0, None])
        self._lock, self._clients, self._all = state

    def _wait(self, until, now):
        if until is None:
            return 0
        left = ticks_diff(until, now)
        return (left + 999) // 1000 if left > 0 else 0

    def _lock_for(self, failures, free, now):
        extra = failures - free
        if extra <= 0:
            return None
        return ticks_add(now, min(self.lockout_s * (1 << min(extra - 1, 16)), self.max_lockout_s) * 1000)

    def _locked_out(self, c, trusted, now):
        # seconds the client (its entry c, or None) waits; untrusted, also everyone's lock-out (held: _lock)
        w = self._wait(c[1], now) if c else 0
        return w if trusted else max(w, self._wait(self._all[1], now))

    def wait_s(self, client="", trusted=False, now=None):
        """Seconds until `client` may try a password again (0: now)."""
        now = ticks_ms() if now is None else now
        with self._lock:
            return self._locked_out(self._clients.get(client), trusted, now)

    def attempt(self, client="", trusted=False, now=None):
        """Call before checking a password from `client`: counts the attempt as wrong until ok() says
        otherwise; raises Locked(wait) while the client (or, untrusted, everyone) is locked out."""
        now = ticks_ms() if now is None else now
        with self._lock:
            c = self._clients.get(client)
            wait = self._locked_out(c, trusted, now)
            if wait:
                raise Locked(wait)
            if c is None:
                if len(self._clients) >= self.max_clients:
                    oldest = None
                    for k in self._clients:
                        if oldest is None or ticks_diff(self._clients[k][2], self._clients[oldest][2]) < 0:
                            oldest = k
                    del self._clients[oldest]
                c = self._clients[client] = [0, None, now, False]
            c[0] += 1
            c[1] = self._lock_for(c[0], self.free, now)
            c[2] = now
            c[3] = not trusted  # the global count is the home network's: a trusted guess is not in it
            if not trusted:
                a = self._all
                a[0] += 1
                a[1] = self._lock_for(a[0], self.global_free, now)

    def ok(self, client=""):
        """The password from `client` was right: its count starts again, and its attempt is given
        back to the global count."""
        with self._lock:
            c = self._clients.pop(client, None)
            a = self._all
            if c is not None and c[3] and a[0] > 0:
                a[0] -= 1
                if a[0] <= self.global_free:
                    a[1] = None


#: the one count of wrong admin passwords on this device: its counts live in auth, which stays loaded
#: when this module is let go, so every load of it counts on where the last one stopped
if auth.LOGINS is None:
    auth.LOGINS = (allocate_lock(), {}, [0, None])
login_guard = LoginGuard(auth.LOGINS)
