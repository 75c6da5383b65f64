# store.py's backend on stock MicroPython for ESP32: esp32.NVS (no C module needed).
#
# esp32.NVS only has i32 and blobs and cannot list keys, so every value is a blob
# <type code byte><payload> (ints: 8 bytes little endian, str: UTF-8, bytes: raw) and each
# namespace keeps its key list in the blob "\x01" of namespace "\x01idx" + the list of
# namespaces under key "\x01". Order on set: value, then index; on erase: index last, so a
# power cut leaves at worst a listed key whose value is gone (keys() checks) or an unlisted
# key that the next set lists.
import struct

_IDX_NS = "\x01idx"
_NS_KEY = "\x01"
_NOT_FOUND = (0x1102, -0x1102, 2, -2)  # ESP_ERR_NVS_NOT_FOUND, ENOENT
_I64 = 0x18
_STR = 0x21
_BLOB = 0x42


class ESP32NVS:
    def __init__(self, nvs_class=None):
        if nvs_class is None:
            import esp32  # a hardware path: only reached on an ESP32
            nvs_class = esp32.NVS
        self._cls = nvs_class
        self._open = {}

    def _h(self, ns):
        h = self._open.get(ns)
        if h is None:
            h = self._open[ns] = self._cls(ns)
        return h

    def _read(self, ns, key):
        h = self._h(ns)
        for size in (64, 4100, 20100):
            buf = bytearray(size)
            try:
                n = h.get_blob(key, buf)
            except OSError as e:
                if e.args and e.args[0] in _NOT_FOUND:
                    return None
                continue  # buffer too small
            return bytes(buf[:n])
        # larger than any value a 24 KB nvs partition can hold: say so rather than read it as missing
        raise ValueError("%s/%s: stored blob larger than 20100 bytes" % (ns, key))

    def _write(self, ns, key, blob):
        h = self._h(ns)
        h.set_blob(key, blob)
        h.commit()

    def _erase(self, ns, key):
        h = self._h(ns)
        try:
            h.erase_key(key)
        except OSError:
            return False
        h.commit()
        return True

    def _list(self, ns, key):
        raw = self._read(ns, key)
        return raw.decode().split("\n") if raw else []

    def _set_list(self, ns, key, items):
        if items:
            self._write(ns, key, "\n".join(items).encode())
        else:
            self._erase(ns, key)

    def get_typed(self, ns, key):
        raw = self._read(ns, key)
        if not raw:
            return None
        t = raw[0]
        if t == _STR:
            return t, raw[1:].decode()
        if t == _BLOB:
            return t, raw[1:]
        return t, struct.unpack("<q", raw[1:9])[0]

    def get(self, ns, key):
        r = self.get_typed(ns, key)
        return None if r is None else r[1]

    def set(self, ns, key, value, type=None):
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int):
            if not -0x8000000000000000 <= value <= 0x7FFFFFFFFFFFFFFF:
                raise ValueError("%s: int out of range" % key)
            blob = bytes((type or _I64,)) + struct.pack("<q", value)
        elif isinstance(value, str):
            blob = bytes((_STR,)) + value.encode()
        elif isinstance(value, (bytes, bytearray)):
            blob = bytes((_BLOB,)) + bytes(value)
        else:
            raise ValueError("%s: cannot store %r" % (key, value))
        if self._read(ns, key) == blob:
            return
        self._write(ns, key, blob)
        names = self._list(_IDX_NS, ns)
        if key not in names:
            names.append(key)
            self._set_list(_IDX_NS, ns, names)
        spaces = self._list(_IDX_NS, _NS_KEY)
        if ns not in spaces:
            spaces.append(ns)
            self._set_list(_IDX_NS, _NS_KEY, spaces)

    def erase(self, ns, key):
        found = self._read(ns, key) is not None
        if found:
            self._erase(ns, key)
        names = self._list(_IDX_NS, ns)
        if key in names:
            names.remove(key)
            self._set_list(_IDX_NS, ns, names)
        return found

    def keys(self, ns):
        out = []
        for k in self._list(_IDX_NS, ns):
            r = self.get_typed(ns, k)
            if r is not None:
                out.append((k, r[0]))
        return out

    def namespaces(self):
        return sorted(self._list(_IDX_NS, _NS_KEY))

    def erase_namespace(self, ns):
        for k in self._list(_IDX_NS, ns):
            self._erase(ns, k)
        self._erase(_IDX_NS, ns)
        spaces = self._list(_IDX_NS, _NS_KEY)
        if ns in spaces:
            spaces.remove(ns)
            self._set_list(_IDX_NS, _NS_KEY, spaces)

    def erase_all(self):
        for ns in self.namespaces():
            self.erase_namespace(ns)
