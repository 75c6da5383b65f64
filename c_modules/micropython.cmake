# ESP32 build (USER_C_MODULES=<abs>/c_modules/micropython.cmake): the _iotutils module.
# On the chip the key/value store runs on ESP-IDF's own NVS (kvstore_idf.c); the host NVS
# engine (nvs_host.c) is only for the unix port (iotutils/micropython.mk).
add_library(usermod_iotutils INTERFACE)

set(_iotutils_dir ${CMAKE_CURRENT_LIST_DIR}/iotutils)
set(_iotutils_sources ${_iotutils_dir}/modiotutils.c)
# The cores land one by one: list those present, as micropython.mk does with $(wildcard).
foreach(_core httpparse.c kvstore.c kvstore_idf.c)
    if(EXISTS ${_iotutils_dir}/${_core})
        list(APPEND _iotutils_sources ${_iotutils_dir}/${_core})
    endif()
endforeach()

# OTA signature verification (_iotsig) over ESP-IDF's mbedTLS component, which the port links for
# TLS: ECDSA and P-256 are on by default (CONFIG_MBEDTLS_ECDSA_C, CONFIG_MBEDTLS_ECP_DP_SECP256R1_ENABLED).
list(APPEND _iotutils_sources ${_iotutils_dir}/sigverify.c ${_iotutils_dir}/mod_sigverify.c)

target_sources(usermod_iotutils INTERFACE ${_iotutils_sources})
target_include_directories(usermod_iotutils INTERFACE ${_iotutils_dir})
target_compile_definitions(usermod_iotutils INTERFACE IOTUTILS_KV_IDF=1)

target_link_libraries(usermod INTERFACE usermod_iotutils)
