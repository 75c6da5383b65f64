#!/usr/bin/env python3
"""Dump an NVS partition image as typed JSON, edit it, write it back.

    python3 scripts/nvs_dump.py IMAGE                         # typed JSON on stdout
    python3 scripts/nvs_dump.py IMAGE --set edits.json [-o new.bin] [--port /dev/ttyUSB0]

IMAGE is the nvs partition alone (e.g. `esptool read-flash 0x9000 0x6000 nvs.bin`) or a whole
flash dump (`esptool read-flash 0 ALL flash.bin`, or the simulator's state/flash.bin): then the nvs
partition is taken at its offset in boards/ESP32_GENERIC/partitions.csv (or --offset/--size).

JSON: {"<namespace>": {"<key>": {"type": "u8|i8|u16|i16|u32|i32|u64|i64|string|blob", "value": v}}}
(blob values in base64). Edits use the same shape; a plain value takes the default type (int ->
i64, str -> string); null erases the key; a namespace set to null is erased. Edits go through
iotutils.nvs (ESP-IDF's format and power-cut-safe write order), in place unless -o is given, and
the esptool command that writes the result back is printed (to stderr when the dump is on stdout).
"""
import argparse
import base64
import json
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "modules"))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from iotutils import nvs, nvs_format  # noqa: E402
from iotutils.hal.flash import FileFlash, RamFlash  # noqa: E402
from nvs_provision import PARTITIONS_CSV, esptool_command, nvs_partition  # noqa: E402

TYPE_NAMES = {nvs.U8: "u8", nvs.I8: "i8", nvs.U16: "u16", nvs.I16: "i16", nvs.U32: "u32", nvs.I32: "i32",
              nvs.U64: "u64", nvs.I64: "i64", nvs.STR: "string", nvs.BLOB_DATA: "blob"}
TYPE_CODES = {v: k for k, v in TYPE_NAMES.items()}


class DumpError(ValueError):
    pass


def locate(path, offset=None, size=None, partitions=PARTITIONS_CSV):
    """(offset in the file, size) of the nvs partition inside the image file."""
    total = os.path.getsize(path)
    p_off, p_size = nvs_partition(partitions)
    if size is None:
        size = p_size if total > p_size or total == p_size else total
    if offset is None:
        offset = 0 if total <= size else p_off
    if size % 4096 or size < 8192 or offset + size > total:
        raise DumpError("%s: no %d-byte nvs partition at 0x%x (file is %d bytes)" % (path, size, offset, total))
    return offset, size


def check_image(data, what):
    """DumpError unless data (a partition's bytes) is an NVS partition: blank, or with at least one
    page whose header ESP-IDF accepts. Garbage loads as an empty store whose "corrupt" pages an edit
    erases: a wrong file or offset lost its bytes, and a dump printed {} as if it were empty."""
    valid = bad = 0
    for base in range(0, len(data) - nvs_format.PAGE + 1, nvs_format.PAGE):
        state = nvs_format.header_state(data[base:base + 32])   # (as the device's reader reads it)
        if state == nvs_format.S_EMPTY and data[base:base + nvs_format.PAGE].count(0xFF) == nvs_format.PAGE:
            continue
        if state in (nvs_format.S_EMPTY, nvs_format.S_CORRUPT):
            bad += 1
        else:
            valid += 1
    if bad and not valid:
        raise DumpError("%s: not an NVS partition (no page has a valid NVS header)" % what)


def dump(store):
    out = {}
    for ns in store.namespaces():
        d = {}
        for key, _t in store.keys(ns):
            r = store.get_typed(ns, key)
            if r is None:
                continue  # unreadable (bad data CRC): ESP-IDF would not return it either
            code, v = r
            if isinstance(v, bytes):
                v = base64.b64encode(v).decode()
            d[key] = {"type": TYPE_NAMES.get(code, "0x%02x" % code), "value": v}
        out[ns] = d
    return out


def _edit_value(ns, key, e):
    where = "%s/%s" % (ns, key)
    if isinstance(e, dict):
        if "type" not in e or "value" not in e:
            raise DumpError("%s: needs type and value" % where)
        t, v = e["type"], e["value"]
    else:
        t, v = None, e
    if t is None:
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise DumpError("%s: give a type for %r" % (where, v))
        return v, None
    if t not in TYPE_CODES:
        raise DumpError("%s: unknown type %r" % (where, t))
    code = TYPE_CODES[t]
    if code == nvs.BLOB_DATA:
        try:
            return base64.b64decode(v, validate=True), None
        except (ValueError, TypeError):
            raise DumpError("%s: blob value must be base64" % where)
    if code == nvs.STR:
        if not isinstance(v, str):
            raise DumpError("%s: string value expected" % where)
        return v, None
    if isinstance(v, str):
        try:
            v = int(v, 0)
        except ValueError:
            raise DumpError("%s: %r is not an integer" % (where, v))
    if isinstance(v, bool) or not isinstance(v, int):
        raise DumpError("%s: integer value expected" % where)
    return v, code


def apply_edits(store, edits):
    """Validate every edit, then apply them. DumpError naming the bad ones, nothing changed."""
    if not isinstance(edits, dict):
        raise DumpError("edits: expected an object of namespaces")
    plan = []
    bad = []
    for ns, entries in edits.items():
        if entries is None:
            plan.append(("erase_ns", ns, None, None, None))
            continue
        if not isinstance(entries, dict):
            bad.append("%s: expected an object of keys or null" % ns)
            continue
        for key, e in entries.items():
            try:
                nvs_format.key_field(ns, "namespace")
                nvs_format.key_field(key)
                if e is None:
                    plan.append(("erase", ns, key, None, None))
                    continue
                v, code = _edit_value(ns, key, e)
                if code is not None:
                    fmt, lo, hi = nvs_format.INTS[code]
                    if not lo <= v <= hi:
                        raise DumpError("%s/%s: %d out of range for %s" % (ns, key, v, TYPE_NAMES[code]))
                plan.append(("set", ns, key, v, code))
            except ValueError as ex:
                bad.append(str(ex))
    if bad:
        raise DumpError("bad edits: " + "; ".join(bad))
    for op, ns, key, v, code in plan:
        if op == "erase_ns":
            store.erase_namespace(ns)
        elif op == "erase":
            store.erase(ns, key)
        else:
            try:
                store.set(ns, key, v, code)
            except ValueError as ex:
                raise DumpError("%s/%s: %s" % (ns, key, ex))
    return len(plan)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("image")
    ap.add_argument("--offset", type=lambda s: int(s, 0), default=None, help="nvs offset inside the file")
    ap.add_argument("--size", type=lambda s: int(s, 0), default=None, help="nvs partition size")
    ap.add_argument("--partitions", default=PARTITIONS_CSV)
    ap.add_argument("--set", dest="edits", default=None, help="JSON file of edits (same shape as the dump)")
    ap.add_argument("-o", "--output", default=None, help="write the edited image here (default: in place)")
    ap.add_argument("--port", default=None)
    ap.add_argument("--chip", default="esp32")
    args = ap.parse_args(argv)
    try:
        off, size = locate(args.image, args.offset, args.size, args.partitions)
        target = args.image
        if args.edits:
            with open(args.edits, encoding="utf8") as f:
                try:
                    edits = json.load(f)
                except json.JSONDecodeError as e:
                    raise DumpError("%s: not JSON: %s" % (args.edits, e))
            if args.output:
                shutil.copyfile(args.image, args.output)
                target = args.output
        with open(args.image, "rb") as f:
            f.seek(off)
            check_image(f.read(size), "%s at 0x%x" % (args.image, off))
        flash = FileFlash(target, off, size, "nvs")
        if not args.edits:
            # a dump must not touch the file (loading repairs what a power cut left): work on a copy
            ram = RamFlash(size)
            ram.buf[:] = flash.read(0, size)
            flash.close()
            flash = ram
        try:
            store = nvs.NVS(flash)
            if args.edits:
                n = apply_edits(store, edits)
                store = nvs.NVS(flash)
            data = dump(store)
        finally:
            if hasattr(flash, "close"):
                flash.close()
    except (DumpError, nvs.NVSError, OSError) as e:
        print("nvs_dump: %s" % e, file=sys.stderr)
        return 2
    print(json.dumps(data, indent=2, ensure_ascii=False))
    if args.edits:
        p_off, p_size = nvs_partition(args.partitions)
        print("applied %d edits to %s" % (n, target), file=sys.stderr)
        if off == 0:
            print(esptool_command(target, p_off, args.port, args.chip), file=sys.stderr)
        else:
            print("(a whole-flash image: write its nvs part with) esptool --chip %s%s write-flash 0x%x <%d bytes "
                  "of %s at 0x%x>" % (args.chip, " --port " + args.port if args.port else "", p_off, size, target,
                                     off), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
