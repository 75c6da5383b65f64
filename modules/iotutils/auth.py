# Secrets and the things done with them, written once for the whole toolbox: HMAC-SHA256, PBKDF2,
# constant-time comparison, random tokens, the admin password hash, the count of wrong passwords,
# and escaping text for HTML/XML answers (so a stored name can never become markup).
#
# MicroPython has hashlib.sha256 but no hmac module and no pbkdf2_hmac: both are built here from
# sha256 alone; CPython's C implementations are used when present (host tools and unit tests).
import binascii
import hashlib
import os

from iotutils._compat import allocate_lock

#: PBKDF2 iterations for new hashes (stored in each hash, so it can change; pure Python on MicroPython:
#: lower it if a login feels slow on the board)
PBKDF2_ITERATIONS = 4000
_PBKDF2_MAX_ITERATIONS = 1000000


def _pads(key):
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key + bytes(64 - len(key))
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def hmac_sha256(key, msg):
    """HMAC-SHA256 (RFC 2104) of bytes msg under bytes key."""
    ipad, opad = _pads(key)
    return hashlib.sha256(opad + hashlib.sha256(ipad + msg).digest()).digest()


def pbkdf2_sha256(password, salt, iterations):
    """PBKDF2-HMAC-SHA256 (RFC 8018), one 32-byte block."""
    fast = getattr(hashlib, "pbkdf2_hmac", None)
    if fast is not None:
        return fast("sha256", password, salt, iterations)  # CPython: C speed
    return _pbkdf2(password, salt, iterations)


def _pbkdf2(password, salt, iterations):
    ipad, opad = _pads(password)  # the pads are built once, not per iteration
    u = hashlib.sha256(opad + hashlib.sha256(ipad + salt + b"\x00\x00\x00\x01").digest()).digest()
    acc = int.from_bytes(u, "big")
    for _ in range(iterations - 1):
        u = hashlib.sha256(opad + hashlib.sha256(ipad + u).digest()).digest()
        acc ^= int.from_bytes(u, "big")
    return acc.to_bytes(32, "big")


def consteq(a, b):
    """a == b for two str or two bytes, in a time that does not depend on where they differ."""
    if len(a) != len(b):
        return False
    if isinstance(a, str):
        a, b = a.encode(), b.encode()
    r = 0
    for i in range(len(a)):
        r |= a[i] ^ b[i]
    return r == 0


def hexstr(b):
    return binascii.hexlify(b).decode()


def token(nbytes=16):
    """A random hex string of 2 * nbytes characters (session ids, CSRF tokens, salts)."""
    return hexstr(os.urandom(nbytes))


def hash_password(pw, iterations=None, salt=None):
    """ "pbkdf2_sha256$<iterations>$<salt hex>$<hash hex>" for password pw (str)."""
    if not isinstance(pw, str):
        raise ValueError("password: must be a string")
    iterations = iterations or PBKDF2_ITERATIONS
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


def _now_s():
    import time

    return time.time()


class Locked(ValueError):
    """A password check refused because too many wrong ones came before (HTTP 429)."""

    def __init__(self, wait):
        super().__init__("admin: too many wrong passwords: try again in %d s" % wait)
        self.wait = wait


class LoginGuard:
    """Wrong admin passwords, wherever they are tried (the admin login, the setup form): after
    `free` failures each further one locks every password check out for `lockout_s`, doubling up
    to `max_lockout_s`. One count for both, so neither is a way around the other."""

    def __init__(self):
        self._lock = allocate_lock()
        self._failures = 0
        self._until = 0

    def wait_s(self, now=None):
        """Seconds until a password may be tried again (0: now)."""
        now = _now_s() if now is None else now
        return int(self._until - now) + 1 if now < self._until else 0

    def failed(self, free=3, lockout_s=2, max_lockout_s=300):
        with self._lock:
            self._failures += 1
            extra = self._failures - free
            if extra > 0:
                self._until = _now_s() + min(lockout_s * (1 << min(extra - 1, 16)), max_lockout_s)

    def ok(self):
        with self._lock:
            self._failures = 0
            self._until = 0


#: the one count of wrong admin passwords on this device
login_guard = LoginGuard()


def escape(s):
    """Text made safe for HTML and XML, in element content and in quoted attribute values."""
    return (
        str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;").replace("'", "&#39;")
    )
