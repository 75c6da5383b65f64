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

// ---- end section: http parser binding ----

// ---- section: key/value store binding (kvstore.c over ESP-IDF NVS or nvs_host.c) ----

// ---- end section: key/value store binding ----

static const mp_rom_map_elem_t iotutils_module_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR__iotutils) },
    { MP_ROM_QSTR(MP_QSTR_abi), MP_ROM_INT(IOTUTILS_ABI) },
    // ---- http parser entries ----
    // ---- key/value store entries ----
};
static MP_DEFINE_CONST_DICT(iotutils_module_globals, iotutils_module_globals_table);

const mp_obj_module_t iotutils_user_cmodule = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&iotutils_module_globals,
};

MP_REGISTER_MODULE(MP_QSTR__iotutils, iotutils_user_cmodule);
