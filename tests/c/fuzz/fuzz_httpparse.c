// libFuzzer harness for httpparse.c: parse_head + chunked decoding, with invariants.
//
// Every input is copied into an exact-size malloc block, so ASan reports any read past the end
// (the guard-page idea of picohttpparser's tests). Invariants checked (abort on failure):
// - results are in range: consumed <= len, offsets/lengths inside the head, reasons in the table;
// - incremental: the head parses the same when cut exactly at `consumed`, and needs more one byte
//   earlier;
// - chunked decoding gives the same data and final state in one call or split in two.
// Build: tests/c/fuzz/run_fuzz.sh (clang -fsanitize=fuzzer,address,undefined). With
// -DHP_STANDALONE_MAIN it is a plain driver: `driver FILE...` runs each file (also every prefix).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "httpparse.h"

static void check(int cond, const char *what) {
    if (!cond) {
        fprintf(stderr, "invariant failed: %s\n", what);
        abort();
    }
}

static char *dup_exact(const uint8_t *data, size_t size) {
    char *p = malloc(size ? size : 1);
    check(p != NULL, "malloc");
    if (size) {
        memcpy(p, data, size);
    }
    return p;
}

static int chunked_all(const uint8_t *data, size_t size, size_t cut, char **outbuf, size_t *outlen, int32_t *state) {
    char *b = dup_exact(data, size);
    memset(state, 0, HP_CHUNK_STATE_LEN * sizeof(int32_t));
    char *acc = malloc(size ? size : 1);
    size_t n = 0;
    int r = httpparse_chunked(b, 0, cut, state);
    if (r >= 0) {
        check((size_t)r <= cut, "chunked data <= input");
        memcpy(acc, b, (size_t)r);
        n = (size_t)r;
        if (state[0] != HP_CS_DONE) {
            int r2 = httpparse_chunked(b, cut, size, state);
            if (r2 >= 0) {
                check((size_t)r2 <= size - cut, "chunked data <= input (2)");
                memcpy(acc + n, b + cut, (size_t)r2);
                n += (size_t)r2;
            }
            r = r2;
        }
    }
    if (state[0] == HP_CS_DONE) {
        check(state[1] >= 0 && (size_t)state[1] <= size, "chunked end offset");
    }
    free(b);
    *outbuf = acc;
    *outlen = n;
    return r < 0 ? r : 0;
}

static void chunked_split_equal(const uint8_t *data, size_t size, size_t cut) {
    char *a;
    char *b;
    size_t na;
    size_t nb;
    int32_t sa[HP_CHUNK_STATE_LEN];
    int32_t sb[HP_CHUNK_STATE_LEN];
    int ra = chunked_all(data, size, size, &a, &na, sa);
    int rb = chunked_all(data, size, cut, &b, &nb, sb);
    check(ra == rb, "chunked split: same status");
    check(memcmp(sa, sb, sizeof(sa)) == 0, "chunked split: same state");
    if (ra == 0) {
        check(na == nb && memcmp(a, b, na) == 0, "chunked split: same data");
    } else {
        check(ra == -400 || ra == -413 || ra == -431, "chunked status");
        check(sa[0] == HP_CS_ERROR && sa[3] > 0 && sa[3] < httpparse_reason_count(), "chunked reason");
    }
    free(a);
    free(b);
}

static void one(const uint8_t *data, size_t size, size_t max_headers) {
    char *buf = dup_exact(data, size);
    size_t out_len = HP_OUT_FIXED + HP_OUT_PER_HEADER * max_headers;
    int32_t *out = calloc(out_len, sizeof(int32_t));
    int32_t *out2 = calloc(out_len, sizeof(int32_t));
    int r = httpparse_head(buf, size, out, out_len);
    if (r > 0) {
        size_t end = (size_t)r;
        check(end <= size, "consumed <= len");
        check(out[0] >= 0 && out[1] > 0 && (size_t)(out[0] + out[1]) <= end, "method range");
        check(out[2] > out[0] && out[3] > 0 && (size_t)(out[2] + out[3]) <= end, "target range");
        check(out[4] == 0 || out[4] == 1, "minor");
        check(out[5] >= 0 && (size_t)out[5] <= max_headers, "header count");
        check(out[6] >= HP_BODY_NONE && out[6] <= HP_BODY_CHUNKED, "body kind");
        check(out[7] >= 0 && (out[6] == HP_BODY_LENGTH || out[7] == 0), "content length");
        check(out[8] >= 0 && out[8] < 16, "flags");
        for (int i = 0; i < out[5]; i++) {
            int32_t *h = out + HP_OUT_FIXED + HP_OUT_PER_HEADER * i;
            check(h[0] > 0 && h[1] > 0 && h[2] > h[0] + h[1] && h[3] >= 0, "header slot");
            check((size_t)(h[2] + h[3]) <= end, "header in head");
        }
        check(httpparse_head(buf, end, out2, out_len) == r, "same result cut at consumed");
        check(memcmp(out, out2, out_len * sizeof(int32_t)) == 0, "same fields cut at consumed");
        check(httpparse_head(buf, end - 1, out2, out_len) == HP_NEED_MORE, "need more before the end");
        if (out[6] == HP_BODY_CHUNKED) {
            size_t rest = size - end;
            chunked_split_equal(data + end, rest, rest / 2);
        }
    } else if (r < 0) {
        check(r == -400 || r == -431 || r == -501 || r == -505, "head status");
        check(out[0] > 0 && out[0] < httpparse_reason_count(), "head reason");
    } else {
        check(out[0] == 0 || out[0] == 1, "need-more line flag");
    }
    // the decoder on its own, on arbitrary bytes
    chunked_split_equal(data, size, size ? data[0] % (size + 1) : 0);
    free(out);
    free(out2);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    // the header capacity comes from the input length so that 431 paths get reached too
    one(data, size, size % 7 == 0 ? 1 : 32);
    return 0;
}

#ifdef HP_STANDALONE_MAIN
int main(int argc, char **argv) {
    int n = 0;
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        check(f != NULL, argv[i]);
        uint8_t *data = malloc(1 << 20);
        size_t size = fread(data, 1, 1 << 20, f);
        fclose(f);
        for (size_t cut = 0; cut <= size; cut++) {
            uint8_t *exact = (uint8_t *)dup_exact(data, cut);
            one(exact, cut, 32);
            one(exact, cut, 2);
            free(exact);
        }
        free(data);
        n++;
    }
    printf("ran %d inputs\n", n);
    return 0;
}
#endif
