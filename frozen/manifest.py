# What the iotutils firmware freezes: the port's own manifest, then the toolbox.
# Used by both builds (Makefile passes FROZEN_MANIFEST): esp32 keeps its board manifest
# (asyncio, neopixel, ...), the unix port its variant manifest.
try:
    include("$(PORT_DIR)/boards/manifest.py")
except Exception:
    include("$(PORT_DIR)/variants/manifest.py")

# base_path is relative to this file's folder
package("iotutils", base_path="../modules", opt=3)
