# URL routing: Route (a path pattern with <name>, <int:n>, <path:rest> parameters) and Router, the
# route table and hooks that WebServer inherits. Literal paths are found with one dict lookup, whatever
# the number of routes; parameter routes are tried in order, catch-all ones last. The tables are
# replaced, never changed in place (copy-on-write under a lock), so serving threads read them
# without locking and routes can be added while the server runs.
from iotutils._compat import allocate_lock

_SEG_LIT = const(0)
_SEG_STR = const(1)
_SEG_INT = const(2)
_SEG_PATH = const(3)


_GET_HEAD = const(("GET", "HEAD"))
# the methods every server knows; any other is known only if a route takes it (WeMo's SUBSCRIBE)
_METHODS = const(("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"))
# one lock for every router's table changes: they are rare (mostly at start), and on the ESP32 each
# lock is a FreeRTOS semaphore of about 100 bytes of heap (a device has a router per WeMo device too)
_tables_lock = allocate_lock()


class Route:
    # a route is made once and read on every request; the attributes that keep their class default
    # (most routes: literal, not streamed, the server's body limit) are not stored per route, so a
    # route costs its path, handler and methods (~0.2 KB of heap, not ~0.3)
    segs = None        # None: a literal path, matched by string compare
    catch_all = False
    stream = False
    max_body = None

    def __init__(self, pattern, fn, methods, stream, max_body):
        # checked here, once, not at the first request (a bytes path broke every later lookup)
        if not isinstance(pattern, str) or not pattern.startswith("/"):
            raise ValueError("path: a str starting with / expected, got %r" % (pattern,))
        if not methods or isinstance(methods, str) or \
                [m for m in methods if not isinstance(m, str) or not m or not m.isalpha()]:
            raise ValueError("methods: a list of method names expected, got %r" % (methods,))
        if max_body is not None and (isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 0):
            raise ValueError("max_body: bytes (an int >= 0) expected, got %r" % (max_body,))
        self.pattern = pattern
        self.fn = fn
        if methods == ("GET",) or methods == ["GET"]:
            self.methods = _GET_HEAD   # the usual case: one shared tuple, no new strings
        else:
            ms = tuple(m if m.isupper() else m.upper() for m in methods)
            if "GET" in ms and "HEAD" not in ms:
                ms += ("HEAD",)
            self.methods = ms
        if stream:
            self.stream = True
        if max_body is not None:
            self.max_body = max_body
        if "<" in pattern:
            segs = []
            for part in pattern.split("/"):
                if part.startswith("<") and part.endswith(">"):
                    kind, colon, name = part[1:-1].partition(":")
                    if not name:
                        if colon or not kind:   # "<int:>", "<>": no name for the argument
                            raise ValueError("route %r: a parameter without a name" % (pattern,))
                        kind, name = "str", kind
                    k = {"str": _SEG_STR, "string": _SEG_STR, "int": _SEG_INT, "path": _SEG_PATH}.get(kind)
                    if k is None:
                        raise ValueError("route %r: unknown parameter type %r" % (pattern, kind))
                    segs.append((k, name))
                    if k == _SEG_PATH:
                        self.catch_all = True
                else:
                    segs.append((_SEG_LIT, part))
            self.segs = tuple(segs)

    def match(self, path, parts):
        """The list of path arguments, or None."""
        if self.segs is None:
            return [] if path == self.pattern else None
        segs = self.segs
        args = []
        i = 0
        for kind, val in segs:
            if kind == _SEG_PATH:
                rest = "/".join(parts[i:])
                if not rest:
                    return None
                args.append(rest)
                return args
            if i >= len(parts):
                return None
            p = parts[i]
            i += 1
            if kind == _SEG_LIT:
                if p != val:
                    return None
            elif kind == _SEG_INT:
                if not p or not (p.isdigit() or (p[:1] == "-" and p[1:].isdigit())):
                    return None
                args.append(int(p))
            else:
                if not p:
                    return None
                args.append(p)
        return args if i == len(parts) else None



class Router:
    """Routes and request hooks: WebServer's own (it is a Router), or those of another port the
    server also serves (WebServer.listen(port, router))."""

    #: value of the Server header (None: no header)
    server_name = "iotutils"

    def __init__(self):
        self._init_routes()

    def _init_routes(self):
        self._lit = {}
        self._params = []
        self._before = []
        self._after = []
        self._on_request = []
        self._errors = {}

    def add_route(self, path, fn, methods=("GET",), stream=False, max_body=None):
        """Register fn(req, *path_args) for path; safe while the server runs."""
        if isinstance(methods, str):
            methods = (methods,)
        if not callable(fn):   # (each request was a 500)
            raise TypeError("fn: a function expected, got %s" % type(fn).__name__)
        r = Route(path, fn, methods, stream, max_body)
        with _tables_lock:
            # copy-on-write: readers never see a table being resized
            if r.segs is None:
                # literal paths by dict (one lookup, whatever the number of routes): the route, or a
                # tuple of them when one path has several; a literal route wins over a parameter
                # route that matches the same path
                lit = dict(self._lit)
                old = lit.get(path)
                lit[path] = r if old is None else (old if type(old) is tuple else (old,)) + (r,)
                self._lit = lit
            else:
                # parameter routes in order, catch-all <path:> ones last
                params = list(self._params)
                i = len(params)
                if not r.catch_all:
                    while i and params[i - 1].catch_all:
                        i -= 1
                params.insert(i, r)
                self._params = params
        return fn

    def route(self, path, methods=("GET",), stream=False, max_body=None):
        """Decorator: @app.route("/api/x/<int:n>", methods=("GET", "POST"), stream=False)."""
        def deco(fn):
            return self.add_route(path, fn, methods, stream, max_body)
        return deco

    def get(self, path, **kw):
        return self.route(path, ("GET",), **kw)

    def post(self, path, **kw):
        return self.route(path, ("POST",), **kw)

    def before_request(self, fn):
        """fn(req) runs before every handler (before the body is read); a return value other than None
        is sent as the response and the handler is skipped (authentication)."""
        with _tables_lock:
            self._before = self._before + [fn]
        return fn

    def after_request(self, fn):
        """fn(req, response) -> response (or None to keep it) runs after every handler."""
        with _tables_lock:
            self._after = self._after + [fn]
        return fn

    def errorhandler(self, status):
        """Decorator: fn(req) answers instead of the server's own error page for `status` (404, 405,
        413, 500, ...), e.g. a captive portal redirecting every unknown URL to its page."""
        def deco(fn):
            with _tables_lock:
                d = dict(self._errors)
                d[status] = fn
                self._errors = d
            return fn
        return deco

    def on_request(self, fn):
        """fn(req, status) is called after each request was answered (counters, activity LEDs)."""
        with _tables_lock:
            self._on_request = self._on_request + [fn]
        return fn

    def static(self, url_prefix, folder, max_age=3600, index="index.html"):
        """Serve files under folder at url_prefix/...; a file.gz sibling is sent gzip-encoded to clients
        that accept it; ETag/Last-Modified/Cache-Control and 304 answers."""
        from iotutils.web.static import Static  # loaded by apps that serve files, only

        if not isinstance(url_prefix, str) or not isinstance(folder, str) or not folder:
            raise ValueError("static: url_prefix and folder are paths (str), got %r, %r" % (url_prefix, folder))
        if isinstance(max_age, bool) or not isinstance(max_age, int) or max_age < 0:
            raise ValueError("max_age: seconds (an int >= 0) expected, got %r" % (max_age,))
        if not isinstance(index, str) or not index or "/" in index:
            raise ValueError("index: a file name expected, got %r" % (index,))
        handler = Static(folder, max_age, index)
        prefix = url_prefix.rstrip("/")
        self.add_route(prefix + "/<path:p>", handler, ("GET",))
        self.add_route(prefix + "/", lambda req: handler(req, index), ("GET",))
        return handler

    def _find(self, req):
        """The route (a literal path), (route, args) (a path with parameters), or the status 404/405
        (req.allow set for 405), 501 for a method no route takes, 400 for "*" but in OPTIONS *. No
        allocation for a literal path."""
        path = req.path
        method = req.method
        if path == "*":   # the asterisk-form: OPTIONS about the server as a whole (RFC 9112 3.2.4)
            if method != "OPTIONS":
                return 400
            req.allow = _METHODS[:-2]
            return 405
        lit = self._lit.get(path)
        allow = None
        if lit is not None:
            for r in (lit if type(lit) is tuple else (lit,)):
                if method in r.methods:
                    return r
                allow = (allow or ()) + r.methods
        parts = None
        for r in self._params:
            if parts is None:
                parts = path.split("/")
            args = r.match(path, parts)
            if args is None:
                continue
            if method in r.methods:
                return r, args
            allow = (allow or ()) + r.methods
        if method not in _METHODS and not self._takes(method):
            return 501   # not 405 or 404: no resource here has it (RFC 9110 9.1)
        if allow is not None:
            req.allow = allow
            return 405
        return 404

    def _takes(self, method):
        for lit in self._lit.values():
            for r in (lit if type(lit) is tuple else (lit,)):
                if method in r.methods:
                    return True
        for r in self._params:
            if method in r.methods:
                return True
        return False
