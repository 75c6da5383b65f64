# The admin page: status, Wi-Fi, persistent variables, OTA, Alexa, reboot — and the JSON API
# behind every action (README "Admin API").
#
# Security: nothing changes without a session. The admin password is set in the setup portal or
# by provisioning (folder "admin", key "pwhash": salted PBKDF2-SHA256, see auth.hash_password);
# a device with no password yet accepts one first password (POST /admin/api/password) while its
# setup access point is up, and nothing else. Sessions are random tokens in an HttpOnly SameSite=Strict cookie with an expiry;
# every state-changing request also needs the session's CSRF token in X-CSRF-Token; failed logins
# are rate-limited with a growing lock-out. Secrets (Wi-Fi passwords, the password hash, the AP
# salt) are never sent back. The Hue/WeMo routes of alexa.py are not under /admin and stay
# usable by an Echo without the password; they can only change the Alexa devices' state.
import gc
import json
import time

from iotutils import __version__, hal, persist, tasks
from iotutils._compat import _thread, allocate_lock, start_thread
from iotutils.auth import consteq, token
from iotutils.server import HTTPError, Response

_COOKIE = "iotsid"
_PREFIX = "/admin/api/"
# Secrets (persist.is_secret: the password hash, Wi-Fi passwords, the AP salt, Hue users, ...) are
# never listed, exported, imported or edited here.


def _now_s():
    return time.time()


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
        app.add_route(_PREFIX + "<path:p>", self._dispatch, ("GET", "POST", "PUT", "DELETE"))

    def upload(self, req):
        """POST /admin/api/ota/upload (a streamed body)."""
        return _json_errors(self._ota_upload)(req)

    def _dispatch(self, req, p):
        from iotutils.server import unquote
        # split the raw target, then decode each segment: an SSID may contain "/" (%2F)
        raw = req.target.partition("?")[0][len(_PREFIX):]
        parts = [unquote(x) for x in raw.split("/")]
        allowed = []
        for method, pattern, name in _ROUTES:
            args = _match(pattern, parts)
            if args is None:
                continue
            if method != req.method:
                allowed.append(method)
                continue
            return _json_errors(getattr(self, name))(req, *args)
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
            s[1] = _now_s() + self.session_ttl_s
            self._use += 1
            s[2] = self._use
            return tok, s

    def _guard(self, req):
        """before_request hook: every /admin/api/ call but session/login/first password needs a
        session; every state-changing one also the CSRF token."""
        path = req.path
        if not path.startswith(_PREFIX):
            return None
        what = path[len(_PREFIX):]
        if what in ("session", "login") or (what == "password" and self._first_password_allowed()):
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

    def _first_password_allowed(self):
        # With no password yet, the first one may be set without a session, but only while the
        # setup access point is up: it is WPA2 with the per-device password printed on the serial
        # console, so whoever sets it has the device in hand, not just a seat on the home network.
        if self._pw.value:
            return False
        w = self.dev.wifi
        return w is None or bool(w.status().get("ap_ssid"))

    def _new_session(self):
        tok, csrf = token(), token()
        with self._lock:
            if len(self._sessions) >= self.max_sessions:
                # least recently used (a use counter: time() has whole seconds on some ports)
                oldest = min(self._sessions, key=lambda t: self._sessions[t][2])
                del self._sessions[oldest]
            self._use += 1
            self._sessions[tok] = [csrf, _now_s() + self.session_ttl_s, self._use]
        cookie = "%s=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%d" % (_COOKIE, tok, self.session_ttl_s)
        return csrf, cookie

    def _session(self, req):
        tok, s = self._session_of(req)
        return {"logged_in": s is not None, "csrf": s[0] if s else None,
                "password_set": bool(self._pw.value), "can_set_password": self._first_password_allowed(),
                "name": self.dev.name}

    def _check_password(self, req, pw, stored):
        """None if pw is the admin password; else the answer (401 wrong, 429 locked out). Counted by
        the one login guard (the setup form's admin password too) before the slow hash."""
        from iotutils.auth import Locked, login_guard, verify_password
        client = req.client_ip
        w = self.dev.wifi
        try:
            login_guard.attempt(client, trusted=w is not None and w.on_setup_ap(client))
        except Locked as e:
            return Response({"error": "too many wrong passwords: try again in %d s" % e.wait}, 429,
                            {"Retry-After": str(e.wait)})
        if not isinstance(pw, str) or not verify_password(pw, stored):
            return Response({"error": "wrong password"}, 401)
        login_guard.ok(client)
        return None

    def _login(self, req):
        data = _obj(req)
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
        from iotutils.auth import hash_password
        data = _obj(req)
        new = data.get("new")
        if not isinstance(new, str) or len(new) < self.min_password:
            raise HTTPError(400, "new: at least %d characters" % self.min_password)
        if len(new) > 128:
            raise HTTPError(400, "new: at most 128 characters")
        stored = self._pw.value
        if stored:
            # a stolen session is no way around the lock-out either
            refused = self._check_password(req, data.get("old"), stored)
            if refused is not None:
                if refused.status == 401:
                    raise HTTPError(403, "old: wrong password")
                return refused
        self._pw.value = hash_password(new)
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
        from iotutils import admin_assets
        gz = getattr(admin_assets, name + "_GZ")
        etag = '"%s"' % getattr(admin_assets, name + "_ETAG")
        # script and style come only from these files: no inline script or style runs, so HTML a
        # stored value might smuggle into the page could not act
        headers = {"Cache-Control": "no-cache", "ETag": etag, "X-Frame-Options": "DENY",
                   "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                   "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                                              "connect-src 'self'; img-src 'self' data:; form-action 'self'; "
                                              "base-uri 'none'; frame-ancestors 'none'"}
        if req.headers.get("if-none-match") == etag:
            return Response(b"", 304, headers)
        if "gzip" in req.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            headers["Vary"] = "Accept-Encoding"
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

    # ---- Wi-Fi ----

    def _need_wifi(self):
        if self.dev.wifi is None:
            raise HTTPError(404, "Wi-Fi is not managed by this device")
        return self.dev.wifi

    def _wifi(self, req):
        w = self._need_wifi()
        return {"status": w.status(), "networks": w.networks()}

    def _wifi_scan(self, req):
        try:
            return {"networks": self._need_wifi().scan()}
        except OSError as e:
            raise HTTPError(503, "scan failed: %s" % e)

    def _wifi_add(self, req):
        w = self._need_wifi()
        data = _obj(req)
        try:
            w.add_network(data.get("ssid"), data.get("password") or "", bool(data.get("hidden")))
        except (ValueError, TypeError) as e:
            raise HTTPError(400, _short(e))
        if data.get("connect"):
            w.reconnect(prefer=data.get("ssid")) if hasattr(w, "reconnect") else None
        return {"ok": True, "networks": w.networks()}

    def _wifi_forget(self, req, ssid):
        w = self._need_wifi()
        if not w.forget(ssid):
            raise HTTPError(404, "no known network %r" % ssid)
        return {"ok": True, "networks": w.networks()}

    def _wifi_ap(self, req):
        w = self._need_wifi()
        data = _obj(req)
        try:
            w.access_point(bool(data.get("enabled")), ssid=data.get("ssid") or None,
                           password=data.get("password"))
        except (ValueError, TypeError) as e:
            raise HTTPError(400, _short(e))
        return {"ok": True, "status": w.status()}

    # ---- persistent variables ----

    def _check_folder(self, folder):
        if persist.is_secret(folder):
            raise HTTPError(403, "folder %r holds secrets and is not shown here" % folder)

    def _vars(self, req):
        names = set(persist.folders()) | set(persist.declared_folders())
        return {"folders": sorted(f for f in names if not persist.is_secret(f))}

    def _vars_folder(self, req, folder):
        self._check_folder(folder)
        try:
            data = json.loads(persist.export_json(only=[folder])).get(folder, {})
        except ValueError as e:
            raise HTTPError(400, _short(e))
        # variables the app declared but never stored: shown with their defaults
        for name, obj in persist.declared(folder).items():
            if name not in data and not persist.is_secret(folder, name):
                e = {"type": obj.kind, "value": _plain(obj.value), "default": True}
                e.update(obj.spec())
                data[name] = e
        return {"folder": folder, "vars": data}

    def _check_key(self, folder, name):
        self._check_folder(folder)
        if persist.is_secret(folder, name):
            raise HTTPError(403, "%s/%s holds credentials and is not shown here" % (folder, name))

    def _var_put(self, req, folder, name):
        self._check_key(folder, name)
        data = _obj(req)
        if "value" not in data:
            raise HTTPError(400, "value: missing")
        key = (folder, name)
        made = False
        try:
            v = persist.declared(folder).get(name)
            if v is None:
                entry = json.loads(persist.export_json(only=[folder])).get(folder, {}).get(name)
                kind = data.get("type") or (entry or {}).get("type") or persist.infer_kind(data["value"])
                spec = {}
                for k in ("lo", "hi", "max_length"):
                    if entry and k in entry:
                        spec[k] = entry[k]
                v = persist.make(kind, name, folder, **spec)
                made = True
            value = v.set(data["value"])
        except (ValueError, TypeError) as e:
            if made:
                _unregister(key)
            raise HTTPError(400, _short(e))
        if made:
            with self._lock:
                self._adhoc[key] = True
        return {"ok": True, "folder": folder, "name": name, "type": v.kind, "value": _plain(value)}

    def _var_delete(self, req, folder, name):
        self._check_key(folder, name)
        key = (folder, name)
        try:
            if name not in persist.declared(folder) and _store_get(folder, name) is None:
                found = False  # not even asked of persist: it would remember the missing name
            else:
                found = persist.delete(name, folder)
        except ValueError as e:
            raise HTTPError(400, _short(e))
        with self._lock:
            adhoc = self._adhoc.pop(key, None)
        if adhoc:
            _unregister(key)  # made by this page, now gone: persist need not remember its type
        if not found:
            raise HTTPError(404, "%s/%s is not stored" % (folder, name))
        return {"ok": True}

    def _export(self, req):
        return Response(persist.export_json(), 200,  # (secrets are left out by persist)
                        {"Content-Disposition": 'attachment; filename="%s-settings.json"' % self.dev.name},
                        "application/json")

    def _import(self, req):
        data = req.json()  # (the server refuses JSON nested deeper than Request.max_json_depth: 400)
        if not isinstance(data, dict):
            raise HTTPError(400, "expected an object of folders")
        for folder in data:
            self._check_folder(folder)
            if isinstance(data[folder], dict):
                for name in data[folder]:
                    self._check_key(folder, name)
        try:
            n = persist.import_json(data)
        except ValueError as e:
            raise HTTPError(400, _short(e))
        except (MemoryError, OSError) as e:  # all or nothing: persist rolled every value back
            gc.collect()
            raise HTTPError(503, "import: nothing changed (%s)" % (_short(e) or type(e).__name__))
        return {"ok": True, "imported": n}

    def _factory_reset(self, req):
        if _obj(req).get("confirm") != "RESET":
            raise HTTPError(400, 'confirm: send {"confirm": "RESET"}')
        persist.factory_reset()
        self._later(hal.reset)
        return {"ok": True, "rebooting": True}

    # ---- OTA ----

    def _need_ota(self):
        if self.dev.ota is None:
            raise HTTPError(404, "OTA is not configured on this device")
        return self.dev.ota

    def _ota_get(self, req):
        o = self.dev.ota
        st = o.status() if o else None
        auto = o.state.load().get("auto") if o and hasattr(o, "state") else None
        return {"status": st, "repo": o.repo if o else None, "channel": o.channel if o else None,
                "auto": auto, "progress": dict(self._ota)}

    def _ota_settings(self, req):
        data = _obj(req)
        o = self.dev.ota
        try:
            if "repo" in data or "channel" in data:
                self.dev.set_ota_source(data.get("repo", o.repo if o else None),
                                        data.get("channel", o.channel if o else "release"))
                o = self.dev.ota
            if "auto" in data and o is None:
                raise HTTPError(404, "auto: no OTA source configured (set repo and channel first)")
            if "auto" in data:
                a = data["auto"] if isinstance(data["auto"], dict) else {"on": data["auto"]}
                o.auto_update(bool(a.get("on")), a.get("every_hours"), a.get("idle_minutes"), app=self.app)
        except (ValueError, TypeError) as e:
            raise HTTPError(400, _short(e))
        return self._ota_get(req)

    def _ota_check(self, req):
        o = self._need_ota()
        from iotutils.ota import OTAError
        try:
            return o.check()
        except (OTAError, OSError, ValueError) as e:
            raise HTTPError(502, "check failed: %s" % e)

    def _ota_update(self, req):
        o = self._need_ota()
        if self._ota["state"] in ("downloading", "rebooting"):
            raise HTTPError(409, "an update is already running")
        data = _obj(req)
        self._ota.update(state="downloading", done=0, total=0, error=None)
        # force: a version that rolled back here before; downgrade: one older than the running image
        self._later(self._run_update, o, bool(data.get("force")), bool(data.get("downgrade")))
        return Response({"ok": True, "progress": dict(self._ota)}, 202)

    def _progress(self, done, total):
        self._ota["done"] = done
        self._ota["total"] = total or 0

    def _run_update(self, o, force, downgrade=False):
        # a thread of its own: whatever happens in it (MemoryError included) ends as "failed" with
        # the reason, and the next update can start (OTA scrubbed the slot and let go of its lock)
        try:
            version = o.update(progress=self._progress, force=force, reboot=False, downgrade=downgrade)
        except BaseException as e:
            gc.collect()
            self._ota.update(state="failed", error=_short(e) or type(e).__name__)
            return
        self._ota.update(state="rebooting", version=version, done=self._ota["total"] or self._ota["done"])
        time.sleep(self.reboot_delay_s)
        hal.reset()

    def _ota_progress(self, req):
        return dict(self._ota)

    def _ota_upload(self, req):
        """A local image file (the body, application/octet-stream), installed like a download: only
        with its signature from the release's ota.json (?sig=<128 hex>, and ?sha256=), checked before
        the upload is read and again before the image may boot."""
        o = self._need_ota()
        if not hasattr(o, "install_stream"):
            raise HTTPError(501, "this OTA module cannot install uploads")
        if self._ota["state"] in ("downloading", "rebooting"):
            raise HTTPError(409, "an update is already running")
        total = req.content_length or 0
        self._ota.update(state="downloading", done=0, total=total, error=None)
        try:
            q = req.query
            version = o.install_stream(req.stream, total or None, progress=self._progress, sha256=q.get("sha256"),
                                       sig=q.get("sig"), downgrade=q.get("downgrade") in ("1", "true"))
        except BaseException as e:
            gc.collect()
            reason = _short(e) or type(e).__name__
            self._ota.update(state="failed", error=reason)
            if isinstance(e, (MemoryError, OSError)):
                raise HTTPError(503, "image not installed: %s" % reason)
            raise HTTPError(400, "image refused: %s" % reason)
        self._ota.update(state="rebooting", version=version)
        self._later(self._reboot_soon)
        return {"ok": True, "version": version, "rebooting": True}

    # ---- Alexa ----

    def _need_alexa(self):
        if self.dev.alexa is None:
            raise HTTPError(404, "Alexa is not enabled on this device")
        return self.dev.alexa

    def _light_json(self, light):
        return {"id": light.index, "name": light.name, "on": light.on, "brightness": light.brightness,
                "dimmable": light.dimmable, "color": light.color, "wemo": light.wemo,
                "uniqueid": light.uniqueid}

    def _alexa(self, req):
        a = self._need_alexa()
        return {"pairing": a.pairing(), "pairing_left_s": a.pairing_left_s(),
                "devices": [self._light_json(l) for l in a.lights()], "users": a.user_list(),
                "ssdp": a.discovery_stats()}

    def _alexa_pairing(self, req):
        # {"seconds": N} (default 60) opens Hue pairing for N s, {"allowed": false} closes it
        a = self._need_alexa()
        data = _obj(req)
        allowed = data.get("allowed", True)
        if type(allowed) is not bool:
            raise HTTPError(400, "allowed: true or false expected")
        if not allowed:
            a.pair(0)
        else:
            n = data.get("seconds", 60)
            if type(n) is not int or not 1 <= n <= a.max_pair_s:
                raise HTTPError(400, "seconds: 1..%d expected" % a.max_pair_s)
            a.pair(n)
        return {"pairing": a.pairing(), "pairing_left_s": a.pairing_left_s()}

    def _alexa_user_delete(self, req, n):
        if not self._need_alexa().forget_user(n):
            raise HTTPError(404, "no Hue user %d" % n)
        return {"ok": True}

    def _alexa_add(self, req):
        a = self._need_alexa()
        data = _obj(req)
        try:
            light = a.add(data.get("name"), dimmable=bool(data.get("dimmable", True)),
                          color=bool(data.get("color")), wemo=bool(data.get("wemo")))
        except (ValueError, TypeError) as e:
            raise HTTPError(400, _short(e))
        return Response(self._light_json(light), 201)

    def _find_light(self, i):
        for l in self._need_alexa().lights():
            if l.index == i:
                return l
        raise HTTPError(404, "no Alexa device %d" % i)

    def _alexa_put(self, req, i):
        light = self._find_light(i)
        data = _obj(req)
        try:
            if "name" in data:
                light.rename(data["name"])
            if "on" in data or "brightness" in data:
                light.set(on=data.get("on"), brightness=data.get("brightness"))
        except (ValueError, TypeError) as e:
            raise HTTPError(400, _short(e))
        return self._light_json(light)

    def _alexa_delete(self, req, i):
        light = self._find_light(i)
        self._need_alexa().remove(light)
        return {"ok": True}

    # ---- MQTT (iotutils.mqtt_settings: the admin page's settings win over the code's URL) ----

    def _mqtt_get(self, req):
        ms = _mqtt_settings()
        s = ms.load(self.dev.mqtt_url)
        m = self.dev.mqtt
        out = {k: s[k] for k in ("user", "ca", "prefix", "mode", "base")}
        out.update(url=ms.redact(ms.setting("url").value), password_set=bool(s["password"]), source=s["source"],
                   error=s["error"], code_url=ms.redact(self.dev.mqtt_url), device_id=ms.device_id(),
                   base_topic=s["base"] or "iotutils/" + ms.device_id(), status=m.status() if m else None)
        return out

    def _mqtt_put(self, req):
        ms = _mqtt_settings()
        try:
            ms.save(_obj(req), self.dev.mqtt_url)
        except ValueError as e:
            raise HTTPError(400, _short(e))
        self._later(self.dev.reload_mqtt)  # the old client says offline and stops, in its own time
        return dict(self._mqtt_get(req), ok=True, restarting=True)

    def _mqtt_test(self, req):
        ms = _mqtt_settings()
        try:
            return ms.test_connection(_obj(req), self.dev.mqtt_url)
        except ValueError as e:
            raise HTTPError(400, _short(e))

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
    return handler


def _store_get(folder, name):
    from iotutils import store
    try:
        return store.get_typed(folder, name)
    except ValueError as e:
        raise ValueError(str(e).replace("key ", "name ", 1))


def _unregister(key):
    # persist remembers every variable made in this boot (its type, for this page and export); one
    # this page made and then deleted must not stay there, or edits of ever new names eat the heap
    persist.undeclare(key[1], key[0])


def _short(e, limit=160):
    # error texts quote the value they refuse: a 3000-character name need not come back whole
    s = str(e)
    return s if len(s) <= limit else s[:limit] + "..."




def _obj(req):
    data = req.json()  # (the server refuses JSON nested deeper than Request.max_json_depth: 400)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise HTTPError(400, "expected a JSON object")
    return data


def _plain(v):
    if isinstance(v, (set, tuple)):
        return sorted(v) if isinstance(v, set) else list(v)
    return v


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


def _mqtt_settings():
    try:
        from iotutils import mqtt_settings
    except (ImportError, AttributeError):   # a stock board without the package iotutils-mqtt
        raise HTTPError(404, "MQTT is not installed on this device (mip package iotutils-mqtt)")
    return mqtt_settings
