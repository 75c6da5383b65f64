// Host stand-in: NVS pages are 4096-byte flash sectors; the flash error code NVS tests for.
#pragma once
#include "esp_err.h"
#define SPI_FLASH_SEC_SIZE 4096
#ifndef ESP_ERR_FLASH_OP_FAIL
#define ESP_ERR_FLASH_OP_FAIL (ESP_ERR_FLASH_BASE + 1)
#endif
