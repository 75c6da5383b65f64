// iotutils host firmware: the unix port configured like the ESP32 build where it matters,
// so the host runs the same code paths (C module, frozen toolbox, threads with a GIL).
// Threads with a GIL come from mpconfigvariant.mk (the port's Makefile passes them as -D flags).
#define MICROPY_CONFIG_ROM_LEVEL (MICROPY_CONFIG_ROM_LEVEL_EXTRA_FEATURES)

// Single-precision floats, like the ESP32 (set before the common header, which defaults to double).
#define MICROPY_FLOAT_IMPL (MICROPY_FLOAT_IMPL_FLOAT)

// The standard variant's unix extras (os/time/select/machine.mem, .mpy loading, REPL):
// this variant lives outside the port tree, so name the header by its path in ports/unix.
#include "variants/mpconfigvariant_common.h"
