# Over-the-air updates: a new app image from GitHub (latest release, a tag, a branch or a commit)
# or any URL, streamed into the other OTA slot, verified, booted pending-verify, rolled back by the
# bootloader unless the new image confirms; plus App OTA for .py files on the filesystem.
#
#   ota = OTA(repo="owner/name", channel="release")   # "release", "release:<tag>", "branch:main",
#                                                     # "commit:<sha>", "url:<ota.json URL>"
#   OTA(channel="url:<image URL>", sha256="<hex>")     # any image URL with its SHA-256
#   ota.check()  -> {"current", "available", "newer"}
#   ota.update(progress=None)   # verify everything, set boot, hal.reset(); OTAError and no change on failure
#   ota.confirm()               # after a health check: cancel the rollback
#   ota.status() -> {"version", "project", "slot", "pending", "rolled_back"}
#   ota.install_stream(stream, total, sha256=None)    # an uploaded image, same checks; no reboot
#   ota.auto_update(True, every_hours=24, idle_minutes=10, app=webserver); ota.busy(True|False)
#   ota.update_app("app")       # App OTA: .py files of a repo folder (branch/commit channels);
#   app_boot()                  # first thing in main.py: picks the app folder, rolls back unconfirmed
#
# An image is installed only if: its size and SHA-256 match the manifest, it is a complete ESP32 app
# image (magic, chip id, segment layout, checksum, appended SHA-256), its app descriptor names the
# running project and a version that differs from the running one and did not roll back here before,
# and the slot reads back with the same SHA-256. Only then set_boot; a failure changes nothing.
#
# Sources. A release (tag = version) carries firmware.bin + ota.json {"version", "project", "size",
# "sha256", "url"?}; branch/commit channels read ota.json from the repository at that ref through
# the contents API, its "url" naming the image (absolute URL, or a path in the repo at that ref).
#
# RAM: the image goes socket -> one 4 KB buffer -> flash; the image verifier (iotutils.appimage) runs
# on that buffer, and the slot is read back through it for the manifest's SHA-256, so the extra peak
# heap stays ~8 KB whatever the image size.
import errno
import gc
import hashlib
import json
import os
import socket
import time

import iotutils.appimage as appimage
import iotutils.hal as hal
from iotutils._compat import _thread, allocate_lock, const, exists, ticks_diff, ticks_ms

_BLOCK = const(4096)
_MAX_JSON = const(65536)
_ERR_BODY = const(300)
_SLICE_S = 0.25   # MicroPython socket reads wait at most this long at a time (see _Response)

STATE_FILE = "ota_state.json"   # fallback state store when iotutils.persist is not there
APP_ROOT = "apps"               # App OTA: apps/a, apps/b and the pointer file apps/current.json


class OTAError(Exception):
    pass


# ---------------------------------------------------------------- HTTP(S) client (streaming)

def _split_url(url):
    if url.startswith("http://"):
        scheme, rest, port = "http", url[7:], 80
    elif url.startswith("https://"):
        scheme, rest, port = "https", url[8:], 443
    else:
        raise OTAError("unsupported URL %r (http:// or https:// only)" % url)
    i = rest.find("/")
    host, path = (rest, "/") if i < 0 else (rest[:i], rest[i:])
    if ":" in host:
        host, p = host.rsplit(":", 1)
        port = int(p)
    return scheme, host, port, path


def _join_url(base, loc):
    if loc.startswith("http://") or loc.startswith("https://"):
        return loc
    scheme, host, port, path = _split_url(base)
    if loc.startswith("/"):
        return "%s://%s:%d%s" % (scheme, host, port, loc)
    return "%s://%s:%d%s/%s" % (scheme, host, port, path.rsplit("/", 1)[0], loc)


class _Response:
    """One HTTP response; read the body with readinto()/read_all(). close() when done."""

    def __init__(self, sock, stream, status, headers, url, timeout, raw=None):
        self.sock = sock
        self.f = stream
        self.status = status
        self.headers = headers
        self.url = url
        self.timeout = timeout
        # MicroPython: wait in short slices and count the time here. The unix port restarts a
        # blocking read's SO_RCVTIMEO whenever a signal interrupts it (another thread's GC does),
        # so a stalled server could hold a plain timeout forever.
        self._sliced = stream is sock
        if self._sliced:
            (raw or sock).settimeout(_SLICE_S)  # TLS: the socket under the TLS stream
        te = headers.get("transfer-encoding", "").lower()
        self.chunked = "chunked" in te
        cl = headers.get("content-length")
        self.length = int(cl) if cl is not None and cl.strip().isdigit() else None
        self._left = self.length   # bytes left (length body) or in the current chunk
        self._eof = False
        if self.chunked:
            self._left = 0

    def _raw_readinto(self, mv):
        t0 = ticks_ms()
        while True:
            try:
                n = self.f.readinto(mv)
            except OSError as e:
                if not self._sliced or e.args[0] not in (errno.ETIMEDOUT, errno.EAGAIN):
                    raise
                n = None
            if n is not None:
                return n
            if ticks_diff(ticks_ms(), t0) >= self.timeout * 1000:
                raise OTAError("network: no data for %s s from %s" % (self.timeout, self.url))

    def _readline(self):
        if not self._sliced:
            return self.f.readline()
        line = bytearray()
        one = bytearray(1)
        while len(line) < 256:
            if not self._raw_readinto(one):
                break
            line += one
            if one[0] == 0x0A:
                break
        return bytes(line)

    def readinto(self, mv):
        """Up to len(mv) body bytes into mv; 0 at the end. Raises OTAError on a short body."""
        if self._eof:
            return 0
        if self.chunked:
            if not self._left:
                line = self._readline()
                if not line:
                    raise OTAError("download truncated (chunked body ended early)")
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise OTAError("bad chunk size line %r" % line[:20])
                if size == 0:
                    while True:  # trailer section up to the empty line
                        t = self._readline()
                        if not t or t in (b"\r\n", b"\n"):
                            break
                    self._eof = True
                    return 0
                self._left = size
            n = self._raw_readinto(mv[:min(len(mv), self._left)])
            if not n:
                raise OTAError("download truncated (connection closed inside a chunk)")
            self._left -= n
            if not self._left:
                self._readline()  # CRLF after the chunk data
            return n
        if self._left is None:  # read until close
            n = self._raw_readinto(mv)
            if not n:
                self._eof = True
            return n
        if not self._left:
            self._eof = True
            return 0
        n = self._raw_readinto(mv[:min(len(mv), self._left)])
        if not n:
            raise OTAError("download truncated: %d of %d bytes missing" % (self._left, self.length))
        self._left -= n
        return n

    def read_all(self, limit):
        out = bytearray()
        buf = bytearray(1024)
        mv = memoryview(buf)
        while True:
            n = self.readinto(mv)
            if not n:
                return bytes(out)
            out += mv[:n]
            if len(out) > limit:
                raise OTAError("response from %s larger than %d bytes" % (self.url, limit))

    def close(self):
        try:
            if self.f is not self.sock:
                self.f.close()  # CPython's makefile() holds the descriptor open too
            self.sock.close()
        except Exception:
            pass


class Http:
    """A small streaming HTTP/1.1 GET client: redirects, Content-Length and chunked bodies, timeouts."""

    #: seconds a connect or read may block
    timeout = 15
    #: redirects followed before giving up (GitHub assets redirect once, to another host)
    max_redirects = 5
    user_agent = "iotutils-ota"

    def __init__(self, token=None, cadata=None):
        self.token = token
        self.cadata = cadata   # PEM/DER CA certificates: verify the server; None: encrypt only

    def _open(self, scheme, host, port):
        """(stream, raw socket): the TLS stream over the socket for https, else the socket twice."""
        ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
        raw = socket.socket(ai[0], socket.SOCK_STREAM)
        try:
            raw.settimeout(self.timeout)
            raw.connect(ai[-1])
            s = self._tls(raw, host) if scheme == "https" else raw
        except Exception:
            raw.close()
            raise
        return s, raw

    def _tls(self, s, host):
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.cadata:
            ctx.load_verify_locations(cadata=_der(self.cadata))
            ctx.verify_mode = ssl.CERT_REQUIRED
        else:
            if hasattr(ctx, "check_hostname"):
                ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx.wrap_socket(s, server_hostname=host)

    def get(self, url, accept=None):
        """GET url following redirects; returns a _Response with status 2xx, else raises OTAError."""
        auth = self.token
        for _ in range(self.max_redirects + 1):
            scheme, host, port, path = _split_url(url)
            try:
                resp = self._request(scheme, host, port, path, accept, auth)
            except OSError as e:
                raise OTAError("network error talking to %s:%d: %s" % (host, port, e))
            except ValueError as e:  # MicroPython's ssl reports a failed certificate check so
                raise OTAError("TLS error talking to %s:%d: %s" % (host, port, str(e).strip()))
            if resp.status in (301, 302, 303, 307, 308):
                loc = resp.headers.get("location")
                resp.close()
                if not loc:
                    raise OTAError("redirect without Location from %s" % url)
                new = _join_url(url, loc)
                if _split_url(new)[:3] != (scheme, host, port):
                    auth = None  # never hand the token to another origin (the asset host)
                url = new
                continue
            if 200 <= resp.status < 300:
                return resp
            raise _http_error(resp)
        raise OTAError("too many redirects (> %d) for %s" % (self.max_redirects, url))

    def _request(self, scheme, host, port, path, accept, auth):
        s, raw = self._open(scheme, host, port)
        try:
            hostport = host if port in (80, 443) else "%s:%d" % (host, port)
            req = "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\nConnection: close\r\n" % (
                path, hostport, self.user_agent)
            if accept:
                req += "Accept: %s\r\n" % accept
            if auth:
                req += "Authorization: Bearer %s\r\n" % auth
            req = (req + "\r\n").encode()
            if hasattr(s, "sendall"):
                s.sendall(req)
            else:
                s.write(req)
            f = s if hasattr(s, "readline") else s.makefile("rb")  # MicroPython streams / CPython sockets
            line = f.readline()
            if not line:
                raise OTAError("no response from %s:%d" % (host, port))
            parts = line.split(None, 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
                raise OTAError("bad HTTP status line from %s: %r" % (host, line[:40]))
            status = int(parts[1])
            headers = {}
            while True:
                h = f.readline()
                if not h:
                    raise OTAError("connection closed in the response head from %s" % host)
                if h in (b"\r\n", b"\n"):
                    break
                try:
                    k, _, v = h.decode().partition(":")
                except UnicodeError:
                    continue  # a header we do not use, in some other encoding
                headers[k.strip().lower()] = v.strip()
            return _Response(s, f, status, headers, "%s://%s%s" % (scheme, hostport, path), self.timeout, raw)
        except Exception:
            s.close()
            raise


def _der(cadata):
    """CA certificates as DER: PEM text is converted (MicroPython's ssl takes DER reliably)."""
    if isinstance(cadata, str):
        cadata = cadata.encode()
    if b"-----BEGIN" not in cadata:
        return cadata
    import binascii
    out = b""
    for part in cadata.split(b"-----BEGIN CERTIFICATE-----")[1:]:
        body = part.split(b"-----END CERTIFICATE-----")[0]
        out += binascii.a2b_base64(b"".join(body.split()))
    if not out:
        raise ValueError("cadata: no certificate in the PEM text")
    return out


def _http_error(resp):
    h = resp.headers
    msg = ""
    try:
        raw = resp.read_all(_ERR_BODY * 20)[:_ERR_BODY]
        try:
            msg = json.loads(raw).get("message", "")
        except Exception:
            msg = raw.decode().strip()[:120]
    except Exception:
        pass
    resp.close()
    if resp.status == 429 or (resp.status == 403 and (h.get("x-ratelimit-remaining") == "0" or
                                                       "rate limit" in msg.lower())):
        when = ""
        if h.get("retry-after"):
            when = "; retry after %s s" % h["retry-after"]
        elif h.get("x-ratelimit-reset"):
            when = "; the limit resets at unix time %s" % h["x-ratelimit-reset"]
        return OTAError("GitHub rate limit exceeded (HTTP %d)%s%s" % (
            resp.status, when, " (use a token)" if resp.status == 403 else ""))
    if resp.status == 404:
        return OTAError("not found (HTTP 404): %s%s" % (resp.url, (": " + msg) if msg else ""))
    return OTAError("HTTP %d from %s%s" % (resp.status, resp.url, (": " + msg) if msg else ""))


# ---------------------------------------------------------------- release JSON, streamed

_WS = b" \t\r\n"


class ReleaseScan:
    """Streaming scan of a GitHub release object: .tag (tag_name) and .assets {name: {"url",
    "browser_download_url"}} for the asset names asked for. Feed bytes in order with feed();
    memory stays at one short string whatever the size of the notes. Strings longer than
    max_string are skipped (never needed). Raises OTAError on malformed JSON."""

    #: longest string kept (URLs, names, tags)
    max_string = 600

    def __init__(self, names):
        self.names = names
        self.tag = None
        self.assets = {}
        self._stack = []    # b"{" or b"[" per open container
        self._keys = []     # the last key at each level (None for arrays)
        self._want_key = False
        self._in_str = False
        self._str = bytearray()
        self._long = False
        self._esc = None    # bytearray of a pending escape sequence (after the backslash)
        self._cur = None    # the asset object being read
        self._started = False

    def done(self):
        return self._started and not self._stack and not self._in_str

    def feed(self, data):
        i = 0
        n = len(data)
        while i < n:
            if self._in_str:
                i = self._feed_str(data, i, n)
                continue
            c = data[i]
            i += 1
            if c in _WS:
                continue
            if c == 0x22:  # "
                self._in_str = True
                self._str = bytearray()
                self._long = False
            elif c == 0x7B:  # {
                if not self._stack and self._started:
                    raise OTAError("bad JSON: data after the release object")
                self._started = True
                if self._stack == [0x7B, 0x5B] and self._keys[0] == "assets":
                    self._cur = {}
                self._stack.append(c)
                self._keys.append(None)
                self._want_key = True
            elif c == 0x5B:  # [
                if not self._stack:
                    raise OTAError("bad JSON: the release is not an object")
                self._stack.append(c)
                self._keys.append(None)
                self._want_key = False
            elif c == 0x7D or c == 0x5D:  # } ]
                if not self._stack or self._stack[-1] != c - 2:
                    raise OTAError("bad JSON: unbalanced brackets")
                self._stack.pop()
                self._keys.pop()
                if c == 0x7D and self._cur is not None and len(self._stack) == 2:
                    name = self._cur.get("name")
                    if name in self.names:
                        self.assets[name] = self._cur
                    self._cur = None
                self._want_key = False
            elif c == 0x2C:  # ,
                self._want_key = bool(self._stack) and self._stack[-1] == 0x7B
            elif c == 0x3A:  # :
                self._want_key = False
            elif not self._stack:
                raise OTAError("bad JSON: the release is not an object")
            # numbers, true/false/null: nothing to keep

    def _feed_str(self, data, i, n):
        if self._esc is not None:
            self._esc.append(data[i])
            e = self._esc
            if e[0] == 0x75 and len(e) < 5:  # \uXXXX still incomplete
                return i + 1
            self._esc = None
            ch = {0x22: b'"', 0x5C: b"\\", 0x2F: b"/", 0x62: b"\b", 0x66: b"\f", 0x6E: b"\n", 0x72: b"\r",
                  0x74: b"\t"}.get(e[0])
            if ch is None:
                try:
                    ch = chr(int(bytes(e[1:5]), 16)).encode()
                except ValueError:
                    raise OTAError("bad JSON: bad escape in a string")
            self._add(ch)
            return i + 1
        q = data.find(b'"', i)
        b = data.find(b"\\", i)
        end = q if b < 0 or (0 <= q < b) else b
        if end < 0:
            self._add(data[i:n])
            return n
        self._add(data[i:end])
        if end == b:
            self._esc = bytearray()
            return end + 1
        self._in_str = False
        try:
            v = None if self._long else bytes(self._str).decode()
        except UnicodeError:
            raise OTAError("bad JSON: a string is not UTF-8")
        self._string(v)
        return end + 1

    def _add(self, part):
        if not self._long:
            if len(self._str) + len(part) > self.max_string:
                self._long = True
                self._str = bytearray()
            else:
                self._str += part

    def _string(self, v):
        if self._stack and self._stack[-1] == 0x7B and self._want_key:
            self._keys[-1] = v
            return
        depth = len(self._stack)
        key = self._keys[-1] if self._keys else None
        if depth == 1 and key == "tag_name":
            self.tag = v
        elif depth == 3 and self._cur is not None and key in ("name", "url", "browser_download_url"):
            self._cur[key] = v


# ---------------------------------------------------------------- persistent state

class _State:
    """Small persistent dict: bad (rolled-back) versions, the install in flight, auto-update
    settings. iotutils.persist when it is there, else one JSON file written atomically."""

    def __init__(self, path=None):
        self._p = None
        self.path = path or STATE_FILE
        if path is None:
            try:
                from iotutils.persist import PersistentJSON
                self._p = PersistentJSON("state", default={}, folder="ota")
                self._p.value  # noqa: B018 - probe the backend now
            except Exception:
                self._p = None

    def load(self):
        if self._p is not None:
            v = self._p.value
            return dict(v) if isinstance(v, dict) else {}
        try:
            with open(self.path) as f:
                v = json.load(f)
            return v if isinstance(v, dict) else {}
        except (OSError, ValueError):
            return {}

    def save(self, d):
        if self._p is not None:
            self._p.value = d
            return
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(d, f)
        os.rename(tmp, self.path)

    def update(self, **kw):
        d = self.load()
        for k in kw:
            if kw[k] is None:
                d.pop(k, None)
            else:
                d[k] = kw[k]
        self.save(d)
        return d


# ---------------------------------------------------------------- OTA

class OTA:
    """OTA updates of the firmware image (and App OTA of .py files) from GitHub or a URL."""

    #: bytes per download/flash block (a flash sector)
    block_size = _BLOCK
    #: seconds the whole download may take before it is abandoned
    deadline_s = 1800
    #: the chip id images must carry (0 = ESP32)
    chip_id = appimage.CHIP_ESP32

    def __init__(self, repo=None, channel="release", api="https://api.github.com", token=None,
                 sha256=None, cadata=None, manifest="ota.json", asset="firmware.bin", state_path=None):
        if repo is not None and (repo.count("/") != 1 or not all(repo.split("/"))):
            raise ValueError("repo must be 'owner/name', got %r" % (repo,))
        kind, _, arg = channel.partition(":")
        if kind not in ("release", "branch", "commit", "url") or (kind != "release" and not arg):
            raise ValueError("channel must be 'release', 'release:<tag>', 'branch:<name>', 'commit:<sha>' "
                             "or 'url:<URL>', got %r" % (channel,))
        if kind != "url" and repo is None:
            raise ValueError("repo is required for channel %r" % channel)
        self.repo = repo
        self.channel = channel
        self.kind = kind
        self.ref = arg
        self.api = api.rstrip("/")
        self.sha256 = sha256
        self.manifest = manifest
        self.asset = asset
        self.http = Http(token, cadata)
        self.state = _State(state_path)
        self._lock = allocate_lock()
        self._busy = False
        self._auto = None
        self._auto_cfg = None
        self._app = None
        self._desc = None
        self._sync_boot()

    # ---- running image ----
    def _running_desc(self):
        if self._desc is None:
            self._desc = appimage.read_desc(hal.partition(hal.ota_running())) or {}
        return self._desc

    def _sync_boot(self):
        """After a rollback, remember the version that failed (its slot may be overwritten later)."""
        st = self.state.load()
        inst = st.get("installing")
        if not inst:
            return
        cur = self._running_desc().get("version")
        if cur == inst:
            return  # the new image runs (pending or confirmed)
        if hal.ota_rolled_back() or not hal.ota_pending():
            bad = st.get("bad") or []
            if hal.ota_rolled_back() and inst not in bad:
                bad.append(inst)
            # a rollback, or a cut in set_boot: the install is over either way
            self.state.update(installing=None, bad=bad[-8:])

    def status(self):
        d = self._running_desc()
        return {"version": d.get("version"), "project": d.get("project"), "slot": hal.ota_running(),
                "pending": bool(hal.ota_pending()), "rolled_back": bool(hal.ota_rolled_back())}

    def confirm(self):
        """Mark the running image (and a pending App OTA) good: no rollback any more."""
        hal.ota_mark_valid()
        if self.state.load().get("installing"):
            self.state.update(installing=None)
        app_confirm()

    def busy(self, flag=None):
        """Declare the device busy (auto-update waits); busy() -> current flag."""
        if flag is not None:
            self._busy = bool(flag)
        return self._busy

    # ---- sources ----
    def _contents_url(self, path, ref):
        return "%s/repos/%s/contents/%s?ref=%s" % (self.api, self.repo, path, ref)

    def _get_json(self, url, accept="application/vnd.github+json"):
        resp = self.http.get(url, accept)
        try:
            raw = resp.read_all(_MAX_JSON)
        finally:
            resp.close()
        try:
            return json.loads(raw)
        except ValueError:
            raise OTAError("bad JSON from %s" % url)

    def _release(self):
        if self.ref:
            url = "%s/repos/%s/releases/tags/%s" % (self.api, self.repo, self.ref)
        else:
            url = "%s/repos/%s/releases/latest" % (self.api, self.repo)
        # a release's JSON carries its notes and uploader objects (often 10+ KB): scan it as it
        # streams in and keep only the tag and the two asset URLs
        scan = ReleaseScan((self.manifest, self.asset))
        resp = self.http.get(url, "application/vnd.github+json")
        try:
            buf = bytearray(512)
            mv = memoryview(buf)
            while True:
                n = resp.readinto(mv)
                if not n:
                    break
                scan.feed(bytes(mv[:n]))
        finally:
            resp.close()
        if not scan.done():
            raise OTAError("bad JSON from %s" % url)
        tag = scan.tag
        assets = scan.assets
        if self.manifest not in assets or self.asset not in assets:
            raise OTAError("release %s lacks the %s and %s assets" % (tag, self.asset, self.manifest))
        man = self._asset_json(assets[self.manifest])
        plan = self._plan(man, "release %s" % tag)
        if tag and plan["version"] != tag.lstrip("v") and plan["version"] != tag:
            raise OTAError("release tag %s but its ota.json says version %s" % (tag, plan["version"]))
        if not man.get("url"):
            plan["url"], plan["accept"] = self._asset_url(assets[self.asset])
        return plan

    def _asset_url(self, a):
        # the API asset URL with Accept: octet-stream redirects to the asset host (works for private repos)
        if a.get("url"):
            return a["url"], "application/octet-stream"
        if a.get("browser_download_url"):
            return a["browser_download_url"], None
        raise OTAError("release asset without a download URL")

    def _asset_json(self, a):
        url, accept = self._asset_url(a)
        return self._get_json(url, accept)

    def _plan(self, man, where):
        if not isinstance(man, dict):
            raise OTAError("%s: ota.json is not an object" % where)
        try:
            v, size, sha = man["version"], int(man["size"]), man["sha256"].lower()
        except (KeyError, TypeError, ValueError, AttributeError):
            raise OTAError("%s: ota.json needs version, size and sha256" % where)
        try:
            _unhex(sha)
        except ValueError:
            sha = ""
        if not isinstance(v, str) or not v or len(sha) != 64 or size <= 0:
            raise OTAError("%s: ota.json has a bad version, size or sha256" % where)
        return {"version": v, "size": size, "sha256": sha, "url": man.get("url"), "accept": None,
                "project": man.get("project")}

    def _ref_plan(self):
        man = self._get_json(self._contents_url(self.manifest, self.ref), "application/vnd.github.raw")
        plan = self._plan(man, "%s %s" % (self.kind, self.ref))
        url = plan["url"]
        if not url:
            raise OTAError("%s %s: ota.json has no url" % (self.kind, self.ref))
        if not (url.startswith("http://") or url.startswith("https://")):
            plan["url"] = self._contents_url(url.lstrip("/"), self.ref)
            plan["accept"] = "application/vnd.github.raw"
        return plan

    def _url_plan(self):
        url = self.ref
        if not self.sha256:
            # no sha256 given: the URL names an ota.json manifest
            plan = self._plan(self._get_json(url, "application/json"), url)
            if not plan["url"]:
                raise OTAError("%s has no url" % url)
            plan["url"] = _join_url(url, plan["url"])
            return plan
        # the image itself: its version is in the app descriptor, read from the first blocks
        if len(self.sha256) != 64:
            raise OTAError("sha256= must be 64 hex digits")
        resp = self.http.get(url)
        try:
            v = appimage.AppImageVerifier(self.chip_id)
            buf = bytearray(1024)
            while v.desc is None:
                n = resp.readinto(memoryview(buf))
                if not n:
                    break
                try:
                    v.feed(memoryview(buf)[:n])
                except ValueError as e:
                    raise OTAError(str(e))
            size = resp.length
        finally:
            resp.close()
        if v.desc is None:
            raise OTAError("%s: no app descriptor in the image" % url)
        return {"version": v.desc["version"], "size": size, "sha256": self.sha256.lower(), "url": url,
                "accept": None, "project": None}

    def _resolve(self):
        if self.kind == "release":
            return self._release()
        if self.kind == "url":
            return self._url_plan()
        return self._ref_plan()

    # ---- check / update ----
    def check(self):
        """Ask the source what it offers: {"current", "available", "newer"} (no download of the image).
        newer is False for the running version and for a version that already rolled back here."""
        plan = self._resolve()
        cur = self._running_desc().get("version")
        bad = self.state.load().get("bad") or ()
        return {"current": cur, "available": plan["version"],
                "newer": plan["version"] != cur and plan["version"] not in bad}

    def update(self, progress=None, force=False, reboot=True):
        """Download, verify and install the offered image into the other slot, then reboot into it.

        progress(bytes_done, total) is called after every block. Raises OTAError (nothing is
        changed: the running image stays the boot image) for any failure. force: install a version
        that rolled back here before. reboot=False: return the installed version instead of resetting.
        """
        return self._locked(self._update, (progress, force), reboot)

    def install_stream(self, stream, total=None, progress=None, sha256=None, force=False, reboot=False):
        """Install an image read from `stream` (readinto(buf) -> n, 0 at the end; e.g. an upload's
        request body) with the same checks as update(); sha256 (hex), when given, must match.
        Returns the installed version (reboot=False: the caller reboots)."""
        if sha256 is not None and len(sha256) != 64:
            raise ValueError("sha256 must be 64 hex digits")
        return self._locked(self._install, (stream, total, sha256, None, progress, force), reboot)

    def _locked(self, fn, args, reboot):
        if self._lock is not None and not self._lock.acquire(0):
            raise OTAError("an update is already running")
        try:
            version = fn(*args)
        finally:
            if self._lock is not None:
                self._lock.release()
        if reboot:
            hal.reset()
        return version

    def _update(self, progress, force):
        self._sync_boot()
        if hal.ota_pending():
            raise OTAError("the running image is not confirmed yet: confirm() or let it roll back first")
        plan = self._resolve()
        self._check_version(plan["version"], force)
        gc.collect()
        resp = self.http.get(plan["url"], plan["accept"])
        try:
            if resp.length is not None and resp.length != plan["size"]:
                raise OTAError("server sends %d bytes, the manifest says %d" % (resp.length, plan["size"]))
            return self._install(resp, plan["size"], plan["sha256"], plan["version"], progress, force)
        finally:
            resp.close()

    def _check_version(self, version, force):
        if version == self._running_desc().get("version"):
            raise OTAError("version %s is already running" % version)
        if not force and version in (self.state.load().get("bad") or ()):
            raise OTAError("version %s rolled back on this device before (force=True to retry)" % version)

    def _install(self, reader, total, sha_hex, version, progress, force):
        """reader -> next slot, verified; then set_boot. Returns the image's version."""
        self._sync_boot()
        if hal.ota_pending():
            raise OTAError("the running image is not confirmed yet: confirm() or let it roll back first")
        project = self._running_desc().get("project")
        try:
            target = hal.ota_next()
            region = hal.partition(target)
        except (OSError, ValueError) as e:  # a partition table without OTA slots (stock firmware)
            raise OTAError("no OTA slot to install into: %s" % e)
        if total is not None and total > region.size:
            raise OTAError("image of %d bytes does not fit the %d-byte slot %s" % (total, region.size, target))
        if self.block_size % _BLOCK:
            raise ValueError("block_size must be a multiple of %d" % _BLOCK)
        gc.collect()
        buf = bytearray(self.block_size)
        # without a published SHA-256 (an upload) the stream's own hash is what the flash must hold
        stream_sha = hashlib.sha256() if sha_hex is None else None
        try:
            info = self._write(reader, total, region, buf, project, progress, stream_sha)
            # read back what the flash holds before it may ever boot (as esp_ota_end() does): its
            # SHA-256 must be the manifest's. The stream that was written passed the image checks,
            # so equal hashes mean the slot holds exactly the verified image.
            want = _unhex(sha_hex.lower()) if sha_hex else stream_sha.digest()
            if _sha256_region(region, info["size"], buf) != want:
                raise OTAError("sha256 mismatch: the download or the flash write is corrupt")
            if version is not None and info["version"] != version:
                raise OTAError("image version %s, but the source says %s" % (info["version"], version))
            self._check_version(info["version"], force)
        except ValueError as e:
            self._scrub(region)
            raise OTAError(str(e))
        except Exception:
            self._scrub(region)
            raise
        hal.ota_set_boot(target)
        # recorded after set_boot: that replaced any older rollback record in otadata, so a rollback
        # seen at a later boot is this image's (a cut in between only forgets to blacklist it)
        self.state.update(installing=info["version"])
        return info["version"]

    def _scrub(self, region):
        # the half-written slot must never look like an image (the bootloader would refuse it anyway)
        try:
            region.erase(0, _BLOCK)
        except Exception:
            pass

    def _write(self, reader, total, region, buf, project, progress, stream_sha):
        v = appimage.AppImageVerifier(self.chip_id, project, region.size)
        readinto = reader.readinto if hasattr(reader, "readinto") else None
        mv = memoryview(buf)
        bs = len(buf)
        off = 0
        t0 = ticks_ms()
        try:
            while True:
                fill = 0
                while fill < bs:
                    if readinto is not None:
                        n = readinto(mv[fill:])
                    else:
                        part = reader.read(bs - fill)
                        n = len(part) if part else 0
                        mv[fill:fill + n] = part
                    if not n:
                        break
                    fill += n
                if not fill:
                    break
                if total is not None and off + fill > total:
                    raise OTAError("download longer than the %d bytes announced" % total)
                if off + fill > region.size:
                    raise OTAError("image larger than the slot")
                chunk = mv[:fill]
                v.feed(chunk)
                if stream_sha is not None:
                    stream_sha.update(chunk)
                region.erase(off, (fill + _BLOCK - 1) // _BLOCK * _BLOCK)
                region.write(off, chunk)
                off += fill
                if progress:
                    progress(off, total)
                if ticks_diff(ticks_ms(), t0) > self.deadline_s * 1000:
                    raise OTAError("download took longer than %d s" % self.deadline_s)
                if fill < bs:
                    break
        except OSError as e:
            raise OTAError("network error during download: %s" % e)
        if total is not None and off != total:
            raise OTAError("download truncated: %d of %d bytes" % (off, total))
        info = v.finish()
        info["size"] = off
        return info

    # ---- auto-update ----
    def auto_update(self, enable=None, every_hours=None, idle_minutes=None, app=None):
        """Check every N hours and install when idle for M minutes (no HTTP request on `app`, whose
        `last_request_ms` is a time.ticks_ms() value, and no busy(True)). Settings persist: at boot,
        auto_update(app=app) resumes them (enable=None keeps the stored on/off). Returns the settings."""
        st = self.state.load().get("auto") or {"on": False, "every_h": 24, "idle_min": 10}
        if enable is not None:
            st["on"] = bool(enable)
        if every_hours is not None:
            st["every_h"] = float(every_hours)
        if idle_minutes is not None:
            st["idle_min"] = float(idle_minutes)
        if not 0 < st["every_h"] <= 24 * 365 or not 0 <= st["idle_min"] <= 24 * 60:
            raise ValueError("every_hours must be in (0, 8760] and idle_minutes in [0, 1440]")
        self.state.update(auto=st)
        self._auto_cfg = st
        if app is not None:
            self._app = app
        if st["on"] and self._auto is None and _thread:
            self._auto = True
            _thread.start_new_thread(self._auto_loop, ())
        elif not st["on"]:
            self._auto = None
        return st

    def idle_ms(self):
        """Milliseconds since the web server's last request (since boot if none)."""
        last = getattr(self._app, "last_request_ms", None)
        if last is None:
            return hal.uptime_ms()
        return ticks_diff(ticks_ms(), last)

    def _auto_loop(self):
        # time is summed in small steps: ticks_ms() differences are only valid for a few days
        since_check = None
        prev = ticks_ms()
        pending = None
        while self._auto:
            st = self._auto_cfg
            now = ticks_ms()
            if since_check is not None:
                since_check += ticks_diff(now, prev)
            prev = now
            if pending is None and (since_check is None or since_check >= st["every_h"] * 3600000):
                since_check = 0
                try:
                    c = self.check()
                    if c["newer"]:
                        pending = c["available"]
                        print("ota: auto: %s available, installing when idle" % pending)
                except Exception as e:  # a failed check waits for the next period
                    print("ota: auto check failed:", e)
            if pending and not self._busy and self.idle_ms() >= st["idle_min"] * 60000:
                pending = None
                try:
                    self.update()   # reboots on success
                except Exception as e:
                    print("ota: auto update failed:", e)
            time.sleep(0.2)

    # ---- App OTA (Python files on the filesystem) ----
    def update_app(self, folder="app", progress=None, reboot=True):
        """Install the .py files of an app folder as the app; returns the new folder name.

        branch/commit channels: the files of `folder` in the repository at that ref, each checked
        against its git blob SHA-1 from the contents listing. url: channel: the URL names an app
        manifest {"files": [{"name", "sha256", "url"?, "size"?}]} (url relative to the manifest,
        default the name). Every file goes into the inactive staging folder (unchanged ones are
        copied locally) and is verified; then the pointer file switches atomically. The new app runs
        pending until confirm(); the next boot without confirm goes back to the previous app."""
        files = self._app_files(folder)
        ptr = _app_pointer()
        if ptr.get("pending"):
            raise OTAError("the running app is not confirmed yet")
        new = "b" if ptr.get("active") == "a" else "a"
        stage = APP_ROOT + "/" + new
        _mkdirs(stage)
        for name in os.listdir(stage):
            os.remove(stage + "/" + name)
        cur_dir = APP_ROOT + "/" + ptr["active"] if ptr.get("active") else None
        buf = bytearray(1024)
        total = sum(f[4] for f in files)
        done = 0
        for name, algo, digest, url, size in files:
            dst = stage + "/" + name
            if cur_dir and _file_digest(cur_dir + "/" + name, algo, buf) == digest:
                _copy(cur_dir + "/" + name, dst, buf)
            else:
                resp = self.http.get(url, "application/vnd.github.raw" if algo == "git" else None)
                try:
                    with open(dst, "wb") as f:
                        while True:
                            n = resp.readinto(memoryview(buf))
                            if not n:
                                break
                            f.write(memoryview(buf)[:n])
                finally:
                    resp.close()
                if _file_digest(dst, algo, buf) != digest:
                    raise OTAError("%s: %s mismatch (corrupt download)" % (
                        name, "git blob SHA-1" if algo == "git" else "sha256"))
            done += size
            if progress:
                progress(done, total)
        _write_pointer({"active": new, "previous": ptr.get("active"), "pending": True, "tries": 0,
                        "ref": self.ref})
        if reboot:
            hal.reset()
        return new

    def _app_files(self, folder):
        """[(name, "git"|"sha256", hex digest, url, size)] of the app to install."""
        out = []
        if self.kind in ("branch", "commit"):
            listing = self._get_json(self._contents_url(folder, self.ref))
            if not isinstance(listing, list):
                raise OTAError("%s is not a folder at %s" % (folder, self.ref))
            for e in listing:
                if e.get("type") == "file" and not str(e.get("name")).startswith("."):
                    out.append((e.get("name"), "git", e.get("sha"),
                                self._contents_url(folder + "/" + str(e.get("name")), self.ref), e.get("size") or 0))
        elif self.kind == "url":
            man = self._get_json(self.ref, "application/json")
            for e in (man.get("files") if isinstance(man, dict) else None) or ():
                if not isinstance(e, dict):
                    raise OTAError("app manifest: every file entry must be an object")
                out.append((e.get("name"), "sha256", str(e.get("sha256", "")).lower(),
                            _join_url(self.ref, e.get("url") or str(e.get("name"))), e.get("size") or 0))
        else:
            raise OTAError("App OTA needs a branch:<name>, commit:<sha> or url:<app manifest> channel")
        for name, _, digest, _, size in out:
            if not isinstance(name, str) or not name or "/" in name or name.startswith(".") or \
                    not isinstance(digest, str) or len(digest) not in (40, 64) or not isinstance(size, int):
                raise OTAError("app file entry %r is not usable (name, digest, size)" % (name,))
        if not out:
            raise OTAError("the app folder is empty")
        return out


def _sha256_region(region, size, buf):
    h = hashlib.sha256()
    mv = memoryview(buf)
    off = 0
    while off < size:
        n = min(len(buf), size - off)
        region.readinto(off, mv[:n])
        h.update(mv[:n])
        off += n
    return h.digest()


def _unhex(s):
    return bytes(int(s[i:i + 2], 16) for i in range(0, len(s), 2))


def _mkdirs(path):
    p = ""
    for part in path.split("/"):
        p = p + "/" + part if p else part
        if not exists(p):
            os.mkdir(p)


def _copy(src, dst, buf):
    with open(src, "rb") as a, open(dst, "wb") as b:
        while True:
            n = a.readinto(buf)
            if not n:
                break
            b.write(memoryview(buf)[:n])


def _file_digest(path, algo, buf):
    """Hex digest of a file: "git" = git blob SHA-1 (as GitHub's listing gives), else SHA-256."""
    try:
        size = os.stat(path)[6]
    except OSError:
        return None
    h = hashlib.sha1(b"blob %d\0" % size) if algo == "git" else hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(memoryview(buf)[:n])
    return "".join("%02x" % b for b in h.digest())


def _app_pointer():
    try:
        with open(APP_ROOT + "/current.json") as f:
            p = json.load(f)
        return p if isinstance(p, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_pointer(p):
    _mkdirs(APP_ROOT)
    tmp = APP_ROOT + "/current.tmp"
    with open(tmp, "w") as f:
        json.dump(p, f)
    os.rename(tmp, APP_ROOT + "/current.json")  # atomic switch


def app_boot():
    """Call first in main.py: picks the app folder (rolling back an App OTA that never confirmed),
    puts it first on sys.path and returns it (None when no App OTA was ever installed)."""
    import sys
    p = _app_pointer()
    if not p.get("active"):
        return None
    if p.get("pending"):
        if p.get("tries", 0) >= 1:
            # booted once already and never confirmed: back to the previous app (or none)
            p = {"active": p.get("previous"), "previous": p["active"], "pending": False, "rolled_back": True}
        else:
            p["tries"] = p.get("tries", 0) + 1
        _write_pointer(p)
        if not p["active"]:
            return None
    path = APP_ROOT + "/" + p["active"]
    if path not in sys.path:
        sys.path.insert(0, path)
    return path


def app_confirm():
    p = _app_pointer()
    if p.get("pending"):
        p["pending"] = False
        p.pop("tries", None)
        _write_pointer(p)


def app_status():
    p = _app_pointer()
    return {"active": p.get("active"), "pending": bool(p.get("pending")), "rolled_back": bool(p.get("rolled_back")),
            "ref": p.get("ref")}
