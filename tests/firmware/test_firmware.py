"""Firmware builds and checks: frozen size, Xtensa cross-compile, app-size budget, host firmware.

- check_frozen / check_xtensa / check_app_size run everywhere (the Xtensa one skips without
  Debian's cross compiler).
- The Makefile's firmware targets: missing MicroPython source or ESP-IDF gives one sentence;
  with MICROPY_DIR set, `make -n BOARD=ESP32_GENERIC` shows the out-of-tree esp32 invocation.
- The host firmware (make BOARD=UNIX MICROPY_DIR=..., or FIRMWARE=<binary>): `_iotutils`, the
  frozen toolbox, GIL and single-precision floats. Skipped with the reason when not built.
"""
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPTS = os.path.join(ROOT, "scripts")
sys.path.insert(0, SCRIPTS)
import espimage  # noqa: E402
import gen_package_json  # noqa: E402

MICROPY_DIR = os.environ.get("MICROPY_DIR", "")
UNIX_FIRMWARE = os.path.join(ROOT, "build", "unix", "micropython")
CHIP_ONLY = {"iotutils/hal/esp32.py"}  # imports network/esp32: only on the chip
PARTITIONS = os.path.join(ROOT, "boards", "ESP32_GENERIC", "partitions.csv")


def _script(name, *args, timeout=300):
    proc = subprocess.run([sys.executable, os.path.join(SCRIPTS, name)] + list(args),
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def _make(*args, env=None, timeout=120):
    proc = subprocess.run(["make", "--no-print-directory"] + list(args), cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)
    return proc.returncode, proc.stdout + proc.stderr


# ---- frozen bytecode ----------------------------------------------------------------------

def test_check_frozen_compiles_every_module_for_xtensawin():
    rc, out = _script("check_frozen.py")
    assert rc == 0, out
    for rel in gen_package_json.package_files():
        assert re.search(r"^%s\s+\d+$" % re.escape(rel), out, re.M), rel + " missing:\n" + out
    sizes = [int(m) for m in re.findall(r"^iotutils/\S+\s+(\d+)$", out, re.M)]
    total = int(re.search(r"^total\s+(\d+)", out, re.M).group(1))
    assert total == sum(sizes) > 0


def test_check_frozen_fails_on_a_module_micropython_cannot_compile(tmp_path):
    pkg = tmp_path / "iotutils"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("__version__ = '0'\n")
    (pkg / "broken.py").write_text("def f(:\n    pass\n")
    rc, out = _script("check_frozen.py", "--modules", str(tmp_path))
    assert rc == 1, out
    assert "ERROR iotutils/broken.py" in out
    assert "iotutils/__init__.py" in out  # the good one is still reported


def test_check_frozen_firmware_estimate_sizes_the_frozen_package_for_xtensa():
    if not os.path.isfile(os.path.join(MICROPY_DIR, "tools", "makemanifest.py")):
        pytest.skip("MICROPY_DIR unset or not a MicroPython tree")
    if not os.path.isfile(os.path.join(ROOT, "build", "unix", "genhdr", "qstrdefs.preprocessed.h")):
        pytest.skip("no host firmware build (make BOARD=UNIX MICROPY_DIR=...)")
    if shutil.which("xtensa-lx106-elf-gcc") is None:
        pytest.skip("xtensa-lx106-elf-gcc missing")
    rc, out = _script("check_frozen.py", "--quiet", "--firmware-estimate", "--micropy-dir", MICROPY_DIR)
    assert rc == 0, out
    mpy_total = int(re.search(r"^total\s+(\d+)", out, re.M).group(1))
    frozen = int(re.search(r"^frozen into the firmware\s+(\d+)", out, re.M).group(1))
    # same bytecode, stored as C structures: the same order of size as the .mpy files
    assert mpy_total // 2 < frozen < mpy_total * 3, out


# ---- Xtensa cross-compile of the C cores --------------------------------------------------

needs_xtensa = pytest.mark.skipif(shutil.which("xtensa-lx106-elf-gcc") is None,
                                  reason="xtensa-lx106-elf-gcc missing (Debian gcc-xtensa-lx106, make deps)")


@needs_xtensa
def test_check_xtensa_cores_compile_clean_with_size_report():
    import check_xtensa
    rc, out = _script("check_xtensa.py")
    assert rc == 0, out
    for core, files in check_xtensa.CORES.items():
        for name in files:
            m = re.search(r"^%s\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$" % re.escape(name), out, re.M)
            assert m, out
            assert int(m.group(1)) > 0, out  # some code
        assert re.search(r"^core %s\b.*\s(\d+)\s+static RAM" % re.escape(core), out, re.M), out


@needs_xtensa
def test_check_xtensa_rejects_warnings_and_non_libc_symbols(tmp_path):
    good = tmp_path / "good.c"
    good.write_text("#include <string.h>\nsize_t good_len(const char *s) { return strlen(s); }\n")
    warn = tmp_path / "warn.c"
    warn.write_text("int warn(int x) { int unused; return x; }\n")
    foreign = tmp_path / "foreign.c"
    foreign.write_text("extern void *mp_obj_new_int(int);\nvoid *foreign(int x) { return mp_obj_new_int(x); }\n")
    rc, out = _script("check_xtensa.py", str(good))
    assert rc == 0, out
    rc, out = _script("check_xtensa.py", str(good), str(warn))
    assert rc == 1 and "unused variable" in out, out
    rc, out = _script("check_xtensa.py", str(good), str(foreign))
    assert rc == 1 and "mp_obj_new_int" in out, out


# ---- ESP32-only C against ESP-IDF's headers ----------------------------------------------

IDF_PATH = os.environ.get("IDF_PATH", "")
needs_idf = pytest.mark.skipif(not IDF_PATH, reason="IDF_PATH unset: no ESP-IDF tree to type-check against")

IDF_SAMPLE = """#include <stddef.h>
#include "nvs.h"
#include "esp_partition.h"
int sample(void) {
    nvs_handle_t h;
    if (nvs_open("ns", NVS_READWRITE, &h) != ESP_OK) {
        return -1;
    }
    LENTYPE len = 0;
    esp_err_t err = nvs_get_blob(h, "k", NULL, &len);
    nvs_close(h);
    const esp_partition_t *p = esp_partition_find_first(ESP_PARTITION_TYPE_DATA,
                                                        ESP_PARTITION_SUBTYPE_DATA_NVS, NULL);
    return (int)len + (p != NULL) + (int)err;
}
"""


def test_check_idf_skips_cleanly_without_idf_path():
    env = dict(os.environ)
    env.pop("IDF_PATH", None)
    proc = subprocess.run([sys.executable, os.path.join(SCRIPTS, "check_idf.py")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "skipped: IDF_PATH is not set" in proc.stdout


@needs_idf
def test_check_idf_type_checks_against_the_real_headers(tmp_path):
    rc, out = _script("check_idf.py")  # the project's own *_idf.c, if any yet
    assert rc == 0, out
    good = tmp_path / "good_idf.c"
    good.write_text(IDF_SAMPLE.replace("LENTYPE", "size_t"))
    bad = tmp_path / "bad_idf.c"
    bad.write_text(IDF_SAMPLE.replace("LENTYPE", "int"))  # nvs_get_blob wants size_t *
    rc, out = _script("check_idf.py", str(good))
    assert rc == 0 and "ok   " in out, out
    rc, out = _script("check_idf.py", str(good), str(bad))
    assert rc == 1 and "FAIL %s" % bad in out and "nvs_get_blob" in out, out


def _has_kconfgen():
    return subprocess.run([sys.executable, "-c", "import kconfgen"], capture_output=True).returncode == 0


@needs_idf
def test_board_sdkconfig_resolves_against_esp_idf_kconfig(tmp_path):
    if not os.path.isfile(os.path.join(MICROPY_DIR, "ports", "esp32", "boards", "sdkconfig.base")):
        pytest.skip("MICROPY_DIR unset: the port's sdkconfig.base is needed")
    if not _has_kconfgen():
        pytest.skip("kconfgen missing (pip install esp-idf-kconfig, or ESP-IDF's Python env)")
    rc, out = _script("check_idf.py")
    assert rc == 0 and "ok   sdkconfig of boards/ESP32_GENERIC resolves as intended" in out, out
    board = tmp_path / "BOARD"
    shutil.copytree(os.path.join(ROOT, "boards", "ESP32_GENERIC"), str(board))
    with open(str(board / "sdkconfig.board"), "a") as f:
        f.write("CONFIG_IOTUTILS_NO_SUCH_OPTION=y\nCONFIG_APP_EXCLUDE_PROJECT_VER_VAR=y\n")
    rc, out = _script("check_idf.py", "--board-dir", str(board))
    assert rc == 1, out
    assert "unknown kconfig symbol 'IOTUTILS_NO_SUCH_OPTION'" in out, out
    assert "CONFIG_APP_EXCLUDE_PROJECT_VER_VAR=y (want n)" in out, out


# ---- app image budget ---------------------------------------------------------------------

def test_check_app_size_accepts_a_fitting_image_and_rejects_too_big_or_mislabelled(tmp_path):
    version = gen_package_json.version()
    img = tmp_path / "micropython.bin"
    img.write_bytes(espimage.build_app_image(version, size=64 * 1024))
    rc, out = _script("check_app_size.py", str(img), PARTITIONS)
    assert rc == 0, out
    assert "in ota_0 of 1900544 bytes" in out, out

    small = tmp_path / "partitions.csv"
    small.write_text("nvs, data, nvs, 0x9000, 0x6000,\nota_0, app, ota_0, 0x10000, 32K,\n"
                     "ota_1, app, ota_1, 0x20000, 64K,\n")
    rc, out = _script("check_app_size.py", str(img), str(small))
    assert rc == 1 and "FAIL size" in out and "ota_0 of 32768" in out, out

    wrong = tmp_path / "other.bin"
    wrong.write_bytes(espimage.build_app_image("0.0.0-other", project="someapp"))
    rc, out = _script("check_app_size.py", str(wrong), PARTITIONS)
    assert rc == 1 and "project: 'someapp'" in out and "version: '0.0.0-other'" in out, out

    corrupt = bytearray(img.read_bytes())
    corrupt[300] ^= 0xFF
    img.write_bytes(bytes(corrupt))
    rc, out = _script("check_app_size.py", str(img), PARTITIONS)
    assert rc == 1 and "FAIL image:" in out, out


def test_partition_table_fits_4mb_with_aligned_ota_slots():
    with open(PARTITIONS) as f:
        rows = [[x.strip() for x in ln.split("#")[0].split(",")] for ln in f if ln.split("#")[0].strip()]
    end = 0x9000  # bootloader at 0x1000, partition table at 0x8000 (ESP-IDF defaults)
    apps = []
    for name, ptype, sub, off, size, *_ in rows:
        off, size = int(off, 0), int(size, 0)
        assert off >= end, name + " overlaps the previous partition"
        if ptype == "app":
            assert off % 0x10000 == 0, name + " must be 64 KB aligned"
            apps.append((sub, size))
        end = off + size
    assert end <= 0x400000
    assert sorted(s for s, _ in apps) == ["ota_0", "ota_1"]
    assert apps[0][1] == apps[1][1] == 0x1D0000
    nvs = [r for r in rows if r[0] == "nvs"][0]
    assert int(nvs[4], 0) >= 24 * 1024


# ---- Makefile firmware targets ------------------------------------------------------------

def _env_without_idf():
    env = dict(os.environ)
    env.pop("IDF_PATH", None)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not os.path.exists(os.path.join(p, "idf.py")))
    return env


def test_make_esp32_without_source_says_how_to_get_it(tmp_path):
    rc, out = _make("BOARD=ESP32_GENERIC", "MICROPY_DIR=%s" % tmp_path, env=_env_without_idf())
    assert rc != 0
    assert "is not a MicroPython source tree" in out and "v1.28.0" in out, out


def test_make_esp32_without_esp_idf_says_how_to_get_it(tmp_path):
    fake = tmp_path / "micropython"
    (fake / "py").mkdir(parents=True)
    (fake / "py" / "mpconfig.h").write_text("")
    rc, out = _make("BOARD=ESP32_GENERIC", "MICROPY_DIR=%s" % fake, env=_env_without_idf())
    assert rc != 0
    assert "ESP-IDF not found" in out and "export.sh" in out, out
    assert "mpy-cross" not in out  # stopped before building anything


needs_micropy_dir = pytest.mark.skipif(
    not os.path.isfile(os.path.join(MICROPY_DIR, "ports", "esp32", "Makefile")),
    reason="MICROPY_DIR unset or not a MicroPython v1.28.0 tree")


@needs_micropy_dir
def test_make_n_esp32_shows_the_out_of_tree_invocation():
    rc, out = _make("-n", "BOARD=ESP32_GENERIC", "MICROPY_DIR=%s" % MICROPY_DIR, env=_env_without_idf())
    assert rc == 0, out
    line = " ".join(out.replace("\\\n", " ").split("\n"))
    mp = os.path.abspath(MICROPY_DIR)
    assert re.search(r"make -C %s/ports/esp32 BOARD_DIR=%s/boards/ESP32_GENERIC " % (re.escape(mp), re.escape(ROOT)),
                     line), out
    assert "USER_C_MODULES=%s/c_modules/micropython.cmake" % ROOT in line
    assert "FROZEN_MANIFEST=%s/frozen/manifest.py" % ROOT in line
    # ... which the port's Makefile turns into this idf.py call
    assert 'idf.py -D MICROPY_BOARD=ESP32_GENERIC -D MICROPY_BOARD_DIR="%s/boards/ESP32_GENERIC"' % ROOT in line
    assert "check_app_size.py" in line


# ---- host firmware ------------------------------------------------------------------------

def _firmware():
    fw = os.environ.get("FIRMWARE")
    if fw:
        return os.path.abspath(fw)  # the runs below start in a temporary folder
    if not MICROPY_DIR:
        pytest.skip("MICROPY_DIR unset: build the host firmware with make BOARD=UNIX MICROPY_DIR=<v1.28.0 tree>"
                    " (or set FIRMWARE=<binary>)")
    if not os.path.exists(UNIX_FIRMWARE):
        pytest.skip("no host firmware at build/unix/micropython: run make BOARD=UNIX MICROPY_DIR=%s" % MICROPY_DIR)
    return UNIX_FIRMWARE


def _fw_run(code, tmp_path, path=".frozen"):
    """Run code on the host firmware in an empty folder, with only `path` to import from."""
    env = dict(os.environ, MICROPYPATH=path, HOME=str(tmp_path))
    proc = subprocess.run([_firmware(), "-X", "heapsize=110wK", "-c", code], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr


def test_host_firmware_has_the_c_module_with_the_current_abi(tmp_path):
    with open(os.path.join(ROOT, "c_modules", "iotutils", "mod_iotutils.c")) as f:
        abi = int(re.search(r"#define IOTUTILS_ABI \((\d+)\)", f.read()).group(1))
    rc, out = _fw_run("import _iotutils; print('abi', _iotutils.abi)", tmp_path)
    assert rc == 0, out
    assert out.split() == ["abi", str(abi)], out


def test_heap_largest_reads_the_gc_table_without_allocating(tmp_path):
    # the largest free block, exactly: that size fits, a little more does not, and asking allocates
    # nothing (the bisection it replaces could leave its largest probe alive on a conservative GC)
    code = ("import gc, _iotutils\nn = f = b = 0   # (globals made first: a new one grows the dict)\nkeep = [bytearray(3000) for _ in range(20)]\nfor i in range(0, 20, 2):\n    keep[i] = None\ngc.collect()\n"
            "f = gc.mem_free()\nn = _iotutils.heap_largest()\nprint('same', gc.mem_free() == f)\n"
            "b = bytearray(n - 64)\ndel b\ngc.collect()\n"
            "try:\n    bytearray(n + 64)\n    print('more fits')\nexcept MemoryError:\n    print('exact', n)\n")
    rc, out = _fw_run(code, tmp_path)
    assert rc == 0, out
    assert "same True" in out and re.search(r"^exact \d+$", out, re.M), out


def test_host_firmware_freezes_the_whole_toolbox(tmp_path):
    names = [rel[:-3].replace("/", ".").replace(".__init__", "")
             for rel in gen_package_json.package_files() if rel not in CHIP_ONLY]
    code = ("import sys, iotutils\nprint('version', iotutils.__version__)\n"
            "for n in %r:\n    __import__(n)\n    print('frozen', n, sys.modules[n].__file__)\n") % (names,)
    rc, out = _fw_run(code, tmp_path)
    assert rc == 0, "a module is missing from the frozen set (rebuild with make BOARD=UNIX?):\n" + out
    assert "version %s" % gen_package_json.version() in out, out
    for n in names:
        # frozen modules have relative file names; nothing was on disk to import from
        assert re.search(r"^frozen %s iotutils/" % re.escape(n), out, re.M), out


def test_host_firmware_is_configured_like_the_esp32(tmp_path):
    code = ("import sys\n"
            "print('thread', sys.implementation._thread)\n"
            "print('version', sys.implementation.version[:3])\n"
            # float32 has a 24-bit mantissa: 1 + 2**-30 rounds to 1 (a double keeps it)
            "print('single', 1.0 + 2.0 ** -30 == 1.0)\n"
            "import _thread, asyncio, mip, ssl, deflate, hashlib\nprint('modules ok')\n")
    rc, out = _fw_run(code, tmp_path)
    assert rc == 0, out
    assert "thread GIL" in out, out
    assert "version (1, 28, 0)" in out, out
    assert "single True" in out, out
    assert "modules ok" in out
