# The answers of an emulated Belkin WeMo socket (wemo.py keeps the device: its port, subscribers and
# NOTIFYs): the device description, the basicevent1 SCPD, SOAP control and GENA (un)subscriptions.
# Loaded at the first WeMo request, not at boot.
#
# GENA callbacks (CallStranger, CVE-2020-12695): see wemo.py's module comment.
from iotutils._compat import ticks_diff, ticks_ms
from iotutils.auth import escape, token
from iotutils.web.response import Response
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
    b = path.encode()   # (its bytes: a str's characters one by one become qstrs never freed)
    if len(b) != len(path) or min(b) < 0x21 or max(b) > 0x7E:
        return None   # no space, control or non-ASCII character goes into our request line
    return host, port, path


# ---- descriptions ----

def _setup(dev, req):
    # each WeMo device its own MAC, as real ones have (a board's sockets all showed the board's
    # one): a locally administered one made of the light's index and the board's last four bytes
    mac = "06%02X%s" % (dev.light.index & 255, dev.alexa.serial.upper()[4:])
    return Response(_SETUP % (escape(dev.light.name), dev.serial, dev.udn_tail, mac, 1 if dev.light.on else 0),
                    200, None, 'text/xml; charset="utf-8"')


def _scpd(dev, req):
    return Response(_SCPD, 200, None, 'text/xml; charset="utf-8"')

# ---- SOAP ----

def _control(dev, req):
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
    light = dev.light
    if action == "GetBinaryState":
        return _soap(action, "<BinaryState>%d</BinaryState>" % (1 if light.on else 0))
    if action == "GetFriendlyName":
        return _soap(action, "<FriendlyName>%s</FriendlyName>" % escape(light.name))
    if action == "SetBinaryState":
        v = _tag(body, "BinaryState")
        v = v.strip()[:1] if v else ""
        if v not in ("0", "1"):
            return _fault(402, "Invalid Args")
        on = v == "1"
        with dev.alexa._lock:
            changed = light.on != on
            light.on = on
        if changed:
            dev.alexa._changed(light)
        return _soap(action, "<BinaryState>%s</BinaryState>" % v)
    return _fault(401, "Invalid Action")


def _soap(action, inner):
    return Response(_SOAP % (action, inner, action), 200, None, 'text/xml; charset="utf-8"')


def _fault(code, text):
    return Response(_FAULT % (code, text), 500, None, 'text/xml; charset="utf-8"')

# ---- GENA ----

def _event(dev, req):
    h = req.headers
    sid = h.get("sid")
    now = ticks_ms()
    try:
        timeout = int(h.get("timeout", "Second-%d" % _MAX_TIMEOUT_S).rpartition("-")[2])
    except ValueError:
        timeout = _MAX_TIMEOUT_S
    timeout = max(60, min(timeout, _MAX_TIMEOUT_S))
    lock = dev.alexa._lock
    if req.method == "UNSUBSCRIBE":
        with lock:
            n = len(dev._subs)
            dev._subs = [s for s in dev._subs if s[0] != sid]
            found = len(dev._subs) != n
        return Response(b"", 200 if found else 412)
    if sid:  # renewal
        if "callback" in h or "nt" in h:
            return Response(b"", 400)
        with lock:
            for s in dev._subs:
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
        subs = [s for s in dev._subs if ticks_diff(s[4], now) > 0 and (s[1], s[2], s[3]) != (host, cb[1], cb[2])]
        mine = [s for s in subs if s[1] == host]
        if len(mine) >= _MAX_SUBS_PER_HOST:
            subs.remove(mine[0])
        subs.append(sub)
        dev._subs = subs[-_MAX_SUBS:]
    # the initial event (UPnP: after the SUBSCRIBE answer): from the housekeeping, which runs later
    dev.alexa._owe()
    return Response(b"", 200, {"SID": sid, "TIMEOUT": "Second-%d" % timeout})


def serve(dev, req):
    """Answer a request on WeMo device dev's port (its four routes)."""
    p = req.path
    if p == "/setup.xml":
        return _setup(dev, req)
    if p == "/eventservice.xml":
        return _scpd(dev, req)
    if p == "/upnp/control/basicevent1":
        return _control(dev, req)
    return _event(dev, req)
