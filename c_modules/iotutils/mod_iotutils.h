// _iotutils: what each binding file gives the module table in mod_iotutils.c.
//
// Private to the bindings. Each core has one binding file (mod_<core>.c) that converts
// MicroPython objects to the core's C arguments and back; the table that names them all under
// one module lives in mod_iotutils.c, so no binding needs to know about another.
#ifndef IOTUTILS_MOD_IOTUTILS_H
#define IOTUTILS_MOD_IOTUTILS_H

#include "py/obj.h"

// mod_httpparse.c: parse_head, chunked_decode, http_reason (the constants come from httpparse.h).
MP_DECLARE_CONST_FUN_OBJ_3(iotutils_parse_head_obj);
MP_DECLARE_CONST_FUN_OBJ_VAR_BETWEEN(iotutils_chunked_decode_obj);
MP_DECLARE_CONST_FUN_OBJ_1(iotutils_http_reason_obj);

// mod_kvstore.c: the KVStore class.
extern const mp_obj_type_t iotutils_KVStore_type;

// mod_jsoncheck.c: the JSONCheck class (a strict JSON validator fed in pieces).
extern const mp_obj_type_t iotutils_JSONCheck_type;

// mod_heap.c: heap_largest (the heap's largest free block, read without allocating).
MP_DECLARE_CONST_FUN_OBJ_0(iotutils_heap_largest_obj);

#endif // IOTUTILS_MOD_IOTUTILS_H
