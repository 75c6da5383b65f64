# Secrets and the things done with them, written once for the whole toolbox: HMAC-SHA256,
# constant-time comparison, random tokens, CA certificates read from PEM, escaping text for
# HTML/XML answers (so a stored name can never become markup) and percent-encoding it for URLs. The admin password (PBKDF2, its hash,
# the count of wrong passwords: hash_password, verify_password, pbkdf2_sha256, Locked, LoginGuard,
# login_guard) is iotutils.passwords, loaded at the first password: this module hands those names
# out too, so `from iotutils.auth import hash_password` works as it always did.
#
# MicroPython has hashlib.sha256 but no hmac module: HMAC is built here from sha256 alone.
import binascii
import hashlib
import os

#: PBKDF2 iterations for new hashes (stored in each hash, so it can change; pure Python on MicroPython:
#: lower it if a login feels slow on the board)
PBKDF2_ITERATIONS = 4000

#: what the one count of wrong admin passwords (passwords.login_guard) remembers: (lock, clients,
#: everyone's count). Made by the password code's first load and kept here, where it outlives that
#: code: it is let go once the owner is in (admin.py) and a later load counts on.
LOGINS = None


def hmac_pads(key):
    """HMAC-SHA256's (inner, outer) padded keys for bytes key: what every HMAC under that key shares."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key + bytes(64 - len(key))
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def hmac_sha256(key, msg):
    """HMAC-SHA256 (RFC 2104) of bytes msg under bytes key."""
    ipad, opad = hmac_pads(key)
    return hashlib.sha256(opad + hashlib.sha256(ipad + msg).digest()).digest()


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


def quote(s, safe=""):
    """Text as it goes into a URL: every byte of its UTF-8 but letters, digits, "-._~" and the
    characters in `safe` percent-encoded (a name with a space, "&" or "@" stays one field)."""
    out = []
    for b in s.encode():
        c = chr(b)
        out.append(c if "a" <= c <= "z" or "A" <= c <= "Z" or "0" <= c <= "9" or c in "-._~" or c in safe
                   else "%%%02X" % b)
    return "".join(out)


_PASSWORDS = const(("hash_password", "verify_password", "pbkdf2_sha256", "Locked", "LoginGuard", "login_guard"))


def __getattr__(name):
    if name == "__all__":
        from iotutils._compat import public_names
        return public_names(globals(), _PASSWORDS)
    # the admin password's code loads at its first use (iotutils.passwords)
    if name in _PASSWORDS:
        from iotutils._compat import load
        return getattr(load("iotutils.passwords"), name)
    raise AttributeError(name)
