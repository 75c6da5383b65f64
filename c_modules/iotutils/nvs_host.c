// nvs_host: ESP-IDF's NVS on-flash format over a caller-supplied flash, for the host firmware:
// the public API of nvs_host.h (ESP-IDF's nvs_api.cpp), ported from ESP-IDF v5.5's
// components/nvs_flash/src and split as ESP-IDF splits it:
//   nvs_item.c         one 32-byte entry: layout, CRC, consistency, hash   (nvs_types.cpp)
//   nvs_page.c         one page: header, entry states, items on it         (nvs_page.cpp)
//   nvs_pagemanager.c  page order, free pages, reclaiming a page           (nvs_pagemanager.cpp)
//   nvs_storage.c      namespaces, items across pages, multi-page blobs    (nvs_storage.cpp)
// so each part reads side by side with its ESP-IDF original. Deviations from ESP-IDF: nvs_storage.c.
//
// The partition is mirrored in RAM (host only): reads come from the mirror, every change is
// written to the mirror and to the flash in the same order ESP-IDF writes it, so a power cut
// leaves exactly the states ESP-IDF's loader is built to repair. The in-memory per-page
// bookkeeping (next free entry, counters) is the same as ESP-IDF's; so is the hash list that
// lets lookups skip to the entry whose (namespace, key, chunk) hash matches (page_t.hash, rebuilt
// from the mirror after any write to the page).
#include "nvs_host.h"

#include <stdlib.h>
#include <string.h>

#include "nvs_storage.h"

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
        rc = nvs_st_init(h);
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
        if (!is_int_type(type) || len != (size_t)(type & 0x0f)) {
            return NVS_ERR_BAD_ARG;
        }
    }
    uint8_t nsi;
    rc = nvs_st_namespace(h, ns, 1, &nsi);
    if (rc == NVS_OK) {
        rc = nvs_st_write_item(h, nsi, type, key, data, (uint32_t)len);
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
        rc = nvs_st_namespace(h, ns, 0, &nsi);
        if (rc != NVS_OK) {
            return rc;
        }
        rc = nvs_st_find(h, nsi, NVS_TYPE_ANY, key, &p, &it, &index, CHUNK_ANY, VER_ANY);
        if (rc == NVS_OK && (IT_TYPE(it) == NVS_TYPE_BLOB_DATA || IT_TYPE(it) == NVS_TYPE_BLOB_IDX)) {
            rc = nvs_st_find(h, nsi, NVS_TYPE_BLOB_IDX, key, &p, &it, &index, CHUNK_ANY, VER_ANY);
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
        rc = nvs_st_read_multipage_blob(h, nsi, key, (uint8_t *)buf, (uint32_t)size);
    } else if (is_varlen(t)) {
        rc = nvs_page_read_varlen(h, p, it, index, (uint8_t *)buf);
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
        rc = nvs_st_namespace(h, ns, 0, &nsi);
    }
    if (rc != NVS_OK) {
        return rc;
    }
    page_t *p;
    const uint8_t *it;
    rc = nvs_st_find(h, nsi, NVS_TYPE_ANY, key, &p, &it, NULL, CHUNK_ANY, VER_ANY);
    if (rc == NVS_OK) {
        if (IT_TYPE(it) == NVS_TYPE_BLOB_DATA || IT_TYPE(it) == NVS_TYPE_BLOB_IDX) {
            rc = nvs_st_erase_multipage_blob(h, nsi, key, VER_ANY);
        } else {
            rc = nvs_page_erase_item(h, p, nsi, NVS_TYPE_ANY, key, CHUNK_ANY, VER_ANY);
        }
    }
    return done(h, rc);
}

int nvs_host_erase_namespace(nvs_host_t *h, const char *ns) {
    if (h->failed) {
        return NVS_ERR_FLASH;
    }
    uint8_t nsi;
    int rc = nvs_st_namespace(h, ns, 0, &nsi);
    if (rc != NVS_OK) {
        return rc;
    }
    for (uint32_t k = 0; k < h->nlist; k++) {
        page_t *p = &h->pages[h->list[k]];
        do {
            rc = nvs_page_erase_item(h, p, nsi, NVS_TYPE_ANY, NULL, CHUNK_ANY, VER_ANY);
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
        int rc = nvs_st_namespace(h, ns, 0, &nsi);
        if (rc != NVS_OK) {
            return rc;
        }
    }
    for (; it->page < h->nlist; it->page++, it->entry = 0) {
        page_t *p = &h->pages[h->list[it->page]];
        const uint8_t *item;
        uint32_t index = it->entry;
        while (nvs_page_find(h, p, nsi, NVS_TYPE_ANY, NULL, &index, &item, CHUNK_ANY, VER_ANY) == NVS_OK) {
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
