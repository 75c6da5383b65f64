// nvs_storage: namespaces, typed items and multi-page blobs over the pages (ESP-IDF's
// nvs_storage.cpp): what the public API in nvs_host.c calls.
//
// Private to the host NVS engine (nvs_*.c).
#ifndef IOTUTILS_NVS_STORAGE_H
#define IOTUTILS_NVS_STORAGE_H

#include "nvs_page.h"

// Storage::init: load the pages, repair, read the namespace table, drop broken blobs.
int nvs_st_init(nvs_host_t *h);
// The index of namespace `name` (created when `create` and missing).
int nvs_st_namespace(nvs_host_t *h, const char *name, int create, uint8_t *out);
// The first matching item in page order: its page, header and (if index) entry.
int nvs_st_find(nvs_host_t *h, uint8_t ns, uint8_t type, const char *key, page_t **page, const uint8_t **it,
                uint32_t *index, uint8_t chunk, uint8_t chunk_start);
// Storage::writeItem: type NVS_TYPE_BLOB means a version 2 (multi-page) blob.
int nvs_st_write_item(nvs_host_t *h, uint8_t ns, uint8_t type, const char *key, const void *data, uint32_t size);
int nvs_st_read_multipage_blob(nvs_host_t *h, uint8_t ns, const char *key, uint8_t *data, uint32_t size);
// Erase a multi-page blob's index and chunks of version chunk_start (VER_ANY: both).
int nvs_st_erase_multipage_blob(nvs_host_t *h, uint8_t ns, const char *key, uint8_t chunk_start);

#endif // IOTUTILS_NVS_STORAGE_H
