// _iotutils.KVStore: the binding of the key/value store core (kvstore.c).
//
// Separate from the core (libc only; its backend is nvs_host.c on the host firmware and
// kvstore_idf.c on the ESP32) and from the other bindings: this file only checks arguments and
// converts MicroPython objects to the core's C arguments and back. The same methods as
// modules/iotutils/nvs.py's NVS class, so store.py uses either. Host firmware:
// KVStore(image_path, partition_offset, partition_size); ESP32: KVStore("nvs") (partition label).
// Values: int (I64 unless type= says otherwise), str, bytes.

#include <string.h>

#include "py/mperrno.h"
#include "py/runtime.h"
#include "py/unicode.h"

#include "kvstore.h"
#include "mod_iotutils.h"

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

// A listing into arrays on the heap, grown until everything fits (the core copies the names).
typedef struct {
    kvstore_name_t *names;
    uint8_t *types;
    size_t count;
} iotutils_kv_listing_t;

static void iotutils_kv_list(kvstore_t *kv, const char *ns, iotutils_kv_listing_t *l) {
    for (size_t cap = 32;; cap *= 4) {
        l->names = m_new(kvstore_name_t, cap);
        l->types = ns != NULL ? m_new(uint8_t, cap) : NULL;
        int rc = ns != NULL ? kvstore_keys(kv, ns, l->names, l->types, cap, &l->count)
                            : kvstore_namespaces(kv, l->names, cap, &l->count);
        if (rc == KVS_OK) {
            return;
        }
        m_del(kvstore_name_t, l->names, cap);
        if (l->types != NULL) {
            m_del(uint8_t, l->types, cap);
        }
        if (rc != KVS_ERR_BUF_FULL) {
            iotutils_kv_raise(rc);
        }
    }
}

// keys(ns) -> [(key, type)]
static mp_obj_t iotutils_KVStore_keys(mp_obj_t self_in, mp_obj_t ns_in) {
    kvstore_t *kv = iotutils_kv_get(self_in);
    iotutils_kv_listing_t l;
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
    iotutils_kv_listing_t l;
    iotutils_kv_list(kv, NULL, &l);
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

MP_DEFINE_CONST_OBJ_TYPE(iotutils_KVStore_type, MP_QSTR_KVStore, MP_TYPE_FLAG_NONE, make_new, iotutils_KVStore_make_new,
                         locals_dict, &iotutils_KVStore_locals_dict);
