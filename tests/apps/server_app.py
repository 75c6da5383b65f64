# Device app for tests/integration/test_server.py: one WebServer with a route for every behaviour under test.
# Tuning through the environment (SRV_WORKERS, SRV_MAX_CONN, SRV_REQUEST_TIMEOUT, SRV_IDLE_TIMEOUT,
# SRV_MAX_BODY, SRV_SLOW_HEAD, SRV_STATIC); prints "SERVER READY" once serving.
import os
import time

try:
    import hashlib
except ImportError:
    hashlib = None

from iotutils.server import Multipart, Response, WebServer


def env_int(name, default):
    v = os.getenv(name)
    return int(v) if v else default


app = WebServer(port=80, workers=env_int("SRV_WORKERS", 3))
app.max_connections = env_int("SRV_MAX_CONN", 250)
app.request_timeout = env_int("SRV_REQUEST_TIMEOUT", 2000)
app.idle_timeout = env_int("SRV_IDLE_TIMEOUT", 60000)
app.max_body = env_int("SRV_MAX_BODY", 16384)
app.slow_head_ms = env_int("SRV_SLOW_HEAD", 250)
ticks = [0]  # advanced by the main loop below: user code keeps running beside the server


@app.route("/")
def index(req):
    return "<h1>hello</h1>"


@app.route("/api/led/<int:n>", methods=("GET", "POST", "PUT"))
def led(req, n):
    return {"n": n, "method": req.method, "body": req.json()}


@app.route("/echo", methods=("POST", "PUT"))
def echo(req):
    return Response(req.body, content_type=req.headers.get("content-type", "application/octet-stream"))


@app.route("/form", methods=("POST",))
def form(req):
    return req.form()


@app.route("/query")
def query(req):
    return {"path": req.path, "query": req.query}


@app.route("/headers")
def headers(req):
    return req.headers


@app.route("/files/<path:p>")
def files(req, p):
    return "path=" + p, 200, {"X-Path": p}


# answered inside the poll loop (literal path, no body): every result type it formats itself
@app.route("/utf8", methods=("GET", "DELETE"))
def utf8(req):
    return "Gr\u00fc\u00dfe, \u4e16\u754c"  # 9 characters, 15 bytes


@app.route("/bytes")
def raw_bytes(req):
    return b"\x00\x01binary\xff"


@app.route("/list")
def a_list(req):
    return [1, "zwei", {"drei": "\u00e9"}]


@app.route("/big")
def big(req):
    return "x" * int(req.query.get("n", "5000"))  # more than the answer buffer holds


@app.route("/none")
def nothing(req):
    return None  # -> 204, through the general path


@app.route("/user/<name>/<int:age>")
def user(req, name, age):
    return {"name": name, "age": age}


@app.route("/upload", methods=("POST", "PUT"), stream=True)
def upload(req):
    h = hashlib.sha256()
    buf = bytearray(2048)
    total = 0
    while True:
        n = req.stream.readinto(buf)
        if not n:
            break
        h.update(memoryview(buf)[:n])
        total += n
    return {"size": total, "sha256": "".join("%02x" % b for b in h.digest())}


@app.route("/multipart", methods=("POST",), stream=True)
def multipart(req):
    parts = []
    buf = bytearray(1024)
    for part in Multipart(req):
        if part.filename is None:
            parts.append({"name": part.name, "value": part.text()})
            continue
        h = hashlib.sha256()
        size = 0
        while True:
            n = part.readinto(buf)
            if not n:
                break
            h.update(memoryview(buf)[:n])
            size += n
        parts.append({"name": part.name, "filename": part.filename, "type": part.content_type,
                      "size": size, "sha256": "".join("%02x" % b for b in h.digest())})
    return parts


@app.route("/chunks/<int:n>")
def chunks(req, n):
    def gen():
        for i in range(n):
            yield "line %d\n" % i
    return Response(gen(), content_type="text/plain")


@app.route("/boom")
def boom(req):
    raise RuntimeError("handler failed on purpose")


@app.route("/oom")
def oom(req):
    raise MemoryError("pretend the heap ran out")


@app.route("/slow")
def slow(req):
    time.sleep(float(req.query.get("s", "0.5")))
    return "slept"


@app.route("/status/<int:code>")
def status(req, code):
    return "status %d" % code, code


@app.route("/stats")
def stats(req):
    import gc
    return {"requests": app.request_count, "idle_ms": app.idle_ms(), "ticks": ticks[0],
            "conns": len(app._conns), "mem_free": gc.mem_free()}


_holes = []


@app.route("/t/fragment", methods=("POST",))
def fragment(req):
    # Fill the heap with 4 KB blocks, then free every other one: plenty of free memory, but no free
    # block larger than about 4 KB (a heap after a day of use looks like this, only less regular)
    import gc
    gc.collect()
    blocks = []
    try:
        while True:
            blocks.append(bytearray(4096))
    except MemoryError:
        pass
    for i in range(0, len(blocks), 2):
        blocks[i] = None
    _holes.append(blocks)
    gc.collect()
    return {"blocks": len(blocks), "free": gc.mem_free()}


@app.route("/t/unfragment", methods=("POST",))
def unfragment(req):
    del _holes[:]
    return {"ok": True}


@app.route("/t/json_count", methods=("POST",))
def json_count(req):
    d = req.json()
    return {"folders": len(d), "values": sum(len(v) for v in d.values())}


@app.route("/t/raw_len", methods=("POST",))
def raw_len(req):
    return {"len": len(req.body)}


@app.route("/meminfo")
def meminfo(req):
    import gc
    import micropython
    gc.collect()
    micropython.mem_info(1)  # the heap map, on the console
    return {"mem_free": gc.mem_free()}


@app.before_request
def auth(req):
    if req.path.startswith("/private") and req.headers.get("authorization") != "Bearer letmein":
        return Response("login first\n", 401, {"WWW-Authenticate": "Bearer"}, "text/plain")


@app.route("/private/data")
def private(req):
    return {"secret": 42}


if os.getenv("SRV_STATIC"):
    app.static("/static", os.getenv("SRV_STATIC"), max_age=600)

app.start()


# a route added while the server runs (admin/alexa/portal mount theirs later)
def late(req):
    return "late route"


app.add_route("/late", late, ("GET",))
print("SERVER READY port", app.bound_port)

while True:
    ticks[0] += 1
    time.sleep(0.05)
