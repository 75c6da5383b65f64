# Which of two versions is older (OTA.check's "newer", and the installer's refusal of a downgrade):
# cores compare as numbers, known pre-release labels in their order. Network code (iotutils.ota):
# loaded by a check or an update only.


def _version_key(v):
    """(numeric core, pre-release) of a version "1.4.0", "v2.0.1-rc2+build", "1.0.0b1", or None when
    it has no numeric core (then nothing is called older)."""
    v = (v[1:] if v[:1] in ("v", "V") else v).partition("+")[0]
    # its bytes (the version comes from the network: a str's characters taken one by one become
    # qstrs that are never freed); the digits and dots are ASCII, so i counts characters too
    b = v.encode()
    i = 0
    while i < len(b) and (48 <= b[i] <= 57 or b[i] == 46):
        i += 1
    core, pre = v[:i].rstrip("."), v[i:].lstrip("-.")
    parts = core.split(".")
    if not core or "" in parts:
        return None
    nums = [int(x) for x in parts]
    return nums + [0] * (4 - len(nums)), pre


# pre-release labels in their order (PEP 440 and the usual semver ones), the release itself (5), and
# PEP 440's post-release spellings after it ("1.0.0.post1" is newer than "1.0.0": it counted as a
# pre-release, so a replayed 1.0.0 installed over it)
_PRE_LABELS = ("a", 0, "alpha", 0, "b", 1, "beta", 1, "c", 2, "rc", 2, "pre", 2, "post", 8, "rev", 8, "r", 8)
_RELEASE = (5, 0)


def _pre_rank(p):
    """(label order, number) of a pre-release such as "rc2", "beta.3", "b1"; None for anything else
    (a branch or commit build's "dev-3f2a91c": not ordered)."""
    p = p.lower()
    b = p.encode()   # (as in _version_key)
    i = 0
    while i < len(b) and 97 <= b[i] <= 122:
        i += 1
    label, num = p[:i], p[i:].lstrip(".-")
    if num and not num.isdigit():
        return None
    for k in range(0, len(_PRE_LABELS), 2):
        if _PRE_LABELS[k] == label:
            return _PRE_LABELS[k + 1], int(num or 0)
    return None


def older_version(a, b):
    """True if version a is older than b. Cores compare as numbers; of two builds of the same core a
    pre-release is older than the release and a post-release newer, known labels are ordered (a < b <
    rc < the release < post, then by number: rc1 < rc2), and other labels (branch or commit builds)
    are not, except that they come before the release: either may follow the other."""
    ka, kb = _version_key(a), _version_key(b)
    if ka is None or kb is None:
        return False
    if ka[0] != kb[0]:
        return ka[0] < kb[0]
    pa, pb = ka[1], kb[1]
    ra = _pre_rank(pa) if pa else _RELEASE
    rb = _pre_rank(pb) if pb else _RELEASE
    if ra is None or rb is None:
        # a build with a label of no known order: older than the release of its core (and its
        # post-releases), else unordered
        return ra is None and rb is not None and rb >= _RELEASE
    return ra < rb



def older(ota, version, secure_version):
    """True if (secure_version, version) is older than the running image's: a downgrade, refused
    unless asked for. On the release channel also a version that has no numeric core while the
    running one has: a release's tag is its version, and a branch or commit build ("dev-3f2a91c",
    "nightly") offered as the latest release cannot be shown to be newer. An owner-signed old build
    of that kind, replayed by a hostile path, would otherwise install as an update. Branch and
    commit channels follow a ref, not an order: there any other build is the next one."""
    cur = ota._running_desc()
    cur_sv = cur.get("secure_version") or 0
    if secure_version != cur_sv:
        return (secure_version or 0) < cur_sv
    running = cur.get("version") or ""
    if older_version(version, running):
        return True
    return (getattr(ota, "kind", None) == "release" and _version_key(version) is None
            and _version_key(running) is not None)
