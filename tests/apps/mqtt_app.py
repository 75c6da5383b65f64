# A device-side MQTT app for tests/integration/test_mqtt_broker.py and bench/bench_mqtt.py, run by
# CPython or by the micropython runtime. Environment: MQTT_URL, MQTT_ID, MQTT_KEEPALIVE (s),
# MQTT_CA (a CA file for mqtts), MQTT_HEAP=1 (print the heap cost of the connected client),
# MQTT_CHURN=1 (collect the heap all the time).
#
# Topics (T = "t/<MQTT_ID>"): will T/status "offline", T/status "online" on every connect;
# a message on T/in/<name> is echoed to T/out/<name> (QoS 1 if <name> starts with "q1", retained
# if it starts with "ret"); T/ctl "status" prints the status, "big <n>" publishes n bytes of "é" to
# T/out/big and T/out/bigq1. Console lines: CONNECTED <n>, DISCONNECTED <last error>, RX <topic>
# <length>, STATUS <json>, HEAP <bytes>, BIG <bytes the QoS 0 publish allocated>.
import gc
import json
import os
import sys

from iotutils._compat import sleep_ms
from iotutils.mqtt import MQTT

gc.collect()
heap0 = gc.mem_free() if hasattr(gc, "mem_free") else 0   # the code is frozen on a board: not counted

url = os.getenv("MQTT_URL")
cid = os.getenv("MQTT_ID") or "app"
T = "t/" + cid
ca = None
if os.getenv("MQTT_CA"):
    with open(os.getenv("MQTT_CA")) as f:
        ca = f.read()

m = MQTT(url, client_id=cid, keepalive=int(os.getenv("MQTT_KEEPALIVE") or "30"), cadata=ca)
m.set_will(T + "/status", "offline", retain=True)
connects = [0]
up = [False]   # set by on_connect, so a connection lost within one pass of the loop is still seen


def say(*a):
    print(*a)
    if hasattr(sys.stdout, "flush"):
        sys.stdout.flush()


def online():
    connects[0] += 1
    up[0] = True
    m.publish(T + "/status", "online", retain=True)
    say("CONNECTED", connects[0])


def echo(topic, payload):
    name = topic[len(T) + 4:]
    say("RX", topic, len(payload))
    m.publish(T + "/out/" + name, payload, qos=1 if name.startswith("q1") else 0, retain=name.startswith("ret"))


def ctl(topic, payload):
    if payload == b"status":
        say("STATUS", json.dumps(m.status()))
    elif payload.startswith(b"big "):
        # a large str payload (a discovery config): QoS 0 and QoS 1, and what the QoS 0 publish
        # allocated on the way (BIG <bytes>; MicroPython only)
        text = "é" * (int(payload[4:]) // 2)
        gc.collect()
        before = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
        m.publish(T + "/out/big", text)
        used = (gc.mem_alloc() - before) if hasattr(gc, "mem_alloc") else -1
        m.publish(T + "/out/bigq1", text, qos=1)
        say("BIG", used)


m.on_connect(online)
m.subscribe(T + "/in/#", echo, qos=1)
m.subscribe(T + "/ctl", ctl)
m.start()
heap_said = False
# MQTT_CHURN=1: a collection every pass, as a device's other threads make them; on the unix port
# each one interrupts the client thread's blocking reads (a signal), which restarts their timeout
churn = os.getenv("MQTT_CHURN")
while True:
    if churn:
        gc.collect()
    if up[0] and not m.connected:
        up[0] = False
        say("DISCONNECTED", m.status()["last_error"])
    if up[0] and not heap_said and os.getenv("MQTT_HEAP"):
        heap_said = True
        gc.collect()
        say("HEAP", heap0 - gc.mem_free())
    sleep_ms(20)
