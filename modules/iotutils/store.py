# Typed key/value storage in folders (NVS namespaces), on the best backend this runtime has.
#
# Chosen at import, same behaviour everywhere:
#   "kvstore"   the C module's _iotutils.KVStore: ESP-IDF's own NVS on a board, the C NVS core
#               over the simulated flash file in the host firmware;
#   "esp32nvs"  stock MicroPython on an ESP32: esp32.NVS (store_esp32nvs.py encodes the types);
#   "nvs"       pure-Python NVS (nvs.py) over hal.partition("nvs"): host runtime, other boards.
# Values are int, str or bytes; folders and keys are 1..15 characters. One lock serialises every
# call (the host runtime has no GIL).
import os

from iotutils import hal
from iotutils._compat import allocate_lock

_lock = allocate_lock()

try:
    from _iotutils import KVStore as _KVStore
except (ImportError, AttributeError):
    _KVStore = None

if _KVStore is not None:
    BACKEND = "kvstore"
elif hal.PLATFORM == "esp32":
    BACKEND = "esp32nvs"
else:
    BACKEND = "nvs"

_backend = None
GENERATION = 0  # bumped by use(): caches of stored values (persist.py) compare it


def _make(kind, kv_class):
    """(backend object, its name) for the given kind (see the top of this file)."""
    if kind == "kvstore":
        if hal.PLATFORM == "esp32":
            return kv_class("nvs"), kind
        cfg = hal.config()
        path = cfg.get("flash")
        if path is not None:
            try:
                os.stat(path)
            except OSError:
                hal.partition("nvs")  # creates the flash image file
            p = [x for x in cfg["partitions"] if x[0] == "nvs"][0]
            return kv_class(path, p[3], p[4]), kind
        kind = "nvs"  # RAM flash (unit tests): the C store needs a file
    if kind == "esp32nvs":
        from iotutils.store_esp32nvs import ESP32NVS
        return ESP32NVS(), kind
    from iotutils.nvs import NVS
    return NVS(hal.partition("nvs")), "nvs"


def _open():
    global _backend, BACKEND
    if _backend is None:
        _backend, BACKEND = _make(BACKEND, _KVStore)
    return _backend


def use(backend, name=None):
    """Replace the backend (tests, benchmarks): any object with the nvs.NVS methods, or None to
    open the backend of that name (default: this runtime's) again on next use."""
    global _backend, BACKEND, GENERATION
    with _lock:
        _backend = backend
        BACKEND = name or type(backend).__name__.lower()
        GENERATION += 1


def backend():
    with _lock:
        return _open()


_PRINTABLE = const(" !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~")


def check_name(s, what):
    """1..15 printable characters (NVS's key limit), else ValueError."""
    # (no cache of the names seen: names also come from requests, and a cache holds each one where
    # the heap had room at that moment: a few dozen such strings split the free heap into small
    # blocks. strip() takes printable ASCII off in C and allocates nothing for such a name, the
    # usual one; anything else is checked as bytes. Not a look at the str's characters: taken one
    # by one they become MicroPython qstrs that are never freed, each new character for good.)
    if not isinstance(s, str) or not 0 < len(s) <= 15:
        raise ValueError("%s must be 1..15 characters (15 bytes of UTF-8): %r" % (what, s))
    if s.strip(_PRINTABLE):
        b = s.encode()
        if len(b) > 15:   # (NVS counts bytes: a character beyond ASCII takes 2 to 4 of them)
            raise ValueError("%s must be 1..15 characters (15 bytes of UTF-8): %r" % (what, s))
        if min(b) < 32 or b"\x7f" in b:   # (DEL is a control character too)
            raise ValueError("%s must be printable: %r" % (what, s))
    return s


def get(folder, key):
    """The stored int/str/bytes, or None."""
    check_name(folder, "folder")
    check_name(key, "key")
    with _lock:
        b = _backend if _backend is not None else _open()
        return b.get(folder, key)


def get_typed(folder, key):
    """(NVS type code, value) or None."""
    check_name(folder, "folder")
    check_name(key, "key")
    with _lock:
        return _open().get_typed(folder, key)


def set(folder, key, value, type=None):
    """Store value (int, str or bytes; type: an NVS type code for ints); on flash when this returns."""
    check_name(folder, "folder")
    check_name(key, "key")
    with _lock:
        _open().set(folder, key, value, type)


def delete(folder, key):
    """Forget folder/key. True if it was stored."""
    check_name(folder, "folder")
    check_name(key, "key")
    with _lock:
        return _open().erase(folder, key)


def keys(folder):
    """Names stored in folder."""
    check_name(folder, "folder")
    with _lock:
        return [k for k, t in _open().keys(folder)]


def folders():
    """Folders holding at least one value."""
    with _lock:
        b = _open()
        return [ns for ns in b.namespaces() if b.keys(ns)]


def erase_folder(folder):
    check_name(folder, "folder")
    with _lock:
        _open().erase_namespace(folder)


def erase_all():
    """Factory reset: every folder."""
    with _lock:
        _open().erase_all()
