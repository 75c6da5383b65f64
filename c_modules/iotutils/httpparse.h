// httpparse: zero-copy, incremental HTTP/1.x request head parser + in-place chunked decoder.
//
// The exact rules, the `out` and `state` layouts and the REASONS table are documented in
// modules/iotutils/http.py, the pure-Python twin; both give the same answer for every input.
// libc only: used by the MicroPython binding (mod_httpparse.c), the tests (ctypes), the fuzzer
// and the benchmark driver.
#ifndef IOTUTILS_HTTPPARSE_H
#define IOTUTILS_HTTPPARSE_H

#include <stddef.h>
#include <stdint.h>

// httpparse_head() results: > 0 bytes consumed, or one of these.
#define HP_NEED_MORE         (0)
#define HP_BAD_ARGS          (-1) // out_len < HP_OUT_FIXED or len > INT32_MAX (binding bug)
#define HP_BAD_REQUEST       (-400)
#define HP_TOO_LARGE         (-413)
#define HP_HEADERS_TOO_LARGE (-431)
#define HP_NOT_IMPLEMENTED   (-501)
#define HP_BAD_VERSION       (-505)

#define HP_OUT_FIXED      (9)
#define HP_OUT_PER_HEADER (4)

// out[] slots
#define HP_OUT_METHOD_OFF     (0)
#define HP_OUT_METHOD_LEN     (1)
#define HP_OUT_TARGET_OFF     (2)
#define HP_OUT_TARGET_LEN     (3)
#define HP_OUT_MINOR          (4)
#define HP_OUT_NHEADERS       (5)
#define HP_OUT_BODY           (6)
#define HP_OUT_CONTENT_LENGTH (7)
#define HP_OUT_FLAGS          (8)

#define HP_BODY_NONE    (0)
#define HP_BODY_LENGTH  (1)
#define HP_BODY_CHUNKED (2)

#define HP_FLAG_CLOSE           (1)
#define HP_FLAG_KEEP_ALIVE      (2)
#define HP_FLAG_EXPECT_CONTINUE (4)
#define HP_FLAG_UPGRADE         (8)

// chunked decoder state
#define HP_CHUNK_STATE_LEN (4)
#define HP_CS_DONE         (-1)
#define HP_CS_ERROR        (-2)

// Parse buf[0:len]. Returns bytes consumed (> 0), HP_NEED_MORE, or -status (out[0] = reason).
int httpparse_head(const char *buf, size_t len, int32_t *out, size_t out_len);

// Decode chunked body bytes buf[start:end] in place; state: HP_CHUNK_STATE_LEN int32, zeroed for
// a new body. Returns data bytes now at buf[start:], or -status (state[3] = reason).
int httpparse_chunked(char *buf, size_t start, size_t end, int32_t *state);

// Number of entries in the reason table, and entry i ("" when out of range).
int httpparse_reason_count(void);
const char *httpparse_reason(int i);

#endif // IOTUTILS_HTTPPARSE_H
