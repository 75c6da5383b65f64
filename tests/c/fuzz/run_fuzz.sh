#!/bin/sh
# Build a libFuzzer harness for a C core under ASan/UBSan and run it for N seconds.
# usage: tests/c/fuzz/run_fuzz.sh [SECONDS=60] [TARGET=httpparse]   TARGET: httpparse or jsoncheck
# needs clang with libFuzzer (Debian: apt-get install clang).
# The seed corpus tests/c/fuzz/corpus/ (httpparse) is read-only input; new inputs go to
# $FUZZ_WORK/TARGET (default build/fuzz).
# Exit status is libFuzzer's: non-zero on a crash, a sanitizer report or a broken invariant.
set -eu
SECS=${1:-60}
TARGET=${2:-httpparse}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
WORK=${FUZZ_WORK:-$ROOT/build/fuzz}/$TARGET
CC=${FUZZ_CC:-clang}
case $TARGET in
    httpparse) EXTRA="-max_len=4096 -dict=$HERE/http.dict"; SEEDS=$HERE/corpus ;;
    jsoncheck) EXTRA="-max_len=2048 -dict=$HERE/json.dict"; SEEDS= ;;
    *) echo "run_fuzz.sh: unknown target $TARGET (httpparse, jsoncheck)" >&2; exit 2 ;;
esac
mkdir -p "$WORK/corpus" "$WORK/artifacts"
$CC -g -O1 -std=c99 -Wall -Wextra -Werror -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -I "$ROOT/c_modules/iotutils" "$HERE/fuzz_$TARGET.c" "$ROOT/c_modules/iotutils/$TARGET.c" \
    -o "$WORK/fuzz_$TARGET"
# shellcheck disable=SC2086
exec "$WORK/fuzz_$TARGET" -max_total_time="$SECS" -timeout=10 -print_final_stats=1 $EXTRA \
    -artifact_prefix="$WORK/artifacts/" "$WORK/corpus" $SEEDS
