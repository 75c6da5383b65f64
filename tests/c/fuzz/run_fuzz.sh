#!/bin/sh
# Build the libFuzzer harness for the HTTP parser core under ASan/UBSan and run it for N seconds.
# usage: tests/c/fuzz/run_fuzz.sh [SECONDS=60]      needs clang with libFuzzer (Debian: apt-get install clang)
# The seed corpus tests/c/fuzz/corpus/ is read-only input; new inputs go to $FUZZ_WORK (default build/fuzz).
# Exit status is libFuzzer's: non-zero on a crash, a sanitizer report or a broken invariant.
set -eu
SECS=${1:-60}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
WORK=${FUZZ_WORK:-$ROOT/build/fuzz}
CC=${FUZZ_CC:-clang}
mkdir -p "$WORK/corpus" "$WORK/artifacts"
$CC -g -O1 -std=c99 -Wall -Wextra -Werror -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -I "$ROOT/c_modules/iotutils" "$HERE/fuzz_httpparse.c" "$ROOT/c_modules/iotutils/httpparse.c" \
    -o "$WORK/fuzz_httpparse"
exec "$WORK/fuzz_httpparse" -max_total_time="$SECS" -max_len=4096 -timeout=10 -print_final_stats=1 \
    -dict="$HERE/http.dict" -artifact_prefix="$WORK/artifacts/" "$WORK/corpus" "$HERE/corpus"
