#!/usr/bin/env python3
"""Settings (JSON or CSV) -> an NVS partition image, and the esptool command that writes it.

    python3 scripts/nvs_provision.py settings.json [-o nvs.bin] [--port /dev/ttyUSB0]

Provisions a device without flashing firmware: the image is made by Espressif's
esp-idf-nvs-partition-gen and read back (iotutils.nvs) to check every value before the esptool
command is printed; the offset and size come from boards/ESP32_GENERIC/partitions.csv.

JSON settings:
    {
      "device_name": "lamp",                        -> device/name
      "wifi_networks": [{"ssid": "home", "password": "secret", "hidden": false}],   -> wifi/networks
      "admin_password": "plain text",               -> admin/pwhash (PBKDF2-SHA256, as the admin page)
      "admin_password_hash": "pbkdf2_sha256$...",   -> admin/pwhash as given
      "ota_pubkey": "-----BEGIN PUBLIC KEY-----...",  -> ota/pubkey: the key OTA releases must be
                                                    signed with (a .pub from scripts/keygen.py;
                                                    or --ota-pubkey FILE). A key frozen into the
                                                    firmware wins over this one.
      "mqtt": {"url": "mqtt://broker:1883", "user": "...", "password": "...", "ca": "<PEM>",
               "prefix": "homeassistant", "mode": "device" | "component", "base": "iotutils/..."}
                                                    -> folder mqtt: the broker and Home Assistant
                                                    discovery (any subset; checked as the admin
                                                    page checks them; they win over the code's URL)
      "<folder>": {"<name>": <value> | {"type": "<type>", "value": <value>, "lo":..., "hi":...}}
    }
CSV settings: a header "folder,name,type,value", one value per row (type may be empty: str).
Types: the Persistent* types bool, int, float, str, json, list, set, range (with lo/hi), rgb, hex,
bytes (base64) -- stored exactly as iotutils.persist stores them (persist.encode) -- or raw NVS
types u8 i8 u16 i16 u32 i32 u64 i64 string blob (base64). Names and folders: 1..15 characters.
"""
import argparse
import base64
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "modules"))

from iotutils import mqtt_settings, nvs, nvs_format, persist, sign  # noqa: E402
from iotutils.hal import layout  # noqa: E402
from iotutils.hal.flash import RamFlash  # noqa: E402
from iotutils.wifi import check_password, check_ssid  # noqa: E402

PARTITIONS_CSV = os.path.join(ROOT, "boards", "ESP32_GENERIC", "partitions.csv")
PBKDF2_ITERATIONS = 4000  # iotutils.auth.PBKDF2_ITERATIONS (the device verifies any count it allows)
MIN_ADMIN_PASSWORD = 8    # iotutils.admin.Admin.min_password

# NVS type code -> esp-idf-nvs-partition-gen CSV encoding
_GEN_TYPES = {nvs.U8: "u8", nvs.I8: "i8", nvs.U16: "u16", nvs.I16: "i16", nvs.U32: "u32", nvs.I32: "i32",
              nvs.U64: "u64", nvs.I64: "i64", nvs.STR: "string", nvs.BLOB_DATA: "base64"}
_RAW = {"u8": nvs.U8, "i8": nvs.I8, "u16": nvs.U16, "i16": nvs.I16, "u32": nvs.U32, "i32": nvs.I32,
        "u64": nvs.U64, "i64": nvs.I64, "string": nvs.STR, "blob": nvs.BLOB_DATA}


class ProvisionError(ValueError):
    pass


def nvs_partition(path=PARTITIONS_CSV):
    """(offset, size) of the nvs partition."""
    with open(path) as f:
        for _name, typ, sub, off, size in layout.parse_csv(f.read()):
            if typ == "data" and sub == "nvs":
                return off, size
    raise ProvisionError("no nvs partition in %s" % path)


def hash_password(pw, salt=None, iterations=PBKDF2_ITERATIONS):
    """The admin page's format: pbkdf2_sha256$<iterations>$<salt hex>$<hash hex>."""
    salt = os.urandom(16) if salt is None else salt
    dk = hashlib.pbkdf2_hmac("sha256", pw.encode(), salt, iterations)
    return "pbkdf2_sha256$%d$%s$%s" % (iterations, salt.hex(), dk.hex())


def _name(s, what, where):
    if not isinstance(s, str) or not 1 <= len(s.encode()) <= 15 or any(ord(c) < 0x20 for c in s):
        raise ProvisionError("%s: %s must be 1..15 printable characters: %r" % (where, what, s))


def encode_entry(folder, name, typ, value, spec=None):
    """(NVS type code, int/str/bytes) for one setting; ProvisionError naming it if invalid."""
    where = "%s/%s" % (folder, name)
    _name(folder, "folder", where)
    _name(name, "name", where)
    spec = spec or {}
    try:
        if typ in _RAW:
            code = _RAW[typ]
            if code == nvs.STR:
                if not isinstance(value, str):
                    raise ValueError("not a string")
                return code, value
            if code == nvs.BLOB_DATA:
                return code, base64.b64decode(value, validate=True) if isinstance(value, str) else bytes(value)
            v = int(value, 0) if isinstance(value, str) else value
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError("not an integer")
            fmt, lo, hi = nvs_format.INTS[code]
            if not lo <= v <= hi:
                raise ValueError("%d out of range for %s" % (v, typ))
            return code, v
        if typ == "bytes":
            return nvs.BLOB_DATA, base64.b64decode(value, validate=True)
        return persist.encode(typ, value, name, folder, **spec)
    except (ValueError, TypeError) as e:
        raise ProvisionError("%s: %s" % (where, e))


def settings_from_json(data):
    """[(folder, name, type, value, spec)] from the JSON settings object."""
    if not isinstance(data, dict):
        raise ProvisionError("settings: expected a JSON object")
    out = []
    for key, val in data.items():
        if key == "device_name":
            out.append(("device", "name", "str", val, {}))
        elif key == "wifi_networks":
            if not isinstance(val, list):
                raise ProvisionError("wifi_networks: expected a list")
            nets = []
            for n in val:
                if not isinstance(n, dict):
                    raise ProvisionError("wifi_networks: each must be an object with ssid/password: %r" % (n,))
                try:  # the device's own rules (iotutils.wifi), so nothing it would refuse gets provisioned
                    check_ssid(n.get("ssid"))
                    pw = check_password(n.get("password"))
                    if n.get("hidden") is not None and type(n["hidden"]) is not bool:   # ("no" was true)
                        raise ValueError("hidden: true or false expected")
                except ValueError as e:
                    raise ProvisionError("wifi_networks %s: %s" % (n.get("ssid"), e))
                nets.append({"ssid": n["ssid"], "pw": pw, "hidden": n.get("hidden") or False})
            out.append(("wifi", "networks", "json", nets, {}))
        elif key == "admin_password":
            if not isinstance(val, str) or len(val) < MIN_ADMIN_PASSWORD:
                raise ProvisionError("admin_password: at least %d characters (as the admin page asks)"
                                     % MIN_ADMIN_PASSWORD)
            out.append(("admin", "pwhash", "str", hash_password(val), {}))
        elif key == "admin_password_hash":
            if not isinstance(val, str) or not val.startswith("pbkdf2_sha256$") or val.count("$") != 3:
                raise ProvisionError("admin_password_hash: expected pbkdf2_sha256$<n>$<salt>$<hash>")
            out.append(("admin", "pwhash", "str", val, {}))
        elif key == "ota_pubkey":
            out.append(("ota", "pubkey", "str", ota_pubkey_pem(val), {}))
        elif key == "mqtt":
            try:  # the device's own rules (iotutils.mqtt_settings), so nothing it would refuse
                checked = mqtt_settings.check(val)
            except ValueError as e:
                raise ProvisionError(str(e) if str(e).startswith("mqtt") else "mqtt %s" % e)
            for name, v in checked.items():
                if v:
                    out.append((mqtt_settings.FOLDER, name, "str", v, {}))
        elif isinstance(val, dict):
            for name, e in val.items():
                if isinstance(e, dict) and "type" in e and "value" in e:
                    spec = {k: e[k] for k in ("lo", "hi", "max_length") if k in e}
                    out.append(_known_slot(key, name, e["type"], e["value"], spec))
                else:
                    out.append(_known_slot(key, name, persist.infer_kind(e), e, {}))
        else:
            raise ProvisionError("%s: expected an object of values (a folder) or a known setting" % key)
    return out


# the values the device reads at fixed places, written through the generic folder/name form: the
# same checks as their named settings (a plain text as admin/pwhash locked the admin page for good,
# a network list with "password" instead of "pw" joined with no password, a garbage key was kept)
_KNOWN = {("admin", "pwhash"): "admin_password_hash", ("wifi", "networks"): "wifi_networks",
          ("ota", "pubkey"): "ota_pubkey", ("device", "name"): "device_name"}


def _known_slot(folder, name, typ, value, spec):
    setting = _KNOWN.get((folder, name))
    if setting is None:
        return (folder, name, typ, value, spec)
    if setting == "device_name" and (not isinstance(value, str) or not 1 <= len(value) <= 32):
        raise ProvisionError("device/name: 1..32 characters (as the device keeps it)")
    if setting == "wifi_networks" and isinstance(value, list):
        # the list as the device stores it ({"ssid", "pw", "hidden"}), from either spelling
        value = [dict(n, password=n.get("password", n.get("pw"))) if isinstance(n, dict) else n for n in value]
    return settings_from_json({setting: value})[0]


# SubjectPublicKeyInfo of an uncompressed P-256 point, up to the point (RFC 5480)
_P256_SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200")


def ota_pubkey_pem(val):
    """The OTA public key as the PEM text the device stores (ota/pubkey), from a .pub file's text.
    Checked as the device checks it (iotutils.sign.load_pubkey) and written in one normal form."""
    if not isinstance(val, str):
        raise ProvisionError("ota_pubkey: expected the PEM text of a .pub file (scripts/keygen.py)")
    try:
        point = sign.load_pubkey(val)
    except ValueError as e:
        raise ProvisionError("ota_pubkey: %s" % e)
    b64 = base64.b64encode(_P256_SPKI_PREFIX + point).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return "-----BEGIN PUBLIC KEY-----\n%s\n-----END PUBLIC KEY-----\n" % "\n".join(lines)


def _no_duplicates(pairs):
    # (json.loads keeps the last of two equal keys without a word: a setting silently lost)
    out = {}
    for k, v in pairs:
        if k in out:
            raise ProvisionError("%r is given twice in one object" % k)
        out[k] = v
    return out


def settings_from_csv(text):
    text = text[1:] if text[:1] == "\ufeff" else text   # (a spreadsheet's byte order mark)
    first = next(csv.reader(io.StringIO(text)), [])
    if {"folder", "name", "value"} - {c.strip() for c in first}:
        # (else the first value was taken for the header: a file of one value made an empty image,
        # which erases the device's settings when flashed)
        raise ProvisionError("CSV: the first line must be the header folder,name,type,value, got %r"
                             % ",".join(first)[:60])
    rows = list(csv.DictReader(io.StringIO(text)))
    out = []
    for n, row in enumerate(rows, 2):
        if {"folder", "name", "value"} - set(row or ()):
            raise ProvisionError("CSV line %d: needs columns folder,name,type,value" % n)
        typ = (row.get("type") or "str").strip()
        value = row["value"]
        if typ in ("json", "list", "set", "rgb") and value.strip()[:1] in ("[", "{"):
            value = json.loads(value)
        out.append(_known_slot(row["folder"].strip(), row["name"].strip(), typ, value, {}))
    return out


def _gen_value(code, raw):
    if code == nvs.BLOB_DATA:
        return base64.b64encode(raw).decode()
    if code == nvs.STR:
        if "\r" in raw or "\n#" in raw or "\x00" in raw:
            raise ProvisionError("strings with CR, NUL or a line starting with # cannot go through the CSV")
        return raw
    return str(raw)


def build(entries, size, workdir, version=2):
    """Run esp-idf-nvs-partition-gen on entries -> image bytes (checked by reading it back)."""
    encoded = {}
    bad = []
    for folder, name, typ, value, spec in entries:
        try:
            if (folder, name) in encoded:   # (a named setting and its folder/name, two CSV rows: one was lost)
                raise ProvisionError("%s/%s: given twice" % (folder, name))
            encoded[(folder, name)] = encode_entry(folder, name, typ, value, spec)
        except ProvisionError as e:
            bad.append(str(e))
    if bad:
        raise ProvisionError("bad settings: " + "; ".join(bad))
    by_folder = {}
    for (folder, name), v in encoded.items():
        by_folder.setdefault(folder, []).append((name, v))
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["key", "type", "encoding", "value"])
    for folder, items in by_folder.items():
        w.writerow([folder, "namespace", "", ""])
        for name, (code, raw) in items:
            w.writerow([name, "data", _GEN_TYPES[code], _gen_value(code, raw)])
    csv_path = os.path.join(workdir, "nvs.csv")
    bin_path = os.path.join(workdir, "nvs.bin")
    with open(csv_path, "w", encoding="utf8") as f:
        f.write(out.getvalue())
    proc = subprocess.run([sys.executable, "-m", "esp_idf_nvs_partition_gen", "generate", csv_path, bin_path,
                           hex(size), "--version", str(version)], capture_output=True, text=True, timeout=120)
    if "InsufficientSizeError" in proc.stdout + proc.stderr:
        raise ProvisionError("the settings do not fit in the nvs partition (%d bytes; every value costs 32 "
                             "bytes, a text or blob 32 more per 32 bytes, and one page of %d is kept free)"
                             % (size, nvs_format.PAGE))
    if proc.returncode != 0 or not os.path.exists(bin_path):
        raise ProvisionError("esp-idf-nvs-partition-gen failed:\n%s%s" % (proc.stdout, proc.stderr))
    with open(bin_path, "rb") as f:
        image = f.read()
    # read every value back the way the device will
    flash = RamFlash(size)
    flash.buf[:] = image
    store = nvs.NVS(flash)
    for (folder, name), (code, raw) in encoded.items():
        got = store.get_typed(folder, name)
        if got != (code, raw):
            raise ProvisionError("%s/%s reads back as %r, not %r" % (folder, name, got, (code, raw)))
    return image, encoded


def esptool_command(path, offset, port=None, chip="esp32"):
    cmd = ["esptool", "--chip", chip]
    if port:
        cmd += ["--port", port]
    return " ".join(cmd + ["write-flash", hex(offset), path])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("settings", help="JSON or CSV settings file")
    ap.add_argument("-o", "--output", default="nvs.bin", help="image to write (default nvs.bin)")
    ap.add_argument("--partitions", default=PARTITIONS_CSV, help="partition table CSV")
    ap.add_argument("--port", default=None, help="serial port for the printed esptool command")
    ap.add_argument("--chip", default="esp32")
    ap.add_argument("--keep-csv", default=None, help="also save the generator's CSV here")
    ap.add_argument("--ota-pubkey", metavar="FILE", default=None,
                    help='the OTA public key (.pub) to store as ota/pubkey (replaces settings "ota_pubkey")')
    args = ap.parse_args(argv)
    try:
        offset, size = nvs_partition(args.partitions)
        with open(args.settings, encoding="utf8") as f:
            text = f.read()
        if args.settings.lower().endswith(".csv"):
            entries = settings_from_csv(text)
        else:
            try:
                entries = settings_from_json(json.loads(text, object_pairs_hook=_no_duplicates))
            except json.JSONDecodeError as e:
                raise ProvisionError("%s: not JSON: %s" % (args.settings, e))
        if args.ota_pubkey:
            with open(args.ota_pubkey, encoding="utf8") as f:
                pem = ota_pubkey_pem(f.read())
            entries = [e for e in entries if (e[0], e[1]) != ("ota", "pubkey")]
            entries.append(("ota", "pubkey", "str", pem, {}))
        with tempfile.TemporaryDirectory() as work:
            image, encoded = build(entries, size, work)
            if args.keep_csv:
                with open(os.path.join(work, "nvs.csv")) as src, open(args.keep_csv, "w") as dst:
                    dst.write(src.read())
        with open(args.output, "wb") as f:
            f.write(image)
    except (ProvisionError, OSError) as e:
        print("nvs_provision: %s" % e, file=sys.stderr)
        return 2
    print("wrote %s: %d values in %d folders, nvs partition at 0x%x (%d bytes)"
          % (args.output, len(encoded), len({k[0] for k in encoded}), offset, size))
    print(esptool_command(args.output, offset, args.port, args.chip))
    print("(simulated device: python3 scripts/sim.py --state DIR --write-nvs %s [APP])" % args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
