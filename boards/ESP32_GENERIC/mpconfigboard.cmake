# iotutils ESP32 board: MicroPython's ESP32_GENERIC plus two OTA app slots with rollback,
# the iotutils C module (USER_C_MODULES) and frozen toolbox (FROZEN_MANIFEST), set by the Makefile.
set(IDF_TARGET esp32)

# The partition table path must be absolute: ESP-IDF resolves a relative one against
# ports/esp32, and this board lives outside the MicroPython tree.
file(WRITE ${CMAKE_BINARY_DIR}/sdkconfig.partitions
     "CONFIG_PARTITION_TABLE_CUSTOM_FILENAME=\"${MICROPY_BOARD_DIR}/partitions.csv\"\n")

set(SDKCONFIG_DEFAULTS
    ${MICROPY_PORT_DIR}/boards/sdkconfig.base
    ${MICROPY_PORT_DIR}/boards/sdkconfig.ble
    ${MICROPY_BOARD_DIR}/sdkconfig.board
    ${CMAKE_BINARY_DIR}/sdkconfig.partitions
)

# The app descriptor's version carries the iotutils release (OTA compares it; the project name
# stays "micropython", as MicroPython's esp32 build names it).
file(STRINGS ${MICROPY_BOARD_DIR}/../../modules/iotutils/__init__.py _iotutils_version_line
     REGEX "^__version__ = ")
string(REGEX REPLACE "^__version__ = \"([^\"]+)\".*" "\\1" IOTUTILS_VERSION "${_iotutils_version_line}")
set(PROJECT_VER ${IOTUTILS_VERSION})

if(NOT MICROPY_FROZEN_MANIFEST)
    set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/../../frozen/manifest.py)
endif()
