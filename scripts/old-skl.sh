#!/usr/bin/env bash
# Build skl 0.1.0 (the tag v0.1.0, or the commit it names in a clone without tags) from this
# repository's history into DIR, for upgrade tests: `git archive` (no worktree left registered),
# node_modules linked to this checkout's, compiled with this checkout's TypeScript. Idempotent:
# a DIR that already holds a build is kept. Prints DIR/bin/run.js.
#   bash scripts/old-skl.sh DIR
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:?usage: old-skl.sh DIR}
if [ ! -f "$dir/.built" ]; then
  ref=v0.1.0
  git -C "$root" rev-parse --verify --quiet "$ref^{commit}" >/dev/null || ref=e4c6f6f
  rm -rf "$dir"
  mkdir -p "$dir"
  git -C "$root" archive "$ref" | tar -x -C "$dir"
  ln -s "$root/node_modules" "$dir/node_modules"
  (cd "$dir" && node "$root/node_modules/typescript/bin/tsc" -p tsconfig.json && node dist/scripts/manifest.js >/dev/null)
  touch "$dir/.built"
fi
echo "$dir/bin/run.js"
