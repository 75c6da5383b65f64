// nvs_item: one entry's bytes (ESP-IDF's nvs_types.cpp and HashList's hash): the CRC32 NVS
// stores, an item header's consistency check, a new header, and the key lookups hash by.
//
// Separate from the page code because the format of an entry does not depend on where it lives;
// nvs_host_crc32 (public, for the tests) is the same CRC the page header uses.
#include "nvs_item.h"

// CRC of one 4-bit step (reflected polynomial 0xEDB88320): a 64-byte table, 4x the bitwise speed.
static const uint32_t crc_nibble[16] = {
    0x00000000u, 0x1db71064u, 0x3b6e20c8u, 0x26d930acu, 0x76dc4190u, 0x6b6b51f4u, 0x4db26158u, 0x5005713cu,
    0xedb88320u, 0xf00f9344u, 0xd6d6a3e8u, 0xcb61b38cu, 0x9b64c2b0u, 0x86d3d2d4u, 0xa00ae278u, 0xbdbdf21cu,
};

uint32_t nvs_host_crc32(uint32_t crc, const void *data, size_t len) {
    // esp_rom_crc32_le: reflected polynomial 0xEDB88320, state inverted on entry and exit.
    const uint8_t *p = (const uint8_t *)data;
    crc = ~crc;
    while (len--) {
        crc ^= *p++;
        crc = (crc >> 4) ^ crc_nibble[crc & 15u];
        crc = (crc >> 4) ^ crc_nibble[crc & 15u];
    }
    return ~crc;
}

uint32_t nvs_item_crc(const uint8_t *it) {
    // Everything but the crc field itself.
    return nvs_host_crc32(nvs_host_crc32(0xffffffffu, it, 4), it + 8, 24);
}

// Item::checkHeaderConsistency
int nvs_item_consistent(const uint8_t *it, uint32_t index) {
    if (rd32(it + 4) != nvs_item_crc(it)) {
        return 0;
    }
    switch (IT_TYPE(it)) {
        case NVS_TYPE_U8:
        case NVS_TYPE_I8:
        case NVS_TYPE_U16:
        case NVS_TYPE_I16:
        case NVS_TYPE_U32:
        case NVS_TYPE_I32:
        case NVS_TYPE_U64:
        case NVS_TYPE_I64:
            return IT_SPAN(it) == 1;
        case NVS_TYPE_BLOB_IDX:
            return IT_SPAN(it) == 1 && IT_CHUNK(it) == CHUNK_ANY
                   && rd32(IT_DATA(it)) <= 127u * (ENTRY_COUNT - 1) * ENTRY_SIZE;
        case NVS_TYPE_STR:
        case NVS_TYPE_BLOB:
        case NVS_TYPE_BLOB_DATA: {
            uint32_t size = rd16(IT_DATA(it));
            if (IT_TYPE(it) == NVS_TYPE_BLOB_DATA && IT_CHUNK(it) == CHUNK_ANY) {
                return 0;
            }
            if (size > (ENTRY_COUNT - index - 1) * ENTRY_SIZE || IT_SPAN(it) > ENTRY_COUNT - index) {
                return 0;
            }
            return IT_SPAN(it) == (size + ENTRY_SIZE - 1) / ENTRY_SIZE + 1;
        }
        default:
            return 0;
    }
}

void nvs_item_init(uint8_t *it, uint8_t ns, uint8_t type, uint8_t span, const char *key, uint8_t chunk) {
    memset(it, 0xff, ENTRY_SIZE);
    it[0] = ns;
    it[1] = type;
    it[2] = span;
    it[3] = chunk;
    size_t n = strlen(key);
    if (n > NVS_NAME_MAX) {
        n = NVS_NAME_MAX;
    }
    // As ESP-IDF's strncpy: the name, then NULs to the end of the 16-byte field.
    memset(it + 8, 0, 16);
    memcpy(it + 8, key, n);
}

// HashList's key: FNV-1a of namespace, chunk index and key (never 0: 0 marks "no item").
uint32_t nvs_item_hash(uint8_t ns, const char *key, uint8_t chunk) {
    uint32_t x = 2166136261u;
    x = (x ^ ns) * 16777619u;
    x = (x ^ chunk) * 16777619u;
    for (uint32_t i = 0; i < NVS_NAME_MAX && key[i]; i++) {
        x = (x ^ (uint8_t)key[i]) * 16777619u;
    }
    return x ? x : 1u;
}
