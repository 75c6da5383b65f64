"""iotutils.mqtt against a real Mosquitto, with paho-mqtt as the other end, the client running in
CPython and in the micropython runtime (tests/apps/mqtt_app.py in a process of its own): round
trips, retain, the will at a power cut, broker restarts, a half-open link, an oversized packet,
bad credentials, and TLS with a CA made here."""
import os
import subprocess
import time

import pytest

from mosquitto import RUNTIMES, App, Mosquitto, Peer, Proxy, broker_fixture, own_broker_fixture  # noqa: F401

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=RUNTIMES)
def runtime(request):
    return request.param


def _id(runtime, name):
    return "%s-%s-%d" % (name, runtime[:2], os.getpid())


def test_round_trips_qos0_qos1_and_retain(broker, runtime):
    cid = _id(runtime, "rt")
    t = "t/" + cid
    peer = Peer(broker, "peer-" + cid)
    peer.subscribe(t + "/#")
    with App(runtime, broker.url(), cid) as app:
        app.wait("CONNECTED 1")
        assert peer.expect(t + "/status").payload == b"online"
        peer.publish(t + "/in/a", b"zero")                      # paho -> our callback (QoS 0)
        msg = peer.expect(t + "/out/a")                          # our QoS 0 publish -> paho
        assert msg.payload == b"zero" and msg.qos == 0
        peer.publish(t + "/in/q1x", b"one", qos=1)
        msg = peer.expect(t + "/out/q1x")
        assert msg.payload == b"one" and msg.qos == 1 and not msg.retain
        peer.publish(t + "/in/ret", "é" * 100, qos=1)
        assert peer.expect(t + "/out/ret").payload == ("é" * 100).encode()
        app.wait(r"RX t/\S+/in/ret 200")
    # a client that comes later gets the retained messages, flagged retained
    late = Peer(broker, "late-" + cid)
    late.subscribe(t + "/out/ret")
    msg = late.expect(t + "/out/ret")
    assert msg.retain and msg.payload == ("é" * 100).encode()
    late.publish(t + "/out/ret", b"", retain=True)   # leave the broker clean
    late.close()
    peer.close()


def test_a_large_str_payload_goes_out_whole_without_a_copy_of_it(broker, runtime):
    # a device-mode discovery config is one message of many KB: it went out through two copies of
    # itself (its bytes, then the packet), and ~50 entities ran the device out of memory
    cid = _id(runtime, "bigstr")   # (an id of its own: the broker drops an older client with the same one)
    t = "t/" + cid
    peer = Peer(broker, "peer-" + cid)
    try:
        peer.subscribe(t + "/out/#")
        with App(runtime, broker.url(), cid) as app:
            app.wait("CONNECTED 1")
            since = len(app.lines)
            want = ("é" * 10000).encode()
            for _ in range(10):   # (until its subscription to ctl is in place at the broker)
                peer.publish(t + "/ctl", b"big 20000")
                try:
                    used = int(app.wait(r"BIG (-?\d+)", since=since, timeout=2).group(1))
                    break
                except TimeoutError:
                    pass
            else:
                pytest.fail("the app never answered on its ctl topic")
            assert peer.expect(t + "/out/big", timeout=20).payload == want
            msg = peer.expect(t + "/out/bigq1", timeout=20)
            assert msg.payload == want and msg.qos == 1
            if runtime != "cpython":
                assert 0 <= used < 4000, used   # the head and its bookkeeping, not 20 KB
    finally:
        peer.close()


def test_will_is_published_when_the_device_dies(broker, runtime):
    cid = _id(runtime, "will")
    t = "t/" + cid
    peer = Peer(broker, "peer-" + cid)
    peer.subscribe(t + "/status")
    app = App(runtime, broker.url(), cid, keepalive=30)
    app.wait("CONNECTED 1")
    assert peer.expect(t + "/status").payload == b"online"
    app.kill()   # SIGKILL: no DISCONNECT, so the broker publishes the will
    msg = peer.expect(t + "/status", timeout=5)
    assert msg.payload == b"offline"
    peer.close()


def test_broker_restart_reconnects_and_resubscribes(own_broker, runtime):
    cid = _id(runtime, "restart")
    t = "t/" + cid
    with App(runtime, own_broker.url(), cid, keepalive=5) as app:
        app.wait("CONNECTED 1")
        own_broker.kill()
        app.wait("DISCONNECTED", timeout=5)
        time.sleep(1.5)                       # a refused attempt or two, backing off
        own_broker.start()
        app.wait("CONNECTED 2", timeout=10)   # backoff: 1 s, then 2 s (+-25 %)
        assert app.alive()
        peer = Peer(own_broker, "peer-" + cid)
        peer.subscribe(t + "/out/#")
        peer.publish(t + "/in/q1after", b"again", qos=1)     # only reaches us if we re-subscribed
        assert peer.expect(t + "/out/q1after").payload == b"again"
        peer.publish(t + "/ctl", b"status")
        st = app.wait(r"STATUS (.*)").group(1)
        assert '"reconnects": 1' in st and '"connected": true' in st
        assert "Traceback" not in app.output()
        peer.close()


def test_half_open_link_is_declared_dead_within_one_and_a_half_keepalives(broker, runtime):
    cid = _id(runtime, "halfopen")
    proxy = Proxy(broker.port)
    try:
        with App(runtime, "mqtt://127.0.0.1:%d" % proxy.port, cid, keepalive=2) as app:
            app.wait("CONNECTED 1")
            time.sleep(1.2)                    # a keepalive exchange or two go through
            proxy.frozen = True
            t0 = time.time()
            app.wait("DISCONNECTED .*link dead", timeout=6)
            dead_after = time.time() - t0
            assert dead_after <= 3.0 + 0.6, dead_after      # 1.5 x keepalive (+ the poll slice)
            proxy.frozen = False              # the old connection is gone; a new one goes through
            app.wait("CONNECTED 2", timeout=6)
    finally:
        proxy.close()


def test_oversized_inbound_packet_is_dropped_and_the_client_reconnects(broker, runtime):
    cid = _id(runtime, "big")
    t = "t/" + cid
    peer = Peer(broker, "peer-" + cid)
    peer.subscribe(t + "/out/#")
    with App(runtime, broker.url(), cid) as app:
        app.wait("CONNECTED 1")
        peer.publish(t + "/in/big", b"x" * 5000, qos=1)
        app.wait("inbound packet of 50\\d\\d bytes > max_packet 4096")
        app.wait("CONNECTED 2", timeout=6)
        peer.publish(t + "/in/small", b"fine")
        assert peer.expect(t + "/out/small").payload == b"fine"
        assert "RX %s/in/big" % t not in app.output() and app.alive()
    peer.close()


def test_bad_credentials_give_a_clear_error_and_back_off(broker, runtime):
    cid = _id(runtime, "creds")
    with App(runtime, broker.url("dev", "wrong"), cid) as app:
        first = app.wait(r"failed: broker refused the connection: (not authorized|bad user name or password) "
                         r"\(\d\); next attempt in (\d+) ms")
        second = app.wait(r"failed: broker refused.*next attempt in (\d+) ms", since=app.last_index + 1)
        assert 750 <= int(first.group(2)) <= 1250 and 1500 <= int(second.group(1)) <= 2500
        assert app.alive() and "CONNECTED" not in app.output()
    with App(runtime, broker.url("dev", "devpw"), cid) as app:   # the right password goes through
        app.wait("CONNECTED 1")


def _ca(d, name, san):
    """A CA and a server certificate it signed, made with openssl: (ca.pem, cert.pem, key.pem)."""
    os.makedirs(d, exist_ok=True)
    ca_key, ca, key, csr, cert = (os.path.join(d, n) for n in ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem"))

    def run(*a):
        subprocess.run(["openssl", *a], check=True, capture_output=True)
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
        "-subj", "/CN=" + name, "-keyout", ca_key, "-out", ca)
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", key, "-out", csr)
    ext = os.path.join(d, "ext.cnf")
    with open(ext, "w") as f:
        f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\n" % san)
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "2",
        "-extfile", ext, "-out", cert)
    return ca, cert, key


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    import shutil
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    d = str(tmp_path_factory.mktemp("tls"))
    ca, cert, key = _ca(os.path.join(d, "good"), "iotutils test CA", "IP:127.0.0.1,DNS:localhost")
    other_ca = _ca(os.path.join(d, "other"), "some other CA", "IP:127.0.0.1")[0]
    b = Mosquitto(os.path.join(d, "broker"), tls=(ca, cert, key)).start()
    yield b, ca, other_ca
    b.stop()


def test_mqtts_verifies_the_broker_against_the_ca(tls_broker, runtime):
    b, ca, other_ca = tls_broker
    cid = _id(runtime, "tls")
    peer = Peer(b, "peer-" + cid)
    peer.subscribe("t/%s/out/#" % cid)
    with App(runtime, b.url(tls=True), cid, ca_file=ca) as app:
        app.wait("CONNECTED 1", timeout=15)
        peer.publish("t/%s/in/q1tls" % cid, b"secret", qos=1)
        assert peer.expect("t/%s/out/q1tls" % cid).payload == b"secret"
    with App(runtime, b.url(tls=True), cid + "-x", ca_file=other_ca) as app:
        app.wait(r"connect to 127.0.0.1:%d failed: .*; next attempt" % b.tls_port, timeout=15)
        assert "CONNECTED" not in app.output() and app.alive()
    peer.close()


def test_example_acl_keeps_each_device_to_its_own_topics(tmp_path):
    """examples/mosquitto-acl.conf: a device (our client, client id iotutils-aa) reaches its own
    topics and its discovery topic, not another device's; Home Assistant's user reaches all."""
    from mosquitto import ROOT, available
    if not available():
        pytest.skip("mosquitto is not installed")
    from iotutils.mqtt import MQTT
    acl = os.path.join(ROOT, "examples", "mosquitto-acl.conf")
    b = Mosquitto(tmp_path / "acl", extra=["acl_file " + acl], users={"homeassistant": "hapw"}).start()
    got = []
    m = MQTT(b.url(), client_id="iotutils-aa", keepalive=10)
    try:
        ha = Peer(b, "ha", "homeassistant", "hapw")
        ha.subscribe("#")
        m.subscribe("iotutils/iotutils-aa/cmd", lambda t, p: got.append(t))
        m.subscribe("iotutils/iotutils-bb/cmd", lambda t, p: got.append(t))
        m.start()
        deadline = time.time() + 5
        while not m.connected and time.time() < deadline:
            time.sleep(0.02)
        m.publish("iotutils/iotutils-bb/state", "not mine", qos=1)          # denied: dropped
        m.publish("homeassistant/device/iotutils-bb/config", "{}", qos=1)   # denied
        m.publish("homeassistant/device/iotutils-aa/config", "{}", qos=1)   # its own discovery
        m.publish("iotutils/iotutils-aa/state", "mine", qos=1)
        assert m.flush(5000)
        seen = []
        while "iotutils/iotutils-aa/state" not in seen:    # in order: what was denied would come first
            seen.append(ha.messages.get(timeout=5).topic)
        assert seen == ["homeassistant/device/iotutils-aa/config", "iotutils/iotutils-aa/state"], seen
        ha.publish("iotutils/iotutils-bb/cmd", b"x", qos=1)
        ha.publish("iotutils/iotutils-aa/cmd", b"x", qos=1)
        deadline = time.time() + 5
        while not got and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
        assert got == ["iotutils/iotutils-aa/cmd"]
        ha.close()
    finally:
        m.stop()
        b.stop()


def _hostile_broker(mode):
    """A TCP server on a free loopback port. "dribble": answers CONNECT with a CONNACK, then starts
    a PUBLISH and sends the rest a byte every 0.5 s; "silent": accepts and never sends a byte (an
    mqtts:// client waits for a TLS handshake that never comes)."""
    import socket
    import threading
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    stop = threading.Event()

    def serve(c):
        try:
            if mode == "dribble":
                c.recv(1024)
                c.sendall(b"\x20\x02\x00\x00")
                time.sleep(0.3)
                c.sendall(b"\x30\x40")   # a PUBLISH of 64 bytes: here they come, slowly
                while not stop.wait(0.5):
                    c.sendall(b"a")
            else:
                stop.wait(60)
        except OSError:
            pass
        finally:
            c.close()

    def accept():
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(c,), daemon=True).start()
    threading.Thread(target=accept, daemon=True).start()
    return srv, stop


def test_a_broker_that_sends_slowly_is_dropped_in_time(runtime):
    """Each inbound packet must arrive whole within packet_ms (2 s) of its first byte. Before, the
    5 s read timeout restarted with every byte: a broker sending one every few seconds held the
    housekeeping (the device's main loop) until its watchdog reset the device."""
    srv, stop = _hostile_broker("dribble")
    try:
        with App(runtime, "mqtt://127.0.0.1:%d" % srv.getsockname()[1], _id(runtime, "slow")) as app:
            app.wait("CONNECTED 1", timeout=15)
            t0 = time.time()
            app.wait(r"DISCONNECTED .*did not arrive whole in time", timeout=10)
            assert time.time() - t0 < 6
            assert app.alive()
    finally:
        stop.set()
        srv.close()


def test_a_tls_handshake_that_never_comes_is_given_up(tls_broker, runtime):
    """mqtts:// to a server that accepts and stays silent: the connect fails within the client's
    timeout and is tried again later. Before, the handshake ran on a blocking socket whose timeout
    the unix port restarts at every signal, and another thread's collection is one: on a busy
    device the client hung there."""
    _, ca, _ = tls_broker
    srv, stop = _hostile_broker("silent")
    port = srv.getsockname()[1]
    try:
        with App(runtime, "mqtts://127.0.0.1:%d" % port, _id(runtime, "tlsq"), ca_file=ca,
                 extra_env={"MQTT_CHURN": "1"}) as app:   # (the collections of a busy device)
            t0 = time.time()
            app.wait(r"connect to 127.0.0.1:%d failed: .*; next attempt" % port, timeout=15)
            assert time.time() - t0 < 12
            assert "CONNECTED" not in app.output() and app.alive()
    finally:
        stop.set()
        srv.close()


def test_a_retained_message_says_so_to_its_callback(broker):
    # what lets Home Assistant's bridge ignore stale, retained commands
    from iotutils.mqtt import MQTT
    peer = Peer(broker, "peer-retained")
    peer.publish("t/retained-flag/cmd", b"old", retain=True, qos=1)
    got = []
    m = MQTT(broker.url(), client_id="retained-flag", keepalive=10)
    m.subscribe("t/retained-flag/cmd", lambda t, p: got.append((p, m.retained)))
    m.start()
    try:
        deadline = time.time() + 10
        while len(got) < 1 and time.time() < deadline:
            time.sleep(0.02)
        peer.publish("t/retained-flag/cmd", b"new", qos=1)
        while len(got) < 2 and time.time() < deadline:
            time.sleep(0.02)
        assert got == [(b"old", True), (b"new", False)], got
    finally:
        m.stop()
        peer.publish("t/retained-flag/cmd", b"", retain=True)   # clears it
        peer.close()
