# What iotutils.persist hands out from here, loaded at the first use of one of them (the admin
# page's settings and variables, MQTT's and OTA's settings, provisioning tools), so a device that
# only reads and sets its variables does not hold this code:
#   - the export of persistent values (export_json, export_pieces, export_entries, export_entry):
#     typed JSON text of every stored value, read from the store as it goes;
#   - the import (import_json) and set_all, all or nothing through the journal (persist.write_all);
#   - a value encoded by its type's name (encode, infer_kind);
#   - the folders: which hold values (folders), their values (list_folder), erasing one
#     (delete_folder), and the variables this program made (declared, declared_folders).
import json

from iotutils import persist, store
from iotutils.persist import DEFAULT_FOLDER, RESET, Persistent, is_secret, make, write_all

try:
    from binascii import b2a_base64
except ImportError:  # pragma: no cover
    b2a_base64 = None


def _export_entry(folder, name, obj, keep_bytes=False):
    # obj: the variable this program made for folder/name (its type), or None. keep_bytes: bytes stay
    # bytes (export_pieces writes their base64 a piece at a time)
    if obj is not None and obj.is_set():
        v = obj.value
        if isinstance(v, set):
            v = sorted(v) if all(isinstance(i, (int, float)) for i in v) or \
                all(isinstance(i, str) for i in v) else list(v)
        elif isinstance(v, tuple):
            v = list(v)
        elif isinstance(v, bytes) and not keep_bytes:
            v = b2a_base64(v).decode().strip()
        e = {"type": obj.kind, "value": v}
        e.update(obj.spec())
        return e
    r = store.get_typed(folder, name)
    if r is None:
        return None
    code, raw = r
    if isinstance(raw, int):
        return {"type": "int", "value": raw}
    if isinstance(raw, str):
        return {"type": "str", "value": raw}
    # text longer than a store string (persist._STR_MAX) is kept as a blob: text again, not bytes
    # of an unknown kind (the admin page then took an edit of it for base64). Text is UTF-8 with no
    # control characters but tab and line ends
    if not raw or min(raw) >= 32 or not [c for c in raw if c < 32 and c != 9 and c != 10 and c != 13]:
        try:
            return {"type": "str", "value": raw.decode()}
        except UnicodeError:
            pass
    return {"type": "bytes", "value": raw if keep_bytes else b2a_base64(raw).decode().strip()}


def export_entries(only=None, secrets=False, _keep_bytes=False):
    """(folder, name, entry) for every stored value (or those of the folders in the list `only`),
    entry being {"type": ..., "value": ...} as in export_json(); secrets left out unless
    secrets=True. Read from the store as it goes: nothing is held for the values already given."""
    every = folders()   # (after a boot, this also finishes what a power cut left half-done)
    done = []
    for folder in (every if only is None else only):
        if folder in done or not secrets and is_secret(folder):
            continue
        done.append(folder)
        kinds = declared(folder)
        for name in store.keys(folder):
            if not secrets and is_secret(folder, name):
                continue
            e = _export_entry(folder, name, kinds.get(name), _keep_bytes)
            if e is not None:
                yield folder, name, e


def export_entry(folder, name, secrets=False):
    """The entry export_json() writes for one stored value ({"type": ..., "value": ...}), or None
    (not stored, or a secret and secrets=False)."""
    folders()   # (as in export_entries)
    if not secrets and is_secret(folder, name):
        return None
    return _export_entry(folder, name, declared(folder).get(name))


def export_pieces(only=None, secrets=False, size=1024):
    """export_json()'s text in pieces of about `size` characters, made as the values are read: a
    store of any size exports with no block of the whole text's size (the admin API streams it)."""
    last = []

    def members():
        for folder, name, e in export_entries(only, secrets, True):
            if last and folder == last[0]:
                yield ", ", name, e
            else:
                yield ("}, " if last else "{") + json.dumps(folder) + ": {", name, e
                last[:] = [folder]
    for piece in _members(members(), size):
        yield piece
    yield "}}" if last else "{}"


def listing_pieces(folder, size=1024):
    """The variables of one folder as JSON text in pieces: {"folder": f, "vars": {name: entry}},
    each stored value typed as export_json() types it, then the variables the program declared
    there and never stored, with their defaults ("default": true). Made as the values are read: a
    folder of long values lists with no block of its whole text's size (the admin page's view)."""
    head = '{"folder": %s, "vars": {' % json.dumps(folder)
    stored = []

    def members():
        for _, name, e in export_entries([folder], False, True):
            yield (", " if stored else head), name, e
            stored.append(name)
        for name, obj in declared(folder).items():
            if name not in stored and not persist.is_secret(folder, name):
                v = obj.value
                e = {"type": obj.kind, "value": sorted(v) if isinstance(v, set) else v, "default": True}
                e.update(obj.spec())
                yield (", " if stored else head), name, e
                stored.append(name)
    for piece in _members(members(), size):
        yield piece
    yield "}}" if stored else head + "}}"


def _members(members, size):
    # (text before it, name, entry) -> that text, then '"name": entry', in pieces of about `size`
    # characters. A long value's JSON goes a slice at a time: its whole text (base64, escapes) may
    # be more than the heap has in one piece (a 15 KB text made the export fail part-way)
    out = []
    n = 0
    for head, name, e in members:
        out.append(head)
        out.append(json.dumps(name))
        out.append(": ")
        v = e["value"]
        if isinstance(v, bytes) or isinstance(v, str) and len(v) > size:
            yield "".join(out)
            out = []
            n = 0
            for piece in _long_entry(e, size):
                yield piece
            continue
        piece = json.dumps(e)
        out.append(piece)
        n += len(piece) + len(name) + 8
        if n >= size:
            yield "".join(out)
            out = []
            n = 0
    if out:
        yield "".join(out)


def _long_entry(e, size):
    yield "{"
    for k in e:
        if k != "value":
            yield json.dumps(k) + ": " + json.dumps(e[k]) + ", "
    yield '"value": "'
    v = e["value"]
    if isinstance(v, bytes):
        step = size // 4 * 3   # whole base64 quanta: the pieces join into the value's base64
        for i in range(0, len(v), step):
            yield b2a_base64(v[i:i + step]).decode().strip()
    else:
        for i in range(0, len(v), size):
            yield json.dumps(v[i:i + size])[1:-1]
    yield '"}'


def export_json(only=None, secrets=False):
    """Every stored value (or those of the folders in the list `only`: an empty list is none) as
    typed JSON text: {"folder": {"name": {"type": "int", "value": 3}, ...}, ...}. Secrets (see
    secret()) are left out unless secrets=True. (export_pieces() gives the same text in pieces.)"""
    return "".join(export_pieces(only, secrets))


# ---- values by their type's name ----

def encode(kind, value, name="value", folder=DEFAULT_FOLDER, **spec):
    """(NVS type code, raw int/str/bytes) a variable of this kind stores for value (ValueError if invalid).
    The provisioning script builds images with this, so they read back exactly like set() values."""
    obj = make(kind, name, folder, declare=False, **spec)
    return obj._encode(obj.coerce(value))


def infer_kind(value):
    """The type an untyped JSON value gets on import."""
    for t, kind in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"), (list, "list")):
        if isinstance(value, t):
            return kind
    return "json"


# ---- changes of many values: import, set_all ----

def import_json(text):
    """Store the values of export_json() text. Entries may also be plain values (type inferred).
    Every entry is validated first: any bad one -> ValueError naming them all, nothing written.
    Then all of them are stored, or (a full partition, a MemoryError, a power cut) none: see the
    journal below. Returns the number of values stored."""
    try:
        data = json.loads(text) if isinstance(text, (str, bytes, bytearray)) else text
    except ValueError:
        raise ValueError("import: not JSON text")
    if not isinstance(data, dict):
        raise ValueError("import: expected an object of folders")
    bad = []
    n = 0
    for folder, name, e in _entries(data, bad):
        try:
            _encode_entry(folder, name, e)
            n += 1
        except (ValueError, TypeError) as ex:
            bad.append("%s/%s: %s" % (folder, name, ex))
    if bad:
        raise ValueError("import: bad entries: " + "; ".join(bad))
    try:
        write_all(lambda: _plan(data))
    except ValueError as e:   # one the store refused (too long for it): nothing was written
        raise ValueError("import: bad entries: %s" % (e.args[0] if e.args else e))
    return n


def set_all(changes):
    """Store several variables at once, all or nothing, across power cuts too (the import's
    journal): changes is [(variable, value)], value RESET to forget one. Every value is coerced
    first (ValueError naming its variable, nothing written)."""
    plan = []
    for c in changes:
        if not isinstance(c, (tuple, list)) or len(c) != 2:
            raise ValueError("set_all: (variable, value) pairs expected, got a %s" % type(c).__name__)
        var, x = c
        if not isinstance(var, Persistent):   # ((None, 1) was an AttributeError from inside)
            raise ValueError("set_all: a persistent variable expected, got a %s" % type(var).__name__)
        code, raw = (None, None) if x is RESET else var._encode(var.coerce(x))
        plan.append((var.folder, var.name, code if isinstance(raw, int) else None, raw))
    write_all(lambda: plan)


def _plan(data):
    for folder, name, e in _entries(data):
        code, raw = _encode_entry(folder, name, e)
        yield folder, name, code, raw


def _entries(data, bad=None):
    for folder in data:
        entries = data[folder]
        if not isinstance(entries, dict):
            if bad is not None:
                bad.append("%s: not an object of names" % folder)
            continue
        for name in entries:
            yield folder, name, entries[name]


def _encode_entry(folder, name, e):
    """(NVS type code or None, raw value) an import entry stores; ValueError/TypeError if invalid.
    (A variable object is made and dropped for each: an import of many values keeps none of them.)"""
    for x, what in ((folder, "folder"), (name, "name")):
        try:
            store.check_name(x, what)
        except ValueError as ex:   # (said with the entry's name, as import_json lists them)
            raise ValueError("import %s/%s: %s" % (folder, name, ex))
    typed = isinstance(e, dict) and ("type" in e or "value" in e)
    if typed:
        if "type" not in e or "value" not in e:   # a typed entry cut short: not an object to keep
            raise ValueError("a typed entry needs both type and value")
        kind, value = e["type"], e["value"]
    else:
        if e is None:
            raise ValueError("null is no value (leave the entry out)")
        kind, value = infer_kind(e), e
    with persist._guard:
        obj = persist._kinds.get((folder, name))
    if obj is None:
        spec = {}
        if typed:
            for k in ("lo", "hi", "max_length"):
                if k in e:
                    spec[k] = e[k]
        obj = make(kind, name, folder, declare=False, **spec)
    elif typed and kind != obj.kind and kind != "int" and kind != "str":
        # The program declared it: its type decides how the value is stored, as an edit's does (a
        # value of another type was stored as that type, and the program then read its default).
        # An export types a value no variable declared by how it is stored: a number or text, which
        # the declared type may still take (its coercion decides); bytes it may not.
        raise ValueError("declared as %s, not %s" % (obj.kind, kind))
    code, raw = obj._encode(obj.coerce(value))
    return (code if isinstance(raw, int) else None), raw


# ---- folders ----

def folders():
    """Folders that hold at least one stored value."""
    persist._ready()
    return store.folders()


def declared(folder=DEFAULT_FOLDER):
    """{name: Persistent object} of the variables this program made in folder, stored or not
    (the admin page shows unstored ones with their defaults and edits them with their type)."""
    with persist._guard:
        return {k[1]: obj for k, obj in persist._kinds.items() if k[0] == folder}


def declared_folders():
    """Folders in which this program made variables, stored or not."""
    with persist._guard:
        return sorted({k[0] for k in persist._kinds})


def _value_of(folder, name):
    with persist._guard:
        obj = persist._kinds.get((folder, name))
    return obj.value if obj is not None else store.get(folder, name)


def list_folder(folder=DEFAULT_FOLDER):
    """{name: value} of everything stored in folder (typed when a variable of that name exists)."""
    persist._check(folder, "folder", "list_folder")
    persist._ready()
    return {name: _value_of(folder, name) for name in store.keys(folder)}


def delete_folder(folder):
    persist._check(folder, "folder", "delete_folder")
    with persist._guard:
        store.erase_folder(folder)
        persist._cache.clear()
        persist._changes += 1   # (under the guard)
