// sigverify: ECDSA P-256 / SHA-256 signature check of OTA releases, over mbedTLS.
//
// The one core here that is not libc only: it uses the mbedTLS the firmware links anyway
// (ESP-IDF's component on the ESP32, lib/mbedtls in the unix port; both enable ECDSA and
// P-256 by default). Bound to MicroPython as _iotsig.verify (mod_sigverify.c); the same rules
// as the pure-Python verifier in modules/iotutils/sign.py; tested from pytest against Debian's
// libmbedtls (tests/c/test_sigverify.py).
#ifndef IOTUTILS_SIGVERIFY_H
#define IOTUTILS_SIGVERIFY_H

#include <stdint.h>

#define SIGVERIFY_POINT_LEN  (65) // 0x04 | x | y, big-endian
#define SIGVERIFY_DIGEST_LEN (32) // SHA-256 of the signed bytes
#define SIGVERIFY_SIG_LEN    (64) // r | s, big-endian, 32 bytes each

#define SIGVERIFY_OK      (0)  // the signature is valid
#define SIGVERIFY_BAD_SIG (1)  // it is not (includes r or s outside [1, n-1])
#define SIGVERIFY_BAD_KEY (-1) // the point is not an uncompressed P-256 point on the curve
#define SIGVERIFY_NO_MEM  (-2) // mbedTLS could not allocate its numbers
#define SIGVERIFY_ERROR   (-3) // any other mbedTLS failure

// Check sig over digest with the public key point. The buffers have the lengths above.
int sigverify_p256(const uint8_t *point, const uint8_t *digest, const uint8_t *sig);

#endif // IOTUTILS_SIGVERIFY_H
