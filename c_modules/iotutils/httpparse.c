// httpparse: zero-copy, incremental HTTP/1.x request head parser + in-place chunked decoder.
//
// Mirrors modules/iotutils/http.py check for check (same order, same reasons): the rules are
// documented there. A head is parsed in three steps: the request line (hp_request_line), the
// header fields (hp_header_fields), then the message framing in httpparse_head. The field parser
// has a fast path for the common well-formed field line (token ":" value CRLF in one scan);
// anything unusual falls back to the slow path, which does the checks in exactly the Python
// order, so both give the same answer for every input.

#include <string.h>

#include "httpparse.h"

#define CH_TOKEN (1) // tchar (RFC 9110 5.6.2)
#define CH_VALUE (2) // may appear in a field line: HT, SP, VCHAR, obs-text
#define CH_VCHAR (4) // 0x21-0x7e: request-target bytes

static const uint8_t hp_class[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 7, 6, 7, 7,
    7, 7, 7, 6, 6, 7, 7, 6, 7, 7, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 7, 6, 7, 0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
};

// Same order as REASONS in http.py (tests compare the two tables).
enum {
    R_NONE,
    R_LINE,
    R_METHOD,
    R_TARGET,
    R_VERSION,
    R_VERSION_UNSUP,
    R_BARE,
    R_CTL,
    R_FOLD,
    R_HEADER,
    R_NAME,
    R_TOO_MANY,
    R_CL,
    R_CL_TWICE,
    R_TE,
    R_TE_UNSUP,
    R_TE_CL,
    R_TE_10,
    R_TE_NOT_LAST,
    R_NO_HOST,
    R_HOST_TWICE,
    R_CHUNK_SIZE,
    R_CHUNK_BIG,
    R_CHUNK_EXT,
    R_CHUNK_CRLF,
    R_CHUNK_LINE,
    R_TRAILERS,
    R_COUNT
};

static const char *const hp_reasons[R_COUNT] = {
    "",
    "bad request line",
    "bad method",
    "bad target",
    "bad HTTP version",
    "unsupported HTTP version",
    "bare CR or LF",
    "control byte",
    "obs-fold",
    "bad header",
    "bad header name",
    "too many headers",
    "bad Content-Length",
    "repeated Content-Length",
    "bad Transfer-Encoding",
    "unsupported Transfer-Encoding",
    "Transfer-Encoding with Content-Length",
    "Transfer-Encoding in HTTP/1.0",
    "chunked not last",
    "missing Host",
    "repeated Host",
    "bad chunk size",
    "chunk too large",
    "bad chunk extension",
    "missing CRLF after chunk",
    "chunk line too long",
    "trailers too large",
};

#define NOT_FOUND      ((size_t) - 1)
#define MAX_CHUNK_LINE (4096) // bytes of one chunk-size line, and of the trailer section

int httpparse_reason_count(void) {
    return R_COUNT;
}

const char *httpparse_reason(int i) {
    if (i < 0 || i >= R_COUNT) {
        return "";
    }
    return hp_reasons[i];
}

static int hp_fail(int32_t *out, int reason, int status) {
    out[0] = reason;
    return -status;
}

// Index of the first "\r\n" at or after from, or NOT_FOUND.
static size_t hp_find_crlf(const uint8_t *b, size_t from, size_t n) {
    while (from + 1 < n) {
        const uint8_t *p = memchr(b + from, '\r', n - 1 - from);
        if (p == NULL) {
            return NOT_FOUND;
        }
        size_t i = (size_t)(p - b);
        if (b[i + 1] == '\n') {
            return i;
        }
        from = i + 1;
    }
    return NOT_FOUND;
}

// An incomplete line: a LF, or a CR that is not the last byte, can never become a CRLF.
static int hp_partial(const uint8_t *b, size_t pos, size_t n, int32_t *out, int line_done) {
    if (pos < n && memchr(b + pos, '\n', n - pos) != NULL) {
        return hp_fail(out, R_BARE, 400);
    }
    if (pos + 1 < n && memchr(b + pos, '\r', n - 1 - pos) != NULL) {
        return hp_fail(out, R_BARE, 400);
    }
    out[0] = line_done;
    return HP_NEED_MORE;
}

// Reason for a control byte in the complete line b[s:e] (CR/LF win over others), else 0.
static int hp_line_ctl(const uint8_t *b, size_t s, size_t e) {
    int ctl = 0;
    for (size_t i = s; i < e; i++) {
        if (b[i] == '\r' || b[i] == '\n') {
            return R_BARE;
        }
        if (!(hp_class[b[i]] & CH_VALUE)) {
            ctl = 1;
        }
    }
    return ctl ? R_CTL : 0;
}

static int hp_all(const uint8_t *b, size_t s, size_t e, uint8_t cls) {
    for (size_t i = s; i < e; i++) {
        if (!(hp_class[b[i]] & cls)) {
            return 0;
        }
    }
    return 1;
}

// b[s:s+n] equals the lower-case ASCII literal lit, ignoring case.
static int hp_ieq(const uint8_t *b, size_t s, const char *lit, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint8_t c = b[s + i];
        if (c >= 'A' && c <= 'Z') {
            c = (uint8_t)(c + 32);
        }
        if (c != (uint8_t)lit[i]) {
            return 0;
        }
    }
    return 1;
}

static int hp_is_ows(uint8_t c) {
    return c == ' ' || c == '\t';
}

typedef struct {
    size_t fields;  // header fields so far
    int64_t cl;     // Content-Length, -1 if absent
    int te_n;       // codings in all Transfer-Encoding fields
    int te_chunked; // how many are "chunked"
    int te_last;    // the latest one is "chunked"
    int hosts;
    int flags;
    int conn_upgrade;
    int has_upgrade;
    int expect;
} hp_head_t;

// Semantics of the fields the parser itself cares about; returns a reason or 0.
static int hp_special(const uint8_t *b, size_t pos, size_t name_len, size_t vs, size_t ve, hp_head_t *h) {
    switch (name_len) {
        case 14:
            if (hp_ieq(b, pos, "content-length", 14)) {
                if (h->cl >= 0) {
                    return R_CL_TWICE;
                }
                for (size_t i = vs; i < ve; i++) {
                    if (b[i] < '0' || b[i] > '9') {
                        return R_CL;
                    }
                }
                if (vs == ve) {
                    return R_CL;
                }
                while (vs < ve && b[vs] == '0') {
                    vs++;
                }
                if (ve - vs > 10) {
                    return R_CL;
                }
                int64_t v = 0;
                for (size_t i = vs; i < ve; i++) {
                    v = v * 10 + (b[i] - '0');
                }
                if (v > 0x7fffffff) {
                    return R_CL;
                }
                h->cl = v;
            }
            break;
        case 17:
            if (hp_ieq(b, pos, "transfer-encoding", 17)) {
                size_t s = vs;
                for (;;) {
                    const uint8_t *c = memchr(b + s, ',', ve - s);
                    size_t el_end = c ? (size_t)(c - b) : ve;
                    size_t es = s;
                    size_t ee = el_end;
                    while (es < ee && hp_is_ows(b[es])) {
                        es++;
                    }
                    while (ee > es && hp_is_ows(b[ee - 1])) {
                        ee--;
                    }
                    if (es == ee || !hp_all(b, es, ee, CH_TOKEN)) {
                        return R_TE;
                    }
                    h->te_n++;
                    h->te_last = (ee - es == 7 && hp_ieq(b, es, "chunked", 7));
                    if (h->te_last) {
                        h->te_chunked++;
                    }
                    if (el_end == ve) {
                        break;
                    }
                    s = el_end + 1;
                }
            }
            break;
        case 4:
            if (hp_ieq(b, pos, "host", 4)) {
                h->hosts++;
                if (h->hosts > 1) {
                    return R_HOST_TWICE;
                }
            }
            break;
        case 10:
            if (hp_ieq(b, pos, "connection", 10)) {
                size_t s = vs;
                for (;;) {
                    const uint8_t *c = memchr(b + s, ',', ve - s);
                    size_t el_end = c ? (size_t)(c - b) : ve;
                    size_t es = s;
                    size_t ee = el_end;
                    while (es < ee && hp_is_ows(b[es])) {
                        es++;
                    }
                    while (ee > es && hp_is_ows(b[ee - 1])) {
                        ee--;
                    }
                    size_t n = ee - es;
                    if (n == 5 && hp_ieq(b, es, "close", 5)) {
                        h->flags |= HP_FLAG_CLOSE;
                    } else if (n == 10 && hp_ieq(b, es, "keep-alive", 10)) {
                        h->flags |= HP_FLAG_KEEP_ALIVE;
                    } else if (n == 7 && hp_ieq(b, es, "upgrade", 7)) {
                        h->conn_upgrade = 1;
                    }
                    if (el_end == ve) {
                        break;
                    }
                    s = el_end + 1;
                }
            }
            break;
        case 7:
            if (hp_ieq(b, pos, "upgrade", 7)) {
                h->has_upgrade = 1;
            }
            break;
        case 6:
            if (hp_ieq(b, pos, "expect", 6)) {
                if (ve - vs == 12 && hp_ieq(b, vs, "100-continue", 12)) {
                    h->expect = 1;
                }
            }
            break;
        default:
            break;
    }
    return 0;
}

// Start of the request line and its parts.
typedef struct {
    int32_t method_off;
    int32_t method_len;
    int32_t target_off;
    int32_t target_len;
    int minor;
} hp_request_line_t;

// The request line (after any empty lines before it, RFC 9112 2.2) into *rl. Returns the offset
// just past its CRLF (> 0), or the head's result: HP_NEED_MORE or -status, with out[0] set.
static int hp_request_line(const uint8_t *b, size_t n, int32_t *out, hp_request_line_t *rl) {
    size_t pos = 0;
    while (pos + 1 < n && b[pos] == '\r' && b[pos + 1] == '\n') {
        pos += 2;
    }
    size_t e = hp_find_crlf(b, pos, n);
    if (e == NOT_FOUND) {
        return hp_partial(b, pos, n, out, 0);
    }
    int r = hp_line_ctl(b, pos, e);
    if (r) {
        return hp_fail(out, r, 400);
    }
    const uint8_t *p = memchr(b + pos, ' ', e - pos);
    if (p == NULL) {
        return hp_fail(out, R_LINE, 400);
    }
    size_t sp1 = (size_t)(p - b);
    if (sp1 == pos || !hp_all(b, pos, sp1, CH_TOKEN)) {
        return hp_fail(out, R_METHOD, 400);
    }
    p = memchr(b + sp1 + 1, ' ', e - sp1 - 1);
    if (p == NULL) {
        return hp_fail(out, R_LINE, 400);
    }
    size_t sp2 = (size_t)(p - b);
    if (sp2 == sp1 + 1 || !hp_all(b, sp1 + 1, sp2, CH_VCHAR)) {
        return hp_fail(out, R_TARGET, 400);
    }
    const uint8_t *v = b + sp2 + 1;
    size_t vlen = e - sp2 - 1;
    if (vlen == 8 && memcmp(v, "HTTP/1.1", 8) == 0) {
        rl->minor = 1;
    } else if (vlen == 8 && memcmp(v, "HTTP/1.0", 8) == 0) {
        rl->minor = 0;
    } else if (vlen == 8 && memcmp(v, "HTTP/", 5) == 0 && v[5] >= '0' && v[5] <= '9' && v[6] == '.' && v[7] >= '0'
               && v[7] <= '9') {
        return hp_fail(out, R_VERSION_UNSUP, 505);
    } else {
        return hp_fail(out, R_VERSION, 400);
    }
    rl->method_off = (int32_t)pos;
    rl->method_len = (int32_t)(sp1 - pos);
    rl->target_off = (int32_t)(sp1 + 1);
    rl->target_len = (int32_t)(sp2 - sp1 - 1);
    return (int)(e + 2);
}

// The header fields from pos up to the empty line: each field's name and value into its four
// out[] slots (at most max_headers fields), what the parser itself needs into *h. Returns the
// offset just past the empty line (> 0), or the head's result: HP_NEED_MORE or -status, with
// out[0] set.
static int hp_header_fields(const uint8_t *b, size_t n, size_t pos, int32_t *out, size_t max_headers, hp_head_t *h) {
    for (;;) {
        size_t name_end;
        size_t line_end = NOT_FOUND;
        // fast path: token ":" value-bytes CRLF, all in one scan
        if (h->fields < max_headers && pos < n && (hp_class[b[pos]] & CH_TOKEN)) {
            size_t i = pos + 1;
            while (i < n && (hp_class[b[i]] & CH_TOKEN)) {
                i++;
            }
            if (i < n && b[i] == ':') {
                size_t j = i + 1;
                while (j < n && (hp_class[b[j]] & CH_VALUE)) {
                    j++;
                }
                if (j + 1 < n && b[j] == '\r' && b[j + 1] == '\n') {
                    name_end = i;
                    line_end = j;
                }
            }
        }
        if (line_end == NOT_FOUND) {
            // slow path: the checks in http.py's order
            size_t e = hp_find_crlf(b, pos, n);
            if (e == NOT_FOUND) {
                return hp_partial(b, pos, n, out, 1);
            }
            if (e == pos) {
                return (int)(pos + 2);
            }
            if (h->fields >= max_headers) {
                return hp_fail(out, R_TOO_MANY, 431);
            }
            if (hp_is_ows(b[pos])) {
                return hp_fail(out, R_FOLD, 400);
            }
            int r = hp_line_ctl(b, pos, e);
            if (r) {
                return hp_fail(out, r, 400);
            }
            const uint8_t *p = memchr(b + pos, ':', e - pos);
            if (p == NULL) {
                return hp_fail(out, R_HEADER, 400);
            }
            name_end = (size_t)(p - b);
            if (name_end == pos || !hp_all(b, pos, name_end, CH_TOKEN)) {
                return hp_fail(out, R_NAME, 400);
            }
            line_end = e;
        }
        size_t vs = name_end + 1;
        size_t ve = line_end;
        while (vs < ve && hp_is_ows(b[vs])) {
            vs++;
        }
        while (ve > vs && hp_is_ows(b[ve - 1])) {
            ve--;
        }
        int32_t *slot = out + HP_OUT_FIXED + HP_OUT_PER_HEADER * h->fields;
        slot[0] = (int32_t)pos;
        slot[1] = (int32_t)(name_end - pos);
        slot[2] = (int32_t)vs;
        slot[3] = (int32_t)(ve - vs);
        h->fields++;
        int r = hp_special(b, pos, name_end - pos, vs, ve, h);
        if (r) {
            return hp_fail(out, r, 400);
        }
        pos = line_end + 2;
    }
}

int httpparse_head(const char *buf, size_t len, int32_t *out, size_t out_len) {
    if (out_len < HP_OUT_FIXED || len > 0x7fffffff) {
        return HP_BAD_ARGS;
    }
    const uint8_t *b = (const uint8_t *)buf;
    hp_request_line_t rl = {0, 0, 0, 0, 0};
    int r = hp_request_line(b, len, out, &rl);
    if (r <= 0) {
        return r;
    }
    hp_head_t h = {.cl = -1}; // the rest zero
    r = hp_header_fields(b, len, (size_t)r, out, (out_len - HP_OUT_FIXED) / HP_OUT_PER_HEADER, &h);
    if (r <= 0) {
        return r;
    }

    // message framing (RFC 9112 6.1-6.3) and the connection flags
    int body = HP_BODY_NONE;
    if (h.te_n) {
        if (rl.minor == 0) {
            return hp_fail(out, R_TE_10, 400);
        }
        if (h.cl >= 0) {
            return hp_fail(out, R_TE_CL, 400);
        }
        if (h.te_chunked > 1) {
            return hp_fail(out, R_TE, 400);
        }
        if (h.te_chunked && !h.te_last) {
            return hp_fail(out, R_TE_NOT_LAST, 400);
        }
        if (h.te_n > h.te_chunked) {
            return hp_fail(out, R_TE_UNSUP, 501);
        }
        body = HP_BODY_CHUNKED;
    } else if (h.cl >= 0) {
        body = HP_BODY_LENGTH;
    }
    if (rl.minor == 1 && !h.hosts) {
        return hp_fail(out, R_NO_HOST, 400);
    }
    int flags = h.flags;
    if (h.expect && rl.minor == 1) {
        flags |= HP_FLAG_EXPECT_CONTINUE;
    }
    if (h.has_upgrade && h.conn_upgrade) {
        flags |= HP_FLAG_UPGRADE;
    }
    out[HP_OUT_METHOD_OFF] = rl.method_off;
    out[HP_OUT_METHOD_LEN] = rl.method_len;
    out[HP_OUT_TARGET_OFF] = rl.target_off;
    out[HP_OUT_TARGET_LEN] = rl.target_len;
    out[HP_OUT_MINOR] = rl.minor;
    out[HP_OUT_NHEADERS] = (int32_t)h.fields;
    out[HP_OUT_BODY] = body;
    out[HP_OUT_CONTENT_LENGTH] = body == HP_BODY_LENGTH ? (int32_t)h.cl : 0;
    out[HP_OUT_FLAGS] = flags;
    return r;
}

// chunked decoder phases (state[0]); the same numbers as http.py
enum {
    CS_SIZE,
    CS_EXT_NAME0,
    CS_EXT_NAME,
    CS_EXT_VAL0,
    CS_EXT_VAL,
    CS_EXT_Q,
    CS_EXT_QESC,
    CS_EXT_QEND,
    CS_SIZE_LF,
    CS_DATA,
    CS_DATA_CR,
    CS_DATA_LF,
    CS_TRAILER,
    CS_TRAILER_IN,
    CS_TRAILER_LF,
    CS_END_LF
};

static int hp_chunk_fail(int32_t *state, int reason, int status) {
    state[0] = HP_CS_ERROR;
    state[1] = 0;
    state[2] = 0;
    state[3] = reason;
    return -status;
}

static int hp_hexval(uint8_t c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c |= 0x20;
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

static int hp_is_ctl(uint8_t c) {
    return (c < 32 && c != '\t') || c == 127;
}

int httpparse_chunked(char *buf, size_t start, size_t end, int32_t *state) {
    if (end < start || end > 0x7fffffff) {
        return HP_BAD_ARGS;
    }
    int32_t ph = state[0];
    if (ph == HP_CS_DONE) {
        return 0;
    }
    if (ph == HP_CS_ERROR) {
        return state[3] == R_TRAILERS ? -431 : state[3] == R_CHUNK_BIG ? -413 : -400;
    }
    if (ph < 0 || ph > CS_END_LF || state[1] < 0 || state[2] < 0) {
        return HP_BAD_ARGS;
    }
    uint8_t *b = (uint8_t *)buf;
    int32_t v = state[1];
    int32_t cnt = state[2];
    size_t w = start;
    size_t p = start;
    while (p < end) {
        if (ph == CS_DATA) {
            size_t k = end - p;
            if (k > (size_t)v) {
                k = (size_t)v;
            }
            if (w != p) {
                memmove(b + w, b + p, k);
            }
            w += k;
            p += k;
            v -= (int32_t)k;
            if (v == 0) {
                ph = CS_DATA_CR;
            }
            continue;
        }
        uint8_t c = b[p++];
        switch (ph) {
            case CS_SIZE: {
                cnt++;
                int d = hp_hexval(c);
                if (d >= 0) {
                    if (v > (0x7fffffff - d) >> 4) {
                        return hp_chunk_fail(state, R_CHUNK_BIG, 413);
                    }
                    v = (v << 4) | d;
                } else if (cnt == 1) {
                    return hp_chunk_fail(state, R_CHUNK_SIZE, 400);
                } else if (c == '\r') {
                    ph = CS_SIZE_LF;
                } else if (c == ';') {
                    ph = CS_EXT_NAME0;
                } else if (c == ' ' || c == '\t') {
                    return hp_chunk_fail(state, R_CHUNK_EXT, 400);
                } else {
                    return hp_chunk_fail(state, R_CHUNK_SIZE, 400);
                }
                break;
            }
            // chunk-ext = *( ";" token [ "=" ( token / quoted-string ) ] ), no whitespace (like llhttp)
            case CS_EXT_NAME0:
                cnt++;
                if (!(hp_class[c] & CH_TOKEN)) {
                    return hp_chunk_fail(state, R_CHUNK_EXT, 400);
                }
                ph = CS_EXT_NAME;
                break;
            case CS_EXT_VAL0:
                cnt++;
                if (c == '"') {
                    ph = CS_EXT_Q;
                } else if (hp_class[c] & CH_TOKEN) {
                    ph = CS_EXT_VAL;
                } else {
                    return hp_chunk_fail(state, R_CHUNK_EXT, 400);
                }
                break;
            case CS_EXT_Q:
                cnt++;
                if (c == '"') {
                    ph = CS_EXT_QEND;
                } else if (c == '\\') {
                    ph = CS_EXT_QESC;
                } else if (hp_is_ctl(c)) {
                    return hp_chunk_fail(state, R_CHUNK_EXT, 400);
                }
                break;
            case CS_EXT_QESC:
                cnt++;
                if (hp_is_ctl(c)) {
                    return hp_chunk_fail(state, R_CHUNK_EXT, 400);
                }
                ph = CS_EXT_Q;
                break;
            case CS_EXT_NAME:
            case CS_EXT_VAL:
            case CS_EXT_QEND:
                cnt++;
                if (ph != CS_EXT_QEND && (hp_class[c] & CH_TOKEN)) {
                    // more of a name or token value
                } else if (c == ';') {
                    ph = CS_EXT_NAME0;
                } else if (c == '\r') {
                    ph = CS_SIZE_LF;
                } else if (c == '=' && ph == CS_EXT_NAME) {
                    ph = CS_EXT_VAL0;
                } else {
                    return hp_chunk_fail(state, R_CHUNK_EXT, 400);
                }
                break;
            case CS_SIZE_LF:
                if (c != '\n') {
                    return hp_chunk_fail(state, R_CHUNK_SIZE, 400);
                }
                ph = v ? CS_DATA : CS_TRAILER;
                cnt = 0;
                continue;
            case CS_DATA_CR:
                if (c != '\r') {
                    return hp_chunk_fail(state, R_CHUNK_CRLF, 400);
                }
                ph = CS_DATA_LF;
                break;
            case CS_DATA_LF:
                if (c != '\n') {
                    return hp_chunk_fail(state, R_CHUNK_CRLF, 400);
                }
                ph = CS_SIZE;
                cnt = 0;
                break;
            case CS_TRAILER:
                if (c == '\r') {
                    ph = CS_END_LF;
                    continue;
                }
                cnt++;
                if (c == '\n') {
                    return hp_chunk_fail(state, R_BARE, 400);
                }
                if (hp_is_ctl(c)) {
                    return hp_chunk_fail(state, R_CTL, 400);
                }
                ph = CS_TRAILER_IN;
                break;
            case CS_TRAILER_IN:
                cnt++;
                if (c == '\r') {
                    ph = CS_TRAILER_LF;
                } else if (c == '\n') {
                    return hp_chunk_fail(state, R_BARE, 400);
                } else if (hp_is_ctl(c)) {
                    return hp_chunk_fail(state, R_CTL, 400);
                }
                break;
            case CS_TRAILER_LF:
                cnt++;
                if (c != '\n') {
                    return hp_chunk_fail(state, R_BARE, 400);
                }
                ph = CS_TRAILER;
                break;
            default: // CS_END_LF
                if (c != '\n') {
                    return hp_chunk_fail(state, R_BARE, 400);
                }
                state[0] = HP_CS_DONE;
                state[1] = (int32_t)p;
                state[2] = 0;
                return (int)(w - start);
        }
        if (cnt > MAX_CHUNK_LINE) {
            if (ph >= CS_TRAILER) {
                return hp_chunk_fail(state, R_TRAILERS, 431);
            }
            return hp_chunk_fail(state, R_CHUNK_LINE, 400);
        }
    }
    state[0] = ph;
    state[1] = v;
    state[2] = cnt;
    return (int)(w - start);
}
