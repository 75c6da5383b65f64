#!/usr/bin/env python3
"""Cross-compile the portable C cores for Xtensa and report their code size.

    python scripts/check_xtensa.py [FILE.c ...]

Uses Debian's xtensa-lx106-elf-gcc with picolibc (packages gcc-xtensa-lx106 and
picolibc-xtensa-lx106-elf): the nearest compiler to the ESP32's (xtensa-esp32-elf, LX6) available
here. Flags mirror an ESP-IDF size build: -Os -mlongcalls, all warnings as errors. Each core must
also be libc-only: every symbol it leaves undefined must come from picolibc, libgcc or another core.

Without arguments it checks the cores of c_modules/iotutils/ (CORES: httpparse, kvstore and the
host NVS engine nvs_*.c); a file with an IOTUTILS_KV_IDF path is also compiled in that (ESP32)
configuration. The report gives each file's sections, then each core's total, and what the host
and the ESP32 builds link (the host NVS engine is unix-only). Exits 0 when all compile clean, 1 on
a warning/error or a foreign symbol, 2 when the cross compiler is not installed, 3 when there is
nothing to compile.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE_DIR = os.path.join(ROOT, "c_modules", "iotutils")
# Each portable core and its files (the MicroPython bindings mod_*.c are not cores: they need
# MicroPython's headers; kvstore_idf.c needs ESP-IDF's: scripts/check_idf.py checks those).
CORES = {
    "httpparse": ("httpparse.c",),
    "kvstore": ("kvstore.c",),
    "jsoncheck": ("jsoncheck.c",),
    "nvs_host": ("nvs_item.c", "nvs_page.c", "nvs_pagemanager.c", "nvs_storage.c", "nvs_host.c"),
}
# The host NVS engine: the unix port only (micropython.mk); the ESP32 uses ESP-IDF's NVS.
HOST_ONLY = {"nvs_host"}
CORE_OF = {f: core for core, files in CORES.items() for f in files}
# A core with an ESP32 path is compiled a second time the way c_modules/micropython.cmake does.
IDF_DEFINE = "IOTUTILS_KV_IDF"

CC = "xtensa-lx106-elf-gcc"
NM = "xtensa-lx106-elf-nm"
SIZE = "xtensa-lx106-elf-size"
# picolibc's spec file is not on gcc's spec search path: name it by its absolute path.
SPECS_CANDIDATES = ("/usr/lib/xtensa-lx106-elf/picolibc.specs", "/usr/lib/picolibc/xtensa-lx106-elf/picolibc.specs")
LIBC_CANDIDATES = ("/usr/lib/xtensa-lx106-elf/lib/libc.a",)
# gcc's own arithmetic helpers (__muldi3, __udivdi3, ...): Debian's lx106 libgcc lacks some that
# the ESP32 has in ROM/libgcc, so they count as provided and are listed in the report.
COMPILER_HELPER = re.compile(r"^__[a-z]+[0-9]$")
CFLAGS = ["-std=c99", "-Os", "-mlongcalls", "-Wall", "-Wextra", "-Werror",
          "-ffunction-sections", "-fdata-sections"]


def find_toolchain():
    """(cc, specs) or None when the cross compiler or picolibc is missing."""
    cc = shutil.which(CC)
    specs = next((p for p in SPECS_CANDIDATES if os.path.exists(p)), None)
    if cc is None or specs is None:
        return None
    return cc, specs


def _run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def defined_symbols(archives):
    """Global symbols defined by the given static libraries (picolibc, libgcc)."""
    names = set()
    for lib in archives:
        proc = _run([NM, "-g", "--defined-only", "-f", "posix", lib])
        for line in proc.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2 and not line.endswith(":"):
                names.add(parts[0])
    return names


def _symbols(obj, flag):
    proc = _run([NM, flag, "-f", "posix", obj])
    return {line.split()[0] for line in proc.stdout.splitlines() if line.split()}


def section_sizes(obj):
    """{"text", "rodata", "data", "bss"} in bytes, from `size -A` (.literal counts as text)."""
    sizes = {"text": 0, "rodata": 0, "data": 0, "bss": 0}
    for line in _run([SIZE, "-A", obj]).stdout.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[1].isdigit():
            continue
        name, n = parts[0], int(parts[1])
        if name.startswith((".text", ".literal")):
            sizes["text"] += n
        elif name.startswith(".rodata"):
            sizes["rodata"] += n
        elif name.startswith(".data"):
            sizes["data"] += n
        elif name.startswith((".bss", "COMMON")):
            sizes["bss"] += n
    return sizes


def _compile(cc, specs, src, obj, extra):
    return _run([cc, "--specs=" + specs] + CFLAGS + extra + ["-I", os.path.dirname(os.path.abspath(src)),
                                                             "-c", src, "-o", obj])


def libgcc_path(cc):
    return _run([cc, "-print-libgcc-file-name"]).stdout.strip()


def check(sources, out=sys.stdout):
    """Compile and inspect each source; returns the exit code described in the module docstring."""
    tool = find_toolchain()
    if tool is None:
        out.write("check_xtensa: %s with picolibc not found: install the Debian packages "
                  "gcc-xtensa-lx106 and picolibc-xtensa-lx106-elf (make deps)\n" % CC)
        return 2
    cc, specs = tool
    if not sources:
        out.write("check_xtensa: no C core to compile in %s\n" % CORE_DIR)
        return 3
    failed = False
    rows = []  # (label, sizes, in the ESP32 build, core or None)
    with tempfile.TemporaryDirectory() as tmp:
        objs = {}
        idf_objs = {}
        for src in sources:
            name = os.path.basename(src)
            obj = os.path.join(tmp, name[:-2] + ".o")
            proc = _compile(cc, specs, src, obj, [])
            if proc.returncode != 0:
                out.write("FAIL %s:\n%s\n" % (name, (proc.stdout + proc.stderr).strip()))
                failed = True
                continue
            objs[name] = obj
            with open(src) as f:
                has_idf_path = IDF_DEFINE in f.read()
            core = CORE_OF.get(name)
            rows.append((name, section_sizes(obj), core not in HOST_ONLY and not has_idf_path, core))
            if has_idf_path:
                # the configuration the ESP32 build compiles (c_modules/micropython.cmake)
                label = "%s [IDF]" % name
                idf_obj = os.path.join(tmp, name[:-2] + "_idf.o")
                proc = _compile(cc, specs, src, idf_obj, ["-D%s=1" % IDF_DEFINE])
                if proc.returncode != 0:
                    out.write("FAIL %s:\n%s\n" % (label, (proc.stdout + proc.stderr).strip()))
                    failed = True
                    continue
                idf_objs[label] = idf_obj
                rows.append((label, section_sizes(idf_obj), True, core and core + " [IDF]"))
        # libc only: whatever a core calls must be picolibc, libgcc or one of the cores.
        libs = defined_symbols([p for p in LIBC_CANDIDATES if os.path.exists(p)] + [libgcc_path(cc)])
        provided = set(libs)
        for obj in objs.values():
            provided |= _symbols(obj, "--defined-only")
        for name, obj in list(objs.items()) + list(idf_objs.items()):
            missing = _symbols(obj, "-u") - provided
            helpers = sorted(n for n in missing if COMPILER_HELPER.match(n))
            if helpers:
                out.write("note %s uses compiler helpers: %s\n" % (name, ", ".join(helpers)))
            foreign = sorted(n for n in missing if not COMPILER_HELPER.match(n))
            if foreign and name in idf_objs:
                # on the chip these come from the ESP-IDF backend (kvstore_idf.c: check_idf.py)
                out.write("note %s leaves to the ESP-IDF backend: %s\n" % (name, ", ".join(foreign)))
            elif foreign:
                out.write("FAIL %s uses symbols that are neither libc nor another core%s: %s\n"
                          % (name, " (a core that failed to compile may define some)" if failed else "",
                             ", ".join(foreign)))
                failed = True
    out.write("%-20s %8s %8s %8s %8s   (%s, picolibc, %s)\n"
              % ("file", ".text", ".rodata", ".data", ".bss", CC, " ".join(CFLAGS[1:3])))
    for name, sz, _, _ in rows:
        out.write("%-20s %8d %8d %8d %8d\n" % (name, sz["text"], sz["rodata"], sz["data"], sz["bss"]))
    totals = []  # (label, rows): each core, then what each build links
    for core in dict.fromkeys(r[3] for r in rows if r[3]):
        totals.append(("core " + core + (" (host only)" if core in HOST_ONLY else ""), [r for r in rows if r[3] == core]))
    totals.append(("host build", [r for r in rows if not r[0].endswith("[IDF]")]))
    totals.append(("ESP32 build", [r for r in rows if r[2]]))
    out.write("%-32s %8s %8s %8s %8s %8s\n" % ("total", ".text", ".rodata", ".data", ".bss", "flash"))
    for label, picked in totals:
        t = {k: sum(r[1][k] for r in picked) for k in ("text", "rodata", "data", "bss")}
        out.write("%-32s %8d %8d %8d %8d %8d   static RAM %d B\n"
                  % (label, t["text"], t["rodata"], t["data"], t["bss"],
                     t["text"] + t["rodata"] + t["data"], t["data"] + t["bss"]))
    return 1 if failed else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sources", nargs="*", help="C files (default: the cores in c_modules/iotutils)")
    args = ap.parse_args(argv)
    sources = args.sources or [os.path.join(CORE_DIR, f) for files in CORES.values() for f in files
                               if os.path.exists(os.path.join(CORE_DIR, f))]
    return check(sources)


if __name__ == "__main__":
    sys.exit(main())
