// jsoncheck: a strict JSON (RFC 8259) validator fed in pieces. Portable C, libc only.
//
// MicroPython's json.loads is lenient: it takes {"a": 1] as {"a": 1}, [1 2] as [1, 2] and a
// trailing comma. A request body is checked with this first, so bad JSON is the client's 400 and
// not a guess at what it meant. It also bounds the nesting depth (json.loads recurses per level:
// a deep text would take the heap) and checks that strings are UTF-8.
//
//   jsoncheck_t jc;
//   jsoncheck_init(&jc, 32);
//   while (more) { if (jsoncheck_feed(&jc, buf, n) < 0) ... }   // pieces of any size
//   if (jsoncheck_end(&jc) < 0) ...                              // a whole JSON text?
//
// jc.pos is the number of bytes consumed; after an error, the offset of the offending byte.
#ifndef IOTUTILS_JSONCHECK_H
#define IOTUTILS_JSONCHECK_H

#include <stddef.h>
#include <stdint.h>

#define JSONCHECK_OK        (0)
#define JSONCHECK_BAD       (-1) // not JSON (at jc.pos)
#define JSONCHECK_DEEP      (-2) // nested deeper than the limit (at jc.pos)
#define JSONCHECK_MAX_DEPTH (64) // the largest limit

typedef struct {
    uint32_t pos;
    uint16_t depth;
    uint16_t limit;
    uint8_t state;
    uint8_t sub;      // within a token: the literal's next index, \u digits left, number part
    uint8_t key;      // the string under way is an object key
    uint8_t utf_need; // UTF-8 continuation bytes still due in a string
    uint8_t utf_lo;   // the range of the next continuation byte
    uint8_t utf_hi;
    uint8_t low_due; // a \uD800-\uDBFF was read: the next thing in the string must be \uDC00-\uDFFF
    uint16_t unit;   // the \u escape under way, as its digits come
    uint32_t pairs;  // surrogate pairs (\uD83D\uDCA1) read: MicroPython's json.loads keeps their halves apart
    int8_t err;      // sticky: once an error, always that error
    uint8_t nest[JSONCHECK_MAX_DEPTH / 8]; // one bit per level: 1 object, 0 array
} jsoncheck_t;

void jsoncheck_init(jsoncheck_t *jc, unsigned limit);

// JSONCHECK_OK while the bytes so far can begin a JSON text, else an error (sticky).
int jsoncheck_feed(jsoncheck_t *jc, const uint8_t *p, size_t n);

// JSONCHECK_OK when the bytes fed are one whole JSON text (whitespace around it allowed).
int jsoncheck_end(jsoncheck_t *jc);

#endif // IOTUTILS_JSONCHECK_H
