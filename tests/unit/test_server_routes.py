# Unit tests for iotutils.server on CPython and MicroPython: routing, response building, body
# handling and static files, driven through the server's own request path with a fake socket.
from array import array

from mpunit import on_free_port, raises, rmtree, tempdir

from iotutils.http import parse_head
from iotutils.server import HTTPError, Multipart, Response, WebServer, http_date, make_response, parse_qs, unquote
from iotutils.web.engine import _Conn
from iotutils.web.routing import Route


class FakeSock:
    """Bytes the client sends after the buffered head go in `data`; what the server writes is `out`."""

    def __init__(self, data=b""):
        self.data = bytes(data)
        self.pos = 0
        self.out = bytearray()

    def write(self, b, *args):
        # like a MicroPython stream: write(buf), write(buf, max_len), write(buf, off, max_len)
        off, n = (0, len(b)) if not args else (0, args[0]) if len(args) == 1 else args
        n = min(n, len(b) - off)
        self.out.extend(memoryview(b)[off:off + n])
        return n

    sendall = write
    send = write

    def readinto(self, b):
        n = min(len(b), len(self.data) - self.pos)
        b[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n

    recv_into = readinto

    def settimeout(self, t):
        pass

    def setblocking(self, flag):
        pass


def run(app, raw, more=b"", bufsize=1024):
    """Serve one request (head and maybe body in `raw`, the rest of the body in `more`):
    (status, headers, body, keep, conn)."""
    conn = _Conn(FakeSock(more), ("127.0.0.1", 1234), 0, app)
    conn.buf = bytearray(bufsize)
    conn.mv = memoryview(conn.buf)
    conn.buf[:len(raw)] = raw
    conn.n = len(raw)
    out = array("i", [0] * (9 + 4 * 24))
    res = parse_head(conn.buf, conn.n, out)
    assert res > 0, res
    req = app._make_request(conn, out, res)
    app._running = True
    keep = app._handle(req)
    data = bytes(conn.sock.out)
    if data.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"):  # the interim answer: skip it
        data = data[25:]
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body, keep, conn


def make_app():
    app = WebServer(port=80, workers=1)

    @app.route("/api/led/<int:n>", methods=("GET", "POST"))
    def led(req, n):
        return {"n": n, "body": req.json()}

    @app.route("/echo", methods=("POST",))
    def echo(req):
        return req.body

    @app.route("/t")
    def t(req):
        return "text", 201, {"X-A": "1"}

    @app.route("/gen")
    def gen(req):
        def g():
            yield "ab"
            yield b""
            yield b"cde"
        return Response(g(), content_type="text/plain")

    @app.route("/files/<path:p>")
    def files(req, p):
        return "files:" + p

    @app.route("/files/special")
    def special(req):
        return "special"

    @app.route("/boom")
    def boom(req):
        raise KeyError("x")

    @app.route("/up", methods=("POST",), stream=True)
    def up(req):
        total = 0
        b = bytearray(7)
        while True:
            n = req.stream.readinto(b)
            if not n:
                return {"total": total}
            total += n
    return app


# ---- pieces ----

def test_route_matching_typed_parameters():
    r = Route("/api/led/<int:n>", None, ("GET",), False, None)
    assert r.match("/api/led/3", "/api/led/3".split("/")) == [3]
    assert r.match("/api/led/-2", "/api/led/-2".split("/")) == [-2]
    assert r.match("/api/led/x", "/api/led/x".split("/")) is None
    assert r.match("/api/led/3/4", "/api/led/3/4".split("/")) is None
    assert r.match("/api/led/", "/api/led/".split("/")) is None
    r = Route("/u/<name>/<path:rest>", None, ("GET",), False, None)
    assert r.match("/u/ann/a/b.txt", "/u/ann/a/b.txt".split("/")) == ["ann", "a/b.txt"]
    assert r.match("/u/ann/", "/u/ann/".split("/")) is None
    assert "HEAD" in r.methods and r.catch_all
    e = raises(ValueError, Route, "/x/<float:f>", None, ("GET",), False, None)
    assert "float" in str(e)


def test_a_requests_views_read_what_the_client_sent():
    app = WebServer(port=80, workers=1)
    seen = {}

    @app.route("/v/<p>", methods=("GET", "POST"))
    def views(req, p):
        req.g["user"] = "ann"
        for k in ("target", "query_string", "client_ip", "client_addr", "cookies", "server", "flags",
                  "body_kind", "head_len", "g", "version", "keep_alive", "host"):
            seen[k] = getattr(req, k)
        seen["missing"] = hasattr(req, "no_such_view")
        return "ok"

    head = b"GET /v/a%20b?x=1&y=2 HTTP/1.1\r\nHost: dev.local:80\r\nCookie: a=1; b=two\r\n\r\n"
    assert run(app, head)[0] == 200
    assert seen["target"] == "/v/a%20b?x=1&y=2" and seen["query_string"] == "x=1&y=2"
    assert seen["client_ip"] == "127.0.0.1" and seen["client_addr"] == ("127.0.0.1", 1234)
    assert seen["cookies"] == {"a": "1", "b": "two"} and seen["g"] == {"user": "ann"}
    assert seen["server"] is None and seen["body_kind"] == 0 and seen["head_len"] == len(head)
    assert seen["version"] == 1 and seen["keep_alive"] is True and seen["host"] == "dev.local"
    assert seen["missing"] is False and seen["flags"] == 0
    body = b"POST /v/b HTTP/1.0\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nabc"
    assert run(app, body)[0] == 200
    assert seen["target"] == "/v/b" and seen["query_string"] == "" and seen["cookies"] == {}
    assert seen["server"] is app and seen["body_kind"] != 0 and seen["version"] == 0 and seen["flags"] != 0


def test_unquote_and_query_strings():
    assert unquote("a%20b%2Fc") == "a b/c"
    assert unquote("a+b") == "a+b" and unquote("a+b", True) == "a b"
    assert unquote("100%") == "100%" and unquote("%zz") == "%zz"
    assert unquote("J%C3%BCrgen") == "J\u00fcrgen"
    assert parse_qs("a=1&b=x+y&c&&a=2") == {"a": "2", "b": "x y", "c": ""}
    assert parse_qs("") == {}


def test_http_date():
    assert http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT"


def test_make_response_conversions():
    r = make_response({"a": 1})
    assert r.status == 200 and r.content_type == "application/json" and r.body == '{"a": 1}'
    assert make_response([1, 2]).content_type == "application/json"
    r = make_response("<p>")
    assert r.content_type.startswith("text/html") and r.body == "<p>"
    assert make_response(b"\x00").content_type == "application/octet-stream"
    r = make_response(("gone", 410))
    assert r.status == 410 and r.body == "gone"
    r = make_response(("x", 202, {"X-Y": "z"}))
    assert r.status == 202 and r.headers == {"X-Y": "z"}
    r = make_response(("x", {"X-Y": "z"}))
    assert r.status == 200 and r.headers == {"X-Y": "z"}
    r = make_response((Response("x"), 404))
    assert r.status == 404
    assert make_response(None).status == 204
    resp = Response(b"", 302, {"Location": "/"})
    assert make_response(resp) is resp
    assert Response.redirect("/a").headers["Location"] == "/a"


def test_routes_added_later_and_catch_all_last():
    app = make_app()
    # /files/special was added after /files/<path:p> but matches first: catch-all routes go last
    assert run(app, b"GET /files/special HTTP/1.1\r\nHost: d\r\n\r\n")[2] == b"special"
    assert run(app, b"GET /files/a/b HTTP/1.1\r\nHost: d\r\n\r\n")[2] == b"files:a/b"
    app.add_route("/later", lambda req: "later", "GET")
    assert run(app, b"GET /later HTTP/1.1\r\nHost: d\r\n\r\n")[2] == b"later"


# ---- whole requests ----

def test_json_dict_response_and_keep_alive():
    st, h, body, keep, _ = run(make_app(), b"POST /api/led/5 HTTP/1.1\r\nHost: d\r\nContent-Length: 9\r\n\r\n{\"x\": 1}\n")
    assert st == 200 and keep
    assert h["content-type"] == "application/json" and h["content-length"] == str(len(body))
    assert body == b'{"n": 5, "body": {"x": 1}}' or body == b'{"body": {"x": 1}, "n": 5}'
    assert "connection" not in h


def test_404_405_options_head_and_tuple_status():
    app = make_app()
    assert run(app, b"GET /nope HTTP/1.1\r\nHost: d\r\n\r\n")[0] == 404
    st, h, _, keep, _ = run(app, b"DELETE /echo HTTP/1.1\r\nHost: d\r\n\r\n")
    assert st == 405 and h["allow"] == "POST, OPTIONS" and keep
    st, h, _, _, _ = run(app, b"OPTIONS /api/led/1 HTTP/1.1\r\nHost: d\r\n\r\n")
    assert st == 204 and h["allow"].startswith("GET, POST, HEAD")
    st, h, body, _, _ = run(app, b"HEAD /t HTTP/1.1\r\nHost: d\r\n\r\n")
    assert st == 201 and h["content-length"] == "4" and body == b"" and h["x-a"] == "1"
    # two routes on one path (an app's /api/lamp beside Hue's /api/<user>): each method said once
    app.add_route("/api/lamp", lambda req: "", ("GET", "PUT"))
    app.add_route("/api/<user>", lambda req, user: "", ("GET", "POST", "PUT", "DELETE"))
    for method, status in ((b"PATCH", 405), (b"OPTIONS", 204)):
        st, h, _, _, _ = run(app, method + b" /api/lamp HTTP/1.1\r\nHost: d\r\n\r\n")
        assert st == status and h["allow"] == "GET, PUT, HEAD, POST, DELETE, OPTIONS", h
    # a method no route takes is 501, not 405 (RFC 9110 9.1; methods are case-sensitive); one
    # that a route takes elsewhere is a 405 here
    app.add_route("/ev", lambda req: "", ("SUBSCRIBE",))
    for method, status in ((b"FOO", 501), (b"get", 501), (b"TRACE", 501), (b"SUBSCRIBE", 405)):
        st, _, body, keep, _ = run(app, method + b" /api/lamp HTTP/1.1\r\nHost: d\r\n\r\n")
        assert st == status and keep, (method, st)
    assert run(app, b"FOO /nowhere HTTP/1.1\r\nHost: d\r\n\r\n")[0] == 501
    assert run(app, b"SUBSCRIBE /ev HTTP/1.1\r\nHost: d\r\n\r\n")[0] == 200
    # the asterisk-form: OPTIONS about the server (it was a 404), and nothing else
    st, h, _, _, _ = run(app, b"OPTIONS * HTTP/1.1\r\nHost: d\r\n\r\n")
    assert st == 204 and h["allow"] == "GET, HEAD, POST, PUT, DELETE, OPTIONS", (st, h)
    assert run(app, b"GET * HTTP/1.1\r\nHost: d\r\n\r\n")[0] == 400


def test_an_answer_that_cannot_go_on_the_wire_is_a_500():
    # CR or LF in a header would let a handler that echoes a request's text add headers of its own
    # (Set-Cookie); a status that is not one, a number as the body or a malformed tuple broke the
    # answer or the connection. Each is a 500 now, and the connection goes on
    app = WebServer()
    app.log_errors = False
    bad = {
        "/h": lambda req: Response("x", headers={"X-A": "a\r\nSet-Cookie: evil=1"}),
        "/r": lambda req: Response.redirect("/x\r\nSet-Cookie: evil=1"),
        "/l": lambda req: Response("x", headers={"Set-Cookie": ["a=1", "b=2\nSet-Cookie: evil=1"]}),
        "/n": lambda req: Response("x", headers={"X-A\r\nSet-Cookie": "1"}),
        "/c": lambda req: Response("x", content_type="text/plain\r\nSet-Cookie: evil=1"),
        "/s": lambda req: Response("x", "abc"),
        "/big": lambda req: Response("x", 99999),
        "/neg": lambda req: Response("x", -1),
        "/int": lambda req: 5,
        "/t": lambda req: ("x", "404"),
        "/e": lambda req: (),
    }
    for path, fn in bad.items():
        app.add_route(path, fn)
    app.add_route("/ok", lambda req: Response("x", 201, {"X-A": "fine", "X-N": 3}))
    for path in bad:
        st, h, body, keep, conn = run(app, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: d\r\n\r\n")
        assert st == 500 and keep, (path, st)
        assert b"evil" not in bytes(conn.sock.out), path
    st, h, body, keep, _ = run(app, b"GET /ok HTTP/1.1\r\nHost: d\r\n\r\n")
    assert st == 201 and h["x-a"] == "fine" and h["x-n"] == "3" and body == b"x"


def test_registration_checks_its_arguments_at_the_call():
    # each was taken and failed later: at every request (a 500, a bytes/str warning per lookup),
    # never (a route no path can reach, a server without threads), or with an unrelated message
    from iotutils.web.routing import Router
    app = WebServer()
    fn = lambda req: ""
    for args, field in (((None, fn), "path"), ((b"/b", fn), "path"), (("noslash", fn), "path"),
                        (("/p/<int:>", fn), "route"), (("/p/<>", fn), "route"), (("/x", fn, [5]), "methods"),
                        (("/x", fn, []), "methods"), (("/x", fn, ["GE T"]), "methods")):
        assert raises(ValueError, app.add_route, *args).args[0].startswith(field), args
    assert raises(TypeError, app.add_route, "/x", 5).args[0].startswith("fn")
    assert raises(ValueError, app.add_route, "/x", fn, ("GET",), False, -1).args[0].startswith("max_body")
    for args, field in (((None, "/tmp"), "static"), (("/s", None), "static"), (("/s", "/tmp", -5), "max_age"),
                        (("/s", "/tmp", 5, "../x"), "index")):
        assert raises(ValueError, app.static, *args).args[0].startswith(field), args
    for kw, field in (({"port": -1}, "port"), ({"port": 70000}, "port"), ({"port": "80"}, "port"),
                      ({"workers": -3}, "workers"), ({"workers": "2"}, "workers")):
        assert raises(ValueError, WebServer, **kw).args[0].startswith(field), kw
    assert raises(ValueError, app.listen, None, Router()).args[0].startswith("port")
    assert raises(TypeError, app.listen, 8081, None).args[0].startswith("router")
    assert app._lit == {} and app._params == []   # nothing half-registered
    app.add_route("/p/<name>", fn)   # a plain parameter still works
    assert app._params[0].segs[2] == (1, "name")


def test_json_answers_write_nan_and_infinities_as_null():
    # json.dumps wrote nan/inf (NaN/Infinity on CPython), which no JSON parser takes: a sensor's
    # failed reading made the whole answer unreadable. As JavaScript's JSON.stringify: null
    import json
    nan, inf = float("nan"), float("inf")
    app = WebServer()
    app.add_route("/d", lambda req: {"t": nan, "h": [1.5, inf, -inf], "s": "nan inf", "n": {"x": (nan,)}})
    app.add_route("/r", lambda req: Response([nan, 2.0], 201))
    st, h, body, _, _ = run(app, b"GET /d HTTP/1.1\r\nHost: d\r\n\r\n")
    assert st == 200 and json.loads(body) == {"t": None, "h": [1.5, None, None], "s": "nan inf", "n": {"x": [None]}}
    st, h, body, _, _ = run(app, b"GET /r HTTP/1.1\r\nHost: d\r\n\r\n")
    assert st == 201 and json.loads(body) == [None, 2.0] and h["content-type"] == "application/json"
    # written again only for a value: a word that holds the letters keeps the text made once
    from iotutils.web.response import json_text
    for obj in ({"info": "banana"}, ["infinite", "nano"]):
        text = json.dumps(obj)
        assert json_text(obj, text) is text, obj
    assert json.loads(json_text({"a": [-inf, 1]}, None)) == {"a": [None, 1]}


def test_accept_encoding_and_if_none_match_rules():
    from iotutils.web.response import accepts_gzip, etag_matches
    for value, takes in (("gzip", True), ("gzip, deflate", True), ("deflate, GZIP;q=0.5", True),
                         ("x-gzip", True), ("*", True), ("", False), ("identity", False), ("gzip;q=0", False),
                         ("gzip;q=0.000, identity", False), ("*;q=0", False), ("gzip;q=0, *", False),
                         ("*;q=0, gzip", True), ("gzip;q=zz", False), ("gzipped", False)):
        assert accepts_gzip(value) is takes, value
    for value, match in (('"a1"', True), ('W/"a1"', True), ('"zz", "a1"', True), ('"zz",W/"a1" ', True),
                         ("*", True), (" * ", True), ('"a"', False), ('"xa1"', False), ("", False),
                         ('"a1-gz"', False)):
        assert etag_matches(value, '"a1"') is match, value


def test_http10_and_connection_close():
    app = make_app()
    st, h, body, keep, _ = run(app, b"GET /t HTTP/1.0\r\n\r\n")
    assert not keep and h["connection"] == "close"
    st, h, body, keep, _ = run(app, b"GET /t HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert keep and h["connection"] == "keep-alive"
    st, h, body, keep, _ = run(app, b"GET /t HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
    assert not keep and h["connection"] == "close"


def test_generator_is_chunked():
    st, h, body, keep, _ = run(make_app(), b"GET /gen HTTP/1.1\r\nHost: d\r\n\r\n")
    assert h["transfer-encoding"] == "chunked" and "content-length" not in h and keep
    assert body == b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"
    st, h, body, keep, _ = run(make_app(), b"GET /gen HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert body == b"abcde" and not keep  # HTTP/1.0: the body ends with the connection


def test_handler_exception_is_500_and_connection_lives():
    app = make_app()
    app.log_errors = False
    st, _, _, keep, _ = run(app, b"GET /boom HTTP/1.1\r\nHost: d\r\n\r\n")
    assert st == 500 and keep


def test_body_limits_and_bad_json():
    app = make_app()
    app.max_body = 10
    st, h, _, keep, _ = run(app, b"POST /echo HTTP/1.1\r\nHost: d\r\nContent-Length: 11\r\n\r\n", b"x" * 11)
    assert st == 413 and not keep and h["connection"] == "close"
    st, _, body, keep, _ = run(app, b"POST /echo HTTP/1.1\r\nHost: d\r\nContent-Length: 10\r\n\r\n", b"y" * 10)
    assert st == 200 and body == b"y" * 10 and keep
    st, _, _, _, _ = run(app, b"POST /api/led/1 HTTP/1.1\r\nHost: d\r\nContent-Length: 3\r\n\r\n{x}")
    assert st == 400
    # chunked bodies count decoded bytes
    st, _, _, keep, _ = run(app, b"POST /echo HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"6\r\nabcdef\r\n6\r\nghijkl\r\n0\r\n\r\n")
    assert st == 413 and not keep
    st, _, body, keep, _ = run(app, b"POST /echo HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n"
                                    b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n")
    assert st == 200 and body == b"abcde" and keep
    st, _, _, keep, _ = run(app, b"POST /echo HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    assert st == 400 and not keep


def test_expect_continue_only_when_the_body_is_read():
    app = make_app()
    _, _, _, _, conn = run(app, b"POST /up HTTP/1.1\r\nHost: d\r\nContent-Length: 20\r\nExpect: 100-continue\r\n\r\n",
                           b"z" * 20)
    assert bytes(conn.sock.out).startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200")
    app.max_body = 5
    st, h, _, keep, conn = run(app, b"POST /echo HTTP/1.1\r\nHost: d\r\nContent-Length: 20\r\nExpect: 100-continue\r\n\r\n")
    assert st == 413 and b"100 Continue" not in bytes(conn.sock.out) and not keep


def test_streamed_body_and_pipelined_leftover():
    app = make_app()
    nxt = b"GET /t HTTP/1.1\r\nHost: d\r\n\r\n"
    st, _, body, keep, conn = run(app, b"POST /up HTTP/1.1\r\nHost: d\r\nContent-Length: 30\r\n\r\n" + b"q" * 30 + nxt)
    assert body == b'{"total": 30}' and keep
    assert bytes(conn.buf[:conn.n]) == nxt  # the next request moved to the front of the buffer
    # part of the body in the buffer, the rest from the socket
    st, _, body, keep, conn = run(app, b"POST /up HTTP/1.1\r\nHost: d\r\nContent-Length: 3000\r\n\r\n" + b"q" * 100,
                                  b"r" * 2900)
    assert body == b'{"total": 3000}' and keep and conn.n == 0
    # no body at all: req.stream is still a reader, at its end at once
    st, _, body, keep, _ = run(app, b"POST /up HTTP/1.1\r\nHost: d\r\n\r\n")
    assert st == 200 and body == b'{"total": 0}' and keep


def test_unread_body_is_drained_or_connection_closed():
    app = make_app()
    # 404 for a POST with a small body: the body is discarded, the connection stays usable
    st, _, _, keep, conn = run(app, b"POST /nope HTTP/1.1\r\nHost: d\r\nContent-Length: 50\r\n\r\n", b"b" * 50)
    assert st == 404 and keep and conn.sock.pos == 50
    app.max_drain = 10
    st, _, _, keep, _ = run(app, b"POST /nope HTTP/1.1\r\nHost: d\r\nContent-Length: 50\r\n\r\n", b"b" * 50)
    assert st == 404 and not keep


def test_before_request_hook_short_circuits():
    app = make_app()
    seen = []

    @app.before_request
    def auth(req):
        seen.append(req.path)
        if req.headers.get("authorization") != "Basic dTpw":
            return "no", 401, {"WWW-Authenticate": "Basic"}

    @app.on_request
    def count(req, status):
        seen.append(status)
    st, h, _, _, _ = run(app, b"GET /t HTTP/1.1\r\nHost: d\r\n\r\n")
    assert st == 401 and h["www-authenticate"] == "Basic"
    st, _, body, _, _ = run(app, b"GET /t HTTP/1.1\r\nHost: d\r\nAuthorization: Basic dTpw\r\n\r\n")
    assert st == 201 and body == b"text"
    assert seen == ["/t", 401, "/t", 201]
    assert app.request_count == 2 and app.idle_ms() >= 0


def test_request_fields():
    app = WebServer()
    got = {}

    @app.route("/r", methods=("POST",))
    def r(req):
        got["q"] = req.query
        got["h"] = req.headers
        got["form"] = req.form()
        got["cookies"] = req.cookies
        return ""
    run(app, b"POST /r?a=%41&b=1 HTTP/1.1\r\nHost: d\r\nX-Two: 1\r\nx-two: 2\r\nCookie: s=1; t=2\r\n"
             b"Content-Length: 7\r\n\r\nk=v+w&z")
    assert got["q"] == {"a": "A", "b": "1"}
    assert got["h"]["x-two"] == "1, 2" and got["h"]["host"] == "d"
    assert got["form"] == {"k": "v w", "z": ""}
    assert got["cookies"] == {"s": "1", "t": "2"}


def test_multipart_parser():
    app = WebServer()
    got = []

    @app.route("/m", methods=("POST",), stream=True)
    def m(req):
        for part in Multipart(req, buffer_size=128):
            if part.filename:
                data = bytearray()
                b = bytearray(5)
                while True:
                    n = part.readinto(b)
                    if not n:
                        break
                    data.extend(b[:n])
                got.append((part.name, part.filename, part.content_type, bytes(data)))
            else:
                got.append((part.name, part.text()))
        return "ok"
    payload = b"0123456789--bound\r\n" * 20  # looks like a boundary, is not one
    body = (b"preamble\r\n--bound\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nvalue a\r\n"
            b"--bound\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x.bin\"\r\n"
            b"Content-Type: application/x-bin\r\n\r\n" + payload + b"\r\n--bound--\r\nepilogue")
    head = b"POST /m HTTP/1.1\r\nHost: d\r\nContent-Type: multipart/form-data; boundary=bound\r\n" \
        b"Content-Length: %d\r\n\r\n" % len(body)
    st, _, out, keep, _ = run(app, head, body)
    assert st == 200 and out == b"ok" and keep
    assert got == [("a", "value a"), ("f", "x.bin", "application/x-bin", payload)]
    # truncated: a clean 400
    body = b"--bound\r\n\r\nno end of part."
    st = run(app, b"POST /m HTTP/1.1\r\nHost: d\r\nContent-Type: multipart/form-data; boundary=bound\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)[0]
    assert st == 400


def test_static_files():
    d = tempdir("static")
    try:
        with open(d + "/a.txt", "w") as f:
            f.write("plain text\n")
        with open(d + "/z.txt.gz", "wb") as f:
            f.write(bytes.fromhex("1f8b0800000000000203cb48cdc9c95748afe2cac0600000c9e84ab61b000000"))
        app = WebServer()
        app.static("/s", d, max_age=5)
        st, h, body, _, _ = run(app, b"GET /s/a.txt HTTP/1.1\r\nHost: d\r\n\r\n")
        assert st == 200 and body == b"plain text\n" and h["content-type"].startswith("text/plain")
        assert h["cache-control"] == "max-age=5" and h["etag"]
        st, _, body, _, _ = run(app, b"GET /s/a.txt HTTP/1.1\r\nHost: d\r\nIf-None-Match: " +
                                h["etag"].encode() + b"\r\n\r\n")
        assert st == 304 and body == b""
        for inm in (b"W/" + h["etag"].encode(), b'"zz", ' + h["etag"].encode(), b"*"):  # weak, a list, any
            assert run(app, b"GET /s/a.txt HTTP/1.1\r\nHost: d\r\nIf-None-Match: " + inm + b"\r\n\r\n")[0] == 304
        assert run(app, b'GET /s/a.txt HTTP/1.1\r\nHost: d\r\nIf-None-Match: "zz"\r\n\r\n')[0] == 200
        st, h, body, _, _ = run(app, b"GET /s/z.txt HTTP/1.1\r\nHost: d\r\nAccept-Encoding: gzip\r\n\r\n")
        assert st == 200 and h["content-encoding"] == "gzip" and body[:2] == b"\x1f\x8b"
        # a file and its .gz: whichever is sent varies with Accept-Encoding, and q=0 refuses gzip
        with open(d + "/b.txt", "w") as f:
            f.write("hello gz\n" * 3)
        with open(d + "/b.txt.gz", "wb") as f:
            f.write(bytes.fromhex("1f8b0800000000000203cb48cdc9c95748afe2cac0600000c9e84ab61b000000"))
        st, h, body, _, _ = run(app, b"GET /s/b.txt HTTP/1.1\r\nHost: d\r\nAccept-Encoding: gzip\r\n\r\n")
        assert st == 200 and h["content-encoding"] == "gzip" and h["vary"] == "Accept-Encoding"
        st, h, body, _, _ = run(app, b"GET /s/b.txt HTTP/1.1\r\nHost: d\r\nAccept-Encoding: gzip;q=0, identity\r\n\r\n")
        assert st == 200 and "content-encoding" not in h and body == b"hello gz\n" * 3 and h["vary"] == "Accept-Encoding"
        st, h, body, _, _ = run(app, b"GET /s/z.txt HTTP/1.1\r\nHost: d\r\n\r\n")
        try:
            __import__("deflate")  # MicroPython: inflated on the fly for this client
            assert st == 200 and "content-encoding" not in h and body == b"hello gz\n" * 3
        except ImportError:
            assert st == 406
        assert run(app, b"GET /s/../x HTTP/1.1\r\nHost: d\r\n\r\n")[0] == 404
        assert run(app, b"GET /s/.hidden HTTP/1.1\r\nHost: d\r\n\r\n")[0] == 404
    finally:
        rmtree(d)


def test_httperror_from_handler():
    app = WebServer()

    @app.route("/e")
    def e(req):
        raise HTTPError(409, "busy")
    st, _, body, keep, _ = run(app, b"GET /e HTTP/1.1\r\nHost: d\r\n\r\n")
    assert st == 409 and body == b"busy\n" and keep


def _client_get(port, path):
    import socket
    s = socket.socket()
    s.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
    s.send(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        d = s.recv(512)
        if not d:
            break
        data += d
    s.close()
    return data


def _start_on_free_port(app):
    import os
    seed = int.from_bytes(os.urandom(2), "little")
    for i in range(20):  # below 49152: the simulated hardware layer maps 49152+ to WeMo host ports
        app.port = 20000 + (seed + 97 * i) % 20000
        try:
            app.start()
            return
        except OSError:
            continue
    raise OSError("no free port")


def _bindable(port):
    import socket
    s = socket.socket()
    try:
        s.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
    finally:
        s.close()


def test_start_serves_from_background_threads_and_stop():
    import time
    app = WebServer(port=0, workers=2, host="127.0.0.1")

    @app.route("/hi/<int:n>")
    def hi(req, n):
        return {"hi": n}
    _start_on_free_port(app)
    assert app._running  # start() returned: serving from its threads
    try:
        data = _client_get(app.bound_port, "/hi/7")
        assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b'{"hi": 7}')
        app.add_route("/added", lambda req: "added")
        assert _client_get(app.bound_port, "/added").endswith(b"added")
        assert app.request_count == 2
    finally:
        app.stop()
    assert app._threads == 0  # the poll thread and both workers ended
    try:
        _client_get(app.bound_port, "/hi/1")
        refused = False
    except OSError:
        refused = True
    assert refused
    time.sleep(0)


def test_a_second_port_served_and_closed_by_the_time_unlisten_returns():
    from iotutils.web.routing import Router
    app = WebServer(port=0, workers=2, host="127.0.0.1")
    side = Router()
    side.add_route("/side", lambda req: "side")
    _start_on_free_port(app)
    try:
        port = on_free_port(_bindable)[1]   # (not bound_port + 1: a device of another test may hold it)
        app.listen(port, side)
        # the poll loop binds it, and listen() returns once it has: what a device advertises next
        # (a WeMo device's SSDP location) is reachable at once
        assert _client_get(port, "/side").endswith(b"side")
        # dropped from a handler (as removing a WeMo device does): closed when unlisten returns,
        # although the thread that runs the handler was leading the poll loop
        def drop(req):
            app.unlisten(port)
            import socket
            s = socket.socket()
            try:
                s.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
                return "still open"
            except OSError:
                return "refused"
            finally:
                s.close()
        app.add_route("/drop", drop)
        assert _client_get(app.bound_port, "/drop").endswith(b"refused")
        assert _client_get(app.bound_port, "/drop").endswith(b"refused")  # twice: no harm
    finally:
        app.stop()


def test_handler_headers_override_and_repeat():
    app = WebServer()

    @app.route("/c")
    def c(req):
        return Response("x", headers={"content-type": "text/csv", "Set-Cookie": ["a=1", "b=2"]})
    conn_out = run(app, b"GET /c HTTP/1.1\r\nHost: d\r\n\r\n")[4].sock.out
    head = bytes(conn_out).split(b"\r\n\r\n")[0].lower()
    assert head.count(b"content-type:") == 1 and b"content-type: text/csv" in head
    assert b"set-cookie: a=1\r\n" in head and b"set-cookie: b=2" in head


def test_errorhandler_replaces_error_pages():
    app = make_app()
    app.log_errors = False

    @app.errorhandler(404)
    def portal(req):
        return Response.redirect("http://192.168.4.1/")

    @app.errorhandler(500)
    def oops(req):
        return {"error": "internal"}, 500
    st, h, _, _, _ = run(app, b"GET /generate_204 HTTP/1.1\r\nHost: connectivitycheck.gstatic.com\r\n\r\n")
    assert st == 302 and h["location"] == "http://192.168.4.1/"
    st, h, body, _, _ = run(app, b"GET /boom HTTP/1.1\r\nHost: d\r\n\r\n")
    assert st == 500 and body == b'{"error": "internal"}'
    assert run(app, b"DELETE /echo HTTP/1.1\r\nHost: d\r\n\r\n")[0] == 405  # no handler: the server's page


def _pipelined(app, reqs):
    """Serve a buffer holding `reqs` pipelined requests through app._serve, as a thread that does not
    lead: (answers written, connections handed back, bytes still buffered)."""
    conn = _Conn(FakeSock(), ("127.0.0.1", 1234), 0, app)
    one = b"GET /api/led/%d HTTP/1.1\r\nHost: d\r\n\r\n"
    data = b"".join(one % i for i in range(reqs))
    conn.buf = bytearray(1024)
    conn.mv = memoryview(conn.buf)
    conn.buf[:len(data)] = data
    conn.n = len(data)
    app._running = True
    out = array("i", [0] * (9 + 4 * 24))
    app._serve(conn, out, False)
    answers = bytes(conn.sock.out).count(b"HTTP/1.1 200 OK\r\n")
    back = app._returned
    app._returned = []
    return answers, back, conn


def test_pipelined_requests_are_answered_one_per_turn():
    app = make_app()
    answers, back, conn = _pipelined(app, 7)
    # one answer, then the connection goes back (kept) to the poll loop, which queues the next
    # request behind the others waiting: a pipelining client cannot hog a thread
    assert answers == 1 and len(back) == 1 and back[0] == (conn, True)
    # what is left starts exactly at the next unanswered request
    one = b"GET /api/led/%d HTTP/1.1\r\nHost: d\r\n\r\n"
    assert bytes(conn.buf[:conn.n]) == b"".join(one % i for i in range(1, 7))
    assert app.request_count == 1


def test_request_headers_built_on_first_use():
    app = WebServer()
    got = {}

    @app.route("/h")
    def h(req):
        got["before"] = req._headers
        got["h"] = req.headers
        got["same"] = req.headers is got["h"]
        return ""
    st, _, _, keep, _ = run(app, b"GET /h HTTP/1.1\r\nHost: d\r\nAccept: */*\r\nACCEPT: x\r\n\r\n")
    assert st == 200 and keep
    assert got["before"] is None and got["same"]
    assert got["h"] == {"host": "d", "accept": "*/*, x"}
    # a field that is not UTF-8 is opaque data (RFC 9110 5.5): one character per byte, as Python's
    # http.server reads it (it was a 400); a Host that is not UTF-8 is the client's error
    st, _, body, _, _ = run(app, b"GET /h HTTP/1.1\r\nHost: d\r\nX-Bad: caf\xe9 \xff\r\nX-Ok: caf\xc3\xa9\r\n\r\n")
    assert st == 200 and got["h"] == {"host": "d", "x-bad": "caf\xe9 \xff", "x-ok": "caf\xe9"}, got["h"]
    st, _, body, _, _ = run(app, b"GET /h HTTP/1.1\r\nHost: d\xff\r\n\r\n")
    assert st == 400 and b"UTF-8" in body


def test_no_memory_for_a_request_is_a_503_and_the_connection_goes_back_closed():
    app = make_app()

    def no_memory(conn, out, head_len):
        raise MemoryError("pretend the heap ran out")
    app._make_request = no_memory
    answers, back, conn = _pipelined(app, 2)
    assert answers == 0 and bytes(conn.sock.out).startswith(b"HTTP/1.1 503 ")
    assert len(back) == 1 and back[0] == (conn, False)


def test_long_request_line_parsed_on_a_small_thread_stack():
    # the server's threads have 8 KB stacks on an ESP32; the pure-Python parser must not recurse
    # per byte of a long target (MicroPython's re does for "+"/"*")
    import sys
    import time
    import _thread
    app = WebServer()

    @app.route("/files/<path:p>")
    def files(req, p):
        return {"len": len(p)}
    got = []

    def serve():
        for n in (90, 1500):  # ~190 bytes of request line, and ~3 KB
            try:
                st, _, body, _, _ = run(app, b"GET /files/" + b"a/" * n + b" HTTP/1.1\r\nHost: d\r\n\r\n",
                                        bufsize=4096)
                got.append((st, body))
            except Exception as e:  # RuntimeError: maximum recursion depth exceeded
                got.append(e)
    if sys.implementation.name != "micropython":
        serve()
    else:
        _thread.stack_size(8192)
        try:
            _thread.start_new_thread(serve, ())
        finally:
            _thread.stack_size(0)
        for _ in range(500):
            if len(got) == 2:
                break
            time.sleep(0.01)
    assert got == [(200, b'{"len": 180}'), (200, b'{"len": 3000}')], got
