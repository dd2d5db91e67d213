#!/usr/bin/env bash
# Compile every bpf/*.c (and bench baselines, test fixtures) into committed, byte-reproducible objects:
# clang -O2 -g for BTF, then strip DWARF but keep BTF.
set -euo pipefail
cd "$(dirname "$0")/.."
CLANG=${CLANG:-clang}
STRIP=${LLVM_STRIP:-llvm-strip}
command -v "$CLANG" >/dev/null || { echo "build:bpf: clang not found; apt-get install clang llvm libbpf-dev" >&2; exit 1; }
arch_inc="/usr/include/$(gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)"
for src in bpf/*.c bench/bpf/*.c test/fixtures/*.c; do
  [ -e "$src" ] || continue
  obj="${src%.c}.o"
  "$CLANG" -O2 -g -target bpf -mcpu=v3 -Wall -Werror -fdebug-prefix-map="$PWD"=. -I"$arch_inc" -Ibpf -c "$src" -o "$obj.tmp"
  "$STRIP" -g "$obj.tmp"
  mv "$obj.tmp" "$obj"
  echo "built $obj ($(stat -c %s "$obj") bytes)"
done
