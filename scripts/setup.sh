#!/usr/bin/env bash
# One-time (idempotent) set-up behind `npm test`, `npm run demo` and `npm run bench`: installs the
# Debian/Ubuntu packages skl needs at run time (when root and missing), the npm dependencies, and
# compiles the TypeScript. Safe to run repeatedly; does nothing that is already done.
# For the tests (`npm test`, or `setup.sh --test`) also what only the tests use: setpriv, a C
# compiler that can build a shared library, bpftool, fuser, and the real servers and clients of the
# service tests (nginx, redis, dnsmasq, dig, curl; installed without starting them). A test whose tool is missing is skipped
# (with the reason) outside CI and fails under CI=true: it never passes without checking.
set -euo pipefail
cd "$(dirname "$0")/.."

for_tests=false
if [ "${1:-}" = --test ] || [ "${npm_lifecycle_event:-}" = test ]; then for_tests=true; fi

need=()
have_cmd() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
ldconfig -p 2>/dev/null | grep -q 'libbpf.so.1 ' || need+=(libbpf1)
have_cmd ip || need+=(iproute2)
have_cmd nsenter || need+=(util-linux)

# What only the tests use (see the header): setpriv (util-linux) to run skl as an unprivileged user;
# a C compiler that links a shared library (gcc, libc6-dev) for the doctor test's fake libbpf;
# bpftool, the independent reader of the BPF objects' BTF in the layout tests.
test_need=()
can_build_shared() {
  local cc d ok=1
  cc=$(command -v cc || command -v gcc || command -v clang) || return 1
  d=$(mktemp -d)
  echo 'int f(void) { return 0; }' >"$d/t.c"
  "$cc" -shared -fPIC -o "$d/t.so" "$d/t.c" >/dev/null 2>&1 && ok=0
  rm -rf "$d"
  return $ok
}
if $for_tests; then
  have_cmd setpriv || test_need+=(util-linux)
  can_build_shared || test_need+=(gcc libc6-dev)
  have_cmd bpftool || test_need+=(bpftool)
  have_cmd fuser || test_need+=(psmisc)
  # real servers and clients for the service tests (stock layouts, real clients)
  have_cmd nginx || test_need+=(nginx-light)
  have_cmd redis-server || test_need+=(redis-server)
  have_cmd redis-cli || test_need+=(redis-tools)
  have_cmd dnsmasq || test_need+=(dnsmasq-base)
  have_cmd dig || test_need+=(dnsutils)
  have_cmd curl || test_need+=(curl)
fi

apt_install() { # what (for messages), packages...
  local what=$1
  shift
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${what}: $*" >&2
    [ -n "${apt_updated:-}" ] || { apt-get update -qq >/dev/null; apt_updated=1; }
    # never start what a package installs (nginx, redis): the tests run their own, in their own
    # namespaces; the host's network is left alone
    local rc=0 policy=/usr/sbin/policy-rc.d had_policy=false
    [ -e "$policy" ] && had_policy=true
    if ! $had_policy; then
      printf '#!/bin/sh\nexit 101\n' >"$policy"
      chmod 755 "$policy"
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null || rc=$?
    $had_policy || rm -f "$policy"
    return $rc
  else
    echo "setup: missing ${what}: $* (install them with: sudo apt-get install $*)" >&2
    return 0
  fi
}
if [ ${#need[@]} -gt 0 ]; then
  apt_install "system packages" "${need[@]}"
fi
# one at a time, and not fatal: a package this distribution lacks (bpftool on some Ubuntu releases
# is linux-tools-$(uname -r)) leaves the tests that need it saying so (and failing under CI)
for p in ${test_need[@]+"${test_need[@]}"}; do
  apt_install "a package the tests use" "$p" || echo "setup: could not install $p; the tests that need it will say so" >&2
done

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
