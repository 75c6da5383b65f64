# OTA's rules for its arguments (repository, channel, API URL, strings, hashes) and for the
# auto-update settings: checked when an OTA is made, an image is given to install_stream() or
# auto_update() is called, a few times a boot. ota/__init__.py loads this module for each call
# (call_loaded), so none of it stays in the heap.


def check_args(repo, channel, api, token, sha256, manifest, asset, state_path, pubkey, allow_http, sig):
    """OTA()'s arguments, each checked (ValueError naming the field): the channel's (kind, argument)."""
    if repo is not None and not _repo_ok(repo):
        raise ValueError("repo: must be 'owner/name' (letters, digits, '-', '_', '.'), got %r" % (repo,))
    kind, _, arg = channel.partition(":") if isinstance(channel, str) else ("", "", "")
    if kind not in ("release", "branch", "commit", "url") or (kind != "release" and not arg) \
            or not _ref_ok(kind, arg):
        raise ValueError("channel: must be 'release', 'release:<tag>', 'branch:<name>', 'commit:<sha>' "
                         "or 'url:<https URL>', got %r" % (channel,))
    if kind != "url" and repo is None:
        raise ValueError("repo is required for channel %r" % channel)
    # the rest checked here too, not at the first check (api=None was an AttributeError there)
    if not isinstance(api, str) or not (api.startswith("https://") or api.startswith("http://")) \
            or min(api.encode()) <= 0x20 or "\x7f" in api:
        raise ValueError("api: an https:// URL expected, got %r" % (api,))
    for field, v, none_ok in (("token", token, True), ("manifest", manifest, False), ("asset", asset, False),
                              ("state_path", state_path, True)):
        if not (v is None and none_ok) and (not isinstance(v, str) or not v or "\x00" in v):
            raise ValueError("%s: a string expected, got %r" % (field, v))
    check_hashes(sha256, sig)
    if pubkey is not None and not isinstance(pubkey, (str, bytes)):
        raise ValueError("pubkey: a PEM text or DER bytes expected, got %s" % type(pubkey).__name__)
    if not isinstance(allow_http, bool):
        raise ValueError("allow_http: True or False expected, got %r" % (allow_http,))
    return kind, arg


def check_device_args(repo, channel, api, pubkey, allow_http):
    """Device()'s OTA arguments as the program gave them, by check_args' rules: a mistake there is the
    program's, a ValueError naming the argument ("ota_repo: ..."). A source stored on the device that
    is not usable is logged instead (Device._make_ota), so the device boots without OTA."""
    try:
        # (a repo may also come later, from the admin page: none given is no mistake; no api is GitHub's)
        check_args(repo or "owner/name", channel, api or "https://api.github.com", None, None, "ota.json",
                   "firmware.bin", None, pubkey, allow_http, None)
    except ValueError as e:
        raise ValueError("ota_" + str(e))


def _name_ok(s, extra):
    # GitHub's characters for owners, repositories, tags and branches (a subset: nothing that could
    # be markup, a query or a path trick in the URLs built from them)
    if not s or len(s) > 100 or s[0] in ".-" or ".." in s:
        return False
    for c in s:
        if not ("a" <= c <= "z" or "A" <= c <= "Z" or "0" <= c <= "9" or c in "-_." or c in extra):
            return False
    return True


def _repo_ok(repo):
    return isinstance(repo, str) and repo.count("/") == 1 and all(_name_ok(p, "") for p in repo.split("/"))


def _ref_ok(kind, arg):
    if kind == "url":
        return (arg.startswith("https://") or arg.startswith("http://")) and " " not in arg and "<" not in arg \
            and '"' not in arg and len(arg) <= 300
    if kind == "commit":
        return 7 <= len(arg) <= 40 and not arg.strip("0123456789abcdef")
    return not arg or _name_ok(arg, "/+")


def check_hashes(sha256, sig):
    """ValueError naming the field for an image's sha256 (64 hex digits) or signature (128) given
    otherwise (OTA() and install_stream() take both)."""
    for field, v, n in (("sha256", sha256, 64), ("sig", sig, 128)):
        if v is not None and not (isinstance(v, str) and len(v) == n and not v.strip("0123456789abcdefABCDEF")):
            raise ValueError("%s: must be %d hex digits" % (field, n))


def auto_settings(cur, enable=None, every_hours=None, idle_minutes=None):
    """The auto-update settings {"on", "every_h", "idle_min"} that OTA.auto_update() stores, from the
    current ones (None: the defaults) and the changes; ValueError naming the field."""
    for name, v in (("every_hours", every_hours), ("idle_minutes", idle_minutes)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ValueError("%s: a number expected, got %r" % (name, v))
    st = {"on": False, "every_h": 24, "idle_min": 10}
    if isinstance(cur, dict):   # (what a store edited by hand holds may be anything)
        for k in st:
            if type(cur.get(k)) is type(st[k]) or k != "on" and type(cur.get(k)) is float:
                st[k] = cur[k]
    if enable is not None:
        if not isinstance(enable, bool):   # ("no" and "false" turned it on, and that was stored)
            raise ValueError("enable: True or False expected, got %r" % (enable,))
        st["on"] = enable
    if every_hours is not None:
        st["every_h"] = float(every_hours)
    if idle_minutes is not None:
        st["idle_min"] = float(idle_minutes)
    if not 0 < st["every_h"] <= 24 * 365 or not 0 <= st["idle_min"] <= 24 * 60:
        raise ValueError("every_hours must be in (0, 8760] and idle_minutes in [0, 1440]")
    return st
