# What the iotutils firmware freezes: the port's own manifest, then the toolbox.
# Both builds pass this file as FROZEN_MANIFEST (see the Makefile), so each keeps its port's
# usual frozen set: esp32 its board manifest (asyncio, neopixel, mip, ...), the unix port its
# standard variant's (asyncio, mip, ssl).
try:
    include("$(PORT_DIR)/boards/manifest.py")  # esp32
except Exception as e:
    # Only "this is not the esp32 port" falls through; an error inside that manifest is real.
    if not str(e).endswith("/boards/manifest.py'"):
        raise
    include("$(PORT_DIR)/variants/standard/manifest.py")  # unix

# base_path is relative to this file's folder. opt=3 drops line numbers and asserts:
# the toolbox raises ValueError for bad input, never relies on assert, and the app slot is tight.
package("iotutils", base_path="../modules", opt=3)

# The OTA public key, when the firmware is built with one (make BOARD=... OTA_PUBKEY=keys/ota.pub):
# scripts/keygen.py --freeze writes it as build/ota_key/iotutils/_ota_key.py; it stays for later
# builds until another key replaces it or OTA_PUBKEY=none makes it keyless (PUBKEY = None).
# iotutils.sign.default_pubkey() prefers it to a provisioned key. (makemanifest runs this file in
# its own folder: the path is relative to it.)
import os  # noqa: E402

if os.path.exists("../build/ota_key/iotutils/_ota_key.py"):
    module("iotutils/_ota_key.py", base_path="../build/ota_key", opt=3)
