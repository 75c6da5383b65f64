# ESP32 build (USER_C_MODULES=<abs>/c_modules/micropython.cmake): the _iotutils module.
# On the chip the key/value store runs on ESP-IDF's own NVS (kvstore_idf.c); the host NVS
# engine (nvs_*.c) is only for the unix port (iotutils/micropython.mk). Paths are absolute
# (CMAKE_CURRENT_LIST_DIR): the esp32 build evaluates this file from its own directory.
add_library(usermod_iotutils INTERFACE)

set(_iotutils_dir ${CMAKE_CURRENT_LIST_DIR}/iotutils)
target_sources(usermod_iotutils INTERFACE
    # the module table, then one binding per core
    ${_iotutils_dir}/mod_iotutils.c
    ${_iotutils_dir}/mod_httpparse.c
    ${_iotutils_dir}/mod_kvstore.c
    ${_iotutils_dir}/mod_heap.c
    ${_iotutils_dir}/mod_jsoncheck.c
    # the portable cores, and the key/value store's ESP-IDF backend
    ${_iotutils_dir}/httpparse.c
    ${_iotutils_dir}/kvstore.c
    ${_iotutils_dir}/jsoncheck.c
    ${_iotutils_dir}/kvstore_idf.c
    # OTA signature verification (_iotsig) over ESP-IDF's mbedTLS component, which the port links for
    # TLS: ECDSA and P-256 are on by default (CONFIG_MBEDTLS_ECDSA_C, CONFIG_MBEDTLS_ECP_DP_SECP256R1_ENABLED)
    ${_iotutils_dir}/sigverify.c
    ${_iotutils_dir}/mod_sigverify.c
)
target_include_directories(usermod_iotutils INTERFACE ${_iotutils_dir})
target_compile_definitions(usermod_iotutils INTERFACE IOTUTILS_KV_IDF=1)

target_link_libraries(usermod INTERFACE usermod_iotutils)
