// sigverify: ECDSA P-256 / SHA-256 verification over mbedTLS (see sigverify.h).
//
// mbedtls_ecdsa_verify() exists with the same signature in mbedTLS 2.28 (Debian 12, the
// tests) and 3.6 (MicroPython v1.28.0's lib/mbedtls, ESP-IDF v5.5); no struct field is touched,
// so 3.x's private fields do not matter. It refuses r or s outside [1, n-1] itself; the point
// is checked first (mbedtls_ecp_check_pubkey: coordinates below p, on the curve, not zero), so
// a bad key is reported as such rather than as a bad signature.
#include <stddef.h>

#include "mbedtls/bignum.h"
#include "mbedtls/ecdsa.h"
#include "mbedtls/ecp.h"

#include "sigverify.h"

#if !defined(MBEDTLS_ECDSA_C) || !defined(MBEDTLS_ECP_C) || !defined(MBEDTLS_ECP_DP_SECP256R1_ENABLED)
// ESP32: CONFIG_MBEDTLS_ECDSA_C=y and CONFIG_MBEDTLS_ECP_DP_SECP256R1_ENABLED=y (ESP-IDF's defaults)
#error "sigverify needs mbedTLS with MBEDTLS_ECDSA_C and MBEDTLS_ECP_DP_SECP256R1_ENABLED"
#endif

static int sigverify_mbedtls_result(int ret) {
    if (ret == MBEDTLS_ERR_MPI_ALLOC_FAILED || ret == MBEDTLS_ERR_ECP_ALLOC_FAILED) {
        return SIGVERIFY_NO_MEM;
    }
    return SIGVERIFY_ERROR;
}

int sigverify_p256(const uint8_t *point, const uint8_t *digest, const uint8_t *sig) {
    mbedtls_ecp_group grp;
    mbedtls_ecp_point q;
    mbedtls_mpi r, s;
    mbedtls_ecp_group_init(&grp);
    mbedtls_ecp_point_init(&q);
    mbedtls_mpi_init(&r);
    mbedtls_mpi_init(&s);
    int result;
    int ret = mbedtls_ecp_group_load(&grp, MBEDTLS_ECP_DP_SECP256R1);
    if (ret != 0) {
        result = sigverify_mbedtls_result(ret);
        goto out;
    }
    // only the uncompressed form: read_binary would also take the 1-byte zero point
    if (point[0] != 0x04) {
        result = SIGVERIFY_BAD_KEY;
        goto out;
    }
    ret = mbedtls_ecp_point_read_binary(&grp, &q, point, SIGVERIFY_POINT_LEN);
    if (ret == 0) {
        ret = mbedtls_ecp_check_pubkey(&grp, &q);
    }
    if (ret != 0) {
        result = (ret == MBEDTLS_ERR_ECP_INVALID_KEY || ret == MBEDTLS_ERR_ECP_BAD_INPUT_DATA
                  || ret == MBEDTLS_ERR_ECP_FEATURE_UNAVAILABLE)
                     ? SIGVERIFY_BAD_KEY
                     : sigverify_mbedtls_result(ret);
        goto out;
    }
    ret = mbedtls_mpi_read_binary(&r, sig, SIGVERIFY_SIG_LEN / 2);
    if (ret == 0) {
        ret = mbedtls_mpi_read_binary(&s, sig + SIGVERIFY_SIG_LEN / 2, SIGVERIFY_SIG_LEN / 2);
    }
    if (ret != 0) {
        result = sigverify_mbedtls_result(ret);
        goto out;
    }
    ret = mbedtls_ecdsa_verify(&grp, digest, SIGVERIFY_DIGEST_LEN, &q, &r, &s);
    if (ret == 0) {
        result = SIGVERIFY_OK;
    } else if (ret == MBEDTLS_ERR_ECP_VERIFY_FAILED) {
        result = SIGVERIFY_BAD_SIG;
    } else {
        result = sigverify_mbedtls_result(ret);
    }
out:
    mbedtls_mpi_free(&s);
    mbedtls_mpi_free(&r);
    mbedtls_ecp_point_free(&q);
    mbedtls_ecp_group_free(&grp);
    return result;
}
