// _iotutils.parse_head / chunked_decode / http_reason: the binding of the HTTP parser core.
//
// Separate from the core (httpparse.c: libc only, also built for the tests, the fuzzer and the
// benchmark) and from the other bindings: this file only checks arguments and converts
// MicroPython buffers and ints to the core's C arguments and back. Same names and behaviour as
// modules/iotutils/http.py; REASONS stays in Python, the C table is reached through http_reason(i).

#include <string.h>

#include "py/binary.h"
#include "py/runtime.h"

#include "httpparse.h"
#include "mod_iotutils.h"

// A writable array('i') (or 32-bit 'l') of at least min_len items; returns its items.
static int32_t *iotutils_int32_array(mp_obj_t obj, size_t min_len, size_t *len, const char *what) {
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

// parse_head(buf, length, out) -> consumed (> 0), NEED_MORE, or -status
static mp_obj_t iotutils_parse_head(mp_obj_t buf_in, mp_obj_t length_in, mp_obj_t out_in) {
    mp_buffer_info_t bi;
    mp_get_buffer_raise(buf_in, &bi, MP_BUFFER_READ);
    mp_int_t length = mp_obj_get_int(length_in);
    if (length < 0 || (size_t)length > bi.len) {
        mp_raise_ValueError(MP_ERROR_TEXT("length"));
    }
    size_t out_len;
    int32_t *out = iotutils_int32_array(out_in, HP_OUT_FIXED, &out_len, "out");
    int r = httpparse_head(bi.buf, (size_t)length, out, out_len);
    if (r == HP_BAD_ARGS) {
        mp_raise_ValueError(MP_ERROR_TEXT("length"));
    }
    return mp_obj_new_int(r);
}
MP_DEFINE_CONST_FUN_OBJ_3(iotutils_parse_head_obj, iotutils_parse_head);

// chunked_decode(buf, start, end, state) -> data bytes now at buf[start:], or -status
static mp_obj_t iotutils_chunked_decode(size_t n_args, const mp_obj_t *args) {
    (void)n_args;
    mp_buffer_info_t bi;
    mp_get_buffer_raise(args[0], &bi, MP_BUFFER_WRITE);
    mp_int_t start = mp_obj_get_int(args[1]);
    mp_int_t end = mp_obj_get_int(args[2]);
    if (start < 0 || end < start || (size_t)end > bi.len) {
        mp_raise_ValueError(MP_ERROR_TEXT("range"));
    }
    size_t state_len;
    int32_t *state = iotutils_int32_array(args[3], HP_CHUNK_STATE_LEN, &state_len, "state");
    int r = httpparse_chunked(bi.buf, (size_t)start, (size_t)end, state);
    if (r == HP_BAD_ARGS) {
        mp_raise_ValueError(MP_ERROR_TEXT("state"));
    }
    return mp_obj_new_int(r);
}
MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(iotutils_chunked_decode_obj, 4, 4, iotutils_chunked_decode);

// http_reason(i) -> the reason text of entry i ("" when out of range)
static mp_obj_t iotutils_http_reason(mp_obj_t i_in) {
    const char *s = httpparse_reason(mp_obj_get_int(i_in));
    return mp_obj_new_str(s, strlen(s));
}
MP_DEFINE_CONST_FUN_OBJ_1(iotutils_http_reason_obj, iotutils_http_reason);
