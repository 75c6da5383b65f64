// kvstore: the typed front (names, integer ranges, size limits) shared by both backends,
// and the host backend: the host NVS engine (nvs_host.h) over a partition of the flash image file.
#include "kvstore.h"

#include <stdlib.h>
#include <string.h>

static int is_int_type(uint8_t t) {
    return t == KVS_T_U8 || t == KVS_T_I8 || t == KVS_T_U16 || t == KVS_T_I16 || t == KVS_T_U32 || t == KVS_T_I32
           || t == KVS_T_U64 || t == KVS_T_I64;
}

int kvstore_name_ok(const char *name, size_t len) {
    return name != NULL && len >= 1 && len <= KVS_NAME_MAX && memchr(name, 0, len) == NULL;
}

static int names_ok(const char *ns, const char *key) {
    if (ns == NULL || key == NULL || !kvstore_name_ok(ns, strlen(ns)) || !kvstore_name_ok(key, strlen(key))) {
        return KVS_ERR_BAD_NAME;
    }
    return KVS_OK;
}

int kvstore_open(kvstore_t **out, const char *where, uint32_t offset, uint32_t size) {
    *out = NULL;
    if (where == NULL) {
        return KVS_ERR_BAD_NAME;
    }
    return kvstore_be_open(out, where, offset, size);
}

void kvstore_close(kvstore_t *kv) {
    if (kv) {
        kvstore_be_close(kv);
    }
}

int kvstore_set_int(kvstore_t *kv, const char *ns, const char *key, uint8_t type, uint64_t bits, int negative) {
    int rc = names_ok(ns, key);
    if (rc != KVS_OK) {
        return rc;
    }
    if (!is_int_type(type)) {
        return KVS_ERR_BAD_VALUE;
    }
    unsigned nbits = (type & 0x0f) * 8;
    if (type & 0x10) {
        // Signed: -2^(n-1) <= v < 2^(n-1).
        uint64_t limit = (uint64_t)1 << (nbits - 1);
        if (negative ? (0 - bits) > limit : bits >= limit) {
            return KVS_ERR_BAD_VALUE;
        }
    } else if (negative || (nbits < 64 && bits >> nbits)) {
        return KVS_ERR_BAD_VALUE;
    }
    uint8_t raw[8];
    for (unsigned i = 0; i < 8; i++) {
        raw[i] = (uint8_t)(bits >> (8 * i));
    }
    return kvstore_be_set(kv, ns, key, type, raw, type & 0x0f);
}

int kvstore_set_str(kvstore_t *kv, const char *ns, const char *key, const char *s, size_t len) {
    int rc = names_ok(ns, key);
    if (rc != KVS_OK) {
        return rc;
    }
    if (memchr(s, 0, len) != NULL) {
        return KVS_ERR_BAD_VALUE;
    }
    if (len > KVS_STR_MAX) {
        return KVS_ERR_TOO_LONG;
    }
    char *buf = malloc(len + 1);
    if (buf == NULL) {
        return KVS_ERR_NO_MEM;
    }
    memcpy(buf, s, len);
    buf[len] = 0;
    rc = kvstore_be_set(kv, ns, key, KVS_T_STR, buf, len + 1);
    free(buf);
    return rc;
}

int kvstore_set_blob(kvstore_t *kv, const char *ns, const char *key, const void *data, size_t len) {
    int rc = names_ok(ns, key);
    if (rc != KVS_OK) {
        return rc;
    }
    if (len > KVS_BLOB_MAX) {
        return KVS_ERR_TOO_LONG;
    }
    return kvstore_be_set(kv, ns, key, KVS_T_BLOB, len ? data : "", len);
}

int kvstore_get(kvstore_t *kv, const char *ns, const char *key, uint8_t *type, void *buf, size_t *len) {
    int rc = names_ok(ns, key);
    if (rc != KVS_OK) {
        return rc;
    }
    uint8_t raw[8];
    size_t n = sizeof(raw);
    rc = kvstore_be_get(kv, ns, key, type, NULL, &n);
    if (rc != KVS_OK || !is_int_type(*type)) {
        if (rc == KVS_OK && buf != NULL) {
            rc = kvstore_be_get(kv, ns, key, type, buf, len);
        } else if (rc == KVS_OK) {
            *len = n;
        }
        if (rc == KVS_OK && *type == KVS_T_BLOB_V1) {
            *type = KVS_T_BLOB;
        }
        return rc;
    }
    n = sizeof(raw);
    rc = kvstore_be_get(kv, ns, key, type, raw, &n);
    if (rc != KVS_OK) {
        return rc;
    }
    if (buf == NULL) {
        *len = 8;
        return KVS_OK;
    }
    if (*len < 8) {
        *len = 8;
        return KVS_ERR_BAD_VALUE;
    }
    // Widen to 64 bits, sign-extending signed types.
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        v |= (uint64_t)raw[i] << (8 * i);
    }
    if ((*type & 0x10) && n < 8 && (raw[n - 1] & 0x80)) {
        v |= ~(uint64_t)0 << (8 * n);
    }
    memcpy(buf, &v, 8); // int64_t and uint64_t share the bits
    *len = 8;
    return KVS_OK;
}

int kvstore_erase(kvstore_t *kv, const char *ns, const char *key) {
    int rc = names_ok(ns, key);
    if (rc != KVS_OK) {
        return rc;
    }
    return kvstore_be_erase(kv, ns, key);
}

int kvstore_erase_namespace(kvstore_t *kv, const char *ns) {
    if (ns == NULL || !kvstore_name_ok(ns, strlen(ns))) {
        return KVS_ERR_BAD_NAME;
    }
    return kvstore_be_erase_namespace(kv, ns);
}

// Listings and reads report every blob as KVS_T_BLOB, whatever its on-flash version.
typedef struct {
    kvstore_list_cb cb;
    void *arg;
} list_ctx_t;

static int list_one(void *arg, const char *ns, const char *key, uint8_t type) {
    list_ctx_t *c = (list_ctx_t *)arg;
    return c->cb(c->arg, ns, key, type == KVS_T_BLOB_V1 ? KVS_T_BLOB : type);
}

int kvstore_list(kvstore_t *kv, const char *ns, kvstore_list_cb cb, void *arg) {
    if (ns != NULL && !kvstore_name_ok(ns, strlen(ns))) {
        return KVS_ERR_BAD_NAME;
    }
    list_ctx_t c = {cb, arg};
    return kvstore_be_list(kv, ns, list_one, &c);
}

// kvstore_keys / kvstore_namespaces: names copied out of a listing (a callback cannot allocate).
typedef struct {
    kvstore_name_t *names;
    uint8_t *types; // NULL: collect distinct namespaces instead of keys
    size_t cap, count;
    int full;
} names_t;

static int collect_name(void *arg, const char *ns, const char *key, uint8_t type) {
    names_t *l = (names_t *)arg;
    const char *name = l->types ? key : ns;
    if (l->types == NULL) {
        for (size_t i = 0; i < l->count; i++) {
            if (strcmp(l->names[i], name) == 0) {
                return 0;
            }
        }
    }
    if (l->count == l->cap) {
        l->full = 1;
        return 1;
    }
    strncpy(l->names[l->count], name, KVS_NAME_MAX);
    l->names[l->count][KVS_NAME_MAX] = 0;
    if (l->types) {
        l->types[l->count] = type;
    }
    l->count++;
    return 0;
}

static int list_names(kvstore_t *kv, const char *ns, names_t *l, size_t *count) {
    int rc = kvstore_list(kv, ns, collect_name, l);
    *count = l->count;
    if (rc == KVS_OK && l->full) {
        rc = KVS_ERR_BUF_FULL;
    }
    return rc;
}

int kvstore_keys(kvstore_t *kv, const char *ns, kvstore_name_t *names, uint8_t *types, size_t cap, size_t *count) {
    if (ns == NULL) {
        *count = 0;
        return KVS_ERR_BAD_NAME;
    }
    names_t l = {names, types, cap, 0, 0};
    return list_names(kv, ns, &l, count);
}

int kvstore_namespaces(kvstore_t *kv, kvstore_name_t *names, size_t cap, size_t *count) {
    names_t l = {names, NULL, cap, 0, 0};
    int rc = list_names(kv, NULL, &l, count);
    if (rc != KVS_OK) {
        return rc;
    }
    // Insertion sort: a few namespaces at most (ESP-IDF allows 254).
    for (size_t i = 1; i < l.count; i++) {
        for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            kvstore_name_t t;
            memcpy(t, names[j], sizeof(t));
            memcpy(names[j], names[j - 1], sizeof(t));
            memcpy(names[j - 1], t, sizeof(t));
        }
    }
    return KVS_OK;
}

// erase_all: every namespace that holds keys, one at a time (as nvs_erase_all per namespace).
typedef struct {
    char names[8][16];
    int count;
} ns_batch_t;

static int collect_ns(void *arg, const char *ns, const char *key, uint8_t type) {
    ns_batch_t *b = (ns_batch_t *)arg;
    (void)key;
    (void)type;
    for (int i = 0; i < b->count; i++) {
        if (strcmp(b->names[i], ns) == 0) {
            return 0;
        }
    }
    strncpy(b->names[b->count], ns, 15);
    b->names[b->count][15] = 0;
    return ++b->count == 8;
}

int kvstore_erase_all(kvstore_t *kv) {
    // 255 namespaces at most, 8 per pass: a bounded loop even if a listing misbehaves.
    for (int pass = 0; pass < 40; pass++) {
        ns_batch_t b;
        b.count = 0;
        int rc = kvstore_be_list(kv, NULL, collect_ns, &b);
        if (rc != KVS_OK) {
            return rc;
        }
        if (b.count == 0) {
            return KVS_OK;
        }
        for (int i = 0; i < b.count; i++) {
            rc = kvstore_be_erase_namespace(kv, b.names[i]);
            if (rc != KVS_OK && rc != KVS_ERR_NOT_FOUND) {
                return rc;
            }
        }
    }
    return KVS_ERR_IO;
}

#ifndef IOTUTILS_KV_IDF
// ---- host backend ----
#include <stdio.h>

struct kvstore {
    nvs_host_t *nvs;
    FILE *f;
    uint32_t offset;
    nvs_flash_ops_t ops;
};

static int map_rc(int rc) {
    switch (rc) {
        case NVS_OK:
            return KVS_OK;
        case NVS_ERR_NOT_FOUND:
            return KVS_ERR_NOT_FOUND;
        case NVS_ERR_NO_SPACE:
            return KVS_ERR_NO_SPACE;
        case NVS_ERR_VALUE_TOO_LONG:
            return KVS_ERR_TOO_LONG;
        case NVS_ERR_BAD_NAME:
            return KVS_ERR_BAD_NAME;
        case NVS_ERR_BAD_ARG:
            return KVS_ERR_BAD_VALUE;
        case NVS_ERR_NO_MEM:
            return KVS_ERR_NO_MEM;
        case NVS_ERR_NEW_VERSION:
        case NVS_ERR_NO_FREE_PAGES:
            return KVS_ERR_CORRUPT;
        default:
            return KVS_ERR_IO;
    }
}

static int file_read(void *ctx, uint32_t off, void *buf, uint32_t n) {
    kvstore_t *kv = (kvstore_t *)ctx;
    if (fseek(kv->f, (long)kv->offset + (long)off, SEEK_SET) != 0) {
        return -1;
    }
    size_t got = fread(buf, 1, n, kv->f);
    if (got < n) {
        // Past the end of a short image file: erased flash.
        if (ferror(kv->f)) {
            return -1;
        }
        clearerr(kv->f);
        memset((uint8_t *)buf + got, 0xff, n - got);
    }
    return 0;
}

static int file_write(void *ctx, uint32_t off, const void *buf, uint32_t n) {
    kvstore_t *kv = (kvstore_t *)ctx;
    if (fseek(kv->f, (long)kv->offset + (long)off, SEEK_SET) != 0) {
        return -1;
    }
    if (fwrite(buf, 1, n, kv->f) != n || fflush(kv->f) != 0) {
        return -1;
    }
    return 0;
}

static int file_erase(void *ctx, uint32_t off, uint32_t n) {
    // One write per 4096-byte page: a killed process leaves a page erased or not, never half
    // (a half-erased page loads as corrupt, which ESP-IDF survives but its checker reports).
    uint8_t blank[NVS_PAGE_SIZE];
    memset(blank, 0xff, sizeof(blank));
    for (uint32_t done = 0; done < n; done += sizeof(blank)) {
        if (file_write(ctx, off + done, blank, sizeof(blank)) != 0) {
            return -1;
        }
    }
    return 0;
}

// A short image file is padded with erased flash (0xFF) up to the partition's end, so later
// writes never leave a hole of zeros behind them.
static int file_pad(FILE *f, uint32_t end) {
    if (fseek(f, 0, SEEK_END) != 0) {
        return -1;
    }
    long have = ftell(f);
    if (have < 0) {
        return -1;
    }
    uint8_t blank[256];
    memset(blank, 0xff, sizeof(blank));
    for (uint32_t at = (uint32_t)have; at < end;) {
        uint32_t n = end - at < sizeof(blank) ? end - at : (uint32_t)sizeof(blank);
        if (fwrite(blank, 1, n, f) != n) {
            return -1;
        }
        at += n;
    }
    return fflush(f) == 0 ? 0 : -1;
}

static int open_common(kvstore_t *kv, uint32_t size) {
    return map_rc(nvs_host_open(&kv->nvs, &kv->ops, size));
}

int kvstore_be_open(kvstore_t **out, const char *where, uint32_t offset, uint32_t size) {
    if (size < 3 * NVS_PAGE_SIZE || size % NVS_PAGE_SIZE != 0) {
        return KVS_ERR_BAD_VALUE; // checked before the file is touched
    }
    kvstore_t *kv = calloc(1, sizeof(kvstore_t));
    if (kv == NULL) {
        return KVS_ERR_NO_MEM;
    }
    kv->f = fopen(where, "r+b");
    if (kv->f == NULL) {
        free(kv);
        return KVS_ERR_IO;
    }
    // No stdio buffering: a killed process must not lose a write that already returned.
    setvbuf(kv->f, NULL, _IONBF, 0);
    kv->offset = offset;
    if ((uint64_t)offset + size > 0x7fffffffu || file_pad(kv->f, offset + size) != 0) {
        fclose(kv->f);
        free(kv);
        return KVS_ERR_IO;
    }
    kv->ops.ctx = kv;
    kv->ops.read = file_read;
    kv->ops.write = file_write;
    kv->ops.erase = file_erase;
    int rc = open_common(kv, size);
    if (rc != KVS_OK) {
        fclose(kv->f);
        free(kv);
        return rc;
    }
    *out = kv;
    return KVS_OK;
}

int kvstore_open_ops(kvstore_t **out, const nvs_flash_ops_t *ops, uint32_t size) {
    *out = NULL;
    kvstore_t *kv = calloc(1, sizeof(kvstore_t));
    if (kv == NULL) {
        return KVS_ERR_NO_MEM;
    }
    kv->ops = *ops;
    int rc = open_common(kv, size);
    if (rc != KVS_OK) {
        free(kv);
        return rc;
    }
    *out = kv;
    return KVS_OK;
}

void kvstore_be_close(kvstore_t *kv) {
    nvs_host_close(kv->nvs);
    if (kv->f) {
        fclose(kv->f);
    }
    free(kv);
}

int kvstore_be_set(kvstore_t *kv, const char *ns, const char *key, uint8_t type, const void *data, size_t len) {
    return map_rc(nvs_host_set(kv->nvs, ns, key, type, data, len));
}

int kvstore_be_get(kvstore_t *kv, const char *ns, const char *key, uint8_t *type, void *buf, size_t *len) {
    int rc = nvs_host_get(kv->nvs, ns, key, type, buf, len);
    return rc == NVS_ERR_BUF_TOO_SMALL ? KVS_ERR_BAD_VALUE : map_rc(rc);
}

int kvstore_be_erase(kvstore_t *kv, const char *ns, const char *key) {
    return map_rc(nvs_host_erase(kv->nvs, ns, key));
}

int kvstore_be_erase_namespace(kvstore_t *kv, const char *ns) {
    return map_rc(nvs_host_erase_namespace(kv->nvs, ns));
}

int kvstore_be_list(kvstore_t *kv, const char *ns, kvstore_list_cb cb, void *arg) {
    nvs_host_iter_t it = {0, 0};
    char ns_name[16], key[16];
    uint8_t type;
    int rc;
    while ((rc = nvs_host_next(kv->nvs, ns, &it, ns_name, key, &type)) == NVS_OK) {
        if (cb(arg, ns_name, key, type)) {
            return KVS_OK;
        }
    }
    return rc == NVS_ERR_NOT_FOUND ? KVS_OK : map_rc(rc);
}
#endif
