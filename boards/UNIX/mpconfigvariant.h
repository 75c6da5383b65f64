// iotutils host firmware: the unix port configured like the ESP32 build where it matters,
// so the host runs the same code paths (C module, frozen toolbox, threads with a GIL).
#define MICROPY_CONFIG_ROM_LEVEL (MICROPY_CONFIG_ROM_LEVEL_EXTRA_FEATURES)

// Threads with a GIL, as on the ESP32 port.
#define MICROPY_PY_THREAD (1)
#define MICROPY_PY_THREAD_GIL (1)

// Single-precision floats, like the ESP32.
#define MICROPY_FLOAT_IMPL (MICROPY_FLOAT_IMPL_FLOAT)

#define MICROPY_PY_SYS_PLATFORM "linux"
