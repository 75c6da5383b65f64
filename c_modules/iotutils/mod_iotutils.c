// _iotutils: the module table, the ABI number and the module's registration.
//
// Kept apart from the bindings (mod_httpparse.c, mod_kvstore.c) because MicroPython registers a
// module once, from one table: this file only names what the bindings define.

#include "py/runtime.h"

#include "httpparse.h"
#include "mod_iotutils.h"

// Bumped whenever a binding signature changes, so Python code can detect a stale firmware.
#define IOTUTILS_ABI (3)

static const mp_rom_map_elem_t iotutils_module_globals_table[] = {
    {MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR__iotutils)},
    {MP_ROM_QSTR(MP_QSTR_abi), MP_ROM_INT(IOTUTILS_ABI)},
    // ---- http parser (mod_httpparse.c over httpparse.c) ----
    {MP_ROM_QSTR(MP_QSTR_parse_head), MP_ROM_PTR(&iotutils_parse_head_obj)},
    {MP_ROM_QSTR(MP_QSTR_chunked_decode), MP_ROM_PTR(&iotutils_chunked_decode_obj)},
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
    // ---- key/value store (mod_kvstore.c over kvstore.c) ----
    {MP_ROM_QSTR(MP_QSTR_KVStore), MP_ROM_PTR(&iotutils_KVStore_type)},
    // ---- strict JSON (mod_jsoncheck.c over jsoncheck.c) ----
    {MP_ROM_QSTR(MP_QSTR_JSONCheck), MP_ROM_PTR(&iotutils_JSONCheck_type)},
    // ---- the heap (mod_heap.c: the runtime's own figures) ----
    {MP_ROM_QSTR(MP_QSTR_heap_largest), MP_ROM_PTR(&iotutils_heap_largest_obj)},
};
static MP_DEFINE_CONST_DICT(iotutils_module_globals, iotutils_module_globals_table);

const mp_obj_module_t iotutils_user_cmodule = {
    .base = {&mp_type_module},
    .globals = (mp_obj_dict_t *)&iotutils_module_globals,
};

MP_REGISTER_MODULE(MP_QSTR__iotutils, iotutils_user_cmodule);
