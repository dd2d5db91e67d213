#!/usr/bin/env node
// skl entry point. `--version`, and the everyday commands (src/cli/fast.ts), run without loading the
// CLI framework (start-up cost: see BENCHMARKS.md).
import {readFileSync} from 'node:fs';
import {fileURLToPath} from 'node:url';

const argv = process.argv.slice(2);
if (argv.length === 1 && (argv[0] === '--version' || argv[0] === '-v' || argv[0] === 'version')) {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
  process.stdout.write(`skl/${pkg.version} ${process.platform}-${process.arch} node-${process.version}\n`);
} else if (!(await (await import('../dist/src/cli/fast.js')).runFast(argv))) {
  // everyday commands took the fast path above (src/cli/fast.ts: no oclif); the rest runs on oclif
  const {execute} = await import('@oclif/core');
  // No user or linked plugins: oclif would otherwise load code named in $SKL_DATA_DIR,
  // $XDG_DATA_HOME or ~/.local/share/skl/package.json, which under `sudo -E skl` (or any root skl
  // with a user's environment) is code the user chose, run as root. skl has no plugins.
  await execute({loadOptions: {root: fileURLToPath(import.meta.url), userPlugins: false}});
}
