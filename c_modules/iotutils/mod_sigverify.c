// _iotsig: the thin MicroPython binding of sigverify.c (ECDSA P-256 over mbedTLS).
//
//   _iotsig.verify(point, digest, sig) -> bool
//       point: 65 bytes 04|x|y, digest: 32 bytes (SHA-256), sig: 64 bytes r|s.
//       False for a signature that does not verify (r or s out of range included);
//       ValueError for wrong lengths or a point that is not on P-256; MemoryError when
//       mbedTLS cannot allocate.
//
// A module of its own (not a section of _iotutils): the firmware has it only where mbedTLS is
// built in; modules/iotutils/sign.py falls back to pure Python without it.
#include "py/runtime.h"
#include "py/obj.h"

#include "sigverify.h"

// Bumped whenever verify's signature or meaning changes, so sign.py can detect a stale firmware.
#define IOTSIG_ABI (1)

static const uint8_t *iotsig_buffer(mp_obj_t obj, size_t want, const char *what) {
    mp_buffer_info_t bi;
    mp_get_buffer_raise(obj, &bi, MP_BUFFER_READ);
    if (bi.len != want) {
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("%s must be %d bytes"), what, (int)want);
    }
    return (const uint8_t *)bi.buf;
}

static mp_obj_t iotsig_verify(mp_obj_t point_in, mp_obj_t digest_in, mp_obj_t sig_in) {
    const uint8_t *point = iotsig_buffer(point_in, SIGVERIFY_POINT_LEN, "point");
    const uint8_t *digest = iotsig_buffer(digest_in, SIGVERIFY_DIGEST_LEN, "digest");
    const uint8_t *sig = iotsig_buffer(sig_in, SIGVERIFY_SIG_LEN, "sig");
    switch (sigverify_p256(point, digest, sig)) {
        case SIGVERIFY_OK:
            return mp_const_true;
        case SIGVERIFY_BAD_SIG:
            return mp_const_false;
        case SIGVERIFY_BAD_KEY:
            mp_raise_ValueError(MP_ERROR_TEXT("key: the point is not on the P-256 curve"));
        case SIGVERIFY_NO_MEM:
            mp_raise_type(&mp_type_MemoryError);
        default:
            mp_raise_msg(&mp_type_RuntimeError, MP_ERROR_TEXT("mbedTLS ECDSA verify failed"));
    }
}
static MP_DEFINE_CONST_FUN_OBJ_3(iotsig_verify_obj, iotsig_verify);

static const mp_rom_map_elem_t iotsig_module_globals_table[] = {
    {MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR__iotsig)},
    {MP_ROM_QSTR(MP_QSTR_abi), MP_ROM_INT(IOTSIG_ABI)},
    {MP_ROM_QSTR(MP_QSTR_verify), MP_ROM_PTR(&iotsig_verify_obj)},
};
static MP_DEFINE_CONST_DICT(iotsig_module_globals, iotsig_module_globals_table);

const mp_obj_module_t iotsig_user_cmodule = {
    .base = {&mp_type_module},
    .globals = (mp_obj_dict_t *)&iotsig_module_globals,
};

MP_REGISTER_MODULE(MP_QSTR__iotsig, iotsig_user_cmodule);
