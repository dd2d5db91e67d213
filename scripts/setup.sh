#!/usr/bin/env bash
# One-time (idempotent) set-up behind `npm test`, `npm run demo` and `npm run bench`: installs the
# Debian/Ubuntu packages skl needs at run time (when root and missing), the npm dependencies, and
# compiles the TypeScript. Safe to run repeatedly; does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
have_cmd() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
ldconfig -p 2>/dev/null | grep -q 'libbpf.so.1 ' || need+=(libbpf1)
have_cmd ip || need+=(iproute2)
have_cmd nsenter || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${need[*]}" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: missing system packages: ${need[*]} (install them with: sudo apt-get install ${need[*]})" >&2
  fi
fi

# skl pins its state in bpffs; a fresh machine may not have it mounted (skl mounts it itself only
# where it can prove it is in the host's mount namespace).
if [ "$(id -u)" = 0 ] && [ -d /sys/fs/bpf ] && [ "$(stat -f -c %T /sys/fs/bpf 2>/dev/null)" != "bpf_fs" ]; then
  echo "setup: mounting the BPF filesystem at /sys/fs/bpf" >&2
  mount -t bpf bpf /sys/fs/bpf || echo "setup: could not mount bpffs at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)" >&2
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi

stamp=dist/.build-stamp
if [ ! -f "$stamp" ] || [ -n "$(find src test scripts bench examples tsconfig.json -newer "$stamp" -name '*.ts' -o -newer "$stamp" -name 'tsconfig.json' 2>/dev/null | head -1)" ]; then
  echo "setup: compiling TypeScript" >&2
  npm run --silent build
  touch "$stamp"
fi
