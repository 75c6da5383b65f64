# The coercion rules of the persistent variables: what each type accepts and how it reads it, as
# small functions that take any value and give the typed one, or raise ValueError(reason) (the
# variable adds its name). Also what the admin page and MQTT commands go through.
import json


def to_int(x):
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
            return to_int(float(s))
        except ValueError:
            pass
    raise ValueError("not an int")


def to_float(x):
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


TRUE = ("true", "on", "yes", "1")
FALSE = ("false", "off", "no", "0")


def to_bool(x):
    if isinstance(x, (bytes, bytearray)):
        x = bytes(x).decode()
    if isinstance(x, str):
        s = x.strip().lower()
        if s in TRUE:
            return True
        if s in FALSE:
            return False
    elif isinstance(x, (bool, int, float)) and x in (0, 1):
        return bool(x)
    raise ValueError("not a bool")


def to_str(x):
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


def check_json(x, depth):
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
            check_json(i, depth + 1)
        return
    if isinstance(x, dict):
        for k in x:
            if not isinstance(k, str):
                raise ValueError("JSON object keys must be str")
            check_json(x[k], depth + 1)
        return
    raise ValueError("not JSON-encodable: %s" % type(x).__name__)


def to_json_text(x):
    check_json(x, 0)
    try:
        return json.dumps(x, separators=(",", ":"))
    except (TypeError, ValueError, OverflowError):
        raise ValueError("not JSON-encodable")


def parse_json(x):
    if isinstance(x, (bytes, bytearray)):
        x = bytes(x).decode()
    try:
        return json.loads(x)
    except (ValueError, TypeError):
        raise ValueError("not JSON text")


def hex_digits(s):
    # (strip(), not a loop over the characters: MicroPython keeps each one it takes out as a qstr)
    return len(s) > 0 and not s.strip("0123456789abcdefABCDEF")


def clamp(v, lo, hi):
    return lo if v < lo else hi if v > hi else v


def check_name(name, field):
    """A name people see (a device's, a light's, Hue's bridge's): 1..32 printable characters, Hue's
    limit for light names. ValueError naming field otherwise."""
    if not isinstance(name, str) or not 1 <= len(name) <= 32:
        raise ValueError("%s: 1..32 characters expected, got %r" % (field, name))
    b = name.encode()   # (its bytes: a str's characters one by one become qstrs never freed)
    if not name.strip() or min(b) < 32 or b"\x7f" in b:
        raise ValueError("%s: printable text expected, got %r" % (field, name))
    return name
