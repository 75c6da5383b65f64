#!/usr/bin/env python3
"""Run Espressif's NVS checker (nvs_tool.py --integrity-check, ESP-IDF's nvs_flash component)
on NVS partition images and report its findings as JSON. Local only: needs an ESP-IDF tree.

    IDF_PATH=~/esp/esp-idf python3 tests/c/nvs_ref/nvs_check_ref.py part.bin [...]

nvs_tool.py always exits 0 and only prints, so this runs its integrity check in-process with
a logger that records what it marks as an error (red) or a warning (yellow), for ESP-IDF v5.x
(colours through NVS_Logger.red/yellow) and for newer trees (NVS_Logger.err/warn).
Prints {"<image>": {"errors": [...], "warnings": [...]}, ...}; exit status 2 if IDF_PATH is
unusable, 1 if any image has errors, else 0.
"""
import io
import json
import os
import sys
import types


def tool_dir():
    idf = os.environ.get("IDF_PATH")
    if not idf:
        return None
    d = os.path.join(idf, "components", "nvs_flash", "nvs_partition_tool")
    return d if os.path.exists(os.path.join(d, "nvs_check.py")) else None


def _load_modules(d):
    if d not in sys.path:
        sys.path.insert(0, d)
    if "esp_pylib.logger" not in sys.modules:
        # Newer trees log through esp_pylib; a stand-in keeps this script dependency-free.
        pkg = types.ModuleType("esp_pylib")
        mod = types.ModuleType("esp_pylib.logger")

        class _Log:
            def print(self, *a, **k):
                pass

            def err(self, *a, **k):
                pass

            def warn(self, *a, **k):
                pass

        mod.log = _Log()
        pkg.logger = mod
        sys.modules["esp_pylib"] = pkg
        sys.modules["esp_pylib.logger"] = mod
    import nvs_check
    import nvs_logger
    import nvs_parser
    return nvs_check, nvs_logger, nvs_parser


class _Recorder:
    """Stands in for NVS_Logger: colours become markers, lines are sorted by marker."""

    def __init__(self):
        self.errors = []
        self.warnings = []

    def red(self, text):
        return "\x00E" + str(text)

    def yellow(self, text):
        return "\x00W" + str(text)

    def green(self, text):
        return str(text)

    cyan = blue = bold = green

    def info(self, *args, **kwargs):
        line = " ".join(str(a) for a in args)
        if "\x00E" in line:
            self.errors.append(line.replace("\x00E", "").replace("\x00W", "").strip())
        elif "\x00W" in line:
            self.warnings.append(line.replace("\x00W", "").strip())

    def error(self, *args, **kwargs):
        self.errors.append(" ".join(str(a) for a in args).strip())

    def err(self, message):
        self.errors.append(str(message).strip())

    def warn(self, message):
        self.warnings.append(str(message).strip())


def check(path, modules):
    nvs_check, _logger, nvs_parser = modules
    with open(path, "rb") as f:
        data = bytearray(f.read())
    rec = _Recorder()
    saved = sys.stdout
    sys.stdout = io.StringIO()     # the parser may print on its own
    try:
        part = nvs_parser.NVS_Partition(os.path.basename(path), data)
        nvs_check.integrity_check(part, rec)
    finally:
        sys.stdout = saved
        if hasattr(nvs_check, "reset_global_variables"):
            nvs_check.reset_global_variables()
    return {"errors": rec.errors, "warnings": rec.warnings}


def main(argv):
    d = tool_dir()
    if d is None:
        print(json.dumps({"skip": "IDF_PATH unset or without components/nvs_flash/nvs_partition_tool"}))
        return 2
    modules = _load_modules(d)
    out = {p: check(p, modules) for p in argv}
    print(json.dumps(out))
    return 1 if any(r["errors"] for r in out.values()) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
