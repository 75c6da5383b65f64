// kvstore: typed key/value store in ESP-IDF NVS, behind _iotutils.KVStore.
//
// One API, two backends picked at compile time:
//   host firmware (default):   ESP-IDF's on-flash format kept in a flash image file by the host
//                              NVS engine (nvs_host.h over nvs_*.c);
//   ESP32 (IOTUTILS_KV_IDF=1): ESP-IDF's own NVS (nvs_open/nvs_set_*/...) in kvstore_idf.c.
// Values carry ESP-IDF type codes (NVS_TYPE_* in nvs_host.h / nvs_type_t).
#ifndef IOTUTILS_KVSTORE_H
#define IOTUTILS_KVSTORE_H

#include <stddef.h>
#include <stdint.h>

#define KVS_OK            (0)
#define KVS_ERR_NOT_FOUND (-1) // no such key (or namespace)
#define KVS_ERR_NO_SPACE  (-2) // partition full (ENOSPC)
#define KVS_ERR_TOO_LONG  (-3) // value above ESP-IDF's limit for its type
#define KVS_ERR_BAD_NAME  (-4) // key/namespace empty, > 15 bytes, or with a NUL
#define KVS_ERR_BAD_VALUE (-5) // unknown type, integer out of range, NUL inside a string
#define KVS_ERR_IO        (-6) // flash/file access failed
#define KVS_ERR_NO_MEM    (-7)
#define KVS_ERR_CORRUPT   (-8) // partition unusable as it is (ESP-IDF would ask to erase it)
#define KVS_ERR_BUF_FULL  (-9) // a listing needs more room than the caller gave: call again with more

#define KVS_T_U8      (0x01)
#define KVS_T_I8      (0x11)
#define KVS_T_U16     (0x02)
#define KVS_T_I16     (0x12)
#define KVS_T_U32     (0x04)
#define KVS_T_I32     (0x14)
#define KVS_T_U64     (0x08)
#define KVS_T_I64     (0x18)
#define KVS_T_STR     (0x21)
#define KVS_T_BLOB_V1 (0x41) // old single-page blob: read only
#define KVS_T_BLOB    (0x42) // blob (BLOB_DATA chunks + BLOB_IDX)

#define KVS_NAME_MAX (15)
#define KVS_STR_MAX  (3999) // string bytes (ESP-IDF stores them with a NUL: 4000)
#define KVS_BLOB_MAX (508000)

typedef struct kvstore kvstore_t;

// A key or namespace name with its NUL.
typedef char kvstore_name_t[KVS_NAME_MAX + 1];

// Called per stored key; return non-zero to stop the listing.
typedef int (*kvstore_list_cb)(void *arg, const char *ns, const char *key, uint8_t type);

// Host: the partition at `offset`, `size` bytes, of the flash image file `where` (opened
// "r+b", unbuffered: each flash write reaches the OS before the call returns).
// ESP32: the NVS partition labelled `where` (offset and size unused).
int kvstore_open(kvstore_t **out, const char *where, uint32_t offset, uint32_t size);
void kvstore_close(kvstore_t *kv);

int kvstore_name_ok(const char *name, size_t len);

// Integers: `bits` is the value's low 64 bits (two's complement), `negative` its sign;
// out of range for `type` -> KVS_ERR_BAD_VALUE.
int kvstore_set_int(kvstore_t *kv, const char *ns, const char *key, uint8_t type, uint64_t bits, int negative);
int kvstore_set_str(kvstore_t *kv, const char *ns, const char *key, const char *s, size_t len);
int kvstore_set_blob(kvstore_t *kv, const char *ns, const char *key, const void *data, size_t len);

// Read a value of any type. *len: buffer size in, value size out. Integers come out as a
// native int64_t (U64: uint64_t) in an 8-byte buffer; strings with their NUL (len counts it).
// buf == NULL only reports type and size.
int kvstore_get(kvstore_t *kv, const char *ns, const char *key, uint8_t *type, void *buf, size_t *len);

int kvstore_erase(kvstore_t *kv, const char *ns, const char *key);
int kvstore_erase_namespace(kvstore_t *kv, const char *ns);
int kvstore_erase_all(kvstore_t *kv);

// Every stored key of namespace `ns` (NULL: all namespaces), as nvs_entry_find/next list them.
int kvstore_list(kvstore_t *kv, const char *ns, kvstore_list_cb cb, void *arg);

// Listings into the caller's arrays of `cap` entries; *count: entries filled. KVS_ERR_BUF_FULL
// when there are more than `cap`: the caller grows its arrays and asks again.
// The keys of namespace `ns` with their types, in kvstore_list's order:
int kvstore_keys(kvstore_t *kv, const char *ns, kvstore_name_t *names, uint8_t *types, size_t cap, size_t *count);
// The namespaces that hold keys, each once, sorted (strcmp):
int kvstore_namespaces(kvstore_t *kv, kvstore_name_t *names, size_t cap, size_t *count);

// ---- backend interface (kvstore.c on the host, kvstore_idf.c on the ESP32) ----
// Raw values: integers as (type & 0x0f) little-endian bytes, strings with their NUL.
int kvstore_be_open(kvstore_t **out, const char *where, uint32_t offset, uint32_t size);
void kvstore_be_close(kvstore_t *kv);
int kvstore_be_set(kvstore_t *kv, const char *ns, const char *key, uint8_t type, const void *data, size_t len);
int kvstore_be_get(kvstore_t *kv, const char *ns, const char *key, uint8_t *type, void *buf, size_t *len);
int kvstore_be_erase(kvstore_t *kv, const char *ns, const char *key);
int kvstore_be_erase_namespace(kvstore_t *kv, const char *ns);
int kvstore_be_list(kvstore_t *kv, const char *ns, kvstore_list_cb cb, void *arg);

#ifndef IOTUTILS_KV_IDF
#include "nvs_host.h"
// Host only: a store over any flash (tests use this with a simulated flash).
int kvstore_open_ops(kvstore_t **out, const nvs_flash_ops_t *ops, uint32_t size);
#endif

#endif // IOTUTILS_KVSTORE_H
