# HTTP/1.x request parser: request line + header fields, and an in-place chunked body decoder.
#
# Pure Python twin of the C core c_modules/iotutils/httpparse.c (exported by the firmware as
# _iotutils.parse_head / chunked_decode / http_reason). Both give the same answer for every input:
# tests/c/test_httpparse.py runs one corpus through both and against llhttp and h11.
#
# Zero-copy interface: results are offsets into the caller's buffer, written into a caller-owned
# array('i'); the caller keeps the buffer and calls again with more bytes (NEED_MORE).
#
# parse_head(buf, length, out) -> int
#   Parse buf[0:length] (bytes, bytearray or memoryview) as request line + header fields.
#   out: array('i'), len(out) >= OUT_FIXED; room for (len(out) - OUT_FIXED) // 4 header fields.
#   Returns
#     > 0  head complete: bytes consumed through the empty line (body/next request start there);
#       0  NEED_MORE: out[0] = 1 if the request line is already complete, else 0 (a caller whose
#          buffer is full answers 431 if out[0] == 1, else 414);
#     < 0  -status: 400 bad syntax or smuggling, 431 too many header fields, 501 unsupported
#          Transfer-Encoding, 505 HTTP version not 1.0/1.1; out[0] = index into REASONS.
#   On success out[0..8] = method_off, method_len, target_off, target_len, minor_version (0|1),
#   n_headers, body_kind (BODY_*), content_length (0 unless BODY_LENGTH), flags (FLAG_*);
#   header i: out[OUT_FIXED + 4*i : +4] = name_off, name_len, value_off, value_len (value without
#   leading/trailing SP/HT). Names keep their case: compare case-insensitively.
#
#   Rules (the order below is the order of the checks; the first failing one gives the reason):
#   - Leading empty lines (CRLF) before the request line are skipped (RFC 9112 2.2) and consumed.
#   - Lines end with CRLF only. A lone LF is NOT accepted (like llhttp 9's default, unlike h11):
#     any CR or LF inside a line is "bare CR or LF". An incomplete line that already holds a
#     LF or a CR not at the very end of the data is rejected at once, otherwise it means NEED_MORE.
#   - Request line: no control bytes (HT allowed only to fail the later checks), then
#     method SP target SP version with single spaces; method = token; target = 1*VCHAR (0x21-0x7e);
#     version exactly "HTTP/1.0" or "HTTP/1.1"; another "HTTP/d.d" is 505.
#   - Per header line: more than the out array can hold = 431; a line starting with SP/HT
#     (obs-fold) = 400; a CR/LF inside = 400 "bare CR or LF"; another control byte (0x00-0x1f
#     except HT, 0x7f) = 400; no colon = 400; name empty or not a token (so no space before the
#     colon) = 400. obs-text (0x80-0xff) is allowed in values.
#   - Content-Length: 1*DIGIT (no sign, list or OWS inside), value < 2**31 (leading zeros are
#     fine), else "bad Content-Length". A second Content-Length is 400 even when equal: proxies
#     differ on which copy (or "5, 5" merge) they honour, and that disagreement is how requests
#     get smuggled; RFC 9112 6.3 lets a server reject it.
#   - Transfer-Encoding (all fields, comma lists): an empty element or a non-token element (so also
#     parameters) = 400 "bad Transfer-Encoding".
#   - Host: a second Host field = 400 (RFC 9112 3.2).
#   - After the empty line, in this order: Transfer-Encoding in HTTP/1.0 = 400; Transfer-Encoding
#     with Content-Length = 400; "chunked" twice = 400 "bad Transfer-Encoding"; "chunked" not the
#     final coding = 400 (RFC 9112 6.3 says 400 here); any coding besides "chunked" (gzip, identity,
#     ...) = 501 (we cannot decode it); HTTP/1.1 without Host = 400.
#   - Methods are any token: the server answers 405/501 for ones it does not route (llhttp keeps a
#     fixed list instead; h11 allows any token).
#   - flags: FLAG_CLOSE / FLAG_KEEP_ALIVE when Connection lists "close" / "keep-alive" (the caller
#     applies the version default); FLAG_EXPECT_CONTINUE for "Expect: 100-continue" in HTTP/1.1
#     (ignored in 1.0, RFC 9110 10.1.1); FLAG_UPGRADE when an Upgrade field is present and
#     Connection lists "upgrade".
#
# chunked_decode(buf, start, end, state) -> int
#   Decode chunked body bytes buf[start:end] in place (bytearray or writable memoryview): data bytes
#   are moved down to buf[start:start+ret]. Every byte of the range is consumed unless the body ends
#   inside it, so a split anywhere (even byte by byte) gives the same data.
#   state: array('i', [0] * CHUNK_STATE_LEN), all zero for a new body:
#     state[0] phase: 0 (CS_SIZE) .. 15, see _CS_* below; CS_DONE (-1): the last chunk and the
#              trailer section are consumed; CS_ERROR (-2): a previous call failed.
#     state[1] while in data: bytes left in the current chunk; while reading a size: the size so far;
#              when CS_DONE: offset in buf of the first byte after the body (a pipelined next
#              request starts there; bytes from there to `end` are untouched, the caller may have
#              to move them).
#     state[2] bytes seen so far in the current chunk-size line, or in the trailer section.
#     state[3] on CS_ERROR: index into REASONS (state[1] and state[2] are then 0); else 0.
#   Returns >= 0: number of data bytes now at buf[start:]; < 0: -400 (bad size, missing CRLF after
#   data, bad extension, size line longer than 4096 bytes), -413 (chunk size > 2**31-1) or -431
#   (trailer section > 4096 bytes). After CS_DONE further calls return 0; after an error they return
#   the same error. Chunk size = 1*HEXDIG (leading zeros fine); then extensions
#   *( ";" token [ "=" ( token / quoted-string ) ] ), checked and skipped. No whitespace around
#   them: RFC 9112 allows BWS, but llhttp rejects it and we follow the stricter. Trailer fields are
#   skipped (a bare CR or LF, other control bytes = 400).
#
# On the firmware, parse_head and chunked_decode below are the C core's (see the end of this file);
# py_parse_head / py_chunked_decode are always the pure-Python ones.


# builtins as module globals: MicroPython finds a builtin only after a miss in the module's dict and
# a scan of the builtins table, dearer than the call itself (see server.py)
len = len

NEED_MORE = 0
BODY_NONE = 0
BODY_LENGTH = 1
BODY_CHUNKED = 2
FLAG_CLOSE = 1
FLAG_KEEP_ALIVE = 2
FLAG_EXPECT_CONTINUE = 4
FLAG_UPGRADE = 8
OUT_FIXED = 9
CHUNK_STATE_LEN = 4
CS_DONE = -1
CS_ERROR = -2

# Same order as the C table in httpparse.c (tests compare them).
REASONS = (
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
)

_R_LINE = const(1)
_R_METHOD = const(2)
_R_TARGET = const(3)
_R_VERSION = const(4)
_R_VERSION_UNSUP = const(5)
_R_BARE = const(6)
_R_CTL = const(7)
_R_FOLD = const(8)
_R_HEADER = const(9)
_R_NAME = const(10)
_R_TOO_MANY = const(11)
_R_CL = const(12)
_R_CL_TWICE = const(13)
_R_TE = const(14)
_R_TE_UNSUP = const(15)
_R_TE_CL = const(16)
_R_TE_10 = const(17)
_R_TE_NOT_LAST = const(18)
_R_NO_HOST = const(19)
_R_HOST_TWICE = const(20)
_R_CHUNK_SIZE = const(21)
_R_CHUNK_BIG = const(22)
_R_CHUNK_EXT = const(23)
_R_CHUNK_CRLF = const(24)
_R_CHUNK_LINE = const(25)
_R_TRAILERS = const(26)

_MAX_CHUNK_LINE = const(4096)  # bytes of one chunk-size line, and of the trailer section

try:
    import re
    # a byte that may not appear in a field line: control bytes except HT (NUL included)
    _ctl_search = re.compile(b"[^\t -~\x80-\xff]").search
    # the same over a block of whole lines (CR and LF allowed; bare ones are caught by counting)
    _ctl_search_lines = re.compile(b"[^\t\r\n -~\x80-\xff]").search
    _not_token = re.compile(b"[^!#$%&'*+.^_`|~0-9A-Za-z-]").search
    _not_vchar = re.compile(b"[^!-~]").search
    # Only searches for one byte of a class: MicroPython's re recurses once per repetition of a
    # "+" or "*", so a pattern like b"[!-~]+" over a long target overflows a thread's stack
    # (RuntimeError past ~100 bytes with the 8 KB stacks the server uses on an ESP32).
except ImportError:
    # no re module (minimal ports): same answers, slower
    def _scan(s, ok, pos, endpos):
        for i in range(pos, len(s) if endpos is None else endpos):
            if not ok(s[i]):
                return True
        return None

    def _ctl_search(s, pos=0, endpos=None):
        return _scan(s, lambda c: c == 9 or 32 <= c < 127 or c >= 128, pos, endpos)

    def _ctl_search_lines(s, pos=0, endpos=None):
        return _scan(s, lambda c: c in (9, 10, 13) or 32 <= c < 127 or c >= 128, pos, endpos)

    _TCHAR = b"!#$%&'*+-.^_`|~"

    def _not_token(s, pos=0, endpos=None):
        return _scan(s, lambda c: 48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 or c in _TCHAR, pos, endpos)

    def _not_vchar(s, pos=0, endpos=None):
        return _scan(s, lambda c: 33 <= c <= 126, pos, endpos)


# header names the parser interprets, by length
_SPECIAL = {14: b"content-length", 17: b"transfer-encoding", 4: b"host", 10: b"connection", 7: b"upgrade",
            6: b"expect"}


def _fail(out, reason, status=400):
    out[0] = reason
    return -status


def _partial(b, pos, out, line_done):
    # incomplete line: a LF, or a CR that is not the last byte, can never become a CRLF
    n = len(b)
    if b.find(b"\n", pos) >= 0 or 0 <= b.find(b"\r", pos, n - 1):
        return _fail(out, _R_BARE)
    out[0] = line_done
    return NEED_MORE


def _line_ctl(line):
    # reason for a control byte inside a complete line, else 0
    if b"\r" in line or b"\n" in line:
        return _R_BARE
    if _ctl_search(line):
        return _R_CTL
    return 0


def parse_head(buf, length, out):
    nout = len(out)
    if nout < OUT_FIXED:
        raise ValueError("out too short")
    if length < 0 or length > len(buf):
        raise ValueError("length")
    # one copy of the data so that find/re work on any buffer type (offsets are unchanged). It is
    # made here, in a frame small enough for the C stack, so that _parse's frame (on the heap: it
    # has many locals) sees no allocation while it lives, in the usual case: then the next call
    # finds the same room again, instead of gc_alloc scanning ever further (see server.py).
    return _parse(buf if type(buf) is bytes and length == len(buf) else bytes(memoryview(buf)[:length]),
                  out, (nout - OUT_FIXED) >> 2)


def _lower_equal(b, pos, word):
    # b[pos:pos + len(word)] == word ignoring case, without a copy. word is lowercase letters and "-";
    # the bytes are a token already, where OR 0x20 lowercases a letter and makes no other byte one.
    # (Few locals: its frame stays on the C stack.)
    for k in range(len(word)):
        if b[pos + k] | 0x20 != word[k]:
            return False
    return True


# canonical spellings of the interpreted names, tried first
_SPECIAL_CASED = {14: b"Content-Length", 17: b"Transfer-Encoding", 4: b"Host", 10: b"Connection",
                  7: b"Upgrade", 6: b"Expect"}


def _parse(b, out, max_headers):
    pos = 0
    while b.startswith(b"\r\n", pos):
        pos += 2
    # request line
    e = b.find(b"\r\n", pos)
    if e < 0:
        return _partial(b, pos, out, 0)
    # Fast pre-check of the whole head when it is complete: no control bytes and every CR/LF part
    # of a CRLF means no line can fail the per-line control-byte check, so it is skipped.
    end = b.find(b"\r\n\r\n", e)
    clean = False
    if end >= 0:
        end += 2
        nl = b.count(b"\r\n", pos, end)
        clean = (b.count(b"\r", pos, end) == nl and b.count(b"\n", pos, end) == nl
                 and not _ctl_search_lines(b, pos, end))
    if not clean:
        r = _line_ctl(b[pos:e])
        if r:
            return _fail(out, r)
    sp1 = b.find(b" ", pos, e)
    if sp1 < 0:
        return _fail(out, _R_LINE)
    if sp1 == pos or _not_token(b, pos, sp1):
        return _fail(out, _R_METHOD)
    sp2 = b.find(b" ", sp1 + 1, e)
    if sp2 < 0:
        return _fail(out, _R_LINE)
    if sp2 == sp1 + 1 or _not_vchar(b, sp1 + 1, sp2):
        return _fail(out, _R_TARGET)
    v = sp2 + 1
    if e - v == 8 and b.startswith(b"HTTP/1.1", v):
        minor = 1
    elif e - v == 8 and b.startswith(b"HTTP/1.0", v):
        minor = 0
    elif (e - v == 8 and b.startswith(b"HTTP/", v) and 48 <= b[v + 5] <= 57 and b[v + 6] == 46
          and 48 <= b[v + 7] <= 57):
        return _fail(out, _R_VERSION_UNSUP, 505)
    else:
        return _fail(out, _R_VERSION)
    method_off = pos
    method_len = sp1 - pos
    target_off = sp1 + 1
    target_len = sp2 - sp1 - 1
    # header fields
    pos = e + 2
    nh = 0
    cl = -1
    te_n = 0          # codings seen in all Transfer-Encoding fields
    te_chunked = 0    # how many of them are "chunked"
    te_last = False   # the latest coding is "chunked"
    hosts = 0
    flags = 0
    conn_upgrade = False
    has_upgrade = False
    expect = False
    while True:
        e = b.find(b"\r\n", pos)
        if e < 0:
            return _partial(b, pos, out, 1)
        if e == pos:
            break
        if nh >= max_headers:
            return _fail(out, _R_TOO_MANY, 431)
        c = b[pos]
        if c == 32 or c == 9:
            return _fail(out, _R_FOLD)
        if not clean:
            r = _line_ctl(b[pos:e])
            if r:
                return _fail(out, r)
        colon = b.find(b":", pos, e)
        if colon < 0:
            return _fail(out, _R_HEADER)
        if colon == pos or _not_token(b, pos, colon):
            return _fail(out, _R_NAME)
        colon -= pos
        # the value without leading/trailing SP and HT
        vs = pos + colon + 1
        ve = e
        while vs < ve and (b[vs] == 32 or b[vs] == 9):
            vs += 1
        while ve > vs and (b[ve - 1] == 32 or b[ve - 1] == 9):
            ve -= 1
        i = OUT_FIXED + 4 * nh
        out[i] = pos
        out[i + 1] = colon
        out[i + 2] = vs
        out[i + 3] = ve - vs
        nh += 1
        special = _SPECIAL.get(colon)
        # the length alone tells which special name it may be; the usual spelling needs no copy
        if special and (b.startswith(special, pos) or b.startswith(_SPECIAL_CASED[colon], pos)
                        or _lower_equal(b, pos, special)):
            if colon == 14:  # content-length
                if cl >= 0:
                    return _fail(out, _R_CL_TWICE)
                if ve == vs:
                    return _fail(out, _R_CL)
                cl = 0  # 1*DIGIT below 2**31, read in place (no copy: see parse_head)
                while vs < ve:
                    c = b[vs]
                    if c < 48 or c > 57:
                        return _fail(out, _R_CL)
                    cl = cl * 10 + c - 48
                    if cl > 0x7FFFFFFF:
                        return _fail(out, _R_CL)
                    vs += 1
            elif colon == 17:  # transfer-encoding
                for el in b[vs:ve].split(b","):
                    el = el.strip(b" \t")
                    if not el or _not_token(el):
                        return _fail(out, _R_TE)
                    te_n += 1
                    te_last = el.lower() == b"chunked"
                    if te_last:
                        te_chunked += 1
            elif colon == 4:  # host
                hosts += 1
                if hosts > 1:
                    return _fail(out, _R_HOST_TWICE)
            elif colon == 10:  # connection
                if ve - vs == 10 and (b.startswith(b"keep-alive", vs) or b.startswith(b"Keep-Alive", vs)):
                    flags |= FLAG_KEEP_ALIVE  # the usual single value, without a copy
                elif ve - vs == 5 and b.startswith(b"close", vs):
                    flags |= FLAG_CLOSE
                else:
                    for el in b[vs:ve].split(b","):
                        el = el.strip(b" \t").lower()
                        if el == b"close":
                            flags |= FLAG_CLOSE
                        elif el == b"keep-alive":
                            flags |= FLAG_KEEP_ALIVE
                        elif el == b"upgrade":
                            conn_upgrade = True
            elif colon == 7:  # upgrade
                has_upgrade = True
            elif colon == 6:  # expect
                if b[vs:ve].lower() == b"100-continue":
                    expect = True
        pos = e + 2
    body = BODY_NONE
    if te_n:
        if minor == 0:
            return _fail(out, _R_TE_10)
        if cl >= 0:
            return _fail(out, _R_TE_CL)
        if te_chunked > 1:
            return _fail(out, _R_TE)
        if te_chunked and not te_last:
            return _fail(out, _R_TE_NOT_LAST)
        if te_n > te_chunked:
            return _fail(out, _R_TE_UNSUP, 501)
        body = BODY_CHUNKED
    elif cl >= 0:
        body = BODY_LENGTH
    if minor == 1 and not hosts:
        return _fail(out, _R_NO_HOST)
    if expect and minor == 1:
        flags |= FLAG_EXPECT_CONTINUE
    if has_upgrade and conn_upgrade:
        flags |= FLAG_UPGRADE
    out[0] = method_off
    out[1] = method_len
    out[2] = target_off
    out[3] = target_len
    out[4] = minor
    out[5] = nh
    out[6] = body
    out[7] = cl if body == BODY_LENGTH else 0
    out[8] = flags
    return e + 2


# chunked decoder phases (state[0])
_CS_SIZE = const(0)       # chunk-size hex digits
_CS_EXT_NAME0 = const(1)  # after ";": first byte of an extension name
_CS_EXT_NAME = const(2)   # inside an extension name
_CS_EXT_VAL0 = const(3)   # after "=": first byte of the value (token or quoted-string)
_CS_EXT_VAL = const(4)    # inside a token value
_CS_EXT_Q = const(5)      # inside a quoted-string value
_CS_EXT_QESC = const(6)   # after a backslash in a quoted-string
_CS_EXT_QEND = const(7)   # after the closing quote
_CS_SIZE_LF = const(8)    # CR of the size line seen
_CS_DATA = const(9)       # chunk data, state[1] bytes left
_CS_DATA_CR = const(10)   # CR after the data
_CS_DATA_LF = const(11)   # LF after the data
_CS_TRAILER = const(12)   # at the start of a trailer line (CR here ends the body)
_CS_TRAILER_IN = const(13)  # inside a trailer line
_CS_TRAILER_LF = const(14)  # CR of a trailer line seen
_CS_END_LF = const(15)    # CR of the final empty line seen

# tchar lookup for the per-byte chunk-extension parser
_TCHAR = bytearray(256)
for _c in b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz":
    _TCHAR[_c] = 1
del _c


def _chunk_fail(state, reason, status=400):
    state[0] = CS_ERROR
    state[1] = 0
    state[2] = 0
    state[3] = reason
    return -status


def _hexval(c):
    if 48 <= c <= 57:
        return c - 48
    c |= 0x20
    if 97 <= c <= 102:
        return c - 87
    return -1


def chunked_decode(buf, start, end, state):
    if len(state) < CHUNK_STATE_LEN:
        raise ValueError("state too short")
    if start < 0 or end < start or end > len(buf):
        raise ValueError("range")
    ph = state[0]
    if ph == CS_DONE:
        return 0
    if ph == CS_ERROR:
        return -(431 if state[3] == _R_TRAILERS else 413 if state[3] == _R_CHUNK_BIG else 400)
    v = state[1]
    cnt = state[2]
    if ph < 0 or ph > _CS_END_LF or v < 0 or cnt < 0:
        raise ValueError("state")
    w = start
    p = start
    while p < end:
        if ph == _CS_DATA:
            n = end - p
            if n > v:
                n = v
            if w != p:
                buf[w:w + n] = buf[p:p + n]
            w += n
            p += n
            v -= n
            if not v:
                ph = _CS_DATA_CR
            continue
        c = buf[p]
        p += 1
        if ph == _CS_SIZE:
            cnt += 1
            d = _hexval(c)
            if d >= 0:
                if v > (0x7FFFFFFF - d) >> 4:
                    return _chunk_fail(state, _R_CHUNK_BIG, 413)
                v = (v << 4) | d
            elif cnt == 1:
                return _chunk_fail(state, _R_CHUNK_SIZE)
            elif c == 13:
                ph = _CS_SIZE_LF
            elif c == 59:
                ph = _CS_EXT_NAME0
            elif c == 32 or c == 9:
                return _chunk_fail(state, _R_CHUNK_EXT)
            else:
                return _chunk_fail(state, _R_CHUNK_SIZE)
        elif ph <= _CS_EXT_QEND:
            # chunk-ext = *( ";" token [ "=" ( token / quoted-string ) ] ), no whitespace (like llhttp)
            cnt += 1
            if ph == _CS_EXT_NAME0:
                if not _TCHAR[c]:
                    return _chunk_fail(state, _R_CHUNK_EXT)
                ph = _CS_EXT_NAME
            elif ph == _CS_EXT_VAL0:
                if c == 34:
                    ph = _CS_EXT_Q
                elif _TCHAR[c]:
                    ph = _CS_EXT_VAL
                else:
                    return _chunk_fail(state, _R_CHUNK_EXT)
            elif ph == _CS_EXT_Q:
                if c == 34:
                    ph = _CS_EXT_QEND
                elif c == 92:
                    ph = _CS_EXT_QESC
                elif c < 32 and c != 9 or c == 127:
                    return _chunk_fail(state, _R_CHUNK_EXT)
            elif ph == _CS_EXT_QESC:
                if c < 32 and c != 9 or c == 127:
                    return _chunk_fail(state, _R_CHUNK_EXT)
                ph = _CS_EXT_Q
            elif ph != _CS_EXT_QEND and _TCHAR[c]:
                pass  # more of a name or token value
            elif c == 59:
                ph = _CS_EXT_NAME0
            elif c == 13:
                ph = _CS_SIZE_LF
            elif c == 61 and ph == _CS_EXT_NAME:
                ph = _CS_EXT_VAL0
            else:
                return _chunk_fail(state, _R_CHUNK_EXT)
        elif ph == _CS_SIZE_LF:
            if c != 10:
                return _chunk_fail(state, _R_CHUNK_SIZE)
            if v:
                ph = _CS_DATA
            else:
                ph = _CS_TRAILER
            cnt = 0
            continue
        elif ph == _CS_DATA_CR:
            if c != 13:
                return _chunk_fail(state, _R_CHUNK_CRLF)
            ph = _CS_DATA_LF
        elif ph == _CS_DATA_LF:
            if c != 10:
                return _chunk_fail(state, _R_CHUNK_CRLF)
            ph = _CS_SIZE
            cnt = 0
        elif ph == _CS_TRAILER:
            if c == 13:
                ph = _CS_END_LF
                continue
            cnt += 1
            if c == 10:
                return _chunk_fail(state, _R_BARE)
            if c < 32 and c != 9 or c == 127:
                return _chunk_fail(state, _R_CTL)
            ph = _CS_TRAILER_IN
        elif ph == _CS_TRAILER_IN:
            cnt += 1
            if c == 13:
                ph = _CS_TRAILER_LF
            elif c == 10:
                return _chunk_fail(state, _R_BARE)
            elif c < 32 and c != 9 or c == 127:
                return _chunk_fail(state, _R_CTL)
        elif ph == _CS_TRAILER_LF:
            cnt += 1
            if c != 10:
                return _chunk_fail(state, _R_BARE)
            ph = _CS_TRAILER
        else:  # _CS_END_LF
            if c != 10:
                return _chunk_fail(state, _R_BARE)
            state[0] = CS_DONE
            state[1] = p
            state[2] = 0
            return w - start
        if cnt > _MAX_CHUNK_LINE:
            if ph >= _CS_TRAILER:
                return _chunk_fail(state, _R_TRAILERS, 431)
            return _chunk_fail(state, _R_CHUNK_LINE)
    state[0] = ph
    state[1] = v
    state[2] = cnt
    return w - start


# The firmware's C core (_iotutils, same rules, tested on the same corpus) is much faster: use it
# when present. The pure-Python versions stay reachable for tests and comparisons.
py_parse_head = parse_head
py_chunked_decode = chunked_decode
try:
    from _iotutils import parse_head, chunked_decode
except ImportError:
    pass
