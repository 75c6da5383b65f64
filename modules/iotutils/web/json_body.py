# JSON request bodies that need more than json.loads (iotutils.web.request's Request.json): the
# nesting depth counted exactly as the bytes pass, and on MicroPython a large body parsed while it
# streams in, through a small buffer. Loaded at the first body that needs one of them.
import json

from iotutils.web.request import JSON_TOO_BIG
from iotutils.web.response import HTTPError


class Depth:
    """The nesting depth of JSON text fed to it in pieces (strings and escapes followed across
    pieces): HTTPError 400 as soon as it passes `limit` (MicroPython's parser recurses per level: a
    deeper body would exhaust the heap, 503 for everyone, instead of being the client's error)."""

    def __init__(self, limit):
        self.limit = limit
        self.depth = 0
        self.in_str = self.esc = False

    def feed(self, buf, n):
        depth, in_str, esc = self.depth, self.in_str, self.esc
        for i in range(n):
            c = buf[i]
            if in_str:
                if esc:
                    esc = False
                elif c == 92:    # backslash
                    esc = True
                elif c == 34:    # quote
                    in_str = False
            elif c == 34:
                in_str = True
            elif c == 91 or c == 123:
                depth += 1
                if depth > self.limit:
                    raise HTTPError(400, "JSON nested deeper than %d levels" % self.limit)
            elif c == 93 or c == 125:
                depth -= 1
        self.depth, self.in_str, self.esc = depth, in_str, esc


try:
    from io import IOBase as _IOBase
except ImportError:  # a port without io.IOBase (request.py then reads bodies whole)
    _IOBase = object


class _JSONSource(_IOBase):
    """A request body as the stream MicroPython's json.load reads (one byte per call), through a
    small buffer; checks the nesting depth and the size limit as the bytes pass."""

    def __init__(self, reader, limit, depth):
        self.reader = reader
        self.limit = limit
        self.depth = Depth(depth)
        self.buf = bytearray(256)
        self.pos = self.end = 0
        self.total = 0

    def readinto(self, b):
        pos = self.pos
        if pos >= self.end:
            n = self.reader.readinto(self.buf)
            if not n:
                return 0
            self.total += n
            if self.limit is not None and self.total > self.limit:
                raise HTTPError(413)
            self.depth.feed(self.buf, n)
            self.end = n
            pos = 0
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


def streamed(req):
    """req.json() of a body parsed while it streams in (MicroPython): no block of its size is needed."""
    route = req.route
    src = _JSONSource(req.stream, req.stream.server.max_body if route is None or route.max_body is None
                      else route.max_body, req.max_json_depth)
    try:
        v = json.load(src)
    except HTTPError:
        raise  # (a ValueError too) too deep or too large: said while the bytes passed
    except ValueError:
        if src.total == 0:
            return None
        raise HTTPError(400, "invalid JSON body")
    except MemoryError:
        raise HTTPError(413, JSON_TOO_BIG)
    req._body = b""  # consumed: the handler cannot read it twice
    return v
