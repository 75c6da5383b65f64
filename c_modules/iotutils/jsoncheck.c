// jsoncheck: a strict JSON (RFC 8259) validator fed in pieces. See jsoncheck.h.
//
// One state per thing the grammar expects next; a number, a literal or a string keeps its
// progress in `sub` (and the UTF-8 fields), so a piece may end anywhere. A number has no closing
// character: the byte after it ends it and is then read again as what follows a value.
#include "jsoncheck.h"

enum {
    S_VALUE,        // a value (the text's start, after ':' and after ',' in an array)
    S_VALUE_OR_END, // after '[': a value or ']'
    S_KEY_OR_END,   // after '{': a key or '}'
    S_KEY,          // after ',' in an object: a key
    S_COLON,        // after a key
    S_AFTER,        // after a value: ',' or a closing bracket (whitespace only at depth 0)
    S_STRING,
    S_ESCAPE,  // after a backslash
    S_HEX,     // in \uXXXX (sub: digits left)
    S_NUMBER,  // sub: one of N_*
    S_LITERAL, // true, false, null (sub: index into LITERALS)
};

// number parts: what was read last
enum { N_MINUS, N_ZERO, N_INT, N_DOT, N_FRAC, N_E, N_E_SIGN, N_EXP };

// the three literals one after another, each ending in a NUL: sub indexes the next character
static const char LITERALS[] = "true\0false\0null";

static int is_space(uint8_t c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int is_digit(uint8_t c) {
    return c >= '0' && c <= '9';
}

static int is_hex(uint8_t c) {
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

void jsoncheck_init(jsoncheck_t *jc, unsigned limit) {
    jc->pos = 0;
    jc->depth = 0;
    jc->limit = (uint16_t)(limit < JSONCHECK_MAX_DEPTH ? limit : JSONCHECK_MAX_DEPTH);
    jc->state = S_VALUE;
    jc->sub = 0;
    jc->key = 0;
    jc->utf_need = 0;
    jc->utf_lo = 0;
    jc->utf_hi = 0;
    jc->low_due = 0;
    jc->unit = 0;
    jc->pairs = 0;
    jc->err = JSONCHECK_OK;
}

static int in_object(const jsoncheck_t *jc) {
    unsigned i = (unsigned)jc->depth - 1;
    return (jc->nest[i / 8] >> (i % 8)) & 1;
}

static int open_level(jsoncheck_t *jc, int object) {
    if (jc->depth >= jc->limit) {
        return JSONCHECK_DEEP;
    }
    unsigned i = jc->depth++;
    if (object) {
        jc->nest[i / 8] |= (uint8_t)(1u << (i % 8));
    } else {
        jc->nest[i / 8] &= (uint8_t) ~(1u << (i % 8));
    }
    jc->state = object ? S_KEY_OR_END : S_VALUE_OR_END;
    return JSONCHECK_OK;
}

// the first byte of a value
static int value_start(jsoncheck_t *jc, uint8_t c) {
    switch (c) {
        case '{':
            return open_level(jc, 1);
        case '[':
            return open_level(jc, 0);
        case '"':
            jc->state = S_STRING;
            jc->key = 0;
            return JSONCHECK_OK;
        case '-':
            jc->state = S_NUMBER;
            jc->sub = N_MINUS;
            return JSONCHECK_OK;
        case 't':
        case 'f':
        case 'n':
            jc->state = S_LITERAL;
            jc->sub = (uint8_t)(c == 't' ? 1 : c == 'f' ? 6 : 12);
            return JSONCHECK_OK;
        default:
            if (is_digit(c)) {
                jc->state = S_NUMBER;
                jc->sub = c == '0' ? N_ZERO : N_INT;
                return JSONCHECK_OK;
            }
            return JSONCHECK_BAD;
    }
}

// one byte of a string (after its opening quote)
static int string_byte(jsoncheck_t *jc, uint8_t c) {
    if (jc->low_due && c != '\\') {
        return JSONCHECK_BAD; // a high surrogate's escape not followed by its low half
    }
    if (jc->utf_need) {
        if (c < jc->utf_lo || c > jc->utf_hi) {
            return JSONCHECK_BAD;
        }
        jc->utf_need--;
        jc->utf_lo = 0x80;
        jc->utf_hi = 0xBF;
        return JSONCHECK_OK;
    }
    if (c == '"') {
        jc->state = jc->key ? S_COLON : S_AFTER;
    } else if (c == '\\') {
        jc->state = S_ESCAPE;
    } else if (c < 0x20) {
        return JSONCHECK_BAD; // control characters must be escaped
    } else if (c >= 0x80) {
        // UTF-8: the lead byte sets how many continuation bytes follow and the first one's range
        // (no overlong forms, no surrogates, nothing above U+10FFFF)
        jc->utf_lo = 0x80;
        jc->utf_hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            jc->utf_need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            jc->utf_need = 2;
            if (c == 0xE0) {
                jc->utf_lo = 0xA0;
            } else if (c == 0xED) {
                jc->utf_hi = 0x9F;
            }
        } else if (c >= 0xF0 && c <= 0xF4) {
            jc->utf_need = 3;
            if (c == 0xF0) {
                jc->utf_lo = 0x90;
            } else if (c == 0xF4) {
                jc->utf_hi = 0x8F;
            }
        } else {
            return JSONCHECK_BAD;
        }
    }
    return JSONCHECK_OK;
}

// one byte after a value (also the byte that ended a number)
static int after_value(jsoncheck_t *jc, uint8_t c) {
    if (is_space(c)) {
        return JSONCHECK_OK;
    }
    if (jc->depth == 0) {
        return JSONCHECK_BAD; // something after the whole text
    }
    int object = in_object(jc);
    if (c == ',') {
        jc->state = object ? S_KEY : S_VALUE;
    } else if (c == (object ? '}' : ']')) {
        jc->depth--;
        jc->state = S_AFTER;
    } else {
        return JSONCHECK_BAD;
    }
    return JSONCHECK_OK;
}

// one byte of a number: JSONCHECK_OK consumed, 1 the number ended before c (c is read again)
static int number_byte(jsoncheck_t *jc, uint8_t c) {
    uint8_t n = jc->sub;
    if (is_digit(c)) {
        switch (n) {
            case N_MINUS:
                jc->sub = c == '0' ? N_ZERO : N_INT;
                return JSONCHECK_OK;
            case N_ZERO:
                return JSONCHECK_BAD; // a leading zero: 01
            case N_DOT:
                jc->sub = N_FRAC;
                return JSONCHECK_OK;
            case N_E:
            case N_E_SIGN:
                jc->sub = N_EXP;
                return JSONCHECK_OK;
            default:
                return JSONCHECK_OK; // more digits of N_INT, N_FRAC, N_EXP
        }
    }
    if (c == '.' && (n == N_ZERO || n == N_INT)) {
        jc->sub = N_DOT;
        return JSONCHECK_OK;
    }
    if ((c == 'e' || c == 'E') && (n == N_ZERO || n == N_INT || n == N_FRAC)) {
        jc->sub = N_E;
        return JSONCHECK_OK;
    }
    if ((c == '+' || c == '-') && n == N_E) {
        jc->sub = N_E_SIGN;
        return JSONCHECK_OK;
    }
    if (n == N_MINUS || n == N_DOT || n == N_E || n == N_E_SIGN) {
        return JSONCHECK_BAD; // a number cut short: "-", "1.", "1e", "1e+"
    }
    jc->state = S_AFTER;
    return 1;
}

// a whole \u escape (jc->unit): its surrogate halves must come in pairs, high then low
static int surrogate(jsoncheck_t *jc) {
    unsigned u = jc->unit;
    if (u >= 0xDC00 && u <= 0xDFFF) {
        if (!jc->low_due) {
            return JSONCHECK_BAD; // a low half alone
        }
        jc->low_due = 0;
        jc->pairs++;
    } else if (jc->low_due) {
        return JSONCHECK_BAD; // a high half followed by something else
    } else if (u >= 0xD800 && u <= 0xDBFF) {
        jc->low_due = 1;
    }
    return JSONCHECK_OK;
}

static int step(jsoncheck_t *jc, uint8_t c) {
    switch (jc->state) {
        case S_VALUE:
            return is_space(c) ? JSONCHECK_OK : value_start(jc, c);
        case S_VALUE_OR_END:
            if (c == ']') {
                jc->depth--;
                jc->state = S_AFTER;
                return JSONCHECK_OK;
            }
            return is_space(c) ? JSONCHECK_OK : value_start(jc, c);
        case S_KEY_OR_END:
            if (c == '}') {
                jc->depth--;
                jc->state = S_AFTER;
                return JSONCHECK_OK;
            }
            // anything else: a key, as after ','
            // fall through
        case S_KEY:
            if (is_space(c)) {
                return JSONCHECK_OK;
            }
            if (c != '"') {
                return JSONCHECK_BAD;
            }
            jc->state = S_STRING;
            jc->key = 1;
            return JSONCHECK_OK;
        case S_COLON:
            if (c == ':') {
                jc->state = S_VALUE;
                return JSONCHECK_OK;
            }
            return is_space(c) ? JSONCHECK_OK : JSONCHECK_BAD;
        case S_AFTER:
            return after_value(jc, c);
        case S_STRING:
            return string_byte(jc, c);
        case S_ESCAPE:
            if (c == 'u') {
                jc->state = S_HEX;
                jc->sub = 4;
                jc->unit = 0;
                return JSONCHECK_OK;
            }
            if (jc->low_due) {
                return JSONCHECK_BAD;
            }
            if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' || c == 't') {
                jc->state = S_STRING;
                return JSONCHECK_OK;
            }
            return JSONCHECK_BAD;
        case S_HEX:
            if (!is_hex(c)) {
                return JSONCHECK_BAD;
            }
            jc->unit = (uint16_t)(jc->unit << 4 | (is_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10));
            if (--jc->sub == 0) {
                jc->state = S_STRING;
                return surrogate(jc);
            }
            return JSONCHECK_OK;
        case S_NUMBER: {
            int r = number_byte(jc, c);
            return r == 1 ? after_value(jc, c) : r;
        }
        default: // S_LITERAL
            if ((uint8_t)LITERALS[jc->sub] != c) {
                return JSONCHECK_BAD;
            }
            jc->sub++;
            if (LITERALS[jc->sub] == '\0') {
                jc->state = S_AFTER;
            }
            return JSONCHECK_OK;
    }
}

int jsoncheck_feed(jsoncheck_t *jc, const uint8_t *p, size_t n) {
    if (jc->err != JSONCHECK_OK) {
        return jc->err;
    }
    for (size_t i = 0; i < n; i++) {
        int r = step(jc, p[i]);
        if (r != JSONCHECK_OK) {
            jc->err = (int8_t)r;
            return r;
        }
        jc->pos++;
    }
    return JSONCHECK_OK;
}

int jsoncheck_end(jsoncheck_t *jc) {
    if (jc->err != JSONCHECK_OK) {
        return jc->err;
    }
    if (jc->state == S_NUMBER && jc->depth == 0) {
        // a text that is one number ends with the text
        uint8_t n = jc->sub;
        return (n == N_ZERO || n == N_INT || n == N_FRAC || n == N_EXP) ? JSONCHECK_OK : JSONCHECK_BAD;
    }
    return (jc->state == S_AFTER && jc->depth == 0) ? JSONCHECK_OK : JSONCHECK_BAD;
}
