# OTA's calls that reach the network or the flash: check(), update(), install_stream(), update_app(),
# owner_key(), and the automatic check and install that auto_update() schedules. These are
# iotutils.ota.OTA's methods; OTA hands them out (its __getattr__), this module is loaded by the first
# call and it goes with the rest of the network code (unload_network, after an automatic check that
# found nothing). Each function takes the OTA as `self`; the state stays on it.
import iotutils.hal as hal
from iotutils._compat import call_loaded, load, log
from iotutils.ota import NO_KEY, count_users
from iotutils.ota.state import OTAError


def owner_key(self):
    """The public key releases must be signed with (a 65-byte P-256 point), or OTAError."""
    if self._point is None:
        count_users(1)
        try:
            sign = load("iotutils.sign")
            self._point = sign.load_pubkey(self._pubkey) if self._pubkey else sign.default_pubkey()
        except ValueError as e:
            raise OTAError("the OTA public key is not usable: %s" % e)
        finally:
            count_users(-1)
        if self._point is None:
            raise OTAError(NO_KEY)
    return self._point


def check(self, wait=True):
    """Ask the source what it offers: {"current", "available", "newer"} (no download of the image).
    newer is False for the running version, for an older one (see update()), for a version that
    already rolled back here, and for a release update() refuses before its download (unsigned,
    another key's, no key here: "refused" then says why). One check runs at a time (each holds the network code's buffers):
    another one waits for it, or with wait=False returns None at once."""
    if not self._checking.acquire(1 if wait else 0):
        return None
    count_users(1)
    try:
        try:
            plan = self.source.resolve()
        finally:
            self._checking.release()
        cur = self._running_desc().get("version")
        bad = self.state.load().get("bad") or ()
        out = {"current": cur, "available": plan["version"],
               "newer": plan["version"] != cur and plan["version"] not in bad
               and not load("iotutils.ota.version").older(self, plan["version"], plan["secure_version"])}
        if out["newer"]:
            # what update() refuses before its download is no update on offer: an unsigned release,
            # one of another key, or no key here (a hostile path showed "update available" on the
            # admin page and in Home Assistant for a release that could never install)
            try:
                load("iotutils.ota.install").precheck(self.owner_key(), plan["manifest"])
            except OTAError as e:
                out["newer"] = False
                out["refused"] = str(e)
        return out
    finally:
        count_users(-1)


def update(self, progress=None, force=False, reboot=True, downgrade=False):
    """Download, verify and install the offered image into the other slot, then reboot into it.

    Only a release signed with the owner's key is installed: its manifest is checked before the
    download, the image's signature and identity after it, before the slot may boot. progress
    (bytes_done, total) is called after every block. Raises OTAError (nothing is changed: the
    running image stays the boot image) for any failure. force: install a version that rolled
    back here before. downgrade: install a version older than the running one (by secure_version,
    then version), refused otherwise. reboot=False: return the installed version instead of
    resetting."""
    # the install path (ota/install.py) is network code, as _NETWORK_MODULES says
    return _locked(self, lambda: load("iotutils.ota.install").update(self, progress, force, downgrade), reboot)


def install_stream(self, stream, total=None, progress=None, sha256=None, force=False, reboot=False,
                   sig=None, manifest=None, downgrade=False):
    """Install an image read from `stream` (readinto(buf) -> n, 0 at the end; e.g. an upload's
    request body) with the same checks as update(). The signature comes as `sig` (128 hex digits,
    from the release's ota.json) or with the whole `manifest` (the ota.json dict); sha256 (hex),
    when given, must match. Returns the installed version (reboot=False: the caller reboots)."""
    call_loaded("iotutils.ota.checks", "check_hashes", sha256, sig)
    man = dict(manifest) if manifest else {}
    if sig is not None:
        man["sig"] = sig
    if sha256 is not None:
        man["sha256"] = sha256
    return _locked(self, lambda: load("iotutils.ota.install").install(
        self, stream, total, sha256, None, progress, force, downgrade, man), reboot)


def update_app(self, folder="app", progress=None, reboot=True, force=False, downgrade=False):
    """App OTA: install the .py files of `folder` (branch/commit channels: the repository at that
    ref, each file checked against its git blob SHA-1; url: an app manifest). Returns the new app
    folder; the app runs pending until confirm() (see iotutils.ota.app). force: the running
    version again, or one that rolled back here; downgrade: an older version."""
    # under the install lock (an image and an app at once would race for the flash and the
    # pointer files); the reboot, if any, happens inside, after the pointer switched
    return _locked(self, lambda: load("iotutils.ota.app").update_app(self, folder, progress, reboot, force,
                                                                     downgrade), False)


def _locked(self, run, reboot):
    # run() under the install lock, the network code counted in use throughout (run loads it:
    # load("...") with a literal name, as scripts/build_mip.py finds a module's lazy imports)
    if self._lock is not None and not self._lock.acquire(0):
        raise OTAError("an update is already running")
    count_users(1)
    try:
        version = run()
    finally:
        count_users(-1)
        if self._lock is not None:
            self._lock.release()
    if reboot:
        hal.reset()
    return version


def _auto_check(self):
    try:
        c = check(self, wait=False)
    except Exception as e:  # a failed check waits for the next period
        log("ota: auto check failed:", e)
        c = {}
    if c is None:
        # another check runs (the admin page's): this one comes a minute later, not beside it,
        # and the network code that check uses stays
        self._auto_since = max(0, self._auto_cfg["every_h"] * 3600000 - 60000)
        return
    if c.get("newer"):
        self._auto_pending = c["available"]
        log("ota: auto: %s available, installing when idle" % self._auto_pending)
    else:   # (an install follows soon when one is pending: it needs the same code)
        self.unload_network()


def _auto_install(self):
    self._auto_pending = None
    try:
        update(self)   # reboots on success
    except Exception as e:
        log("ota: auto update failed:", e)
