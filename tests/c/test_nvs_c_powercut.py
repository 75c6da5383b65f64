"""The C NVS core under power cuts: a cut after every flash write (whole or torn), reloaded by this
core, by ESP-IDF's loading algorithm alone and by the pure-Python twin; and - when IDF_PATH names an
ESP-IDF tree - ESP-IDF's own writer cut the same way, and byte-identical images from the same
operations when this core is built without its deviations (nvs_storage.c).
"""
import errno
import random
import subprocess

import pytest

from nvs_harness import (I32, I64, INT_RANGE, STR, U8, CStore, PowerCut, SimFlash, python_nvs, python_nvs_or_none,
                         random_value, assert_idf_clean, dump, idf_loader, idf_read, typed)


# Power cuts: a scripted sequence on a small partition (so pages fill, get reclaimed and
# blobs span pages), replayed with the power cut after every possible flash write.
def _script():
    rnd = random.Random(99)
    ops = []
    for i in range(6):
        ops.append(("set", "cfg", "k%d" % i, "value %d " % i * 20, None))
    ops += [
        ("set", "cfg", "blob", bytes(range(256)) * 20, None),      # 5120 bytes: two chunks
        ("set", "cfg", "k0", 42, U8),                                # str -> int
        ("set", "cfg", "blob", bytes(rnd.getrandbits(8) for _ in range(4500)), None),
        ("set", "new", "n", "fresh namespace", None),
        ("erase", "cfg", "k1"),
        ("set", "cfg", "k2", b"now a blob", None),
        ("set", "cfg", "blob", "blob to str", None),
        ("set", "cfg", "k3", -5, I32),
        ("erase_ns", "new"),
        ("set", "cfg", "blob", bytes(rnd.getrandbits(8) for _ in range(3000)), None),
    ]
    for i in range(12):
        ops.append(("set", "cfg", "k%d" % (i % 5), "round %d " % i * (5 + i * 3), None))
    ops.append(("set", "cfg", "blob", bytes(rnd.getrandbits(8) for _ in range(7000)), None))
    return ops


def _apply(store, model, op):
    if op[0] == "set":
        _, ns, key, value, t = op
        store.set(ns, key, value, t)
        model[(ns, key)] = typed(value, t)
    elif op[0] == "erase":
        store.erase(op[1], op[2])
        model.pop((op[1], op[2]), None)
    else:
        store.erase_namespace(op[1])
        for k in [k for k in model if k[0] == op[1]]:
            del model[k]


def _run_with_cut(base, script, budget, torn=False):
    """Run the script until the power is cut; return (flash, index of the op cut short)."""
    flash = SimFlash(data=base)
    flash.budget = budget
    flash.torn = torn
    s = CStore(flash)
    for i, op in enumerate(script):
        try:
            _apply(s, {}, op)
        except OSError as e:
            assert e.errno == errno.EIO, e
            return flash, i
    return flash, len(script)


def _check_cuts(tmp_path, script, base, namespaces, step=1, torn=False, idf_load_only=False):
    """Cut the power after every `step`-th flash write of the script; after each cut the
    reloaded store must hold, for every key, its value from before or after the op that was
    cut short, and keep working. Returns the number of cuts and some repaired images."""
    flash = SimFlash(data=base)
    s = CStore(flash)
    models = [dump(s, namespaces)]
    for op in script:
        m = dict(models[-1])
        _apply(s, m, op)
        models.append(m)
    total = flash.ops_done
    assert not flash.violations
    images = []
    cuts = []       # (n, k, cut image, repaired image, our view) for ESP-IDF's own loader
    for n in range(0, total, step):
        cut, k = _run_with_cut(base, script, n, torn)
        assert not cut.violations, (n, cut.violations)
        after = SimFlash(data=cut.buf)
        s = CStore(after, idf_load_only=idf_load_only)
        got = dump(s, namespaces, strict=not idf_load_only)
        old, new = models[k], models[min(k + 1, len(script))]
        for key in set(old) | set(new) | set(got):
            assert got.get(key) in (old.get(key), new.get(key)), (n, k, script[k][:3], key)
        py = python_nvs_or_none()
        if py is not None and not idf_load_only:
            # the pure-Python twin reads the cut image the same way
            p = py.NVS(SimFlash(data=cut.buf))
            pgot = {(ns, key): p.get_typed(ns, key) for ns in namespaces for key, _t in p.keys(ns)}
            for key in set(old) | set(new) | set(pgot):
                assert pgot.get(key) in (old.get(key), new.get(key)), ("nvs.py", n, k, script[k][:3], key)
        # still writable, and what it writes survives another reload
        s.set(namespaces[0], "after", n)
        s.close()
        s = CStore(SimFlash(data=after.buf), idf_load_only=idf_load_only)
        assert s.get(namespaces[0], "after") == n
        assert not after.violations
        ours = dict(got)
        ours[(namespaces[0], "after")] = (I64, n)
        cuts.append((n, k, bytes(cut.buf), bytes(after.buf), ours))
        if len(images) < 40 and n % 5 == 0:
            images.append(bytes(after.buf))
    # ESP-IDF's own loader (when IDF_PATH is set): the cut images give old or new values, and
    # the images this core repaired and wrote read exactly as this core reads them.
    res = idf_read(tmp_path, [c[2] for c in cuts] + [c[3] for c in cuts])
    if res is not None:
        for (n, k, _c, _a, _g), (err, items) in zip(cuts, res[:len(cuts)]):
            assert err == 0, (n, err)
            old, new = models[k], models[min(k + 1, len(script))]
            listed = {key for key, _v in items}
            for key, tv in items:
                assert tv in (old.get(key), new.get(key)), ("ESP-IDF", n, k, script[k][:3], key)
            for key in (set(old) | set(new)) - listed:
                assert None in (old.get(key), new.get(key)), ("ESP-IDF lost", n, k, script[k][:3], key)
        for (n, _k, _c, _a, ours), (err, items) in zip(cuts, res[len(cuts):] if not idf_load_only else []):
            assert err == 0 and dict(items) == ours and len(items) == len(ours), ("ESP-IDF repaired", n)
    return total, images


@pytest.mark.parametrize("torn", [False, True], ids=["whole-writes", "torn-writes"])
def test_power_cut_after_every_write(tmp_path, torn):
    base = bytes(SimFlash(0x6000).buf)
    total, images = _check_cuts(tmp_path, _script(), base, ["cfg", "new"], torn=torn)
    assert total > 300
    assert_idf_clean(tmp_path, images)   # when IDF_PATH is set


def test_power_cut_esp_idf_loader_alone(tmp_path):
    # The same cuts, reloaded by ESP-IDF's loading algorithm only (no extra repair): what a
    # board would see if this flash were its NVS partition.
    base = bytes(SimFlash(0x6000).buf)
    _check_cuts(tmp_path, _script(), base, ["cfg", "new"], idf_load_only=True)


def _random_script(seed, n):
    rnd = random.Random(seed)
    ops = []
    for _ in range(n):
        ns, key = rnd.choice(["p", "q"]), "k%d" % rnd.randrange(5)
        r = rnd.random()
        if r < 0.8:
            value, t = random_value(rnd)
            if isinstance(value, bytes) and len(value) > 4500:
                value = value[:4500]
            ops.append(("set", ns, key, value, t))
        elif r < 0.95:
            ops.append(("erase", ns, key))
        else:
            ops.append(("erase_ns", ns))
    return ops


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_power_cut_random_scripts(tmp_path, seed):
    # Start from a partition that is already fairly full, so writes reclaim pages.
    flash = SimFlash(0x5000)
    s = CStore(flash)
    for i in range(40):
        s.set("p" if i % 2 else "q", "fill%d" % (i % 13), "x" * (60 + i))
    base = bytes(flash.buf)
    script = list(_random_script(seed, 30))
    # drop ops the full partition refuses, so the model stays exact
    ok, f2 = [], SimFlash(data=base)
    s = CStore(f2)
    for op in script:
        try:
            _apply(s, {}, op)
            ok.append(op)
        except OSError as e:
            assert e.errno == errno.ENOSPC
            s.close()
            s = CStore(f2)
    total, images = _check_cuts(tmp_path, ok, base, ["p", "q"], step=2, torn=seed == 3)
    _check_cuts(tmp_path, ok, base, ["p", "q"], step=5, idf_load_only=True)
    assert total > 100
    assert_idf_clean(tmp_path, images)   # when IDF_PATH is set


def _idf_ops(script):
    """The script in idf_loader --write's line format."""
    lines = []
    for op in script:
        if op[0] == "set":
            _, ns, key, value, t = op
            t, v = typed(value, t)
            if t in INT_RANGE:
                data = (v & (2 ** (8 * (t & 0x0F)) - 1)).to_bytes(t & 0x0F, "little")
            elif t == STR:
                data = v.encode()
            else:
                data = v
            lines.append("set %s %s 0x%02x %s" % (ns, key, t, data.hex()))
        elif op[0] == "erase":
            lines.append("erase %s %s" % (op[1], op[2]))
        else:
            lines.append("erase_ns %s" % op[1])
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("which", ["script", "random"])
def test_esp_idf_written_power_cuts_load_as_esp_idf_loads_them(tmp_path, which):
    # ESP-IDF's own writer (nvs_storage.cpp from IDF_PATH) runs the script with the power cut
    # after every flash write; this core must read each image as ESP-IDF's loader reads it
    # (a key ESP-IDF lists twice, with two types, is read as one of them), and leave it clean.
    exe = idf_loader()
    if exe is None:
        pytest.skip("IDF_PATH not set: ESP-IDF's own NVS writer is not available")
    if which == "script":
        script, size, namespaces = _script(), 0x6000, ["cfg", "new"]
    else:
        script, size, namespaces = _random_script(11, 40), 0x5000, ["p", "q"]
    base = tmp_path / "base.bin"
    base.write_bytes(b"\xff" * size)
    (tmp_path / "ops.txt").write_text(_idf_ops(script))
    outdir = tmp_path / "cuts"
    outdir.mkdir()
    r = subprocess.run([exe, "--write", str(base), str(tmp_path / "ops.txt"), str(outdir), "1"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    cuts = [tuple(int(x) for x in line.split()) for line in r.stdout.split("\n") if line]
    assert len(cuts) > 100
    images = [(outdir / ("cut_%d.bin" % n)).read_bytes() for n, _k in cuts]
    theirs = idf_read(tmp_path, images)
    repaired = []
    for (n, k), img, (err, items) in zip(cuts, images, theirs):
        assert err == 0, (n, err)
        flash = SimFlash(data=img)
        ours = dump(CStore(flash), namespaces)
        listed = {}
        for key, tv in items:
            listed.setdefault(key, []).append(tv)
        assert set(ours) == set(listed), (n, k)
        for key, tv in ours.items():
            assert tv in listed[key], (n, k, key)
        if n % 9 == 0:
            repaired.append(bytes(flash.buf))
    assert_idf_clean(tmp_path, repaired)   # when IDF_PATH is set


def _small_values_script(seed, n):
    rnd = random.Random(seed)
    ops = []
    for _ in range(n):
        ns, key = rnd.choice(["a", "b", "c"]), "k%d" % rnd.randrange(12)
        r = rnd.random()
        if r < 0.6:
            t = rnd.choice(list(INT_RANGE))
            ops.append(("set", ns, key, rnd.randint(*INT_RANGE[t]), t))
        elif r < 0.85:
            ops.append(("set", ns, key, "s" * rnd.randrange(60), None))
        else:
            ops.append(("erase", ns, key))
    return ops


@pytest.mark.parametrize("which", ["script", "random", "small-values"])
def test_writes_byte_identical_to_esp_idf(tmp_path, which):
    # Built without its deviations (NVS_HOST_ESP_IDF_WRITES_ONLY), this core must leave the
    # very bytes ESP-IDF's own writer leaves for the same operations.
    exe = idf_loader()
    if exe is None:
        pytest.skip("IDF_PATH not set: ESP-IDF's own NVS writer is not available")
    script, size = {"script": (_script(), 0x6000), "random": (_random_script(11, 40), 0x5000),
                    "small-values": (_small_values_script(4, 1500), 0x4000)}[which]
    base = tmp_path / "base.bin"
    base.write_bytes(b"\xff" * size)
    (tmp_path / "ops.txt").write_text(_idf_ops(script))
    outdir = tmp_path / "cuts"
    outdir.mkdir()
    r = subprocess.run([exe, "--write", str(base), str(tmp_path / "ops.txt"), str(outdir), str(10 ** 9)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    flash = SimFlash(size)
    s = CStore(flash, idf_writes_only=True)
    for op in script:
        try:
            _apply(s, {}, op)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    theirs = (outdir / "full.bin").read_bytes()
    diff = [i for i in range(size) if theirs[i] != flash.buf[i]]
    assert not diff, "first difference at 0x%x (page %d)" % (diff[0], diff[0] // 4096)


def test_python_writes_with_power_cuts_c_reads_old_or_new():
    nvs = python_nvs()
    script = _script()
    base = bytes(SimFlash(0x6000).buf)
    namespaces = ["cfg", "new"]
    flash = SimFlash(data=base)
    p = nvs.NVS(flash)
    models = [{}]
    for op in script:
        m = dict(models[-1])
        _apply(p, m, op)
        models.append(m)
    for n in range(flash.ops_done):
        flash = SimFlash(data=base)
        flash.budget = n
        k = len(script)
        try:
            p = nvs.NVS(flash)
            for k, op in enumerate(script):  # noqa: B007 - k tells the except clause how far it got
                _apply(p, {}, op)
            k = len(script)
        except PowerCut:
            pass
        got = dump(CStore(SimFlash(data=flash.buf)), namespaces)
        old, new = models[k], models[min(k + 1, len(script))]
        for key in set(old) | set(new) | set(got):
            assert got.get(key) in (old.get(key), new.get(key)), (n, k, script[k][:3], key)
