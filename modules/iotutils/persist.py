# Persistent typed variables: values that survive reboots and power cuts (on NVS, via store.py).
#
#   boots = PersistentInt("boots", default=0, folder="stats")
#   boots.value += 1          # coerced to the type, on flash before the assignment returns
#
# Names and folders are NVS keys and namespaces: 1..15 characters (15 bytes of UTF-8), else ValueError. Reads are
# cached (one cache per folder/name, shared by every object with that name); a failed coercion
# is a ValueError naming the variable. Reading accepts any compatible stored type, so values
# written by a provisioning image (esp-idf-nvs-partition-gen CSV) or an older app version work.
#
# How each type is stored (NVS type / esp-idf-nvs-partition-gen CSV type; nvs_provision.py: encode()):
#   bool        U8 0/1                        (u8)      reads any int, or "true"/"on"/"1"...
#   int         I64; beyond 64 bits: STR      (i64)     reads any int type, "42", "3.9"
#   float       STR repr, e.g. "2.5"          (string)  reads ints too
#   str         STR (blob of UTF-8 beyond 1000 bytes)   (string)
#   json/list/set  STR of compact JSON        (string)  a set is stored as a JSON list
#   range       I64, or STR for float ranges  (i64)     clamped to [lo, hi]
#   rgb         U32 0xRRGGBB                  (u32)     reads "#ff8000" / "ff8000" too
#   hex         I64 (STR beyond 64 bits)      (i64)     reads "0x1f" / "1f" too
#   bytes       blob                          (binary/base64/hex2bin)   export/import only
#
# Folders: folders(), list_folder(folder) -> {name: value}, delete(name, folder),
# delete_folder(folder), factory_reset() (every folder); export_json() -> typed JSON text
# {"folder": {"name": {"type": "int", "value": 3}}} (loaded at first use: persist_io.py);
# import_json(text) and set_all([(var, value)]) store all or nothing (see the journal). Variables
# without a folder live in DEFAULT_FOLDER.
# The list, set, RGB and hex classes load at their first use (persist_kinds.py), as do the export,
# the import, set_all, encode and infer_kind, and the folders' listings (persist_io.py).
# changes() counts every write, reset and delete (a cheap "did anything change?").
import json

from iotutils import coerce, store
from iotutils._compat import allocate_lock, load

DEFAULT_FOLDER = "default"

U8 = 0x01
U32 = 0x04
I64 = 0x18
STR = 0x21
BLOB = 0x42

I64_MIN = -0x8000000000000000
I64_MAX = 0x7FFFFFFFFFFFFFFF
# Longer text is a blob. An NVS string must fit in one page (4000 bytes would fill a whole one), so
# rewriting a long one needs a page with that much room at once, and with a few KB of other values the
# store ran out of space at ~40 % use; a blob is cut to fit the pages' free room.
_STR_MAX = const(1000)

_MISSING = object()
RESET = _MISSING   # set_all(): forget the value
_cache = {}        # folder -> {name: raw stored value, or _MISSING}
_kinds = {}        # (folder, name) -> the Persistent object last made for it (its type, for export)
_gen = None
_changes = 0       # writes, resets, deletes and imports so far (changes())


_guard = allocate_lock()

# Where secrets live: whole folders, or single values. export_json() leaves them out (unless asked
# for by a tool that must have them), and the admin page neither lists nor edits them. The toolbox's
# own are here (so they stay hidden even when the module that owns them is not loaded); an app adds
# its own with secret(). The journal's folder (an import or a factory reset in progress) too.
_JOURNAL = const("iotutils")  # iotutils.journal.FOLDER (the journal's code is loaded only when used)
_SECRET_FOLDERS = ["admin", "wifi", _JOURNAL]
# (the OTA public key is no secret, but only provisioning sets which key the device trusts: it is
# kept out of the admin page's editor and its import the same way; so is MQTT's record of what this
# device announced to Home Assistant, which names this device: imported into another one, it made
# that one remove this device from HA)
_SECRET_VALUES = [("alexa", "users"), ("mqtt", "password"), ("ota", "pubkey"), ("mqtt", "announced")]


def _check(name, what, owner):
    # store's rule (NVS's key limit), said with the owner's name
    try:
        store.check_name(name, what)
    except ValueError as e:
        raise ValueError("%s: %s" % (owner, e))


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
    # The first access after a boot (or a store.use() in tests): forget what was cached, and finish
    # what a power cut left half-done (an import, a factory reset: the journal's code loads only then)
    global _gen
    if _gen != store.GENERATION:
        _cache.clear()
        if store.keys(_JOURNAL):
            from iotutils import journal
            journal.recover()
        _gen = store.GENERATION


# ---- the variables ----

class Persistent:
    """The base of every persistent variable (isinstance(v, Persistent) for any kind)."""
    kind = "?"

    def __init__(self, name, default=None, folder=DEFAULT_FOLDER):
        try:
            _check(name, "name", "")
            _check(folder, "folder", "")
        except ValueError as e:
            raise ValueError("%s %r%s" % (type(self).__name__, name, e.args[0]))
        self.name = name
        self.folder = folder
        self.default = self._coerce_default(default)
        key = (folder, name)
        with _guard:
            # the same variable made again (an admin or MQTT settings request makes its objects at
            # each call) keeps the first one registered: each new one would stay, wherever the heap
            # had room during that request, and split the free heap (a port without __dict__:
            # 0 != 1, the newest is registered as before)
            before = _kinds.get(key)
            if (before is None or type(before) is not type(self)
                    or getattr(before, "__dict__", 0) != getattr(self, "__dict__", 1)):
                _kinds[key] = self

    def _coerce_default(self, default):
        return self.coerce(self.empty() if default is None else default)

    def _fail(self, x, why):
        try:
            shown = repr(x)
        except (RuntimeError, MemoryError):   # nested deeper than repr() can go: RuntimeError was raised
            shown = "a deeply nested " + type(x).__name__
        if len(shown) > 80:   # (a message, not a copy of a 100 KB value)
            shown = shown[:77] + "..."
        return ValueError("%s %s/%s: cannot use %s (%s)" % (type(self).__name__, self.folder, self.name, shown, why))

    def coerce(self, x):
        """x converted to this variable's type (ValueError naming the variable if it cannot be)."""
        try:
            return self._coerce(x)
        except ValueError as e:
            raise self._fail(x, e.args[0] if e.args else "bad value")

    def _raw(self):
        if _gen != store.GENERATION:
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
        global _changes
        v = self.coerce(x)
        code, raw = self._encode(v)
        with _guard:
            _fresh()
            try:
                store.set(self.folder, self.name, raw, code if isinstance(raw, int) else None)
            except ValueError as e:   # the store's own limits (a value too long for NVS): said by name
                _cache_drop(self.folder, self.name)
                raise ValueError("%s %s/%s: %s" % (type(self).__name__, self.folder, self.name,
                                                   e.args[0] if e.args else "refused by the store"))
            except Exception:
                _cache_drop(self.folder, self.name)  # unknown state on flash: read it again next time
                raise
            _cache_put(self.folder, self.name, raw)
            _changes += 1
        return self._out(v)

    def reset(self):
        """Forget the stored value: .value is the default again."""
        global _changes
        with _guard:
            _fresh()
            store.delete(self.folder, self.name)
            _cache_put(self.folder, self.name, _MISSING)
            _changes += 1

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


class PersistentBool(Persistent):
    kind = "bool"

    def empty(self):
        return False

    def _coerce(self, x):
        return coerce.to_bool(x)

    def _encode(self, v):
        return U8, 1 if v else 0


class PersistentInt(Persistent):
    kind = "int"

    def empty(self):
        return 0

    def _coerce(self, x):
        return coerce.to_int(x)

    def _encode(self, v):
        if I64_MIN <= v <= I64_MAX:
            return I64, v
        return STR, str(v)


class PersistentFloat(Persistent):
    kind = "float"

    def empty(self):
        return 0.0

    def _coerce(self, x):
        return coerce.to_float(x)

    def _encode(self, v):
        return STR, repr(v)


class PersistentStr(Persistent):
    kind = "str"

    def __init__(self, name, default=None, folder=DEFAULT_FOLDER, max_length=None, choices=None):
        if max_length is not None and (not isinstance(max_length, int) or isinstance(max_length, bool)
                                       or max_length < 1):
            raise ValueError("max_length: a whole number of 1 or more expected, got %r" % (max_length,))
        if choices is not None and (isinstance(choices, str) or not choices
                                    or [c for c in choices if not isinstance(c, str)]):
            # ("abc" meant "a", "b", "c"; a number among them failed in the message's join)
            raise ValueError("choices: a list of strings expected, got %r" % (choices,))
        self.max_length = max_length
        self.choices = tuple(choices) if choices else None   # only these values (a Home Assistant select)
        Persistent.__init__(self, name, default, folder)

    def empty(self):
        return self.choices[0] if self.choices else ""

    def _coerce(self, x):
        s = coerce.to_str(x)
        if self.max_length is not None and len(s) > self.max_length:
            s = s[:self.max_length]
        if self.choices and s not in self.choices:
            raise ValueError("not one of %s" % ", ".join(self.choices))
        return s

    def _encode(self, v):
        b = v.encode()
        if len(b) > _STR_MAX or "\x00" in v:
            return BLOB, b
        return STR, v

    def spec(self):
        return {} if self.max_length is None else {"max_length": self.max_length}


class PersistentJSON(Persistent):
    kind = "json"

    def empty(self):
        return None

    def _coerce_default(self, default):
        return self.coerce(default)

    def _coerce(self, x):
        # a copy, so later changes to the caller's object do not reach the cache
        return json.loads(coerce.to_json_text(x))

    def _decode(self, raw):
        if isinstance(raw, int):
            return raw
        return coerce.parse_json(raw)

    def _encode(self, v):
        t = coerce.to_json_text(v)
        return (BLOB, t.encode()) if len(t.encode()) > _STR_MAX else (STR, t)

    def _out(self, v):
        return json.loads(coerce.to_json_text(v)) if isinstance(v, (list, dict)) else v


class PersistentRange(Persistent):
    kind = "range"

    def __init__(self, name, lo, hi, default=None, folder=DEFAULT_FOLDER):
        owner = "PersistentRange %r" % (name,)
        try:
            self._float = isinstance(lo, float) or isinstance(hi, float)
            self.lo = coerce.to_float(lo) if self._float else coerce.to_int(lo)
            self.hi = coerce.to_float(hi) if self._float else coerce.to_int(hi)
        except (ValueError, TypeError):
            raise ValueError("%s: lo and hi must be numbers, got %r..%r" % (owner, lo, hi))
        if self.lo > self.hi:
            raise ValueError("%s: lo %r is above hi %r" % (owner, lo, hi))
        if not self._float and not I64_MIN <= self.lo <= self.hi <= I64_MAX:   # (stored as a 64-bit int)
            raise ValueError("%s: lo and hi must fit 64 bits, got %r..%r" % (owner, lo, hi))
        Persistent.__init__(self, name, default, folder)

    def empty(self):
        return self.lo

    def _coerce(self, x):
        v = coerce.to_float(x) if self._float else coerce.to_int(x)
        return coerce.clamp(v, self.lo, self.hi)

    def _encode(self, v):
        if self._float:
            return STR, repr(v)
        return I64, v

    def spec(self):
        return {"lo": self.lo, "hi": self.hi}


KINDS = {"bool": PersistentBool, "int": PersistentInt, "float": PersistentFloat, "str": PersistentStr,
         "json": PersistentJSON, "range": PersistentRange}
# the other kinds' classes load at their first use (persist_kinds.py): about 2 KB of heap that a
# device whose variables are all scalars never holds
_LATER = const((("list", "PersistentList"), ("set", "PersistentSet"), ("rgb", "PersistentRGB"),
                 ("hex", "PersistentHex"), ("bytes", "_PersistentBytes")))


def kind_class(kind):
    """The class of export type `kind` ("int", "rgb", ...), or None."""
    cls = KINDS.get(kind)
    if cls is None:
        for k, name in _LATER:
            if k == kind:
                return getattr(load("iotutils.persist_kinds"), name)
    return cls


def make(kind, name, folder=DEFAULT_FOLDER, declare=True, **spec):
    """A Persistent object of export type `kind` ("int", "range" with lo/hi, ...). declare=False:
    it does not become the type of folder/name (a value checked or encoded on its own: the
    import, provisioning)."""
    cls = kind_class(kind)
    if cls is None:
        raise ValueError("%s/%s: unknown type %r" % (folder, name, kind))
    if not declare:
        with _guard:
            before = _kinds.get((folder, name))
    if cls is PersistentRange:
        if "lo" not in spec or "hi" not in spec:
            raise ValueError("%s/%s: a range needs lo and hi" % (folder, name))
        obj = cls(name, spec["lo"], spec["hi"], folder=folder)
    elif cls is PersistentStr:
        obj = cls(name, folder=folder, max_length=spec.get("max_length"))
    else:
        obj = cls(name, folder=folder)
    if not declare:
        with _guard:
            if before is None:
                _kinds.pop((folder, name), None)
            else:
                _kinds[(folder, name)] = before
    return obj


# ---- folders: deleting, factory reset (listings, export, import: persist_io.py) ----

def _ready():
    # every way into the store comes here first: after a boot, see _fresh
    if _gen != store.GENERATION:
        with _guard:
            _fresh()


def changes():
    """How many writes, resets, deletes and imports happened since boot (compare two readings)."""
    return _changes


def secret(folder, name=None):
    """Declare a folder (name None) or one value as secret: never exported or shown by the admin page."""
    _check(folder, "folder", "secret")
    with _guard:
        if name is None:
            if folder not in _SECRET_FOLDERS:
                _SECRET_FOLDERS.append(folder)
        elif (folder, name) not in _SECRET_VALUES:
            _check(name, "name", "secret")
            _SECRET_VALUES.append((folder, name))


def is_secret(folder, name=None):
    """True for a secret folder, or (with name) a value that is secret or lies in a secret folder."""
    return folder in _SECRET_FOLDERS or (name is not None and (folder, name) in _SECRET_VALUES)


def undeclare(name, folder=DEFAULT_FOLDER):
    """Forget the variable object made for folder/name (its type) in this boot: for tools like the
    admin page that make variables on request and must not keep every name ever asked for."""
    with _guard:
        _kinds.pop((folder, name), None)


def delete(name, folder=DEFAULT_FOLDER):
    """Forget one stored value. True if it was stored."""
    global _changes
    _check(name, "name", "delete")
    _check(folder, "folder", "delete")
    with _guard:
        _fresh()
        found = store.delete(folder, name)
        _cache_drop(folder, name)  # (nothing kept for a name that may never be read again)
        _changes += 1
    return found


def factory_reset():
    """Erase every folder: all variables go back to their defaults (journal.erase_all: a power
    cut part-way is finished at the next boot, a failure at the next access)."""
    global _changes, _gen
    from iotutils import journal
    with _guard:
        _fresh()
        _cache.clear()
        _changes += 1
        _gen = None   # until the erase is over (the guard is held: nothing is cached meanwhile)
        journal.erase_all()
        _gen = store.GENERATION


def write_all(plan):
    """Store plan() [(folder, name, NVS type code or None, raw value or None to forget)] all or
    nothing, also across power cuts (the journal): the import and set_all (persist_io.py) end here."""
    global _changes, _gen
    with _guard:
        _fresh()
    # (not under _guard: an import's entries are encoded by variable objects, whose making takes
    # it; the store serialises the writes, and what was cached is dropped afterwards)
    from iotutils import journal
    try:
        journal.write_all(plan)
    finally:
        with _guard:
            _cache.clear()
            _changes += 1
            if journal.pending[0]:
                _gen = None  # what a failure left of the journal goes at the next access


# what persist hands out from persist_io.py, loaded at the first use of one of them: the export,
# the import, set_all, and values encoded by their type's name (encode, infer_kind: the admin page,
# provisioning)
_IO = const(("export_json", "export_pieces", "listing_pieces", "export_entries", "export_entry", "import_json", "set_all", "encode",
             "infer_kind", "folders", "list_folder", "delete_folder", "declared", "declared_folders"))


def __getattr__(name):
    if name == "__all__":
        from iotutils._compat import public_names
        return public_names(globals(), _IO + tuple(c for _, c in _LATER if c[0] != "_"))
    if name in _IO:
        return getattr(load("iotutils.persist_io"), name)
    for kind, cls in _LATER:   # PersistentList, PersistentSet, PersistentRGB, PersistentHex
        if cls == name:
            return kind_class(kind)
    raise AttributeError(name)
