// nvs_page: one 4096-byte page of ESP-IDF's NVS (nvs_page.cpp): its header and state, the
// 2-bit entry state table, and items written, found, read, compared and erased on it.
//
// Private to the host NVS engine (nvs_*.c). Also holds `struct nvs_host`, the state every part
// of the engine works on: the page code owns the mirror and page array, nvs_pagemanager.c the
// page order and spare pages, nvs_storage.c / nvs_host.c the namespaces and the read memo.
#ifndef IOTUTILS_NVS_PAGE_H
#define IOTUTILS_NVS_PAGE_H

#include "nvs_item.h"

#define TABLE_OFFSET   (32u) // entry state table
#define DATA_OFFSET    (64u) // first entry
#define NO_ENTRY       (0xffffu)
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

typedef struct {
    uint32_t base; // offset of the page in the partition
    uint32_t state;
    uint32_t seq;
    uint16_t next_free;
    uint16_t first_used;
    uint16_t used;
    uint16_t erased;
    uint16_t hashed;            // hash[] matches the mirror (cleared by every write to the page)
    uint32_t hash[ENTRY_COUNT]; // item header at i: nvs_item_hash(ns, key, chunk); else 0
} page_t;

struct nvs_host {
    // the flash and its mirror (nvs_page.c)
    nvs_flash_ops_t ops;
    uint8_t *mem; // mirror of the partition
    uint32_t size;
    uint32_t npages;
    page_t *pages;
    int failed;     // a flash op failed: the mirror may not match the flash any more
    int write_full; // let nvs_page_write_item fill a page just marked FULL (blob chunks)
    uint32_t gen;   // bumped by every change to the mirror
    // page order (nvs_pagemanager.c)
    uint16_t *list; // pages in use, by sequence number (ESP-IDF's mPageList)
    uint32_t nlist;
    uint16_t *spare; // free pages, taken from the front (mFreePageList)
    uint32_t nspare;
    uint32_t seq; // next sequence number
    // The last item nvs_host_get found, while gen stays the same: kvstore asks for the type and
    // size first, then the value (up to four lookups of one key per read).
    uint32_t memo_gen;
    uint8_t memo_nsi;
    uint16_t memo_index;
    page_t *memo_page;
    char memo_ns[16];
    char memo_key[16];
    // namespaces (nvs_storage.c)
    uint8_t ns_used[32];
    char ns_name[256][16];
};

static inline const uint8_t *entry_ptr(nvs_host_t *h, const page_t *p, uint32_t i) {
    return h->mem + p->base + DATA_OFFSET + i * ENTRY_SIZE;
}

static inline uint32_t es_get(nvs_host_t *h, const page_t *p, uint32_t i) {
    return (h->mem[p->base + TABLE_OFFSET + i / 4] >> ((i % 4) * 2)) & 3u;
}

// ---- nvs_page.c ----
// Each returns NVS_OK or an NVS_ERR_* code; a failed flash write leaves the page PS_INVALID.

int nvs_page_load(nvs_host_t *h, page_t *p, uint32_t sector); // Page::load, with its repairs
int nvs_page_has_seq(const page_t *p);                        // in use (has a sequence number)
int nvs_page_alter_state(nvs_host_t *h, page_t *p, uint32_t state);
int nvs_page_mark_full(nvs_host_t *h, page_t *p);
int nvs_page_erase(nvs_host_t *h, page_t *p);
int nvs_page_copy_items(nvs_host_t *h, page_t *src, page_t *dst);
uint32_t nvs_page_tailroom(const page_t *p); // data bytes a new item can still take

// Page::findItem. *index: where to start, and where the item was found; *out: its header.
int nvs_page_find(nvs_host_t *h, page_t *p, uint8_t ns, uint8_t type, const char *key, uint32_t *index,
                  const uint8_t **out, uint8_t chunk, uint8_t chunk_start);
int nvs_page_write_item(nvs_host_t *h, page_t *p, uint8_t ns, uint8_t type, const char *key, const void *data,
                        uint32_t size, uint8_t chunk);
int nvs_page_read_item(nvs_host_t *h, page_t *p, uint8_t ns, uint8_t type, const char *key, void *data, uint32_t size,
                       uint8_t chunk, uint8_t chunk_start);
// A string/blob chunk's data, checked against its CRC (a mismatch erases the item: NOT_FOUND).
int nvs_page_read_varlen(nvs_host_t *h, page_t *p, const uint8_t *it, uint32_t index, uint8_t *dst);
int nvs_page_cmp_item(nvs_host_t *h, page_t *p, uint8_t ns, uint8_t type, const char *key, const void *data,
                      uint32_t size, uint8_t chunk, uint8_t chunk_start);
int nvs_page_erase_item(nvs_host_t *h, page_t *p, uint8_t ns, uint8_t type, const char *key, uint8_t chunk,
                        uint8_t chunk_start);
int nvs_page_erase_entry_span(nvs_host_t *h, page_t *p, uint32_t index);

#endif // IOTUTILS_NVS_PAGE_H
