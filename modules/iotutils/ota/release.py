# Where an update comes from: a GitHub release (latest or a tag), a branch or commit of the repository
# (its ota.json through the contents API), or any URL; turned into a plan {"version", "size", "sha256",
# "url", "accept", "project"} for the installer. A release's JSON (often 10+ KB of notes) is scanned as
# it streams in; only the tag and two asset URLs are kept.
import binascii
import json

import iotutils.appimage as appimage
from iotutils.ota.client import join_url
from iotutils.ota.state import OTAError

_MAX_JSON = const(65536)
_MAX_RELEASE = const(1048576)   # a release's JSON: notes up to GitHub's 125,000 characters, many assets
_MAX_DEPTH = const(32)          # a release object is four levels deep

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
            elif (c == 0x7B or c == 0x5B) and len(self._stack) >= _MAX_DEPTH:
                raise OTAError("bad JSON: nested deeper than %d levels" % _MAX_DEPTH)
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
                    ch = _utf8(int(bytes(e[1:5]), 16))
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



def _utf8(cp):
    # a \uXXXX escape's UTF-8 bytes, made without chr(): MicroPython keeps each character chr() makes
    # as a qstr for good, and a release's notes come from the network (a surrogate half comes out as
    # MicroPython's chr() would make it)
    if cp < 0x80:
        return bytes((cp,))
    if cp < 0x800:
        return bytes((0xC0 | cp >> 6, 0x80 | cp & 0x3F))
    return bytes((0xE0 | cp >> 12, 0x80 | cp >> 6 & 0x3F, 0x80 | cp & 0x3F))


def _check_depth(raw, url):
    # MicroPython's json.loads recurses once per level: text nested thousands deep (64 KB of "[")
    # exhausts the heap, a MemoryError where the answer is "bad JSON". Strings are skipped.
    depth = 0
    in_str = esc = False
    for c in raw:
        if in_str:
            if esc:
                esc = False
            elif c == 92:    # backslash
                esc = True
            elif c == 34:
                in_str = False
        elif c == 34:
            in_str = True
        elif c == 91 or c == 123:
            depth += 1
            if depth > _MAX_DEPTH:
                raise OTAError("bad JSON from %s: nested deeper than %d levels" % (url, _MAX_DEPTH))
        elif c == 93 or c == 125:
            depth -= 1


class Source:
    """The update source of one OTA: repo "owner/name", channel kind and ref, the GitHub API base."""

    def __init__(self, http, repo, kind, ref, api, manifest, asset, sha256, chip_id, sig=None):
        self.http = http
        self.repo = repo
        self.kind = kind
        self.ref = ref
        self.api = api
        self.manifest = manifest
        self.asset = asset
        self.sha256 = sha256
        self.chip_id = chip_id
        self.sig = sig  # the signature of a url:<image> channel (which has no ota.json to carry one)

    def contents_url(self, path, ref):
        return "%s/repos/%s/contents/%s?ref=%s" % (self.api, self.repo, path, ref)

    def get_json(self, url, accept="application/vnd.github+json"):
        resp = self.http.get(url, accept, True)
        try:
            raw = resp.read_all(_MAX_JSON)
        finally:
            resp.close()
        _check_depth(raw, url)
        try:
            return json.loads(raw)
        except ValueError:
            raise OTAError("bad JSON from %s" % url)
        except MemoryError:
            raise OTAError("JSON from %s does not fit in memory" % url)

    def _release(self):
        if self.ref:
            url = "%s/repos/%s/releases/tags/%s" % (self.api, self.repo, self.ref)
        else:
            url = "%s/repos/%s/releases/latest" % (self.api, self.repo)
        # a release's JSON carries its notes and uploader objects (often 10+ KB): scan it as it
        # streams in and keep only the tag and the two asset URLs
        scan = ReleaseScan((self.manifest, self.asset))
        resp = self.http.get(url, "application/vnd.github+json", True)
        try:
            buf = bytearray(512)
            mv = memoryview(buf)
            total = 0
            while True:
                n = resp.readinto(mv)
                if not n:
                    break
                total += n
                if total > _MAX_RELEASE:
                    raise OTAError("release JSON from %s larger than %d bytes" % (url, _MAX_RELEASE))
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
        return self.get_json(url, accept)

    def _plan(self, man, where):
        if not isinstance(man, dict):
            raise OTAError("%s: ota.json is not an object" % where)
        try:
            v, size, sha = man["version"], man["size"], man["sha256"].lower()
        except (KeyError, TypeError, ValueError, AttributeError):
            raise OTAError("%s: ota.json needs version, size and sha256" % where)
        if not isinstance(size, int) or isinstance(size, bool):   # (1e999 raised OverflowError)
            raise OTAError("%s: ota.json's size is not a whole number" % where)
        url = man.get("url")
        if url is not None and not isinstance(url, str):   # (unsigned: 1 raised AttributeError)
            raise OTAError("%s: ota.json's url is not text" % where)
        try:
            binascii.unhexlify(sha)
        except ValueError:
            sha = ""
        if not isinstance(v, str) or not v or len(sha) != 64 or size <= 0:
            raise OTAError("%s: ota.json has a bad version, size or sha256" % where)
        sv = man.get("secure_version", 0)
        if not isinstance(sv, int) or sv < 0:
            raise OTAError("%s: ota.json has a bad secure_version" % where)
        # the manifest goes along: its signature is checked before and after the download
        return {"version": v, "size": size, "sha256": sha, "url": url, "accept": None,
                "project": man.get("project"), "secure_version": sv, "manifest": man}

    def _ref_plan(self):
        man = self.get_json(self.contents_url(self.manifest, self.ref), "application/vnd.github.raw")
        plan = self._plan(man, "%s %s" % (self.kind, self.ref))
        url = plan["url"]
        if not url:
            raise OTAError("%s %s: ota.json has no url" % (self.kind, self.ref))
        if not (url.startswith("http://") or url.startswith("https://")):
            plan["url"] = self.contents_url(url.lstrip("/"), self.ref)
            plan["accept"] = "application/vnd.github.raw"
        return plan

    def _url_plan(self):
        url = self.ref
        if not self.sha256:
            # no sha256 given: the URL names an ota.json manifest
            plan = self._plan(self.get_json(url, "application/json"), url)
            if not plan["url"]:
                raise OTAError("%s has no url" % url)
            plan["url"] = join_url(url, plan["url"])
            return plan
        # the image itself: its version is in the app descriptor, read from the first blocks
        if len(self.sha256) != 64:
            raise OTAError("sha256= must be 64 hex digits")
        resp = self.http.get(url, None, True)   # only its first blocks are read here
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
        sha = self.sha256.lower()
        # no manifest: the signature comes from OTA(sig=...) and signs this image's SHA-256
        man = {"sha256": sha, "version": v.desc["version"], "secure_version": v.desc["secure_version"]}
        if self.sig:
            man["sig"] = self.sig
        return {"version": v.desc["version"], "size": size, "sha256": sha, "url": url, "accept": None,
                "project": None, "secure_version": v.desc["secure_version"], "manifest": man}

    def resolve(self):
        if self.kind == "release":
            return self._release()
        if self.kind == "url":
            return self._url_plan()
        return self._ref_plan()
