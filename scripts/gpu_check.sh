#!/usr/bin/env bash
# The one prepared command for a GPU machine: every GPU test and the GPU benchmarks, and optionally the
# testbed model's full training, in one call. Prepare on a CPU machine first:
#
#   bash scripts/gpu_prepare.sh            # .gpu/: Debian deps unpacked, binaries built for sm_90, data
#
# then on the GPU machine (device tool: carry [".gpu/deps", ".gpu/bin", ".gpu/shared"], or ".gpu/runtime"
# instead of ".gpu/deps" when the working tree must stay small and the prebuilt binaries are known to run):
#
#   bash scripts/gpu_check.sh [--train SECONDS] [--build] [--no-bench]
#
#   --train S   also train the testbed model (tools/train_testbed, preset full, S seconds of training)
#               on the GPU while the tests run; the benchmarks wait for it, so they have the GPU alone
#   --build     build from source there (with .gpu/deps) even when the prebuilt binaries run
#   --no-bench  tests only
#   --kernels-only  of the benchmarks, bench_kernels only
# GPU_CHECK_POPULATION_CONTEXT sets bench_gpu_population's prompt length on the 8B shape (default 4096).
# The benchmarks are cut to end by $GPU_CHECK_DEADLINE seconds after the start (default 560), so that the
# whole call fits the device tool's 10-minute limit. For a rehearsal on a CPU machine:
# GPU_CHECK_CONTEXTS sets the synthetic 8B-shaped model's contexts (default 4096,16384,32768).
#   GPU_CHECK_PYTHON=/usr/bin/python3 GPU_CHECK_TRAIN_PRESET=smoke bash scripts/gpu_check.sh --train 20
#
# Binaries: the prebuilt ones in .gpu/bin when they load and run there, else a build from source with
# nvcc there (sm_90, -march=native) against the unpacked Debian packages in .gpu/deps.
# Output under $OUT (default /tmp/gpu_check), at most 8 files so that the device tool brings them back:
#   gpu_check.log     everything printed
#   results.jsonl     one JSON line per test binary (passed/failed/skipped) and every benchmark line
#   details.tar.gz    gtest JSON reports and logs, build log, training log
#   testbed.tar.gz    the trained model's card, log, train_info and logits fixture (with --train)
#   testbed.gguf.part-aa, -ab   the GGUF split under 16 MiB (join with cat)
# Exit status: 0 when every test passed, 1 otherwise (benchmark failures are reported, not fatal).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out" "$out/work"
exec > >(tee -a "$out/gpu_check.log") 2>&1
results=$out/results.jsonl
: >"$results"
t_start=$(date +%s)
say() { echo "[gpu_check +$(($(date +%s) - t_start))s] $*"; }

train_seconds=0 force_build=0 bench=1
deadline=${GPU_CHECK_DEADLINE:-560}  # seconds after the start by which the benchmarks must have ended
while [ $# -gt 0 ]; do
  case "$1" in
    --train) train_seconds=$2; shift 2 ;;
    --build) force_build=1; shift ;;
    --no-bench) bench=0; shift ;;
    --kernels-only) bench=2; shift ;;
    *) echo "gpu_check: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -d .gpu/shared ] && { [ -d .gpu/deps ] || { [ -d .gpu/bin ] && [ -d .gpu/runtime ]; }; } ||
  { echo "gpu_check: .gpu/shared and .gpu/deps (or .gpu/bin + .gpu/runtime) are needed: run scripts/gpu_prepare.sh here and carry them" >&2; exit 2; }

# ---- the machine ------------------------------------------------------------------------------------
say "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader || true
(nvcc --version | tail -2; cmake --version | head -1; g++ --version | head -1; grep PRETTY /etc/os-release;
 lscpu | grep -m1 'Model name'; nproc) 2>&1 | sed 's/^/  /'
python3 -c 'import torch; print("  torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1 || true

# ---- testbed training in the background (GPU), while the build and the tests use the CPUs ---------------
train_pid=""
if [ "$train_seconds" != 0 ]; then
  mkdir -p models/testbed
  say "training the testbed model for ${train_seconds}s in the background (log: train.log)"
  NAMMKIT_SHARED_DIR=$root/.gpu/shared PYTHONUNBUFFERED=1 \
    "${GPU_CHECK_PYTHON:-python3}" tools/train_testbed/train.py --preset "${GPU_CHECK_TRAIN_PRESET:-full}" --time-budget "$train_seconds" --workers 6 \
    --out models/testbed/testbed.gguf >"$out/work/train.log" 2>&1 &
  train_pid=$!
fi

# ---- libraries: the unpacked Debian packages and the CUDA libraries of this machine --------------------
deps=$root/.gpu/deps
cuda_dirs=""
for lib in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcufft.so.12; do
  d=$(dirname "$(find /usr/local/cuda/lib64/ /usr/local/cuda/targets/x86_64-linux/lib/ /usr/lib/x86_64-linux-gnu/ \
       /opt/torch/.venv/lib/python3*/site-packages/nvidia/ -name "$lib" 2>/dev/null | head -1)" 2>/dev/null)
  [ -n "$d" ] && [ "$d" != "." ] && case ":$cuda_dirs:" in *":$d:"*) ;; *) cuda_dirs=$cuda_dirs:$d ;; esac
done
export LD_LIBRARY_PATH=$root/.gpu/runtime:$deps/usr/lib/x86_64-linux-gnu:$deps/lib/x86_64-linux-gnu${cuda_dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
say "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

# The prebuilt binaries have /work/main (source tree: test fixtures) and /tmp/nammkit_shared (shared
# folder) compiled in.
ln -sfn "$root/.gpu/shared" /tmp/nammkit_shared
if [ ! -e /work/main ]; then mkdir -p /work && ln -s "$root" /work/main; fi
bindir=$root/.gpu/bin
use_prebuilt=1
[ $force_build = 1 ] && use_prebuilt=0
[ "$(cd /work/main 2>/dev/null && pwd -P)" = "$(pwd -P)" ] || { say "/work/main is not this tree: building"; use_prebuilt=0; }
if [ $use_prebuilt = 1 ]; then
  for b in "$bindir"/*; do
    if ldd "$b" | grep -q "not found"; then
      say "prebuilt $(basename "$b") misses: $(ldd "$b" | grep 'not found' | tr -s ' \t' ' ' | tr '\n' ';')"
      use_prebuilt=0
    fi
  done
  if [ $use_prebuilt = 1 ] && ! "$bindir/test_kernels_reference" --gtest_brief=1 >"$out/work/prebuilt_smoke.log" 2>&1; then
    say "prebuilt test_kernels_reference failed:"; tail -5 "$out/work/prebuilt_smoke.log"
    use_prebuilt=0
  fi
fi

if [ $use_prebuilt = 0 ] && [ ! -d "$deps" ]; then
  say "cannot build from source: .gpu/deps was not carried"; echo '{"check":"build","ok":false}' >>"$results"
elif [ $use_prebuilt = 0 ]; then
  say "building from source with nvcc (sm_90) against .gpu/deps"
  export PKG_CONFIG_PATH=$deps/usr/lib/x86_64-linux-gnu/pkgconfig:$deps/usr/share/pkgconfig
  export PKG_CONFIG_SYSROOT_DIR=$deps  # the .pc files say prefix=/usr
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  build=$root/build-device
  cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DNAMMKIT_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DNAMMKIT_NATIVE=ON -DNAMMKIT_SHARED_DIR="$root/.gpu/shared" \
    -DCMAKE_PREFIX_PATH="$deps/usr;$deps/usr/lib/x86_64-linux-gnu/cmake;$deps/usr/share" \
    -DPKG_CONFIG_EXECUTABLE="$deps/usr/bin/pkgconf" -DProtobuf_PROTOC_EXECUTABLE="$deps/usr/bin/protoc" \
    -DProtobuf_INCLUDE_DIR="$deps/usr/include" \
    -DProtobuf_LIBRARY="$deps/usr/lib/x86_64-linux-gnu/libprotobuf.so" \
    -DZLIB_INCLUDE_DIR="$deps/usr/include" -DZLIB_LIBRARY="$deps/usr/lib/x86_64-linux-gnu/libz.so" \
    >"$out/work/build.log" 2>&1 &&
    cmake --build "$build" -j 12 --target nammkit nammkit_cuda test_kernels_gpu test_kernels_session \
      test_kernels_lockstep test_kernels_reference test_kernels_batch_plan test_kernels_namm_layout bench_kernels \
      bench_gpu_model bench_gpu_population >>"$out/work/build.log" 2>&1
  rc=$?
  if [ $rc != 0 ]; then
    say "BUILD FAILED (rc $rc):"; grep -m20 -i -B2 -A3 "error" "$out/work/build.log"; tail -20 "$out/work/build.log"
    echo '{"check":"build","ok":false}' >>"$results"
  else
    bindir=$root/.gpu/bin-device
    mkdir -p "$bindir"
    for t in nammkit libnammkit_cuda.so test_kernels_gpu test_kernels_session test_kernels_lockstep \
      test_kernels_reference test_kernels_batch_plan test_kernels_namm_layout bench_kernels bench_gpu_model \
      bench_gpu_population; do
      cp "$(find "$build" -name "$t" -type f -perm -u+x | head -1)" "$bindir/"
    done
    echo '{"check":"build","ok":true}' >>"$results"
  fi
fi
say "binaries: $bindir"

# ---- tests --------------------------------------------------------------------------------------------
failed=0
run_test() {  # run_test NAME [gtest args...]: one results line from the gtest JSON report
  local name=$1 tag=$1; shift
  [ $# -gt 0 ] && tag=$name.${1#--gtest_filter=}
  local report=$out/work/$tag.json
  say "test $tag"
  timeout 300 "$bindir/$name" "$@" --gtest_output=json:"$report" >"$out/work/$tag.log" 2>&1
  local rc=$?
  grep -E '^\[  (PASSED|SKIPPED|FAILED) +\] [0-9]+ test|^\[  FAILED  \] [A-Za-z]' "$out/work/$tag.log" | sed 's/^/    /' | head -40
  python3 - "$report" "$tag" "$rc" >>"$results" <<'EOF'
import json, sys
path, tag, rc = sys.argv[1], sys.argv[2], int(sys.argv[3])
line = {"test": tag, "rc": rc}
try:
    r = json.load(open(path))
    cases = [c for s in r["testsuites"] for c in s["testsuite"]]
    line["failed"] = [c["classname"] + "." + c["name"] for c in cases if c.get("failures")]
    line["skipped"] = [c["classname"] + "." + c["name"] for c in cases if c.get("result") == "SKIPPED"]
    line["passed"] = len(cases) - len(line["failed"]) - len(line["skipped"])
except Exception as e:  # a crash leaves no report
    line["error"] = f"no gtest report ({e})"
print(json.dumps(line))
EOF
  [ $rc = 0 ] || { failed=1; say "FAILED: $tag (rc $rc)"; tail -30 "$out/work/$tag.log"; }
}
if [ -x "$bindir/test_kernels_gpu" ]; then
  run_test test_kernels_reference
  [ -x "$bindir/test_kernels_batch_plan" ] && run_test test_kernels_batch_plan
  [ -x "$bindir/test_kernels_namm_layout" ] && run_test test_kernels_namm_layout
  run_test test_kernels_gpu
  if [ -n "$train_pid" ]; then
    run_test test_kernels_session --gtest_filter=-*Testbed*  # the testbed model's tests wait for the training
    [ -x "$bindir/test_kernels_lockstep" ] && run_test test_kernels_lockstep --gtest_filter=-*Testbed*
  else
    run_test test_kernels_session
    [ -x "$bindir/test_kernels_lockstep" ] && run_test test_kernels_lockstep
  fi
else
  failed=1
fi

# ---- the CLI on the GPU: the same eval through --device cuda and --device cpu ----------------------------
if [ -x "$bindir/nammkit" ] && [ -f "$bindir/libnammkit_cuda.so" ]; then
  printf '%s\n' '{"tasks": [' \
    ' {"name": "lm", "label": "lm", "split": "heldout", "samples": 8, "context_tokens": 256, "score_tokens": 128, "text": "tinystories", "seed": 7},' \
    ' {"name": "passkey", "label": "passkey", "split": "heldout", "samples": 4, "context_tokens": 400, "seed": 7}' \
    ']}' >"$out/work/eval_tasks.json"
  for dev in cuda cpu; do
    say "nammkit eval --device $dev"
    NAMMKIT_SHARED_DIR=$root/.gpu/shared timeout 120 "$bindir/nammkit" eval \
      --model .gpu/shared/models/stories260K/stories260K.bin --tasks "$out/work/eval_tasks.json" --baseline full \
      --baseline h2o:0.25 --baseline streaming:64 --interval 32 --device $dev --json "$out/work/eval_$dev.json" \
      >"$out/work/eval_$dev.txt" 2>&1 || { failed=1; say "FAILED: nammkit eval --device $dev"; }
    cat "$out/work/eval_$dev.txt"
  done
  python3 -c '
import json, sys
try:
    g, c = (json.load(open(p)) for p in sys.argv[1:3])
    rows = [{"policy": a["policy"], "cuda_mean_normalised": a["mean_normalised"], "cpu_mean_normalised": b["mean_normalised"],
             "cuda_mean_cache": a["mean_cache"], "cpu_mean_cache": b["mean_cache"]} for a, b in zip(g["rows"], c["rows"])]
    print(json.dumps({"check": "eval_cuda_vs_cpu", "device": g.get("device"), "rows": rows}))
except Exception as e:
    print(json.dumps({"check": "eval_cuda_vs_cpu", "error": str(e)}))
' "$out/work/eval_cuda.json" "$out/work/eval_cpu.json" | tee -a "$results"
fi

# ---- the trained testbed model ------------------------------------------------------------------------
if [ -n "$train_pid" ]; then
  say "waiting for the training"
  wait "$train_pid"
  train_rc=$?
  grep -E "^\[train\] (preset|step [0-9]*0{2,} |done|held-out)" "$out/work/train.log" | tail -40
  tail -3 "$out/work/train.log"
  echo "{\"check\":\"train\",\"rc\":$train_rc}" >>"$results"
  if [ -f models/testbed/testbed.gguf ]; then
    ls -l models/testbed
    (cd models/testbed && tar czf "$out/testbed.tar.gz" --exclude='*.gguf' --exclude='*.pt' .)
    split -b 15M -d -a 2 models/testbed/testbed.gguf "$out/testbed.gguf.part-"
    sha256sum models/testbed/testbed.gguf
    if [ -x "$bindir/test_kernels_session" ]; then
      NAMMKIT_TESTBED_MODEL=$root/models/testbed/testbed.gguf run_test test_kernels_session --gtest_filter=*Testbed*
      [ -x "$bindir/test_kernels_lockstep" ] &&
        NAMMKIT_TESTBED_MODEL=$root/models/testbed/testbed.gguf run_test test_kernels_lockstep --gtest_filter=*Testbed*
    fi
  else
    say "no testbed.gguf was written"; failed=1
  fi
fi

# ---- benchmarks (the GPU to themselves) ----------------------------------------------------------------
bench() {  # bench SECONDS ARGS...: JSON lines to results.jsonl, stderr to the log; skipped past the deadline
  local limit=$1; shift
  local left=$((deadline - ($(date +%s) - t_start) - 15))
  [ $left -lt $limit ] && limit=$left
  if [ $limit -lt 10 ]; then
    say "skipped (deadline): $*"; echo "{\"bench\":\"$(basename "$1")\",\"skipped\":\"deadline\"}" >>"$results"; return
  fi
  say "bench $* (limit ${limit}s)"
  timeout "$limit" "$@" 2>>"$out/work/bench.stderr" | tee -a "$results"
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || { say "bench $(basename "$1") rc $rc"; echo "{\"bench\":\"$(basename "$1")\",\"rc\":$rc}" >>"$results"; }
}
if [ $bench != 0 ] && [ -x "$bindir/bench_kernels" ]; then
  nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,utilization.gpu --format=csv,noheader || true
  bench 150 "$bindir/bench_kernels"
fi
# Issue #14's target: one generation of 32 members x 8 prompts of 4K tokens, lockstep vs member by member,
# on the 8B-shaped model (8 layers) and on the testbed model.
if [ $bench = 1 ] && [ -x "$bindir/bench_gpu_population" ]; then
  bench 150 "$bindir/bench_gpu_population" --members 32 --prompts 8 --context "${GPU_CHECK_POPULATION_CONTEXT:-4096}" --layers 8
  if [ -f models/testbed/testbed.gguf ]; then
    bench 60 "$bindir/bench_gpu_population" --model models/testbed/testbed.gguf --members 32 --prompts 8 --context 2048
    # The same with a random NAMM per member, its updates on the device (batched in lockstep).
    bench 90 "$bindir/bench_gpu_population" --model models/testbed/testbed.gguf --members 32 --prompts 8 --context 2048 \
      --policy namm
  fi
fi
if [ $bench = 1 ] && [ -x "$bindir/bench_gpu_model" ]; then
  bench 60 "$bindir/bench_gpu_model" --model .gpu/shared/models/stories260K/stories260K.bin --contexts 256,512 --decode 128
  if [ -f models/testbed/testbed.gguf ]; then
    bench 90 "$bindir/bench_gpu_model" --model models/testbed/testbed.gguf --contexts 2048,4096 --decode 64
  fi
  bench 200 "$bindir/bench_gpu_model" --layers 8 --contexts "${GPU_CHECK_CONTEXTS:-4096,16384,32768}" --decode 64
fi

# ---- pack ---------------------------------------------------------------------------------------------
(cd "$out/work" && tar czf "$out/details.tar.gz" .) && rm -rf "$out/work"
say "done; tests $([ $failed = 0 ] && echo passed || echo FAILED); files in $out:"
ls -l "$out"
exit $failed
