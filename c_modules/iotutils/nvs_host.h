// nvs_host: ESP-IDF's NVS on-flash format (pages, 32-byte entries, CRC32s, multi-page blobs)
// over a caller-supplied flash, for the host firmware. Follows ESP-IDF v5.5's nvs_page.cpp,
// nvs_pagemanager.cpp and nvs_storage.cpp, so partition images made by esp-idf-nvs-partition-gen
// or dumped from a board read back, and images written here load on a board.
//
// Libc only. Not used on the ESP32 itself (ESP-IDF's own NVS is used there).
#ifndef IOTUTILS_NVS_HOST_H
#define IOTUTILS_NVS_HOST_H

#include <stddef.h>
#include <stdint.h>

// Result codes (0 = success, negative = failure).
#define NVS_OK                  (0)
#define NVS_ERR_NOT_FOUND       (-1) // no such key / namespace
#define NVS_ERR_NO_SPACE        (-2) // partition full even after reclaiming pages
#define NVS_ERR_VALUE_TOO_LONG  (-3) // above ESP-IDF's size limit for the type
#define NVS_ERR_BAD_NAME        (-4) // key or namespace empty or longer than 15 bytes
#define NVS_ERR_BAD_ARG         (-5) // bad type code, size or partition geometry
#define NVS_ERR_FLASH           (-6) // a flash operation failed: reopen before further use
#define NVS_ERR_NO_MEM          (-7)
#define NVS_ERR_NEW_VERSION     (-8)  // a page has a newer format version (ESP-IDF refuses it too)
#define NVS_ERR_NO_FREE_PAGES   (-9)  // no spare page: the partition must be erased (as in ESP-IDF)
#define NVS_ERR_BUF_TOO_SMALL   (-10) // value larger than the caller's buffer (*len tells the size)
#define NVS_ERR_TYPE_MISMATCH   (-11) // internal
#define NVS_ERR_PAGE_FULL       (-12) // internal
#define NVS_ERR_CONTENT_DIFFERS (-13) // internal
#define NVS_ERR_INVALID_LENGTH  (-14) // stored blob is inconsistent (chunk sizes)
#define NVS_ERR_FAIL            (-15) // internal consistency check failed

// ESP-IDF item type codes (nvs_type_t / ItemType).
#define NVS_TYPE_U8        (0x01)
#define NVS_TYPE_I8        (0x11)
#define NVS_TYPE_U16       (0x02)
#define NVS_TYPE_I16       (0x12)
#define NVS_TYPE_U32       (0x04)
#define NVS_TYPE_I32       (0x14)
#define NVS_TYPE_U64       (0x08)
#define NVS_TYPE_I64       (0x18)
#define NVS_TYPE_STR       (0x21)
#define NVS_TYPE_BLOB      (0x41) // version 1 single-page blob: read only
#define NVS_TYPE_BLOB_DATA (0x42) // version 2 blob (chunks + index); what listings report
#define NVS_TYPE_BLOB_IDX  (0x48)
#define NVS_TYPE_ANY       (0xff)

#define NVS_PAGE_SIZE (4096)
#define NVS_NAME_MAX  (15)   // key / namespace length without the terminator
#define NVS_STR_MAX   (4000) // string bytes including the terminating NUL
#define NVS_BLOB_MAX  (508000)

// The flash the partition lives in. Offsets are relative to the partition start; erase is
// called on whole 4096-byte pages. Each returns 0 on success. A write only clears bits
// (NOR flash), and must reach the medium before returning: a power cut may fall between
// any two calls.
typedef struct {
    void *ctx;
    int (*read)(void *ctx, uint32_t off, void *buf, uint32_t n);
    int (*write)(void *ctx, uint32_t off, const void *buf, uint32_t n);
    int (*erase)(void *ctx, uint32_t off, uint32_t n);
} nvs_flash_ops_t;

typedef struct nvs_host nvs_host_t;

// Listing position: start at {0, 0}; valid while nothing is written.
typedef struct {
    uint32_t page;
    uint32_t entry;
} nvs_host_iter_t;

// Load (and repair, as ESP-IDF's loader does) the partition of `size` bytes (>= 3 pages).
// The ops struct is copied.
int nvs_host_open(nvs_host_t **out, const nvs_flash_ops_t *ops, uint32_t size);
void nvs_host_close(nvs_host_t *h);

// Store a value: integer types take 1..8 little-endian bytes (len = type & 0x0f), NVS_TYPE_STR
// takes the string with its NUL (len <= NVS_STR_MAX), NVS_TYPE_BLOB_DATA takes a blob (written
// as version 2 chunks + index). Replaces a value of any type under that key; writing the
// value already stored writes nothing.
int nvs_host_set(nvs_host_t *h, const char *ns, const char *key, uint8_t type, const void *data, size_t len);

// Read a value of any type. *len: buffer size in, value size out (for STR including the NUL).
// buf == NULL only queries type and size. Blobs report NVS_TYPE_BLOB_DATA (or NVS_TYPE_BLOB).
int nvs_host_get(nvs_host_t *h, const char *ns, const char *key, uint8_t *type, void *buf, size_t *len);

// Remove a key (NVS_ERR_NOT_FOUND if absent) / every key of a namespace (as nvs_erase_all).
int nvs_host_erase(nvs_host_t *h, const char *ns, const char *key);
int nvs_host_erase_namespace(nvs_host_t *h, const char *ns);

// Next stored key (ns == NULL: in every namespace), like nvs_entry_next: ns_out and key_out
// receive NUL-terminated names (16 bytes each). NVS_ERR_NOT_FOUND at the end.
int nvs_host_next(nvs_host_t *h, const char *ns, nvs_host_iter_t *it, char *ns_out, char *key_out, uint8_t *type);

// ESP-IDF's CRC32 (esp_rom_crc32_le): crc32_le(0xffffffff, data) is what NVS stores.
uint32_t nvs_host_crc32(uint32_t crc, const void *data, size_t len);

#endif // IOTUTILS_NVS_HOST_H
