#!/usr/bin/env bash
# The whole test suite: installs dependencies, checks the format, then builds
# and runs the tests three times: a normal build, an ASan+UBSan build and a
# TSan build (the fault engine is concurrent; all but snapctl's tests), then
# the clang build (thread-safety analysis with -Werror) and a short run of
# each libFuzzer target (ASan+UBSan; scripts/fuzz.sh). UFFDPAGER_TEST_BUILDS picks a subset, e.g.
# "default" or "format default fuzz".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
builds=${UFFDPAGER_TEST_BUILDS:-"format default asan tsan fuzz"}
jobs=${UFFDPAGER_TEST_JOBS:-2}
# The sanitizer builds check the product (pager, clients, lifecycle, VMM)
# under its tests; the benchmarks and examples only drive it, and are built
# and smoke-tested by the default build.
sanitized_only=(-DUFFDPAGER_WITH_BENCH=OFF -DUFFDPAGER_WITH_EXAMPLES=OFF)
# TSan looks for races, so it checks what runs threads: the pager, its
# clients and tinyvmm. snapctl is one thread driving those same programs; its
# tests run in the default and ASan builds. (Leaving it out keeps CI within
# its time budget on two cores.)
tsan_only=(-DUFFDPAGER_WITH_LIFECYCLE=OFF)
for b in $builds; do
  case "$b" in
    default) dir=build;      sanitize="";      opt="-O2"; extra=() ;;
    asan)    dir=build-asan; sanitize=address; opt="-O0"; extra=("${sanitized_only[@]}") ;;
    tsan)    dir=build-tsan; sanitize=thread;  opt="-O1"; extra=("${sanitized_only[@]}" "${tsan_only[@]}") ;;
    format)
      echo "=== format (.clang-format) ==="
      bash scripts/check-format.sh
      continue ;;
    fuzz)
      echo "=== clang: thread-safety analysis, then fuzzing (build-fuzz) ==="
      UFFDPAGER_FUZZ_SECONDS=${UFFDPAGER_FUZZ_SECONDS:-20} bash scripts/fuzz.sh
      continue ;;
    *) echo "unknown build '$b' (format, default, asan, tsan, fuzz)" >&2; exit 2 ;;
  esac
  echo "=== $b build ($dir) ==="
  # Line tables (-g1) are all a sanitizer report or a test's backtrace needs;
  # full debug info made every compile a third slower.
  # ASan+UBSan at -O0: GCC compiles the largest unit in 45 s instead of 97 s
  # at -O1, with the same checks (the -O2 default build has the warnings
  # that need the optimizer); its tests run somewhat slower.
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DUFFDPAGER_SANITIZE="$sanitize" \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$opt -g1 -DNDEBUG" "${extra[@]}" >/dev/null
  ninja -C "$dir"
  runner=()
  if [ "$b" = tsan ]; then
    # GCC 12's TSan cannot map its shadow under the high mmap randomization of
    # recent kernels; run the suite (and the pagers it starts) without ASLR.
    runner=(setarch "$(uname -m)" -R)
    export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
  fi
  if [ "$b" = asan ]; then
    export ASAN_OPTIONS="detect_leaks=1 abort_on_error=1 ${ASAN_OPTIONS:-}"
    export UBSAN_OPTIONS="print_stacktrace=1 halt_on_error=1 ${UBSAN_OPTIONS:-}"
  fi
  "${runner[@]}" ctest --test-dir "$dir" --output-on-failure -j "$jobs"
done
