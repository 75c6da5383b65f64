"""_iotutils.KVStore (c_modules/iotutils/mod_kvstore.c) in the host firmware (FIRMWARE=<build/unix/micropython>):
the same operations give the same results and bytes as the C core through ctypes, and a SIGKILL is a
power cut. Skipped, saying why, on a runtime without the C module.
"""
import json
import random
import subprocess

import pytest

from nvs_harness import U8, CStore, SimFlash, random_value, assert_idf_clean


def _firmware_with_kvstore():
    from conftest import micropython_cmd
    cmd = micropython_cmd()
    try:
        r = subprocess.run(cmd + ["-c", "import _iotutils; print(hasattr(_iotutils, 'KVStore'))"],
                           capture_output=True, text=True, timeout=30)
    except OSError:
        r = None
    if r is None or r.stdout.strip() != "True":
        pytest.skip("this runtime has no _iotutils.KVStore (set FIRMWARE=<host firmware build>)")
    return cmd


_BINDING_SCRIPT = r"""
import json, binascii, _iotutils
K = _iotutils.KVStore
s = K(%(img)r, %(off)d, %(size)d)
out = open(%(out)r, "w")
for line in open(%(ops)r):
    op = json.loads(line)
    try:
        if op[0] == "set":
            v = op[3]
            if isinstance(v, list):
                v = binascii.unhexlify(v[0])
            r = ["ok", s.set(op[1], op[2], v, op[4])]
        elif op[0] == "get":
            r = s.get_typed(op[1], op[2])
            if r is not None and isinstance(r[1], bytes):
                r = [r[0], [binascii.hexlify(r[1]).decode()]]
            r = ["ok", r]
        elif op[0] == "erase":
            r = ["ok", s.erase(op[1], op[2])]
        elif op[0] == "keys":
            r = ["ok", s.keys(op[1])]
        elif op[0] == "namespaces":
            r = ["ok", s.namespaces()]
    except ValueError:
        r = ["ValueError"]
    except OSError as e:
        r = ["OSError", e.errno]
    out.write(json.dumps(r) + "\n")
s.close()
out.close()
"""


def _binding_ops(rnd, n):
    ops = []
    for _ in range(n):
        ns, key = rnd.choice(["wifi", "cfg", "a" * 15]), rnd.choice(["ssid", "k1", "k" * 15, "k2"])
        r = rnd.random()
        if r < 0.55:
            value, t = random_value(rnd)
            ops.append(["set", ns, key, [value.hex()] if isinstance(value, bytes) else value, t])
        elif r < 0.75:
            ops.append(["get", ns, key])
        elif r < 0.85:
            ops.append(["erase", ns, key])
        elif r < 0.95:
            ops.append(["keys", ns])
        else:
            ops.append(["namespaces"])
    ops += [["set", "cfg", "x" * 16, 1, None], ["set", "", "k", 1, None], ["set", "cfg", "v", 256, U8],
            ["set", "cfg", "v", "s", U8], ["set", "cfg", "v", 2**64, None], ["get", "cfg", "k" * 16]]
    return ops


def _ops_in_python(store, ops):
    out = []
    for op in ops:
        try:
            if op[0] == "set":
                v = bytes.fromhex(op[3][0]) if isinstance(op[3], list) else op[3]
                out.append(["ok", store.set(op[1], op[2], v, op[4])])
            elif op[0] == "get":
                r = store.get_typed(op[1], op[2])
                if r is not None and isinstance(r[1], bytes):
                    r = [r[0], [r[1].hex()]]
                out.append(["ok", list(r) if r is not None else None])
            elif op[0] == "erase":
                out.append(["ok", store.erase(op[1], op[2])])
            elif op[0] == "keys":
                out.append(["ok", [list(x) for x in store.keys(op[1])]])
            elif op[0] == "namespaces":
                out.append(["ok", store.namespaces()])
        except ValueError:
            out.append(["ValueError"])
        except OSError as e:
            out.append(["OSError", e.errno])
    return out


def test_binding_in_host_firmware_matches_c_core(tmp_path):
    # Same operations through _iotutils.KVStore (in the firmware, on an image file) and through
    # the C core here (ctypes, in RAM): same results, and byte-identical partitions.
    cmd = _firmware_with_kvstore()
    ops = _binding_ops(random.Random(5), 250)
    img = tmp_path / "flash.bin"
    img.write_bytes(b"\x00" * 0x9000 + b"\xff" * 0x6000 + b"\x00" * 0x1000)
    (tmp_path / "ops.jsonl").write_text("".join(json.dumps(op) + "\n" for op in ops))
    script = _BINDING_SCRIPT % {"ops": str(tmp_path / "ops.jsonl"), "out": str(tmp_path / "out.jsonl"),
                                "img": str(img), "off": 0x9000, "size": 0x6000}
    r = subprocess.run(cmd + ["-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    got = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    flash = SimFlash(0x6000)
    expected = _ops_in_python(CStore(flash), ops)
    assert got == expected
    data = img.read_bytes()
    assert data[0x9000:0xF000] == bytes(flash.buf)
    assert data[:0x9000] == b"\x00" * 0x9000 and data[0xF000:] == b"\x00" * 0x1000


_KILL_SCRIPT = r"""
import sys, _iotutils
s = _iotutils.KVStore(%(img)r, 0, %(size)d)
i = s.get("cnt", "i") or 0
while True:
    i += 1
    s.set("cnt", "i", i)
    s.set("cnt", "blob", bytes([i %% 256]) * (i * 37 %% 3000))
    print(i)
"""


def test_sigkill_in_host_firmware_is_a_power_cut(tmp_path):
    # The firmware writes a counter and a blob in a loop and prints the counter once both
    # writes returned; killed at random moments, the image must hold that counter or the
    # next, and a blob matching one of them.
    cmd = _firmware_with_kvstore()
    import signal
    import time
    img = tmp_path / "flash.bin"
    img.write_bytes(b"\xff" * 0x6000)
    rnd = random.Random(3)
    last = 0
    images = []
    for round_ in range(6):
        p = subprocess.Popen(cmd + ["-c", _KILL_SCRIPT % {"img": str(img), "size": 0x6000}],
                             stdout=subprocess.PIPE, text=True, bufsize=1)
        target = last + rnd.randint(3, 40)
        printed = last
        deadline = time.time() + 60
        while printed < target and time.time() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            printed = int(line)
        time.sleep(rnd.random() * 0.01)
        p.send_signal(signal.SIGKILL)
        p.wait()
        for line in p.stdout.read().split():
            printed = int(line)
        p.stdout.close()
        assert printed >= target, "firmware stopped early"
        flash = SimFlash(data=img.read_bytes())
        s = CStore(flash)
        i = s.get("cnt", "i")
        assert i in (printed, printed + 1), (round_, i, printed)
        blob = s.get("cnt", "blob")
        assert blob in (bytes([j % 256]) * (j * 37 % 3000) for j in (i - 1, i)), round_
        images.append(bytes(flash.buf))
        last = i
    assert_idf_clean(tmp_path, images)   # when IDF_PATH is set
