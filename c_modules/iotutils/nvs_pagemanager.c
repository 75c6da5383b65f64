// nvs_pagemanager: page order and free pages, ported from ESP-IDF v5.5's nvs_pagemanager.cpp:
// loading the pages in sequence order, activating a spare page, freeing the page with the
// most reusable entries (copy its items, erase it), and redoing a free a power cut interrupted.
//
// Separate from the page code (one page at a time) and from storage (what the items mean):
// this is where pages change roles, which is where power cuts are hardest to get right.
#include "nvs_pagemanager.h"

page_t *nvs_pm_back(nvs_host_t *h) {
    return &h->pages[h->list[h->nlist - 1]];
}

static void pm_list_remove(nvs_host_t *h, uint32_t pos) {
    memmove(&h->list[pos], &h->list[pos + 1], (h->nlist - pos - 1) * sizeof(h->list[0]));
    h->nlist--;
}

static int pm_activate_page(nvs_host_t *h) {
    if (h->nspare == 0) {
        return NVS_ERR_NO_SPACE;
    }
    uint16_t idx = h->spare[0];
    page_t *p = &h->pages[idx];
    if (p->state == PS_CORRUPT) {
        int rc = nvs_page_erase(h, p);
        if (rc != NVS_OK) {
            return rc;
        }
    }
    memmove(&h->spare[0], &h->spare[1], (h->nspare - 1) * sizeof(h->spare[0]));
    h->nspare--;
    h->list[h->nlist++] = idx;
    p->seq = h->seq++;
    return NVS_OK;
}

// Free the page with the most reusable entries: copy its live items to the spare page.
int nvs_pm_request_new_page(nvs_host_t *h) {
    if (h->nspare == 0) {
        return NVS_ERR_FAIL;
    }
    if (h->nspare >= 2) {
        return pm_activate_page(h);
    }
    uint32_t best = 0, best_unused = 0;
    for (uint32_t k = 0; k < h->nlist; k++) {
        uint32_t unused = ENTRY_COUNT - h->pages[h->list[k]].used;
        if (unused > best_unused) {
            best = k;
            best_unused = unused;
        }
    }
    if (best_unused == 0) {
        return NVS_ERR_NO_SPACE;
    }
    uint16_t victim_idx = h->list[best];
    page_t *victim = &h->pages[victim_idx];
    int rc = pm_activate_page(h);
    if (rc != NVS_OK) {
        return rc;
    }
    if (victim->state != PS_FULL && victim->state != PS_ACTIVE) {
        return NVS_ERR_FAIL;
    }
    rc = nvs_page_alter_state(h, victim, PS_FREEING);
    if (rc != NVS_OK) {
        return rc;
    }
    rc = nvs_page_copy_items(h, victim, nvs_pm_back(h));
    if (rc != NVS_OK && rc != NVS_ERR_NOT_FOUND) {
        return rc;
    }
    rc = nvs_page_erase(h, victim);
    if (rc != NVS_OK) {
        return rc;
    }
    for (uint32_t k = 0; k < h->nlist; k++) {
        if (h->list[k] == victim_idx) {
            pm_list_remove(h, k);
            break;
        }
    }
    h->spare[h->nspare++] = victim_idx;
    return NVS_OK;
}

int nvs_pm_load(nvs_host_t *h) {
    h->nlist = 0;
    h->nspare = 0;
    for (uint32_t i = 0; i < h->npages; i++) {
        page_t *p = &h->pages[i];
        int rc = nvs_page_load(h, p, i);
        if (rc != NVS_OK) {
            return rc;
        }
        if (!nvs_page_has_seq(p)) {
            h->spare[h->nspare++] = (uint16_t)i;
            continue;
        }
        // Insert before the first page with a greater sequence number.
        uint32_t pos = 0;
        while (pos < h->nlist && h->pages[h->list[pos]].seq <= p->seq) {
            pos++;
        }
        memmove(&h->list[pos + 1], &h->list[pos], (h->nlist - pos) * sizeof(h->list[0]));
        h->list[pos] = (uint16_t)i;
        h->nlist++;
    }
    if (h->nlist == 0) {
        h->seq = 0;
        return pm_activate_page(h);
    }
    h->seq = nvs_pm_back(h)->seq + 1;

    // Power cut after a new item was written but before the old one was erased: the last
    // item of the newest page wins over a copy on an older page.
    page_t *lastp = nvs_pm_back(h);
    uint8_t last[ENTRY_SIZE];
    int have_last = 0;
    uint32_t index = 0;
    const uint8_t *it;
    while (nvs_page_find(h, lastp, NS_ANY, NVS_TYPE_ANY, NULL, &index, &it, CHUNK_ANY, VER_ANY) == NVS_OK) {
        memcpy(last, it, ENTRY_SIZE);
        have_last = 1;
        index += IT_SPAN(it);
    }
    if (have_last) {
        uint32_t k;
        for (k = 0; k + 1 < h->nlist; k++) {
            page_t *p = &h->pages[h->list[k]];
            if (p->state != PS_FREEING
                && nvs_page_erase_item(h, p, IT_NS(last), IT_TYPE(last), IT_KEY(last), IT_CHUNK(last), VER_ANY)
                       == NVS_OK) {
                break;
            }
        }
        if (k + 1 == h->nlist && IT_TYPE(last) == NVS_TYPE_BLOB_IDX) {
            for (k = 0; k + 1 < h->nlist; k++) {
                page_t *p = &h->pages[h->list[k]];
                if (p->state != PS_FREEING
                    && nvs_page_erase_item(h, p, IT_NS(last), NVS_TYPE_BLOB, IT_KEY(last), IT_CHUNK(last), VER_ANY)
                           == NVS_OK) {
                    break;
                }
            }
        }
    }

    // Power cut while a page was being freed: redo the copy into a fresh page.
    for (uint32_t k = 0; k < h->nlist; k++) {
        uint16_t fidx = h->list[k];
        page_t *freeing = &h->pages[fidx];
        if (freeing->state != PS_FREEING) {
            continue;
        }
        page_t *np = nvs_pm_back(h);
        if (np->state == PS_ACTIVE) {
            int rc = nvs_page_erase(h, np);
            if (rc != NVS_OK) {
                return rc;
            }
            h->spare[h->nspare++] = h->list[h->nlist - 1];
            h->nlist--;
        }
        int rc = pm_activate_page(h);
        if (rc != NVS_OK) {
            return rc;
        }
        rc = nvs_page_copy_items(h, freeing, nvs_pm_back(h));
        if (rc != NVS_OK && rc != NVS_ERR_NOT_FOUND) {
            return rc;
        }
        rc = nvs_page_erase(h, freeing);
        if (rc != NVS_OK) {
            return rc;
        }
        for (uint32_t j = 0; j < h->nlist; j++) {
            if (h->list[j] == fidx) {
                pm_list_remove(h, j);
                break;
            }
        }
        h->spare[h->nspare++] = fidx;
        break;
    }
    if (h->nspare == 0) {
        return NVS_ERR_NO_FREE_PAGES;
    }
    return NVS_OK;
}
