# The housekeeping: all the background work of a device that mostly waits (the Wi-Fi manager, the
# setup portal's DNS, SSDP answers and NOTIFYs, WeMo events, the MQTT client and the auto-update
# timer), run by one loop. On an ESP32 each thread is a FreeRTOS task with a stack of its own in
# internal RAM, so this work shares one: the main loop's (Device.run()) or one thread's.
#
# A task is a step function, step(now_ms) -> ms until it wants to run again (None: it is done), that
# does a bounded piece of work and returns: no step waits for the network longer than its own socket
# timeout. A task may name a socket (a callable returning it, or None): data arriving there runs the
# step at once instead of at its time. Between steps the thread waits in select.poll() on those
# sockets, in slices of slice_ms, so one slow clock source cannot stall it.
#
#   hk = tasks.shared()                                  # the device's one housekeeper
#   hk.add("ssdp", ssdp_step, sock=lambda: ssdp.sock)
#   hk.start()                                           # idempotent; without threads: hk.run_once(ms)
#
# A Device hosts the housekeeper in the main loop of Device.run() instead (hk.host() before anything
# starts it): the main task has a stack of its own anyway (16 KB on the ESP32), so the device saves
# the housekeeper's task. A program that keeps a loop of its own calls Device.start() and gets the thread.
from iotutils._compat import (_thread, allocate_lock, events, log, print_exception, sleep_ms, start_thread,
                              ticks_add, ticks_diff, ticks_ms)

_NAME = const(0)
_STEP = const(1)
_DUE = const(2)
_SOCK_FN = const(3)
_SOCK = const(4)     # the socket registered in the poller (None: none)
_WOKEN = const(5)
_MAX_MS = const(6)   # the longest step so far (the bounded-step claim, shown by status())

_RETRY_MS = const(1000)       # a step that raised runs again after this
_LONGEST_MS = const(1 << 28)  # the farthest a step can ask (74 h): ticks_add's range
_STALE_MS = const(15000)      # a hosted housekeeper whose loop has not passed for this long is stuck


class Housekeeper:
    #: the longest single wait in poll(): the loop re-reads its clock at least this often
    slice_ms = 50
    #: stack bytes (the chip's) for the thread: None takes the board's (hal.HOUSEKEEPER_STACK), 0 the
    #: port's default
    stack_size = None
    #: called before every step (a hosted housekeeper: Device feeds its watchdog, so only one step,
    #: not a whole pass of them, has to fit in the watchdog's timeout)
    before_step = None

    def __init__(self, name):
        self.name = name
        self._lock = allocate_lock()
        self._tasks = []       # replaced, never changed in place: the thread iterates a snapshot
        self._poller = None
        self._polled = ()      # the sockets registered in _poller
        self._running = False
        self._alive = False
        self._hosted = False   # the main loop runs the steps: start() starts no thread
        self._pass_ms = None   # when run_once() last ran (a hosted housekeeper is alive while it runs)
        self.errors = 0

    # ---- tasks ----
    def add(self, name, step, sock=None, first_ms=0):
        """Run step(now) first_ms from now, then when it asks (its return value, in ms) or when the
        socket sock() returns becomes readable. A task of the same name is replaced."""
        t = [name, step, ticks_add(ticks_ms(), first_ms), sock, None, False, 0]
        with self._lock:
            self._tasks = [x for x in self._tasks if x[_NAME] != name] + [t]
        return self

    def remove(self, name):
        with self._lock:
            self._tasks = [x for x in self._tasks if x[_NAME] != name]

    def has(self, name):
        return any(t[_NAME] == name for t in self._tasks)

    def has_tasks(self):
        return bool(self._tasks)

    def wake(self, name):
        """Run task `name` in the next pass (from any thread; at most slice_ms later)."""
        for t in self._tasks:
            if t[_NAME] == name:
                t[_WOKEN] = True

    def status(self):
        """{"running", "in": "thread" or "main loop", "tasks": {name: longest step in ms}, "errors"}."""
        hosted = not self._alive and self._pass_ms is not None
        running = self._alive or (hosted and ticks_diff(ticks_ms(), self._pass_ms) < _STALE_MS)
        return {"running": running, "in": "main loop" if hosted else "thread",
                "tasks": {t[_NAME]: t[_MAX_MS] for t in self._tasks}, "errors": self.errors}

    # ---- running ----
    def host(self, hosted):
        """host(True): the caller's loop runs the steps (run_once(ms) every pass), start() starts no thread.
        host(False): start() starts the thread again. Call it before anything starts the housekeeper;
        once its thread runs, it keeps running."""
        self._hosted = hosted
        return self

    def hosted(self):
        """Whether the caller's loop runs the steps (host()), not a thread."""
        return self._hosted

    def start(self):
        """The thread, once (a port without threads, or a hosted housekeeper: the caller calls
        run_once() from its loop)."""
        if self._running or self._hosted or _thread is None:
            return self
        self._running = True
        self._alive = True
        try:
            size = self.stack_size
            if size is None:
                from iotutils import hal
                size = hal.HOUSEKEEPER_STACK
            start_thread(self.name, self._loop, (), size)
        except BaseException:
            self._running = self._alive = False
            raise
        return self

    def stop(self, wait_ms=2000):
        self._running = False
        t0 = ticks_ms()
        while self._alive and ticks_diff(ticks_ms(), t0) < wait_ms:
            sleep_ms(10)

    def running(self):
        return self._alive

    def _loop(self):
        try:
            while self._running:
                try:
                    self.run_once(1000)
                except Exception as e:  # the loop itself must not die (a full heap in poll())
                    self.errors += 1
                    log("%s: error:" % self.name)
                    print_exception(e)
                    sleep_ms(_RETRY_MS)
        finally:
            self._alive = False

    def run_once(self, wait_ms):
        """Run the tasks that are due, then wait up to wait_ms (less when one is due sooner) for one
        of their sockets, and run the ones that got data."""
        self._pass_ms = ticks_ms()
        tasks = self._tasks
        for t in tasks:
            now = ticks_ms()
            if t[_WOKEN] or ticks_diff(now, t[_DUE]) >= 0:
                self._step(t, now)
        tasks = self._tasks
        if not tasks:
            if wait_ms:
                sleep_ms(min(wait_ms, self.slice_ms * 4))
            return
        now = ticks_ms()
        wait = wait_ms
        for t in tasks:
            if t[_WOKEN]:
                return
            wait = min(wait, max(0, ticks_diff(t[_DUE], now)))
        if wait > 0:
            self._wait(tasks, wait)

    def _step(self, t, now):
        t[_WOKEN] = False
        if self.before_step is not None:
            self.before_step()
        try:
            nxt = t[_STEP](now)
        except Exception as e:  # one task's bug or a full heap must not starve the others
            self.errors += 1
            log("%s: %s:" % (self.name, t[_NAME]))
            print_exception(e)
            nxt = _RETRY_MS
        took = ticks_diff(ticks_ms(), now)
        if took > t[_MAX_MS]:
            t[_MAX_MS] = took
        if nxt is None:
            self.remove(t[_NAME])
            return
        t[_DUE] = ticks_add(ticks_ms(), min(max(0, nxt), _LONGEST_MS))
        fn = t[_SOCK_FN]
        t[_SOCK] = fn() if fn is not None else None

    def _wait(self, tasks, wait_ms):
        if not self._polling(tasks):
            while wait_ms > 0:
                step = min(wait_ms, self.slice_ms)
                sleep_ms(step)
                wait_ms -= step
                for t in self._tasks:
                    if t[_WOKEN]:
                        return
            return
        import select

        t0 = ticks_ms()
        while True:
            left = wait_ms - ticks_diff(ticks_ms(), t0)
            if left <= 0:
                return
            hit = False
            gone = None
            try:
                for r in events(self._poller, min(left, self.slice_ms)):
                    for t in tasks:
                        s = t[_SOCK]
                        if s is not None and (r[0] is s or r[0] == _fileno(s)):
                            t[_WOKEN] = True
                            hit = True
                    if r[1] & ~select.POLLIN:   # error or hang-up: stop watching until replaced
                        gone = r[0]
            except OSError:
                pass
            if gone is not None:
                try:
                    self._poller.unregister(gone)
                except (OSError, ValueError, KeyError):
                    pass
            if hit:
                return
            for t in self._tasks:
                if t[_WOKEN]:
                    return

    def _polling(self, tasks):
        # the poll set of the tasks' sockets, made again only when one changed (a new tuple and
        # poller at every pass would be garbage many times a second); False: no socket to wait on
        n = 0
        same = self._poller is not None
        polled = self._polled
        for t in tasks:
            s = t[_SOCK]
            if s is not None:
                if same and (n >= len(polled) or polled[n] is not s):
                    same = False
                n += 1
        if not n:
            self._poller, self._polled = None, ()
            return False
        if same and n == len(polled):
            return True
        import select

        socks = tuple(t[_SOCK] for t in tasks if t[_SOCK] is not None)
        p = select.poll()
        for s in socks:
            try:
                p.register(s, select.POLLIN)
            except (OSError, ValueError):  # closed under us: its owner hands over a new one
                pass
        self._poller, self._polled = p, socks
        return True


def _fileno(s):
    try:
        return s.fileno()
    except (AttributeError, OSError):
        return -1


_shared = None


def shared():
    """The device's housekeeper (made on first use; Device, Wifi, Alexa, OTA and MQTT all use it)."""
    global _shared
    if _shared is None:
        _shared = Housekeeper("housekeeper")
    return _shared
