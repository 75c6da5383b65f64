# iotutils host firmware variant (make BOARD=UNIX): same C module and frozen manifest as the ESP32.
FROZEN_MANIFEST ?= $(VARIANT_DIR)/../../frozen/manifest.py

# Threads with a GIL, as on the ESP32 port (the unix default is no GIL).
MICROPY_PY_THREAD = 1
MICROPY_PY_THREAD_GIL = 1

# Nothing the ESP32 lacks: no libffi, no Berkeley DB; TLS through mbedTLS as on the chip.
MICROPY_PY_FFI = 0
MICROPY_PY_BTREE = 0
MICROPY_SSL_AXTLS = 0
MICROPY_SSL_MBEDTLS = 1
