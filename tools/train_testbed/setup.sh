#!/usr/bin/env bash
# Creates tools/train_testbed/.venv (git-ignored) with pinned torch 2.x + numpy from PyPI, for running
# train.py on the CPU with torch 2 (scaled_dot_product_attention, torch.compile available).
#
#   tools/train_testbed/setup.sh            # minimal: CPU use, ~2.3 GB of wheels (default)
#   tools/train_testbed/setup.sh --full     # torch with all its declared deps (+ triton, cusolver): ~2.8 GB
#   tools/train_testbed/setup.sh --reference  # also the Hugging Face reference stack (gguf, tokenizers,
#                                             # transformers, accelerate) used by tools/reference/smollm2_*.py
#   tools/train_testbed/setup.sh --bench      # also llama-cpp-python, built from source (~15 min on 2 cores),
#                                             # for bench/bench_llamacpp.py
#   tools/train_testbed/.venv/bin/python tools/train_testbed/train.py --preset smoke --out /tmp/tb/testbed.gguf
#
# Why "minimal" still installs NVIDIA wheels: PyPI's Linux x86_64 torch wheel is the CUDA build (a
# CPU-only wheel exists only on PyTorch's own index, which is not used here). Its libtorch_cpu.so,
# libtorch_cuda.so and libtorch_python.so have DT_NEEDED entries on cudart, cupti, cublas(Lt), cudnn,
# cufft, cufile, cusparse(+nvjitlink), cusparseLt, nccl, nvrtc and nvshmem, so `pip install --no-deps
# torch` alone fails at `import torch` (ImportError: libcufile.so.0 ...). Minimal mode installs torch
# with --no-deps plus exactly those libraries and torch's pure-Python deps; it leaves out triton,
# nvidia-cusolver (loaded lazily, CUDA linalg only), nvtx, cuda-bindings/pathfinder/cccl and the
# cuda-toolkit meta package, so `pip check` reports them missing: expected. CUDA still works in
# minimal mode except torch.compile (needs triton) and CUDA linalg; use --full on a GPU machine.
#
# Idempotent: a stamp in the venv records the pins; a rerun with the same pins only re-verifies.
# Environment: PYTHON (interpreter for the venv, >= 3.11; default /usr/bin/python3, else python3).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv"
MODE=minimal
REFERENCE=0
BENCH=0
for a in "$@"; do
  case "$a" in
    --full) MODE=full ;;
    --reference) REFERENCE=1 ;;
    --bench) BENCH=1 ;;
    --minimal) MODE=minimal ;;
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown argument '$a' (use --full, --minimal or --help)" >&2; exit 2 ;;
  esac
done

# ---- pins (exact versions; torch 2.15.0 is a CUDA 13.2 build: the NVIDIA pins are its own) ---------
TORCH_PIN="torch==2.15.0"
NUMPY_PIN="numpy==2.4.6"
PURE_PINS=(
  filelock==4.3.1 typing-extensions==4.16.0 setuptools==84.2.1 sympy==1.14.0 mpmath==1.3.0
  networkx==3.6.1 jinja2==3.1.6 markupsafe==3.0.4 fsspec==2026.9.0
)
NVIDIA_PINS=(  # only the libraries torch's shared objects need at load time
  nvidia-cuda-runtime==13.2.86 nvidia-cuda-cupti==13.2.86 nvidia-cuda-nvrtc==13.2.86
  nvidia-cublas==13.4.1.3 nvidia-cudnn-cu13==9.26.0.51 nvidia-cufft==12.2.0.57
  nvidia-cufile==1.17.1.22 nvidia-cusparse==12.7.10.12 nvidia-nvjitlink==13.5.37
  nvidia-cusparselt-cu13==0.8.1 nvidia-nccl-cu13==2.30.7 nvidia-nvshmem-cu13==3.7.2
)
# The reference stack (installed with its own dependencies, torch and numpy already satisfied).
REFERENCE_PINS=(gguf==0.19.0 tokenizers==0.23.3 transformers==5.23.0 accelerate==1.15.0)
ALL_PINS=("$TORCH_PIN" "$NUMPY_PIN" "${PURE_PINS[@]}" "${NVIDIA_PINS[@]}")
STAMP="$VENV/.testbed-setup"
STAMP_TEXT="mode=$MODE ${ALL_PINS[*]}"
# llama.cpp through its Python binding, compiled here for this CPU (GGML_NATIVE) from the sdist.
BENCH_PINS=(llama-cpp-python==0.3.36 diskcache==5.6.3)
[ "$REFERENCE" = 1 ] && STAMP_TEXT="$STAMP_TEXT ${REFERENCE_PINS[*]}"
[ "$BENCH" = 1 ] && STAMP_TEXT="$STAMP_TEXT ${BENCH_PINS[*]}"

verify() {
  # import torch, a matmul and scaled_dot_product_attention (forward + backward) on the CPU,
  # checked against plain causal attention.
  (cd / && "$VENV/bin/python" - <<'EOF'
import math, numpy as np, torch, torch.nn.functional as F
torch.manual_seed(0)
a = torch.randn(64, 64, dtype=torch.float64)
assert torch.allclose(a @ torch.eye(64, dtype=torch.float64), a)
q, k, v = (torch.randn(2, 4, 96, 32, requires_grad=True) for _ in range(3))
o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
o.sum().backward()
s = (q @ k.transpose(-1, -2)) / math.sqrt(32)
s = s.masked_fill(torch.ones(96, 96, dtype=torch.bool).triu(1), float("-inf"))
ref = torch.softmax(s, dim=-1) @ v
assert (o - ref).abs().max().item() < 1e-5 and q.grad is not None and torch.isfinite(q.grad).all()
assert np.asarray(torch.ones(3).numpy()).sum() == 3
try:
    import gguf, tokenizers, transformers
    print(f"[setup] reference stack: gguf {gguf.__version__ if hasattr(gguf, '__version__') else '?'}, "
          f"tokenizers {tokenizers.__version__}, transformers {transformers.__version__}")
except ImportError:
    pass
print(f"[setup] ok: torch {torch.__version__}, numpy {np.__version__}, "
      f"sdpa max|diff| {(o - ref).abs().max().item():.1e}, threads {torch.get_num_threads()}, "
      f"cuda available {torch.cuda.is_available()}")
EOF
  )
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_TEXT" ] && [ -x "$VENV/bin/python" ]; then
  if verify; then
    echo "[setup] $VENV is up to date ($MODE)" >&2
    exit 0
  fi
  echo "[setup] $VENV has the right pins but fails the check: reinstalling" >&2
fi

# ---- interpreter and venv ------------------------------------------------------------------------
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY="$(command -v python3 || true)"; fi
fi
[ -n "$PY" ] && command -v "$PY" >/dev/null || { echo "setup.sh: no Python interpreter '${PY:-python3}' (set PYTHON=...)" >&2; exit 1; }
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
  echo "setup.sh: $PY is Python $("$PY" -c 'import platform; print(platform.python_version())'); torch 2.15 needs >= 3.11 (set PYTHON=...)" >&2
  exit 1
}
if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
  echo "[setup] $VENV is broken (its interpreter does not start): recreating" >&2
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $PY ($("$PY" -c 'import platform; print(platform.python_version())'))" >&2
  "$PY" -m venv "$VENV" || {
    echo "setup.sh: '$PY -m venv' failed; on Debian: apt-get install python3-venv" >&2
    rm -rf "$VENV"; exit 1
  }
fi
rm -f "$STAMP"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

# ---- registry reachable? (a 50 KB wheel, no cache, so it really asks the index) --------------------
probe="$(mktemp -d)"
trap 'rm -rf "$probe"' EXIT
if ! "${PIP[@]}" download -q --no-deps --no-cache-dir --only-binary=:all: --retries 1 --timeout 30 \
     -d "$probe" typing-extensions==4.16.0 >"$probe/log" 2>&1; then
  echo "setup.sh: cannot download from the Python package index (PyPI) — is it reachable from here?" >&2
  sed 's/^/  pip: /' "$probe/log" | tail -5 >&2
  exit 1
fi

# ---- install -------------------------------------------------------------------------------------
req="$probe/requirements.txt"
printf '%s\n' "${ALL_PINS[@]}" >"$req"
t0=$(date +%s)
if [ "$MODE" = minimal ]; then
  echo "[setup] installing torch + numpy + ${#NVIDIA_PINS[@]} NVIDIA runtime wheels, --no-deps (~2.3 GB download)" >&2
  "${PIP[@]}" install -q --no-deps --only-binary=:all: -r "$req" || {
    echo "setup.sh: pip install failed (see above; registry unreachable or a pinned version missing?)" >&2; exit 1; }
else
  echo "[setup] installing $TORCH_PIN $NUMPY_PIN with all of torch's dependencies (~2.8 GB download)" >&2
  "${PIP[@]}" install -q --only-binary=:all: -c "$req" "$TORCH_PIN" "$NUMPY_PIN" || {
    echo "setup.sh: pip install failed (see above; registry unreachable or a pinned version missing?)" >&2; exit 1; }
fi
if [ "$REFERENCE" = 1 ]; then
  echo "[setup] installing the reference stack: ${REFERENCE_PINS[*]}" >&2
  "${PIP[@]}" install -q --only-binary=:all: -c "$req" "${REFERENCE_PINS[@]}" || {
    echo "setup.sh: pip install of the reference stack failed (see above)" >&2; exit 1; }
fi
if [ "$BENCH" = 1 ]; then
  echo "[setup] building ${BENCH_PINS[0]} from source for this CPU (about 15 minutes on 2 cores)" >&2
  CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
    "${PIP[@]}" install -q --no-deps --no-binary llama-cpp-python "${BENCH_PINS[@]}" || {
    echo "setup.sh: building llama-cpp-python failed (see above; needs cmake and a C++ compiler)" >&2; exit 1; }
fi
echo "[setup] installed in $(( $(date +%s) - t0 )) s; venv size $(du -sh "$VENV" | cut -f1)" >&2
verify
echo "$STAMP_TEXT" >"$STAMP"
