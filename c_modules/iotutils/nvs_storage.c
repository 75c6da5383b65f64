// nvs_storage: namespaces, typed items and multi-page blobs, ported from ESP-IDF v5.5's
// nvs_storage.cpp: finding an item across pages, writing a value then erasing the old one,
// blobs split into chunks plus an index (two versions, so the old value survives until the new
// one is complete), and Storage::init's checks after loading.
//
// Separate from the pages and the page manager: this is the only part that knows what an item
// means (a namespace entry, a value, a blob chunk or index), and where this engine deviates.
//
// Deviations, all on the safe side of ESP-IDF's own behaviour (its loader accepts the result):
// - A new blob chunk that goes to a page holding a chunk of the blob's previous version is
//   written after marking that page FULL. On an ACTIVE page, ESP-IDF's loader would take the
//   new chunk (if power were cut right after it) for a newer duplicate of the older chunk and
//   erase the older one, losing the old value before the new one is complete; it does not run
//   that check on FULL pages, and reads FULL pages' complete items as usual.
// - After loading, a value left twice by an interrupted overwrite in a way ESP-IDF's loader
//   misses (old and new of different types, on different pages) keeps only the newer one.
// - A value that still does not fit after reclaiming one page gets further reclaims (one per
//   page at most) before NVS_ERR_NO_SPACE; ESP-IDF stops after one.
// Tests build without them (NVS_HOST_ESP_IDF_WRITES_ONLY, NVS_HOST_ESP_IDF_LOAD_ONLY) to
// compare with ESP-IDF's own writer and loader.
// Not done: ESP-IDF >= 6 also zeroes erased entries ("purge"); v5.5 does not, nor does this.
#include "nvs_storage.h"

#include <stdlib.h>

#include "nvs_pagemanager.h"

static page_t *st_current(nvs_host_t *h) {
    return nvs_pm_back(h);
}

int nvs_st_find(nvs_host_t *h, uint8_t ns, uint8_t type, const char *key, page_t **page, const uint8_t **it,
                uint32_t *index, uint8_t chunk, uint8_t chunk_start) {
    for (uint32_t k = 0; k < h->nlist; k++) {
        page_t *p = &h->pages[h->list[k]];
        uint32_t i = 0;
        if (nvs_page_find(h, p, ns, type, key, &i, it, chunk, chunk_start) == NVS_OK) {
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

int nvs_st_erase_multipage_blob(nvs_host_t *h, uint8_t ns, const char *key, uint8_t chunk_start) {
    page_t *p;
    const uint8_t *it;
    int rc = nvs_st_find(h, ns, NVS_TYPE_BLOB_IDX, key, &p, &it, NULL, CHUNK_ANY, chunk_start);
    if (rc != NVS_OK) {
        return rc;
    }
    rc = nvs_page_erase_item(h, p, ns, NVS_TYPE_BLOB_IDX, key, CHUNK_ANY, chunk_start);
    if (rc != NVS_OK) {
        return rc;
    }
    if (chunk_start == VER_ANY) {
        // A dirty partition may hold both versions' indexes.
        if (nvs_st_find(h, ns, NVS_TYPE_BLOB_IDX, key, &p, &it, NULL, CHUNK_ANY, chunk_start) == NVS_OK) {
            rc = nvs_page_erase_item(h, p, ns, NVS_TYPE_BLOB_IDX, key, CHUNK_ANY, chunk_start);
            if (rc != NVS_OK) {
                return rc;
            }
        }
    }
    for (uint32_t k = 0; k < h->nlist; k++) {
        page_t *pg = &h->pages[h->list[k]];
        uint32_t index = 0;
        while (index < ENTRY_COUNT
               && nvs_page_find(h, pg, ns, NVS_TYPE_BLOB_DATA, key, &index, &it, CHUNK_ANY, VER_ANY) == NVS_OK) {
            uint32_t span = IT_SPAN(it);
            if (chunk_in_version(IT_CHUNK(it), chunk_start)) {
                rc = nvs_page_erase_entry_span(h, pg, index);
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
static int st_has_other_chunk(nvs_host_t *h, page_t *p, uint8_t ns, const char *key, uint8_t start) {
    uint32_t index = 0;
    const uint8_t *it;
    while (index < ENTRY_COUNT
           && nvs_page_find(h, p, ns, NVS_TYPE_BLOB_DATA, key, &index, &it, CHUNK_ANY, VER_ANY) == NVS_OK) {
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
        uint32_t tailroom = nvs_page_tailroom(p);
        if (count == 0 && ((tailroom < size) || (tailroom == 0 && size == 0)) && tailroom < CHUNK_MAX / 10) {
            // First chunk and too little room here: start on a new page.
            if (p->state != PS_FULL) {
                rc = nvs_page_mark_full(h, p);
                if (rc != NVS_OK) {
                    break;
                }
            }
            rc = nvs_pm_request_new_page(h);
            if (rc != NVS_OK) {
                break;
            }
            if (nvs_page_tailroom(st_current(h)) == tailroom) {
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
        int clash = p->state == PS_ACTIVE && st_has_other_chunk(h, p, ns, key, chunk_start);
#ifdef NVS_HOST_ESP_IDF_WRITES_ONLY
        clash = 0; // tests: write exactly as ESP-IDF does, to compare images byte for byte
#endif
        if (clash) {
            rc = nvs_page_mark_full(h, p);
            if (rc != NVS_OK) {
                break;
            }
        }
        uint32_t chunk_size = remaining > tailroom ? tailroom : remaining;
        remaining -= chunk_size;
        h->write_full = clash;
        rc = nvs_page_write_item(h, p, ns, NVS_TYPE_BLOB_DATA, key, data + offset, chunk_size,
                                 (uint8_t)(chunk_start + count));
        h->write_full = 0;
        count++;
        if (rc != NVS_OK) {
            break;
        }
        if (remaining || clash || tailroom - chunk_size < ENTRY_SIZE) {
            if (p->state != PS_FULL) {
                rc = nvs_page_mark_full(h, p);
                if (rc != NVS_OK) {
                    break;
                }
            }
            rc = nvs_pm_request_new_page(h);
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
            rc = nvs_page_write_item(h, st_current(h), ns, NVS_TYPE_BLOB_IDX, key, idx, sizeof(idx), CHUNK_ANY);
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
                nvs_page_erase_item(h, pg, ns, NVS_TYPE_BLOB_DATA, key, (uint8_t)(chunk_start + c), VER_ANY);
            }
        }
    }
    return rc;
}

static int st_cmp_multipage_blob(nvs_host_t *h, uint8_t ns, const char *key, const uint8_t *data, uint32_t size) {
    page_t *p;
    const uint8_t *it;
    int rc = nvs_st_find(h, ns, NVS_TYPE_BLOB_IDX, key, &p, &it, NULL, CHUNK_ANY, VER_ANY);
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
        if (nvs_st_find(h, ns, NVS_TYPE_BLOB_DATA, key, &p, &it, NULL, chunk, VER_ANY) != NVS_OK) {
            return NVS_ERR_CONTENT_DIFFERS;
        }
        uint32_t n = rd16(IT_DATA(it));
        if (n > size - offset) {
            return NVS_ERR_CONTENT_DIFFERS;
        }
        rc = nvs_page_cmp_item(h, p, ns, NVS_TYPE_BLOB_DATA, key, data + offset, n, chunk, VER_ANY);
        if (rc != NVS_OK) {
            return rc;
        }
        offset += n;
    }
    return offset == size ? NVS_OK : NVS_ERR_CONTENT_DIFFERS;
}

int nvs_st_read_multipage_blob(nvs_host_t *h, uint8_t ns, const char *key, uint8_t *data, uint32_t size) {
    page_t *p;
    const uint8_t *it;
    int rc = nvs_st_find(h, ns, NVS_TYPE_BLOB_IDX, key, &p, &it, NULL, CHUNK_ANY, VER_ANY);
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
        rc = nvs_st_find(h, ns, NVS_TYPE_BLOB_DATA, key, &p, &it, NULL, chunk, VER_ANY);
        if (rc != NVS_OK) {
            break;
        }
        uint32_t n = rd16(IT_DATA(it));
        if (n > size - offset) {
            rc = NVS_ERR_INVALID_LENGTH;
            break;
        }
        rc = nvs_page_read_item(h, p, ns, NVS_TYPE_BLOB_DATA, key, data + offset, n, chunk, VER_ANY);
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
        nvs_st_erase_multipage_blob(h, ns, key, VER_ANY);
        rc = NVS_ERR_NOT_FOUND;
    }
    return rc;
}

static const uint8_t value_types[] = {
    NVS_TYPE_U8,  NVS_TYPE_U16, NVS_TYPE_U32, NVS_TYPE_U64,      NVS_TYPE_I8,   NVS_TYPE_I16,
    NVS_TYPE_I32, NVS_TYPE_I64, NVS_TYPE_STR, NVS_TYPE_BLOB_IDX, NVS_TYPE_BLOB,
};

// Storage::writeItem. type BLOB means a version 2 (multi-page) blob.
int nvs_st_write_item(nvs_host_t *h, uint8_t ns, uint8_t type, const char *key, const void *data, uint32_t size) {
    page_t *fpage = NULL;
    const uint8_t *fit = NULL;
    uint8_t old[ENTRY_SIZE] = {0};
    uint32_t fseq = 0;
    int matched = 0;
    int rc;
    if (nvs_st_find(h, ns, type == NVS_TYPE_BLOB ? NVS_TYPE_BLOB_IDX : type, key, &fpage, &fit, NULL, CHUNK_ANY,
                    VER_ANY)
        == NVS_OK) {
        matched = 1;
    } else {
        fpage = NULL;
        for (size_t t = 0; t < sizeof(value_types); t++) {
            uint8_t ct = value_types[t];
            if ((type == NVS_TYPE_BLOB && ct == NVS_TYPE_BLOB_IDX) || (type != NVS_TYPE_BLOB && ct == type)) {
                continue;
            }
            if (nvs_st_find(h, ns, ct, key, &fpage, &fit, NULL, CHUNK_ANY, VER_ANY) == NVS_OK) {
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
        if (matched && nvs_page_cmp_item(h, fpage, ns, type, key, data, size, CHUNK_ANY, VER_ANY) == NVS_OK) {
            return NVS_OK;
        }
        rc = nvs_page_write_item(h, st_current(h), ns, type, key, data, size, CHUNK_ANY);
// ESP-IDF tries one reclaim; retrying a few lets fragmented free space be gathered.
#ifdef NVS_HOST_ESP_IDF_WRITES_ONLY
        const uint32_t max_tries = 1;
#else
        const uint32_t max_tries = h->npages;
#endif
        for (uint32_t tries = 0; rc == NVS_ERR_PAGE_FULL && tries < max_tries; tries++) {
            page_t *p = st_current(h);
            if (p->state != PS_FULL) {
                rc = nvs_page_mark_full(h, p);
                if (rc != NVS_OK) {
                    return rc;
                }
            }
            rc = nvs_pm_request_new_page(h);
            if (rc != NVS_OK) {
                return rc;
            }
            rc = nvs_page_write_item(h, st_current(h), ns, type, key, data, size, CHUNK_ANY);
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
        rc = nvs_st_erase_multipage_blob(h, ns, key, IT_DATA(old)[5]);
        return rc == NVS_ERR_FLASH ? rc : NVS_OK;
    }
    if ((fpage->state != PS_ACTIVE && fpage->state != PS_FULL) || fpage->seq != fseq) {
        rc = nvs_st_find(h, ns, IT_TYPE(old), key, &fpage, &fit, NULL, CHUNK_ANY, VER_ANY);
        if (rc != NVS_OK) {
            return rc;
        }
    }
    rc = nvs_page_erase_item(h, fpage, ns, IT_TYPE(old), key, CHUNK_ANY, VER_ANY);
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
        while (nvs_page_find(h, p, NS_ANY, NVS_TYPE_ANY, NULL, &index, &it, CHUNK_ANY, VER_ANY) == NVS_OK) {
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
            rc = nvs_page_erase_entry_span(h, &h->pages[h->list[v[i].order / ENTRY_COUNT]], v[i].order % ENTRY_COUNT);
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
            while (nvs_page_find(h, p, NS_ANY, pass == 0 ? NVS_TYPE_BLOB_IDX : NVS_TYPE_BLOB_DATA, NULL, &index, &it,
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
                        while (nvs_page_find(h, q, IT_NS(item), NVS_TYPE_BLOB_DATA, IT_KEY(item), &j, &c, CHUNK_ANY,
                                             VER_ANY)
                               == NVS_OK) {
                            if (IT_CHUNK(c) >= start && IT_CHUNK(c) < (start == VER_0 ? VER_1 : VER_ANY)) {
                                size += rd16(IT_DATA(c));
                                chunks++;
                            }
                            j += IT_SPAN(c);
                        }
                    }
                    if (size != rd32(IT_DATA(item)) || chunks != IT_DATA(item)[4]) {
                        int rc = nvs_page_erase_entry_span(h, p, index);
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
                        while (nvs_page_find(h, q, IT_NS(item), NVS_TYPE_BLOB_IDX, IT_KEY(item), &j, &x, CHUNK_ANY,
                                             VER_ANY)
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
                        int rc = nvs_page_erase_entry_span(h, p, index);
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

int nvs_st_init(nvs_host_t *h) {
    int rc = nvs_pm_load(h);
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
        while (nvs_page_find(h, p, NS_INDEX, NVS_TYPE_U8, NULL, &index, &it, CHUNK_ANY, VER_ANY) == NVS_OK) {
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

// Storage::createOrOpenNamespace
int nvs_st_namespace(nvs_host_t *h, const char *name, int create, uint8_t *out) {
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
    rc = nvs_st_write_item(h, NS_INDEX, NVS_TYPE_U8, name, &v, 1);
    if (rc != NVS_OK) {
        return rc;
    }
    h->ns_used[ns / 8] |= (uint8_t)(1u << (ns % 8));
    strncpy(h->ns_name[ns], name, 15);
    h->ns_name[ns][15] = 0;
    *out = v;
    return NVS_OK;
}
