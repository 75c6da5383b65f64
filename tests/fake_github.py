"""A fake GitHub on loopback for OTA tests: the REST API bits iotutils.ota uses, plus an asset host.

    gh = FakeGitHub().start()
    gh.add_release("me/fw", "1.1.0", image_bytes)          # firmware.bin + ota.json assets
    gh.set_file("me/fw", "main", "ota.json", b"...")         # contents at a ref (branch or commit sha)
    OTA(repo="me/fw", api=gh.api_url)
    gh.fault = "truncate"                                     # next asset downloads misbehave
    gh.stop()

API host (api_url):
  GET /repos/O/R/releases/latest | /releases/tags/T   release JSON (tag_name, assets[] with url,
                                                       browser_download_url, size, name, id)
  GET /repos/O/R/releases/assets/ID                   Accept: application/octet-stream -> 302 to the
                                                       asset host (another port), else the asset's JSON
  GET /O/R/releases/download/T/NAME                   302 to the asset host (browser_download_url)
  GET /repos/O/R/contents/PATH?ref=REF                Accept: application/vnd.github.raw -> the bytes;
                                                       else JSON (file: base64 content; folder: listing
                                                       with git blob SHA-1 "sha" per entry)
Asset host (asset_url): GET /a/KEY -> the bytes.
Rate limiting: `rate_limit_remaining` counts API requests down; at 0 every API request gets
403 + X-RateLimit-Remaining: 0 (GitHub's primary limit); `secondary_limit = True` answers 429 +
Retry-After. Faults for asset bytes (`fault`, applies until reset to None): "truncate" (close halfway
with Content-Length promising all), "corrupt" (one byte flipped), "slow" (stalls `slow_s` seconds
after the first block), "chunked" (valid, chunked transfer encoding), "no_length" (valid, no
Content-Length, close-delimited), "reset" (close without any response), "short_length" (a
Content-Length smaller than the file, valid HTTP), "pause" (one 0.6 s pause after 6000 bytes),
"trickle" (after the first block, one byte every `trickle_s`);
`api_slow` makes the API's answers slow (see there); only the asset named `fault_name` (default
firmware.bin; None: all) is hit. `chunk_delay_s` throttles asset bytes (4 KB per delay);
`corrupt_files` serves those repo paths with one byte flipped, `padded_files` with bytes added; start(tls=(cert, key)) serves HTTPS.
`requests` logs (host, path, headers) of every
request.
"""
import base64
import hashlib
import http.server
import json
import socketserver
import threading
import time
from urllib.parse import parse_qs, unquote, urlsplit


def git_blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class SigningKey:
    """An owner's OTA signing key made for one test process (ECDSA P-256, as scripts/keygen.py makes):
    .pem is the public key devices are given, sign(digest) the r||s signature release.py writes."""

    def __init__(self):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        self._key = ec.generate_private_key(ec.SECP256R1())
        self.pem = self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        from iotutils import sign

        self.key_id = sign.key_id(sign.load_pubkey(self.pem))

    def sign(self, digest):
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, utils

        r, s = utils.decode_dss_signature(self._key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256()))))
        return (r.to_bytes(32, "big") + s.to_bytes(32, "big")).hex()


#: the key this test process signs releases with (devices are given OWNER.pem)
OWNER = SigningKey()


def manifest(version, image, url=None, project="iotutils", key=OWNER):
    """ota.json for image, signed by `key` (the owner's by default; None: unsigned), as
    scripts/release.py writes it."""
    digest = hashlib.sha256(image).digest()
    m = {"version": version, "project": project, "size": len(image), "sha256": digest.hex()}
    if key is not None:
        try:
            import espimage
            m["secure_version"] = espimage.parse_app_image(image)["secure_version"]
        except ValueError:
            pass  # not an app image (tests of refused downloads): nothing to say
        m["sig"] = key.sign(digest)
        m["key_id"] = key.key_id
    if url:
        m["url"] = url
    return json.dumps(m).encode()


def app_manifest(files, version="1", key=OWNER, urls=None):
    """app.json for {name: bytes} as `scripts/release.py --app` writes it, signed by `key` (None:
    unsigned); urls: {name: url} for a url: channel's manifest (default: the name, beside it)."""
    m = {"version": version, "files": [dict({"path": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()},
                                            **({"url": urls[n]} if urls and n in urls else {}))
                                       for n, d in sorted(files.items())]}
    if key is not None:
        m["key_id"] = key.key_id
        body = json.dumps(m, sort_keys=True, separators=(",", ":")).encode()
        m["sig"] = key.sign(hashlib.sha256(body).digest())
    return json.dumps(m).encode()


def device_env(gh):
    """Environment for a simulated device app that updates from gh: the API and the owner's key."""
    return {"IOTUTILS_TEST_API": gh.api_url, "IOTUTILS_TEST_PUBKEY": OWNER.pem}


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # clients cut off on purpose (power cuts, refused downloads): no tracebacks on stderr


class FakeGitHub:
    def __init__(self):
        self.lock = threading.Lock()
        self.releases = {}      # repo -> [release dict], newest last
        self.files = {}         # (repo, ref) -> {path: bytes}
        self.blobs = {}         # asset key -> bytes
        self.requests = []
        self.fault = None
        self.fault_name = "firmware.bin"   # the asset the fault hits (None: every asset)
        self.slow_s = 30.0
        self.trickle_s = 0.5
        self.stopping = False
        self.chunk_delay_s = 0.0            # throttle asset downloads (power-cut tests, benches)
        # API answers (JSON): None; "pause" (one 0.6 s pause after 100 bytes, honest but slow);
        # "head" / "body" (a byte every 0.3 s for `slow_s`: the head never ends / the JSON never does)
        self.api_slow = None
        self.rate_limit_remaining = None   # None: unlimited
        self.corrupt_files = set()          # repo paths served with one byte flipped (raw contents)
        self.padded_files = {}              # repo path -> bytes appended (a file larger than signed)
        self.secondary_limit = False
        self._next_id = 100
        self._servers = []

    # ---- content ----
    def _blob(self, data, name):
        with self.lock:
            self._next_id += 1
            key = str(self._next_id)
            self.blobs[key] = (name, bytes(data))
        return key, self._next_id

    def add_release(self, repo, tag, image=None, version=None, manifest_bytes=None, assets=None, body_kb=2):
        """A release with firmware.bin (image) and ota.json (derived unless manifest_bytes)."""
        files = dict(assets or {})
        if image is not None:
            files.setdefault("firmware.bin", image)
            files.setdefault("ota.json", manifest_bytes or manifest(version or tag, image))
        rel = {"tag_name": tag, "name": "Release " + tag, "draft": False, "prerelease": False,
               # a realistic amount of release-notes text: clients must not choke on it
               "body": ("Changes in %s. " % tag) * (body_kb * 64), "assets": []}
        for name, data in files.items():
            key, aid = self._blob(data, name)
            rel["assets"].append({"id": aid, "name": name, "size": len(data), "key": key,
                                  "content_type": "application/octet-stream", "state": "uploaded"})
        with self.lock:
            self.releases.setdefault(repo, []).append(rel)
        return rel

    def set_file(self, repo, ref, path, data):
        with self.lock:
            self.files.setdefault((repo, ref), {})[path] = bytes(data)

    def set_app(self, repo, ref, folder, files, version="1", key=OWNER):
        """An App OTA folder at ref: its files and the signed app.json beside them."""
        for name, data in files.items():
            self.set_file(repo, ref, folder + "/" + name, data)
        self.set_file(repo, ref, folder + "/app.json", app_manifest(files, version, key))

    def asset_link(self, data, name="firmware.bin"):
        """A URL on the asset host serving data (for ota.json "url" fields)."""
        key, _ = self._blob(data, name)
        return "%s/a/%s" % (self.asset_url, key)

    # ---- servers ----
    def start(self, tls=None, api_host="127.0.0.1", asset_host="127.0.0.1", bind="127.0.0.1"):
        """tls=(certfile, keyfile): serve both hosts over HTTPS. api_host / asset_host: the names the
        URLs use (GitHub's own, for a device whose simulator maps them to loopback). bind: the address
        served on (loopback; a HIL run on a board passes this host's LAN address)."""
        fake = self

        class Api(_Handler):
            role = "api"
            gh = fake

        class Assets(_Handler):
            role = "asset"
            gh = fake

        for cls in (Api, Assets):
            srv = _Server((bind, 0), cls)
            if tls:
                import ssl
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(tls[0], tls[1])
                srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
            threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
            self._servers.append(srv)
        scheme = "https" if tls else "http"
        self.api_url = "%s://%s:%d" % (scheme, api_host, self._servers[0].server_address[1])
        self.asset_url = "%s://%s:%d" % (scheme, asset_host, self._servers[1].server_address[1])
        return self

    def stop(self):
        self.stopping = True
        for s in self._servers:
            s.shutdown()
            s.server_close()
        self._servers = []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- JSON views ----
    def release_json(self, repo, rel):
        out = dict(rel)
        out["assets"] = []
        for a in rel["assets"]:
            out["assets"].append({
                "id": a["id"], "name": a["name"], "size": a["size"], "state": a["state"],
                "content_type": a["content_type"],
                "url": "%s/repos/%s/releases/assets/%d" % (self.api_url, repo, a["id"]),
                "browser_download_url": "%s/%s/releases/download/%s/%s" % (self.api_url, repo, rel["tag_name"],
                                                                             a["name"]),
                "uploader": {"login": "octocat", "id": 1, "type": "User", "site_admin": False}})
        return out


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    role = None
    gh = None

    def log_message(self, *a):
        pass

    def _send(self, status, body=b"", ctype="application/json", headers=()):
        slow = self.gh.api_slow if self.role == "api" else None
        if slow in ("head", "body"):
            return self._trickle(slow)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Connection", "close")
        self.end_headers()
        if slow == "pause":   # honest but slow: one pause, in the middle of the answer
            self.wfile.write(body[:100])
            self.wfile.flush()
            time.sleep(0.6)
            body = body[100:]
        self.wfile.write(body)
        self.close_connection = True

    def _trickle(self, where):
        self.close_connection = True
        out = self.wfile
        try:
            if where == "head":
                out.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            else:
                out.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{")
            t0 = time.time()
            while time.time() - t0 < self.gh.slow_s:
                out.flush()
                time.sleep(0.3)
                out.write(b"a" if where == "head" else b" ")
        except OSError:
            pass  # the client gave up

    def _json(self, obj, status=200, headers=()):
        self._send(status, json.dumps(obj).encode(), headers=headers)

    def _not_found(self):
        self._json({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}, 404)

    def do_GET(self):
        gh = self.gh
        with gh.lock:
            gh.requests.append((self.role, self.path, {k.lower(): v for k, v in self.headers.items()}))
        if self.role == "asset":
            parts = urlsplit(self.path).path.split("/")
            if len(parts) == 3 and parts[1] == "a" and parts[2] in gh.blobs:
                name, data = gh.blobs[parts[2]]
                return self._asset(data, gh.fault if gh.fault_name in (None, name) else None)
            return self._not_found()
        if gh.secondary_limit:
            return self._json({"message": "You have exceeded a secondary rate limit."}, 429,
                              [("Retry-After", "60")])
        with gh.lock:
            if gh.rate_limit_remaining is not None:
                if gh.rate_limit_remaining <= 0:
                    limited = True
                else:
                    gh.rate_limit_remaining -= 1
                    limited = False
            else:
                limited = False
        if limited:
            return self._json({"message": "API rate limit exceeded for 127.0.0.1. (Authenticated requests get "
                                          "a higher rate limit.)"}, 403,
                              [("X-RateLimit-Limit", "60"), ("X-RateLimit-Remaining", "0"),
                               ("X-RateLimit-Reset", str(int(time.time()) + 3600))])
        url = urlsplit(self.path)
        p = url.path.strip("/").split("/")
        accept = self.headers.get("Accept", "")
        if len(p) >= 4 and p[0] == "repos" and p[3] == "releases":
            return self._releases("/".join(p[1:3]), p[4:], accept)
        if len(p) >= 4 and p[0] == "repos" and p[3] == "contents":
            ref = parse_qs(url.query).get("ref", ["main"])[0]
            return self._contents("/".join(p[1:3]), unquote("/".join(p[4:])), ref, accept)   # (as GitHub decodes it)
        if len(p) == 6 and p[2] == "releases" and p[3] == "download":
            rel = self._find_release("/".join(p[:2]), p[4])
            for a in (rel or {}).get("assets", ()):
                if a["name"] == p[5]:
                    return self._redirect(a["key"])
        return self._not_found()

    def _find_release(self, repo, tag):
        rels = self.gh.releases.get(repo) or []
        if tag is None:
            rels = [r for r in rels if not r["prerelease"] and not r["draft"]]
            return rels[-1] if rels else None
        for r in rels:
            if r["tag_name"] == tag:
                return r
        return None

    def _releases(self, repo, rest, accept):
        if rest == ["latest"]:
            rel = self._find_release(repo, None)
        elif len(rest) == 2 and rest[0] == "tags":
            rel = self._find_release(repo, rest[1])
        elif len(rest) == 2 and rest[0] == "assets":
            for r in self.gh.releases.get(repo) or ():
                for a in r["assets"]:
                    if str(a["id"]) == rest[1]:
                        if "application/octet-stream" in accept:
                            return self._redirect(a["key"])
                        return self._json(self.gh.release_json(repo, {"tag_name": r["tag_name"],
                                                                      "assets": [a]})["assets"][0])
            return self._not_found()
        else:
            rel = None
        if rel is None:
            return self._not_found()
        return self._json(self.gh.release_json(repo, rel))

    def _redirect(self, key):
        # GitHub sends assets from another host (objects.githubusercontent.com): 302 across ports
        self._send(302, b"", "text/html", [("Location", "%s/a/%s?sig=abc" % (self.gh.asset_url, key))])

    def _contents(self, repo, path, ref, accept):
        files = self.gh.files.get((repo, ref))
        if files is None:
            return self._json({"message": "No commit found for the ref %s" % ref}, 404)
        if path in files:
            data = files[path]
            if path in self.gh.corrupt_files:
                data = data[:-1] + bytes([data[-1] ^ 1])
            if path in self.gh.padded_files:
                data = data + b"#" * self.gh.padded_files[path]
            if "raw" in accept:
                return self._send(200, data, "application/octet-stream")
            return self._json({"type": "file", "name": path.rsplit("/", 1)[-1], "path": path, "size": len(data),
                               "sha": git_blob_sha1(data), "encoding": "base64",
                               "content": base64.b64encode(data).decode()})
        prefix = path.rstrip("/") + "/" if path else ""
        entries = {}
        for fp, data in files.items():
            if fp.startswith(prefix):
                rest = fp[len(prefix):]
                name = rest.split("/", 1)[0]
                if "/" in rest:
                    entries[name] = {"type": "dir", "name": name, "path": prefix + name, "sha": "0" * 40, "size": 0}
                else:
                    entries[name] = {"type": "file", "name": name, "path": prefix + name, "size": len(data),
                                     "sha": git_blob_sha1(data),
                                     "download_url": None}
        if not entries:
            return self._not_found()
        return self._json(sorted(entries.values(), key=lambda e: e["name"]))

    def _asset(self, data, fault):
        if fault == "reset":
            self.close_connection = True
            return
        if fault == "corrupt":
            data = bytearray(data)
            data[len(data) // 2] ^= 0x55
            data = bytes(data)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if fault == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        elif fault == "short_length":
            self.send_header("Content-Length", str(len(data) - 1000))
        elif fault != "no_length":
            self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            if fault == "chunked":
                for i in range(0, len(data), 3000):
                    c = data[i:i + 3000]
                    self.wfile.write(b"%x\r\n" % len(c) + c + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            elif fault == "truncate":
                self.wfile.write(data[:len(data) // 2])
            elif fault == "short_length":
                self.wfile.write(data[:len(data) - 1000])
            elif fault == "pause":   # honest but slow: one pause, not on a 4 KB boundary
                self.wfile.write(data[:6000])
                self.wfile.flush()
                time.sleep(0.6)
                self.wfile.write(data[6000:])
            elif fault == "slow":
                self.wfile.write(data[:4096])
                self.wfile.flush()
                time.sleep(self.gh.slow_s)
                self.wfile.write(data[4096:])
            elif fault == "trickle":   # after the first block, a byte every trickle_s: no read ever times out
                self.wfile.write(data[:4196])
                self.wfile.flush()
                for i in range(4196, len(data)):
                    if self.gh.stopping:
                        break
                    time.sleep(self.gh.trickle_s)
                    self.wfile.write(data[i:i + 1])
                    self.wfile.flush()
            elif self.gh.chunk_delay_s:
                for i in range(0, len(data), 4096):   # throttled: ~4 KB per chunk_delay_s
                    self.wfile.write(data[i:i + 4096])
                    self.wfile.flush()
                    time.sleep(self.gh.chunk_delay_s)
            else:
                self.wfile.write(data)
        except OSError:
            pass


if __name__ == "__main__":
    import sys
    sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__file__), "..", "scripts"))
    import espimage
    gh = FakeGitHub().start()
    gh.add_release("demo/fw", "1.0.1", espimage.build_app_image("1.0.1", size=65536), version="1.0.1")
    print("api", gh.api_url, "assets", gh.asset_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        gh.stop()
