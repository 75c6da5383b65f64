# Static files for WebServer.static(): a folder served under a URL prefix, .gz siblings sent to clients
# that take gzip (inflated on the fly for those that don't), ETag / Last-Modified / 304. Loaded only by
# apps that serve files.
import os

from iotutils.web.response import Response, accepts_gzip, etag_matches, http_date

MIME = {
    "html": "text/html; charset=utf-8", "htm": "text/html; charset=utf-8", "css": "text/css",
    "js": "application/javascript", "mjs": "application/javascript", "json": "application/json",
    "txt": "text/plain; charset=utf-8", "svg": "image/svg+xml", "png": "image/png", "jpg": "image/jpeg",
    "jpeg": "image/jpeg", "gif": "image/gif", "ico": "image/x-icon", "webp": "image/webp",
    "wasm": "application/wasm", "xml": "application/xml", "pdf": "application/pdf",
    "woff": "font/woff", "woff2": "font/woff2", "bin": "application/octet-stream",
}


def _stat(path):
    try:
        return os.stat(path)
    except OSError:
        return None


class Static:
    def __init__(self, folder, max_age, index):
        self.folder = folder.rstrip("/")
        self.max_age = max_age
        self.index = index

    def __call__(self, req, path):
        # no way out of the folder: no '..', no empty or hidden segments
        for seg in path.split("/"):
            if seg in ("", ".", "..") or seg.startswith("."):
                return Response("Not Found", 404, content_type="text/plain")
        full = self.folder + "/" + path
        st = _stat(full)
        if st is not None and st[0] & 0x4000:
            full = full + "/" + self.index
            st = _stat(full)
        gz = _stat(full + ".gz")
        if st is None and gz is None:
            return Response("Not Found", 404, content_type="text/plain")
        ctype = MIME.get(full.rpartition(".")[2].lower(), "application/octet-stream")
        accepts_gz = accepts_gzip(req.headers.get("accept-encoding", ""))
        headers = {"Cache-Control": "max-age=%d" % self.max_age}
        if gz is not None and st is not None:
            headers["Vary"] = "Accept-Encoding"   # either may be sent: a cache must ask again
        gzipped = gz is not None and (accepts_gz or st is None)
        if gzipped:
            use, ust = full + ".gz", gz
        else:
            use, ust = full, st
        etag = '"%x-%x%s"' % (ust[6], ust[8], "-gz" if gzipped else "")
        headers["ETag"] = etag
        headers["Last-Modified"] = http_date(ust[8])
        inm = req.headers.get("if-none-match")
        if inm is not None:
            if etag_matches(inm, etag):
                return Response(b"", 304, headers)
        elif req.headers.get("if-modified-since") == headers["Last-Modified"]:
            return Response(b"", 304, headers)
        if gzipped:
            if accepts_gz:
                headers["Content-Encoding"] = "gzip"
            else:
                # only the .gz exists and the client can't take gzip: inflate on the fly
                try:
                    import deflate
                except ImportError:
                    return Response("gzip only", 406, content_type="text/plain")
                f = open(use, "rb")
                # gzip's trailer holds the original size: it gives Content-Length, and the window
                # (a 32 KB allocation for a full one) need not be larger than the file
                f.seek(ust[6] - 4)
                size = int.from_bytes(f.read(4), "little")
                f.seek(0)
                wbits = 9
                while wbits < 15 and (1 << wbits) < size:
                    wbits += 1
                r = Response(_Inflated(deflate.DeflateIO(f, deflate.GZIP, wbits), f), 200, headers, ctype)
                r.length = size
                return r
        r = Response(open(use, "rb"), 200, headers, ctype)
        r.length = ust[6]
        return r


class _Inflated:
    def __init__(self, stream, f):
        self.stream = stream
        self.f = f

    def readinto(self, b):
        return self.stream.readinto(b)

    def close(self):
        self.f.close()
