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
