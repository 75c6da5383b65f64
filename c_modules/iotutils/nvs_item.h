// nvs_item: the 32-byte entry ("item") of ESP-IDF's NVS format: layout, CRCs, consistency and
// the hash ESP-IDF's HashList keys items by (nvs_types.cpp, nvs_item_hash_list.cpp).
//
// Private to the host NVS engine (nvs_*.c). Everything here is about one entry's bytes, nothing
// about pages or the partition, so the page and storage code share one definition of the format.
#ifndef IOTUTILS_NVS_ITEM_H
#define IOTUTILS_NVS_ITEM_H

#include <string.h>

#include "nvs_host.h"

#define ENTRY_SIZE  (32u)
#define ENTRY_COUNT (126u) // entries per page
#define CHUNK_MAX   (ENTRY_SIZE * (ENTRY_COUNT - 1))
#define NS_INDEX    (0u) // the namespace that maps namespace names to their indexes
#define NS_ANY      (255u)
#define CHUNK_ANY   (0xffu)
#define VER_0       (0x00u) // blob versions: chunk indexes 0..127 and 128..254
#define VER_1       (0x80u)
#define VER_ANY     (0xffu)

// Item layout (32 bytes): ns, type, span, chunk index, crc32, key[16], data[8];
// strings/blobs keep size (u16) + reserved + data crc32 in data[]; blob index keeps
// size (u32), chunk count, chunk start.
#define IT_NS(it)    ((it)[0])
#define IT_TYPE(it)  ((it)[1])
#define IT_SPAN(it)  ((it)[2])
#define IT_CHUNK(it) ((it)[3])
#define IT_KEY(it)   ((const char *)(it) + 8)
#define IT_DATA(it)  ((it) + 24)

// ---- little-endian fields ----

static inline uint32_t rd16(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8);
}

static inline uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline void wr16(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void wr32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

// ---- types and names ----

static inline int is_varlen(uint8_t type) {
    return type == NVS_TYPE_BLOB || type == NVS_TYPE_STR || type == NVS_TYPE_BLOB_DATA;
}

static inline int key_eq(const char *a, const char *b) {
    return strncmp(a, b, NVS_NAME_MAX) == 0;
}

static inline int is_int_type(uint8_t type) {
    return type == NVS_TYPE_U8 || type == NVS_TYPE_I8 || type == NVS_TYPE_U16 || type == NVS_TYPE_I16
           || type == NVS_TYPE_U32 || type == NVS_TYPE_I32 || type == NVS_TYPE_U64 || type == NVS_TYPE_I64;
}

// A key or namespace name: 1..15 bytes.
static inline int check_name(const char *name) {
    size_t n = name ? strlen(name) : 0;
    return n >= 1 && n <= NVS_NAME_MAX ? NVS_OK : NVS_ERR_BAD_NAME;
}

// ---- nvs_item.c ----

// The item's crc32 field: over everything but that field.
uint32_t nvs_item_crc(const uint8_t *it);
// Item::checkHeaderConsistency for the item at entry `index` of its page.
int nvs_item_consistent(const uint8_t *it, uint32_t index);
// A new item header: 0xff bytes, then the fields; the key NUL-padded to 16 bytes.
void nvs_item_init(uint8_t *it, uint8_t ns, uint8_t type, uint8_t span, const char *key, uint8_t chunk);
// HashList's key for (namespace, key, chunk index); never 0.
uint32_t nvs_item_hash(uint8_t ns, const char *key, uint8_t chunk);

#endif // IOTUTILS_NVS_ITEM_H
