# Unix (host firmware) build: USER_C_MODULES=c_modules. The key/value store runs on the host
# NVS engine, which keeps ESP-IDF's on-flash format inside the simulated flash image.
IOTUTILS_MOD_DIR := $(USERMOD_DIR)

# The _iotutils module: its table, then one binding per core.
SRC_USERMOD_C += $(IOTUTILS_MOD_DIR)/mod_iotutils.c
SRC_USERMOD_C += $(IOTUTILS_MOD_DIR)/mod_httpparse.c
SRC_USERMOD_C += $(IOTUTILS_MOD_DIR)/mod_kvstore.c
# The portable cores (libc only).
SRC_USERMOD_C += $(IOTUTILS_MOD_DIR)/httpparse.c
SRC_USERMOD_C += $(IOTUTILS_MOD_DIR)/kvstore.c
# The host NVS engine (kvstore's backend here; the ESP32 uses ESP-IDF's own NVS).
SRC_USERMOD_C += $(IOTUTILS_MOD_DIR)/nvs_item.c
SRC_USERMOD_C += $(IOTUTILS_MOD_DIR)/nvs_page.c
SRC_USERMOD_C += $(IOTUTILS_MOD_DIR)/nvs_pagemanager.c
SRC_USERMOD_C += $(IOTUTILS_MOD_DIR)/nvs_storage.c
SRC_USERMOD_C += $(IOTUTILS_MOD_DIR)/nvs_host.c

CFLAGS_USERMOD += -I$(IOTUTILS_MOD_DIR) -DIOTUTILS_KV_HOST=1
