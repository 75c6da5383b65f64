# The less common kinds of persistent variable (list, set, RGB, hex, and bytes for export/import):
# iotutils.persist hands them out at their first use (`from iotutils.persist import PersistentRGB`,
# persist.make("rgb", ...)), so a device whose variables are all scalars never holds their classes.
# Import them from iotutils.persist, not from here.
from iotutils.coerce import clamp, hex_digits, parse_json, to_int, to_json_text
from iotutils.persist import I64_MAX, I64_MIN, BLOB, I64, STR, U32, PersistentJSON, Persistent

try:
    from binascii import a2b_base64, b2a_base64
except ImportError:  # pragma: no cover
    a2b_base64 = b2a_base64 = None


class PersistentList(PersistentJSON):
    kind = "list"

    def empty(self):
        return []

    def _coerce_default(self, default):
        return Persistent._coerce_default(self, default)

    def _coerce(self, x):
        if isinstance(x, (str, bytes, bytearray)):
            x = parse_json(x)
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
        return Persistent._coerce_default(self, default)

    def _coerce(self, x):
        if isinstance(x, (str, bytes, bytearray)):
            x = parse_json(x)
        if not isinstance(x, (list, tuple, set, frozenset)):
            raise ValueError("not a set")
        try:
            s = set(x)
        except TypeError:
            raise ValueError("set items must be hashable")
        to_json_text(list(s))
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


class PersistentRGB(Persistent):
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
            if len(s) != 6 or not hex_digits(s):
                raise ValueError("not an RGB colour")
            x = int(s, 16)
        if isinstance(x, bool):
            raise ValueError("not an RGB colour")
        if isinstance(x, int):
            if not 0 <= x <= 0xFFFFFF:
                raise ValueError("not an RGB colour")
            return ((x >> 16) & 255, (x >> 8) & 255, x & 255)
        if isinstance(x, (tuple, list)) and len(x) == 3:
            return tuple(clamp(to_int(c), 0, 255) for c in x)
        raise ValueError("not an RGB colour")

    def _encode(self, v):
        return U32, (v[0] << 16) | (v[1] << 8) | v[2]

    def hex(self):
        v = self.value
        return "#%02x%02x%02x" % v


class PersistentHex(Persistent):
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
            if not hex_digits(s):
                raise ValueError("not hexadecimal")
            return -int(s, 16) if neg else int(s, 16)
        if isinstance(x, bool) or not isinstance(x, int):
            raise ValueError("not an int or hex text")
        return x

    def _encode(self, v):
        if I64_MIN <= v <= I64_MAX:
            return I64, v
        return STR, "0x%x" % v

    def __str__(self):
        v = self.value
        return "-0x%x" % -v if v < 0 else "0x%x" % v


class _PersistentBytes(Persistent):
    # not public API: carries blobs through export/import
    kind = "bytes"

    def empty(self):
        return b""

    def _coerce(self, x):
        if isinstance(x, (bytes, bytearray)):
            return bytes(x)
        if isinstance(x, str):
            try:
                raw = a2b_base64(x)
            except (ValueError, TypeError):
                raise ValueError("not base64")
            # the decoder skips what is not base64 ("!!!!" was stored as b""): only text that
            # encodes back the same, as an export writes it, is taken
            if b2a_base64(raw).decode().strip() != x:
                raise ValueError("not base64 (as an export writes it: A-Z a-z 0-9 + / and = padding)")
            return raw
        raise ValueError("not bytes")

    def _encode(self, v):
        return BLOB, v
