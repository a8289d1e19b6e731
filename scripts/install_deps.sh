#!/usr/bin/env bash
# Installs the Debian packages nammkit builds against, if any are missing. Idempotent and silent
# when everything is already there. CUDA is optional and comes from /usr/local/cuda when present.
# clang-format (14 on Debian 12) is for scripts/format.sh, which scripts/test.sh runs as a check; unzip
# is for scripts/fetch_models.sh. clang and libclang-rt-14-dev (its sanitizer and libFuzzer runtimes,
# only a recommendation of clang) are for scripts/fuzz.sh, which scripts/test.sh runs. libopenmpi-dev and
# openmpi-bin (mpirun) are for the MPI runs (distributed/) and their tests. libxapian-dev is the BM25 index of
# Memory3's retriever (namm/bank_retriever.h; optional at build time, needed by run --bank).
set -euo pipefail
packages=(build-essential cmake pkg-config zlib1g-dev libeigen3-dev nlohmann-json3-dev libtbb-dev libprotobuf-dev
          protobuf-compiler libgtest-dev libfftw3-dev clang-format unzip clang libclang-rt-14-dev libopenmpi-dev
          openmpi-bin libxapian-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
