"""Compile the portable C cores with the system cc and load them with ctypes.

Each core is built as a shared library under build/ctests/, with warnings as errors,
so the same flags that gate CI gate every test that loads a core.
"""
import ctypes
import hashlib
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
C_DIR = os.path.join(ROOT, "c_modules", "iotutils")
OUT_DIR = os.path.join(ROOT, "build", "ctests")
WARN_FLAGS = ["-Wall", "-Wextra", "-Werror", "-std=c99"]

# The C files of each core, as c_modules/iotutils/micropython.mk builds them into the host firmware.
HTTPPARSE_SOURCES = ["httpparse.c"]
JSONCHECK_SOURCES = ["jsoncheck.c"]
NVS_HOST_SOURCES = ["nvs_item.c", "nvs_page.c", "nvs_pagemanager.c", "nvs_storage.c", "nvs_host.c"]
KVSTORE_SOURCES = ["kvstore.c"] + NVS_HOST_SOURCES  # the store over its host backend


def build_shared(name, sources, extra_flags=(), sanitize=False):
    """Build c_modules/iotutils/<sources> into lib<name>.so and return a ctypes.CDLL.

    Rebuilds only when a source, header or flag changed (content hash in the file name).
    sanitize=True adds ASan/UBSan (the library must then be loaded in a process that
    preloads libasan, so tests use it only through a separate executable).
    """
    os.makedirs(OUT_DIR, exist_ok=True)
    paths = [s if os.path.isabs(s) else os.path.join(C_DIR, s) for s in sources]
    flags = WARN_FLAGS + ["-O2", "-g", "-fPIC", "-shared", "-I", C_DIR] + list(extra_flags)
    if sanitize:
        flags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    digest = hashlib.sha256(" ".join(flags).encode())
    for p in paths + _headers():
        with open(p, "rb") as f:
            digest.update(f.read())
    out = os.path.join(OUT_DIR, "lib%s-%s.so" % (name, digest.hexdigest()[:12]))
    if not os.path.exists(out):
        tmp = out + ".tmp%d" % os.getpid()
        subprocess.run([os.environ.get("CC", "cc")] + flags + ["-o", tmp] + paths, check=True)
        os.replace(tmp, out)
    return ctypes.CDLL(out)


def _headers():
    return [os.path.join(C_DIR, f) for f in sorted(os.listdir(C_DIR)) if f.endswith(".h")]


FUZZ_DIR = os.path.join(ROOT, "tests", "c", "fuzz")


def run_sanitized_driver(tmp_path, harness, sources, define, files):
    """Build tests/c/fuzz/<harness> with -D<define> (its plain driver: `driver FILE...` runs each file,
    and every prefix of it) under ASan/UBSan, and assert that it runs every file clean (pytest.skip
    when the compiler has no sanitizers)."""
    import pytest
    cc = os.environ.get("CC", "cc")
    exe = os.path.join(str(tmp_path), harness.split(".")[0] + "_driver")
    cmd = ([cc] + WARN_FLAGS + ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                                "-fno-omit-frame-pointer", "-D" + define, "-I", C_DIR, os.path.join(FUZZ_DIR, harness)]
           + [os.path.join(C_DIR, f) for f in sources] + ["-o", exe])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode and "sanitize" in proc.stderr:
        pytest.skip("compiler without ASan/UBSan: " + proc.stderr[-300:])
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([exe] + files, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "runtime error" not in proc.stderr
    assert ("ran %d inputs" % len(files)) in proc.stdout
