#!/usr/bin/env node
// skl entry point: CommonJS (bin/package.json), which Node.js starts faster than an ES module.
// `--version`, and the everyday commands (src/cli/fast.ts, bundled into one CommonJS file by
// scripts/bundle.ts), run without loading the CLI framework; the rest runs on oclif (start-up
// cost: see BENCHMARKS.md).
'use strict';
const path = require('node:path');

// Node.js ≥22.1 keeps V8's compiled code between runs where asked to. The cache lives inside skl's
// own package, writable only by whoever can change skl's code anyway: never a shared directory such
// as Node's default under /tmp, where anyone could plant compiled code for a root skl to run. Where
// it cannot be written, skl runs without it. Node.js 20 lacks the call: there, skl's bundles come
// with V8's compiled code made when they were built (src/cli/bundle-cache.ts).
require('node:module').enableCompileCache?.(path.join(__dirname, '..', 'dist', '.compile-cache'));

const argv = process.argv.slice(2);
if (argv.length === 1 && (argv[0] === '--version' || argv[0] === '-v' || argv[0] === 'version')) {
  const pkg = require('../package.json');
  process.stdout.write(`skl/${pkg.version} ${process.platform}-${process.arch} node-${process.version}\n`);
} else {
  // dist/bundle/load.cjs: src/cli/bundle-cache.ts
  require('../dist/bundle/load.cjs')
    .loadBundle(path.join(__dirname, '..', 'dist', 'bundle', 'skl.cjs'))
    .runFast(argv)
    .then((done) => {
      // everyday commands took the fast path (src/cli/fast.ts: no oclif); the rest runs on oclif
      if (done) return;
      const {execute} = require('@oclif/core');
      // No user or linked plugins: oclif would otherwise load code named in $SKL_DATA_DIR,
      // $XDG_DATA_HOME or ~/.local/share/skl/package.json, which under `sudo -E skl` (or any root
      // skl with a user's environment) is code the user chose, run as root. skl has no plugins.
      // The root is the package's directory: oclif would take bin/ (it has a package.json) for it.
      return execute({loadOptions: {root: path.join(__dirname, '..'), userPlugins: false}});
    });
}
