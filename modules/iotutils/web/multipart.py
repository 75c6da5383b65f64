# Streamed multipart/form-data (file uploads from an HTML form) for stream=True routes: one working
# buffer whatever the size of the upload. Loaded only by apps that take uploads.
from iotutils.web.response import HTTPError


class Multipart:
    """Streamed multipart/form-data (file uploads from an HTML form), for stream=True routes:

        for part in Multipart(req):
            part.name, part.filename, part.content_type, part.headers   # headers: lower-case names
            n = part.readinto(buf)   # or part.read() for small fields; 0 at the end of the part

    Memory: one buffer of buffer_size bytes, whatever the size of the upload."""

    #: working buffer; also bounds the size of one part's header block
    buffer_size = 1024

    def __init__(self, req, buffer_size=None):
        ctype = req.headers.get("content-type", "")
        boundary = None
        for item in ctype.split(";")[1:]:
            k, _, v = item.strip().partition("=")
            if k.lower() == "boundary":
                boundary = v.strip().strip('"')
        if not ctype.lower().startswith("multipart/") or not boundary:
            raise HTTPError(400, "not multipart/form-data")
        self.stream = req.stream
        self.delim = b"\r\n--" + boundary.encode()
        self.buf = bytearray(max(buffer_size or self.buffer_size, 2 * len(self.delim) + 8))
        self.buf[0:2] = b"\r\n"  # so that the first boundary looks like every other one
        self.s = 0
        self.e = 2
        self.eof = False
        self.part = None
        self.finished = False

    def _fill(self):
        buf = self.buf
        if self.s:
            n = self.e - self.s
            buf[:n] = buf[self.s:self.e]
            self.s = 0
            self.e = n
        if self.e >= len(buf) or self.eof:
            return False
        r = self.stream.readinto(memoryview(buf)[self.e:])
        if not r:
            self.eof = True
            return False
        self.e += r
        return True

    def __iter__(self):
        return self

    def __next__(self):
        if self.part is not None:
            while self.part.readinto(None):  # skip what the caller did not read
                pass
        if self.finished:
            raise StopIteration
        d = self.delim
        # find the boundary, then "--" (the end) or CRLF and the part's header block
        while True:
            i = self.buf.find(d, self.s, self.e)
            if i >= 0 and self.e - i >= len(d) + 2:
                break
            if i < 0:
                self.s = max(self.s, self.e - len(d) - 1)  # preamble: drop it
            if not self._fill():
                raise HTTPError(400, "multipart boundary missing")
        tail = bytes(self.buf[i + len(d):i + len(d) + 2])
        self.s = i + len(d) + 2
        if tail == b"--":
            self.finished = True
            raise StopIteration
        if tail != b"\r\n":
            raise HTTPError(400, "bad multipart boundary")
        headers = {}
        while True:
            if self.e - self.s >= 2 and self.buf[self.s] == 13 and self.buf[self.s + 1] == 10:
                self.s += 2  # a part without headers
                break
            j = self.buf.find(b"\r\n\r\n", self.s, self.e)
            if j >= 0:
                for line in bytes(self.buf[self.s:j]).decode().split("\r\n"):
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
                self.s = j + 4
                break
            if not self._fill():
                raise HTTPError(431 if self.e - self.s >= len(self.buf) else 400, "multipart part headers")
        self.part = _Part(self, headers)
        return self.part


class _Part:
    def __init__(self, mp, headers):
        self.mp = mp
        self.headers = headers
        self.content_type = headers.get("content-type", "text/plain")
        self.name = None
        self.filename = None
        for item in headers.get("content-disposition", "").split(";")[1:]:
            k, _, v = item.strip().partition("=")
            v = v.strip().strip('"')
            if k == "name":
                self.name = v
            elif k == "filename":
                self.filename = v
        self.done = False

    def readinto(self, b):
        """Next bytes of this part into b (None: skip them); 0 at its end."""
        mp = self.mp
        if self.done:
            return 0
        d = mp.delim
        while True:
            i = mp.buf.find(d, mp.s, mp.e)
            safe = i if i >= 0 else mp.e - len(d) + 1
            if safe > mp.s:
                break
            if i == mp.s:
                self.done = True
                return 0
            if not mp._fill():
                if mp.eof:
                    raise HTTPError(400, "multipart body truncated")
        n = safe - mp.s
        if b is not None:
            n = min(n, len(b))
            b[:n] = memoryview(mp.buf)[mp.s:mp.s + n]
        mp.s += n
        return n

    def read(self, limit=16384):
        """The whole part as bytes (a form field); more than limit bytes -> HTTPError 413."""
        out = []
        total = 0
        b = bytearray(256)
        while True:
            n = self.readinto(b)
            if not n:
                return b"".join(out)
            total += n
            if total > limit:
                raise HTTPError(413)
            out.append(bytes(b[:n]))

    def text(self):
        return self.read().decode()
