// _iotutils.heap_largest(): the largest block the MicroPython heap can give now, in bytes.
//
// Read from the GC's own allocation table (gc_info: what micropython.mem_info() prints as "max
// free sz"), so nothing is allocated. The Python fallback (iotutils.memory) finds it by allocating
// ever larger bytearrays, and the conservative GC can then keep the largest one alive for a while
// through a stale pointer on the C stack: the boot report once left 11 % of the heap free that way.
// No core: this only reads the runtime, so the binding is all there is.

#include "py/gc.h"
#include "py/runtime.h"

#include "mod_iotutils.h"

static mp_obj_t iotutils_heap_largest(void) {
    gc_info_t info;
    gc_info(&info);
    return mp_obj_new_int_from_uint(info.max_free * MICROPY_BYTES_PER_GC_BLOCK);
}
MP_DEFINE_CONST_FUN_OBJ_0(iotutils_heap_largest_obj, iotutils_heap_largest);
