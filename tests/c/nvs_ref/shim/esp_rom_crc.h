// Host stand-in for the ROM's CRC32 (little-endian, state inverted on entry and exit).
#pragma once
#include <stdint.h>
static inline uint32_t esp_rom_crc32_le(uint32_t crc, uint8_t const *buf, uint32_t len) {
    crc = ~crc;
    while (len--) {
        crc ^= *buf++;
        for (int k = 0; k < 8; k++) {
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
        }
    }
    return ~crc;
}
