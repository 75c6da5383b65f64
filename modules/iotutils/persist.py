# Persistent typed variables: values that survive reboots and power cuts (on NVS, via store.py).
#
#   boots = PersistentInt("boots", default=0, folder="stats")
#   boots.value += 1          # coerced to the type, on flash before the assignment returns
#
# Names and folders are NVS keys and namespaces: 1..15 characters, else ValueError. Reads are
# cached (one cache per folder/name, shared by every object with that name); a failed coercion
# is a ValueError naming the variable. Reading accepts any compatible stored type, so values
# written by a provisioning image (esp-idf-nvs-partition-gen CSV) or an older app version work.
#
# How each type is stored (NVS type / CSV type of esp-idf-nvs-partition-gen); scripts/
# nvs_provision.py uses the same table (encode()):
#   bool        U8 0/1                        (u8)      reads any int, or "true"/"on"/"1"...
#   int         I64; beyond 64 bits: STR      (i64)     reads any int type, "42", "3.9"
#   float       STR repr, e.g. "2.5"          (string)  reads ints too
#   str         STR (blob of UTF-8 beyond 3999 bytes)   (string)
#   json/list/set  STR of compact JSON        (string)  a set is stored as a JSON list
#   range       I64, or STR for float ranges  (i64)     clamped to [lo, hi]
#   rgb         U32 0xRRGGBB                  (u32)     reads "#ff8000" / "ff8000" too
#   hex         I64 (STR beyond 64 bits)      (i64)     reads "0x1f" / "1f" too
#   bytes       blob                          (binary/base64/hex2bin)   export/import only
#
# Folders: folders(), list_folder(folder) -> {name: value}, delete(name, folder),
# delete_folder(folder), factory_reset() (every folder); export_json() -> typed JSON text
# {"folder": {"name": {"type": "int", "value": 3}}} and import_json(text), which validates every
# entry first (ValueError naming the bad ones, nothing written). Variables without a folder live
# in DEFAULT_FOLDER ("default").
import json

from iotutils import store
from iotutils._compat import allocate_lock

try:
    from binascii import a2b_base64, b2a_base64
except ImportError:  # pragma: no cover
    a2b_base64 = b2a_base64 = None

DEFAULT_FOLDER = "default"

U8 = 0x01
U32 = 0x04
I64 = 0x18
STR = 0x21
BLOB = 0x42

_I64_MIN = -0x8000000000000000
_I64_MAX = 0x7FFFFFFFFFFFFFFF
_STR_MAX = 3999  # NVS strings hold 4000 bytes with the trailing NUL

_MISSING = object()
_cache = {}        # folder -> {name: raw stored value, or _MISSING}
_kinds = {}        # (folder, name) -> the Persistent object last made for it (its type, for export)
_gen = [None]


_guard = allocate_lock()
_valid = {}  # names that passed _check: an app makes its variables with a few dozen names


def _check(name, what, owner):
    if isinstance(name, str) and name in _valid:
        return
    if not isinstance(name, str) or not 1 <= len(name.encode()) <= 15:
        raise ValueError("%s: %s must be 1..15 characters: %r" % (owner, what, name))
    for c in name:
        if ord(c) < 0x20:
            raise ValueError("%s: %s must be printable: %r" % (owner, what, name))
    if len(_valid) < 64:  # bounded: names also come from requests (admin page)
        _valid[name] = True


# (Two levels of str keys: MicroPython's dict probes long chains with (folder, name) tuple keys,
# whose hashes are sums: 2.4 us per insert at 100 variables.)
def _cache_put(folder, name, raw):
    d = _cache.get(folder)
    if d is None:
        d = _cache[folder] = {}
    d[name] = raw


def _cache_drop(folder, name):
    d = _cache.get(folder)
    if d is not None:
        d.pop(name, None)


def _fresh():
    # store.use() (tests) swaps the backend: forget what we cached from the old one
    if _gen[0] != store.GENERATION:
        _cache.clear()
        _gen[0] = store.GENERATION


# ---- coercions: value -> typed value, or ValueError(reason) ----

def _to_int(x):
    if isinstance(x, bool):
        return int(x)
    if isinstance(x, int):
        return x
    if isinstance(x, float):
        if x != x or x in (float("inf"), float("-inf")):
            raise ValueError("not a finite number")
        return int(x)
    if isinstance(x, (bytes, bytearray)):
        x = bytes(x).decode()
    if isinstance(x, str):
        s = x.strip()
        try:
            return int(s)
        except ValueError:
            pass
        try:
            return _to_int(float(s))
        except ValueError:
            pass
    raise ValueError("not an int")


def _to_float(x):
    if isinstance(x, (bytes, bytearray)):
        x = bytes(x).decode()
    if isinstance(x, (bool, int, float)) or isinstance(x, str):
        try:
            f = float(x.strip() if isinstance(x, str) else x)
        except (ValueError, OverflowError):
            raise ValueError("not a number")
        if f != f or f in (float("inf"), float("-inf")):
            raise ValueError("not a finite number")
        return f
    raise ValueError("not a number")


_TRUE = ("true", "on", "yes", "1")
_FALSE = ("false", "off", "no", "0")


def _to_bool(x):
    if isinstance(x, (bytes, bytearray)):
        x = bytes(x).decode()
    if isinstance(x, str):
        s = x.strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
    elif isinstance(x, (bool, int, float)) and x in (0, 1):
        return bool(x)
    raise ValueError("not a bool")


def _to_str(x):
    if isinstance(x, str):
        return x
    if isinstance(x, (bytes, bytearray)):
        try:
            return bytes(x).decode()
        except UnicodeError:
            raise ValueError("not UTF-8 text")
    if x is None:
        raise ValueError("not a str")
    return str(x)


def _check_json(x, depth=0):
    # json.dumps differs between runtimes on odd input (MicroPython encodes a set): check first
    if depth > 20:
        raise ValueError("nested too deep")
    if x is None or isinstance(x, (bool, int, str)):
        return
    if isinstance(x, float):
        if x != x or x in (float("inf"), float("-inf")):
            raise ValueError("not a finite number")
        return
    if isinstance(x, (list, tuple)):
        for i in x:
            _check_json(i, depth + 1)
        return
    if isinstance(x, dict):
        for k in x:
            if not isinstance(k, str):
                raise ValueError("JSON object keys must be str")
            _check_json(x[k], depth + 1)
        return
    raise ValueError("not JSON-encodable: %s" % type(x).__name__)


def _to_json_text(x):
    _check_json(x)
    try:
        return json.dumps(x, separators=(",", ":"))
    except (TypeError, ValueError, OverflowError):
        raise ValueError("not JSON-encodable")


def _parse_json(x):
    if isinstance(x, (bytes, bytearray)):
        x = bytes(x).decode()
    try:
        return json.loads(x)
    except (ValueError, TypeError):
        raise ValueError("not JSON text")


def _hex_digits(s):
    for c in s:
        if c not in "0123456789abcdefABCDEF":
            return False
    return len(s) > 0


def _clamp(v, lo, hi):
    return lo if v < lo else hi if v > hi else v


# ---- the variables ----

class _Persistent:
    kind = "?"

    def __init__(self, name, default=None, folder=DEFAULT_FOLDER):
        try:
            _check(name, "name", "")
            _check(folder, "folder", "")
        except ValueError as e:
            raise ValueError("%s %r%s" % (type(self).__name__, name, e.args[0]))
        self.name = name
        self.folder = folder
        self._key = (folder, name)
        self.default = self._coerce_default(default)
        with _guard:
            _kinds[self._key] = self

    def _coerce_default(self, default):
        return self.coerce(self.empty() if default is None else default)

    def _fail(self, x, why):
        return ValueError("%s %s/%s: cannot use %r (%s)" % (type(self).__name__, self.folder, self.name, x, why))

    def coerce(self, x):
        """x converted to this variable's type (ValueError naming the variable if it cannot be)."""
        try:
            return self._coerce(x)
        except ValueError as e:
            raise self._fail(x, e.args[0] if e.args else "bad value")

    def _raw(self):
        if _gen[0] != store.GENERATION:
            _fresh()
        d = _cache.get(self.folder)
        raw = d.get(self.name) if d is not None else None
        if raw is None:
            raw = store.get(self.folder, self.name)
            if raw is None:
                raw = _MISSING
            _cache_put(self.folder, self.name, raw)
        return raw

    @property
    def value(self):
        with _guard:
            raw = self._raw()
        if raw is _MISSING:
            return self._out(self.default)
        try:
            return self._out(self._decode(raw))
        except ValueError:
            return self._out(self.default)  # stored by something else and not convertible

    @value.setter
    def value(self, x):
        self.set(x)

    def set(self, x):
        """Coerce x, write it (on flash when this returns) and return the coerced value."""
        v = self.coerce(x)
        code, raw = self._encode(v)
        with _guard:
            _fresh()
            try:
                store.set(self.folder, self.name, raw, code if isinstance(raw, int) else None)
            except Exception:
                _cache_drop(self.folder, self.name)  # unknown state on flash: read it again next time
                raise
            _cache_put(self.folder, self.name, raw)
        return self._out(v)

    def reset(self):
        """Forget the stored value: .value is the default again."""
        with _guard:
            _fresh()
            store.delete(self.folder, self.name)
            _cache_put(self.folder, self.name, _MISSING)

    def is_set(self):
        with _guard:
            return self._raw() is not _MISSING

    def _decode(self, raw):
        return self._coerce(raw)

    def _out(self, v):
        return v

    def spec(self):
        """Extra fields export_json writes for this type."""
        return {}

    def __str__(self):
        return str(self.value)

    def __repr__(self):
        return "%s(%r, folder=%r, value=%r)" % (type(self).__name__, self.name, self.folder, self.value)


class PersistentBool(_Persistent):
    kind = "bool"

    def empty(self):
        return False

    def _coerce(self, x):
        return _to_bool(x)

    def _encode(self, v):
        return U8, 1 if v else 0


class PersistentInt(_Persistent):
    kind = "int"

    def empty(self):
        return 0

    def _coerce(self, x):
        return _to_int(x)

    def _encode(self, v):
        if _I64_MIN <= v <= _I64_MAX:
            return I64, v
        return STR, str(v)


class PersistentFloat(_Persistent):
    kind = "float"

    def empty(self):
        return 0.0

    def _coerce(self, x):
        return _to_float(x)

    def _encode(self, v):
        return STR, repr(v)


class PersistentStr(_Persistent):
    kind = "str"

    def __init__(self, name, default=None, folder=DEFAULT_FOLDER, max_length=None):
        self.max_length = max_length
        _Persistent.__init__(self, name, default, folder)

    def empty(self):
        return ""

    def _coerce(self, x):
        s = _to_str(x)
        if self.max_length is not None and len(s) > self.max_length:
            s = s[:self.max_length]
        return s

    def _encode(self, v):
        b = v.encode()
        if len(b) > _STR_MAX or "\x00" in v:
            return BLOB, b
        return STR, v

    def spec(self):
        return {} if self.max_length is None else {"max_length": self.max_length}


class PersistentJSON(_Persistent):
    kind = "json"

    def empty(self):
        return None

    def _coerce_default(self, default):
        return self.coerce(default)

    def _coerce(self, x):
        # a copy, so later changes to the caller's object do not reach the cache
        return json.loads(_to_json_text(x))

    def _decode(self, raw):
        if isinstance(raw, int):
            return raw
        return _parse_json(raw)

    def _encode(self, v):
        t = _to_json_text(v)
        return (BLOB, t.encode()) if len(t.encode()) > _STR_MAX else (STR, t)

    def _out(self, v):
        return json.loads(_to_json_text(v)) if isinstance(v, (list, dict)) else v


class PersistentList(PersistentJSON):
    kind = "list"

    def empty(self):
        return []

    def _coerce_default(self, default):
        return _Persistent._coerce_default(self, default)

    def _coerce(self, x):
        if isinstance(x, (str, bytes, bytearray)):
            x = _parse_json(x)
        if isinstance(x, (tuple, set, frozenset)):
            x = list(x)
        if not isinstance(x, list):
            raise ValueError("not a list")
        return PersistentJSON._coerce(self, x)

    def _decode(self, raw):
        return self._coerce(raw)


class PersistentSet(PersistentJSON):
    kind = "set"

    def empty(self):
        return set()

    def _coerce_default(self, default):
        return _Persistent._coerce_default(self, default)

    def _coerce(self, x):
        if isinstance(x, (str, bytes, bytearray)):
            x = _parse_json(x)
        if not isinstance(x, (list, tuple, set, frozenset)):
            raise ValueError("not a set")
        try:
            s = set(x)
        except TypeError:
            raise ValueError("set items must be hashable")
        _to_json_text(list(s))
        return s

    def _decode(self, raw):
        return self._coerce(raw)

    def _encode(self, v):
        items = list(v)
        try:
            items.sort()
        except TypeError:
            pass
        return PersistentJSON._encode(self, items)

    def _out(self, v):
        return set(v)


class PersistentRange(_Persistent):
    kind = "range"

    def __init__(self, name, lo, hi, default=None, folder=DEFAULT_FOLDER):
        owner = "PersistentRange %r" % (name,)
        try:
            if lo > hi:
                raise ValueError("lo > hi")
            self._float = isinstance(lo, float) or isinstance(hi, float)
            self.lo = _to_float(lo) if self._float else _to_int(lo)
            self.hi = _to_float(hi) if self._float else _to_int(hi)
        except (ValueError, TypeError) as e:
            raise ValueError("%s: bad bounds %r..%r (%s)" % (owner, lo, hi, e))
        _Persistent.__init__(self, name, default, folder)

    def empty(self):
        return self.lo

    def _coerce(self, x):
        v = _to_float(x) if self._float else _to_int(x)
        return _clamp(v, self.lo, self.hi)

    def _encode(self, v):
        if self._float:
            return STR, repr(v)
        return I64, v

    def spec(self):
        return {"lo": self.lo, "hi": self.hi}


class PersistentRGB(_Persistent):
    kind = "rgb"

    def empty(self):
        return (0, 0, 0)

    def _coerce(self, x):
        if isinstance(x, (bytes, bytearray)):
            x = bytes(x).decode()
        if isinstance(x, str):
            s = x.strip()
            if s.startswith("#"):
                s = s[1:]
            elif s[:2] in ("0x", "0X"):
                s = s[2:]
            if len(s) != 6 or not _hex_digits(s):
                raise ValueError("not an RGB colour")
            x = int(s, 16)
        if isinstance(x, bool):
            raise ValueError("not an RGB colour")
        if isinstance(x, int):
            if not 0 <= x <= 0xFFFFFF:
                raise ValueError("not an RGB colour")
            return ((x >> 16) & 255, (x >> 8) & 255, x & 255)
        if isinstance(x, (tuple, list)) and len(x) == 3:
            return tuple(_clamp(_to_int(c), 0, 255) for c in x)
        raise ValueError("not an RGB colour")

    def _encode(self, v):
        return U32, (v[0] << 16) | (v[1] << 8) | v[2]

    def hex(self):
        v = self.value
        return "#%02x%02x%02x" % v


class PersistentHex(_Persistent):
    kind = "hex"

    def empty(self):
        return 0

    def _coerce(self, x):
        if isinstance(x, (bytes, bytearray)):
            x = bytes(x).decode()
        if isinstance(x, str):
            s = x.strip().lower()
            neg = s.startswith("-")
            if neg:
                s = s[1:]
            if s.startswith("0x"):
                s = s[2:]
            if not _hex_digits(s):
                raise ValueError("not hexadecimal")
            return -int(s, 16) if neg else int(s, 16)
        if isinstance(x, bool) or not isinstance(x, int):
            raise ValueError("not an int or hex text")
        return x

    def _encode(self, v):
        if _I64_MIN <= v <= _I64_MAX:
            return I64, v
        return STR, "0x%x" % v

    def __str__(self):
        v = self.value
        return "-0x%x" % -v if v < 0 else "0x%x" % v


class _PersistentBytes(_Persistent):
    # not public API: carries blobs through export/import
    kind = "bytes"

    def empty(self):
        return b""

    def _coerce(self, x):
        if isinstance(x, (bytes, bytearray)):
            return bytes(x)
        if isinstance(x, str):
            try:
                return a2b_base64(x)
            except (ValueError, TypeError):
                raise ValueError("not base64")
        raise ValueError("not bytes")

    def _encode(self, v):
        return BLOB, v


KINDS = {"bool": PersistentBool, "int": PersistentInt, "float": PersistentFloat, "str": PersistentStr,
         "json": PersistentJSON, "list": PersistentList, "set": PersistentSet, "range": PersistentRange,
         "rgb": PersistentRGB, "hex": PersistentHex, "bytes": _PersistentBytes}


def make(kind, name, folder=DEFAULT_FOLDER, **spec):
    """A Persistent object of export type `kind` ("int", "range" with lo/hi, ...)."""
    cls = KINDS.get(kind)
    if cls is None:
        raise ValueError("%s/%s: unknown type %r" % (folder, name, kind))
    if cls is PersistentRange:
        if "lo" not in spec or "hi" not in spec:
            raise ValueError("%s/%s: a range needs lo and hi" % (folder, name))
        return cls(name, spec["lo"], spec["hi"], folder=folder)
    if cls is PersistentStr:
        return cls(name, folder=folder, max_length=spec.get("max_length"))
    return cls(name, folder=folder)


def encode(kind, value, name="value", folder=DEFAULT_FOLDER, **spec):
    """(NVS type code, raw int/str/bytes) a variable of this kind stores for value (ValueError if invalid).
    The provisioning script builds images with this, so they read back exactly like set() values."""
    obj = _detached(kind, name, folder, spec)
    return obj._encode(obj.coerce(value))


def _detached(kind, name, folder, spec):
    # a Persistent object that does not register itself as the type of folder/name
    with _guard:
        before = _kinds.get((folder, name))
    obj = make(kind, name, folder, **spec)
    with _guard:
        if before is None:
            _kinds.pop((folder, name), None)
        else:
            _kinds[(folder, name)] = before
    return obj


def infer_kind(value):
    """The type an untyped JSON value gets on import."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "list"
    return "json"


# ---- folders: listing, deleting, factory reset, export/import ----

def folders():
    """Folders that hold at least one stored value."""
    return store.folders()


def declared(folder=DEFAULT_FOLDER):
    """{name: Persistent object} of the variables this program made in folder, stored or not
    (the admin page shows unstored ones with their defaults and edits them with their type)."""
    with _guard:
        return {k[1]: obj for k, obj in _kinds.items() if k[0] == folder}


def undeclare(name, folder=DEFAULT_FOLDER):
    """Forget the variable object made for folder/name (its type) in this boot: for tools like the
    admin page that make variables on request and must not keep every name ever asked for."""
    with _guard:
        _kinds.pop((folder, name), None)


def declared_folders():
    """Folders in which this program made variables, stored or not."""
    with _guard:
        return sorted({k[0] for k in _kinds})


def _value_of(folder, name):
    with _guard:
        obj = _kinds.get((folder, name))
    if obj is not None:
        return obj.value
    raw = store.get(folder, name)
    return raw


def list_folder(folder=DEFAULT_FOLDER):
    """{name: value} of everything stored in folder (typed when a variable of that name exists)."""
    _check(folder, "folder", "list_folder")
    out = {}
    for name in store.keys(folder):
        out[name] = _value_of(folder, name)
    return out


def delete(name, folder=DEFAULT_FOLDER):
    """Forget one stored value. True if it was stored."""
    _check(name, "name", "delete")
    _check(folder, "folder", "delete")
    with _guard:
        _fresh()
        found = store.delete(folder, name)
        _cache_drop(folder, name)  # (nothing kept for a name that may never be read again)
    return found


def delete_folder(folder):
    _check(folder, "folder", "delete_folder")
    with _guard:
        store.erase_folder(folder)
        _cache.clear()


def factory_reset():
    """Erase every folder: all variables go back to their defaults."""
    with _guard:
        store.erase_all()
        _cache.clear()


def _export_entry(folder, name):
    with _guard:
        obj = _kinds.get((folder, name))
    if obj is not None and obj.is_set():
        v = obj.value
        if isinstance(v, set):
            v = sorted(v) if all(isinstance(i, (int, float)) for i in v) or \
                all(isinstance(i, str) for i in v) else list(v)
        elif isinstance(v, tuple):
            v = list(v)
        elif isinstance(v, bytes):
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
    return {"type": "bytes", "value": b2a_base64(raw).decode().strip()}


def export_json(only=None):
    """Every stored value (or those of the folders in `only`) as typed JSON text:
    {"folder": {"name": {"type": "int", "value": 3}, ...}, ...}"""
    out = {}
    for folder in (only or folders()):
        d = {}
        for name in store.keys(folder):
            e = _export_entry(folder, name)
            if e is not None:
                d[name] = e
        if d:
            out[folder] = d
    return json.dumps(out)


def import_json(text):
    """Store the values of export_json() text. Entries may also be plain values (type inferred).
    Every entry is validated first: any bad one -> ValueError naming them all, nothing written.
    Returns the number of values stored."""
    try:
        data = json.loads(text) if isinstance(text, (str, bytes, bytearray)) else text
    except ValueError:
        raise ValueError("import: not JSON text")
    if not isinstance(data, dict):
        raise ValueError("import: expected an object of folders")
    todo = []
    bad = []
    for folder in data:
        entries = data[folder]
        if not isinstance(entries, dict):
            bad.append("%s: not an object of names" % folder)
            continue
        for name in entries:
            e = entries[name]
            try:
                _check(folder, "folder", "import %s/%s" % (folder, name))
                _check(name, "name", "import %s/%s" % (folder, name))
                if isinstance(e, dict) and "type" in e and "value" in e:
                    kind, value = e["type"], e["value"]
                    spec = {}
                    for k in ("lo", "hi", "max_length"):
                        if k in e:
                            spec[k] = e[k]
                else:
                    kind, value, spec = infer_kind(e), e, {}
                obj = _detached(kind, name, folder, spec)
                todo.append((obj, obj.coerce(value)))
            except (ValueError, TypeError) as ex:
                bad.append("%s/%s: %s" % (folder, name, ex))
    if bad:
        raise ValueError("import: bad entries: " + "; ".join(bad))
    for obj, v in todo:
        obj.set(v)
        with _guard:
            if obj._key not in _kinds:
                _kinds[obj._key] = obj  # so a later export keeps the imported type
    return len(todo)
