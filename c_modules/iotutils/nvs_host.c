// ESP-IDF NVS on-flash format, ported from ESP-IDF v5.5 components/nvs_flash/src
// (nvs_page.cpp = page_*, nvs_pagemanager.cpp = pm_*, nvs_storage.cpp = st_*).
//
// The partition is mirrored in RAM (host only): reads come from the mirror, every change is
// written to the mirror and to the flash in the same order ESP-IDF writes it, so a power cut
// leaves exactly the states ESP-IDF's loader is built to repair. The in-memory per-page
// bookkeeping (next free entry, counters) is the same as ESP-IDF's; so is the hash list that
// lets lookups skip to the entry whose (namespace, key, chunk) hash matches (page_t.hash, rebuilt
// from the mirror after any write to the page).
//
// Deviations, both on the safe side of ESP-IDF's own behaviour (its loader accepts the result):
// - A new blob chunk that goes to a page holding a chunk of the blob's previous version is
//   written after marking that page FULL. On an ACTIVE page, ESP-IDF's loader would take the
//   new chunk (if power were cut right after it) for a newer duplicate of the older chunk and
//   erase the older one, losing the old value before the new one is complete; it does not run
//   that check on FULL pages, and reads FULL pages' complete items as usual.
// - After loading, a value left twice by an interrupted overwrite in a way ESP-IDF's loader
//   misses (old and new of different types, on different pages) keeps only the newer one.
// - A value that still does not fit after reclaiming one page gets further reclaims (one per
//   page at most) before NVS_ERR_NO_SPACE; ESP-IDF stops after one.
// Not done: ESP-IDF >= 6 also zeroes erased entries ("purge"); v5.5 does not, nor does this.
#include "nvs_host.h"

#include <stdlib.h>
#include <string.h>

#define ENTRY_SIZE     (32u)
#define ENTRY_COUNT    (126u)
#define TABLE_OFFSET   (32u)
#define DATA_OFFSET    (64u)
#define CHUNK_MAX      (ENTRY_SIZE * (ENTRY_COUNT - 1))
#define NO_ENTRY       (0xffffu)
#define NS_INDEX       (0u)
#define NS_ANY         (255u)
#define CHUNK_ANY      (0xffu)
#define VER_0          (0x00u)
#define VER_1          (0x80u)
#define VER_ANY        (0xffu)
#define FORMAT_VERSION (0xfeu)

// Page states (header word 0): each step clears one more bit.
#define PS_UNINIT  (0xffffffffu)
#define PS_ACTIVE  (0xfffffffeu)
#define PS_FULL    (0xfffffffcu)
#define PS_FREEING (0xfffffff8u)
#define PS_CORRUPT (0xfffffff0u)
#define PS_INVALID (0u)

// Entry states: 2 bits per entry in the page's 32-byte state table.
#define ES_EMPTY   (3u)
#define ES_WRITTEN (2u)
#define ES_ILLEGAL (1u)
#define ES_ERASED  (0u)

// Item layout (32 bytes): ns, type, span, chunk index, crc32, key[16], data[8];
// strings/blobs keep size (u16) + reserved + data crc32 in data[]; blob index keeps
// size (u32), chunk count, chunk start.
#define IT_NS(it)    ((it)[0])
#define IT_TYPE(it)  ((it)[1])
#define IT_SPAN(it)  ((it)[2])
#define IT_CHUNK(it) ((it)[3])
#define IT_KEY(it)   ((const char *)(it) + 8)
#define IT_DATA(it)  ((it) + 24)

typedef struct {
    uint32_t base; // offset of the page in the partition
    uint32_t state;
    uint32_t seq;
    uint16_t next_free;
    uint16_t first_used;
    uint16_t used;
    uint16_t erased;
    uint16_t hashed;            // hash[] matches the mirror (cleared by every write to the page)
    uint32_t hash[ENTRY_COUNT]; // item header at i: item_hash(ns, key, chunk); else 0
} page_t;

struct nvs_host {
    nvs_flash_ops_t ops;
    uint8_t *mem; // mirror of the partition
    uint32_t size;
    uint32_t npages;
    page_t *pages;
    uint16_t *list; // pages in use, by sequence number (ESP-IDF's mPageList)
    uint32_t nlist;
    uint16_t *spare; // free pages, taken from the front (mFreePageList)
    uint32_t nspare;
    uint32_t seq;   // next sequence number
    int failed;     // a flash op failed: the mirror may not match the flash any more
    int write_full; // let page_write_item fill a page just marked FULL (blob chunks)
    uint32_t gen;   // bumped by every change to the mirror
    // The last item nvs_host_get found, while gen stays the same: kvstore asks for the type and
    // size first, then the value (up to four lookups of one key per read).
    uint32_t memo_gen;
    uint8_t memo_nsi;
    uint16_t memo_index;
    page_t *memo_page;
    char memo_ns[16];
    char memo_key[16];
    uint8_t ns_used[32];
    char ns_name[256][16];
};

// ---- little-endian helpers and CRC ----

static uint32_t rd16(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8);
}

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void wr16(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void wr32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

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

static uint32_t item_crc(const uint8_t *it) {
    // Everything but the crc field itself.
    return nvs_host_crc32(nvs_host_crc32(0xffffffffu, it, 4), it + 8, 24);
}

static int is_varlen(uint8_t type) {
    return type == NVS_TYPE_BLOB || type == NVS_TYPE_STR || type == NVS_TYPE_BLOB_DATA;
}

static int key_eq(const char *a, const char *b) {
    return strncmp(a, b, NVS_NAME_MAX) == 0;
}

// Item::checkHeaderConsistency
static int item_consistent(const uint8_t *it, uint32_t index) {
    if (rd32(it + 4) != item_crc(it)) {
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

static void item_init(uint8_t *it, uint8_t ns, uint8_t type, uint8_t span, const char *key, uint8_t chunk) {
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

// ---- flash access through the mirror ----

// Any change to a page's bytes makes its hash list stale (rebuilt on the next lookup).
static void fl_touch(nvs_host_t *h, uint32_t off, uint32_t n) {
    h->gen++;
    for (uint32_t pg = off / NVS_PAGE_SIZE; pg <= (off + n - 1) / NVS_PAGE_SIZE && pg < h->npages; pg++) {
        h->pages[pg].hashed = 0;
    }
}

static int fl_write(nvs_host_t *h, uint32_t off, const void *data, uint32_t n) {
    if (h->failed) {
        return NVS_ERR_FLASH;
    }
    fl_touch(h, off, n);
    memcpy(h->mem + off, data, n);
    if (h->ops.write(h->ops.ctx, off, data, n) != 0) {
        h->failed = 1;
        return NVS_ERR_FLASH;
    }
    return NVS_OK;
}

static int fl_erase(nvs_host_t *h, uint32_t off, uint32_t n) {
    if (h->failed) {
        return NVS_ERR_FLASH;
    }
    fl_touch(h, off, n);
    memset(h->mem + off, 0xff, n);
    if (h->ops.erase(h->ops.ctx, off, n) != 0) {
        h->failed = 1;
        return NVS_ERR_FLASH;
    }
    return NVS_OK;
}

static const uint8_t *entry_ptr(nvs_host_t *h, const page_t *p, uint32_t i) {
    return h->mem + p->base + DATA_OFFSET + i * ENTRY_SIZE;
}

static uint32_t es_get(nvs_host_t *h, const page_t *p, uint32_t i) {
    return (h->mem[p->base + TABLE_OFFSET + i / 4] >> ((i % 4) * 2)) & 3u;
}

// ---- page (nvs_page.cpp) ----

static int page_alter_state(nvs_host_t *h, page_t *p, uint32_t state) {
    uint8_t w[4];
    wr32(w, state);
    int rc = fl_write(h, p->base, w, 4);
    if (rc != NVS_OK) {
        p->state = PS_INVALID;
        return rc;
    }
    p->state = state;
    return NVS_OK;
}

// Entry states change one 32-bit word of the table at a time (16 entries per word).
static int page_alter_range_state(nvs_host_t *h, page_t *p, uint32_t begin, uint32_t end, uint32_t state) {
    uint32_t word = (end - 1) / 16;
    uint8_t w[4];
    memcpy(w, h->mem + p->base + TABLE_OFFSET + word * 4, 4);
    for (uint32_t i = end; i-- > begin;) {
        uint32_t shift = (i % 4) * 2;
        uint8_t *b = &w[(i % 16) / 4];
        *b = (uint8_t)((*b & ~(3u << shift)) | (state << shift));
        if (i == begin || (i - 1) / 16 != word) {
            int rc = fl_write(h, p->base + TABLE_OFFSET + word * 4, w, 4);
            if (rc != NVS_OK) {
                p->state = PS_INVALID;
                return rc;
            }
            if (i != begin) {
                word = (i - 1) / 16;
                memcpy(w, h->mem + p->base + TABLE_OFFSET + word * 4, 4);
            }
        }
    }
    return NVS_OK;
}

static int page_alter_entry_state(nvs_host_t *h, page_t *p, uint32_t i, uint32_t state) {
    return page_alter_range_state(h, p, i, i + 1, state);
}

static int page_initialize(nvs_host_t *h, page_t *p) {
    uint8_t hdr[32];
    memset(hdr, 0xff, sizeof(hdr));
    wr32(hdr, PS_ACTIVE);
    wr32(hdr + 4, p->seq);
    hdr[8] = FORMAT_VERSION;
    wr32(hdr + 28, nvs_host_crc32(0xffffffffu, hdr + 4, 24));
    int rc = fl_write(h, p->base, hdr, sizeof(hdr));
    if (rc != NVS_OK) {
        p->state = PS_INVALID;
        return rc;
    }
    p->state = PS_ACTIVE;
    p->next_free = 0;
    return NVS_OK;
}

static int page_write_entry(nvs_host_t *h, page_t *p, const uint8_t *it) {
    int rc = fl_write(h, p->base + DATA_OFFSET + p->next_free * ENTRY_SIZE, it, ENTRY_SIZE);
    if (rc != NVS_OK) {
        p->state = PS_INVALID;
        return rc;
    }
    rc = page_alter_entry_state(h, p, p->next_free, ES_WRITTEN);
    if (rc != NVS_OK) {
        return rc;
    }
    if (p->first_used == NO_ENTRY) {
        p->first_used = p->next_free;
    }
    p->used++;
    p->next_free++;
    return NVS_OK;
}

static int page_write_entry_data(nvs_host_t *h, page_t *p, const uint8_t *data, uint32_t size) {
    uint32_t count = size / ENTRY_SIZE;
    int rc = fl_write(h, p->base + DATA_OFFSET + p->next_free * ENTRY_SIZE, data, size);
    if (rc != NVS_OK) {
        p->state = PS_INVALID;
        return rc;
    }
    rc = page_alter_range_state(h, p, p->next_free, p->next_free + count, ES_WRITTEN);
    if (rc != NVS_OK) {
        return rc;
    }
    p->used += (uint16_t)count;
    p->next_free += (uint16_t)count;
    return NVS_OK;
}

static int page_write_item(nvs_host_t *h, page_t *p, uint8_t ns, uint8_t type, const char *key, const void *data,
                           uint32_t size, uint8_t chunk) {
    uint8_t it[ENTRY_SIZE];
    int rc;
    if (p->state == PS_INVALID) {
        return NVS_ERR_FAIL;
    }
    if (p->state == PS_UNINIT) {
        rc = page_initialize(h, p);
        if (rc != NVS_OK) {
            return rc;
        }
    }
    if (p->state == PS_FULL && !h->write_full) {
        return NVS_ERR_PAGE_FULL;
    }
    if (size > CHUNK_MAX) {
        return NVS_ERR_VALUE_TOO_LONG;
    }
    if (!is_varlen(type) && size > 8) {
        return NVS_ERR_BAD_ARG;
    }
    uint32_t entries = 1;
    if (is_varlen(type)) {
        entries += (size + ENTRY_SIZE - 1) / ENTRY_SIZE;
    }
    if (p->next_free == NO_ENTRY || p->next_free + entries > ENTRY_COUNT) {
        return NVS_ERR_PAGE_FULL;
    }
    item_init(it, ns, type, (uint8_t)entries, key, chunk);
    if (!is_varlen(type)) {
        memcpy(IT_DATA(it), data, size);
        wr32(it + 4, item_crc(it));
        return page_write_entry(h, p, it);
    }
    const uint8_t *src = (const uint8_t *)data;
    wr16(IT_DATA(it), size);
    wr16(IT_DATA(it) + 2, 0xffff);
    wr32(IT_DATA(it) + 4, nvs_host_crc32(0xffffffffu, src, size));
    wr32(it + 4, item_crc(it));
    rc = page_write_entry(h, p, it);
    if (rc != NVS_OK) {
        return rc;
    }
    uint32_t tail = size % ENTRY_SIZE;
    uint32_t left = size - tail;
    if (left > 0) {
        rc = page_write_entry_data(h, p, src, left);
        if (rc != NVS_OK) {
            return rc;
        }
    }
    if (tail > 0) {
        memset(it, 0xff, ENTRY_SIZE);
        memcpy(it, src + left, tail);
        rc = page_write_entry(h, p, it);
    }
    return rc;
}

static int page_update_first_used(nvs_host_t *h, page_t *p, uint32_t index, uint32_t span) {
    p->first_used = NO_ENTRY;
    uint32_t end = p->next_free > ENTRY_COUNT ? ENTRY_COUNT : p->next_free;
    for (uint32_t i = index + span; i < end; i++) {
        if (es_get(h, p, i) == ES_WRITTEN) {
            p->first_used = (uint16_t)i;
            break;
        }
    }
    return NVS_OK;
}

static int page_erase_entry_span(nvs_host_t *h, page_t *p, uint32_t index) {
    uint32_t span = 1;
    int rc;
    if (es_get(h, p, index) == ES_WRITTEN) {
        const uint8_t *it = entry_ptr(h, p, index);
        if (!item_consistent(it, index)) {
            rc = page_alter_entry_state(h, p, index, ES_ERASED);
            p->used--;
            p->erased++;
            if (rc != NVS_OK) {
                return rc;
            }
        } else {
            span = IT_SPAN(it);
            for (uint32_t i = index + span; i-- > index;) {
                if (es_get(h, p, i) == ES_WRITTEN) {
                    p->used--;
                }
                p->erased++;
            }
            rc = page_alter_range_state(h, p, index, index + span, ES_ERASED);
            if (rc != NVS_OK) {
                return rc;
            }
        }
    } else {
        rc = page_alter_entry_state(h, p, index, ES_ERASED);
        if (rc != NVS_OK) {
            return rc;
        }
    }
    if (index == p->first_used) {
        page_update_first_used(h, p, index, span);
    }
    if (index + span > p->next_free) {
        p->next_free = (uint16_t)(index + span);
    }
    return NVS_OK;
}

// HashList's key: FNV-1a of namespace, chunk index and key (never 0: 0 marks "no item").
static uint32_t item_hash(uint8_t ns, const char *key, uint8_t chunk) {
    uint32_t x = 2166136261u;
    x = (x ^ ns) * 16777619u;
    x = (x ^ chunk) * 16777619u;
    for (uint32_t i = 0; i < NVS_NAME_MAX && key[i]; i++) {
        x = (x ^ (uint8_t)key[i]) * 16777619u;
    }
    return x ? x : 1u;
}

// The items of a page as Page::findItem walks them: header entries that are WRITTEN and consistent.
static void page_hash_build(nvs_host_t *h, page_t *p) {
    memset(p->hash, 0, sizeof(p->hash));
    for (uint32_t i = 0; i < ENTRY_COUNT;) {
        const uint8_t *it = entry_ptr(h, p, i);
        if (es_get(h, p, i) != ES_WRITTEN || !item_consistent(it, i)) {
            i++;
            continue;
        }
        p->hash[i] = item_hash(IT_NS(it), IT_KEY(it), IT_CHUNK(it));
        i += is_varlen(IT_TYPE(it)) ? IT_SPAN(it) : 1u;
    }
    p->hashed = 1;
}

// The first entry at or after start whose hash matches, or ENTRY_COUNT (HashList::find).
static uint32_t page_hash_find(nvs_host_t *h, page_t *p, uint32_t start, uint8_t ns, const char *key, uint8_t chunk) {
    if (!p->hashed) {
        page_hash_build(h, p);
    }
    uint32_t x = item_hash(ns, key, chunk);
    uint32_t end = p->next_free < ENTRY_COUNT ? p->next_free : ENTRY_COUNT;
    for (uint32_t i = start; i < end; i++) {
        if (p->hash[i] == x) {
            return i;
        }
    }
    return ENTRY_COUNT;
}

// Page::findItem. *index: where to start, and where the item was found.
static int page_find(nvs_host_t *h, page_t *p, uint8_t ns, uint8_t type, const char *key, uint32_t *index,
                     const uint8_t **out, uint8_t chunk, uint8_t chunk_start) {
    if (p->state == PS_CORRUPT || p->state == PS_INVALID || p->state == PS_UNINIT) {
        return NVS_ERR_NOT_FOUND;
    }
    if (*index >= ENTRY_COUNT || p->first_used == NO_ENTRY) {
        return NVS_ERR_NOT_FOUND;
    }
    uint32_t start = *index > p->first_used ? *index : p->first_used;
    uint32_t end = p->next_free > ENTRY_COUNT ? ENTRY_COUNT : p->next_free;
    // As ESP-IDF: a known namespace and key start at the hash list's match (any chunk of a blob's
    // data is searched entry by entry).
    if (ns != NS_ANY && key != NULL && (type != NVS_TYPE_BLOB_DATA || chunk != CHUNK_ANY)) {
        start = page_hash_find(h, p, start, ns, key, chunk);
        if (start >= end) {
            return NVS_ERR_NOT_FOUND;
        }
    }
    uint32_t next;
    for (uint32_t i = start; i < end; i = next) {
        next = i + 1;
        if (es_get(h, p, i) != ES_WRITTEN) {
            continue;
        }
        const uint8_t *it = entry_ptr(h, p, i);
        if (!item_consistent(it, i)) {
            int rc = page_erase_entry_span(h, p, i);
            if (rc != NVS_OK) {
                p->state = PS_INVALID;
                return rc;
            }
            continue;
        }
        uint8_t itype = IT_TYPE(it);
        if (is_varlen(itype)) {
            next = i + IT_SPAN(it);
        }
        if (ns != NS_ANY && IT_NS(it) != ns) {
            continue;
        }
        if (key != NULL && !key_eq(key, IT_KEY(it))) {
            continue;
        }
        if (chunk != CHUNK_ANY && type == NVS_TYPE_BLOB_DATA && IT_CHUNK(it) != chunk) {
            continue;
        }
        if (chunk == CHUNK_ANY && type == NVS_TYPE_BLOB_DATA && itype != NVS_TYPE_BLOB_DATA) {
            continue;
        }
        if (chunk == CHUNK_ANY && type == NVS_TYPE_BLOB && itype == NVS_TYPE_BLOB_IDX) {
            return NVS_ERR_TYPE_MISMATCH;
        }
        if (chunk == CHUNK_ANY && type == NVS_TYPE_BLOB && itype == NVS_TYPE_BLOB_DATA) {
            continue;
        }
        if (type == NVS_TYPE_BLOB_IDX && IT_CHUNK(it) != CHUNK_ANY) {
            continue;
        }
        if (type == NVS_TYPE_BLOB_IDX && chunk_start != VER_ANY && IT_DATA(it)[5] != chunk_start) {
            continue;
        }
        if (type != NVS_TYPE_ANY && itype != type) {
            if (key == NULL && ns == NS_ANY && chunk == CHUNK_ANY) {
                continue;
            }
            *index = i;
            return NVS_ERR_TYPE_MISMATCH;
        }
        *index = i;
        *out = it;
        return NVS_OK;
    }
    return NVS_ERR_NOT_FOUND;
}

static int page_find_simple(nvs_host_t *h, page_t *p, uint8_t ns, uint8_t type, const char *key, uint32_t *index,
                            const uint8_t **out, uint8_t chunk, uint8_t chunk_start) {
    *index = 0;
    return page_find(h, p, ns, type, key, index, out, chunk, chunk_start);
}

static int page_erase_item(nvs_host_t *h, page_t *p, uint8_t ns, uint8_t type, const char *key, uint8_t chunk,
                           uint8_t chunk_start) {
    uint32_t index;
    const uint8_t *it;
    int rc = page_find_simple(h, p, ns, type, key, &index, &it, chunk, chunk_start);
    if (rc != NVS_OK) {
        return rc;
    }
    return page_erase_entry_span(h, p, index);
}

// Copy a variable-length item's data out of its data entries; a CRC mismatch erases it.
static int page_read_varlen(nvs_host_t *h, page_t *p, const uint8_t *it, uint32_t index, uint8_t *dst) {
    uint32_t size = rd16(IT_DATA(it));
    memcpy(dst, entry_ptr(h, p, index + 1), size);
    if (nvs_host_crc32(0xffffffffu, dst, size) != rd32(IT_DATA(it) + 4)) {
        int rc = page_erase_entry_span(h, p, index);
        return rc != NVS_OK ? rc : NVS_ERR_NOT_FOUND;
    }
    return NVS_OK;
}

static int page_read_item(nvs_host_t *h, page_t *p, uint8_t ns, uint8_t type, const char *key, void *data,
                          uint32_t size, uint8_t chunk, uint8_t chunk_start) {
    uint32_t index;
    const uint8_t *it;
    int rc = page_find_simple(h, p, ns, type, key, &index, &it, chunk, chunk_start);
    if (rc != NVS_OK) {
        return rc;
    }
    if (!is_varlen(type)) {
        if (size != (uint32_t)(type & 0x0f)) {
            return NVS_ERR_TYPE_MISMATCH;
        }
        memcpy(data, IT_DATA(it), size);
        return NVS_OK;
    }
    if (size < rd16(IT_DATA(it))) {
        return NVS_ERR_INVALID_LENGTH;
    }
    return page_read_varlen(h, p, it, index, (uint8_t *)data);
}

static int page_cmp_item(nvs_host_t *h, page_t *p, uint8_t ns, uint8_t type, const char *key, const void *data,
                         uint32_t size, uint8_t chunk, uint8_t chunk_start) {
    uint32_t index;
    const uint8_t *it;
    int rc = page_find_simple(h, p, ns, type, key, &index, &it, chunk, chunk_start);
    if (rc != NVS_OK) {
        return rc;
    }
    if (!is_varlen(type)) {
        if (size != (uint32_t)(type & 0x0f)) {
            return NVS_ERR_TYPE_MISMATCH;
        }
        return memcmp(data, IT_DATA(it), size) ? NVS_ERR_CONTENT_DIFFERS : NVS_OK;
    }
    uint32_t stored = rd16(IT_DATA(it));
    if (size < stored) {
        return NVS_ERR_INVALID_LENGTH;
    }
    if (nvs_host_crc32(0xffffffffu, data, stored) != rd32(IT_DATA(it) + 4)
        || memcmp(data, entry_ptr(h, p, index + 1), stored) != 0) {
        return NVS_ERR_CONTENT_DIFFERS;
    }
    return NVS_OK;
}

static int page_erase(nvs_host_t *h, page_t *p) {
    int rc = fl_erase(h, p->base, NVS_PAGE_SIZE);
    if (rc != NVS_OK) {
        p->state = PS_INVALID;
        return rc;
    }
    p->used = 0;
    p->erased = 0;
    p->first_used = NO_ENTRY;
    p->next_free = NO_ENTRY;
    p->state = PS_UNINIT;
    return NVS_OK;
}

static int page_copy_items(nvs_host_t *h, page_t *src, page_t *dst) {
    if (src->first_used == NO_ENTRY) {
        return NVS_ERR_NOT_FOUND;
    }
    int rc;
    if (dst->state == PS_UNINIT) {
        rc = page_initialize(h, dst);
        if (rc != NVS_OK) {
            return rc;
        }
    }
    uint32_t i = src->first_used;
    while (i < ENTRY_COUNT) {
        if (es_get(h, src, i) != ES_WRITTEN) {
            if (i == src->first_used) {
                return NVS_ERR_FAIL;
            }
            i++;
            continue;
        }
        uint8_t it[ENTRY_SIZE];
        memcpy(it, entry_ptr(h, src, i), ENTRY_SIZE);
        uint32_t end = i + it[2];
        if (it[2] == 0 || end > ENTRY_COUNT) {
            return NVS_ERR_FAIL;
        }
        for (; i < end; i++) {
            memcpy(it, entry_ptr(h, src, i), ENTRY_SIZE);
            rc = page_write_entry(h, dst, it);
            if (rc != NVS_OK) {
                return rc;
            }
        }
    }
    return NVS_OK;
}

static uint32_t page_tailroom(const page_t *p) {
    if (p->state == PS_UNINIT) {
        return CHUNK_MAX;
    }
    if (p->state == PS_FULL) {
        return 0;
    }
    return p->next_free < ENTRY_COUNT - 1 ? (ENTRY_COUNT - p->next_free - 1) * ENTRY_SIZE : 0;
}

static int page_mark_full(nvs_host_t *h, page_t *p) {
    if (p->state != PS_ACTIVE) {
        return NVS_ERR_FAIL;
    }
    return page_alter_state(h, p, PS_FULL);
}

// Page::mLoadEntryTable: counters, the first free entry, and the repairs ESP-IDF does on the
// active page (half-written entries, incomplete strings/blobs, duplicates from a write cut
// between writing the new value and erasing the old one).
static int page_load_table(nvs_host_t *h, page_t *p) {
    uint32_t st;
    int rc;
    p->used = 0;
    p->erased = 0;
    for (uint32_t i = 0; i < ENTRY_COUNT; i++) {
        st = es_get(h, p, i);
        if (st == ES_WRITTEN) {
            if (p->first_used == NO_ENTRY) {
                p->first_used = (uint16_t)i;
            }
            p->used++;
        } else if (st == ES_ERASED) {
            p->erased++;
        }
    }
    if (p->state == PS_ACTIVE) {
        for (uint32_t i = 0; i < ENTRY_COUNT; i++) {
            if (es_get(h, p, i) == ES_EMPTY) {
                p->next_free = (uint16_t)i;
                break;
            }
        }
        // Data written but its state not yet set: the entry is lost; skip past it.
        while (p->next_free < ENTRY_COUNT) {
            if (rd32(entry_ptr(h, p, p->next_free)) == 0xffffffffu) {
                break;
            }
            uint32_t old = es_get(h, p, p->next_free);
            rc = page_alter_entry_state(h, p, p->next_free, ES_ERASED);
            if (rc != NVS_OK) {
                p->state = PS_INVALID;
                return rc;
            }
            p->next_free++;
            if (old == ES_WRITTEN) {
                p->used--;
            }
            p->erased++;
        }
        const uint8_t *it = NULL;
        uint32_t last = NO_ENTRY;
        uint32_t end = p->next_free > ENTRY_COUNT ? ENTRY_COUNT : p->next_free;
        uint32_t span;
        for (uint32_t i = 0; i < end; i += span) {
            span = 1;
            st = es_get(h, p, i);
            if (st == ES_ERASED) {
                last = NO_ENTRY;
                continue;
            }
            if (st == ES_ILLEGAL) {
                last = NO_ENTRY;
                rc = page_erase_entry_span(h, p, i);
                if (rc != NVS_OK) {
                    p->state = PS_INVALID;
                    return rc;
                }
                continue;
            }
            last = i;
            it = entry_ptr(h, p, i);
            if (!item_consistent(it, i)) {
                rc = page_erase_entry_span(h, p, i);
                if (rc != NVS_OK) {
                    p->state = PS_INVALID;
                    return rc;
                }
                continue;
            }
            // Earlier live item with the same namespace, key and chunk index (ESP-IDF's hash
            // list ignores the type): the older copy of an interrupted overwrite.
            uint32_t dup = NO_ENTRY;
            for (uint32_t j = 0; j < i; j++) {
                if (es_get(h, p, j) != ES_WRITTEN) {
                    continue;
                }
                const uint8_t *o = entry_ptr(h, p, j);
                if (!item_consistent(o, j)) {
                    continue;
                }
                if (IT_NS(o) == IT_NS(it) && IT_CHUNK(o) == IT_CHUNK(it) && key_eq(IT_KEY(o), IT_KEY(it))) {
                    dup = j;
                    break;
                }
                if (is_varlen(IT_TYPE(o))) {
                    j += IT_SPAN(o) - 1;
                }
            }
            if (is_varlen(IT_TYPE(it))) {
                span = IT_SPAN(it);
                int need_erase = 0;
                for (uint32_t j = i; j < i + span; j++) {
                    if (es_get(h, p, j) != ES_WRITTEN) {
                        need_erase = 1;
                        last = NO_ENTRY;
                        break;
                    }
                }
                if (need_erase) {
                    page_erase_entry_span(h, p, i);
                    continue;
                }
            }
            if (dup != NO_ENTRY) {
                page_erase_entry_span(h, p, dup);
            }
        }
        // The last item must not have an older duplicate on this page.
        if (last != NO_ENTRY) {
            uint8_t copy[ENTRY_SIZE];
            const uint8_t *found;
            uint32_t index;
            memcpy(copy, it, ENTRY_SIZE);
            if (page_find_simple(h, p, IT_NS(copy), IT_TYPE(copy), IT_KEY(copy), &index, &found, CHUNK_ANY, VER_ANY)
                    == NVS_OK
                && index < last) {
                rc = page_erase_entry_span(h, p, index);
                if (rc != NVS_OK) {
                    p->state = PS_INVALID;
                    return rc;
                }
            }
        }
    } else {
        // FULL or FREEING: drop inconsistent items and incomplete strings/blobs.
        for (uint32_t i = p->first_used; i < ENTRY_COUNT; i++) {
            if (es_get(h, p, i) != ES_WRITTEN) {
                continue;
            }
            const uint8_t *it = entry_ptr(h, p, i);
            if (!item_consistent(it, i)) {
                rc = page_erase_entry_span(h, p, i);
                if (rc != NVS_OK) {
                    p->state = PS_INVALID;
                    return rc;
                }
                continue;
            }
            uint32_t span = IT_SPAN(it);
            if (is_varlen(IT_TYPE(it))) {
                for (uint32_t j = i + 1; j < i + span; j++) {
                    if (es_get(h, p, j) != ES_WRITTEN) {
                        page_erase_entry_span(h, p, i);
                        break;
                    }
                }
            }
            i += span - 1;
        }
    }
    return NVS_OK;
}

// Page::load
static int page_load(nvs_host_t *h, page_t *p, uint32_t sector) {
    p->base = sector * NVS_PAGE_SIZE;
    p->used = 0;
    p->erased = 0;
    p->next_free = NO_ENTRY;
    p->first_used = NO_ENTRY;
    p->seq = 0xffffffffu;
    p->state = PS_INVALID;
    const uint8_t *hdr = h->mem + p->base;
    uint32_t state = rd32(hdr);
    if (state == PS_UNINIT) {
        p->state = PS_UNINIT;
        for (uint32_t i = 0; i < NVS_PAGE_SIZE; i++) {
            if (hdr[i] != 0xff) {
                p->state = PS_CORRUPT;
                break;
            }
        }
        return NVS_OK;
    }
    if (rd32(hdr + 28) != nvs_host_crc32(0xffffffffu, hdr + 4, 24)) {
        p->state = PS_CORRUPT;
        return NVS_OK;
    }
    p->seq = rd32(hdr + 4);
    if (hdr[8] < FORMAT_VERSION) {
        return NVS_ERR_NEW_VERSION;
    }
    if (state == PS_ACTIVE || state == PS_FULL || state == PS_FREEING) {
        p->state = state;
        return page_load_table(h, p);
    }
    p->state = PS_CORRUPT;
    return NVS_OK;
}

static int page_has_seq(const page_t *p) {
    return p->state != PS_UNINIT && p->state != PS_INVALID && p->state != PS_CORRUPT;
}

// ---- page manager (nvs_pagemanager.cpp) ----

static page_t *pm_back(nvs_host_t *h) {
    return &h->pages[h->list[h->nlist - 1]];
}

static void pm_list_remove(nvs_host_t *h, uint32_t pos) {
    memmove(&h->list[pos], &h->list[pos + 1], (h->nlist - pos - 1) * sizeof(h->list[0]));
    h->nlist--;
}

static int pm_activate_page(nvs_host_t *h) {
    if (h->nspare == 0) {
        return NVS_ERR_NO_SPACE;
    }
    uint16_t idx = h->spare[0];
    page_t *p = &h->pages[idx];
    if (p->state == PS_CORRUPT) {
        int rc = page_erase(h, p);
        if (rc != NVS_OK) {
            return rc;
        }
    }
    memmove(&h->spare[0], &h->spare[1], (h->nspare - 1) * sizeof(h->spare[0]));
    h->nspare--;
    h->list[h->nlist++] = idx;
    p->seq = h->seq++;
    return NVS_OK;
}

// Free the page with the most reusable entries: copy its live items to the spare page.
static int pm_request_new_page(nvs_host_t *h) {
    if (h->nspare == 0) {
        return NVS_ERR_FAIL;
    }
    if (h->nspare >= 2) {
        return pm_activate_page(h);
    }
    uint32_t best = 0, best_unused = 0;
    for (uint32_t k = 0; k < h->nlist; k++) {
        uint32_t unused = ENTRY_COUNT - h->pages[h->list[k]].used;
        if (unused > best_unused) {
            best = k;
            best_unused = unused;
        }
    }
    if (best_unused == 0) {
        return NVS_ERR_NO_SPACE;
    }
    uint16_t victim_idx = h->list[best];
    page_t *victim = &h->pages[victim_idx];
    int rc = pm_activate_page(h);
    if (rc != NVS_OK) {
        return rc;
    }
    if (victim->state != PS_FULL && victim->state != PS_ACTIVE) {
        return NVS_ERR_FAIL;
    }
    rc = page_alter_state(h, victim, PS_FREEING);
    if (rc != NVS_OK) {
        return rc;
    }
    rc = page_copy_items(h, victim, pm_back(h));
    if (rc != NVS_OK && rc != NVS_ERR_NOT_FOUND) {
        return rc;
    }
    rc = page_erase(h, victim);
    if (rc != NVS_OK) {
        return rc;
    }
    for (uint32_t k = 0; k < h->nlist; k++) {
        if (h->list[k] == victim_idx) {
            pm_list_remove(h, k);
            break;
        }
    }
    h->spare[h->nspare++] = victim_idx;
    return NVS_OK;
}

static int pm_load(nvs_host_t *h) {
    h->nlist = 0;
    h->nspare = 0;
    for (uint32_t i = 0; i < h->npages; i++) {
        page_t *p = &h->pages[i];
        int rc = page_load(h, p, i);
        if (rc != NVS_OK) {
            return rc;
        }
        if (!page_has_seq(p)) {
            h->spare[h->nspare++] = (uint16_t)i;
            continue;
        }
        // Insert before the first page with a greater sequence number.
        uint32_t pos = 0;
        while (pos < h->nlist && h->pages[h->list[pos]].seq <= p->seq) {
            pos++;
        }
        memmove(&h->list[pos + 1], &h->list[pos], (h->nlist - pos) * sizeof(h->list[0]));
        h->list[pos] = (uint16_t)i;
        h->nlist++;
    }
    if (h->nlist == 0) {
        h->seq = 0;
        return pm_activate_page(h);
    }
    h->seq = pm_back(h)->seq + 1;

    // Power cut after a new item was written but before the old one was erased: the last
    // item of the newest page wins over a copy on an older page.
    page_t *lastp = pm_back(h);
    uint8_t last[ENTRY_SIZE];
    int have_last = 0;
    uint32_t index = 0;
    const uint8_t *it;
    while (page_find(h, lastp, NS_ANY, NVS_TYPE_ANY, NULL, &index, &it, CHUNK_ANY, VER_ANY) == NVS_OK) {
        memcpy(last, it, ENTRY_SIZE);
        have_last = 1;
        index += IT_SPAN(it);
    }
    if (have_last) {
        uint32_t k;
        for (k = 0; k + 1 < h->nlist; k++) {
            page_t *p = &h->pages[h->list[k]];
            if (p->state != PS_FREEING
                && page_erase_item(h, p, IT_NS(last), IT_TYPE(last), IT_KEY(last), IT_CHUNK(last), VER_ANY) == NVS_OK) {
                break;
            }
        }
        if (k + 1 == h->nlist && IT_TYPE(last) == NVS_TYPE_BLOB_IDX) {
            for (k = 0; k + 1 < h->nlist; k++) {
                page_t *p = &h->pages[h->list[k]];
                if (p->state != PS_FREEING
                    && page_erase_item(h, p, IT_NS(last), NVS_TYPE_BLOB, IT_KEY(last), IT_CHUNK(last), VER_ANY)
                           == NVS_OK) {
                    break;
                }
            }
        }
    }

    // Power cut while a page was being freed: redo the copy into a fresh page.
    for (uint32_t k = 0; k < h->nlist; k++) {
        uint16_t fidx = h->list[k];
        page_t *freeing = &h->pages[fidx];
        if (freeing->state != PS_FREEING) {
            continue;
        }
        page_t *np = pm_back(h);
        if (np->state == PS_ACTIVE) {
            int rc = page_erase(h, np);
            if (rc != NVS_OK) {
                return rc;
            }
            h->spare[h->nspare++] = h->list[h->nlist - 1];
            h->nlist--;
        }
        int rc = pm_activate_page(h);
        if (rc != NVS_OK) {
            return rc;
        }
        rc = page_copy_items(h, freeing, pm_back(h));
        if (rc != NVS_OK && rc != NVS_ERR_NOT_FOUND) {
            return rc;
        }
        rc = page_erase(h, freeing);
        if (rc != NVS_OK) {
            return rc;
        }
        for (uint32_t j = 0; j < h->nlist; j++) {
            if (h->list[j] == fidx) {
                pm_list_remove(h, j);
                break;
            }
        }
        h->spare[h->nspare++] = fidx;
        break;
    }
    if (h->nspare == 0) {
        return NVS_ERR_NO_FREE_PAGES;
    }
    return NVS_OK;
}

// ---- storage (nvs_storage.cpp) ----

static page_t *st_current(nvs_host_t *h) {
    return pm_back(h);
}

static int st_find(nvs_host_t *h, uint8_t ns, uint8_t type, const char *key, page_t **page, const uint8_t **it,
                   uint32_t *index, uint8_t chunk, uint8_t chunk_start) {
    for (uint32_t k = 0; k < h->nlist; k++) {
        page_t *p = &h->pages[h->list[k]];
        uint32_t i = 0;
        if (page_find(h, p, ns, type, key, &i, it, chunk, chunk_start) == NVS_OK) {
            *page = p;
            if (index) {
                *index = i;
            }
            return NVS_OK;
        }
    }
    return NVS_ERR_NOT_FOUND;
}

// Chunk ranges: version 0 uses chunk indexes 0..127, version 1 uses 128..254.
static int chunk_in_version(uint8_t chunk, uint8_t start) {
    if (start == VER_0) {
        return chunk < VER_1;
    }
    if (start == VER_1) {
        return chunk >= VER_1 && chunk < VER_ANY;
    }
    return 1;
}

static int st_erase_multipage_blob(nvs_host_t *h, uint8_t ns, const char *key, uint8_t chunk_start) {
    page_t *p;
    const uint8_t *it;
    int rc = st_find(h, ns, NVS_TYPE_BLOB_IDX, key, &p, &it, NULL, CHUNK_ANY, chunk_start);
    if (rc != NVS_OK) {
        return rc;
    }
    rc = page_erase_item(h, p, ns, NVS_TYPE_BLOB_IDX, key, CHUNK_ANY, chunk_start);
    if (rc != NVS_OK) {
        return rc;
    }
    if (chunk_start == VER_ANY) {
        // A dirty partition may hold both versions' indexes.
        if (st_find(h, ns, NVS_TYPE_BLOB_IDX, key, &p, &it, NULL, CHUNK_ANY, chunk_start) == NVS_OK) {
            rc = page_erase_item(h, p, ns, NVS_TYPE_BLOB_IDX, key, CHUNK_ANY, chunk_start);
            if (rc != NVS_OK) {
                return rc;
            }
        }
    }
    for (uint32_t k = 0; k < h->nlist; k++) {
        page_t *pg = &h->pages[h->list[k]];
        uint32_t index = 0;
        while (index < ENTRY_COUNT
               && page_find(h, pg, ns, NVS_TYPE_BLOB_DATA, key, &index, &it, CHUNK_ANY, VER_ANY) == NVS_OK) {
            uint32_t span = IT_SPAN(it);
            if (chunk_in_version(IT_CHUNK(it), chunk_start)) {
                rc = page_erase_entry_span(h, pg, index);
                if (rc != NVS_OK) {
                    return rc;
                }
            }
            index += span;
        }
    }
    return h->failed ? NVS_ERR_FLASH : NVS_OK;
}

// Does page p hold a live chunk of (ns, key) outside version `start`?
static int page_has_other_chunk(nvs_host_t *h, page_t *p, uint8_t ns, const char *key, uint8_t start) {
    uint32_t index = 0;
    const uint8_t *it;
    while (index < ENTRY_COUNT
           && page_find(h, p, ns, NVS_TYPE_BLOB_DATA, key, &index, &it, CHUNK_ANY, VER_ANY) == NVS_OK) {
        if (!chunk_in_version(IT_CHUNK(it), start)) {
            return 1;
        }
        index += IT_SPAN(it);
    }
    return 0;
}

static int st_write_multipage_blob(nvs_host_t *h, uint8_t ns, const char *key, const uint8_t *data, uint32_t size,
                                   uint8_t chunk_start) {
    uint32_t max_pages = h->npages - 1;
    if (max_pages > (CHUNK_ANY - 1) / 2) {
        max_pages = (CHUNK_ANY - 1) / 2;
    }
    if (size > max_pages * CHUNK_MAX) {
        return NVS_ERR_VALUE_TOO_LONG;
    }
    uint8_t count = 0;
    uint32_t remaining = size, offset = 0;
    int rc = NVS_OK;
    for (;;) {
        page_t *p = st_current(h);
        uint32_t tailroom = page_tailroom(p);
        if (count == 0 && ((tailroom < size) || (tailroom == 0 && size == 0)) && tailroom < CHUNK_MAX / 10) {
            // First chunk and too little room here: start on a new page.
            if (p->state != PS_FULL) {
                rc = page_mark_full(h, p);
                if (rc != NVS_OK) {
                    break;
                }
            }
            rc = pm_request_new_page(h);
            if (rc != NVS_OK) {
                break;
            }
            if (page_tailroom(st_current(h)) == tailroom) {
                rc = NVS_ERR_NO_SPACE;
                break;
            }
            continue;
        }
        if (tailroom == 0) {
            rc = NVS_ERR_NO_SPACE;
            break;
        }
        // See the file comment: a page holding a chunk of the previous version is marked FULL
        // before the new chunk goes in, so ESP-IDF's active-page duplicate check never pairs them.
        int clash = p->state == PS_ACTIVE && page_has_other_chunk(h, p, ns, key, chunk_start);
#ifdef NVS_HOST_ESP_IDF_WRITES_ONLY
        clash = 0; // tests: write exactly as ESP-IDF does, to compare images byte for byte
#endif
        if (clash) {
            rc = page_mark_full(h, p);
            if (rc != NVS_OK) {
                break;
            }
        }
        uint32_t chunk_size = remaining > tailroom ? tailroom : remaining;
        remaining -= chunk_size;
        h->write_full = clash;
        rc = page_write_item(h, p, ns, NVS_TYPE_BLOB_DATA, key, data + offset, chunk_size,
                             (uint8_t)(chunk_start + count));
        h->write_full = 0;
        count++;
        if (rc != NVS_OK) {
            break;
        }
        if (remaining || clash || tailroom - chunk_size < ENTRY_SIZE) {
            if (p->state != PS_FULL) {
                rc = page_mark_full(h, p);
                if (rc != NVS_OK) {
                    break;
                }
            }
            rc = pm_request_new_page(h);
            if (rc != NVS_OK) {
                break;
            }
        }
        offset += chunk_size;
        if (!remaining) {
            uint8_t idx[8];
            memset(idx, 0xff, sizeof(idx));
            wr32(idx, size);
            idx[4] = count;
            idx[5] = chunk_start;
            rc = page_write_item(h, st_current(h), ns, NVS_TYPE_BLOB_IDX, key, idx, sizeof(idx), CHUNK_ANY);
            if (rc == NVS_ERR_PAGE_FULL) {
                rc = NVS_ERR_FAIL;
            }
            break;
        }
    }
    if (rc != NVS_OK && !h->failed) {
        // Drop the chunks written so far: the old value stays.
        for (uint32_t k = 0; k < h->nlist; k++) {
            page_t *pg = &h->pages[h->list[k]];
            for (uint32_t c = 0; c < count; c++) {
                page_erase_item(h, pg, ns, NVS_TYPE_BLOB_DATA, key, (uint8_t)(chunk_start + c), VER_ANY);
            }
        }
    }
    return rc;
}

static int st_cmp_multipage_blob(nvs_host_t *h, uint8_t ns, const char *key, const uint8_t *data, uint32_t size) {
    page_t *p;
    const uint8_t *it;
    int rc = st_find(h, ns, NVS_TYPE_BLOB_IDX, key, &p, &it, NULL, CHUNK_ANY, VER_ANY);
    if (rc != NVS_OK) {
        return rc;
    }
    uint8_t count = IT_DATA(it)[4], start = IT_DATA(it)[5];
    if (rd32(IT_DATA(it)) != size) {
        return NVS_ERR_CONTENT_DIFFERS;
    }
    uint32_t offset = 0;
    for (uint32_t c = 0; c < count; c++) {
        uint8_t chunk = (uint8_t)(start + c);
        if (st_find(h, ns, NVS_TYPE_BLOB_DATA, key, &p, &it, NULL, chunk, VER_ANY) != NVS_OK) {
            return NVS_ERR_CONTENT_DIFFERS;
        }
        uint32_t n = rd16(IT_DATA(it));
        if (n > size - offset) {
            return NVS_ERR_CONTENT_DIFFERS;
        }
        rc = page_cmp_item(h, p, ns, NVS_TYPE_BLOB_DATA, key, data + offset, n, chunk, VER_ANY);
        if (rc != NVS_OK) {
            return rc;
        }
        offset += n;
    }
    return offset == size ? NVS_OK : NVS_ERR_CONTENT_DIFFERS;
}

static int st_read_multipage_blob(nvs_host_t *h, uint8_t ns, const char *key, uint8_t *data, uint32_t size) {
    page_t *p;
    const uint8_t *it;
    int rc = st_find(h, ns, NVS_TYPE_BLOB_IDX, key, &p, &it, NULL, CHUNK_ANY, VER_ANY);
    if (rc != NVS_OK) {
        return rc;
    }
    uint8_t count = IT_DATA(it)[4], start = IT_DATA(it)[5];
    if (rd32(IT_DATA(it)) != size) {
        return NVS_ERR_FAIL;
    }
    uint32_t offset = 0;
    for (uint32_t c = 0; c < count; c++) {
        uint8_t chunk = (uint8_t)(start + c);
        rc = st_find(h, ns, NVS_TYPE_BLOB_DATA, key, &p, &it, NULL, chunk, VER_ANY);
        if (rc != NVS_OK) {
            break;
        }
        uint32_t n = rd16(IT_DATA(it));
        if (n > size - offset) {
            rc = NVS_ERR_INVALID_LENGTH;
            break;
        }
        rc = page_read_item(h, p, ns, NVS_TYPE_BLOB_DATA, key, data + offset, n, chunk, VER_ANY);
        if (rc != NVS_OK) {
            break;
        }
        offset += n;
    }
    if (rc == NVS_OK && offset != size) {
        rc = NVS_ERR_INVALID_LENGTH;
    }
    if (rc == NVS_ERR_NOT_FOUND || rc == NVS_ERR_INVALID_LENGTH) {
        // A chunk is missing or sizes disagree: the blob is unusable (as ESP-IDF does).
        st_erase_multipage_blob(h, ns, key, VER_ANY);
        rc = NVS_ERR_NOT_FOUND;
    }
    return rc;
}

static const uint8_t value_types[] = {
    NVS_TYPE_U8,  NVS_TYPE_U16, NVS_TYPE_U32, NVS_TYPE_U64,      NVS_TYPE_I8,   NVS_TYPE_I16,
    NVS_TYPE_I32, NVS_TYPE_I64, NVS_TYPE_STR, NVS_TYPE_BLOB_IDX, NVS_TYPE_BLOB,
};

// Storage::writeItem. type BLOB means a version 2 (multi-page) blob.
static int st_write_item(nvs_host_t *h, uint8_t ns, uint8_t type, const char *key, const void *data, uint32_t size) {
    page_t *fpage = NULL;
    const uint8_t *fit = NULL;
    uint8_t old[ENTRY_SIZE] = {0};
    uint32_t fseq = 0;
    int matched = 0;
    int rc;
    if (st_find(h, ns, type == NVS_TYPE_BLOB ? NVS_TYPE_BLOB_IDX : type, key, &fpage, &fit, NULL, CHUNK_ANY, VER_ANY)
        == NVS_OK) {
        matched = 1;
    } else {
        fpage = NULL;
        for (size_t t = 0; t < sizeof(value_types); t++) {
            uint8_t ct = value_types[t];
            if ((type == NVS_TYPE_BLOB && ct == NVS_TYPE_BLOB_IDX) || (type != NVS_TYPE_BLOB && ct == type)) {
                continue;
            }
            if (st_find(h, ns, ct, key, &fpage, &fit, NULL, CHUNK_ANY, VER_ANY) == NVS_OK) {
                break;
            }
            fpage = NULL;
        }
    }
    if (fpage) {
        memcpy(old, fit, ENTRY_SIZE);
        fseq = fpage->seq;
    }
    if (type == NVS_TYPE_BLOB) {
        uint8_t next = VER_0;
        if (matched) {
            if (st_cmp_multipage_blob(h, ns, key, (const uint8_t *)data, size) == NVS_OK) {
                return NVS_OK;
            }
            uint8_t prev = IT_DATA(old)[5];
            if (prev != VER_0 && prev != VER_1) {
                return NVS_ERR_FAIL;
            }
            next = prev == VER_1 ? VER_0 : VER_1;
        }
        rc = st_write_multipage_blob(h, ns, key, (const uint8_t *)data, size, next);
        if (rc == NVS_ERR_PAGE_FULL) {
            rc = NVS_ERR_NO_SPACE;
        }
        if (rc != NVS_OK) {
            return rc;
        }
    } else {
        if (matched && page_cmp_item(h, fpage, ns, type, key, data, size, CHUNK_ANY, VER_ANY) == NVS_OK) {
            return NVS_OK;
        }
        rc = page_write_item(h, st_current(h), ns, type, key, data, size, CHUNK_ANY);
// ESP-IDF tries one reclaim; retrying a few lets fragmented free space be gathered.
#ifdef NVS_HOST_ESP_IDF_WRITES_ONLY
        const uint32_t max_tries = 1;
#else
        const uint32_t max_tries = h->npages;
#endif
        for (uint32_t tries = 0; rc == NVS_ERR_PAGE_FULL && tries < max_tries; tries++) {
            page_t *p = st_current(h);
            if (p->state != PS_FULL) {
                rc = page_mark_full(h, p);
                if (rc != NVS_OK) {
                    return rc;
                }
            }
            rc = pm_request_new_page(h);
            if (rc != NVS_OK) {
                return rc;
            }
            rc = page_write_item(h, st_current(h), ns, type, key, data, size, CHUNK_ANY);
        }
        if (rc == NVS_ERR_PAGE_FULL) {
            return NVS_ERR_NO_SPACE;
        }
        if (rc != NVS_OK) {
            return rc;
        }
    }
    if (fpage == NULL) {
        return NVS_OK;
    }
    // Erase the previous value, wherever reclaiming may have moved it.
    if (IT_TYPE(old) == NVS_TYPE_BLOB_IDX) {
        rc = st_erase_multipage_blob(h, ns, key, IT_DATA(old)[5]);
        return rc == NVS_ERR_FLASH ? rc : NVS_OK;
    }
    if ((fpage->state != PS_ACTIVE && fpage->state != PS_FULL) || fpage->seq != fseq) {
        rc = st_find(h, ns, IT_TYPE(old), key, &fpage, &fit, NULL, CHUNK_ANY, VER_ANY);
        if (rc != NVS_OK) {
            return rc;
        }
    }
    rc = page_erase_item(h, fpage, ns, IT_TYPE(old), key, CHUNK_ANY, VER_ANY);
    return rc == NVS_ERR_FLASH ? rc : NVS_OK;
}

#ifndef NVS_HOST_ESP_IDF_LOAD_ONLY
// Extra repair (see the file comment): among live values with the same namespace and key
// (any type but blob chunks), keep the newest. Pages are in sequence order and entries in
// write order, so "newest" is the last one found.
typedef struct {
    uint8_t ns;
    char key[16];
    uint32_t order; // list position * ENTRY_COUNT + entry index
} dedupe_t;

static int dedupe_cmp(const void *a, const void *b) {
    const dedupe_t *x = (const dedupe_t *)a, *y = (const dedupe_t *)b;
    if (x->ns != y->ns) {
        return x->ns < y->ns ? -1 : 1;
    }
    int c = strncmp(x->key, y->key, NVS_NAME_MAX);
    if (c != 0) {
        return c;
    }
    return x->order < y->order ? -1 : (x->order > y->order ? 1 : 0);
}

static int st_dedupe(nvs_host_t *h) {
    dedupe_t *v = malloc(sizeof(dedupe_t) * (h->nlist * ENTRY_COUNT + 1));
    if (v == NULL) {
        return NVS_ERR_NO_MEM;
    }
    uint32_t n = 0;
    for (uint32_t k = 0; k < h->nlist; k++) {
        page_t *p = &h->pages[h->list[k]];
        uint32_t index = 0;
        const uint8_t *it;
        while (page_find(h, p, NS_ANY, NVS_TYPE_ANY, NULL, &index, &it, CHUNK_ANY, VER_ANY) == NVS_OK) {
            if (IT_NS(it) != NS_INDEX && IT_TYPE(it) != NVS_TYPE_BLOB_DATA) {
                v[n].ns = IT_NS(it);
                memcpy(v[n].key, IT_KEY(it), 16);
                v[n].order = k * ENTRY_COUNT + index;
                n++;
            }
            index += IT_SPAN(it);
        }
    }
    qsort(v, n, sizeof(dedupe_t), dedupe_cmp);
    int rc = NVS_OK;
    for (uint32_t i = 0; i + 1 < n && rc == NVS_OK; i++) {
        if (v[i].ns == v[i + 1].ns && strncmp(v[i].key, v[i + 1].key, NVS_NAME_MAX) == 0) {
            rc = page_erase_entry_span(h, &h->pages[h->list[v[i].order / ENTRY_COUNT]], v[i].order % ENTRY_COUNT);
        }
    }
    free(v);
    return rc;
}

#endif

// Storage::init's blob checks: drop indexes whose chunks do not add up, then chunks that
// belong to no index.
static int st_check_blobs(nvs_host_t *h) {
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t k = 0; k < h->nlist; k++) {
            page_t *p = &h->pages[h->list[k]];
            uint32_t index = 0;
            const uint8_t *it;
            while (page_find(h, p, NS_ANY, pass == 0 ? NVS_TYPE_BLOB_IDX : NVS_TYPE_BLOB_DATA, NULL, &index, &it,
                             CHUNK_ANY, VER_ANY)
                   == NVS_OK) {
                uint8_t item[ENTRY_SIZE];
                memcpy(item, it, ENTRY_SIZE);
                uint32_t span = IT_SPAN(item);
                if (pass == 0) {
                    // Sum the chunks of this index's version.
                    uint32_t size = 0, chunks = 0;
                    uint8_t start = IT_DATA(item)[5];
                    for (uint32_t m = 0; m < h->nlist; m++) {
                        page_t *q = &h->pages[h->list[m]];
                        uint32_t j = 0;
                        const uint8_t *c;
                        while (
                            page_find(h, q, IT_NS(item), NVS_TYPE_BLOB_DATA, IT_KEY(item), &j, &c, CHUNK_ANY, VER_ANY)
                            == NVS_OK) {
                            if (IT_CHUNK(c) >= start && IT_CHUNK(c) < (start == VER_0 ? VER_1 : VER_ANY)) {
                                size += rd16(IT_DATA(c));
                                chunks++;
                            }
                            j += IT_SPAN(c);
                        }
                    }
                    if (size != rd32(IT_DATA(item)) || chunks != IT_DATA(item)[4]) {
                        int rc = page_erase_entry_span(h, p, index);
                        if (rc != NVS_OK) {
                            return rc;
                        }
                    }
                } else {
                    // Is there an index whose chunk range holds this chunk?
                    int owned = 0;
                    for (uint32_t m = 0; m < h->nlist && !owned; m++) {
                        page_t *q = &h->pages[h->list[m]];
                        uint32_t j = 0;
                        const uint8_t *x;
                        while (page_find(h, q, IT_NS(item), NVS_TYPE_BLOB_IDX, IT_KEY(item), &j, &x, CHUNK_ANY, VER_ANY)
                               == NVS_OK) {
                            uint8_t start = IT_DATA(x)[5];
                            if (IT_CHUNK(item) >= start && IT_CHUNK(item) < start + IT_DATA(x)[4]) {
                                owned = 1;
                                break;
                            }
                            j += 1;
                        }
                    }
                    if (!owned) {
                        int rc = page_erase_entry_span(h, p, index);
                        if (rc != NVS_OK) {
                            return rc;
                        }
                    }
                }
                index += span;
            }
        }
    }
    return h->failed ? NVS_ERR_FLASH : NVS_OK;
}

static int st_init(nvs_host_t *h) {
    int rc = pm_load(h);
#ifndef NVS_HOST_ESP_IDF_LOAD_ONLY
    // Tests compile this out to check that ESP-IDF's loader alone finds old or new values.
    if (rc == NVS_OK) {
        rc = st_dedupe(h);
    }
#endif
    if (rc != NVS_OK) {
        return rc;
    }
    memset(h->ns_used, 0, sizeof(h->ns_used));
    for (uint32_t k = 0; k < h->nlist; k++) {
        page_t *p = &h->pages[h->list[k]];
        uint32_t index = 0;
        const uint8_t *it;
        while (page_find(h, p, NS_INDEX, NVS_TYPE_U8, NULL, &index, &it, CHUNK_ANY, VER_ANY) == NVS_OK) {
            uint8_t idx = IT_DATA(it)[0];
            h->ns_used[idx / 8] |= (uint8_t)(1u << (idx % 8));
            memcpy(h->ns_name[idx], IT_KEY(it), 16);
            h->ns_name[idx][15] = 0;
            index += IT_SPAN(it);
        }
    }
    h->ns_used[0] |= 1;
    h->ns_used[31] |= 0x80;
    return st_check_blobs(h);
}

static int ns_is_used(nvs_host_t *h, uint32_t i) {
    return (h->ns_used[i / 8] >> (i % 8)) & 1;
}

static int check_name(const char *name) {
    size_t n = name ? strlen(name) : 0;
    return n >= 1 && n <= NVS_NAME_MAX ? NVS_OK : NVS_ERR_BAD_NAME;
}

// Storage::createOrOpenNamespace
static int st_namespace(nvs_host_t *h, const char *name, int create, uint8_t *out) {
    int rc = check_name(name);
    if (rc != NVS_OK) {
        return rc;
    }
    for (uint32_t i = 1; i < 255; i++) {
        if (ns_is_used(h, i) && key_eq(name, h->ns_name[i])) {
            *out = (uint8_t)i;
            return NVS_OK;
        }
    }
    if (!create) {
        return NVS_ERR_NOT_FOUND;
    }
    uint32_t ns;
    for (ns = 1; ns < 255 && ns_is_used(h, ns); ns++) {
    }
    if (ns == 255) {
        return NVS_ERR_NO_SPACE;
    }
    uint8_t v = (uint8_t)ns;
    rc = st_write_item(h, NS_INDEX, NVS_TYPE_U8, name, &v, 1);
    if (rc != NVS_OK) {
        return rc;
    }
    h->ns_used[ns / 8] |= (uint8_t)(1u << (ns % 8));
    strncpy(h->ns_name[ns], name, 15);
    h->ns_name[ns][15] = 0;
    *out = v;
    return NVS_OK;
}

// ---- public API ----

int nvs_host_open(nvs_host_t **out, const nvs_flash_ops_t *ops, uint32_t size) {
    *out = NULL;
    if (size < 3 * NVS_PAGE_SIZE || size % NVS_PAGE_SIZE || size / NVS_PAGE_SIZE > 0xfff0) {
        return NVS_ERR_BAD_ARG;
    }
    nvs_host_t *h = calloc(1, sizeof(nvs_host_t));
    if (h == NULL) {
        return NVS_ERR_NO_MEM;
    }
    h->ops = *ops;
    h->size = size;
    h->npages = size / NVS_PAGE_SIZE;
    h->mem = malloc(size);
    h->pages = calloc(h->npages, sizeof(page_t));
    h->list = calloc(h->npages, sizeof(uint16_t));
    h->spare = calloc(h->npages, sizeof(uint16_t));
    int rc = NVS_ERR_NO_MEM;
    if (h->mem && h->pages && h->list && h->spare) {
        rc = ops->read(ops->ctx, 0, h->mem, size) == 0 ? NVS_OK : NVS_ERR_FLASH;
    }
    if (rc == NVS_OK) {
        rc = st_init(h);
    }
    if (rc == NVS_OK && h->failed) {
        rc = NVS_ERR_FLASH;
    }
    if (rc != NVS_OK) {
        nvs_host_close(h);
        return rc;
    }
    *out = h;
    return NVS_OK;
}

void nvs_host_close(nvs_host_t *h) {
    if (h) {
        free(h->mem);
        free(h->pages);
        free(h->list);
        free(h->spare);
        free(h);
    }
}

static int done(nvs_host_t *h, int rc) {
    return h->failed ? NVS_ERR_FLASH : rc;
}

int nvs_host_set(nvs_host_t *h, const char *ns, const char *key, uint8_t type, const void *data, size_t len) {
    if (h->failed) {
        return NVS_ERR_FLASH;
    }
    int rc = check_name(key);
    if (rc != NVS_OK) {
        return rc;
    }
    if (type == NVS_TYPE_STR) {
        if (len == 0 || ((const char *)data)[len - 1] != 0) {
            return NVS_ERR_BAD_ARG;
        }
        if (len > NVS_STR_MAX) {
            return NVS_ERR_VALUE_TOO_LONG;
        }
    } else if (type == NVS_TYPE_BLOB_DATA) {
        if (len > NVS_BLOB_MAX) {
            return NVS_ERR_VALUE_TOO_LONG;
        }
        type = NVS_TYPE_BLOB;
    } else {
        int ok = 0;
        for (size_t t = 0; t < 8; t++) {
            ok |= value_types[t] == type;
        }
        if (!ok || len != (size_t)(type & 0x0f)) {
            return NVS_ERR_BAD_ARG;
        }
    }
    uint8_t nsi;
    rc = st_namespace(h, ns, 1, &nsi);
    if (rc == NVS_OK) {
        rc = st_write_item(h, nsi, type, key, data, (uint32_t)len);
    }
    return done(h, rc);
}

int nvs_host_get(nvs_host_t *h, const char *ns, const char *key, uint8_t *type, void *buf, size_t *len) {
    if (h->failed) {
        return NVS_ERR_FLASH;
    }
    uint8_t nsi;
    page_t *p;
    const uint8_t *it;
    uint32_t index;
    int rc = check_name(key);
    if (rc == NVS_OK) {
        rc = check_name(ns);
    }
    if (rc != NVS_OK) {
        return rc;
    }
    if (h->memo_page != NULL && h->memo_gen == h->gen && key_eq(ns, h->memo_ns) && key_eq(key, h->memo_key)) {
        nsi = h->memo_nsi;
        p = h->memo_page;
        index = h->memo_index;
        it = entry_ptr(h, p, index);
    } else {
        rc = st_namespace(h, ns, 0, &nsi);
        if (rc != NVS_OK) {
            return rc;
        }
        rc = st_find(h, nsi, NVS_TYPE_ANY, key, &p, &it, &index, CHUNK_ANY, VER_ANY);
        if (rc == NVS_OK && (IT_TYPE(it) == NVS_TYPE_BLOB_DATA || IT_TYPE(it) == NVS_TYPE_BLOB_IDX)) {
            rc = st_find(h, nsi, NVS_TYPE_BLOB_IDX, key, &p, &it, &index, CHUNK_ANY, VER_ANY);
        }
        if (rc != NVS_OK) {
            return done(h, rc);
        }
        // (the finds above may have erased a damaged entry: remember the state after them)
        h->memo_gen = h->gen;
        h->memo_nsi = nsi;
        h->memo_page = p;
        h->memo_index = (uint16_t)index;
        strncpy(h->memo_ns, ns, 15);
        h->memo_ns[15] = 0;
        strncpy(h->memo_key, key, 15);
        h->memo_key[15] = 0;
    }
    uint8_t t = IT_TYPE(it);
    size_t size;
    if (t == NVS_TYPE_BLOB_DATA || t == NVS_TYPE_BLOB_IDX) {
        t = NVS_TYPE_BLOB_DATA;
        size = rd32(IT_DATA(it));
    } else if (is_varlen(t)) {
        size = rd16(IT_DATA(it));
    } else {
        size = t & 0x0f;
    }
    *type = t;
    if (buf == NULL) {
        *len = size;
        return NVS_OK;
    }
    if (*len < size) {
        *len = size;
        return NVS_ERR_BUF_TOO_SMALL;
    }
    *len = size;
    if (t == NVS_TYPE_BLOB_DATA) {
        rc = st_read_multipage_blob(h, nsi, key, (uint8_t *)buf, (uint32_t)size);
    } else if (is_varlen(t)) {
        rc = page_read_varlen(h, p, it, index, (uint8_t *)buf);
    } else {
        memcpy(buf, IT_DATA(it), size);
    }
    return done(h, rc);
}

int nvs_host_erase(nvs_host_t *h, const char *ns, const char *key) {
    if (h->failed) {
        return NVS_ERR_FLASH;
    }
    uint8_t nsi;
    int rc = check_name(key);
    if (rc == NVS_OK) {
        rc = st_namespace(h, ns, 0, &nsi);
    }
    if (rc != NVS_OK) {
        return rc;
    }
    page_t *p;
    const uint8_t *it;
    rc = st_find(h, nsi, NVS_TYPE_ANY, key, &p, &it, NULL, CHUNK_ANY, VER_ANY);
    if (rc == NVS_OK) {
        if (IT_TYPE(it) == NVS_TYPE_BLOB_DATA || IT_TYPE(it) == NVS_TYPE_BLOB_IDX) {
            rc = st_erase_multipage_blob(h, nsi, key, VER_ANY);
        } else {
            rc = page_erase_item(h, p, nsi, NVS_TYPE_ANY, key, CHUNK_ANY, VER_ANY);
        }
    }
    return done(h, rc);
}

int nvs_host_erase_namespace(nvs_host_t *h, const char *ns) {
    if (h->failed) {
        return NVS_ERR_FLASH;
    }
    uint8_t nsi;
    int rc = st_namespace(h, ns, 0, &nsi);
    if (rc != NVS_OK) {
        return rc;
    }
    for (uint32_t k = 0; k < h->nlist; k++) {
        page_t *p = &h->pages[h->list[k]];
        do {
            rc = page_erase_item(h, p, nsi, NVS_TYPE_ANY, NULL, CHUNK_ANY, VER_ANY);
        } while (rc == NVS_OK);
        if (rc != NVS_ERR_NOT_FOUND) {
            return done(h, rc);
        }
    }
    return done(h, NVS_OK);
}

int nvs_host_next(nvs_host_t *h, const char *ns, nvs_host_iter_t *it, char *ns_out, char *key_out, uint8_t *type) {
    if (h->failed) {
        return NVS_ERR_FLASH;
    }
    uint8_t nsi = NS_ANY;
    if (ns != NULL) {
        int rc = st_namespace(h, ns, 0, &nsi);
        if (rc != NVS_OK) {
            return rc;
        }
    }
    for (; it->page < h->nlist; it->page++, it->entry = 0) {
        page_t *p = &h->pages[h->list[it->page]];
        const uint8_t *item;
        uint32_t index = it->entry;
        while (page_find(h, p, nsi, NVS_TYPE_ANY, NULL, &index, &item, CHUNK_ANY, VER_ANY) == NVS_OK) {
            index += IT_SPAN(item);
            it->entry = index;
            uint8_t t = IT_TYPE(item);
            // As nvs_entry_next: values only, a multi-page blob once (its first chunk);
            // old-format blobs are listed too.
            if (IT_NS(item) == NS_INDEX || t == NVS_TYPE_BLOB_IDX
                || (t == NVS_TYPE_BLOB_DATA && IT_CHUNK(item) != VER_0 && IT_CHUNK(item) != VER_1)) {
                continue;
            }
            memcpy(key_out, IT_KEY(item), 16);
            key_out[15] = 0;
            memcpy(ns_out, h->ns_name[IT_NS(item)], 16);
            *type = t;
            return NVS_OK;
        }
    }
    return NVS_ERR_NOT_FOUND;
}
