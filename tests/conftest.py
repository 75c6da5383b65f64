"""Shared pytest set-up: paths, the MicroPython runtime to use, and simulated devices."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "modules"))
sys.path.insert(0, os.path.join(ROOT, "tests", "unit"))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "scripts"))


def micropython_cmd(heap="110wK"):
    """The runtime under test: FIRMWARE=<host firmware binary> if set, else the venv's micropython."""
    exe = os.environ.get("FIRMWARE") or os.path.join(ROOT, ".venv", "bin", "micropython")
    if not os.path.exists(exe):
        exe = "micropython"
    return [exe, "-X", "heapsize=" + heap]
