# The MQTT settings of iotutils.Device (NVS folder "mqtt"), checked the same way wherever they come
# from: the admin page, provisioning (scripts/nvs_provision.py, the "mqtt" key of settings.json) or
# the code (Device(mqtt="mqtt://user:pw@host"), which the stored settings override). Small on
# purpose: the admin page loads it to show, save and test settings without the rest of MQTT.
#
#   url       "mqtt://host[:1883]" or "mqtts://host[:8883]" (stored without credentials: those
#             written in it move to user/password)
#   user, password (a secret: never shown or exported)    used instead of the URL's own credentials
#   ca        the broker's CA certificate (PEM), required for mqtts://
#   prefix    Home Assistant's discovery prefix ("homeassistant")
#   mode      "device" (one discovery message, HA >= 2024.11) or "component" (one per entity)
#   base      the device's topics ("iotutils/<device id>"; the id is the client id, from the MAC)
#
#   check(d) -> validated dict (ValueError naming the field); save(d); load(code_url) -> the
#   settings in force; redact(url); device_id(); test_connection(d) -> {"result", "reason", "ms"}
from iotutils import hal, persist
from iotutils.auth import der_certs, quote
from iotutils._compat import ticks_diff, ticks_ms
from iotutils.mqtt.codec import parse_url, topic_bytes, utf8

FOLDER = "mqtt"
FIELDS = ("url", "user", "password", "ca", "prefix", "mode", "base")
MODES = ("device", "component")
_MAX = {"url": 200, "user": 64, "password": 128, "ca": 8000, "prefix": 64, "base": 100}
_DEFAULT = {"prefix": "homeassistant", "mode": "device"}


# ---- settings: stored, checked, tested ----

def setting(name):
    """The PersistentStr of one setting (folder "mqtt")."""
    if name == "mode":
        return persist.PersistentStr("mode", default="device", folder=FOLDER, choices=MODES)
    return persist.PersistentStr(name, default=_DEFAULT.get(name, ""), folder=FOLDER, max_length=_MAX[name])


def _url(tls, host, port, user=None, password=None):
    cred = ""
    if user:
        cred = quote(user) + (":" + quote(password) if password else "") + "@"
    return "%s://%s%s:%d" % ("mqtts" if tls else "mqtt", cred, "[%s]" % host if ":" in host else host, port)


def redact(url):
    """The URL with its password left out (for pages and logs)."""
    if not url:
        return url
    try:
        tls, host, port, user, _ = parse_url(url)
    except ValueError:
        return "(not a valid URL)"
    return _url(tls, host, port, user)


def _topic(field, s):
    if not s or s[0] == "/" or s[-1] == "/":
        raise ValueError("%s: a topic such as 'homeassistant' expected (no leading or trailing /)" % field)
    try:
        topic_bytes(s)
    except ValueError as e:
        raise ValueError("%s: %s" % (field, e.args[0].partition(": ")[2]))


def _pem(ca):
    if "-----BEGIN CERTIFICATE-----" not in ca:
        raise ValueError("ca: PEM text with -----BEGIN CERTIFICATE----- expected")
    der_certs(ca, "ca")   # (what the client would refuse later is refused when saved)


def check(d, stored=None):
    """Validated settings from dict d (any of FIELDS; ValueError naming the field). Credentials
    written in the URL move to user/password (a stored URL carries none). stored: the current
    settings, for the rules across fields (mqtts:// needs a CA)."""
    if not isinstance(d, dict):
        raise ValueError("mqtt: an object of settings expected")
    out = {}
    for k in d:
        if k not in FIELDS:
            raise ValueError("%s: unknown MQTT setting (known: %s)" % (k, ", ".join(FIELDS)))
        v = d[k]
        if v is None:
            v = ""
        if not isinstance(v, str):
            raise ValueError("%s: a string expected" % k)
        if k != "mode" and len(v) > _MAX[k]:
            raise ValueError("%s: at most %d characters" % (k, _MAX[k]))
        out[k] = v.strip() if k not in ("password", "ca") else v
        if k in ("url", "user", "prefix", "base") and out[k]:
            try:
                utf8(k, out[k])   # what the client would refuse later (NUL, controls) is refused now
            except UnicodeError:
                raise ValueError("%s: not valid UTF-8" % k)
    url = out.get("url")
    if url:
        tls, host, port, user, password = parse_url(url)
        out["url"] = _url(tls, host, port)
        if user and "user" not in d:
            out["user"] = user
        if password and "password" not in d:
            out["password"] = password
    if out.get("mode") and out["mode"] not in MODES:
        raise ValueError("mode: 'device' or 'component' expected")
    if out.get("prefix"):
        _topic("prefix", out["prefix"])
    if out.get("base"):
        _topic("base", out["base"])
    if out.get("ca"):
        _pem(out["ca"])
    merged = dict(stored or {}, **out)
    if merged.get("url", "").startswith("mqtts://") and not merged.get("ca"):
        raise ValueError("ca: mqtts:// needs the broker's CA certificate (PEM)")
    return out


def load(code_url=None, changes=None):
    """The settings in force: {field: value} with "url" the full URL to connect to ("" when no
    broker is configured, or the code's is not a broker URL: "error" says why) and "source"
    "admin", "code" or None. changes: checked settings laid over the stored ones (a connection
    test of values not saved yet)."""
    s = {k: setting(k).value for k in FIELDS}
    for k in changes or ():
        s[k] = changes[k] or _DEFAULT.get(k, "")
    stored = s["url"]
    url = stored or code_url or ""
    s["source"] = "admin" if stored else "code" if code_url else None
    s["error"] = None
    if url:
        try:
            tls, host, port, user, password = parse_url(url)
            url = _url(tls, host, port, s["user"] or user, s["password"] or password)
        except ValueError as e:   # the code's URL (a stored one was checked): not usable
            s["error"] = str(e)
            url = ""
    s["url"] = url
    return s


def save(d, code_url=None):
    """Check and store the settings in d. "" (or null) sets a field back to its default (url: the
    code's); a missing field is left as it is, so the password need not be sent again, except
    that a URL naming another host clears the user and password it was not given."""
    out = _changes(d, code_url)
    # all or nothing: a cut between two of them could send one broker's password to another
    # (a new plain mqtt:// URL stored, the old broker's credentials not yet replaced)
    persist.set_all([(setting(k), persist.RESET if out[k] == "" else out[k]) for k in out if k != "ca"])
    if "ca" in out:
        # last and on its own: a CA of several KB in the journal needs room for three copies. A
        # cut before it leaves the new URL with the old CA, which fails closed at the handshake.
        var = setting("ca")
        if out["ca"] == "":
            var.reset()
        else:
            var.value = out["ca"]
    return out


def _changes(d, code_url):
    # d checked against the stored settings. Credentials belong to the broker they were given for:
    # a URL naming another host clears those it does not bring (a stored password went to whatever
    # host the URL named next, in the clear)
    cur = {k: setting(k).value for k in FIELDS}
    cur["url"] = cur["url"] or code_url or ""
    out = check(d, cur)
    if "url" in out and _host(out["url"] or code_url) != _host(cur["url"]):
        for k in ("user", "password"):
            out.setdefault(k, "")
    return out


def _host(url):
    try:
        return parse_url(url)[1] if url else None
    except ValueError:   # the code's URL, not a broker's
        return None


def client_settings(code_url=None):
    """load(code_url) and "id", the client id (device_id()): what MqttDevice needs to start, in one
    call (it loads this module for that call only, _compat.call_loaded: the admin page's MQTT tab
    is the only other user)."""
    s = load(code_url)
    s["id"] = device_id()
    return s


def device_id():
    """The device's id in MQTT (its client id and topic level): "iotutils-<MAC hex>"."""
    import binascii
    return "iotutils-" + binascii.hexlify(hal.mac()).decode()


def test_connection(d=None, code_url=None):
    """One connect attempt with the settings in force, or with those in d laid over them (not
    stored), as another client id (the running client is not disturbed): {"result": "connected" |
    "refused" | "timeout" | "failed", "reason", "ms"}. ValueError for settings that do not validate."""
    s = load(code_url, _changes(d or {}, code_url))
    if not s["url"]:
        raise ValueError(s["error"] or "url: no broker configured")
    from iotutils.mqtt import MQTT
    m = MQTT(s["url"], client_id=device_id() + "-test", keepalive=10, cadata=s["ca"] or None)
    t0 = ticks_ms()
    ok = m.connect()
    ms = ticks_diff(ticks_ms(), t0)
    if ok:
        m.stop()
        return {"result": "connected", "reason": None, "ms": ms}
    err = m.status()["last_error"] or "?"
    reason = err.partition(" failed: ")[2] or err
    if "refused the connection" in reason:
        return {"result": "refused", "reason": reason.partition("connection: ")[2], "ms": ms}
    if "timed out" in reason or "ETIMEDOUT" in reason or "in time" in reason or "blocked for" in reason:
        return {"result": "timeout", "reason": reason, "ms": ms}
    return {"result": "failed", "reason": reason, "ms": ms}
