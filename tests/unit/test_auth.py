# iotutils.auth: HMAC, PBKDF2, password hashes, constant-time compare, escaping, the login count.
import binascii

from mpunit import raises

from iotutils import auth, passwords

# RFC 7914 section 11: PBKDF2-HMAC-SHA256 (P="passwd", S="salt", c=1), first 32 bytes
_PBKDF2_VEC = "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"


def test_hmac_sha256_rfc4231_cases():
    d = auth.hmac_sha256(b"Jefe", b"what do ya want for nothing?")
    assert binascii.hexlify(d).decode() == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    # case 6: a key longer than the block is hashed first
    d = auth.hmac_sha256(b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First")
    assert binascii.hexlify(d).decode() == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"


def test_pbkdf2_matches_rfc7914_vector():
    assert binascii.hexlify(passwords._pbkdf2(b"passwd", b"salt", 1)).decode() == _PBKDF2_VEC
    # many iterations: the pure-Python loop agrees with the runtime's (C speed on CPython)
    assert passwords._pbkdf2(b"pw", b"NaCl", 50) == auth.pbkdf2_sha256(b"pw", b"NaCl", 50)


def test_hash_password_format_and_verify():
    h = auth.hash_password("correct horse", iterations=100)
    algo, it, salt, dk = h.split("$")
    assert algo == "pbkdf2_sha256" and it == "100" and len(salt) == 32 and len(dk) == 64
    assert auth.verify_password("correct horse", h)
    assert not auth.verify_password("correct horsE", h)
    assert auth.hash_password("x", iterations=100) != auth.hash_password("x", iterations=100)  # salted
    assert auth.hash_password("pw", iterations=3, salt=b"NaCl") == \
        "pbkdf2_sha256$3$4e61436c$" + auth.hexstr(passwords._pbkdf2(b"pw", b"NaCl", 3))


def test_verify_password_rejects_malformed():
    for bad in ("", "pbkdf2_sha256$1$zz$00", "md5$1$00$00", "pbkdf2_sha256$0$00$00", "a$b$c",
                "pbkdf2_sha256$99999999$00$00", None, 5):
        assert not auth.verify_password("x", bad)
    assert raises(ValueError, auth.hash_password, None)


def test_consteq_and_token():
    assert auth.consteq("abc", "abc") and not auth.consteq("abc", "abd") and not auth.consteq("abc", "ab")
    assert auth.consteq(b"\x00\xff", b"\x00\xff") and not auth.consteq(b"\x00\xff", b"\x00\xfe")
    t = auth.token()
    assert len(t) == 32 and t != auth.token() and int(t, 16) >= 0
    assert len(auth.token(8)) == 16


def test_escape_makes_markup_text():
    assert auth.escape("<a href=\"x\">'&'</a>") == "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
    assert auth.escape(5) == "5"


def _guard():
    g = auth.LoginGuard()
    g.free, g.lockout_s, g.max_lockout_s, g.global_free, g.max_clients = 3, 2, 300, 12, 16
    return g


def test_login_attempts_are_counted_before_the_check():
    # guesses sent in parallel (no ok() between them): the 4th is let through and locks at once
    g = _guard()
    for _ in range(4):
        g.attempt("10.0.0.5", now=1000)
    e = raises(auth.Locked, g.attempt, "10.0.0.5", now=1000)
    assert e.wait == 2
    # after the lock-out: exactly one guess per window, the window doubling
    g.attempt("10.0.0.5", now=3000)
    assert raises(auth.Locked, g.attempt, "10.0.0.5", now=3000).wait == 4
    assert raises(auth.Locked, g.attempt, "10.0.0.5", now=6999).wait == 1
    g.attempt("10.0.0.5", now=7000)
    assert g.wait_s("10.0.0.5", now=7000) == 8


def test_a_locked_out_client_does_not_lock_out_the_owner():
    g = _guard()
    for _ in range(6):
        try:
            g.attempt("10.0.0.66", now=0)
        except auth.Locked:
            pass
    assert g.wait_s("10.0.0.66", now=0) > 0
    assert g.wait_s("10.0.0.2", now=0) == 0
    g.attempt("10.0.0.2", now=0)  # the owner tries ...
    g.ok("10.0.0.2")              # ... and is right: nothing of theirs counts
    assert g.wait_s("10.0.0.2", now=0) == 0


def test_many_addresses_meet_the_global_ceiling_but_never_the_setup_ap():
    g = _guard()
    for i in range(13):  # one guess each from 13 addresses: the 13th passes the ceiling
        g.attempt("10.0.1.%d" % i, now=0)
    assert raises(auth.Locked, g.attempt, "10.0.9.9", now=0).wait == 2
    g.attempt("192.168.4.2", trusted=True, now=0)  # on the device's own access point: still allowed
    g.ok("192.168.4.2")
    assert g.wait_s("10.0.9.9", now=2000) == 0


def test_a_right_password_gives_its_attempt_back():
    g = _guard()
    for i in range(40):  # the owner logging in many times never builds up a lock-out
        g.attempt("10.0.0.2", now=i)
        g.ok("10.0.0.2")
    assert g.wait_s("10.0.0.2", now=40) == 0 and g.wait_s("10.0.0.3", now=40) == 0


def test_client_table_is_bounded():
    g = _guard()
    g.global_free = 1000
    for i in range(100):
        g.attempt("10.0.%d.%d" % (i // 250, i % 250), now=i)
    assert len(g._clients) == 16


def test_der_certs_reads_every_certificate_of_a_pem_text_and_names_the_field():
    from binascii import b2a_base64

    from iotutils.auth import der_certs

    def pem(der):
        return "-----BEGIN CERTIFICATE-----\n%s-----END CERTIFICATE-----\n" % b2a_base64(der).decode()
    a, b = b"\x30\x82\x00\x20" + bytes(32), b"\x30\x82\x00\x21" + bytes(33)
    assert der_certs(pem(a) + pem(b)) == [a, b]          # a chain: each certificate, in order
    assert der_certs((pem(a) + pem(b)).encode()) == [a, b]
    assert der_certs(a) == [a] and der_certs([a, b]) == [a, b]
    for bad in ("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
                "-----BEGIN CERTIFICATE-----\n" + b2a_base64(a).decode(),               # no END line
                pem(b"\x02\x01\x05" + bytes(20)), "-----BEGIN PRIVATE KEY-----\nAAAA\n"):
        assert str(raises(ValueError, der_certs, bad, "ca")).startswith("ca:"), bad


def test_the_admin_password_code_is_its_own_module_that_auth_hands_out():
    # iotutils.passwords (PBKDF2, the hash, the lock-out) loads at the first password; the names
    # it took from auth still resolve there, to the very same objects
    for name in ("hash_password", "verify_password", "pbkdf2_sha256", "Locked", "LoginGuard", "login_guard"):
        assert getattr(auth, name) is getattr(passwords, name), name
    assert raises(AttributeError, getattr, auth, "no_such_name")
    # the iteration count is still auth's setting
    saved = auth.PBKDF2_ITERATIONS
    try:
        auth.PBKDF2_ITERATIONS = 7
        assert auth.hash_password("pw").startswith("pbkdf2_sha256$7$")
    finally:
        auth.PBKDF2_ITERATIONS = saved
    assert passwords.hash_password("pw").startswith("pbkdf2_sha256$%d$" % saved)


def test_the_count_of_wrong_passwords_outlives_the_password_code():
    # admin.py lets the password code go once the owner is in (a right password); the guard's counts
    # live in auth, so a guesser's lock-out holds in the code loaded again. Before, the counts were
    # the module's own: unloading it would have reset them
    import sys

    import iotutils
    from iotutils import _compat

    first = _compat.load("iotutils.passwords")
    client = "10.9.9.9"
    try:
        for _ in range(first.LoginGuard.free + 1):
            first.login_guard.attempt(client, False, 1000)
        _compat.unload("iotutils.passwords")
        again = _compat.load("iotutils.passwords")
        assert again is not first and again.login_guard is not first.login_guard
        e = raises(again.Locked, again.login_guard.attempt, client, False, 1000)
        assert e.wait >= 1
        # a guard made on its own still counts for itself
        assert again.LoginGuard().wait_s(client, False, 1000) == 0
    finally:
        lock, clients, everyone = auth.LOGINS
        clients.clear()
        everyone[0], everyone[1] = 0, None
        sys.modules["iotutils.passwords"] = passwords   # (the module the other tests imported)
        iotutils.passwords = passwords


def test_the_programs_guard_settings_keep_the_password_code_loaded():
    # the admin page lets the password code go once the owner is in; a program that set the guard's
    # settings (LoginGuard.free = 5) got the defaults back at the next load, without a word
    import sys

    import iotutils
    from iotutils import _compat, admin

    pages = sys.modules.pop("iotutils.portal_pages", None)   # (another test's: it would keep the code)
    try:
        p = _compat.load("iotutils.passwords")
        admin._let_go_passwords()
        assert "iotutils.passwords" not in sys.modules   # the defaults: let go
        for on_class in (True, False):
            p = _compat.load("iotutils.passwords")
            if on_class:
                p.LoginGuard.free = 5
            else:
                p.login_guard.max_lockout_s = 900
            admin._let_go_passwords()
            assert sys.modules.get("iotutils.passwords") is p, on_class   # kept, with its settings
            _compat.unload("iotutils.passwords")
    finally:
        sys.modules["iotutils.passwords"] = passwords   # (the module the other tests imported)
        iotutils.passwords = passwords
        if pages is not None:
            sys.modules["iotutils.portal_pages"] = pages
