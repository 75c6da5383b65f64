# Unix (host firmware) build: USER_C_MODULES=c_modules. The key/value store runs on the host
# NVS engine, which keeps ESP-IDF's on-flash format inside the simulated flash image.
IOTUTILS_MOD_DIR := $(USERMOD_DIR)

# The _iotutils module: its table, then one binding per core.
SRC_USERMOD_C += $(IOTUTILS_MOD_DIR)/mod_iotutils.c
SRC_USERMOD_C += $(IOTUTILS_MOD_DIR)/mod_httpparse.c
SRC_USERMOD_C += $(IOTUTILS_MOD_DIR)/mod_kvstore.c
SRC_USERMOD_C += $(IOTUTILS_MOD_DIR)/mod_heap.c
SRC_USERMOD_C += $(IOTUTILS_MOD_DIR)/mod_jsoncheck.c
# The portable cores (libc only).
SRC_USERMOD_C += $(IOTUTILS_MOD_DIR)/httpparse.c
SRC_USERMOD_C += $(IOTUTILS_MOD_DIR)/kvstore.c
SRC_USERMOD_C += $(IOTUTILS_MOD_DIR)/jsoncheck.c
# The host NVS engine (kvstore's backend here; the ESP32 uses ESP-IDF's own NVS).
SRC_USERMOD_C += $(IOTUTILS_MOD_DIR)/nvs_item.c
SRC_USERMOD_C += $(IOTUTILS_MOD_DIR)/nvs_page.c
SRC_USERMOD_C += $(IOTUTILS_MOD_DIR)/nvs_pagemanager.c
SRC_USERMOD_C += $(IOTUTILS_MOD_DIR)/nvs_storage.c
SRC_USERMOD_C += $(IOTUTILS_MOD_DIR)/nvs_host.c

CFLAGS_USERMOD += -I$(IOTUTILS_MOD_DIR) -DIOTUTILS_KV_HOST=1

# OTA signature verification (_iotsig: sigverify.c + mod_sigverify.c) over the mbedTLS the port
# builds for TLS; without it (no SSL, or axTLS) sign.py verifies in pure Python.
ifeq ($(MICROPY_PY_SSL)$(MICROPY_SSL_MBEDTLS),11)
SRC_USERMOD_C += $(IOTUTILS_MOD_DIR)/sigverify.c $(IOTUTILS_MOD_DIR)/mod_sigverify.c
endif
