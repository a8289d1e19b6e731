#!/usr/bin/env bash
# Prepares, on this (CPU) machine, everything scripts/gpu_check.sh needs on a GPU machine that has nvcc,
# CMake, g++ and PyTorch but no Debian -dev packages and no network. Writes the git-ignored folder .gpu/:
#
#   .gpu/debs/    the Debian packages, as downloaded (a cache: re-runs download nothing)
#   .gpu/deps/    the same packages unpacked (dpkg -x): headers, CMake configs, pkg-config files,
#                 the runtime .so files and protoc, for building nammkit there
#   .gpu/bin/     nammkit and the GPU tests and benchmarks built here for sm_90 (tried first there;
#                 gpu_check.sh builds from source with .gpu/deps when they do not run)
#   .gpu/runtime/ just the shared libraries those binaries load from .gpu/deps (TBB, Protobuf, FFTW,
#                 zlib: about 6 MB), for a call whose working tree has no room for all of .gpu/deps
#   .gpu/shared/  the part of ../shared the GPU checks and the testbed training read (about 6 MB)
#
# Then run on the device tool, naming .gpu in `carry`:   bash scripts/gpu_check.sh [--train SECONDS]
# Usage here: bash scripts/gpu_prepare.sh [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
gpu=$root/.gpu
build=$root/build-gpu
shared=${NAMMKIT_SHARED_DIR:-$root/../shared}
do_build=1
[ "${1:-}" = "--no-build" ] && do_build=0
[ -d "$shared/data" ] || { echo "gpu_prepare: shared folder not found at $shared (set NAMMKIT_SHARED_DIR)" >&2; exit 1; }
grep -qx '/.gpu/' .gitignore || { echo "gpu_prepare: .gitignore must list /.gpu/" >&2; exit 1; }

# 1. Debian packages: what CMakeLists.txt finds (Eigen, nlohmann-json, TBB, Protobuf + protoc, FFTW3,
#    GoogleTest, zlib, pkg-config) with the runtime libraries they link.
packages=(libeigen3-dev nlohmann-json3-dev libtbb-dev libtbb12 libtbbmalloc2 libtbbbind-2-5 libhwloc15
          libprotobuf-dev libprotobuf32 libprotobuf-lite32 protobuf-compiler libprotoc32
          libgtest-dev libgmock-dev googletest libfftw3-dev libfftw3-single3 libfftw3-double3
          zlib1g-dev zlib1g pkgconf pkgconf-bin libpkgconf3)
mkdir -p "$gpu/debs"
missing=()
for p in "${packages[@]}"; do
  compgen -G "$gpu/debs/${p}_*.deb" >/dev/null || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "gpu_prepare: downloading ${missing[*]}" >&2
  (cd "$gpu/debs" && apt-get download "${missing[@]}" >/dev/null) ||
    { echo "gpu_prepare: apt-get download failed (run 'apt-get update' first, or no registry)" >&2; exit 1; }
fi
rm -rf "$gpu/deps"
mkdir -p "$gpu/deps"
for f in "$gpu"/debs/*.deb; do dpkg -x "$f" "$gpu/deps"; done
# Drop what no build needs (documentation, manual pages) to keep the carried tree small.
# Static archives are not linked (the shared ones are), except GoogleTest's, which only come static.
rm -rf "$gpu/deps/usr/share/doc" "$gpu/deps/usr/share/man" "$gpu/deps/usr/share/info" "$gpu/deps/usr/src" \
  "$gpu/deps/usr/include/eigen3/unsupported"
find "$gpu/deps" -name '*.a' ! -name 'libgtest*' ! -name 'libgmock*' -delete
# Absolute links (libz.so -> /lib/x86_64-linux-gnu/libz.so.1.2.13) would point into the other machine's
# system: point them at the unpacked copy instead.
find "$gpu/deps" -type l | while read -r link; do
  target=$(readlink "$link")
  case "$target" in /*) [ -e "$gpu/deps$target" ] && ln -sfnr "$gpu/deps$target" "$link" ;; esac
done

# 2. The shared data the checks read: stories260K (GPU tests) and the corpora of the testbed training.
rm -rf "$gpu/shared"
mkdir -p "$gpu/shared/models" "$gpu/shared/data"
cp -r "$shared/models/stories260K" "$gpu/shared/models/"
for d in books pg_essays tinystories; do cp -r "$shared/data/$d" "$gpu/shared/data/"; done

# 3. Prebuilt binaries (sm_90, x86-64-v3 host code). Their compiled-in paths are /work/main for the
#    source tree and /tmp/nammkit_shared for the shared folder; gpu_check.sh links both there.
if [ $do_build = 1 ]; then
  ln -sfn "$(cd "$shared" && pwd)" /tmp/nammkit_shared
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DNAMMKIT_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DNAMMKIT_NATIVE=OFF -DCMAKE_CXX_FLAGS=-march=x86-64-v3 -DCMAKE_CUDA_FLAGS=-Xcompiler=-march=x86-64-v3 \
    -DNAMMKIT_SHARED_DIR=/tmp/nammkit_shared >/dev/null
  targets=(nammkit nammkit_cuda test_kernels_gpu test_kernels_session test_kernels_lockstep test_kernels_reference
           test_kernels_batch_plan test_kernels_namm_layout bench_kernels bench_gpu_model bench_gpu_population)
  cmake --build "$build" -j "$(nproc)" --target "${targets[@]}"
  rm -rf "$gpu/bin"
  mkdir -p "$gpu/bin"
  for t in "${targets[@]}"; do
    [ "$t" = nammkit_cuda ] && t=libnammkit_cuda.so  # the CUDA backend module, next to nammkit
    f=$(find "$build" -name "$t" -type f -perm -u+x | head -1)
    [ -n "$f" ] || { echo "gpu_prepare: $t was not built" >&2; exit 1; }
    cp "$f" "$gpu/bin/"
  done
  strip --strip-debug "$gpu"/bin/*
  rm -rf "$gpu/runtime"
  mkdir -p "$gpu/runtime"
  LD_LIBRARY_PATH=$gpu/deps/usr/lib/x86_64-linux-gnu:$gpu/deps/lib/x86_64-linux-gnu ldd "$gpu"/bin/* |
    awk '$3 ~ /\.gpu\/deps\// {print $3}' | sort -u | while read -r lib; do cp -L "$lib" "$gpu/runtime/"; done
fi
du -sh "$gpu/deps" "$gpu/shared" "$gpu/bin" "$gpu/runtime" 2>/dev/null | sed 's/^/gpu_prepare: /' >&2
echo "gpu_prepare: .gpu is ready; on the device: carry [\".gpu/deps\", \".gpu/bin\", \".gpu/shared\"] (or .gpu/runtime instead of .gpu/deps)" >&2
