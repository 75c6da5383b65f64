# What a handler answers: Response, the handler-return conventions (make_response), HTTPError, and the
# tables every part of the server shares (status reasons, file types).
import json
import os
import time


# status code, reason: a constant tuple (in flash on the firmware), not a dict in the heap
_REASONS = const((
    100, "Continue", 200, "OK", 201, "Created", 202, "Accepted", 204, "No Content",
    206, "Partial Content", 301, "Moved Permanently", 302, "Found", 303, "See Other",
    304, "Not Modified", 307, "Temporary Redirect", 308, "Permanent Redirect", 400, "Bad Request",
    401, "Unauthorized", 403, "Forbidden", 404, "Not Found", 405, "Method Not Allowed",
    406, "Not Acceptable", 408, "Request Timeout", 409, "Conflict", 411, "Length Required",
    412, "Precondition Failed",
    413, "Content Too Large", 414, "URI Too Long", 415, "Unsupported Media Type",
    421, "Misdirected Request", 429, "Too Many Requests", 431, "Request Header Fields Too Large",
    500, "Internal Server Error", 501, "Not Implemented", 503, "Service Unavailable",
    505, "HTTP Version Not Supported", 507, "Insufficient Storage",
))


def status_reason(status, default):
    """The reason phrase of an HTTP status code (default for one not listed)."""
    r = _REASONS
    for i in range(0, len(r), 2):
        if r[i] == status:
            return r[i + 1]
    return default


_DAYS = const(("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"))
_MONTHS = const(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"))


class HTTPError(ValueError):
    """Raise from a handler (or from req.json()/req.body) to answer with `status` and `reason`."""

    def __init__(self, status, reason=None):
        super().__init__(reason or status_reason(status, ""))
        self.status = status
        self.reason = reason or status_reason(status, "")


def http_date(secs):
    t = time.gmtime(secs)
    return "%s, %02d %s %04d %02d:%02d:%02d GMT" % (_DAYS[t[6]], t[2], _MONTHS[t[1] - 1], t[0], t[3], t[4], t[5])


class Response:
    """A handler's answer. body: str, bytes, dict/list (JSON), a generator (streamed chunked), a file
    object (streamed) or None. headers: {name: value}."""

    #: Content-Type for str bodies when none is given
    default_content_type = "text/html; charset=utf-8"

    def __init__(self, body=b"", status=200, headers=None, content_type=None):
        self.status = status
        self.headers = headers if headers is not None else {}
        t = type(body)  # exact types first: isinstance() with a tuple is slow on MicroPython
        if t is str:
            content_type = content_type or self.default_content_type
        elif t is dict or t is list or (t is not bytes and isinstance(body, (dict, list))):
            body = json_text(body, None)
            content_type = content_type or "application/json"
        elif t is not bytes and isinstance(body, str):
            content_type = content_type or self.default_content_type
        elif body is None:
            body = b""
        else:  # bytes-like, or a generator or file: streamed
            content_type = content_type or "application/octet-stream"
        self.body = body
        self.content_type = content_type

    @classmethod
    def redirect(cls, location, status=302):
        return cls(b"", status, {"Location": location})

    @classmethod
    def file(cls, path, content_type=None, headers=None):
        """Stream the file at path (closed after sending)."""
        if content_type is None:
            from iotutils.web.static import MIME  # (the file types live with the file server)
            content_type = MIME.get(path.rpartition(".")[2].lower(), "application/octet-stream")
        r = cls(open(path, "rb"), 200, headers, content_type)
        r.length = os.stat(path)[6]
        return r


def make_response(rv):
    """Turn what a handler returned into a Response: dict/list -> JSON, str -> HTML, bytes,
    (body, status), (body, status, headers), (body, headers), Response, None -> 204."""
    t = type(rv)
    if t is str or t is dict:
        return Response(rv)
    if t is Response or isinstance(rv, Response):
        return rv
    if t is tuple or isinstance(rv, tuple):
        if not rv:
            raise ValueError("a handler returned an empty tuple")
        body = rv[0]
        status = 200
        headers = None
        for extra in rv[1:]:
            if isinstance(extra, int):
                status = extra
            elif isinstance(extra, dict):
                headers = extra
            else:   # ("x", "404") was a 200
                raise TypeError("a handler's tuple is (body, status as an int, headers as a dict): got %s"
                                % type(extra).__name__)
        if isinstance(body, Response):
            body.status = status
            if headers:
                body.headers.update(headers)
            return body
        return Response(body, status, headers)
    if rv is None:
        return Response(b"", 204)
    return Response(rv)


# what this runtime's json.dumps writes for NaN and infinity (nan/inf; NaN/Infinity on CPython)
NONFINITE = (json.dumps(float("nan")), json.dumps(float("inf")))


def json_text(obj, text):
    """json.dumps(obj) (or `text`, made by it already), with NaN and infinities as null, as
    JavaScript's JSON.stringify writes them: no JSON parser takes nan or inf (a sensor's failed
    reading made a whole answer unreadable). Written again only when one stands as a value, not for
    a word that holds the letters ("info", "banana")."""
    t = json.dumps(obj) if text is None else text
    for m in NONFINITE:
        i = t.find(m)
        while i > 0:
            if t[i - 1] in " [-":   # a value (": nan", "[inf", "-inf"), or maybe a string's word: then
                return json.dumps(_finite(obj))   # (written again all the same, and right)
            i = t.find(m, i + 1)
    return t


def _finite(x):
    if type(x) is float:
        return x if x - x == 0 else None   # (nan - nan and inf - inf are nan)
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def check_response(resp):
    """ValueError or TypeError, naming the field, for an answer that cannot go on the wire as it is:
    a status that is not an int from 100 to 599, a number as the body, a CR, LF or NUL in a
    header (a handler that puts a request's text in a header must not let it add headers of its own)."""
    s = resp.status
    if type(s) is not int or not 100 <= s <= 599:
        raise ValueError("status: %r is not an HTTP status (100-599)" % (s,))
    b = resp.body
    if isinstance(b, (int, float)):
        raise TypeError("body: a handler returned a %s (str, bytes, dict, list, a generator or a file)"
                        % type(b).__name__)
    h = resp.headers
    if h:
        for k in h:
            if type(k) is not str or not k or ":" in k or " " in k:
                raise ValueError("header name: %r" % (k,))
            v = h[k]
            for one in (v if isinstance(v, (list, tuple)) else (v,)):
                _no_crlf(k, one)
    if resp.content_type:
        _no_crlf("Content-Type", resp.content_type)


def _no_crlf(name, value):
    v = value if type(value) is str else str(value)
    if "\r" in v or "\n" in v or "\0" in v or "\r" in name or "\n" in name:
        raise ValueError("header %s: a CR, LF or NUL in its value" % name)


def accepts_gzip(accept_encoding):
    """Whether an Accept-Encoding value takes gzip: listed (or "*") with a q above 0 (RFC 9110
    12.5.3: "gzip;q=0" refuses it)."""
    star = False
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        if coding not in ("gzip", "x-gzip", "*"):
            continue
        q = 1.0
        params = params.strip().lower()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0   # (unreadable: identity is always safe)
        if coding != "*":
            return q > 0
        star = q > 0
    return star


def etag_matches(if_none_match, etag):
    """If-None-Match's weak comparison (RFC 9110 13.1.2): "*", or any tag of the list, W/ or not."""
    if if_none_match.strip() == "*":
        return True
    etag = etag[2:] if etag.startswith("W/") else etag
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if (tag[2:] if tag.startswith("W/") else tag) == etag:
            return True
    return False
