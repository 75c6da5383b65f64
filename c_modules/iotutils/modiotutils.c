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

// ---- end section: key/value store binding ----

static const mp_rom_map_elem_t iotutils_module_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR__iotutils) },
    { MP_ROM_QSTR(MP_QSTR_abi), MP_ROM_INT(IOTUTILS_ABI) },
    // ---- http parser entries ----
    { MP_ROM_QSTR(MP_QSTR_parse_head), MP_ROM_PTR(&iotutils_http_parse_head_obj) },
    { MP_ROM_QSTR(MP_QSTR_chunked_decode), MP_ROM_PTR(&iotutils_http_chunked_decode_obj) },
    { MP_ROM_QSTR(MP_QSTR_http_reason), MP_ROM_PTR(&iotutils_http_reason_obj) },
    { MP_ROM_QSTR(MP_QSTR_NEED_MORE), MP_ROM_INT(HP_NEED_MORE) },
    { MP_ROM_QSTR(MP_QSTR_BODY_NONE), MP_ROM_INT(HP_BODY_NONE) },
    { MP_ROM_QSTR(MP_QSTR_BODY_LENGTH), MP_ROM_INT(HP_BODY_LENGTH) },
    { MP_ROM_QSTR(MP_QSTR_BODY_CHUNKED), MP_ROM_INT(HP_BODY_CHUNKED) },
    { MP_ROM_QSTR(MP_QSTR_FLAG_CLOSE), MP_ROM_INT(HP_FLAG_CLOSE) },
    { MP_ROM_QSTR(MP_QSTR_FLAG_KEEP_ALIVE), MP_ROM_INT(HP_FLAG_KEEP_ALIVE) },
    { MP_ROM_QSTR(MP_QSTR_FLAG_EXPECT_CONTINUE), MP_ROM_INT(HP_FLAG_EXPECT_CONTINUE) },
    { MP_ROM_QSTR(MP_QSTR_FLAG_UPGRADE), MP_ROM_INT(HP_FLAG_UPGRADE) },
    { MP_ROM_QSTR(MP_QSTR_OUT_FIXED), MP_ROM_INT(HP_OUT_FIXED) },
    { MP_ROM_QSTR(MP_QSTR_CHUNK_STATE_LEN), MP_ROM_INT(HP_CHUNK_STATE_LEN) },
    { MP_ROM_QSTR(MP_QSTR_CS_DONE), MP_ROM_INT(HP_CS_DONE) },
    { MP_ROM_QSTR(MP_QSTR_CS_ERROR), MP_ROM_INT(HP_CS_ERROR) },
    // ---- key/value store entries ----
};
static MP_DEFINE_CONST_DICT(iotutils_module_globals, iotutils_module_globals_table);

const mp_obj_module_t iotutils_user_cmodule = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&iotutils_module_globals,
};

MP_REGISTER_MODULE(MP_QSTR__iotutils, iotutils_user_cmodule);
