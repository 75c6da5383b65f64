# The threaded web server, as apps import it:
#
#     from iotutils.server import WebServer, Response
#     app = WebServer(port=80, workers=3)
#     @app.route("/api/led/<int:n>", methods=("GET", "POST"))
#     def led(req, n):                  # req.method .path .query .headers .body .json() .form()
#         return {"n": n}               # dict -> JSON; str -> HTML; bytes; (body, status); Response
#     app.start()                       # serves from background threads; app.stop()
#
# The code lives in the iotutils.web package, one module per part: engine (the poll loop and every
# step of the usual request: the one hot file), request, response, routing, multipart, static.
from iotutils.web.engine import WebServer  # noqa: F401 - re-exported
from iotutils.web.request import Request, parse_qs, unquote  # noqa: F401 - re-exported
from iotutils.web.response import HTTPError, Response, http_date, make_response  # noqa: F401 - re-exported


def __getattr__(name):
    if name == "__all__":
        from iotutils._compat import public_names
        return public_names(globals(), ("Multipart",))
    # loaded on first use: most apps never take an upload
    if name == "Multipart":
        from iotutils.web.multipart import Multipart

        return Multipart
    raise AttributeError(name)
