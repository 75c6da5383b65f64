# JSON request bodies that need more than json.loads (iotutils.web.request's Request.json): the strict
# check (JSONCheck, in Python for runtimes without the C module's), and on MicroPython a large body
# parsed while it streams in, through a small buffer. Loaded at the first body that needs one of them.
import json

from iotutils.web.request import JSON_TOO_BIG, json_check, json_error
from iotutils.web.response import HTTPError


# what the checker expects next (the same states as c_modules/iotutils/jsoncheck.c)
_VALUE = const(0)           # a value: the text's start, after ':', after ',' in an array
_VALUE_OR_END = const(1)    # after '['
_KEY_OR_END = const(2)      # after '{'
_KEY = const(3)             # after ',' in an object
_COLON = const(4)
_AFTER = const(5)           # after a value: ',' or a closing bracket (whitespace only at depth 0)
_STRING = const(6)
_ESCAPE = const(7)
_HEX = const(8)             # in \uXXXX (sub: digits left)
_NUMBER = const(9)          # sub: what was read last, one of _N_*
_LITERAL = const(10)        # sub: index of the next character in _LITERALS
_N_MINUS = const(0)
_N_ZERO = const(1)
_N_INT = const(2)
_N_DOT = const(3)
_N_FRAC = const(4)
_N_E = const(5)
_N_E_SIGN = const(6)
_N_EXP = const(7)
_LITERALS = b"true\0false\0null\0"
_SPACE = b" \t\n\r"
_HEXDIGITS = b"0123456789abcdefABCDEF"
_ESCAPES = b'"\\/bfnrt'


class JSONCheck:
    """Strict JSON (RFC 8259) fed in pieces, the nesting depth bounded and strings checked as UTF-8:
    the C module's _iotutils.JSONCheck (c_modules/iotutils/jsoncheck.c) in Python, for runtimes
    without it. MicroPython's json.loads takes {"a": 1] as {"a": 1} and [1 2] as [1, 2]; its parser
    recurses per level, so a deep text would take the heap. ValueError "invalid JSON at byte N" or
    "JSON nested deeper than N levels"."""

    def __init__(self, limit):
        if not 1 <= limit <= 64:
            raise ValueError("limit: 1..64")
        self.limit = limit
        self.nest = []     # per open level: True for an object
        self.pos = 0
        self.state = _VALUE
        self.sub = 0
        self.key = False
        self.need = 0      # UTF-8 continuation bytes due, the next one within lo..hi
        self.lo = 0x80
        self.hi = 0xBF
        self.low_due = False   # a \uD800-\uDBFF was read: its low half must come next
        self.unit = 0          # the \u escape under way
        self.pairs = 0         # surrogate pairs read (end() returns it)
        self.err = None

    def _fail(self, deep=False):
        self.err = ("JSON nested deeper than %d levels" % self.limit) if deep else ("invalid JSON at byte %d" % self.pos)
        raise ValueError(self.err)

    def feed(self, buf, n=None):
        if self.err:
            raise ValueError(self.err)
        if n is None:
            n = len(buf)
        st, sub, nest = self.state, self.sub, self.nest
        for i in range(n):
            c = buf[i]
            ok = True
            again = True
            while again:   # (twice only when a number ended at c: c is then what follows it)
                again = False
                if st == _STRING:
                    if self.low_due and c != 92:
                        ok = False   # a high surrogate's escape not followed by its low half
                    elif self.need:
                        if self.lo <= c <= self.hi:
                            self.need -= 1
                            self.lo, self.hi = 0x80, 0xBF
                        else:
                            ok = False
                    elif c == 34:
                        st = _COLON if self.key else _AFTER
                    elif c == 92:
                        st = _ESCAPE
                    elif c < 0x20:
                        ok = False   # control characters must be escaped
                    elif c >= 0x80:
                        ok = self._utf8_lead(c)
                elif st == _AFTER:
                    if c not in _SPACE:
                        if not nest:
                            ok = False   # something after the whole text
                        elif c == 44:
                            st = _KEY if nest[-1] else _VALUE
                        elif c == (125 if nest[-1] else 93):
                            nest.pop()
                        else:
                            ok = False
                elif st == _NUMBER:
                    if 48 <= c <= 57:
                        if sub == _N_MINUS:
                            sub = _N_ZERO if c == 48 else _N_INT
                        elif sub == _N_ZERO:
                            ok = False   # a leading zero: 01
                        elif sub == _N_DOT:
                            sub = _N_FRAC
                        elif sub == _N_E or sub == _N_E_SIGN:
                            sub = _N_EXP
                    elif c == 46 and (sub == _N_ZERO or sub == _N_INT):
                        sub = _N_DOT
                    elif (c == 101 or c == 69) and (sub == _N_ZERO or sub == _N_INT or sub == _N_FRAC):
                        sub = _N_E
                    elif (c == 43 or c == 45) and sub == _N_E:
                        sub = _N_E_SIGN
                    elif sub == _N_MINUS or sub == _N_DOT or sub == _N_E or sub == _N_E_SIGN:
                        ok = False   # a number cut short: "-", "1.", "1e", "1e+"
                    else:
                        st = _AFTER
                        again = True
                elif st == _VALUE or st == _VALUE_OR_END:
                    if c == 93 and st == _VALUE_OR_END:
                        nest.pop()
                        st = _AFTER
                    elif c == 123 or c == 91:
                        if len(nest) >= self.limit:
                            self.state, self.sub = st, sub
                            self._fail(True)
                        nest.append(c == 123)
                        st = _KEY_OR_END if c == 123 else _VALUE_OR_END
                    elif c == 34:
                        st = _STRING
                        self.key = False
                    elif c == 45:
                        st, sub = _NUMBER, _N_MINUS
                    elif 48 <= c <= 57:
                        st, sub = _NUMBER, (_N_ZERO if c == 48 else _N_INT)
                    elif c == 116 or c == 102 or c == 110:
                        st, sub = _LITERAL, (1 if c == 116 else 6 if c == 102 else 12)
                    elif c not in _SPACE:
                        ok = False
                elif st == _KEY_OR_END or st == _KEY:
                    if c == 125 and st == _KEY_OR_END:
                        nest.pop()
                        st = _AFTER
                    elif c == 34:
                        st = _STRING
                        self.key = True
                    elif c not in _SPACE:
                        ok = False
                elif st == _COLON:
                    if c == 58:
                        st = _VALUE
                    elif c not in _SPACE:
                        ok = False
                elif st == _ESCAPE:
                    if c == 117:
                        st, sub = _HEX, 4
                        self.unit = 0
                    elif self.low_due:
                        ok = False
                    elif c in _ESCAPES:
                        st = _STRING
                    else:
                        ok = False
                elif st == _HEX:
                    if c in _HEXDIGITS:
                        self.unit = self.unit << 4 | int(chr(c), 16)
                        sub -= 1
                        if not sub:
                            st = _STRING
                            ok = self._surrogate()
                    else:
                        ok = False
                elif _LITERALS[sub] == c:   # _LITERAL
                    sub += 1
                    if not _LITERALS[sub]:
                        st = _AFTER
                else:
                    ok = False
            if not ok:
                self.state, self.sub = st, sub
                self._fail()
            self.pos += 1
        self.state, self.sub = st, sub

    def _surrogate(self):
        # a whole \u escape: its surrogate halves must come in pairs, high then low
        u = self.unit
        if 0xDC00 <= u <= 0xDFFF:
            if not self.low_due:
                return False   # a low half alone
            self.low_due = False
            self.pairs += 1
        elif self.low_due:
            return False       # a high half followed by something else
        elif 0xD800 <= u <= 0xDBFF:
            self.low_due = True
        return True

    def _utf8_lead(self, c):
        # a UTF-8 lead byte in a string: how many continuation bytes follow, and the first one's
        # range (no overlong forms, no surrogates, nothing above U+10FFFF)
        self.lo, self.hi = 0x80, 0xBF
        if 0xC2 <= c <= 0xDF:
            self.need = 1
        elif 0xE0 <= c <= 0xEF:
            self.need = 2
            if c == 0xE0:
                self.lo = 0xA0
            elif c == 0xED:
                self.hi = 0x9F
        elif 0xF0 <= c <= 0xF4:
            self.need = 3
            if c == 0xF0:
                self.lo = 0x90
            elif c == 0xF4:
                self.hi = 0x8F
        else:
            return False
        return True

    def end(self):
        if self.err:
            raise ValueError(self.err)
        st, sub = self.state, self.sub
        if st == _NUMBER and not self.nest and sub in (_N_ZERO, _N_INT, _N_FRAC, _N_EXP):
            return self.pairs
        if st != _AFTER or self.nest:
            self._fail()
        return self.pairs


try:
    from io import IOBase as _IOBase
except ImportError:  # a port without io.IOBase (request.py then reads bodies whole)
    _IOBase = object


class _JSONSource(_IOBase):
    """A request body as the stream MicroPython's json.load reads (one byte per call), through a
    small buffer; checks the text (JSONCheck) and the size limit as the bytes pass."""

    def __init__(self, reader, limit, check):
        self.reader = reader
        self.limit = limit
        self.check = check
        self.buf = bytearray(256)
        self.pos = self.end = 0
        self.total = 0

    def _fill(self):
        n = self.reader.readinto(self.buf)
        if not n:
            return 0
        self.total += n
        if self.limit is not None and self.total > self.limit:
            raise HTTPError(413)
        try:
            self.check.feed(self.buf, n)
        except ValueError as e:
            raise json_error(e)
        self.end = n
        self.pos = 0
        return n

    def readinto(self, b):
        if self.pos >= self.end and not self._fill():
            return 0
        pos = self.pos
        if len(b) == 1:
            # json.load's case: a byte per call, so nothing may be allocated here. Slicing made
            # ~70 bytes of garbage per byte, and the values parsed between collections landed
            # scattered across the whole heap: a 2 KB body then left no room for its own dict.
            b[0] = self.buf[pos]
            self.pos = pos + 1
            return 1
        n = min(len(b), self.end - pos)
        b[:n] = memoryview(self.buf)[pos:pos + n]
        self.pos = pos + n
        return n

    def finish(self):
        # json.load stops after the value: the rest of the body goes through the check too
        while self._fill():
            pass
        try:
            return self.check.end()   # (the surrogate pairs in the text)
        except ValueError as e:
            raise json_error(e)


def astral(v):
    """v with the surrogate pairs its text escaped (\uD83D\uDCA1) joined into the characters they
    stand for. MicroPython's json.loads keeps the two halves, each as its own three bytes: text no
    UTF-8 reader takes back (the export, Home Assistant's discovery). The check has refused lone
    halves, so every half here has its partner beside it. (CPython joins them itself.)"""
    if isinstance(v, str):
        # in bytes: a str's characters taken one by one (or chr()) become qstrs never freed, and a
        # new one can need a new pool of them at once (a 2.5 KB text got a MemoryError)
        b = v.encode()
        i = b.find(b"\xed")   # (U+D000-U+DFFF; on CPython, which joined the pairs, nothing to join)
        if i < 0:
            return v
        out = bytearray(b[:i])
        n = len(b)
        while i < n:
            c = b[i]
            if c == 0xED and i + 6 <= n and 0xA0 <= b[i + 1] <= 0xAF and b[i + 3] == 0xED and 0xB0 <= b[i + 4] <= 0xBF:
                cp = 0x10000 + (((b[i + 1] & 0x0F) << 6 | (b[i + 2] & 0x3F)) << 10) + \
                    ((b[i + 4] & 0x0F) << 6 | (b[i + 5] & 0x3F))
                out.append(0xF0 | cp >> 18)
                out.append(0x80 | (cp >> 12) & 0x3F)
                out.append(0x80 | (cp >> 6) & 0x3F)
                out.append(0x80 | cp & 0x3F)
                i += 6
            else:
                out.append(c)
                i += 1
        return out.decode()
    if isinstance(v, list):
        return [astral(x) for x in v]
    if isinstance(v, dict):
        return {astral(k): astral(x) for k, x in v.items()}
    return v


def streamed(req):
    """req.json() of a body parsed while it streams in (MicroPython): no block of its size is needed."""
    route = req.route
    src = _JSONSource(req.stream, req.stream.server.max_body if route is None or route.max_body is None
                      else route.max_body, json_check(req.max_json_depth))
    try:
        v = json.load(src)
        if src.finish():
            v = astral(v)
    except HTTPError:
        raise  # (a ValueError too) not JSON, too deep or too large: said while the bytes passed
    except ValueError:
        if src.total == 0:
            return None
        raise HTTPError(400, "invalid JSON body")
    except MemoryError:
        raise HTTPError(413, JSON_TOO_BIG)
    req._body = b""  # consumed: the handler cannot read it twice
    return v
