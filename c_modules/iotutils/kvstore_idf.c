// kvstore backend on the ESP32: ESP-IDF's own NVS (v5.5 nvs.h API) on the partition given by
// its label. Each write is committed before returning, so the store behaves as on the host:
// once set() returns, the value survives a power cut.
#ifdef IOTUTILS_KV_IDF

#include "kvstore.h"

#include <stdlib.h>
#include <string.h>

#include "nvs.h"
#include "nvs_flash.h"

struct kvstore {
    char label[NVS_PART_NAME_MAX_SIZE + 1];
};

static int map_err(esp_err_t err) {
    switch (err) {
        case ESP_OK:
            return KVS_OK;
        case ESP_ERR_NVS_NOT_FOUND:
            return KVS_ERR_NOT_FOUND;
        case ESP_ERR_NVS_NOT_ENOUGH_SPACE:
            return KVS_ERR_NO_SPACE;
        case ESP_ERR_NVS_VALUE_TOO_LONG:
            return KVS_ERR_TOO_LONG;
        case ESP_ERR_NVS_INVALID_NAME:
        case ESP_ERR_NVS_KEY_TOO_LONG:
            return KVS_ERR_BAD_NAME;
        case ESP_ERR_NVS_INVALID_LENGTH:
        case ESP_ERR_NVS_TYPE_MISMATCH:
            return KVS_ERR_BAD_VALUE;
        case ESP_ERR_NO_MEM:
            return KVS_ERR_NO_MEM;
        case ESP_ERR_NVS_NO_FREE_PAGES:
        case ESP_ERR_NVS_NEW_VERSION_FOUND:
            return KVS_ERR_CORRUPT;
        default:
            return KVS_ERR_IO;
    }
}

static int open_ns(kvstore_t *kv, const char *ns, nvs_open_mode_t mode, nvs_handle_t *h) {
    return map_err(nvs_open_from_partition(kv->label, ns, mode, h));
}

// For erasing: opening read-write would create a missing namespace; check first.
static int open_existing_rw(kvstore_t *kv, const char *ns, nvs_handle_t *h) {
    int rc = open_ns(kv, ns, NVS_READONLY, h);
    if (rc != KVS_OK) {
        return rc;
    }
    nvs_close(*h);
    return open_ns(kv, ns, NVS_READWRITE, h);
}

int kvstore_be_open(kvstore_t **out, const char *where, uint32_t offset, uint32_t size) {
    (void)offset;
    (void)size;
    if (strlen(where) > NVS_PART_NAME_MAX_SIZE) {
        return KVS_ERR_BAD_NAME;
    }
    // Already initialised by MicroPython's startup for "nvs": then this returns ESP_OK.
    int rc = map_err(nvs_flash_init_partition(where));
    if (rc != KVS_OK) {
        return rc;
    }
    kvstore_t *kv = calloc(1, sizeof(kvstore_t));
    if (kv == NULL) {
        return KVS_ERR_NO_MEM;
    }
    strcpy(kv->label, where);
    *out = kv;
    return KVS_OK;
}

void kvstore_be_close(kvstore_t *kv) {
    free(kv);
}

int kvstore_be_set(kvstore_t *kv, const char *ns, const char *key, uint8_t type, const void *data, size_t len) {
    nvs_handle_t h;
    int rc = open_ns(kv, ns, NVS_READWRITE, &h);
    if (rc != KVS_OK) {
        return rc;
    }
    const uint8_t *d = (const uint8_t *)data;
    uint64_t v = 0;
    if (type != KVS_T_STR && type != KVS_T_BLOB) {
        for (size_t i = 0; i < len && i < 8; i++) {
            v |= (uint64_t)d[i] << (8 * i);
        }
    }
    esp_err_t err;
    switch (type) {
        case KVS_T_U8:
            err = nvs_set_u8(h, key, (uint8_t)v);
            break;
        case KVS_T_I8:
            err = nvs_set_i8(h, key, (int8_t)(uint8_t)v);
            break;
        case KVS_T_U16:
            err = nvs_set_u16(h, key, (uint16_t)v);
            break;
        case KVS_T_I16:
            err = nvs_set_i16(h, key, (int16_t)(uint16_t)v);
            break;
        case KVS_T_U32:
            err = nvs_set_u32(h, key, (uint32_t)v);
            break;
        case KVS_T_I32:
            err = nvs_set_i32(h, key, (int32_t)(uint32_t)v);
            break;
        case KVS_T_U64:
            err = nvs_set_u64(h, key, v);
            break;
        case KVS_T_I64:
            err = nvs_set_i64(h, key, (int64_t)v);
            break;
        case KVS_T_STR:
            err = nvs_set_str(h, key, (const char *)data);
            break;
        case KVS_T_BLOB:
            err = nvs_set_blob(h, key, data, len);
            break;
        default:
            err = ESP_ERR_INVALID_ARG;
            break;
    }
    if (err == ESP_OK) {
        err = nvs_commit(h);
    }
    nvs_close(h);
    return err == ESP_ERR_INVALID_ARG ? KVS_ERR_BAD_VALUE : map_err(err);
}

int kvstore_be_get(kvstore_t *kv, const char *ns, const char *key, uint8_t *type, void *buf, size_t *len) {
    nvs_handle_t h;
    int rc = open_ns(kv, ns, NVS_READONLY, &h);
    if (rc != KVS_OK) {
        return rc;
    }
    nvs_type_t t;
    esp_err_t err = nvs_find_key(h, key, &t);
    if (err == ESP_OK) {
        *type = (uint8_t)t;
        if (t == NVS_TYPE_STR) {
            err = nvs_get_str(h, key, (char *)buf, len);
        } else if (t == NVS_TYPE_BLOB || (uint8_t)t == KVS_T_BLOB_V1) {
            // nvs_get_blob reads both blob formats; listings report them alike.
            *type = KVS_T_BLOB;
            err = nvs_get_blob(h, key, buf, len);
        } else {
            size_t n = (uint8_t)t & 0x0f;
            uint64_t raw = 0; // 8-byte aligned: Xtensa faults on unaligned 16/32-bit stores
            switch (t) {
                case NVS_TYPE_U8:
                    err = nvs_get_u8(h, key, (uint8_t *)&raw);
                    break;
                case NVS_TYPE_I8:
                    err = nvs_get_i8(h, key, (int8_t *)&raw);
                    break;
                case NVS_TYPE_U16:
                    err = nvs_get_u16(h, key, (uint16_t *)&raw);
                    break;
                case NVS_TYPE_I16:
                    err = nvs_get_i16(h, key, (int16_t *)&raw);
                    break;
                case NVS_TYPE_U32:
                    err = nvs_get_u32(h, key, (uint32_t *)&raw);
                    break;
                case NVS_TYPE_I32:
                    err = nvs_get_i32(h, key, (int32_t *)&raw);
                    break;
                case NVS_TYPE_U64:
                    err = nvs_get_u64(h, key, (uint64_t *)&raw);
                    break;
                case NVS_TYPE_I64:
                    err = nvs_get_i64(h, key, (int64_t *)&raw);
                    break;
                default:
                    err = ESP_ERR_NVS_TYPE_MISMATCH;
                    break;
            }
            // The ESP32 is little-endian: raw holds the value as NVS stores it.
            if (err == ESP_OK && buf != NULL) {
                if (*len < n) {
                    err = ESP_ERR_NVS_INVALID_LENGTH;
                } else {
                    memcpy(buf, &raw, n);
                }
            }
            *len = n;
        }
    }
    nvs_close(h);
    return map_err(err);
}

int kvstore_be_erase(kvstore_t *kv, const char *ns, const char *key) {
    nvs_handle_t h;
    int rc = open_existing_rw(kv, ns, &h);
    if (rc != KVS_OK) {
        return rc;
    }
    esp_err_t err = nvs_erase_key(h, key);
    if (err == ESP_OK) {
        err = nvs_commit(h);
    }
    nvs_close(h);
    return map_err(err);
}

int kvstore_be_erase_namespace(kvstore_t *kv, const char *ns) {
    nvs_handle_t h;
    int rc = open_existing_rw(kv, ns, &h);
    if (rc != KVS_OK) {
        return rc;
    }
    esp_err_t err = nvs_erase_all(h);
    if (err == ESP_OK) {
        err = nvs_commit(h);
    }
    nvs_close(h);
    return map_err(err);
}

int kvstore_be_list(kvstore_t *kv, const char *ns, kvstore_list_cb cb, void *arg) {
    nvs_iterator_t it = NULL;
    esp_err_t err = nvs_entry_find(kv->label, ns, NVS_TYPE_ANY, &it);
    while (err == ESP_OK) {
        nvs_entry_info_t info;
        err = nvs_entry_info(it, &info);
        if (err != ESP_OK || cb(arg, info.namespace_name, info.key, (uint8_t)info.type)) {
            break;
        }
        err = nvs_entry_next(&it);
    }
    nvs_release_iterator(it);
    return err == ESP_ERR_NVS_NOT_FOUND ? KVS_OK : map_err(err);
}

#endif // IOTUTILS_KV_IDF
