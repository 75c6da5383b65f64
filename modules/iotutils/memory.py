# The whole device's memory, counted as the chip spends it: the MicroPython heap, every thread's stack
# (on an ESP32 each thread is a FreeRTOS task whose stack comes from internal RAM, outside the heap)
# and every open socket (lwIP's control blocks and buffers, internal RAM too). Threads are counted
# from _compat.THREADS (all of iotutils' threads start through start_thread), sockets from what the
# device's parts hold open. The chip figures are an ESP32 without PSRAM running MicroPython v1.28 on
# ESP-IDF v5.5 with this project's sdkconfig (docs/memory.md says where each comes from); the
# simulated device models that chip, so it reports the same figures for the threads and sockets it
# runs. Its heap is the host's, whose objects are twice the size on a 64-bit host: the whole-device
# sum counts the heap in chip bytes (heap bytes x 4 / pointer size).
#
#   b = memory.budget(sockets)   # sockets: {"listen", "tcp", "udp", "tls", "tcp_max"} (Device.memory())
#   print("\n".join(memory.report(b)))
import gc
import sys

from iotutils import hal
from iotutils._compat import THREADS

#: the main task's stack (MICROPY_TASK_STACK_SIZE, ports/esp32/mpconfigport.h)
MAIN_STACK = const(16384)
#: a thread started without a size (MP_THREAD_DEFAULT_STACK_SIZE: 4 KB minimum + 1 KB check margin)
THREAD_STACK_DEFAULT = const(5120)
#: per thread besides its stack: FreeRTOS's task control block and MicroPython's thread record
THREAD_OVERHEAD = const(400)
#: a TCP socket's fixed cost: lwip_sock, netconn, tcp_pcb and its receive mailbox (32-bit sizes)
TCP_FIXED = const(400)
#: a UDP socket's: lwip_sock, netconn, udp_pcb and mailbox
UDP_FIXED = const(256)
#: data a TCP connection can hold: the receive window plus the send buffer (CONFIG_LWIP_TCP_WND_DEFAULT
#: and CONFIG_LWIP_TCP_SND_BUF_DEFAULT, 5760 each: 4 x MSS)
TCP_BUFFERS = const(11520)
#: datagrams a UDP socket can queue (CONFIG_LWIP_UDP_RECVMBOX_SIZE 6) x a Wi-Fi frame's pbuf
UDP_BUFFERS = const(6 * 1600)
#: a TLS session (mbedTLS, asymmetric buffers: 16 KB in + 4 KB out, plus its contexts)
TLS_SESSION = const(27 * 1024)

_WORD = 4   # the chip's pointer size
_PROBE_MAX = const(65536)   # the largest bytearray the Python fallback of largest_block() tries


def heap_scale():
    """Chip bytes per heap byte here: 1 on a 32-bit port, 1/2 on a 64-bit host."""
    return _WORD / (8 if sys.maxsize > 0x7FFFFFFF else 4)


def largest_block(limit=None, step=256):
    """The largest block the heap can give now (bytes), after a collection. The firmware's C module
    reads it from the GC's table; elsewhere a bisection with bytearrays finds it (within `step`, up
    to `limit` or _PROBE_MAX): MicroPython's GC is conservative, and a stale pointer on the C stack
    can keep the largest probe alive for a while, so the probes stay small enough to be harmless."""
    gc.collect()
    try:
        from _iotutils import heap_largest
    except ImportError:
        heap_largest = None
    if heap_largest is not None:
        n = heap_largest()
        return min(n, limit) if limit else n
    lo, hi = 0, min(limit or _PROBE_MAX, hal.mem_free()) + step
    while hi - lo > step:
        mid = (lo + hi) // 2
        try:
            b = bytearray(mid)
            del b
            lo = mid
        except MemoryError:
            hi = mid
    gc.collect()
    return lo


def threads():
    """[(name, stack bytes on the chip)] of the threads running now (besides the main task)."""
    return [(t[0], t[1] or THREAD_STACK_DEFAULT) for t in list(THREADS)]


def budget(sockets=None, largest=True):
    """The device's memory now, on the chip's terms: a dict of
    heap: {"free", "total", "largest"} (this runtime's bytes), heap_used_chip (chip bytes),
    stacks: {"main", "threads": {name: [count, bytes each]}, "total"},
    sockets: {"listen", "tcp", "udp", "tls", "tcp_max", "now", "most"} (bytes now, bytes at most),
    total (heap used + stacks + sockets now, chip bytes)."""
    gc.collect()
    free = hal.mem_free()
    total = hal.heap_total()
    heap = {"free": free, "total": total, "largest": largest_block(free) if largest else None}
    used_chip = int((total - free) * heap_scale())
    per = {}
    for name, size in threads():
        e = per.get(name)
        if e is None:
            per[name] = [1, size]
        else:
            e[0] += 1
            e[1] = max(e[1], size)
    stacks = MAIN_STACK + sum(n * (size + THREAD_OVERHEAD) for n, size in per.values())
    s = {"listen": 0, "tcp": 0, "udp": 0, "tls": 0, "tcp_max": 0}
    if sockets:
        s.update(sockets)
    s["now"] = (s["listen"] + s["tcp"]) * TCP_FIXED + s["udp"] * UDP_FIXED + s["tls"] * TLS_SESSION
    s["most"] = (s["listen"] + max(s["tcp"], s["tcp_max"])) * TCP_FIXED + max(s["tcp"], s["tcp_max"]) \
        * TCP_BUFFERS + s["udp"] * (UDP_FIXED + UDP_BUFFERS) + s["tls"] * TLS_SESSION
    return {"heap": heap, "heap_used_chip": used_chip,
            "stacks": {"main": MAIN_STACK, "threads": per, "total": stacks},
            "sockets": s, "total": used_chip + stacks + s["now"]}


def _kb(n):
    return "%.1f KB" % (n / 1024)


def report(b):
    """The budget as console lines."""
    h = b["heap"]
    st = b["stacks"]
    s = b["sockets"]
    lines = ["memory (whole device, on the chip's terms):",
             "  heap: %d of %d bytes free (%d %%)%s" % (
                 h["free"], h["total"], h["free"] * 100 // h["total"] if h["total"] else 0,
                 ", largest free block %d" % h["largest"] if h["largest"] is not None else "")]
    parts = ["main %s" % _kb(st["main"])]
    for name in sorted(st["threads"]):
        n, size = st["threads"][name]
        parts.append("%d %s x %s" % (n, name, _kb(size)))
    lines.append("  stacks: %s = %s" % (" + ".join(parts), _kb(st["total"])))
    lines.append("  sockets: %d listening, %d TCP, %d UDP, %d TLS = %s now, up to %s (%d connections)" % (
        s["listen"], s["tcp"], s["udp"], s["tls"], _kb(s["now"]), _kb(s["most"]), s["tcp_max"]))
    lines.append("  total: heap used %s + stacks %s + sockets %s = %s" % (
        _kb(b["heap_used_chip"]), _kb(st["total"]), _kb(s["now"]), _kb(b["total"])))
    return lines
