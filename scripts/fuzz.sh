#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan+UBSan, coverage) into
# build-fuzz/ and runs each for a bounded time. The build is also the CI's
# clang check: -Wthread-safety with -Werror over the pager and common code
# (every lock rule annotated there), one file at a time (no unity batches), so
# each file must include what it uses. Each target runs starting from the seed corpus
# in tests/fuzz/corpus/<name>/. New inputs go to build-fuzz/corpus/<name>/
# (the seeds stay as committed); a crash leaves its input in
# build-fuzz/artifacts/ and fails the script.
#   UFFDPAGER_FUZZ_SECONDS  seconds per target (default 60)
#   UFFDPAGER_FUZZ_TARGETS  which targets (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${UFFDPAGER_FUZZ_SECONDS:-60}
targets=${UFFDPAGER_FUZZ_TARGETS:-"handshake control_api"}
dir=build-fuzz
CC=clang CXX=clang++ cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DUFFDPAGER_FUZZ=ON \
  -DUFFDPAGER_WITH_BENCH=OFF -DBUILD_TESTING=OFF -DUFFDPAGER_WERROR=ON -DUFFDPAGER_UNITY_BUILD=OFF \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" >/dev/null
ninja -C "$dir" -j "${UFFDPAGER_TEST_JOBS:-2}" $(for t in $targets; do echo "fuzz_$t"; done)
mkdir -p "$dir/artifacts"
export ASAN_OPTIONS="detect_leaks=1 abort_on_error=1 ${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1 halt_on_error=1 ${UBSAN_OPTIONS:-}"
for t in $targets; do
  mkdir -p "$dir/corpus/$t"
  echo "=== fuzz_$t for ${seconds}s ==="
  "$dir/bin/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$dir/artifacts/$t-" "$dir/corpus/$t" "tests/fuzz/corpus/$t"
done
