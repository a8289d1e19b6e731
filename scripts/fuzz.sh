#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz, clang + ASan + UBSan) in build-fuzz/ and runs each for
# SECONDS (default 20), then prints per target the executions and the crashes.
#   bash scripts/fuzz.sh            # ~20 s per target
#   bash scripts/fuzz.sh 600        # a longer run: 10 minutes per target
#   FUZZ_TARGETS="gguf policy" bash scripts/fuzz.sh 60    # some targets only
#   FUZZ_RUNS=1000000 bash scripts/fuzz.sh 7200   # each target until 1M executions (or 2 hours)
# Each target reads its committed seeds (tests/fuzz/corpus/<name>/, never written) and keeps what it
# finds in build-fuzz/corpus/<name>/, so later runs go on from there. A crash, sanitizer report,
# leak, timeout (> 10 s for one input) or out-of-memory (> 2 GiB) leaves its input in
# build-fuzz/artifacts/<name>/ and makes the script fail; reproduce with
#   build-fuzz/fuzz/fuzz_<name> build-fuzz/artifacts/<name>/crash-...
# Environment: FUZZ_JOBS (build jobs, default nproc), FUZZ_BUILD_DIR (default build-fuzz), FUZZ_RUNS
# (stop a target after this many executions, before SECONDS if it gets there first).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
build=${FUZZ_BUILD_DIR:-build-fuzz}
jobs=${FUZZ_JOBS:-$(nproc)}
command -v clang++ >/dev/null || { echo "scripts/fuzz.sh: clang++ not found (apt-get install clang)" >&2; exit 1; }

start=$(date +%s)
cmake -S . -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_FLAGS_RELEASE="-O1 -g1 -DNDEBUG" -DNAMMKIT_FUZZ=ON -DNAMMKIT_CUDA=OFF -DNAMMKIT_BUILD_TESTS=OFF \
  -DNAMMKIT_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" --target fuzz_all -j "$jobs"
echo "fuzz build: $(($(date +%s) - start)) s"

targets=${FUZZ_TARGETS:-$(cd tests/fuzz/corpus && ls)}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
runs_limit=()
[ -n "${FUZZ_RUNS:-}" ] && runs_limit=(-runs="$FUZZ_RUNS")
summary=()
failed=0
for t in $targets; do
  exe="$build/fuzz/fuzz_$t"
  [ -x "$exe" ] || { echo "scripts/fuzz.sh: no target $exe" >&2; exit 1; }
  mkdir -p "$build/corpus/$t" "$build/artifacts/$t"
  log="$build/artifacts/$t.log"
  findings() { find "$build/artifacts/$t" -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' | wc -l; }
  before=$(findings)
  rc=0
  "$exe" "$build/corpus/$t" "tests/fuzz/corpus/$t" -max_total_time="$seconds" "${runs_limit[@]}" -timeout=10 -rss_limit_mb=2048 \
    -malloc_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$build/artifacts/$t/" >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  crashes=$(($(findings) - before))
  if [ $rc -ne 0 ] && [ $crashes -eq 0 ]; then crashes=1; fi  # failed without leaving an input
  if [ $crashes -ne 0 ]; then
    failed=1
    echo "== fuzz_$t failed (exit $rc); the report:" >&2
    grep -E -A25 "ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|uncaught exception|terminate called" "$log" | head -60 >&2 || tail -40 "$log" >&2
  fi
  took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  summary+=("$(printf '%-20s executions %10s in %6s s  crashes %d' "$t" "${execs:-?}" "${took:-?}" "$crashes")")
done
echo "fuzzing, $seconds s per target (logs and crash inputs in $build/artifacts/):"
printf '  %s\n' "${summary[@]}"
echo "fuzz total: $(($(date +%s) - start)) s"
exit $failed
