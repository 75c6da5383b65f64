"""The whole device's memory as the device reports it (GET /admin/api/memory and the boot report):
with everything on (Wi-Fi, portal-capable, web server + admin, Alexa, OTA auto-update, MQTT with
Home Assistant connected to a real Mosquitto) it runs the web server's threads and nothing else: the
housekeeping steps (Wi-Fi, Alexa, MQTT and the OTA timer) run in the main loop of Device.run(), and a
program with a loop of its own (Device.start()) gets one housekeeping thread; sockets and the board's
socket table are counted. Sizes are benchmarks (bench/bench_device.py), not asserted here."""
import re
import time

import pytest
import requests

import espimage
from fake_github import FakeGitHub, device_env
from mosquitto import broker_fixture  # noqa: F401
from mqttdev import Dev
from simdev import wait_until


@pytest.fixture(scope="module")
def gh():
    g = FakeGitHub().start()
    # older than what runs: checks find nothing to install
    g.add_release("acme/lamp", "0.0.1", espimage.build_app_image("0.0.1", size=64 * 1024))
    yield g
    g.stop()


def test_everything_on_runs_the_servers_threads_and_housekeeps_in_the_main_loop(tmp_path, broker, gh):
    dev = Dev(tmp_path, "mem", {"mqtt": broker.url()}, env=device_env(gh)).boot()
    try:
        boot = dev.output()
        # the boot report: the budget's lines, before "heap free after start"
        m = re.search(r"stacks: main 16\.0 KB \+ (.*) = [\d.]+ KB", boot)
        assert m, boot
        assert "sockets: " in boot and "total: heap used " in boot, boot
        s = dev.admin()
        r = s.put(dev.url("/admin/api/ota/settings"), json={"auto": {"on": True, "every_hours": 24}}, timeout=10)
        assert r.status_code == 200, r.text
        wait_until(lambda: (s.get(dev.url("/admin/api/mqtt"), timeout=10).json()["status"] or {}).get("connected"),
                   what="MQTT connected")

        def steady():
            b = s.get(dev.url("/admin/api/memory"), timeout=10).json()
            # an OTA check or an announcement may run a short-lived job thread: wait it out
            return b if set(b["stacks"]["threads"]) == {"web"} else None

        b = wait_until(steady, timeout=20, what="only the server's threads")
        threads = b["stacks"]["threads"]
        assert threads["web"][0] == 3            # the board's 2 workers (hal.WEB_WORKERS) + the poll loop
        tasks = b["housekeeper"]["tasks"]
        for name in ("wifi", "alexa", "mqtt", "ota"):
            assert name in tasks, tasks
        assert b["housekeeper"]["running"] is True and b["housekeeper"]["in"] == "main loop", b["housekeeper"]
        assert "housekeeper" not in boot, boot   # the boot report's stacks: main + web only
        sk = b["sockets"]
        assert sk["listen"] >= 1 and sk["udp"] >= 2     # the server's wake-up socket, SSDP
        assert sk["tcp"] >= 2                          # this request, MQTT
        # web clients get what the board's socket table (16) leaves: the device's own sockets
        # (listeners, UDP, MQTT, the portal's DNS) and 2 for short-lived ones are kept back
        own = sk["listen"] + sk["udp"] + 1 + 1
        assert sk["tcp_max"] == 16 - own - 2, sk
        h = b["heap"]
        assert 0 < h["free"] <= h["total"] and h["largest"] is None
        h = s.get(dev.url("/admin/api/memory?largest=1"), timeout=10).json()["heap"]
        assert 0 < h["largest"] <= h["free"]
        assert b["total"] == b["heap_used_chip"] + b["stacks"]["total"] + sk["now"]
        assert s.get(dev.url("/healthz"), timeout=10).status_code == 200
    finally:
        dev.stop()


def test_a_program_with_its_own_loop_gets_one_housekeeping_thread(tmp_path, broker):
    dev = Dev(tmp_path, "own", {"mqtt": broker.url(), "own_loop": True}).boot()
    try:
        s = dev.admin()
        wait_until(lambda: (s.get(dev.url("/admin/api/mqtt"), timeout=10).json()["status"] or {}).get("connected"),
                   what="MQTT connected")
        b = s.get(dev.url("/admin/api/memory"), timeout=10).json()
        assert b["stacks"]["threads"]["housekeeper"][0] == 1, b["stacks"]
        assert b["housekeeper"]["running"] is True and b["housekeeper"]["in"] == "thread", b["housekeeper"]
        assert "mqtt" in b["housekeeper"]["tasks"] and "alexa" in b["housekeeper"]["tasks"]
    finally:
        dev.stop()


def test_more_clients_than_the_socket_table_all_get_their_answer(tmp_path, broker):
    # the board's table leaves the web server a handful of connections: a burst of three times as
    # many clients waits in the listen backlog for a free slot, none is refused or reset
    import concurrent.futures

    dev = Dev(tmp_path, "burst", {"mqtt": broker.url()}).boot()
    try:
        slots = dev.admin().get(dev.url("/admin/api/memory"), timeout=10).json()["sockets"]["tcp_max"]
        assert 4 <= slots < 16

        def one(i):
            r = requests.get(dev.url("/healthz"), headers={"Connection": "close"}, timeout=30)
            return r.status_code

        with concurrent.futures.ThreadPoolExecutor(3 * slots) as ex:
            codes = list(ex.map(one, range(6 * slots)))
        assert codes == [200] * (6 * slots), codes
    finally:
        dev.stop()


def test_more_keep_alive_clients_than_the_socket_table_get_every_answer_without_a_reset(tmp_path, broker):
    # ab -k with four times as many connections as the board's table leaves: a keep-alive connection
    # is closed to make room only once it has been idle for keepalive_min_ms. Before, one that had
    # just got its answer was closed while its client sent the next request: the connection was
    # reset, and ab gave up ("apr_socket_recv: Connection reset by peer") on every run
    import shutil
    import subprocess
    if not shutil.which("ab"):
        pytest.skip("ab (apache2-utils) not installed")
    dev = Dev(tmp_path, "keepalive", {"mqtt": broker.url()}).boot()
    try:
        slots = dev.admin().get(dev.url("/admin/api/memory"), timeout=10).json()["sockets"]["tcp_max"]
        for _ in range(2):
            out = subprocess.run(["ab", "-k", "-s", "20", "-n", "2000", "-c", str(4 * slots), dev.url("/healthz")],
                                 capture_output=True, text=True, timeout=120)
            text = out.stdout + out.stderr
            assert "reset by peer" not in text and re.search(r"Complete requests:\s+2000", text), text[-1500:]
            assert "Non-2xx" not in text, text[-1500:]
    finally:
        dev.stop()


def test_clients_keeping_every_slot_busy_cannot_keep_a_new_client_out(tmp_path, broker):
    # as many keep-alive clients as there are slots, each asking again the moment it has its answer
    # (never idle long enough to be closed for room): a new client still gets in within a second or
    # so, since answers close their connections once new clients have waited shed_after_ms
    import socket
    import threading
    import time
    dev = Dev(tmp_path, "hogs", {"mqtt": broker.url()}).boot()
    stop = threading.Event()
    host = dev.url("/").split("/")[2]
    req = ("GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n" % host).encode()

    def hog():
        while not stop.is_set():
            try:
                s = socket.create_connection(("127.0.0.1", int(host.split(":")[1])), timeout=10)
                while not stop.is_set():
                    s.sendall(req)
                    if not s.recv(4096):
                        break   # closed to make room: connect again and go on
                s.close()
            except OSError:
                time.sleep(0.01)
    try:
        slots = dev.admin().get(dev.url("/admin/api/memory"), timeout=10).json()["sockets"]["tcp_max"]
        hogs = [threading.Thread(target=hog, daemon=True) for _ in range(slots)]
        for t in hogs:
            t.start()
        time.sleep(1)
        for _ in range(5):
            t0 = time.time()
            r = requests.get(dev.url("/healthz"), headers={"Connection": "close"}, timeout=30)
            assert r.status_code == 200
            assert time.time() - t0 < 3, time.time() - t0
    finally:
        stop.set()
        dev.stop()


def test_memory_needs_the_admin_session(tmp_path, broker):
    dev = Dev(tmp_path, "mem2", {"mqtt": broker.url()}).boot()
    try:
        r = requests.get(dev.url("/admin/api/memory"), timeout=10)
        assert r.status_code == 401, r.text
    finally:
        dev.stop()


def test_the_heap_is_collected_once_the_device_falls_idle_after_requests(tmp_path, broker):
    # between two collections MicroPython allocates ever further up the heap: what outlives a burst
    # of requests would land anywhere and split the free heap. A device that falls idle collects
    # (Device._tidy_heap), so the next burst starts from the lowest holes; the count is in the budget
    dev = Dev(tmp_path, "tidy", {}).boot()
    try:
        s = dev.admin()

        def tidied():
            return s.get(dev.url("/admin/api/memory"), timeout=10).json()["heap"]["tidied"]

        before = tidied()
        with requests.Session() as c:
            for _ in range(80):   # garbage of well over 1/64 of the heap, with no pause
                assert c.get(dev.url("/description.xml"), timeout=10).status_code == 200
        for _ in range(20):
            time.sleep(0.5)   # idle in between (a question every 50 ms would keep it busy)
            if tidied() > before:
                break
        assert tidied() > before
    finally:
        dev.stop()
