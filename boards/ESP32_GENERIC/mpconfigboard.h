// iotutils on a generic ESP32 (4 MB flash, no PSRAM required).
// Threads (the web server's workers) and single-precision floats are the port's defaults
// (ports/esp32/mpconfigport.h); boards/UNIX configures the host firmware the same way.
#define MICROPY_HW_BOARD_NAME "iotutils ESP32"
#define MICROPY_HW_MCU_NAME "ESP32"
