// ESP-IDF's own NVS loader on the host: compiled from $IDF_PATH/components/nvs_flash/src
// (nvs_storage.cpp, nvs_pagemanager.cpp, nvs_page.cpp, ...) with the stand-ins in shim/.
// Local only, built by tests/test_nvs_c.py when IDF_PATH is set:
//
//   idf_loader IMAGE...   -> one JSON line per image:
//   {"file": "...", "error": 0, "items": [["ns", "key", type, value], ...]}
//
// Items are listed as nvs_entry_find/nvs_entry_next list them and read as nvs_get_* reads
// them: integers as numbers, strings as JSON strings, blobs as hex. error != 0 is the
// esp_err_t of Storage::init (then no items). Storage::init runs ESP-IDF's repairs in RAM
// only: the image files are never written.
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "nvs_storage.hpp"

namespace {

class RamPartition : public nvs::Partition {
public:
    explicit RamPartition(std::vector<uint8_t> data) : mData(std::move(data)) {
    }
    const char *get_partition_name() override {
        return "nvs";
    }
    esp_err_t read_raw(size_t off, void *dst, size_t n) override {
        if (off + n > mData.size()) {
            return ESP_ERR_INVALID_SIZE;
        }
        memcpy(dst, mData.data() + off, n);
        return ESP_OK;
    }
    esp_err_t read(size_t off, void *dst, size_t n) override {
        return read_raw(off, dst, n);
    }
    esp_err_t write_raw(size_t off, const void *src, size_t n) override {
        if (off + n > mData.size()) {
            return ESP_ERR_INVALID_SIZE;
        }
        const uint8_t *s = static_cast<const uint8_t *>(src);
        for (size_t i = 0; i < n; i++) {
            mData[off + i] &= s[i];     // NOR flash: writes only clear bits
        }
        return ESP_OK;
    }
    esp_err_t write(size_t off, const void *src, size_t n) override {
        return write_raw(off, src, n);
    }
    esp_err_t erase_range(size_t off, size_t n) override {
        if (off % 4096 || n % 4096 || off + n > mData.size()) {
            return ESP_ERR_INVALID_SIZE;
        }
        memset(mData.data() + off, 0xff, n);
        return ESP_OK;
    }
    uint32_t get_address() override {
        return 0;
    }
    uint32_t get_size() override {
        return static_cast<uint32_t>(mData.size());
    }
    bool get_readonly() override {
        return false;
    }

private:
    std::vector<uint8_t> mData;
};

std::string json_str(const char *s, size_t n) {
    std::string out = "\"";
    char buf[8];
    for (size_t i = 0; i < n; i++) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c < 0x20) {
            snprintf(buf, sizeof(buf), "\\u%04x", c);
            out += buf;
        } else {
            out += static_cast<char>(c);   // UTF-8 passes through
        }
    }
    return out + "\"";
}

std::string value_json(nvs::Storage &st, uint8_t ns, nvs_type_t type, const char *key) {
    using nvs::ItemType;
    char buf[32];
    uint64_t raw = 0;
    ItemType it = static_cast<ItemType>(type);
    switch (type) {
        case NVS_TYPE_U8:
        case NVS_TYPE_I8:
        case NVS_TYPE_U16:
        case NVS_TYPE_I16:
        case NVS_TYPE_U32:
        case NVS_TYPE_I32:
        case NVS_TYPE_U64:
        case NVS_TYPE_I64: {
            size_t size = type & 0x0f;
            if (st.readItem(ns, it, key, &raw, size) != ESP_OK) {
                return "null";
            }
            if (type & 0x10) {
                int64_t v = static_cast<int64_t>(raw << (64 - 8 * size)) >> (64 - 8 * size);
                snprintf(buf, sizeof(buf), "%" PRId64, v);
            } else {
                snprintf(buf, sizeof(buf), "%" PRIu64, raw);
            }
            return buf;
        }
        case NVS_TYPE_STR:
        case NVS_TYPE_BLOB: {
            ItemType t = type == NVS_TYPE_STR ? ItemType::SZ : ItemType::BLOB;
            size_t size = 0;
            if (st.getItemDataSize(ns, t, key, size) != ESP_OK) {
                return "null";
            }
            std::vector<char> data(size + 1);
            if (st.readItem(ns, t, key, data.data(), size) != ESP_OK) {
                return "null";
            }
            if (type == NVS_TYPE_STR) {
                return json_str(data.data(), size ? size - 1 : 0);
            }
            std::string hex = "\"";
            for (size_t i = 0; i < size; i++) {
                snprintf(buf, sizeof(buf), "%02x", static_cast<unsigned char>(data[i]));
                hex += buf;
            }
            return hex + "\"";
        }
        default:
            return "null";
    }
}

void dump(const char *path) {
    FILE *f = fopen(path, "rb");
    std::vector<uint8_t> data;
    if (f) {
        uint8_t chunk[4096];
        size_t n;
        while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
            data.insert(data.end(), chunk, chunk + n);
        }
        fclose(f);
    }
    RamPartition part(data);
    nvs::Storage *st = new (std::nothrow) nvs::Storage(&part);
    esp_err_t err = data.empty() ? ESP_ERR_NOT_FOUND : st->init(0, static_cast<uint32_t>(data.size() / 4096));
    printf("{\"file\": %s, \"error\": %d, \"items\": [", json_str(path, strlen(path)).c_str(), static_cast<int>(err));
    if (err == ESP_OK) {
        nvs_opaque_iterator_t it;
        it.type = NVS_TYPE_ANY;
        it.storage = st;
        bool first = true;
        for (bool ok = st->findEntry(&it, nullptr); ok; ok = st->nextEntry(&it)) {
            uint8_t ns = 0;
            st->createOrOpenNamespace(it.entry_info.namespace_name, false, ns);
            printf("%s[%s, %s, %d, %s]", first ? "" : ", ",
                json_str(it.entry_info.namespace_name, strlen(it.entry_info.namespace_name)).c_str(),
                json_str(it.entry_info.key, strlen(it.entry_info.key)).c_str(), static_cast<int>(it.entry_info.type),
                value_json(*st, ns, it.entry_info.type, it.entry_info.key).c_str());
            first = false;
        }
    }
    printf("]}\n");
    fflush(stdout);
    delete st;
}

} // namespace

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        dump(argv[i]);
    }
    return 0;
}
