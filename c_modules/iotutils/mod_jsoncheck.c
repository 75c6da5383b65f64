// _iotutils.JSONCheck: the binding of the JSON validator core (jsoncheck.c).
//
//   c = JSONCheck(limit)     # the deepest nesting allowed (at most 64)
//   c.feed(buf[, n])         # the next piece (its first n bytes); ValueError as soon as it is not JSON
//   c.end()                  # ValueError unless the pieces were one whole JSON text; else the number
//                            # of surrogate pairs escaped in it (\uD83D\uDCA1: see Request.json)
//
// The errors say why and where: "invalid JSON at byte N", "JSON nested deeper than N levels".
// modules/iotutils/web/json_body.py has the same class in Python for runtimes without this module.

#include "py/runtime.h"

#include "jsoncheck.h"
#include "mod_iotutils.h"

typedef struct {
    mp_obj_base_t base;
    jsoncheck_t jc;
} iotutils_jsoncheck_obj_t;

static void iotutils_jsoncheck_raise(const jsoncheck_t *jc, int r) {
    if (r == JSONCHECK_DEEP) {
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("JSON nested deeper than %d levels"), (int)jc->limit);
    }
    mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("invalid JSON at byte %u"), (unsigned)jc->pos);
}

static mp_obj_t iotutils_jsoncheck_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw,
                                            const mp_obj_t *args) {
    mp_arg_check_num(n_args, n_kw, 1, 1, false);
    mp_int_t limit = mp_obj_get_int(args[0]);
    if (limit < 1 || limit > JSONCHECK_MAX_DEPTH) {
        mp_raise_ValueError(MP_ERROR_TEXT("limit: 1..64"));
    }
    iotutils_jsoncheck_obj_t *self = mp_obj_malloc(iotutils_jsoncheck_obj_t, type);
    jsoncheck_init(&self->jc, (unsigned)limit);
    return MP_OBJ_FROM_PTR(self);
}

// feed(buf[, n])
static mp_obj_t iotutils_jsoncheck_feed(size_t n_args, const mp_obj_t *args) {
    iotutils_jsoncheck_obj_t *self = MP_OBJ_TO_PTR(args[0]);
    mp_buffer_info_t bi;
    mp_get_buffer_raise(args[1], &bi, MP_BUFFER_READ);
    size_t n = bi.len;
    if (n_args > 2) {
        mp_int_t want = mp_obj_get_int(args[2]);
        if (want < 0 || (size_t)want > bi.len) {
            mp_raise_ValueError(MP_ERROR_TEXT("n"));
        }
        n = (size_t)want;
    }
    int r = jsoncheck_feed(&self->jc, bi.buf, n);
    if (r != JSONCHECK_OK) {
        iotutils_jsoncheck_raise(&self->jc, r);
    }
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(iotutils_jsoncheck_feed_obj, 2, 3, iotutils_jsoncheck_feed);

static mp_obj_t iotutils_jsoncheck_end(mp_obj_t self_in) {
    iotutils_jsoncheck_obj_t *self = MP_OBJ_TO_PTR(self_in);
    int r = jsoncheck_end(&self->jc);
    if (r != JSONCHECK_OK) {
        iotutils_jsoncheck_raise(&self->jc, r);
    }
    return mp_obj_new_int_from_uint(self->jc.pairs);
}
static MP_DEFINE_CONST_FUN_OBJ_1(iotutils_jsoncheck_end_obj, iotutils_jsoncheck_end);

static const mp_rom_map_elem_t iotutils_jsoncheck_locals_table[] = {
    {MP_ROM_QSTR(MP_QSTR_feed), MP_ROM_PTR(&iotutils_jsoncheck_feed_obj)},
    {MP_ROM_QSTR(MP_QSTR_end), MP_ROM_PTR(&iotutils_jsoncheck_end_obj)},
};
static MP_DEFINE_CONST_DICT(iotutils_jsoncheck_locals, iotutils_jsoncheck_locals_table);

MP_DEFINE_CONST_OBJ_TYPE(iotutils_JSONCheck_type, MP_QSTR_JSONCheck, MP_TYPE_FLAG_NONE, make_new,
                         iotutils_jsoncheck_make_new, locals_dict, &iotutils_jsoncheck_locals);
