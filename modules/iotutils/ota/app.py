# App OTA: the .py files of an app folder installed beside the frozen firmware. Every file goes into
# the inactive staging folder (apps/a or apps/b; unchanged ones are copied locally) and is verified;
# then the pointer file apps/current.json switches atomically. The new app runs pending until
# confirmed; the next boot without a confirmation goes back to the previous app (app_boot()).
import hashlib
import json
import os

import iotutils.hal as hal
from iotutils._compat import exists
from iotutils.ota.client import OTAError, join_url

APP_ROOT = "apps"               # apps/a, apps/b and the pointer file apps/current.json


def update_app(ota, folder="app", progress=None, reboot=True):
    """Install the .py files of an app folder as the app; returns the new folder name.

    branch/commit channels: the files of `folder` in the repository at that ref, each checked
    against its git blob SHA-1 from the contents listing. url: channel: the URL names an app
    manifest {"files": [{"name", "sha256", "url"?, "size"?}]} (url relative to the manifest,
    default the name). Every file goes into the inactive staging folder (unchanged ones are
    copied locally) and is verified; then the pointer file switches atomically. The new app runs
    pending until confirm(); the next boot without confirm goes back to the previous app."""
    files = _app_files(ota, folder)
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
            resp = ota.http.get(url, "application/vnd.github.raw" if algo == "git" else None)
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
                    "ref": ota.ref})
    if reboot:
        hal.reset()
    return new


def _app_files(ota, folder):
    """[(name, "git"|"sha256", hex digest, url, size)] of the app to install."""
    out = []
    if ota.kind in ("branch", "commit"):
        listing = ota.source.get_json(ota.source.contents_url(folder, ota.ref))
        if not isinstance(listing, list):
            raise OTAError("%s is not a folder at %s" % (folder, ota.ref))
        for e in listing:
            if e.get("type") == "file" and not str(e.get("name")).startswith("."):
                out.append((e.get("name"), "git", e.get("sha"),
                            ota.source.contents_url(folder + "/" + str(e.get("name")), ota.ref), e.get("size") or 0))
    elif ota.kind == "url":
        man = ota.source.get_json(ota.ref, "application/json")
        for e in (man.get("files") if isinstance(man, dict) else None) or ():
            if not isinstance(e, dict):
                raise OTAError("app manifest: every file entry must be an object")
            out.append((e.get("name"), "sha256", str(e.get("sha256", "")).lower(),
                        join_url(ota.ref, e.get("url") or str(e.get("name"))), e.get("size") or 0))
    else:
        raise OTAError("App OTA needs a branch:<name>, commit:<sha> or url:<app manifest> channel")
    for name, _, digest, _, size in out:
        if not isinstance(name, str) or not name or "/" in name or name.startswith(".") or \
                not isinstance(digest, str) or len(digest) not in (40, 64) or not isinstance(size, int):
            raise OTAError("app file entry %r is not usable (name, digest, size)" % (name,))
    if not out:
        raise OTAError("the app folder is empty")
    return out



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
