// libFuzzer harness for jsoncheck.c, with a second, independent validator as its oracle.
//
// The input's first byte picks the nesting limit (1..64), its last byte where to cut; the rest is
// the text. Every text is copied into an exact-size malloc block, so ASan reports a read past the
// end. Checked (abort on failure):
// - the verdict and the error's offset are the same fed whole, in two pieces cut anywhere, and
//   byte by byte;
// - they are the same as those of ref_check below: a recursive-descent reading of RFC 8259 (strict
//   UTF-8, surrogate escapes only in pairs, nesting bounded by the limit), written from the grammar
//   and not from jsoncheck.c;
// - the offset is inside the text, and a text that passes under a limit passes under a larger one.
// Build: tests/c/fuzz/run_fuzz.sh SECONDS jsoncheck. With -DJC_STANDALONE_MAIN it is a plain
// driver: `driver FILE...` runs each file and every prefix of it.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsoncheck.h"

static void check(int cond, const char *what) {
    if (!cond) {
        fprintf(stderr, "invariant failed: %s\n", what);
        abort();
    }
}

// ---- the oracle: recursive descent over the whole text ----

typedef struct {
    const uint8_t *p;
    size_t n;
    size_t i;
    unsigned limit;
    int err;
    size_t at;
} ref_t;

static int fail(ref_t *r, int err) {
    if (r->err == JSONCHECK_OK) {
        r->err = err;
        r->at = r->i;
    }
    return -1;
}

static int more(const ref_t *r) {
    return r->i < r->n;
}

static void skip_ws(ref_t *r) {
    while (more(r) && (r->p[r->i] == ' ' || r->p[r->i] == '\t' || r->p[r->i] == '\n' || r->p[r->i] == '\r')) {
        r->i++;
    }
}

static int expect(ref_t *r, uint8_t c) {
    if (!more(r) || r->p[r->i] != c) {
        return fail(r, JSONCHECK_BAD);
    }
    r->i++;
    return 0;
}

static int digits(ref_t *r) {
    // one or more
    if (!more(r) || r->p[r->i] < '0' || r->p[r->i] > '9') {
        return fail(r, JSONCHECK_BAD);
    }
    while (more(r) && r->p[r->i] >= '0' && r->p[r->i] <= '9') {
        r->i++;
    }
    return 0;
}

static int number(ref_t *r) {
    if (r->p[r->i] == '-') {
        r->i++;
    }
    if (more(r) && r->p[r->i] == '0') {
        r->i++;
    } else if (digits(r)) {
        return -1;
    }
    if (more(r) && r->p[r->i] == '.') {
        r->i++;
        if (digits(r)) {
            return -1;
        }
    }
    if (more(r) && (r->p[r->i] == 'e' || r->p[r->i] == 'E')) {
        r->i++;
        if (more(r) && (r->p[r->i] == '+' || r->p[r->i] == '-')) {
            r->i++;
        }
        if (digits(r)) {
            return -1;
        }
    }
    return 0;
}

static int is_hex(uint8_t c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// one UTF-8 sequence at r->i (Unicode's table 3-7 of well-formed byte sequences)
static int utf8_char(ref_t *r) {
    uint8_t c = r->p[r->i];
    int len;
    uint8_t lo = 0x80;
    uint8_t hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        lo = c == 0xE0 ? 0xA0 : 0x80;
        hi = c == 0xED ? 0x9F : 0xBF;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF;
    } else {
        return fail(r, JSONCHECK_BAD);
    }
    r->i++;
    for (int k = 1; k < len; k++) {
        if (!more(r) || r->p[r->i] < lo || r->p[r->i] > hi) {
            return fail(r, JSONCHECK_BAD);
        }
        r->i++;
        lo = 0x80;
        hi = 0xBF;
    }
    return 0;
}

// four hex digits of a \u escape into *unit
static int hex4(ref_t *r, unsigned *unit) {
    *unit = 0;
    for (int k = 0; k < 4; k++) {
        if (!more(r) || !is_hex(r->p[r->i])) {
            return fail(r, JSONCHECK_BAD);
        }
        uint8_t c = r->p[r->i];
        *unit = *unit * 16 + (unsigned)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
        r->i++;
    }
    return 0;
}

static int string(ref_t *r) {
    if (expect(r, '"')) {
        return -1;
    }
    for (;;) {
        if (!more(r)) {
            return fail(r, JSONCHECK_BAD);
        }
        uint8_t c = r->p[r->i];
        if (c == '"') {
            r->i++;
            return 0;
        }
        if (c < 0x20) {
            return fail(r, JSONCHECK_BAD);
        }
        if (c == '\\') {
            r->i++;
            if (!more(r)) {
                return fail(r, JSONCHECK_BAD);
            }
            c = r->p[r->i];
            if (c == 'u') {
                r->i++;
                unsigned unit;
                if (hex4(r, &unit)) {
                    return -1;
                }
                if (unit >= 0xDC00 && unit <= 0xDFFF) {
                    r->i--; // a low surrogate alone: said at its last digit
                    return fail(r, JSONCHECK_BAD);
                }
                if (unit >= 0xD800 && unit <= 0xDBFF) {
                    // a high one: its low half, escaped, must follow at once
                    if (expect(r, '\\') || expect(r, 'u') || hex4(r, &unit)) {
                        return -1;
                    }
                    if (unit < 0xDC00 || unit > 0xDFFF) {
                        r->i--;
                        return fail(r, JSONCHECK_BAD);
                    }
                }
            } else if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' || c == 't') {
                r->i++;
            } else {
                return fail(r, JSONCHECK_BAD);
            }
        } else if (c >= 0x80) {
            if (utf8_char(r)) {
                return -1;
            }
        } else {
            r->i++;
        }
    }
}

static int literal(ref_t *r, const char *word) {
    for (const char *w = word; *w; w++) {
        if (expect(r, (uint8_t)*w)) {
            return -1;
        }
    }
    return 0;
}

static int value(ref_t *r, unsigned depth);

static int members(ref_t *r, unsigned depth, int object) {
    uint8_t close = object ? '}' : ']';
    if (depth >= r->limit) {
        return fail(r, JSONCHECK_DEEP);
    }
    r->i++; // the opening bracket
    skip_ws(r);
    if (more(r) && r->p[r->i] == close) {
        r->i++;
        return 0;
    }
    for (;;) {
        if (object) {
            if (string(r)) {
                return -1;
            }
            skip_ws(r);
            if (expect(r, ':')) {
                return -1;
            }
            skip_ws(r);
        }
        if (value(r, depth + 1)) {
            return -1;
        }
        skip_ws(r);
        if (more(r) && r->p[r->i] == ',') {
            r->i++;
            skip_ws(r);
            continue;
        }
        return expect(r, close);
    }
}

static int value(ref_t *r, unsigned depth) {
    if (!more(r)) {
        return fail(r, JSONCHECK_BAD);
    }
    uint8_t c = r->p[r->i];
    if (c == '{' || c == '[') {
        return members(r, depth, c == '{');
    }
    if (c == '"') {
        return string(r);
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        return number(r);
    }
    if (c == 't') {
        return literal(r, "true");
    }
    if (c == 'f') {
        return literal(r, "false");
    }
    if (c == 'n') {
        return literal(r, "null");
    }
    return fail(r, JSONCHECK_BAD);
}

static int ref_check(const uint8_t *p, size_t n, unsigned limit, size_t *at) {
    ref_t r = {p, n, 0, limit, JSONCHECK_OK, 0};
    skip_ws(&r);
    if (value(&r, 0) == 0) {
        skip_ws(&r);
        if (more(&r)) {
            fail(&r, JSONCHECK_BAD);
        }
    }
    *at = r.err == JSONCHECK_OK ? n : r.at;
    return r.err;
}

// ---- the checker under test, fed in pieces ----

static int fed(const uint8_t *p, size_t n, unsigned limit, size_t cut, int bytewise, size_t *at) {
    jsoncheck_t jc;
    jsoncheck_init(&jc, limit);
    int r = JSONCHECK_OK;
    if (bytewise) {
        for (size_t i = 0; i < n && r == JSONCHECK_OK; i++) {
            r = jsoncheck_feed(&jc, p + i, 1);
        }
    } else {
        r = jsoncheck_feed(&jc, p, cut);
        if (r == JSONCHECK_OK) {
            r = jsoncheck_feed(&jc, p + cut, n - cut);
        }
    }
    if (r == JSONCHECK_OK) {
        r = jsoncheck_end(&jc);
    }
    check(jc.pos <= n, "offset inside the text");
    *at = jc.pos;
    return r;
}

static void one(const uint8_t *text, size_t n, unsigned limit, size_t cut) {
    size_t at_whole;
    size_t at_split;
    size_t at_bytes;
    size_t at_ref;
    int whole = fed(text, n, limit, n, 0, &at_whole);
    int split = fed(text, n, limit, cut, 0, &at_split);
    int bytes = fed(text, n, limit, 0, 1, &at_bytes);
    int ref = ref_check(text, n, limit, &at_ref);
    check(whole == JSONCHECK_OK || whole == JSONCHECK_BAD || whole == JSONCHECK_DEEP, "verdict");
    check(whole == split && at_whole == at_split, "the same in two pieces");
    check(whole == bytes && at_whole == at_bytes, "the same byte by byte");
    if (whole != ref || (whole != JSONCHECK_OK && at_whole != at_ref)) {
        fprintf(stderr, "jsoncheck %d at %zu, the grammar %d at %zu (limit %u)\n", whole, at_whole, ref, at_ref, limit);
        check(0, "the same as the grammar");
    }
    if (whole == JSONCHECK_OK) {
        size_t at;
        check(fed(text, n, JSONCHECK_MAX_DEPTH, n, 0, &at) == JSONCHECK_OK, "a larger limit passes too");
    }
}

static void run(const uint8_t *data, size_t size) {
    if (size == 0) {
        return;
    }
    unsigned limit = 1u + data[0] % JSONCHECK_MAX_DEPTH;
    size_t n = size - 1;
    uint8_t *text = malloc(n ? n : 1);
    check(text != NULL, "malloc");
    memcpy(text, data + 1, n);
    size_t cut = n ? (size_t)data[size - 1] * n / 255 : 0;
    one(text, n, limit, cut);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    run(data, size);
    return 0;
}

#ifdef JC_STANDALONE_MAIN
int main(int argc, char **argv) {
    int n = 0;
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        check(f != NULL, argv[i]);
        uint8_t *data = malloc(1 << 20);
        check(data != NULL, "malloc");
        size_t size = fread(data, 1, 1 << 20, f);
        fclose(f);
        for (size_t end = 0; end <= size; end++) {
            run(data, end);
        }
        free(data);
        n++;
    }
    printf("ran %d inputs\n", n);
    return 0;
}
#endif
