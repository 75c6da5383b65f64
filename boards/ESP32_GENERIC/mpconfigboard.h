// iotutils on a generic ESP32 (4 MB flash, no PSRAM required).
#define MICROPY_HW_BOARD_NAME "iotutils ESP32"
#define MICROPY_HW_MCU_NAME "ESP32"

// The web server runs workers in threads beside user code.
#define MICROPY_PY_THREAD (1)
