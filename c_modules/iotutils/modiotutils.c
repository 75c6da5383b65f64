// _iotutils: the one thin MicroPython binding over the portable C cores.
//
// Each core (httpparse.c, nvs_host.c/kvstore.c) includes only libc and its own header;
// this file converts MicroPython objects to C buffers and back, and nothing else.
// Sections are kept apart so each core's binding stays readable on its own.

#include "py/runtime.h"
#include "py/obj.h"

// Bumped whenever a binding signature changes, so Python code can detect a stale firmware.
#define IOTUTILS_ABI (1)

// ---- section: http parser binding (httpparse.c) ----
// Same names and behaviour as modules/iotutils/http.py (parse_head, chunked_decode, constants);
// REASONS stays in Python, the table is reached here through http_reason(i).

#include <string.h>
#include "py/binary.h"
#include "httpparse.h"

// A writable array('i') (or 32-bit 'l') of at least min_len items; returns its items.
static int32_t *iotutils_http_int32_array(mp_obj_t obj, size_t min_len, size_t *len, const char *what) {
    mp_buffer_info_t bi;
    mp_get_buffer_raise(obj, &bi, MP_BUFFER_WRITE);
    if ((bi.typecode != 'i' && bi.typecode != 'l') || mp_binary_get_size('@', bi.typecode, NULL) != 4) {
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("%s must be array('i')"), what);
    }
    *len = bi.len / 4;
    if (*len < min_len) {
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("%s too short"), what);
    }
    return (int32_t *)bi.buf;
}

static mp_obj_t iotutils_http_parse_head(mp_obj_t buf_in, mp_obj_t length_in, mp_obj_t out_in) {
    mp_buffer_info_t bi;
    mp_get_buffer_raise(buf_in, &bi, MP_BUFFER_READ);
    mp_int_t length = mp_obj_get_int(length_in);
    if (length < 0 || (size_t)length > bi.len) {
        mp_raise_ValueError(MP_ERROR_TEXT("length"));
    }
    size_t out_len;
    int32_t *out = iotutils_http_int32_array(out_in, HP_OUT_FIXED, &out_len, "out");
    int r = httpparse_head(bi.buf, (size_t)length, out, out_len);
    if (r == HP_BAD_ARGS) {
        mp_raise_ValueError(MP_ERROR_TEXT("length"));
    }
    return mp_obj_new_int(r);
}
static MP_DEFINE_CONST_FUN_OBJ_3(iotutils_http_parse_head_obj, iotutils_http_parse_head);

static mp_obj_t iotutils_http_chunked_decode(size_t n_args, const mp_obj_t *args) {
    (void)n_args;
    mp_buffer_info_t bi;
    mp_get_buffer_raise(args[0], &bi, MP_BUFFER_WRITE);
    mp_int_t start = mp_obj_get_int(args[1]);
    mp_int_t end = mp_obj_get_int(args[2]);
    if (start < 0 || end < start || (size_t)end > bi.len) {
        mp_raise_ValueError(MP_ERROR_TEXT("range"));
    }
    size_t state_len;
    int32_t *state = iotutils_http_int32_array(args[3], HP_CHUNK_STATE_LEN, &state_len, "state");
    int r = httpparse_chunked(bi.buf, (size_t)start, (size_t)end, state);
    if (r == HP_BAD_ARGS) {
        mp_raise_ValueError(MP_ERROR_TEXT("state"));
    }
    return mp_obj_new_int(r);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(iotutils_http_chunked_decode_obj, 4, 4, iotutils_http_chunked_decode);

static mp_obj_t iotutils_http_reason(mp_obj_t i_in) {
    const char *s = httpparse_reason(mp_obj_get_int(i_in));
    return mp_obj_new_str(s, strlen(s));
}
static MP_DEFINE_CONST_FUN_OBJ_1(iotutils_http_reason_obj, iotutils_http_reason);

// ---- end section: http parser binding ----

// ---- section: key/value store binding (kvstore.c over ESP-IDF NVS or nvs_host.c) ----
// _iotutils.KVStore: the same methods as modules/iotutils/nvs.py's NVS class, so store.py uses
// either. Host firmware: KVStore(image_path, partition_offset, partition_size); ESP32:
// KVStore("nvs") (partition label). Values: int (I64 unless type= says otherwise), str, bytes.

#include <string.h>
#include "py/mperrno.h"
#include "py/unicode.h"
#include "kvstore.h"

typedef struct _iotutils_KVStore_obj_t {
    mp_obj_base_t base;
    kvstore_t *kv;
} iotutils_KVStore_obj_t;

static MP_NORETURN void iotutils_kv_raise(int rc) {
    switch (rc) {
        case KVS_ERR_NO_SPACE:
            mp_raise_OSError(MP_ENOSPC);
        case KVS_ERR_TOO_LONG:
            mp_raise_ValueError(MP_ERROR_TEXT("value too long for NVS"));
        case KVS_ERR_BAD_NAME:
            mp_raise_ValueError(MP_ERROR_TEXT("key and namespace must be 1..15 bytes"));
        case KVS_ERR_BAD_VALUE:
            mp_raise_ValueError(MP_ERROR_TEXT("value does not fit the type"));
        case KVS_ERR_NO_MEM:
            mp_raise_OSError(MP_ENOMEM);
        default:
            mp_raise_OSError(MP_EIO);
    }
}

static kvstore_t *iotutils_kv_get(mp_obj_t self_in) {
    iotutils_KVStore_obj_t *self = MP_OBJ_TO_PTR(self_in);
    if (self->kv == NULL) {
        mp_raise_OSError(MP_EBADF);
    }
    return self->kv;
}

// A namespace or key name as a C string; ValueError names the field.
static const char *iotutils_kv_name(mp_obj_t o, const char *what) {
    size_t len;
    const char *s = mp_obj_str_get_data(o, &len);
    if (!kvstore_name_ok(s, len)) {
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("%s must be 1..15 bytes"), what);
    }
    return s;
}

static mp_obj_t iotutils_KVStore_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw, const mp_obj_t *args) {
    mp_arg_check_num(n_args, n_kw, 1, 3, false);
    const char *where = mp_obj_str_get_str(args[0]);
    mp_int_t offset = n_args > 1 ? mp_obj_get_int(args[1]) : 0;
    mp_int_t size = n_args > 2 ? mp_obj_get_int(args[2]) : 0;
    if (offset < 0 || size < 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("offset/size"));
    }
    iotutils_KVStore_obj_t *self = mp_obj_malloc_with_finaliser(iotutils_KVStore_obj_t, type);
    self->kv = NULL;
    int rc = kvstore_open(&self->kv, where, (uint32_t)offset, (uint32_t)size);
    if (rc != KVS_OK) {
        self->kv = NULL;
        if (rc == KVS_ERR_BAD_VALUE) {
            mp_raise_ValueError(MP_ERROR_TEXT("bad NVS partition geometry"));
        }
        iotutils_kv_raise(rc);
    }
    return MP_OBJ_FROM_PTR(self);
}

static mp_obj_t iotutils_KVStore_close(mp_obj_t self_in) {
    iotutils_KVStore_obj_t *self = MP_OBJ_TO_PTR(self_in);
    if (self->kv != NULL) {
        kvstore_close(self->kv);
        self->kv = NULL;
    }
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(iotutils_KVStore_close_obj, iotutils_KVStore_close);

// (type, value) or None.
static mp_obj_t iotutils_KVStore_get_typed(mp_obj_t self_in, mp_obj_t ns_in, mp_obj_t key_in) {
    kvstore_t *kv = iotutils_kv_get(self_in);
    const char *ns = iotutils_kv_name(ns_in, "namespace");
    const char *key = iotutils_kv_name(key_in, "key");
    uint8_t type;
    size_t len = 0;
    int rc = kvstore_get(kv, ns, key, &type, NULL, &len);
    if (rc == KVS_ERR_NOT_FOUND) {
        return mp_const_none;
    }
    if (rc != KVS_OK) {
        iotutils_kv_raise(rc);
    }
    mp_obj_t value;
    if (type == KVS_T_STR || type == KVS_T_BLOB) {
        vstr_t vstr;
        vstr_init_len(&vstr, len);
        rc = kvstore_get(kv, ns, key, &type, vstr.buf, &len);
        if (rc != KVS_OK) {
            vstr_clear(&vstr);
            if (rc == KVS_ERR_NOT_FOUND) {
                return mp_const_none;
            }
            iotutils_kv_raise(rc);
        }
        if (type == KVS_T_STR) {
            // Stored with its NUL; a string that is not UTF-8 reads as None, as in nvs.py.
            vstr.len = len > 0 ? len - 1 : 0;
#if MICROPY_PY_BUILTINS_STR_UNICODE
            if (!utf8_check((const byte *)vstr.buf, vstr.len)) {
                vstr_clear(&vstr);
                return mp_const_none;
            }
#endif
            value = mp_obj_new_str_from_utf8_vstr(&vstr);
        } else {
            vstr.len = len;
            value = mp_obj_new_bytes_from_vstr(&vstr);
        }
    } else {
        uint64_t v;
        len = sizeof(v);
        rc = kvstore_get(kv, ns, key, &type, &v, &len);
        if (rc == KVS_ERR_NOT_FOUND) {
            return mp_const_none;
        }
        if (rc != KVS_OK) {
            iotutils_kv_raise(rc);
        }
        value = type == KVS_T_U64 ? mp_obj_new_int_from_ull(v) : mp_obj_new_int_from_ll((long long)(int64_t)v);
    }
    mp_obj_t items[2] = {MP_OBJ_NEW_SMALL_INT(type), value};
    return mp_obj_new_tuple(2, items);
}
static MP_DEFINE_CONST_FUN_OBJ_3(iotutils_KVStore_get_typed_obj, iotutils_KVStore_get_typed);

static mp_obj_t iotutils_KVStore_get(mp_obj_t self_in, mp_obj_t ns_in, mp_obj_t key_in) {
    mp_obj_t r = iotutils_KVStore_get_typed(self_in, ns_in, key_in);
    if (r == mp_const_none) {
        return r;
    }
    return ((mp_obj_tuple_t *)MP_OBJ_TO_PTR(r))->items[1];
}
static MP_DEFINE_CONST_FUN_OBJ_3(iotutils_KVStore_get_obj, iotutils_KVStore_get);

// set(ns, key, value, type=None)
static mp_obj_t iotutils_KVStore_set(size_t n_args, const mp_obj_t *args) {
    kvstore_t *kv = iotutils_kv_get(args[0]);
    const char *ns = iotutils_kv_name(args[1], "namespace");
    const char *key = iotutils_kv_name(args[2], "key");
    mp_obj_t value = args[3];
    mp_int_t type = (n_args > 4 && args[4] != mp_const_none) ? mp_obj_get_int(args[4]) : -1;
    int rc;
    if (mp_obj_is_bool(value)) {
        value = MP_OBJ_NEW_SMALL_INT(mp_obj_is_true(value));
    }
    if (mp_obj_is_int(value)) {
        // Must lie in [-2**63, 2**64): then its low 64 bits and sign say it all.
        mp_obj_t lo = mp_obj_new_int_from_ll(INT64_MIN);
        mp_obj_t hi = mp_obj_new_int_from_ull(UINT64_MAX);
        if (mp_obj_is_true(mp_binary_op(MP_BINARY_OP_LESS, value, lo))
            || mp_obj_is_true(mp_binary_op(MP_BINARY_OP_MORE, value, hi))) {
            mp_raise_ValueError(MP_ERROR_TEXT("value does not fit the type"));
        }
        int negative = mp_obj_is_true(mp_binary_op(MP_BINARY_OP_LESS, value, MP_OBJ_NEW_SMALL_INT(0)));
        mp_obj_t mask = mp_obj_new_int_from_ull(0xffffffffu);
        uint64_t bits = (uint32_t)mp_obj_int_get_truncated(mp_binary_op(MP_BINARY_OP_AND, value, mask));
        mp_obj_t high = mp_binary_op(MP_BINARY_OP_RSHIFT, value, MP_OBJ_NEW_SMALL_INT(32));
        bits |= (uint64_t)(uint32_t)mp_obj_int_get_truncated(mp_binary_op(MP_BINARY_OP_AND, high, mask)) << 32;
        if (type > 0xff) {
            mp_raise_ValueError(MP_ERROR_TEXT("not an integer type"));
        }
        rc = kvstore_set_int(kv, ns, key, type < 0 ? KVS_T_I64 : (uint8_t)type, bits, negative);
    } else if (mp_obj_is_str(value)) {
        if (type >= 0 && type != KVS_T_STR) {
            mp_raise_ValueError(MP_ERROR_TEXT("a str is stored as STR"));
        }
        size_t len;
        const char *s = mp_obj_str_get_data(value, &len);
        rc = kvstore_set_str(kv, ns, key, s, len);
    } else {
        mp_buffer_info_t bi;
        if (!mp_get_buffer(value, &bi, MP_BUFFER_READ)) {
            mp_raise_ValueError(MP_ERROR_TEXT("value must be int, str or bytes"));
        }
        if (type >= 0 && type != KVS_T_BLOB && type != KVS_T_BLOB_V1 && type != 0x48) {
            mp_raise_ValueError(MP_ERROR_TEXT("bytes are stored as a blob"));
        }
        rc = kvstore_set_blob(kv, ns, key, bi.buf, bi.len);
    }
    if (rc != KVS_OK) {
        iotutils_kv_raise(rc);
    }
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(iotutils_KVStore_set_obj, 4, 5, iotutils_KVStore_set);

static mp_obj_t iotutils_KVStore_erase(mp_obj_t self_in, mp_obj_t ns_in, mp_obj_t key_in) {
    kvstore_t *kv = iotutils_kv_get(self_in);
    int rc = kvstore_erase(kv, iotutils_kv_name(ns_in, "namespace"), iotutils_kv_name(key_in, "key"));
    if (rc == KVS_ERR_NOT_FOUND) {
        return mp_const_false;
    }
    if (rc != KVS_OK) {
        iotutils_kv_raise(rc);
    }
    return mp_const_true;
}
static MP_DEFINE_CONST_FUN_OBJ_3(iotutils_KVStore_erase_obj, iotutils_KVStore_erase);

// Listings collect names in C first (a callback must not raise), then build the objects.
typedef char iotutils_kv_name_t[16];

typedef struct {
    iotutils_kv_name_t *names;
    uint8_t *types;
    size_t count, cap;
    int by_namespace; // collect distinct namespaces instead of keys
} iotutils_kv_listing_t;

static int iotutils_kv_collect(void *arg, const char *ns, const char *key, uint8_t type) {
    iotutils_kv_listing_t *l = arg;
    const char *name = l->by_namespace ? ns : key;
    if (l->by_namespace) {
        for (size_t i = 0; i < l->count; i++) {
            if (strcmp(l->names[i], name) == 0) {
                return 0;
            }
        }
    }
    if (l->count == l->cap) {
        return 1; // the caller grows the buffer and lists again
    }
    strncpy(l->names[l->count], name, 15);
    l->names[l->count][15] = 0;
    l->types[l->count++] = type;
    return 0;
}

static void iotutils_kv_list(kvstore_t *kv, const char *ns, iotutils_kv_listing_t *l) {
    l->cap = 32;
    for (;;) {
        l->names = m_new(iotutils_kv_name_t, l->cap);
        l->types = m_new(uint8_t, l->cap);
        l->count = 0;
        int rc = kvstore_list(kv, ns, iotutils_kv_collect, l);
        if (rc != KVS_OK) {
            iotutils_kv_raise(rc);
        }
        if (l->count < l->cap) {
            return;
        }
        m_del(iotutils_kv_name_t, l->names, l->cap);
        m_del(uint8_t, l->types, l->cap);
        l->cap *= 4;
    }
}

// keys(ns) -> [(key, type)]
static mp_obj_t iotutils_KVStore_keys(mp_obj_t self_in, mp_obj_t ns_in) {
    kvstore_t *kv = iotutils_kv_get(self_in);
    iotutils_kv_listing_t l = {NULL, NULL, 0, 0, 0};
    iotutils_kv_list(kv, iotutils_kv_name(ns_in, "namespace"), &l);
    mp_obj_t list = mp_obj_new_list(0, NULL);
    for (size_t i = 0; i < l.count; i++) {
        mp_obj_t items[2] = {mp_obj_new_str(l.names[i], strlen(l.names[i])), MP_OBJ_NEW_SMALL_INT(l.types[i])};
        mp_obj_list_append(list, mp_obj_new_tuple(2, items));
    }
    return list;
}
static MP_DEFINE_CONST_FUN_OBJ_2(iotutils_KVStore_keys_obj, iotutils_KVStore_keys);

// namespaces() -> sorted names of the namespaces that hold keys
static mp_obj_t iotutils_KVStore_namespaces(mp_obj_t self_in) {
    kvstore_t *kv = iotutils_kv_get(self_in);
    iotutils_kv_listing_t l = {NULL, NULL, 0, 0, 1};
    iotutils_kv_list(kv, NULL, &l);
    for (size_t i = 1; i < l.count; i++) {
        for (size_t j = i; j > 0 && strcmp(l.names[j - 1], l.names[j]) > 0; j--) {
            char t[16];
            memcpy(t, l.names[j], 16);
            memcpy(l.names[j], l.names[j - 1], 16);
            memcpy(l.names[j - 1], t, 16);
        }
    }
    mp_obj_t list = mp_obj_new_list(0, NULL);
    for (size_t i = 0; i < l.count; i++) {
        mp_obj_list_append(list, mp_obj_new_str(l.names[i], strlen(l.names[i])));
    }
    return list;
}
static MP_DEFINE_CONST_FUN_OBJ_1(iotutils_KVStore_namespaces_obj, iotutils_KVStore_namespaces);

static mp_obj_t iotutils_KVStore_erase_namespace(mp_obj_t self_in, mp_obj_t ns_in) {
    int rc = kvstore_erase_namespace(iotutils_kv_get(self_in), iotutils_kv_name(ns_in, "namespace"));
    if (rc != KVS_OK && rc != KVS_ERR_NOT_FOUND) {
        iotutils_kv_raise(rc);
    }
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_2(iotutils_KVStore_erase_namespace_obj, iotutils_KVStore_erase_namespace);

static mp_obj_t iotutils_KVStore_erase_all(mp_obj_t self_in) {
    int rc = kvstore_erase_all(iotutils_kv_get(self_in));
    if (rc != KVS_OK) {
        iotutils_kv_raise(rc);
    }
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(iotutils_KVStore_erase_all_obj, iotutils_KVStore_erase_all);

static const mp_rom_map_elem_t iotutils_KVStore_locals_dict_table[] = {
    {MP_ROM_QSTR(MP_QSTR_get), MP_ROM_PTR(&iotutils_KVStore_get_obj)},
    {MP_ROM_QSTR(MP_QSTR_get_typed), MP_ROM_PTR(&iotutils_KVStore_get_typed_obj)},
    {MP_ROM_QSTR(MP_QSTR_set), MP_ROM_PTR(&iotutils_KVStore_set_obj)},
    {MP_ROM_QSTR(MP_QSTR_erase), MP_ROM_PTR(&iotutils_KVStore_erase_obj)},
    {MP_ROM_QSTR(MP_QSTR_keys), MP_ROM_PTR(&iotutils_KVStore_keys_obj)},
    {MP_ROM_QSTR(MP_QSTR_namespaces), MP_ROM_PTR(&iotutils_KVStore_namespaces_obj)},
    {MP_ROM_QSTR(MP_QSTR_erase_namespace), MP_ROM_PTR(&iotutils_KVStore_erase_namespace_obj)},
    {MP_ROM_QSTR(MP_QSTR_erase_all), MP_ROM_PTR(&iotutils_KVStore_erase_all_obj)},
    {MP_ROM_QSTR(MP_QSTR_close), MP_ROM_PTR(&iotutils_KVStore_close_obj)},
    {MP_ROM_QSTR(MP_QSTR___del__), MP_ROM_PTR(&iotutils_KVStore_close_obj)},
    {MP_ROM_QSTR(MP_QSTR_U8), MP_ROM_INT(KVS_T_U8)},
    {MP_ROM_QSTR(MP_QSTR_I8), MP_ROM_INT(KVS_T_I8)},
    {MP_ROM_QSTR(MP_QSTR_U16), MP_ROM_INT(KVS_T_U16)},
    {MP_ROM_QSTR(MP_QSTR_I16), MP_ROM_INT(KVS_T_I16)},
    {MP_ROM_QSTR(MP_QSTR_U32), MP_ROM_INT(KVS_T_U32)},
    {MP_ROM_QSTR(MP_QSTR_I32), MP_ROM_INT(KVS_T_I32)},
    {MP_ROM_QSTR(MP_QSTR_U64), MP_ROM_INT(KVS_T_U64)},
    {MP_ROM_QSTR(MP_QSTR_I64), MP_ROM_INT(KVS_T_I64)},
    {MP_ROM_QSTR(MP_QSTR_STR), MP_ROM_INT(KVS_T_STR)},
    {MP_ROM_QSTR(MP_QSTR_BLOB_DATA), MP_ROM_INT(KVS_T_BLOB)},
};
static MP_DEFINE_CONST_DICT(iotutils_KVStore_locals_dict, iotutils_KVStore_locals_dict_table);

static MP_DEFINE_CONST_OBJ_TYPE(iotutils_KVStore_type, MP_QSTR_KVStore, MP_TYPE_FLAG_NONE, make_new,
                                iotutils_KVStore_make_new, locals_dict, &iotutils_KVStore_locals_dict);

// ---- end section: key/value store binding ----

static const mp_rom_map_elem_t iotutils_module_globals_table[] = {
    {MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR__iotutils)},
    {MP_ROM_QSTR(MP_QSTR_abi), MP_ROM_INT(IOTUTILS_ABI)},
    // ---- http parser entries ----
    {MP_ROM_QSTR(MP_QSTR_parse_head), MP_ROM_PTR(&iotutils_http_parse_head_obj)},
    {MP_ROM_QSTR(MP_QSTR_chunked_decode), MP_ROM_PTR(&iotutils_http_chunked_decode_obj)},
    {MP_ROM_QSTR(MP_QSTR_http_reason), MP_ROM_PTR(&iotutils_http_reason_obj)},
    {MP_ROM_QSTR(MP_QSTR_NEED_MORE), MP_ROM_INT(HP_NEED_MORE)},
    {MP_ROM_QSTR(MP_QSTR_BODY_NONE), MP_ROM_INT(HP_BODY_NONE)},
    {MP_ROM_QSTR(MP_QSTR_BODY_LENGTH), MP_ROM_INT(HP_BODY_LENGTH)},
    {MP_ROM_QSTR(MP_QSTR_BODY_CHUNKED), MP_ROM_INT(HP_BODY_CHUNKED)},
    {MP_ROM_QSTR(MP_QSTR_FLAG_CLOSE), MP_ROM_INT(HP_FLAG_CLOSE)},
    {MP_ROM_QSTR(MP_QSTR_FLAG_KEEP_ALIVE), MP_ROM_INT(HP_FLAG_KEEP_ALIVE)},
    {MP_ROM_QSTR(MP_QSTR_FLAG_EXPECT_CONTINUE), MP_ROM_INT(HP_FLAG_EXPECT_CONTINUE)},
    {MP_ROM_QSTR(MP_QSTR_FLAG_UPGRADE), MP_ROM_INT(HP_FLAG_UPGRADE)},
    {MP_ROM_QSTR(MP_QSTR_OUT_FIXED), MP_ROM_INT(HP_OUT_FIXED)},
    {MP_ROM_QSTR(MP_QSTR_CHUNK_STATE_LEN), MP_ROM_INT(HP_CHUNK_STATE_LEN)},
    {MP_ROM_QSTR(MP_QSTR_CS_DONE), MP_ROM_INT(HP_CS_DONE)},
    {MP_ROM_QSTR(MP_QSTR_CS_ERROR), MP_ROM_INT(HP_CS_ERROR)},
    // ---- key/value store entries ----
    {MP_ROM_QSTR(MP_QSTR_KVStore), MP_ROM_PTR(&iotutils_KVStore_type)},
};
static MP_DEFINE_CONST_DICT(iotutils_module_globals, iotutils_module_globals_table);

const mp_obj_module_t iotutils_user_cmodule = {
    .base = {&mp_type_module},
    .globals = (mp_obj_dict_t *)&iotutils_module_globals,
};

MP_REGISTER_MODULE(MP_QSTR__iotutils, iotutils_user_cmodule);
