# iotutils.tasks: one housekeeping thread runs every background step: on time, at once when its
# socket has data, past a step that raises, and counted as one thread in _compat.THREADS.
import socket
import time

from mpunit import udp_socket

from iotutils import _compat, tasks
from iotutils._compat import sleep_ms, ticks_diff, ticks_ms


def _wait(cond, ms=3000):
    t0 = ticks_ms()
    while not cond():
        if ticks_diff(ticks_ms(), t0) > ms:
            return False
        sleep_ms(5)
    return True


def test_steps_run_when_they_ask_and_a_finished_task_goes():
    hk = tasks.Housekeeper("t1")
    runs = []

    def every_20(now):
        runs.append(now)
        return 20 if len(runs) < 5 else None

    hk.add("p", every_20)
    t0 = ticks_ms()
    while hk.has("p") and ticks_diff(ticks_ms(), t0) < 3000:
        hk.run_once(100)
    assert len(runs) == 5 and not hk.has("p")
    gaps = [ticks_diff(runs[i + 1], runs[i]) for i in range(4)]
    assert min(gaps) >= 19, gaps     # never early
    assert "p" not in hk.status()["tasks"]


def test_a_readable_socket_runs_its_step_at_once():
    hk = tasks.Housekeeper("t2")
    rx, port = udp_socket()
    tx = udp_socket()[0]
    got = []

    def reader(now):
        try:
            rx.setblocking(False)
            got.append(rx.recv(64))
        except OSError:
            pass
        return 60000   # by time only once a minute: only the socket can wake it this soon

    hk.add("rx", reader, sock=lambda: rx)
    hk.run_once(0)      # first run: registers the socket
    assert got == []
    tx.sendto(b"ping", socket.getaddrinfo("127.0.0.1", port)[0][-1])
    t0 = ticks_ms()
    hk.run_once(2000)   # wakes on the datagram
    hk.run_once(0)      # runs the woken step
    assert got == [b"ping"]
    assert ticks_diff(ticks_ms(), t0) < 1500
    rx.close()
    tx.close()


def test_a_step_that_raises_is_retried_and_the_others_go_on():
    hk = tasks.Housekeeper("t3")
    calls = {"bad": 0, "good": 0}

    def bad(now):
        calls["bad"] += 1
        raise MemoryError("no room for this step")

    def good(now):
        calls["good"] += 1
        return 1

    hk.add("bad", bad)
    hk.add("good", good)
    for _ in range(5):
        hk.run_once(5)
    assert calls["bad"] == 1           # retried a second later, not in a tight loop
    assert calls["good"] >= 4
    assert hk.errors == 1


def test_one_thread_counted_while_it_runs_and_wake_from_another_thread():
    hk = tasks.Housekeeper("t4")
    hk.stack_size = 16384
    seen = []
    hk.add("w", lambda now: seen.append(now) or 60000)
    before = len(_compat.THREADS)
    hk.start()
    hk.start()   # idempotent
    try:
        assert _wait(lambda: len(seen) == 1)
        assert ["t4", 16384] in _compat.THREADS
        assert len(_compat.THREADS) == before + 1
        hk.wake("w")
        assert _wait(lambda: len(seen) == 2, 1000)
        assert hk.status()["running"] is True
    finally:
        hk.stop()
    assert not hk.running()
    assert _wait(lambda: ["t4", 16384] not in _compat.THREADS, 1000)


def test_a_hosted_housekeeper_starts_no_thread_until_it_is_handed_back():
    hk = tasks.Housekeeper("t6").host(True)
    hk.stack_size = 16384
    seen = []
    hk.add("w", lambda now: seen.append(now) or 60000)
    before = len(_compat.THREADS)
    hk.start()                       # what every module does after add(): no thread while hosted
    assert len(_compat.THREADS) == before and not hk.running()
    assert hk.status()["running"] is False        # its loop has not passed yet
    hk.run_once(0)                   # the host's loop runs the steps
    assert len(seen) == 1
    st = hk.status()
    assert st["running"] is True and st["in"] == "main loop", st
    hk.host(False).start()           # handed back: the thread takes over
    try:
        assert _wait(lambda: ["t6", 16384] in _compat.THREADS, 1000)
        hk.wake("w")
        assert _wait(lambda: len(seen) == 2, 1000)
        assert hk.status()["in"] == "thread"
    finally:
        hk.stop()


def test_before_step_runs_before_every_step_of_a_pass():
    # a hosted housekeeper's owner feeds its watchdog there: one step, not a whole pass, must fit
    hk = tasks.Housekeeper("t7").host(True)
    order = []
    hk.before_step = lambda: order.append("feed")
    hk.add("a", lambda now: order.append("a") or 60000)
    hk.add("b", lambda now: order.append("b") or 60000)
    hk.run_once(0)
    assert order == ["feed", "a", "feed", "b"], order


def test_replacing_a_task_and_a_closed_socket_do_not_spin():
    hk = tasks.Housekeeper("t5")
    s = udp_socket()[0]
    n = [0]

    def step(now):
        n[0] += 1
        return 10000

    hk.add("s", step, sock=lambda: s)
    hk.run_once(0)
    s.close()            # its owner closed it, the task still names it
    t0 = time.time()
    for _ in range(3):
        hk.run_once(30)
    assert n[0] <= 4, n[0]   # a dead socket may wake the task, but not in a tight loop
    assert time.time() - t0 < 2
    hk.add("s", lambda now: 5)   # replaced by name
    assert hk.has("s") and len(hk.status()["tasks"]) == 1
