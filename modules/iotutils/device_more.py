# Device's methods that run at start() or when the admin page asks: the boot report, the memory
# budget (heap, stacks, sockets) and the socket table's share for web clients, the OTA source and
# auto-update settings, MQTT started again with new settings, and every() (a program's tasks are
# given before start). Device hands them out (its __getattr__) and loads this module when one is
# called; start() lets it go after its reports, so a device at rest holds none of it. Each function
# takes the Device as `self`.
import gc
import sys

from iotutils import __version__, hal
from iotutils._compat import ticks_ms

_SOCKET_RESERVE = const(2)      # lwIP sockets kept for short-lived connections the device makes
_MIN_CLIENTS = const(4)         # web clients at least, whatever the board's socket table


def reload_mqtt(self):
    """Start MQTT again with the settings now stored (the admin page calls this after a change):
    dev.mqtt is a new client, which carries the app's own subscriptions and on_connect callbacks."""
    with self._lock:   # two saves in a row: one client after the other, never two at once
        old = self._mq
        if old is not None:
            old.stop()
        self._mq = self.mqtt = None
        self._make_mqtt()
        if self._mq is not None and old is not None:
            self._mq.adopt(old)   # the app's own subscriptions go on with the new client
        if self._mq is not None and self._started:
            self._mq.start()
        return self.mqtt


def set_ota_source(self, repo, channel="release"):
    """Change where OTA looks for updates (persisted). ValueError for a bad repo/channel."""
    return set_ota_settings(self, repo, channel)


def check_ota_source(self, repo, channel="release"):
    """ValueError naming the field if set_ota_source(repo, channel) would refuse them."""
    if not self._want["ota"]:
        raise ValueError("repo: OTA is turned off on this device (Device(ota=False))")
    from iotutils.ota import OTA
    kw = dict(self._ota_kw, channel=channel or "release")
    if self._ota_api:
        kw["api"] = self._ota_api
    OTA(repo=repo or None, **kw)


def set_ota_settings(self, repo, channel="release", more=()):
    """set_ota_source() with more [(variable, value)] written in the same step (the admin page's
    auto-update settings): all of them or, after a power cut or an error, none."""
    check_ota_source(self, repo, channel)   # before anything is stored
    from iotutils import persist
    # both or neither: a new repo with the old channel's commit would be a source nobody chose
    persist.set_all([(self._ota_repo, repo or ""), (self._ota_channel, channel or "release")] + list(more))
    self._make_ota()
    if self.ota is not None and self._started:
        self._resume_auto_update()
    return self.ota


def boot_report(self):
    """The console's first lines: what runs (firmware version, slot), why it booted, how much
    heap is left."""
    gc.collect()
    free = hal.mem_free()
    total = hal.heap_total()
    if self.ota is not None:
        fw = self.ota.status()
    else:
        try:
            fw = hal.running_desc()
        except (OSError, ValueError):
            fw = {}
    state = "pending verify" if hal.ota_pending() else "valid"
    lines = [
        "iotutils %s on %s: %s" % (__version__, hal.PLATFORM, self.name),
        "  firmware: slot %s (%s), %s %s%s" % (
            hal.ota_running(), state, fw.get("project") or "?", fw.get("version") or "?",
            ", last update rolled back" if hal.ota_rolled_back() else ""),
        "  reset cause: %s" % hal.reset_cause(),
        "  heap free: %d of %d bytes (%d %%)" % (free, total, free * 100 // total if total else 0),
    ]
    return "\n".join(lines)


def _fit_sockets(self):
    # the board's lwIP socket table (hal.max_sockets()) is shared: web clients get what the
    # device's own sockets and a reserve for short-lived ones (an OTA download, a WeMo NOTIFY,
    # NTP) leave, so an accept never fails for want of a socket the device itself needs
    n = hal.max_sockets()
    if not n:
        return
    s = sockets(self)
    own = s["listen"] + s["udp"] + (1 if self._mq is not None else 0) + (1 if self.wifi is not None else 0)
    clients = n - own - _SOCKET_RESERVE
    self.app.max_connections = max(_MIN_CLIENTS, min(self.app.max_connections, clients))


def sockets(self):
    """What the device holds open: {"listen", "tcp", "udp", "tls", "tcp_max"} (the memory budget's
    input; WeMo ports are the web server's)."""
    s = self.app.sockets()
    s["tls"] = 0
    a = self.alexa
    if a is not None and a._ssdp_sock() is not None:
        s["udp"] += 1
    w = self.wifi
    if w is not None and w._dns_sock() is not None:
        s["udp"] += 1
    m = self.mqtt
    if m is not None and m.connected:
        s["tcp"] += 1
        s["tls"] += 1 if m._tls else 0
    return s


def memory(self, largest=False, lines=False):
    """The whole device's memory budget (iotutils.memory.budget: heap free, total and, with
    largest=True, the largest free block; every thread's stack; every socket's lwIP cost; their
    sum), or with lines=True the console lines of it. The module is dropped again afterwards:
    a report now and then must not keep its code in the heap."""
    import iotutils
    from iotutils import memory
    try:
        b = memory.budget(sockets(self), largest)
        b["heap"]["tidied"] = self.heap_tidies
        return memory.report(b) if lines else b
    finally:
        sys.modules.pop("iotutils.memory", None)
        try:
            del iotutils.memory   # MicroPython: the package holds its submodules too
        except (AttributeError, TypeError):
            pass


def every(self, period_ms, fn=None):
    """Call fn() from the main loop every period_ms (user code runs beside the server). Also a
    decorator: @dev.every(1000). A task must return quickly: the loop feeds the watchdog."""
    if fn is None:
        return lambda f: every(self, period_ms, f)
    if isinstance(period_ms, bool) or not isinstance(period_ms, int) or not 0 <= period_ms < 1 << 29:
        # (ticks count in a ring of 2**30 ms: a longer period would never come round)
        raise ValueError("period_ms: milliseconds from 0 to 2**29 - 1 (6 days) expected, got %r" % (period_ms,))
    if not callable(fn):   # (it failed at every pass of the main loop instead)
        raise TypeError("fn: a function expected, got %s" % type(fn).__name__)
    self._tasks.append([period_ms, ticks_ms(), fn])
    return fn
