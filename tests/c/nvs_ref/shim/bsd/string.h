// Host stand-in: strlcpy for C libraries without it (nvs_storage.cpp looks for <bsd/string.h>).
#pragma once
#include <string.h>
static inline size_t iotutils_strlcpy(char *dst, const char *src, size_t size) {
    size_t n = strlen(src);
    if (size) {
        size_t m = n < size - 1 ? n : size - 1;
        memcpy(dst, src, m);
        dst[m] = 0;
    }
    return n;
}
#define strlcpy iotutils_strlcpy
