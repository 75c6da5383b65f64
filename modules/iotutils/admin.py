# The admin page: status, Wi-Fi, persistent variables, OTA, Alexa, reboot — and the JSON API
# behind every action (README "Admin API").
#
# Security: nothing changes without a session. The admin password is set in the setup portal or
# by provisioning (folder "admin", key "pwhash": salted PBKDF2-SHA256, see passwords.hash_password);
# a device with no password yet accepts one first password (POST /admin/api/password) while its
# setup access point is up, and nothing else. Sessions are random tokens in an HttpOnly SameSite=Strict cookie with an expiry;
# every state-changing request also needs the session's CSRF token in X-CSRF-Token; failed logins
# are rate-limited with a growing lock-out. Secrets (Wi-Fi passwords, the password hash, the AP
# salt) are never sent back. The Hue/WeMo routes of alexa.py are not under /admin and stay
# usable by an Echo without the password; they can only change the Alexa devices' state.
import gc
import sys
import time

from iotutils import __version__, hal, persist, tasks
from iotutils._compat import _thread, allocate_lock, before_load, load, print_exception, start_thread, unload
from iotutils.auth import consteq, token
from iotutils.web.response import HTTPError, Response
from iotutils.web.response import accepts_gzip, etag_matches

_COOKIE = "iotsid"
_PREFIX = "/admin/api/"
# Secrets (persist.is_secret: the password hash, Wi-Fi passwords, the AP salt, Hue users, ...) are
# never listed, exported, imported or edited here.


def _now_s():
    return time.time()


def _let_go_passwords():
    # The owner is in: the password code (1.2 KB, host) goes until the next password. Its guard's
    # counts live in auth (auth.LOGINS), so the next load counts on. After a wrong password it stays:
    # a guesser would make every try load it again. Not while the setup page's code is loaded: it
    # imports the password code at its top, and would keep its copy beside a new one.
    # Nor when the program changed the guard's settings (LoginGuard.free = 5): a new load would
    # bring the defaults back.
    p = sys.modules.get("iotutils.passwords")
    if p is not None and "iotutils.portal_pages" not in sys.modules and not p.login_guard.customised():
        unload("iotutils.passwords")


class Admin:
    #: seconds a session lives without use
    session_ttl_s = 3600
    #: most sessions at once (the oldest is dropped)
    max_sessions = 4
    #: shortest admin password accepted
    min_password = 8
    #: seconds between the end of an OTA install and the reboot (the page shows 100 %)
    reboot_delay_s = 1.5

    def __init__(self, device, routes=True):
        """routes=False: the caller routes to it (Device does, loading the page at its first request:
        _page, _script, _style, upload and _dispatch, with _guard as the before_request hook)."""
        self.dev = device
        self.app = device.app
        self._sessions = {}   # token -> [csrf, expires_s, last use]
        self._use = 0
        self._lock = allocate_lock()
        self._ota = {"state": "idle", "done": 0, "total": 0, "error": None, "version": None}
        self._pw = persist.PersistentStr("pwhash", default="", folder="admin", max_length=200)
        self._adhoc = {}      # (folder, name) of variables this page made (the program did not declare them)
        if not routes:
            return
        app = self.app
        app.before_request(self._guard)
        app.add_route("/admin", self._page, ("GET",))
        app.add_route("/admin/", self._page, ("GET",))
        app.add_route("/admin/admin.js", self._script, ("GET",))
        app.add_route("/admin/admin.css", self._style, ("GET",))
        # one catch-all route dispatching from a constant table: a server route per endpoint would
        # cost ~450 bytes of heap each (33 of them), this costs two
        app.add_route(_PREFIX + "ota/upload", self.upload, ("POST",), stream=True)
        app.add_route(_PREFIX + "<path:p>", self._dispatch, ("GET", "HEAD", "POST", "PUT", "DELETE"))

    def upload(self, req):
        """POST /admin/api/ota/upload (a streamed body)."""
        return _json_errors(self._ota_upload)(req)

    def _dispatch(self, req, p):
        from iotutils.web.request import unquote
        # split the raw target, then decode each segment: an SSID may contain "/" (%2F)
        raw = req.target.partition("?")[0][len(_PREFIX):]
        parts = [unquote(x) for x in raw.split("/")]
        allowed = []
        for method, pattern, name in _ROUTES:
            args = _match(pattern, parts)
            if args is None:
                continue
            if method != req.method and (method, req.method) != ("GET", "HEAD"):   # (HEAD: GET's head)
                allowed += (method, "HEAD") if method == "GET" else (method,)
                continue
            rv = _json_errors(getattr(self, name))(req, *args)
            tok = req.g.get("renew")
            if tok:
                # the session is extended at every use, and so is its cookie, once it is half gone
                # (the browser drops a cookie at its Max-Age, whatever the device's session says)
                from iotutils.web.response import make_response
                rv = make_response(rv)
                h = dict(rv.headers or {})
                h.setdefault("Set-Cookie", self._cookie(tok))
                rv.headers = h
            return rv
        if allowed:
            return Response({"error": "method not allowed"}, 405, {"Allow": ", ".join(allowed)})
        return Response({"error": "no such admin API: %s" % p}, 404)

    # ---- sessions, CSRF, lock-out ----

    def _session_of(self, req):
        tok = req.cookies.get(_COOKIE)
        if not tok:
            return None, None
        with self._lock:
            s = self._sessions.get(tok)
            if s is None:
                return None, None
            if s[1] < _now_s():
                del self._sessions[tok]
                return None, None
            now = _now_s()
            s[1] = now + self.session_ttl_s
            self._use += 1
            s[2] = self._use
            if s[3] - now < self.session_ttl_s // 2:
                s[3] = now + self.session_ttl_s
                req.g["renew"] = tok
            return tok, s

    def _guard(self, req):
        """before_request hook: every /admin/api/ call but session/login/first password needs a
        session; every state-changing one also the CSRF token."""
        path = req.path
        if not path.startswith(_PREFIX):
            return None
        what = path[len(_PREFIX):]
        if what in ("session", "login") or (what == "password" and self._first_password_allowed(req)):
            return None
        tok, s = self._session_of(req)
        if s is None:
            return Response({"error": "login required"}, 401)
        if req.method not in ("GET", "HEAD"):
            sent = req.headers.get("x-csrf-token", "")
            if not consteq(sent, s[0]):
                return Response({"error": "missing or wrong CSRF token"}, 403)
        req.g["session"] = tok
        return None

    def _first_password_allowed(self, req):
        # With no password yet, the first one may be set without a session, but only by a client
        # of the setup access point: it is WPA2 with the per-device password printed on the serial
        # console, so whoever sets it has the device in hand, not just a seat on the home network
        # (which can reach the device too while the access point lingers after the device joined).
        if self._pw.value:
            return False
        w = self.dev.wifi
        return w is None or w.on_setup_ap(req.client_ip)

    def _new_session(self):
        # a session lives for hours, and it comes right after the password's hash, whose garbage
        # took the heap upwards: collected first, it lands low instead of splitting the free heap
        gc.collect()
        tok, csrf = token(), token()
        with self._lock:
            if len(self._sessions) >= self.max_sessions:
                # least recently used (a use counter: time() has whole seconds on some ports)
                oldest = min(self._sessions, key=lambda t: self._sessions[t][2])
                del self._sessions[oldest]
            self._use += 1
            # [csrf token, session expiry, last use, cookie expiry]
            self._sessions[tok] = [csrf, _now_s() + self.session_ttl_s, self._use, _now_s() + self.session_ttl_s]
        return csrf, self._cookie(tok)

    def _cookie(self, tok):
        return "%s=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%d" % (_COOKIE, tok, self.session_ttl_s)

    def _session(self, req):
        tok, s = self._session_of(req)
        return {"logged_in": s is not None, "csrf": s[0] if s else None,
                "password_set": bool(self._pw.value), "can_set_password": self._first_password_allowed(req),
                "name": self.dev.name}

    def _check_password(self, req, pw, stored):
        """None if pw is the admin password; else the answer (401 wrong, 429 locked out). Counted by
        the one login guard (the setup form's admin password too) before the slow hash."""
        passwords = load("iotutils.passwords")   # the first password check loads the hash's code
        guard = passwords.login_guard
        client = req.client_ip
        w = self.dev.wifi
        try:
            guard.attempt(client, trusted=w is not None and w.on_setup_ap(client))
        except passwords.Locked as e:
            return Response({"error": "too many wrong passwords: try again in %d s" % e.wait}, 429,
                            {"Retry-After": str(e.wait)})
        if not isinstance(pw, str) or not passwords.verify_password(pw, stored):
            return Response({"error": "wrong password"}, 401)
        guard.ok(client)
        _let_go_passwords()
        return None

    def _login(self, req):
        data = json_body(req)
        stored = self._pw.value
        if not stored:
            return Response({"error": "no admin password set yet: set one first"}, 409)
        refused = self._check_password(req, data.get("password"), stored)
        if refused is not None:
            return refused
        csrf, cookie = self._new_session()
        return Response({"ok": True, "csrf": csrf}, 200, {"Set-Cookie": cookie})

    def _logout(self, req):
        with self._lock:
            self._sessions.pop(req.g.get("session"), None)
        return Response({"ok": True}, 200,
                        {"Set-Cookie": "%s=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0" % _COOKIE})

    def _password(self, req):
        hash_password = load("iotutils.passwords").hash_password
        data = json_body(req)
        new = data.get("new")
        if not isinstance(new, str) or len(new) < self.min_password:
            raise HTTPError(400, "new: at least %d characters" % self.min_password)
        if len(new) > 128:
            raise HTTPError(400, "new: at most 128 characters")
        if min(new.encode()) < 32:   # (no keyboard types them: ten NULs were a password. Bytes: a
            # str's characters one by one become qstrs that are never freed)
            raise HTTPError(400, "new: no control characters")
        stored = self._pw.value
        if stored:
            # a stolen session is no way around the lock-out either
            refused = self._check_password(req, data.get("old"), stored)
            if refused is not None:
                if refused.status == 401:
                    raise HTTPError(403, "old: wrong password")
                return refused
        self._pw.value = hash_password(new)
        _let_go_passwords()
        with self._lock:
            self._sessions.clear()  # a new password ends every session, this one included
        csrf, cookie = self._new_session()
        return Response({"ok": True, "csrf": csrf}, 200, {"Set-Cookie": cookie})

    # ---- page ----

    def _page(self, req):
        return self._asset(req, "INDEX", "text/html; charset=utf-8")

    def _script(self, req):
        return self._asset(req, "JS", "application/javascript")

    def _style(self, req):
        return self._asset(req, "CSS", "text/css")

    def _asset(self, req, name, ctype):
        before_load("iotutils.admin_assets")
        from iotutils import admin_assets
        gz = getattr(admin_assets, name + "_GZ")
        gzipped = accepts_gzip(req.headers.get("accept-encoding", ""))
        # each encoding its own tag (a cache must not answer one with the other), both vary with it
        etag = '"%s%s"' % (getattr(admin_assets, name + "_ETAG"), "-gz" if gzipped else "")
        # script and style come only from these files: no inline script or style runs, so HTML a
        # stored value might smuggle into the page could not act
        headers = {"Cache-Control": "no-cache", "ETag": etag, "Vary": "Accept-Encoding", "X-Frame-Options": "DENY",
                   "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                   "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                                              "connect-src 'self'; img-src 'self' data:; form-action 'self'; "
                                              "base-uri 'none'; frame-ancestors 'none'"}
        if etag_matches(req.headers.get("if-none-match", ""), etag):
            return Response(b"", 304, headers)
        if gzipped:
            headers["Content-Encoding"] = "gzip"
            return Response(gz, 200, headers, ctype)
        return Response(_inflate(gz, admin_assets.WBITS), 200, headers, ctype)

    # ---- status ----

    def _status(self, req):
        gc.collect()
        free = hal.mem_free()
        if self.dev.ota:
            ota = self.dev.ota.status()
        else:  # no OTA source configured: the running image's descriptor still says what runs
            from iotutils import appimage
            d = appimage.read_desc(hal.partition(hal.ota_running())) or {}
            ota = {"version": d.get("version"), "project": d.get("project"), "slot": hal.ota_running(),
                   "pending": hal.ota_pending(), "rolled_back": hal.ota_rolled_back()}
        stats = self.app.stats() if hasattr(self.app, "stats") else {}
        wifi = self.dev.wifi.status() if self.dev.wifi else None
        return {"name": self.dev.name, "iotutils": __version__, "firmware": ota,
                "uptime_s": hal.uptime_ms() // 1000, "reset_cause": hal.reset_cause(),
                "heap": {"free": free, "total": hal.heap_total()}, "wifi": wifi,
                "clients": len(wifi.get("ap_clients") or ()) if wifi else None,
                "requests": stats.get("requests"), "platform": hal.PLATFORM}

    def _memory(self, req):
        b = self.dev.memory(largest=req.query.get("largest") == "1")
        b["housekeeper"] = tasks.shared().status()
        return b

    def __getattr__(self, name):
        # the API's areas (Wi-Fi, variables, settings, OTA, Alexa, MQTT: iotutils.admin_api) load at
        # their first request; a visit that signs in and reads the status never holds their code
        before_load("iotutils.admin_api")
        from iotutils import admin_api
        fn = getattr(admin_api, name, None)
        if fn is None or not name.startswith("_"):
            raise AttributeError(name)
        return lambda *args: fn(self, *args)

    # ---- system ----

    def _reboot(self, req):
        self._later(self._reboot_soon)
        return {"ok": True, "rebooting": True}

    def _reboot_soon(self):
        time.sleep(0.3)  # let the answer leave first
        hal.reset()

    def _later(self, fn, *args):
        if _thread:
            start_thread("admin-job", fn, args, hal.JOB_STACK)   # short-lived: an install, a restart
        else:
            fn(*args)


# method, path ("*": one segment, "#": an integer segment), handler name
_ROUTES = (
    ("GET", "session", "_session"), ("POST", "login", "_login"), ("POST", "logout", "_logout"),
    ("POST", "password", "_password"), ("GET", "status", "_status"), ("GET", "memory", "_memory"),
    ("GET", "wifi", "_wifi"), ("GET", "wifi/scan", "_wifi_scan"), ("POST", "wifi/networks", "_wifi_add"),
    ("DELETE", "wifi/networks/*", "_wifi_forget"), ("PUT", "wifi/ap", "_wifi_ap"),
    ("GET", "vars", "_vars"), ("GET", "vars/*", "_vars_folder"), ("PUT", "vars/*/*", "_var_put"),
    ("DELETE", "vars/*/*", "_var_delete"), ("GET", "export", "_export"), ("POST", "import", "_import"),
    ("POST", "factory-reset", "_factory_reset"),
    ("GET", "ota", "_ota_get"), ("PUT", "ota/settings", "_ota_settings"), ("POST", "ota/check", "_ota_check"),
    ("POST", "ota/update", "_ota_update"), ("GET", "ota/progress", "_ota_progress"),
    ("GET", "alexa", "_alexa"), ("PUT", "alexa/pairing", "_alexa_pairing"),
    ("POST", "alexa/devices", "_alexa_add"), ("PUT", "alexa/devices/#", "_alexa_put"),
    ("DELETE", "alexa/devices/#", "_alexa_delete"), ("DELETE", "alexa/users/#", "_alexa_user_delete"),
    ("GET", "mqtt", "_mqtt_get"), ("PUT", "mqtt", "_mqtt_put"), ("POST", "mqtt/test", "_mqtt_test"),
    ("POST", "reboot", "_reboot"),
)


def _match(pattern, parts):
    """The arguments of a _ROUTES pattern for the path segments `parts`, or None."""
    pp = pattern.split("/")
    if len(pp) != len(parts):
        return None
    args = []
    for want, got in zip(pp, parts):
        if want == "*":
            if not got:
                return None
            args.append(got)
        elif want == "#":
            try:
                args.append(int(got))
            except ValueError:
                return None
        elif want != got:
            return None
    return args


def _json_errors(fn):
    """API errors as JSON {"error": reason} with the HTTP status, so every page action can show
    the reason next to the field."""
    def handler(req, *args):
        try:
            return fn(req, *args)
        except HTTPError as e:
            return Response({"error": e.reason}, e.status)
        except MemoryError:
            raise   # (the server's 503)
        except Exception as e:   # a bug here: said, with its reason, not an empty 500 (and logged)
            print_exception(e)
            return Response({"error": "internal error: %s: %s" % (type(e).__name__, e)}, 500)
    return handler


def json_body(req):
    """The request's JSON object ({} for no body); HTTPError 400 for anything else (null too)."""
    data = req.json()  # (the server refuses JSON nested deeper than Request.max_json_depth: 400)
    if data is None and not req.content_length:
        return {}
    if not isinstance(data, dict):
        raise HTTPError(400, "expected a JSON object")
    return data


def _inflate(gz, wbits):
    """The page for a client without gzip: inflated while it is sent (a chunked response), with
    the asset's small deflate window, never whole in RAM."""
    import io
    try:
        import deflate
        src = deflate.DeflateIO(io.BytesIO(gz), deflate.GZIP, wbits)
        while True:
            chunk = src.read(512)
            if not chunk:
                return
            yield chunk
    except ImportError:
        import zlib
        d = zlib.decompressobj(16 + wbits)
        for i in range(0, len(gz), 512):
            yield d.decompress(gz[i:i + 512])
        yield d.flush()


