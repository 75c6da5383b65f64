# The setup portal's pages (iotutils.portal): the form to pick a network, its answer, and the JSON
# status and scan. Loaded at the first request for one of them, so a device whose portal nobody
# opens (its access point waits for a phone) holds only the portal's DNS and captive hooks.
import json

from iotutils import hal
from iotutils._compat import log
from iotutils.auth import escape, quote
from iotutils.passwords import Locked, hash_password, login_guard, verify_password
from iotutils.wifi import check_ssid


def handle(portal, req, front=False):
    """The answer to a request for /setup, /setup/status, /setup/scan or /setup/result (front: the
    setup page itself, which the captive portal also serves at "/")."""
    path = req.path
    if front or path == "/setup" and req.method != "POST":
        return page(portal)
    if path == "/setup":
        return _setup_post(portal, req)
    if path == "/setup/status":
        return _status(portal, req)
    if path == "/setup/scan":
        return _scan(portal, req)
    return _result(portal, req)


_STYLE = ("body{font-family:sans-serif;max-width:28em;margin:auto;padding:1em;color:#222}"
          "h1{font-size:1.4em}label{display:block;margin:.8em 0 .2em}"
          "input{width:100%;box-sizing:border-box;padding:.6em;font-size:1em}"
          ".n label{display:flex;justify-content:space-between;align-items:center;margin:0;padding:.5em;"
          "border-bottom:1px solid #ddd}.n input{width:auto;margin-right:.6em}small{color:#666}"
          "button,.b{display:block;width:100%;padding:.8em;font-size:1.1em;margin-top:1.2em;text-align:center}"
          ".e{color:#b00}.ok{color:#070}")

_RESULT_TEXT = {"wrong_password": "wrong password", "no_ap_found": "network not found",
                "assoc_fail": "the router refused the connection", "timeout": "no answer (no address)",
                "lost": "connection lost"}


class Denied(ValueError):
    """A setup that needs the current admin password did not give it (HTTP 403)."""


def _form(data):
    if not isinstance(data, dict):
        return {}
    return {k: data.get(k) for k in ("ssid", "name") if isinstance(data.get(k), str)}


def _head(title, extra=""):
    return ('<!DOCTYPE html><html><head><meta charset="utf-8"><meta name="viewport" '
            'content="width=device-width,initial-scale=1"><title>%s</title>%s<style>%s</style></head><body>'
            % (escape(title), extra, _STYLE))


def page(portal, error=None, form=None):
    form = form or {}
    admin, name = portal._store()
    nets = []
    try:
        nets = portal.wifi.scan()[:portal.max_listed]
    except OSError:
        pass
    chosen = form.get("ssid", "")
    out = [_head("Wi-Fi setup"), "<h1>Wi-Fi setup</h1>"]
    if error:
        out.append('<p class="e">%s</p>' % escape(error))
    out.append('<form method="post" action="/setup"><div class="n">')
    for n in nets:
        out.append('<label><span><input type="radio" name="ssid" value="%s"%s>%s</span><small>%d dBm%s</small>'
                   '</label>' % (escape(n["ssid"]), " checked" if n["ssid"] == chosen else "", escape(n["ssid"]),
                                 n["rssi"], " &#128274;" if n["secure"] else ""))
    if not nets:
        out.append("<p><small>No networks found.</small></p>")
    out.append('</div><p><a href="/setup">Scan again</a></p>'
               '<label for="o">Other (hidden) network</label><input id="o" name="other" maxlength="32" '
               'autocapitalize="none">'
               '<label for="p">Wi-Fi password</label><input id="p" name="password" type="password" '
               'maxlength="64">'
               '<label for="d">Device name</label><input id="d" name="name" maxlength="32" value="%s">'
               % escape(form.get("name") or name.value))
    if admin.value:
        out.append('<label for="a">Admin password <small>(current)</small></label>')
    else:
        out.append('<label for="a">Admin password <small>(new, at least %d characters)</small></label>'
                   % portal.min_admin_password)
    out.append('<input id="a" name="admin" type="password" maxlength="64" required>'
               '<button type="submit">Save and connect</button></form></body></html>')
    return "".join(out)


def _result_page(portal, ssid):
    st = portal.wifi.status()
    res = portal.wifi.result(ssid)
    refresh = ""
    if res == "connected":
        p = hal.port(80)
        addr = "http://%s%s/" % (st["ip"], "" if p == 80 else ":%d" % p)
        msg = ('<p class="ok" id="m">Connected to <b>%s</b>.</p><p>New address: <a id="a" href="%s">%s</a>'
               '<br><small>%s.local</small></p><p>Connect this phone back to <b>%s</b> to reach it.</p>'
               % (escape(ssid), escape(addr), escape(addr), escape(st["hostname"]), escape(ssid)))
    elif res == "connecting" or res is None and ssid in [n["ssid"] for n in portal.wifi.networks()]:
        # (a known network with no attempt yet: the next round tries it, right after a boot)
        refresh = '<noscript><meta http-equiv="refresh" content="2"></noscript>'
        msg = '<p id="m">Connecting to <b>%s</b>&hellip;</p>' % escape(ssid)
    elif res is None:   # nothing to wait for: the page polled for ever (a reload after a reset)
        msg = ('<p class="e" id="m">This device does not know a network <b>%s</b>.</p>'
               '<a class="b" href="/setup">Try again</a>' % escape(ssid))
    else:
        msg = ('<p class="e" id="m">Could not connect to <b>%s</b>: %s.</p><a class="b" href="/setup">Try again</a>'
               % (escape(ssid), escape(_RESULT_TEXT.get(res, res))))
    js = ""
    if refresh:
        # with JS: poll the JSON status and reload once the attempt is decided
        js = ("<script>function p(){fetch('/setup/status?ssid='+encodeURIComponent(%s)).then(function(r)"
              "{return r.json()}).then(function(s){if(s.result!='connecting'&&s.result!=null)location.reload();"
              "else setTimeout(p,1000)}).catch(function(){setTimeout(p,2000)})}p()</script>"
              % json.dumps(ssid).replace("<", "\\u003c"))
    return "".join((_head("Wi-Fi setup", refresh), "<h1>Wi-Fi setup</h1>", msg, js, "</body></html>"))


def _setup_post(portal, req):
    ctype = req.headers.get("content-type", "")
    as_json = "json" in ctype
    data = None
    try:
        data = req.json() if as_json else req.form()
        if not isinstance(data, dict):
            raise ValueError("body: a form or a JSON object expected")
        ssid = _save(portal, data, req.client_ip)
    except Locked as e:
        h = {"Retry-After": str(e.wait)}
        return ({"error": str(e)}, 429, h) if as_json else (page(portal, str(e), _form(data)), 429, h)
    except Denied as e:
        return ({"error": str(e)}, 403) if as_json else (page(portal, str(e), _form(data)), 403)
    except ValueError as e:
        return ({"error": str(e)}, 400) if as_json else (page(portal, str(e), _form(data)), 400)
    if as_json:
        return {"ok": True, "ssid": ssid, "result": portal.wifi.result(ssid)}
    from iotutils.web.response import Response
    return Response.redirect("/setup/result?ssid=" + quote(ssid), 303)


def _save(portal, data, client):
    def field(k):
        v = data.get(k)
        if v is None:
            return ""
        if not isinstance(v, str):
            raise ValueError("%s: must be a string" % k)
        return v
    # a hidden network's name as typed: an SSID may begin or end with a space (only a blank field
    # means "the one picked from the list")
    other = field("other")
    ssid = other if other.strip() else field("ssid")
    if not ssid:
        raise ValueError("ssid: pick a network or type its name")
    check_ssid(ssid)
    password = field("password")
    name = field("name").strip()
    if name and len(name) > 32:
        raise ValueError("name: at most 32 characters")
    adminpw = field("admin")
    admin, dev_name = portal._store()
    stored = admin.value
    if stored:
        # counted before the slow hash, with the admin login's count (raises Locked)
        login_guard.attempt(client, trusted=portal.wifi.on_setup_ap(client))
        if not verify_password(adminpw, stored):
            raise Denied("admin: wrong admin password")
        login_guard.ok(client)
    elif len(adminpw) < portal.min_admin_password:
        raise ValueError("admin: at least %d characters" % portal.min_admin_password)
    from iotutils.wifi import check_password
    check_password(password)
    if not stored and not (portal.active and portal.wifi.on_setup_ap(client)):
        # the first admin password is set only through the setup access point (WPA2, its
        # password on the serial console): not by anyone on the home network, not even while
        # the access point lingers after the device joined it
        raise Denied("admin: no admin password yet: set it while connected to the setup access point")
    # (the slow hash, which may fail for memory, before anything is stored)
    new_hash = None if stored else hash_password(adminpw)
    visible = [n["ssid"] for n in portal.wifi.scan()]
    # the admin password before the network: a cut between the two leaves a device that is
    # still not set up (the form asks for that password next time), never one on the home
    # network without an admin password, which only the access point may set
    if new_hash:
        admin.value = new_hash
    if name:
        from iotutils.wifi import hostname_of
        try:
            portal.wifi.hostname(hostname_of(name))
        except ValueError:
            pass  # a name without letters or digits keeps the old host name
        dev_name.value = name
    portal.wifi.add_network(ssid, password, hidden=ssid not in visible)
    log("portal: saved network %s" % ssid)
    portal.wifi.reconnect(prefer=ssid)
    if portal.on_saved is not None:
        portal.on_saved({"ssid": ssid, "name": name or dev_name.value})
    return ssid


def _status(portal, req):
    st = portal.wifi.status()
    ssid = req.query.get("ssid")
    if ssid:
        st["result"] = portal.wifi.result(ssid)
    st["portal"] = portal.active
    if not portal.active:
        # on the home network this page is open to anyone: the setup result, not the device's
        # details (the admin page has those, behind a login)
        for k in ("ap_clients", "hostname"):
            st.pop(k, None)
    return st


def _scan(portal, req):
    if not portal.active and portal._store()[0].value:
        return {"error": "the setup portal is off: scan from the admin page"}, 403
    return portal.wifi.scan()


def _result(portal, req):
    ssid = req.query.get("ssid", "")
    if not ssid:
        return portal.redirect()
    return _result_page(portal, ssid)
