// nvs_pagemanager: which pages are in use and in what order, which are free, and reclaiming
// space by freeing a page (ESP-IDF's nvs_pagemanager.cpp).
//
// Private to the host NVS engine (nvs_*.c).
#ifndef IOTUTILS_NVS_PAGEMANAGER_H
#define IOTUTILS_NVS_PAGEMANAGER_H

#include "nvs_page.h"

// PageManager::load: every page, in sequence order, with ESP-IDF's repairs after a power cut.
int nvs_pm_load(nvs_host_t *h);
// The newest page in use: where new items go.
page_t *nvs_pm_back(nvs_host_t *h);
// PageManager::requestNewPage: a fresh page at the back, freeing the emptiest one if needed.
int nvs_pm_request_new_page(nvs_host_t *h);

#endif // IOTUTILS_NVS_PAGEMANAGER_H
