# App OTA: the .py files of an app folder installed beside the frozen firmware. Every file goes into
# the inactive staging folder (apps/a or apps/b; unchanged ones are copied locally) and is verified;
# then the pointer file apps/current.json switches atomically. The new app runs pending until
# confirmed; the next boot without a confirmation goes back to the previous app (app_boot()).
import hashlib
import json
import os
import sys

import iotutils.hal as hal
from iotutils._compat import exists, load
from iotutils.ota.state import OTAError

APP_ROOT = "apps"               # apps/a, apps/b and the pointer file apps/current.json
_ENOENT = const(2)


def update_app(ota, folder="app", progress=None, reboot=True, force=False, downgrade=False):
    """Install the .py files of an app folder as the app; returns the new folder name.

    The app is described by a signed app.json {"version", "files": [{"path", "size", "sha256",
    "url"?}], "key_id", "sig"} (scripts/release.py --app FOLDER --key KEY): for branch/commit
    channels `folder`/app.json in the repository at that ref, its files beside it; for a url: channel
    the URL names the app.json (file urls relative to it, default the path). Its signature must be
    the owner's, then every file goes into the inactive staging folder (unchanged ones are copied
    locally) and its sha256 is checked; then the pointer file switches atomically. The new app runs
    pending until confirm(); the next boot without confirm goes back to the previous app.
    The signed version must not be the running app's or one that rolled back here (force=True), nor
    older than the running one (downgrade=True): a hostile server may replay old signed bundles."""
    files, version = _app_files(ota, folder)
    ptr = _app_pointer(strict=True)
    if ptr.get("pending"):
        raise OTAError("the running app is not confirmed yet")
    cur = ptr.get("version")
    if not force and version == cur:
        raise OTAError("app version %s is already running (force=True installs it again)" % version)
    if not force and version in (ptr.get("bad") or ()):
        raise OTAError("app version %s rolled back on this device before (force=True to retry)" % version)
    if not downgrade and cur and load("iotutils.ota.version").older_version(version, cur):
        raise OTAError("app version %s is older than the running %s: refused (downgrade=True installs it)"
                       % (version, cur))
    new = "b" if ptr.get("active") == "a" else "a"
    stage = APP_ROOT + "/" + new
    if stage in sys.path:
        # the running app's own folder (a pointer changed since boot): never written over
        raise OTAError("%s is the running app's folder: reboot first" % stage)
    if ptr.get("previous") == new:
        # the staging folder is the previous app's: the pointer stops naming it before it empties
        # (a refused or cut update left current.json naming an empty folder as "previous")
        ptr = dict(ptr, previous=None, previous_version=None)
        _write_pointer(ptr)
    _mkdirs(stage)
    for name in os.listdir(stage):
        os.remove(stage + "/" + name)
    cur_dir = APP_ROOT + "/" + ptr["active"] if ptr.get("active") else None
    buf = bytearray(1024)
    total = sum(f[3] for f in files)
    done = 0
    try:
        for name, digest, url, size, accept in files:
            dst = stage + "/" + name
            if cur_dir and _file_digest(cur_dir + "/" + name, buf) == digest:
                _copy(cur_dir + "/" + name, dst, buf)
            else:
                _download(ota, url, accept, dst, name, size, buf)
                if _file_digest(dst, buf) != digest:
                    raise OTAError("%s: sha256 mismatch (corrupt download)" % name)
            done += size
            if progress:
                progress(done, total)
        _write_pointer({"active": new, "previous": ptr.get("active"), "pending": True, "tries": 0,
                        "ref": ota.ref, "version": version, "previous_version": cur, "bad": ptr.get("bad") or []})
    except BaseException:
        # nothing staged stays on the filesystem (a board's is small: the OTA state and the
        # pointer file need its room); the running app and its pointer are untouched
        _remove_all(stage, APP_ROOT + "/current.tmp")
        raise
    if reboot:
        hal.reset()
    return new


def _download(ota, url, accept, dst, name, size, buf):
    # at most the size the owner signed: a server sending more is stopped at once, not after it
    # filled the filesystem
    resp = ota.http.get(url, accept, True)
    got = 0
    try:
        with open(dst, "wb") as f:
            while True:
                n = resp.readinto(memoryview(buf))
                if not n:
                    break
                got += n
                if got > size:
                    raise OTAError("%s: larger than its signed size (%d bytes)" % (name, size))
                f.write(memoryview(buf)[:n])
    finally:
        resp.close()
    if got != size:
        raise OTAError("%s: %d bytes, its signed size is %d" % (name, got, size))


def _app_files(ota, folder):
    """[(name, sha256 hex, url, size, Accept)] of the app to install, from its app.json (made by
    scripts/release.py --app), which must carry the owner's signature over the file list."""
    from iotutils.auth import quote   # (file names with spaces or accents: percent-encoded in URLs)
    if ota.kind in ("branch", "commit"):
        # the folder's app.json at that ref; each file next to it
        accept = "application/vnd.github.raw"
        man = ota.source.get_json(ota.source.contents_url(quote(folder, "/") + "/app.json", ota.ref), accept)

        def url_of(e):
            return ota.source.contents_url(quote(folder + "/" + str(e.get("path") or e.get("name")), "/"), ota.ref)
    elif ota.kind == "url":
        accept = None
        man = ota.source.get_json(ota.ref, "application/json")

        def url_of(e):
            from iotutils.ota.client import join_url   # (the boot-time functions do not need the client)

            return join_url(ota.ref, e.get("url") or quote(str(e.get("path") or e.get("name")), "/"))
    else:
        raise OTAError("App OTA needs a branch:<name>, commit:<sha> or url:<app.json URL> channel")
    from iotutils import sign

    if not sign.verify_manifest(ota.owner_key(), man):
        raise OTAError("app.json is not signed with this device's key (scripts/release.py --app ... --key): refused")
    out = []
    for e in man.get("files") or ():
        if not isinstance(e, dict):
            raise OTAError("app.json: every file entry must be an object")
        out.append((e.get("path") or e.get("name"), str(e.get("sha256", "")).lower(), url_of(e),
                    e.get("size"), accept))
    for name, digest, _, size, _ in out:
        if not isinstance(name, str) or not name or "/" in name or name.startswith(".") or \
                not isinstance(digest, str) or len(digest) != 64 or not isinstance(size, int) or size < 0:
            raise OTAError("app file entry %r is not usable (name, digest, size)" % (name,))
    if not out:
        raise OTAError("the app folder is empty")
    version = man.get("version")
    if not isinstance(version, str) or not version:
        raise OTAError("app.json has no version")
    return out, version


def _remove_all(folder, *paths):
    # best effort: this runs after a failure, and a second one must not hide the first
    try:
        paths += tuple(folder + "/" + name for name in os.listdir(folder))
    except (OSError, MemoryError):
        pass
    for p in paths:
        try:
            os.remove(p)
        except (OSError, MemoryError):
            pass


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


def _file_digest(path, buf):
    """SHA-256 hex digest of a file, or None if it is not there."""
    try:
        os.stat(path)
    except OSError:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(memoryview(buf)[:n])
    return "".join("%02x" % b for b in h.digest())


def _app_pointer(strict=False):
    # strict (an update): only a missing file means "no app"; a read that failed must not make
    # the update take the running app's folder for the free one
    try:
        with open(APP_ROOT + "/current.json") as f:
            p = json.load(f)
        return p if isinstance(p, dict) else {}
    except OSError as e:
        if strict and e.args and e.args[0] != _ENOENT:
            raise OTAError("cannot read %s/current.json: %s" % (APP_ROOT, e))
        return {}
    except ValueError:
        return {}


def _write_pointer(p):
    _mkdirs(APP_ROOT)
    tmp = APP_ROOT + "/current.tmp"
    with open(tmp, "w") as f:
        json.dump(p, f)
    os.rename(tmp, APP_ROOT + "/current.json")  # atomic switch


def app_boot(main=None):
    """Call first in main.py: picks the app folder (rolling back an App OTA that never confirmed),
    puts it first on sys.path and returns it (None when no App OTA was ever installed).
    main: the app's module, imported here. A new app that fails to import then resets the device
    at once, so the next boot rolls it back; imported by main.py itself, such an app stops main.py
    and nothing resets the device (the watchdog is armed by the app's Device, which never came)."""
    path = _pick()
    if main is not None:
        try:
            __import__(main)
        except Exception as e:
            if path is None or not _app_pointer().get("pending"):
                raise
            from iotutils._compat import log, print_exception
            print_exception(e)
            log("app: %s failed to import from the new app: resetting, to roll it back" % main)
            hal.reset()
            raise
    return path


def _pick():
    p = _app_pointer()
    if not p.get("active"):
        return None
    if p.get("pending"):
        if p.get("tries", 0) >= 1:
            # booted once already and never confirmed: back to the previous app (or none), and its
            # version is not installed again unless asked (update_app(force=True))
            bad = (p.get("bad") or [])[-3:] + ([p["version"]] if p.get("version") else [])
            p = {"active": p.get("previous"), "previous": p["active"], "pending": False, "rolled_back": True,
                 "ref": p.get("ref"), "version": p.get("previous_version"), "bad": bad}
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
            "ref": p.get("ref"), "version": p.get("version")}
