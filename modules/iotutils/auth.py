# Secrets and the things done with them, written once for the whole toolbox: HMAC-SHA256, PBKDF2,
# constant-time comparison, random tokens, the admin password hash, the count of wrong passwords,
# CA certificates read from PEM, and escaping text for HTML/XML answers (so a stored name can never
# become markup).
#
# MicroPython has hashlib.sha256 but no hmac module and no pbkdf2_hmac: both are built here from
# sha256 alone; CPython's C implementations are used when present (host tools and unit tests).
import binascii
import hashlib
import os

from iotutils._compat import allocate_lock, ticks_add, ticks_diff, ticks_ms

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

    def __init__(self):
        self._lock = allocate_lock()
        self._clients = {}   # address -> [wrong passwords, locked until (ticks), last seen, counted globally]
        self._all = [0, None]  # wrong passwords of everyone, locked until

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

    def wait_s(self, client="", trusted=False, now=None):
        """Seconds until `client` may try a password again (0: now)."""
        now = ticks_ms() if now is None else now
        with self._lock:
            c = self._clients.get(client)
            w = self._wait(c[1], now) if c else 0
            if not trusted:
                w = max(w, self._wait(self._all[1], now))
            return w

    def attempt(self, client="", trusted=False, now=None):
        """Call before checking a password from `client`: counts the attempt as wrong until ok() says
        otherwise; raises Locked(wait) while the client (or, untrusted, everyone) is locked out."""
        now = ticks_ms() if now is None else now
        with self._lock:
            c = self._clients.get(client)
            wait = self._wait(c[1], now) if c else 0
            if not trusted:
                wait = max(wait, self._wait(self._all[1], now))
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


#: the one count of wrong admin passwords on this device
login_guard = LoginGuard()


def der_certs(cadata, field="cadata"):
    """CA certificates as a list of DER certificates (MicroPython's ssl takes DER reliably, and one
    per call): PEM text is converted, other bytes are one DER certificate, a list or tuple is taken
    as it is. ValueError naming `field` for PEM text that holds no certificate, or a block that is
    not valid base64, has no END line or holds something that is not a certificate."""
    if isinstance(cadata, (list, tuple)):
        return cadata
    if isinstance(cadata, str):
        cadata = cadata.encode()
    if b"-----BEGIN" not in cadata:
        return [bytes(cadata)]
    out = []
    for part in cadata.split(b"-----BEGIN CERTIFICATE-----")[1:]:
        body, end, _ = part.partition(b"-----END CERTIFICATE-----")
        try:
            der = end and binascii.a2b_base64(b"".join(body.split()))
        except ValueError:   # (binascii.Error is one)
            der = None
        if not der:
            raise ValueError("%s: a certificate in the PEM text is not valid base64 or has no END line" % field)
        if der[0] != 0x30 or len(der) < 16:   # DER: a SEQUENCE, and no certificate is that small
            raise ValueError("%s: the PEM text holds something that is not a certificate" % field)
        out.append(der)
    if not out:
        raise ValueError("%s: no certificate in the PEM text" % field)
    return out


def escape(s):
    """Text made safe for HTML and XML, in element content and in quoted attribute values."""
    return (
        str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;").replace("'", "&#39;")
    )
