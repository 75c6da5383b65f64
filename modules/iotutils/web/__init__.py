# The web server, one module per part (see iotutils/server.py for the names apps import):
#   engine     WebServer: the poll loop, reading heads, answering inline or by a worker, writing answers
#   request    Request, the body reader, URL decoding
#   response   Response, make_response, HTTPError, status and file-type tables
#   routing    Route and Router (the route table and hooks WebServer inherits)
#   parser     the request parser: the firmware's C core, else iotutils.http
#   multipart  streamed multipart/form-data uploads
#   static     files served from a folder
