#!/usr/bin/env bash
# Build an earlier skl release (default 0.1.0) from this repository's history into DIR, for upgrade
# tests: the release's tag, or in a clone without tags the commit it names; `git archive` (no
# worktree left registered), node_modules linked to this checkout's, compiled with this checkout's
# TypeScript (and bundled with its esbuild, for releases that run from bundles). Idempotent: a DIR
# that already holds a build is kept. Prints DIR/bin/run.js.
#   bash scripts/old-skl.sh DIR [v0.1.0|v0.2.0|v0.3.0]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:?usage: old-skl.sh DIR [TAG]}
tag=${2:-v0.1.0}
case "$tag" in
  v0.1.0) commit=e4c6f6f ;;
  v0.2.0) commit=fc56776 ;;
  v0.3.0) commit=4d1d293 ;;
  *) echo "old-skl.sh: no release $tag (v0.1.0, v0.2.0, v0.3.0)" >&2; exit 2 ;;
esac
if [ ! -f "$dir/.built" ]; then
  ref=$tag
  git -C "$root" rev-parse --verify --quiet "$ref^{commit}" >/dev/null || ref=$commit
  rm -rf "$dir"
  mkdir -p "$dir"
  git -C "$root" archive "$ref" | tar -x -C "$dir"
  ln -s "$root/node_modules" "$dir/node_modules"
  (
    cd "$dir"
    node "$root/node_modules/typescript/bin/tsc" -p tsconfig.json
    node dist/scripts/manifest.js >/dev/null
    # releases whose bin/run.js starts from CommonJS bundles (0.3.0 on)
    if [ -f dist/scripts/bundle.js ]; then node dist/scripts/bundle.js >/dev/null; fi
  )
  touch "$dir/.built"
fi
echo "$dir/bin/run.js"
