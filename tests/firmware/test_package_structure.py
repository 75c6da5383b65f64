"""The toolbox's shape, checked: dependencies one way, no private names across modules, shims once,
files a newcomer can read.

A static check of modules/iotutils with Python's ast (what the firmware freezes is this package):
- layering: wifi <- portal <- admin <- device (a module never imports one above it), mqtt and
  homeassistant <- mqtt_device <- device, the web server and the hardware layer import no
  capability, and nothing but iotutils/__init__ imports device;
- no module imports a private (_name) from another one (iotutils._compat is the shared-shim module);
- the runtime shims (const, ticks, sleep_ms, print_exception, lock fallbacks) exist only in _compat,
  the crypto/escaping helpers only in auth;
- no file over 800 lines but the server's engine (the one hot file).
"""
import ast
import os

import pytest

from conftest import ROOT

PKG = os.path.join(ROOT, "modules", "iotutils")

# module -> modules it must never import (directly, at any depth of the function nesting), with why
FORBIDDEN = {
    "iotutils.wifi": ("iotutils.admin", "iotutils.device", "iotutils.server", "iotutils.web"),
    "iotutils.portal": ("iotutils.admin", "iotutils.device"),
    "iotutils.admin": ("iotutils.device", "iotutils.portal"),
    "iotutils.auth": ("iotutils.portal", "iotutils.admin", "iotutils.wifi", "iotutils.server"),
    "iotutils.persist": ("iotutils.wifi", "iotutils.portal", "iotutils.admin", "iotutils.device",
                         "iotutils.server", "iotutils.ota", "iotutils.alexa"),
    # MQTT's device side is handed the Device (and reaches Wi-Fi, OTA, Alexa through it): it imports
    # the client, homeassistant, persist and hal, never what sits above it
    "iotutils.mqtt_device": ("iotutils.device", "iotutils.admin", "iotutils.portal", "iotutils.wifi",
                             "iotutils.alexa", "iotutils.server", "iotutils.web"),
    "iotutils.mqtt_device_more": ("iotutils.device", "iotutils.admin", "iotutils.portal", "iotutils.wifi",
                                  "iotutils.alexa", "iotutils.server", "iotutils.web"),
    "iotutils.mqtt_settings": ("iotutils.device", "iotutils.admin", "iotutils.mqtt_device", "iotutils.homeassistant"),
    "iotutils.mqtt": ("iotutils.device", "iotutils.admin", "iotutils.mqtt_device", "iotutils.mqtt_settings"),
    "iotutils.mqtt.link": ("iotutils.device", "iotutils.admin", "iotutils.mqtt_device", "iotutils.mqtt_settings"),
    "iotutils.homeassistant": ("iotutils.device", "iotutils.admin", "iotutils.mqtt_device", "iotutils.mqtt"),
}
# the web server and the hardware layer are below every capability
LOWER = ("iotutils.web", "iotutils.hal", "iotutils.http", "iotutils._compat")
CAPABILITIES = ("iotutils.wifi", "iotutils.portal", "iotutils.admin", "iotutils.device", "iotutils.ota",
                "iotutils.alexa", "iotutils.persist", "iotutils.mqtt", "iotutils.homeassistant",
                "iotutils.mqtt_device", "iotutils.mqtt_settings")
# the one upward reference allowed: Wifi.start(portal=True) alone builds the default portal
# (Device passes its own builder, so a device never takes this path)
ALLOWED = {("iotutils.wifi", "iotutils.portal")}

SHIMS = ("const", "ticks_ms", "ticks_diff", "ticks_add", "sleep_ms", "print_exception", "allocate_lock")
# each written once, in its home module
AUTH_HELPERS = {"hmac_sha256": "iotutils.auth", "consteq": "iotutils.auth", "escape": "iotutils.auth",
                "pbkdf2_sha256": "iotutils.passwords", "hash_password": "iotutils.passwords",
                "verify_password": "iotutils.passwords"}
MAX_LINES = 800
HOT_FILE = "web/engine.py"


def _modules():
    out = []
    for base, dirs, files in os.walk(PKG):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(base, f)
                rel = os.path.relpath(path, os.path.dirname(PKG))[:-3].replace(os.sep, ".")
                name = rel[:-len(".__init__")] if rel.endswith(".__init__") else rel
                out.append((name, path))
    return out


MODULES = _modules()


def _imports(path):
    """[(imported module, [names]), ...] of every import statement in the file, nested ones too."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [a.name for a in node.names]))
    return found, tree


def _under(mod, prefix):
    return mod == prefix or mod.startswith(prefix + ".")


@pytest.mark.parametrize("name,path", MODULES, ids=[m[0] for m in MODULES])
def test_dependencies_point_one_way(name, path):
    imports, _ = _imports(path)
    bad = []
    for mod, names in imports:
        targets = [mod] + ["%s.%s" % (mod, n) for n in names]  # from iotutils import admin
        for t in targets:
            for owner, banned in FORBIDDEN.items():
                if _under(name, owner) and any(_under(t, b) for b in banned) and (owner, t) not in ALLOWED:
                    bad.append(t)
            if any(_under(name, low) for low in LOWER) and any(_under(t, c) for c in CAPABILITIES):
                bad.append(t)
            if _under(t, "iotutils.device") and name not in ("iotutils", "iotutils.device"):
                bad.append(t)
    assert not bad, "%s imports %s, which sits above it" % (name, sorted(set(bad)))


@pytest.mark.parametrize("name,path", MODULES, ids=[m[0] for m in MODULES])
def test_no_private_names_across_modules(name, path):
    imports, _ = _imports(path)
    private = ["%s.%s" % (mod, n) for mod, names in imports if mod.startswith("iotutils") and mod != "iotutils._compat"
               for n in names if n.startswith("_") and not n.startswith("__")]
    assert not private, "%s imports private names %s" % (name, private)


@pytest.mark.parametrize("name,path", MODULES, ids=[m[0] for m in MODULES])
def test_shims_and_auth_helpers_live_in_one_place(name, path):
    _, tree = _imports(path)
    defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    if name != "iotutils._compat":
        assert not defined & set(SHIMS), "%s defines its own %s: use iotutils._compat" % (name, defined & set(SHIMS))
        with open(path) as f:
            src = f.read()
        assert "from micropython import const" not in src, name
        assert "from time import ticks" not in src, name
    copies = {n for n in defined & set(AUTH_HELPERS) if AUTH_HELPERS[n] != name}
    assert not copies, "%s defines its own %s: use %s" % (name, copies, sorted({AUTH_HELPERS[n] for n in copies}))


@pytest.mark.parametrize("name,path", MODULES, ids=[m[0] for m in MODULES])
def test_files_stay_readable(name, path):
    with open(path) as f:
        n = sum(1 for _ in f)
    if path.replace(os.sep, "/").endswith(HOT_FILE):
        return
    assert n <= MAX_LINES, "%s has %d lines (limit %d; only %s may be longer)" % (name, n, MAX_LINES, HOT_FILE)


def test_the_checks_can_fail(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("from iotutils.server import _Conn\nimport iotutils.device\ndef const(x):\n    return x\n")
    imports, tree = _imports(str(p))
    assert ("iotutils.server", ["_Conn"]) in imports and ("iotutils.device", []) in imports
    assert "const" in {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
