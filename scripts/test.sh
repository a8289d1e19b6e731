#!/usr/bin/env bash
# The whole check, as CI runs it (.ci/run):
#   1. formatting: scripts/format.sh --check (clang-format 14);
#   2. build/: Release with warnings as errors (CUDA when nvcc is present), and the whole test suite;
#   3. build-asan/: AddressSanitizer + UndefinedBehaviorSanitizer (host code, no CUDA, no benchmarks),
#      and the whole test suite again under them;
#   4. build-fuzz/: the libFuzzer targets of tests/fuzz (clang, ASan + UBSan), each run for
#      FUZZ_CI_SECONDS (default 30) by scripts/fuzz.sh; a crash or sanitizer report fails the script.
# A formatting failure does not stop the builds and tests; it fails the script at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/fetch_models.sh  # SmolLM2 for the quantisation, tokenizer and logits tests
jobs=$(nproc)

format_ok=1
bash scripts/format.sh --check || format_ok=0

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DNAMMKIT_WERROR=ON >/dev/null
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure -j "$jobs"

# Sanitizers: any ASan or UBSan report fails its test (halt_on_error), and leaks count. -O1 (with line
# tables for the reports) compiles about 3x faster than -O3 under ASan. No -Werror here: instrumented
# code gets false-positive warnings from GCC, and build/ already checks the warnings.
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O1 -g1 -DNDEBUG" \
  -DNAMMKIT_SANITIZE=address,undefined -DNAMMKIT_CUDA=OFF -DNAMMKIT_BUILD_BENCH=OFF >/dev/null
cmake --build build-asan -j "$jobs"
ASAN_OPTIONS=detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1 \
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j "$jobs"

# Fuzzing, bounded: the clang build of the libraries the targets need (core, transformer, namm, tasks,
# evolution; 255 s at -j1 from scratch, measured 2026-11-30) plus 8 targets x FUZZ_CI_SECONDS (~31 s
# each with start-up): about 8.5 minutes even on one core.
FUZZ_JOBS="$jobs" bash scripts/fuzz.sh "${FUZZ_CI_SECONDS:-30}"

if [ $format_ok -eq 0 ]; then
  echo "FAILED: sources are not clang-formatted; run bash scripts/format.sh (the list is above)" >&2
  exit 1
fi
