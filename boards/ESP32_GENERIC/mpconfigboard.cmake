# iotutils ESP32 board: MicroPython's ESP32_GENERIC plus two OTA app slots with rollback,
# the iotutils C module (USER_C_MODULES) and frozen toolbox (FROZEN_MANIFEST), set by the Makefile.
# ports/esp32/CMakeLists.txt includes this file before project(): MICROPY_PORT_DIR is not set
# yet, so the port's files are named from CMAKE_CURRENT_SOURCE_DIR (= ports/esp32).
set(IDF_TARGET esp32)

# The partition table path must be absolute: ESP-IDF resolves a relative one against
# ports/esp32, and this board lives outside the MicroPython tree. The sdkconfig files are
# concatenated verbatim (no variable expansion), hence this generated one-line fragment.
file(WRITE ${CMAKE_BINARY_DIR}/sdkconfig.partitions
     "CONFIG_PARTITION_TABLE_CUSTOM_FILENAME=\"${MICROPY_BOARD_DIR}/partitions.csv\"\n")

# Later files override earlier ones: the board's settings win over the port's base.
set(SDKCONFIG_DEFAULTS
    ${CMAKE_CURRENT_SOURCE_DIR}/boards/sdkconfig.base
    ${CMAKE_CURRENT_SOURCE_DIR}/boards/sdkconfig.ble
    ${MICROPY_BOARD_DIR}/sdkconfig.board
    ${CMAKE_BINARY_DIR}/sdkconfig.partitions
)

# The app descriptor's version carries the iotutils release (OTA compares it; the project name
# stays "micropython", as MicroPython's esp32 build names it). ESP-IDF takes PROJECT_VER when it
# is set before project(); sdkconfig.board keeps both fields in the descriptor.
file(STRINGS ${MICROPY_BOARD_DIR}/../../modules/iotutils/__init__.py _iotutils_version_line
     REGEX "^__version__ = ")
string(REGEX REPLACE "^__version__ = \"([^\"]+)\".*" "\\1" IOTUTILS_VERSION "${_iotutils_version_line}")
if(NOT IOTUTILS_VERSION)
    message(FATAL_ERROR "no __version__ in modules/iotutils/__init__.py")
endif()
set(PROJECT_VER ${IOTUTILS_VERSION})

# Used when the board is built without the Makefile (FROZEN_MANIFEST on the command line wins).
if(NOT MICROPY_FROZEN_MANIFEST)
    set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/../../frozen/manifest.py)
endif()
