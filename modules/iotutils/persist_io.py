# The export of persistent values (iotutils.persist's export_json, export_pieces, export_entries
# and export_entry, which persist hands out from here): typed JSON text of every stored value, read
# from the store as it goes. Loaded at the first use (the admin page's settings and variables,
# provisioning tools), so a device that never exports does not hold this code.
import json

from iotutils import store
from iotutils.persist import declared, folders, is_secret

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
    out = ["{"]
    n = 1
    last = None
    for folder, name, e in export_entries(only, secrets, True):
        if folder != last:
            out.append(("" if last is None else "}, ") + json.dumps(folder) + ": {")
            last = folder
        else:
            out.append(", ")
        out.append(json.dumps(name))
        out.append(": ")
        v = e["value"]
        if isinstance(v, bytes) or isinstance(v, str) and len(v) > size:
            # a long value's JSON a slice at a time: its whole text (base64, escapes) may be more
            # than the heap has in one piece (a 15 KB text made the export fail part-way)
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
    out.append("}}" if last is not None else "}")
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
