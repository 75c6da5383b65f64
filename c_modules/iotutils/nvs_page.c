// nvs_page: one page of ESP-IDF's NVS, ported from v5.5's nvs_page.cpp: header and state
// changes, the entry state table, writing, finding (through the hash list), reading, comparing
// and erasing items, copying a page's items, and loading a page with ESP-IDF's repairs.
//
// Separate from the page manager and storage because a page never looks at another page: this
// is the only file that writes the flash (through the RAM mirror, in ESP-IDF's order).
#include "nvs_page.h"

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

// ---- page ----

int nvs_page_alter_state(nvs_host_t *h, page_t *p, uint32_t state) {
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

int nvs_page_write_item(nvs_host_t *h, page_t *p, uint8_t ns, uint8_t type, const char *key, const void *data,
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
    nvs_item_init(it, ns, type, (uint8_t)entries, key, chunk);
    if (!is_varlen(type)) {
        memcpy(IT_DATA(it), data, size);
        wr32(it + 4, nvs_item_crc(it));
        return page_write_entry(h, p, it);
    }
    const uint8_t *src = (const uint8_t *)data;
    wr16(IT_DATA(it), size);
    wr16(IT_DATA(it) + 2, 0xffff);
    wr32(IT_DATA(it) + 4, nvs_host_crc32(0xffffffffu, src, size));
    wr32(it + 4, nvs_item_crc(it));
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

int nvs_page_erase_entry_span(nvs_host_t *h, page_t *p, uint32_t index) {
    uint32_t span = 1;
    int rc;
    if (es_get(h, p, index) == ES_WRITTEN) {
        const uint8_t *it = entry_ptr(h, p, index);
        if (!nvs_item_consistent(it, index)) {
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

// The items of a page as Page::findItem walks them: header entries that are WRITTEN and consistent.
static void page_hash_build(nvs_host_t *h, page_t *p) {
    memset(p->hash, 0, sizeof(p->hash));
    for (uint32_t i = 0; i < ENTRY_COUNT;) {
        const uint8_t *it = entry_ptr(h, p, i);
        if (es_get(h, p, i) != ES_WRITTEN || !nvs_item_consistent(it, i)) {
            i++;
            continue;
        }
        p->hash[i] = nvs_item_hash(IT_NS(it), IT_KEY(it), IT_CHUNK(it));
        i += is_varlen(IT_TYPE(it)) ? IT_SPAN(it) : 1u;
    }
    p->hashed = 1;
}

// The first entry at or after start whose hash matches, or ENTRY_COUNT (HashList::find).
static uint32_t page_hash_find(nvs_host_t *h, page_t *p, uint32_t start, uint8_t ns, const char *key, uint8_t chunk) {
    if (!p->hashed) {
        page_hash_build(h, p);
    }
    uint32_t x = nvs_item_hash(ns, key, chunk);
    uint32_t end = p->next_free < ENTRY_COUNT ? p->next_free : ENTRY_COUNT;
    for (uint32_t i = start; i < end; i++) {
        if (p->hash[i] == x) {
            return i;
        }
    }
    return ENTRY_COUNT;
}

// Page::findItem. *index: where to start, and where the item was found.
int nvs_page_find(nvs_host_t *h, page_t *p, uint8_t ns, uint8_t type, const char *key, uint32_t *index,
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
        if (!nvs_item_consistent(it, i)) {
            int rc = nvs_page_erase_entry_span(h, p, i);
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
    return nvs_page_find(h, p, ns, type, key, index, out, chunk, chunk_start);
}

int nvs_page_erase_item(nvs_host_t *h, page_t *p, uint8_t ns, uint8_t type, const char *key, uint8_t chunk,
                        uint8_t chunk_start) {
    uint32_t index;
    const uint8_t *it;
    int rc = page_find_simple(h, p, ns, type, key, &index, &it, chunk, chunk_start);
    if (rc != NVS_OK) {
        return rc;
    }
    return nvs_page_erase_entry_span(h, p, index);
}

// Copy a variable-length item's data out of its data entries; a CRC mismatch erases it.
int nvs_page_read_varlen(nvs_host_t *h, page_t *p, const uint8_t *it, uint32_t index, uint8_t *dst) {
    uint32_t size = rd16(IT_DATA(it));
    memcpy(dst, entry_ptr(h, p, index + 1), size);
    if (nvs_host_crc32(0xffffffffu, dst, size) != rd32(IT_DATA(it) + 4)) {
        int rc = nvs_page_erase_entry_span(h, p, index);
        return rc != NVS_OK ? rc : NVS_ERR_NOT_FOUND;
    }
    return NVS_OK;
}

int nvs_page_read_item(nvs_host_t *h, page_t *p, uint8_t ns, uint8_t type, const char *key, void *data, uint32_t size,
                       uint8_t chunk, uint8_t chunk_start) {
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
    return nvs_page_read_varlen(h, p, it, index, (uint8_t *)data);
}

int nvs_page_cmp_item(nvs_host_t *h, page_t *p, uint8_t ns, uint8_t type, const char *key, const void *data,
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

int nvs_page_erase(nvs_host_t *h, page_t *p) {
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

int nvs_page_copy_items(nvs_host_t *h, page_t *src, page_t *dst) {
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

uint32_t nvs_page_tailroom(const page_t *p) {
    if (p->state == PS_UNINIT) {
        return CHUNK_MAX;
    }
    if (p->state == PS_FULL) {
        return 0;
    }
    return p->next_free < ENTRY_COUNT - 1 ? (ENTRY_COUNT - p->next_free - 1) * ENTRY_SIZE : 0;
}

int nvs_page_mark_full(nvs_host_t *h, page_t *p) {
    if (p->state != PS_ACTIVE) {
        return NVS_ERR_FAIL;
    }
    return nvs_page_alter_state(h, p, PS_FULL);
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
                rc = nvs_page_erase_entry_span(h, p, i);
                if (rc != NVS_OK) {
                    p->state = PS_INVALID;
                    return rc;
                }
                continue;
            }
            last = i;
            it = entry_ptr(h, p, i);
            if (!nvs_item_consistent(it, i)) {
                rc = nvs_page_erase_entry_span(h, p, i);
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
                if (!nvs_item_consistent(o, j)) {
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
                    nvs_page_erase_entry_span(h, p, i);
                    continue;
                }
            }
            if (dup != NO_ENTRY) {
                nvs_page_erase_entry_span(h, p, dup);
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
                rc = nvs_page_erase_entry_span(h, p, index);
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
            if (!nvs_item_consistent(it, i)) {
                rc = nvs_page_erase_entry_span(h, p, i);
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
                        nvs_page_erase_entry_span(h, p, i);
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
int nvs_page_load(nvs_host_t *h, page_t *p, uint32_t sector) {
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

int nvs_page_has_seq(const page_t *p) {
    return p->state != PS_UNINIT && p->state != PS_INVALID && p->state != PS_CORRUPT;
}
