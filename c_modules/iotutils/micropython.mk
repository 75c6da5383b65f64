# Unix (host firmware) build: USER_C_MODULES=c_modules. The key/value store runs on the host
# NVS engine, which keeps ESP-IDF's on-flash format inside the simulated flash image.
IOTUTILS_MOD_DIR := $(USERMOD_DIR)

SRC_USERMOD_C += $(IOTUTILS_MOD_DIR)/modiotutils.c
# The cores land one by one: list those present (micropython.cmake does the same).
SRC_USERMOD_C += $(wildcard $(IOTUTILS_MOD_DIR)/httpparse.c)
SRC_USERMOD_C += $(wildcard $(IOTUTILS_MOD_DIR)/kvstore.c)
SRC_USERMOD_C += $(wildcard $(IOTUTILS_MOD_DIR)/nvs_host.c)

CFLAGS_USERMOD += -I$(IOTUTILS_MOD_DIR) -DIOTUTILS_KV_HOST=1
