# ESP32 build (USER_C_MODULES=c_modules/micropython.cmake): the _iotutils module.
# On the chip the key/value store runs on ESP-IDF's own NVS (kvstore_idf.c); the host NVS
# engine (nvs_host.c) is only for the unix port.
add_library(usermod_iotutils INTERFACE)

target_sources(usermod_iotutils INTERFACE
    ${CMAKE_CURRENT_LIST_DIR}/iotutils/modiotutils.c
    ${CMAKE_CURRENT_LIST_DIR}/iotutils/httpparse.c
    ${CMAKE_CURRENT_LIST_DIR}/iotutils/kvstore.c
    ${CMAKE_CURRENT_LIST_DIR}/iotutils/kvstore_idf.c
)

target_include_directories(usermod_iotutils INTERFACE ${CMAKE_CURRENT_LIST_DIR}/iotutils)
target_compile_definitions(usermod_iotutils INTERFACE IOTUTILS_KV_IDF=1)

target_link_libraries(usermod INTERFACE usermod_iotutils)
