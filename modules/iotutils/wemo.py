# Belkin WeMo socket emulation for one on/off device (Alexa's other local protocol; used by alexa.py for
# lights added with wemo=True). Each device has its own TCP port (49153, 49154, ... like a real WeMo and
# fauxmo), listened on by the Alexa web server (WebServer.listen: a socket, no thread of its own):
#   GET  /setup.xml                    device description (what pywemo and Echo read)
#   GET  /eventservice.xml             basicevent1 SCPD
#   POST /upnp/control/basicevent1     SOAP GetBinaryState / SetBinaryState / GetFriendlyName
#   SUBSCRIBE / UNSUBSCRIBE /upnp/event/basicevent1   GENA: BinaryState NOTIFYs to the CALLBACK URL
# The NOTIFYs are sent by the Alexa step of the housekeeping, never from a request handler, and
# never wait there: a subscriber that is not ready is come back to at the next step.
#
# GENA callbacks (CallStranger, CVE-2020-12695): a CALLBACK is accepted only when its host is the
# subscriber's own address (the TCP peer of the SUBSCRIBE, as a dotted IPv4 literal: no name is ever
# looked up), its port 1..65535 and its path short and printable; anything else is 412 before any
# connection is made, so the device never connects, on anyone's behalf, to a host that did not ask,
# and the answer is the same whether or not something listens there.
import errno
import select
import socket

from iotutils._compat import const, ready, ticks_add, ticks_diff, ticks_ms
from iotutils.auth import escape, token
from iotutils.server import Response
from iotutils.ssdp import ip4

_MAX_SUBS = const(4)           # subscribers per device; the oldest goes
_MAX_SUBS_PER_HOST = const(2)  # one host's new subscription pushes out its own oldest, not others'
_MAX_TIMEOUT_S = const(1800)
_MAX_PATH = const(128)         # callback path length (pywemo's: /sub/basicevent/<32 characters>)

_SETUP = """<?xml version="1.0"?>
<root xmlns="urn:Belkin:device-1-0">
<specVersion><major>1</major><minor>0</minor></specVersion>
<device>
<deviceType>urn:Belkin:device:controllee:1</deviceType>
<friendlyName>%s</friendlyName>
<manufacturer>Belkin International Inc.</manufacturer>
<manufacturerURL>http://www.belkin.com</manufacturerURL>
<modelDescription>Belkin Plugin Socket 1.0</modelDescription>
<modelName>Socket</modelName>
<modelNumber>1.0</modelNumber>
<modelURL>http://www.belkin.com/plugin/</modelURL>
<serialNumber>%s</serialNumber>
<UDN>uuid:%s</UDN>
<UPC>123456789</UPC>
<macAddress>%s</macAddress>
<firmwareVersion>WeMo_WW_2.00.11057.PVT-OWRT-SNS</firmwareVersion>
<iconVersion>0|49153</iconVersion>
<binaryState>%d</binaryState>
<serviceList>
<service>
<serviceType>urn:Belkin:service:basicevent:1</serviceType>
<serviceId>urn:Belkin:serviceId:basicevent1</serviceId>
<controlURL>/upnp/control/basicevent1</controlURL>
<eventSubURL>/upnp/event/basicevent1</eventSubURL>
<SCPDURL>/eventservice.xml</SCPDURL>
</service>
</serviceList>
</device>
</root>
"""

# the service description, written out: a constant of the frozen module stays in flash, where one
# built by "%" at import took 1 KB of heap
_SCPD = """<?xml version="1.0"?>
<scpd xmlns="urn:Belkin:service-1-0">
<specVersion><major>1</major><minor>0</minor></specVersion>
<actionList>
<action><name>SetBinaryState</name><argumentList>
<argument><retval/><name>BinaryState</name>
<relatedStateVariable>BinaryState</relatedStateVariable><direction>in</direction></argument>
</argumentList></action>
<action><name>GetBinaryState</name><argumentList>
<argument><retval/><name>BinaryState</name>
<relatedStateVariable>BinaryState</relatedStateVariable><direction>out</direction></argument>
</argumentList></action>
<action><name>GetFriendlyName</name><argumentList>
<argument><retval/><name>FriendlyName</name>
<relatedStateVariable>FriendlyName</relatedStateVariable><direction>out</direction></argument>
</argumentList></action>
</actionList>
<serviceStateTable>
<stateVariable sendEvents="yes"><name>BinaryState</name><dataType>Boolean</dataType>
<defaultValue>0</defaultValue></stateVariable>
<stateVariable sendEvents="yes"><name>FriendlyName</name><dataType>string</dataType></stateVariable>
</serviceStateTable>
</scpd>
"""

_SOAP = ('<?xml version="1.0" encoding="utf-8"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
         's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>\r\n'
         '<u:%sResponse xmlns:u="urn:Belkin:service:basicevent:1">\r\n%s\r\n</u:%sResponse>\r\n'
         '</s:Body></s:Envelope>\r\n')

_FAULT = ('<?xml version="1.0" encoding="utf-8"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
          's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><s:Fault>'
          '<faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>'
          '<UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>%d</errorCode>'
          '<errorDescription>%s</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>\r\n')

_PROPSET = ('<e:propertyset xmlns:e="urn:schemas-upnp-org:event-1-0"><e:property>'
            '<BinaryState>%d</BinaryState></e:property></e:propertyset>')


def _tag(text, name):
    """The text of the first <name>...</name> (any namespace prefix) in text, or None."""
    i = text.find(name + ">")
    while i > 0 and text[i - 1] not in "<:":
        i = text.find(name + ">", i + 1)
    if i < 0:
        return None
    i += len(name) + 1
    j = text.find("</", i)
    return text[i:j] if j >= 0 else None


def _without_comments(text):
    """text without its XML comments: a tag inside <!-- --> is no element (a body whose comment held
    <BinaryState>1</BinaryState> before the real 0 switched the socket on)."""
    i = text.find("<!--")
    while i >= 0:
        j = text.find("-->", i + 4)
        text = text[:i] if j < 0 else text[:i] + text[j + 3:]
        i = text.find("<!--", i)
    return text


def parse_callback(value):
    """GENA CALLBACK "<http://host:port/path>" (first URL of several) -> (host, port, path) or None.
    The port must be 1..65535 (digits only), the path at most _MAX_PATH printable characters."""
    v = value.strip()
    if not v.startswith("<") or ">" not in v:
        return None
    url = v[1:v.find(">")]
    if not url.startswith("http://"):
        return None
    hostport, _, path = url[7:].partition("/")
    host, _, port = hostport.partition(":")
    if port:
        if len(port) > 5 or port.strip("0123456789"):
            return None
        port = int(port)
    else:
        port = 80
    path = "/" + path
    if not host or not 0 < port < 65536 or len(path) > _MAX_PATH:
        return None
    for c in path:
        if not "!" <= c <= "~":  # no space, control or non-ASCII character goes into our request line
            return None
    return host, port, path


class WemoDevice:
    """The WeMo face of one Light: its server, description, SOAP control and GENA subscribers."""

    SSDP_TYPES = ("upnp:rootdevice", "urn:Belkin:device:controllee:1", "urn:Belkin:service:basicevent:1")

    def __init__(self, alexa, light, port):
        from iotutils.web.routing import Router
        self.alexa = alexa
        self.light = light
        self.port = port
        self.serial = alexa.serial.upper() + "%04X" % light.index
        self.udn_tail = "Socket-1_0-" + self.serial
        self.entry = None
        self._subs = []    # [sid, host, port, path, expires_ms, seq, owed an event (1/0)]
        # its own port, served by the Alexa web server's threads (WebServer.listen): a WeMo device
        # costs a listening socket, not a server with a thread and buffers of its own
        r = self.router = Router()
        r.server_name = "Unspecified, UPnP/1.0, Unspecified"
        r.add_route("/setup.xml", self._setup, ("GET",))
        r.add_route("/eventservice.xml", self._scpd, ("GET",))
        r.add_route("/upnp/control/basicevent1", self._control, ("POST",))
        r.add_route("/upnp/event/basicevent1", self._event, ("SUBSCRIBE", "UNSUBSCRIBE"))

    def start(self):
        self.alexa.app.listen(self.port, self.router)

    def stop(self):
        self.alexa.app.unlisten(self.port)

    # ---- descriptions ----
    def _setup(self, req):
        # each WeMo device its own MAC, as real ones have (a board's sockets all showed the board's
        # one): a locally administered one made of the light's index and the board's last four bytes
        mac = "06%02X%s" % (self.light.index & 255, self.alexa.serial.upper()[4:])
        return Response(_SETUP % (escape(self.light.name), self.serial, self.udn_tail, mac, 1 if self.light.on else 0),
                        200, None, 'text/xml; charset="utf-8"')

    def _scpd(self, req):
        return Response(_SCPD, 200, None, 'text/xml; charset="utf-8"')

    # ---- SOAP ----
    def _control(self, req):
        action = req.headers.get("soapaction", "").strip('"')
        action = action.rpartition("#")[2]
        try:
            body = _without_comments(bytes(req.body).decode())
        except UnicodeError:
            body = ""
        if not action:
            for a in ("SetBinaryState", "GetBinaryState", "GetFriendlyName"):
                if ":" + a in body or "<" + a in body:
                    action = a
                    break
        light = self.light
        if action == "GetBinaryState":
            return self._soap(action, "<BinaryState>%d</BinaryState>" % (1 if light.on else 0))
        if action == "GetFriendlyName":
            return self._soap(action, "<FriendlyName>%s</FriendlyName>" % escape(light.name))
        if action == "SetBinaryState":
            v = _tag(body, "BinaryState")
            v = v.strip()[:1] if v else ""
            if v not in ("0", "1"):
                return self._fault(402, "Invalid Args")
            on = v == "1"
            with self.alexa._lock:
                changed = light.on != on
                light.on = on
            if changed:
                self.alexa._changed(light)
            return self._soap(action, "<BinaryState>%s</BinaryState>" % v)
        return self._fault(401, "Invalid Action")

    def _soap(self, action, inner):
        return Response(_SOAP % (action, inner, action), 200, None, 'text/xml; charset="utf-8"')

    def _fault(self, code, text):
        return Response(_FAULT % (code, text), 500, None, 'text/xml; charset="utf-8"')

    # ---- GENA ----
    def _event(self, req):
        h = req.headers
        sid = h.get("sid")
        now = ticks_ms()
        try:
            timeout = int(h.get("timeout", "Second-%d" % _MAX_TIMEOUT_S).rpartition("-")[2])
        except ValueError:
            timeout = _MAX_TIMEOUT_S
        timeout = max(60, min(timeout, _MAX_TIMEOUT_S))
        lock = self.alexa._lock
        if req.method == "UNSUBSCRIBE":
            with lock:
                n = len(self._subs)
                self._subs = [s for s in self._subs if s[0] != sid]
                found = len(self._subs) != n
            return Response(b"", 200 if found else 412)
        if sid:  # renewal
            if "callback" in h or "nt" in h:
                return Response(b"", 400)
            with lock:
                for s in self._subs:
                    if s[0] == sid and ticks_diff(s[4], now) > 0:
                        s[4] = now + timeout * 1000
                        break
                else:
                    return Response(b"", 412)
            return Response(b"", 200, {"SID": sid, "TIMEOUT": "Second-%d" % timeout})
        cb = parse_callback(h.get("callback", ""))
        peer = ip4(req.client_ip)
        # the subscriber's own address only (see the module comment): refused before any connection
        if cb is None or peer is None or ip4(cb[0]) != peer or h.get("nt") != "upnp:event":
            return Response(b"", 412)
        host = "%d.%d.%d.%d" % (peer[0], peer[1], peer[2], peer[3])
        sid = "uuid:" + token(16)
        sub = [sid, host, cb[1], cb[2], now + timeout * 1000, 0, 1]
        with lock:
            # live ones, but not an earlier subscription to this same callback (a client subscribing again)
            subs = [s for s in self._subs if ticks_diff(s[4], now) > 0 and (s[1], s[2], s[3]) != (host, cb[1], cb[2])]
            mine = [s for s in subs if s[1] == host]
            if len(mine) >= _MAX_SUBS_PER_HOST:
                subs.remove(mine[0])
            subs.append(sub)
            self._subs = subs[-_MAX_SUBS:]
        # the initial event (UPnP: after the SUBSCRIBE answer): from the housekeeping, which runs later
        self.alexa._owe()
        return Response(b"", 200, {"SID": sid, "TIMEOUT": "Second-%d" % timeout})

    def changed(self):
        """The light's on/off changed: queue a NOTIFY to every live subscriber."""
        now = ticks_ms()
        with self.alexa._lock:
            subs = self._subs
            for s in subs:
                if ticks_diff(s[4], now) <= 0:   # one expired: a new list without them
                    subs = self._subs = [x for x in subs if ticks_diff(x[4], now) > 0]
                    break
            # (else the same list: one made per change would outlive the request and split the heap)
            for s in subs:
                s[6] = 1
        self.alexa._owe()

    def owed(self):
        """The live subscribers owed an event."""
        return [s for s in self._subs if s[6]]

    def _notify(self, sub, on):
        """Send one event NOTIFY: a generator that the Alexa step of the housekeeping advances, which
        yields whenever the subscriber is not ready (connecting, reading, or not answering), so a slow
        or silent subscriber holds up nothing: the housekeeping may run in the app's main loop, and
        every Hue or WeMo change waits for that loop to deliver its callback. Past notify_timeout the
        subscriber is dropped."""
        with self.alexa._lock:
            if sub not in self._subs:
                return   # dropped (or expired) since this NOTIFY was queued: no time spent on it
            seq = sub[5]
            sub[5] = seq + 1
        body = _PROPSET % (1 if on else 0)
        data = ("NOTIFY %s HTTP/1.1\r\nHOST: %s:%d\r\nCONTENT-TYPE: text/xml; charset=\"utf-8\"\r\n"
                "NT: upnp:event\r\nNTS: upnp:propchange\r\nSID: %s\r\nSEQ: %d\r\nCONTENT-LENGTH: %d\r\n"
                "Connection: close\r\n\r\n%s" % (sub[3], sub[1], sub[2], sub[0], seq, len(body), body)).encode()
        until = ticks_add(ticks_ms(), int(self.alexa.notify_timeout * 1000))
        s = socket.socket()
        try:
            s.setblocking(False)
            try:
                s.connect(socket.getaddrinfo(sub[1], sub[2])[0][-1])
            except OSError as e:
                if e.args[0] not in (errno.EINPROGRESS, errno.EAGAIN):
                    raise
            p = select.poll()
            p.register(s, select.POLLOUT)
            sent = 0
            while sent < len(data):
                if ready(p, 0):
                    try:
                        sent += s.send(data[sent:]) or 0
                        continue
                    except OSError as e:
                        if e.args[0] != errno.EAGAIN:
                            raise
                if ticks_diff(ticks_ms(), until) >= 0:
                    raise OSError(errno.ETIMEDOUT)
                yield
            # read the answer to its end (closing early resets the subscriber's socket mid-reply)
            p.modify(s, select.POLLIN)
            got = 0
            while got < 2048:
                if ready(p, 0):
                    try:
                        part = s.recv(2048 - got)
                    except OSError as e:
                        if e.args[0] != errno.EAGAIN:
                            raise
                        part = None
                    if part == b"":
                        break
                    if part:
                        got += len(part)
                        continue
                if ticks_diff(ticks_ms(), until) >= 0:
                    raise OSError(errno.ETIMEDOUT)
                yield
        except OSError:
            # gone or stuck: drop it, so it cannot cost every change the wait again; a live client
            # renews, gets 412, subscribes again
            with self.alexa._lock:
                self._subs = [x for x in self._subs if x is not sub]
        finally:
            s.close()
