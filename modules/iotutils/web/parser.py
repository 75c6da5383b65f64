# The HTTP request parser the server runs on: the firmware's C core (_iotutils) when it has one, else
# the pure-Python twin in iotutils.http (same rules, same results; not even loaded on the firmware).
#
#   parse_head(buf, length, out) -> consumed (> 0), 0 (need more) or -status; out: array('i') of slots
#   chunked_decode(buf, start, end, state) -> data bytes decoded in place, or -status
#   reason(i) -> the text of an error index the parser left in out[0] / state[3]
try:
    from _iotutils import chunked_decode, http_reason as reason, parse_head
except ImportError:
    from iotutils.http import REASONS as _REASONS, chunked_decode, parse_head  # noqa: F401 - this module's API

    def reason(i):
        return _REASONS[i] if 0 <= i < len(_REASONS) else ""
