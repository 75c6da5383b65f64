# Belkin WeMo socket emulation for one on/off device (Alexa's other local protocol; used by alexa.py for
# lights added with wemo=True). Each device has its own TCP port (49153, 49154, ... like a real WeMo and
# fauxmo), listened on by the Alexa web server (WebServer.listen: a socket, no thread of its own):
#   GET  /setup.xml                    device description (what pywemo and Echo read)
#   GET  /eventservice.xml             basicevent1 SCPD
#   POST /upnp/control/basicevent1     SOAP GetBinaryState / SetBinaryState / GetFriendlyName
#   SUBSCRIBE / UNSUBSCRIBE /upnp/event/basicevent1   GENA: BinaryState NOTIFYs to the CALLBACK URL
# This module is the device: its port, subscribers and NOTIFYs. Its answers to those requests are
# wemo_api.py, loaded at the first one. The NOTIFYs are sent by the Alexa step of the housekeeping,
# never from a request handler, and never wait there: a subscriber that is not ready is come back to
# at the next step.
#
# GENA callbacks (CallStranger, CVE-2020-12695): a CALLBACK is accepted only when its host is the
# subscriber's own address (the TCP peer of the SUBSCRIBE, as a dotted IPv4 literal: no name is ever
# looked up), its port 1..65535 and its path short and printable; anything else is 412 before any
# connection is made, so the device never connects, on anyone's behalf, to a host that did not ask,
# and the answer is the same whether or not something listens there.
import errno
import select
import socket

from iotutils._compat import load, ready, ticks_add, ticks_diff, ticks_ms

_PROPSET = const('<e:propertyset xmlns:e="urn:schemas-upnp-org:event-1-0"><e:property>'
                 '<BinaryState>%d</BinaryState></e:property></e:propertyset>')


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
        h = self._serve   # (one bound method for the four routes)
        r.add_route("/setup.xml", h, ("GET",))
        r.add_route("/eventservice.xml", h, ("GET",))
        r.add_route("/upnp/control/basicevent1", h, ("POST",))
        r.add_route("/upnp/event/basicevent1", h, ("SUBSCRIBE", "UNSUBSCRIBE"))

    def start(self):
        self.alexa.app.listen(self.port, self.router)

    def stop(self):
        self.alexa.app.unlisten(self.port)

    def _serve(self, req):
        # the answers (descriptions, SOAP, GENA) load at the first request: wemo_api.py
        return load("iotutils.wemo_api").serve(self, req)

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
