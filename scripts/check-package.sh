#!/usr/bin/env bash
# Prove the npm package is complete and lean: pack it, install the tarball into an empty directory
# (no clang, no TypeScript needed), and run `skl --version` and `skl doctor` from there.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
npm run --silent build >/dev/null
tarball=$(npm pack --silent --pack-destination "$work" | tail -1)
echo "packed $tarball ($(du -h "$work/$tarball" | cut -f1)):"
tar -tzf "$work/$tarball" | sed 's#^package/##' | sort > "$work/files"
if grep -E '^(test|dist/test|dist/bench|dist/scripts|bench|scripts|\.ci|node_modules)/|\.ts$' "$work/files" | grep -v '\.d\.ts$'; then
  echo "the package contains files it does not need (above)" >&2
  exit 1
fi
for f in bin/run.js bin/package.json dist/bundle/skl.cjs dist/bundle/status.cjs dist/src/index.js bpf/sk_dispatch.o bpf/xdp_count.o; do
  grep -qx "$f" "$work/files" || { echo "the package lacks $f" >&2; exit 1; }
done
echo "  $(wc -l < "$work/files") files"
mkdir "$work/app"
(cd "$work/app" && npm init -y >/dev/null && npm install --no-audit --no-fund --loglevel=error "$work/$tarball" >/dev/null)
"$work/app/node_modules/.bin/skl" --version
"$work/app/node_modules/.bin/skl" doctor
# the everyday commands' bundle (dist/bundle/skl.cjs), handing an unusual command line to oclif's
# parser from the installed package: a usage error, exit code 2
rc=0
out=$("$work/app/node_modules/.bin/skl" status --no-such-flag 2>&1) || rc=$?
if [ "$rc" != 2 ] || [[ "$out" != *"Nonexistent flag: --no-such-flag"* ]]; then
  echo "skl status --no-such-flag from the package: exit $rc: $out (expected exit 2, a usage error)" >&2
  exit 1
fi
echo "skl status --no-such-flag: $out (exit 2, as expected)"
