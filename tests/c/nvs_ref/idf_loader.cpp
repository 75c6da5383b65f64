// ESP-IDF's own NVS loader on the host: compiled from $IDF_PATH/components/nvs_flash/src
// (nvs_storage.cpp, nvs_pagemanager.cpp, nvs_page.cpp, ...) with the stand-ins in shim/.
// Local only, built by tests/c/nvs_harness.py when IDF_PATH is set:
//
//   idf_loader IMAGE...   -> one JSON line per image:
//   {"file": "...", "error": 0, "items": [["ns", "key", type, value], ...]}
//
// Items are listed as nvs_entry_find/nvs_entry_next list them and read as nvs_get_* reads
// them: integers as numbers, strings as JSON strings, blobs as hex. error != 0 is the
// esp_err_t of Storage::init (then no items). Storage::init runs ESP-IDF's repairs in RAM
// only: the image files are never written.
//
//   idf_loader --write BASE OPS OUTDIR STEP
//
// ESP-IDF's own writer: applies OPS (lines "set NS KEY TYPE HEX", "erase NS KEY",
// "erase_ns NS"; TYPE 0x21 = string without its NUL, 0x42 = blob) to BASE as nvs_set_*/
// nvs_erase_* do, once without power cut (saved as OUTDIR/full.bin), then once per power cut
// after 0, STEP, 2*STEP, ... flash writes, saving OUTDIR/cut_<n>.bin and printing
// "<n> <index of the op cut short>".
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <type_traits>

#include "nvs_storage.hpp"

#ifndef ESP_ERR_FLASH_OP_FAIL
#define ESP_ERR_FLASH_OP_FAIL (ESP_ERR_FLASH_BASE + 1)
#endif

namespace {

// ESP-IDF >= 6 adds a purgeAfterErase argument to Storage's write/erase calls (false keeps
// v5.5's behaviour); the templates pick the signature the tree at IDF_PATH has.
template <typename P, typename = void>
struct has_purge : std::false_type {};
template <typename P>
struct has_purge<P, std::void_t<decltype(P::DEFAULT_PURGE_AFTER_ERASE)>> : std::true_type {};

template <typename S, typename P = nvs::Page>
esp_err_t st_write(S &st, uint8_t ns, nvs::ItemType t, const char *key, const void *data, size_t size) {
    if constexpr (has_purge<P>::value) {
        return st.writeItem(ns, t, key, data, size, false);
    } else {
        return st.writeItem(ns, t, key, data, size);
    }
}

template <typename S, typename P = nvs::Page>
esp_err_t st_erase(S &st, uint8_t ns, const char *key) {
    if constexpr (has_purge<P>::value) {
        return st.eraseItem(ns, nvs::ItemType::ANY, key, false);
    } else {
        return st.eraseItem(ns, nvs::ItemType::ANY, key);
    }
}

template <typename S, typename P = nvs::Page>
esp_err_t st_erase_ns(S &st, uint8_t ns) {
    if constexpr (has_purge<P>::value) {
        return st.eraseNamespace(ns, false);
    } else {
        return st.eraseNamespace(ns);
    }
}

class RamPartition : public nvs::Partition {
public:
    explicit RamPartition(std::vector<uint8_t> data) : mData(std::move(data)) {
    }
    long budget = -1; // flash writes/erases left before the power is cut (-1: no cut)
    long done = 0;
    const std::vector<uint8_t> &bytes() const {
        return mData;
    }
    bool cut() {
        if (budget >= 0 && done >= budget) {
            return true;
        }
        done++;
        return false;
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
        if (cut()) {
            return ESP_ERR_FLASH_OP_FAIL;
        }
        const uint8_t *s = static_cast<const uint8_t *>(src);
        for (size_t i = 0; i < n; i++) {
            mData[off + i] &= s[i]; // NOR flash: writes only clear bits
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
        if (cut()) {
            return ESP_ERR_FLASH_OP_FAIL;
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
            out += static_cast<char>(c); // UTF-8 passes through
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

std::vector<uint8_t> read_file(const char *path) {
    std::vector<uint8_t> data;
    FILE *f = fopen(path, "rb");
    if (f) {
        uint8_t chunk[4096];
        size_t n;
        while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
            data.insert(data.end(), chunk, chunk + n);
        }
        fclose(f);
    }
    return data;
}

struct Op {
    std::string kind, ns, key;
    int type = 0;
    std::vector<uint8_t> data;
};

std::vector<Op> read_ops(const char *path) {
    std::vector<Op> ops;
    FILE *f = fopen(path, "r");
    if (!f) {
        return ops;
    }
    static char line[1 << 20];
    while (fgets(line, sizeof(line), f)) {
        Op op;
        char kind[16] = "", ns[32] = "", key[32] = "", hex[1] = "";
        int type = 0;
        (void)hex;
        int got = sscanf(line, "%15s %31s %31s %i", kind, ns, key, &type);
        if (got < 2) {
            continue;
        }
        op.kind = kind;
        op.ns = ns;
        op.key = got > 2 ? key : "";
        op.type = type;
        if (op.kind == "set") {
            // the hex data is the fifth field (may be empty)
            const char *p = line;
            for (int field = 0; field < 4 && *p; field++) {
                while (*p && *p != ' ') {
                    p++;
                }
                while (*p == ' ') {
                    p++;
                }
            }
            for (; p[0] && p[1] && p[0] != '\n'; p += 2) {
                unsigned v;
                sscanf(p, "%2x", &v);
                op.data.push_back(static_cast<uint8_t>(v));
            }
        }
        ops.push_back(op);
    }
    fclose(f);
    return ops;
}

esp_err_t apply(nvs::Storage &st, const Op &op) {
    using nvs::ItemType;
    uint8_t ns;
    esp_err_t err = st.createOrOpenNamespace(op.ns.c_str(), op.kind == "set", ns);
    if (err != ESP_OK) {
        return err;
    }
    if (op.kind == "erase") {
        return st_erase(st, ns, op.key.c_str());
    }
    if (op.kind == "erase_ns") {
        return st_erase_ns(st, ns);
    }
    if (op.type == NVS_TYPE_STR) {
        std::vector<uint8_t> s = op.data;
        s.push_back(0);
        return st_write(st, ns, ItemType::SZ, op.key.c_str(), s.data(), s.size());
    }
    if (op.type == NVS_TYPE_BLOB) {
        return st_write(st, ns, ItemType::BLOB, op.key.c_str(), op.data.data(), op.data.size());
    }
    return st_write(st, ns, static_cast<ItemType>(op.type), op.key.c_str(), op.data.data(), op.type & 0x0f);
}

int write_mode(const char *base, const char *ops_path, const char *outdir, long step) {
    std::vector<uint8_t> image = read_file(base);
    std::vector<Op> ops = read_ops(ops_path);
    long total = -1;
    for (long budget = -1; total < 0 || budget < total; budget = budget < 0 ? 0 : budget + step) {
        RamPartition part(image);
        nvs::Storage *st = new (std::nothrow) nvs::Storage(&part);
        size_t k = 0;
        esp_err_t err = st->init(0, static_cast<uint32_t>(image.size() / 4096));
        part.done = 0;
        part.budget = budget;
        for (; err == ESP_OK && k < ops.size(); k++) {
            err = apply(*st, ops[k]);
            if (err != ESP_OK && part.budget >= 0 && part.done >= part.budget) {
                break; // the power was cut during this op
            }
            if (err != ESP_OK && err != ESP_ERR_NVS_NOT_FOUND && err != ESP_ERR_NVS_NOT_ENOUGH_SPACE && budget < 0) {
                fprintf(stderr, "op %zu failed without a power cut: %d\n", k, static_cast<int>(err));
                return 1;
            }
            err = ESP_OK;
        }
        delete st;
        std::string out = std::string(outdir) + "/cut_" + std::to_string(budget) + ".bin";
        if (budget < 0) {
            total = part.done;
            out = std::string(outdir) + "/full.bin";
        }
        FILE *f = fopen(out.c_str(), "wb");
        if (!f) {
            return 1;
        }
        fwrite(part.bytes().data(), 1, part.bytes().size(), f);
        fclose(f);
        if (budget >= 0) {
            printf("%ld %zu\n", budget, k);
        }
    }
    return 0;
}

} // namespace

int main(int argc, char **argv) {
    if (argc == 6 && strcmp(argv[1], "--write") == 0) {
        return write_mode(argv[2], argv[3], argv[4], atol(argv[5]));
    }
    for (int i = 1; i < argc; i++) {
        dump(argv[i]);
    }
    return 0;
}
