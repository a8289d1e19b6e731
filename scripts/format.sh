#!/usr/bin/env bash
# Formats nammkit's C++ and CUDA sources with clang-format 14 and the root .clang-format.
#
#   bash scripts/format.sh           rewrites the files that differ, and names them
#   bash scripts/format.sh --check   changes nothing; names the files that differ and exits 1 if any
#
# Files: every *.cpp, *.h, *.cu and *.cuh that git tracks, plus new ones that git does not ignore
# (so a file not yet added is formatted before its first commit). Generated code lives in build
# folders, which git ignores. clang-format is Debian's `clang-format` package (version 14, installed by
# scripts/install_deps.sh); other versions format differently, so they are refused.
set -euo pipefail
cd "$(dirname "$0")/.."

check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

clang_format=""
for candidate in clang-format-14 clang-format; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" --version | grep -q ' version 14\.'; then
    clang_format=$candidate
    break
  fi
done
if [ -z "$clang_format" ]; then
  echo "error: clang-format 14 not found (Debian: apt-get install clang-format, or bash scripts/install_deps.sh)" >&2
  exit 2
fi

files=()
while IFS= read -r -d '' f; do
  [ -f "$f" ] && files+=("$f")  # skips files deleted in the work tree but still in the index
done < <(git ls-files -z --cached --others --exclude-standard -- '*.cpp' '*.h' '*.cu' '*.cuh' | sort -zu)

differ=()
for f in "${files[@]}"; do
  "$clang_format" --style=file "$f" | cmp -s - "$f" || differ+=("$f")
done

if [ ${#differ[@]} -eq 0 ]; then
  echo "format: all ${#files[@]} C++/CUDA files are formatted"
  exit 0
fi
if [ $check -eq 1 ]; then
  echo "format: ${#differ[@]} of ${#files[@]} files are not clang-formatted (fix: bash scripts/format.sh):" >&2
  printf '  %s\n' "${differ[@]}" >&2
  exit 1
fi
"$clang_format" --style=file -i "${differ[@]}"
echo "format: reformatted ${#differ[@]} of ${#files[@]} files:"
printf '  %s\n' "${differ[@]}"
