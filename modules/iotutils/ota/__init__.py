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
#
# The package, one module per seam: client (HTTP(S) GET, OTAError), release (where an update comes
# from: ReleaseScan, Source), version (which is older), state (what survives reboots), install (what
# may be installed, and writing and verifying a slot), app (App OTA and app_boot), actions (this
# facade's checks, updates and installs, loaded with the network code). This module is the OTA
# facade apps use.

import iotutils.hal as hal
from iotutils._compat import (_thread, allocate_lock, call_loaded, handed_out, load, log, start_thread, ticks_diff,
                              ticks_ms, unload)
from iotutils.ota.state import OTAError, State  # noqa: F401  (OTAError: part of this module's API)

# The network code (HTTP client, release scanner, signature checks, the image format, the installer)
# is imported by a check or an update, once a day or less, and unloaded after an automatic check
# (unload_network): a device holds it for the seconds a check takes, not for the day between.
# No module that stays loaded imports one of these at its top (that would keep its functions alive);
# OTAError lives in ota.state, which stays, so it is one class across loads.
_NETWORK_MODULES = const(("iotutils.ota.release", "iotutils.ota.client", "iotutils.ota.roots",
                          "iotutils.ota.install", "iotutils.ota.version", "iotutils.sign", "iotutils.appimage",
                          "iotutils.ota.actions"))
# OTA's methods that live in actions.py (network code too: check, update, installs, the automatic ones)
_LATER = const(("owner_key", "check", "update", "install_stream", "update_app", "_locked", "_auto_check",
                "_auto_install"))

# OTA calls of this process using the network code right now (every OTA object of the process:
# the modules are the process's), and the lock that counts them: unload_network() waits for none
_users = 0
_users_mu = allocate_lock()


def count_users(n):
    """n more (or fewer) OTA calls use the network code now (ota/actions.py counts them)."""
    global _users
    with _users_mu:
        _users += n

_AUTO_STEP_MS = const(1000)   # how often the auto-update timer looks at the clock and the idle time

NO_KEY = ("no OTA public key on this device, so no update can be trusted: make a key pair once with "
          "`python scripts/keygen.py -o keys`, sign releases with `python scripts/release.py IMAGE -o DIR "
          "--key keys/ota.key`, and give devices keys/ota.pub: Device(ota_pubkey=...), OTA(pubkey=...), the "
          "\"ota_pubkey\" provisioning setting, or make BOARD=ESP32_GENERIC OTA_PUBKEY=keys/ota.pub")


class OTA:
    """OTA updates of the firmware image (and App OTA of .py files) from GitHub or a URL."""

    #: bytes per download/flash block (a flash sector)
    block_size = 4096
    #: seconds the whole download may take before it is abandoned
    deadline_s = 1800
    #: the chip id images must carry (0 = ESP32)
    chip_id = 0   # iotutils.appimage.CHIP_ESP32 (that module is loaded when first needed)

    def __init__(self, repo=None, channel="release", api="https://api.github.com", token=None,
                 sha256=None, cadata=None, manifest="ota.json", asset="firmware.bin", state_path=None,
                 pubkey=None, allow_http=False, sig=None):
        # the arguments checked now, not at the first check (api=None was an AttributeError there);
        # the rules' code is loaded for the call (ota/checks.py)
        kind, arg = call_loaded("iotutils.ota.checks", "check_args", repo, channel, api, token, sha256, manifest,
                                asset, state_path, pubkey, allow_http, sig)
        self.repo = repo
        self.channel = channel
        self.kind = kind
        self.ref = arg
        self.api = api.rstrip("/")
        self.sha256 = sha256
        self.manifest = manifest
        self.asset = asset
        self._net = (token, cadata, allow_http, sig)
        self._http = None      # made on first use (the network code is loaded then)
        self._own_net = True   # http and source are ours to drop (not set by the program)
        self._source = None
        # the owner's public key (PEM/DER) given by the app; None: the key frozen into the firmware or
        # provisioned in NVS (iotutils.sign.default_pubkey). Loaded when first needed.
        self._pubkey = pubkey
        self._point = None
        self.state = State(state_path)
        self._lock = allocate_lock()
        self._checking = allocate_lock()   # one check at a time (check())
        self._busy = False
        self._auto = None
        self._auto_cfg = None
        self._auto_pending = None   # a version the automatic check found, installed when idle
        self._app = None
        self._desc = None
        self._sync_boot()

    def __getattr__(self, attr):
        # checks, updates and installs (ota/actions.py): loaded by the first one, let go with the
        # rest of the network code
        return handed_out("iotutils.ota.actions", self, attr, _LATER)

    #: seconds an HTTP connect or read may block (None: the client's default, 15)
    http_timeout = None

    @property
    def http(self):
        """The HTTP(S) client (iotutils.ota.client.Http), made on first use."""
        h = self._http
        if h is None:
            h = load("iotutils.ota.client").Http(self._net[0], self._net[1], self._net[2], self.api)
            if self.http_timeout is not None:
                h.timeout = self.http_timeout
            self._http = h
        return h

    @http.setter
    def http(self, h):
        self._http = h
        self._source = None   # made again over this client
        self._own_net = False   # a program's client: the network code stays loaded

    @property
    def source(self):
        """Where updates come from (iotutils.ota.release.Source), made on first use."""
        s = self._source
        if s is None:
            source_class = load("iotutils.ota.release").Source
            s = source_class(self.http, self.repo, self.kind, self.ref, self.api, self.manifest, self.asset,
                             self.sha256, self.chip_id, self._net[3])
            self._source = s
        return s

    @source.setter
    def source(self, s):
        self._source = s
        self._own_net = False

    def unload_network(self):
        """Let the network code go until the next check or update loads it again: for a caller that
        checks on a timer and found nothing to install (the automatic check, Home Assistant's update
        entity). ~4.5 KB of heap on the host firmware, about half that on the chip, for the hours
        between. Nothing happens while an update or a check runs (the install lock, check()'s lock)
        or when the program set a client or source of its own."""
        if not self._own_net or self._lock is None or self._checking.locked() or not self._lock.acquire(0):
            return
        try:
            with _users_mu:   # (another OTA object's check or update holds them: not now)
                if _users:
                    return
                self._http = self._source = None
                unload(*_NETWORK_MODULES)
        finally:
            self._lock.release()

    # ---- running image ----
    def _running_desc(self):
        if self._desc is None:
            self._desc = hal.running_desc()
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
        # App OTA's code (ota/app.py) is let go again: a device without App OTA never needs it after
        call_loaded("iotutils.ota.app", "app_confirm")

    def app_pending(self):
        """An App OTA folder (update_app) waits for confirm(): the device's health check asks at boot."""
        return call_loaded("iotutils.ota.app", "app_status")["pending"]

    def busy(self, flag=None):
        """Declare the device busy (auto-update waits); busy() -> current flag."""
        if flag is not None:
            self._busy = bool(flag)
        return self._busy

    # ---- the owner's key ----
    # ---- check / update ----
    # ---- auto-update ----
    def auto_update(self, enable=None, every_hours=None, idle_minutes=None, app=None):
        """Check every N hours and install when idle for M minutes (no HTTP request on `app`, whose
        `last_request_ms` is a time.ticks_ms() value, and no busy(True)). Settings persist: at boot,
        auto_update(app=app) resumes them (enable=None keeps the stored on/off). Returns the settings."""
        st = call_loaded("iotutils.ota.checks", "auto_settings", self.state.load().get("auto"), enable,
                         every_hours, idle_minutes)
        self.state.update(auto=st)
        self._auto_cfg = st
        if app is not None:
            self._app = app
        if st["on"] and self._auto is None:
            self._auto = True
            self._auto_work = False
            self._auto_since = None   # ms since the last check (None: check now)
            self._auto_prev = ticks_ms()
            self._auto_pending = None
            from iotutils import tasks
            # a timer in the device's housekeeping; the check and the install (network and
            # flash, seconds long) get a short-lived thread of their own
            tasks.shared().add("ota", self._auto_step).start()
        elif not st["on"]:
            self._auto = None
        return st

    def idle_ms(self):
        """Milliseconds since the web server's last request (since boot if none)."""
        last = getattr(self._app, "last_request_ms", None)
        if last is None:
            return hal.uptime_ms()
        return ticks_diff(ticks_ms(), last)

    def _auto_step(self, now):
        # time is summed in small steps: ticks_ms() differences are only valid for a few days
        if not self._auto:
            return None
        if self._auto_since is not None:
            self._auto_since += ticks_diff(now, self._auto_prev)
        self._auto_prev = now
        if self._auto_work:
            return _AUTO_STEP_MS
        st = self._auto_cfg
        if self._auto_pending is None and (self._auto_since is None
                                           or self._auto_since >= st["every_h"] * 3600000):
            self._auto_since = 0
            self._auto_spawn(self._auto_check)
        elif self._auto_pending and not self._busy and self.idle_ms() >= st["idle_min"] * 60000:
            self._auto_spawn(self._auto_install)
        return _AUTO_STEP_MS

    def _auto_spawn(self, fn):
        self._auto_work = True

        def work():
            try:
                fn()
            finally:
                self._auto_work = False

        if _thread is None:
            work()   # a port without threads: in the caller's loop
            return
        try:
            start_thread("ota", work, (), hal.JOB_STACK)
        except (OSError, MemoryError, RuntimeError) as e:   # no room for a thread now: next step
            self._auto_work = False
            log("ota: auto: no thread now:", e)

    # ---- App OTA (Python files on the filesystem) ----

def __getattr__(name):
    if name == "__all__":
        from iotutils._compat import public_names
        return public_names(globals(), ("app_boot", "app_confirm", "app_status", "APP_ROOT", "Http", "ReleaseScan",
                                        "Source", "auto_settings"))
    if name == "auto_settings":   # (the admin page's auto-update settings: the rule OTA.auto_update() keeps)
        return load("iotutils.ota.checks").auto_settings
    # App OTA's boot-time functions, loaded on first use
    if name in ("app_boot", "app_confirm", "app_status", "APP_ROOT"):
        return getattr(load("iotutils.ota.app"), name)
    # the network code's classes, loaded when asked for (see _NETWORK_MODULES)
    if name == "Http":
        return load("iotutils.ota.client").Http
    if name in ("ReleaseScan", "Source"):
        return getattr(load("iotutils.ota.release"), name)
    raise AttributeError(name)
