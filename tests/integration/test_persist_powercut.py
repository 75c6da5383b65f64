"""Power cuts (SIGKILL of the simulated device) while it writes persistent variables in a loop.

The device app (written below into the test's directory) reads its variables at boot, prints them,
checks they are well-formed, then keeps updating them: iteration i writes counter=i, then a text
derived from i (spans several NVS entries), then a JSON object with i and a checksum, then a
1-2 KB text on every 5th i (a ~5 KB one, stored as a multi-page blob, on every 10th), printing
"C <i>" once all of iteration i is on flash.
The test kills it at random moments, >= 200 times per backend, and after each power-on checks:
- every variable decodes to exactly the form the app writes (never garbage);
- nothing confirmed is lost: counter >= the last "C i" the test saw;
- the write order holds: counter >= text >= obj >= counter - 1 (each either the last confirmed
  value or the one being written);
- the store still accepts writes: the device confirms new iterations after the boot.
Backends: the pure-Python NVS on the `micropython` runtime, and the C KVStore when FIRMWARE names
a host firmware that has it.
"""
import os
import random
import re
import subprocess
import time

import pytest

from conftest import ROOT, micropython_cmd
from simdev import SimDevice

CUTS = int(os.environ.get("PERSIST_CUTS", "200"))

APP = r'''
import sys
from iotutils import store
from iotutils.persist import PersistentInt, PersistentJSON, PersistentStr

counter = PersistentInt("counter", default=0, folder="pc")
text = PersistentStr("text", default="", folder="pc")
obj = PersistentJSON("obj", default=None, folder="pc2")
big = PersistentStr("big", default="", folder="pc2")


def text_of(i):
    return ("t%d-" % i) * (1 + i % 9)


def big_of(i):
    # every 10th: ~5 KB, beyond an NVS string: stored as a blob in chunks over two pages
    return ("b%d." % i) * ((300 + i % 50) if i % 10 else 1000)


def obj_of(i):
    return {"i": i, "sum": i * 7 + 3, "pad": "p" * (i % 40)}


def num(s, make):
    # the i a stored value was made from, or -1 for nothing stored; raise on anything else
    if s in ("", None):
        return -1
    i = int(s["i"]) if isinstance(s, dict) else int(s[1:s.index("-" if make is text_of else ".")])
    if make(i) != s:
        raise ValueError("garbage: %r" % (s,))
    return i


c = counter.value
try:
    t = num(text.value, text_of)
    o = num(obj.value, obj_of)
    b = num(big.value, big_of)
    state = "ok"
except Exception as e:
    t = o = b = -2
    state = "bad %r" % (e,)
print("BOOT backend=%s counter=%d text=%d obj=%d big=%d state=%s" % (store.BACKEND, c, t, o, b, state))
i = max(c, 1)  # finish the iteration a cut interrupted, then go on
while True:
    counter.value = i
    text.value = text_of(i)
    obj.value = obj_of(i)
    if i % 5 == 0:
        big.value = big_of(i)
    print("C %d" % i)
    i += 1
'''


def _backends():
    # the PyPI runtime (no C module: pure-Python NVS), and the host firmware when FIRMWARE names one
    mpy = os.path.join(ROOT, ".venv", "bin", "micropython")
    out = [pytest.param(mpy if os.path.exists(mpy) else "micropython", "nvs", id="nvs-python")]
    fw = os.environ.get("FIRMWARE")
    if fw:
        out.append(pytest.param(fw, "kvstore", id="kvstore-c"))
    return out


@pytest.mark.parametrize("runtime,backend_name", _backends())
def test_power_cuts_while_writing(tmp_path, runtime, backend_name):
    if backend_name == "kvstore":
        probe = subprocess.run([runtime, "-c", "import _iotutils; print(hasattr(_iotutils, 'KVStore'))"],
                               capture_output=True, text=True, timeout=30)
        if "True" not in probe.stdout:
            pytest.skip("FIRMWARE has no _iotutils.KVStore")
    app = tmp_path / "persist_app.py"
    app.write_text(APP)
    state = tmp_path / "dev"
    os.makedirs(str(state / "fs"))
    rnd = random.Random(int(os.environ.get("PERSIST_CUT_SEED", "20261125")))
    dev = SimDevice(str(state), app=str(app), runtime=runtime)
    boot_rx = r"BOOT backend=(\S+) counter=(-?\d+) text=(-?\d+) obj=(-?\d+) big=(-?\d+) state=(.*)"
    confirmed = 0
    last_big = -1
    started = time.time()
    try:
        for cut in range(CUTS + 1):
            dev.start()
            m = dev.wait_line(boot_rx, 30)
            backend, c, t, o, b, st = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)), \
                int(m.group(5)), m.group(6)
            where = "after cut %d (last confirmed %d):\n%s" % (cut, confirmed, dev.output()[-3000:])
            assert backend == backend_name, where
            assert st == "ok", where
            assert c >= confirmed, "confirmed write lost " + where
            if c > 0:
                assert c >= t >= o >= c - 1, "write order broken " + where
                # big is rewritten after obj on every 5th iteration: the latest one, or the one before
                # it when the cut came while writing it
                m5 = o - o % 5 if o >= 5 else -1
                ok = (m5, (m5 - 5 if m5 - 5 >= 5 else -1) if m5 == o else m5)
                assert b in ok and b >= last_big, "blob-sized text (expected one of %r) %s" % (ok, where)
            last_big = max(last_big, b)
            if cut == CUTS:
                break
            # let it write a while (sometimes barely started, sometimes many iterations), then cut
            since = dev.mark  # this boot's first console line
            dev.wait_line(r"^C %d$" % (c + 1), 30)  # the store accepts writes again
            time.sleep(rnd.choice((0, 0.001, 0.003, 0.01, 0.02, 0.05)) * rnd.random())
            dev.power_cut()
            for line in dev.lines[since:]:
                mm = re.match(r"^C (\d+)$", line)
                if mm:
                    confirmed = max(confirmed, int(mm.group(1)))
    finally:
        dev.stop()
    assert confirmed > CUTS  # it really made progress between cuts
    print("%d cuts in %.1fs, %d iterations confirmed" % (CUTS, time.time() - started, confirmed))


def test_app_source_runs_on_micropython(tmp_path):
    # the app itself is valid MicroPython (a syntax slip would show up only as a boot timeout)
    src = tmp_path / "check.py"
    src.write_text("import sys\ncompile(open(sys.argv[1]).read(), 'app', 'exec')\nprint('OK')\n")
    app = tmp_path / "app.py"
    app.write_text(APP)
    out = subprocess.run(micropython_cmd() + [str(src), str(app)], capture_output=True, text=True, timeout=30)
    assert "OK" in out.stdout, out.stdout + out.stderr


IMPORT_APP = r'''
import json
from iotutils import persist, store

N = 150


def values(tag):
    return {"v%03d" % i: tag * 1000 + i for i in range(N)}


def which():
    # the set the folder holds: 0 (none yet), 1, 2 ... or "mixed"
    got = {k: store.get("imp", k) for k in ("v%03d" % i for i in range(N))}
    if all(v is None for v in got.values()):
        return 0
    tags = {v // 1000 if v is not None else -1 for v in got.values()}
    if len(tags) == 1 and got == values(tags.pop()):
        return got["v000"] // 1000
    return "mixed %r" % sorted(tags)


persist.list_folder("imp")  # the first access after the boot: an interrupted import rolls back here
now = which()
print("IMPORTED", now, "journal", store.get("iotutils", "import") is not None)
tag = (now if isinstance(now, int) else 0) + 1
while True:
    persist.import_json(json.dumps({"imp": values(tag)}))  # 150 values, all or nothing
    print("I", tag)
    tag += 1
'''


def test_power_cuts_during_imports_leave_all_or_nothing(tmp_path):
    """An import of 150 values cut by power at random moments: after every boot the folder holds
    one whole set (the last confirmed one, or the one being written), never a mix."""
    app = tmp_path / "import_app.py"
    app.write_text(IMPORT_APP)
    state = tmp_path / "dev"
    os.makedirs(str(state / "fs"))
    rnd = random.Random(int(os.environ.get("PERSIST_CUT_SEED", "20261204")))
    dev = SimDevice(str(state), app=str(app))
    confirmed = 0
    rolled_back = 0
    cuts = int(os.environ.get("IMPORT_CUTS", "25"))
    try:
        for cut in range(cuts + 1):
            dev.start()
            m = dev.wait_line(r"^IMPORTED (.+) journal (\S+)$", 30)
            where = "after cut %d (last confirmed %d):\n%s" % (cut, confirmed, dev.output()[-2000:])
            assert m.group(2) == "False", "the journal outlived the boot " + where
            got = m.group(1)
            assert got.isdigit(), "a mix of two imports " + where
            assert int(got) in (confirmed, confirmed + 1), "a confirmed import lost, or garbage " + where
            rolled_back += int(got) == confirmed and "rolled back" in dev.output()[-2000:]
            confirmed = int(got)
            if cut == cuts:
                break
            since = dev.mark
            dev.wait_line(r"^I %d$" % (confirmed + 1), 60)  # imports work again
            time.sleep(rnd.random() * 0.3)
            dev.power_cut()
            for line in dev.lines[since:]:
                mm = re.match(r"^I (\d+)$", line)
                if mm:
                    confirmed = max(confirmed, int(mm.group(1)))
    finally:
        dev.stop()
    assert rolled_back, "no cut landed inside an import: the test did not test anything"
