/**
 * Bundle skl's everyday commands for bin/run.js, which loads them instead of the ≈70 separate ES
 * modules under dist/src (start-up cost: see BENCHMARKS.md). Run by `npm run build`, after tsc: it
 * bundles tsc's output, so the bundles run exactly the code the tests run.
 *
 *   dist/bundle/skl.cjs          src/cli/fast.ts (which command line runs where, and how) and the
 *                                light runtime: what bin/run.js loads for any command line
 *   dist/bundle/<command>.cjs    one per command that fast.ts imports (status.cjs, ports-add.cjs,
 *                                …), with everything it imports: loaded by skl.cjs for that command
 *                                only, so a command compiles none of the others' code
 *
 * - CommonJS, not ES modules: Node.js resolves, links and evaluates an ES module's imports of
 *   built-in modules (node:http, node:crypto, …) when it loads, whether the code that needs them
 *   runs or not; in CommonJS each becomes a require() run only when the module that needs it is
 *   initialised, and no ES module loader is involved. (So no skl module may use top-level await.)
 * - Modules are initialised in the order and at the time they would be without the bundle: a
 *   dynamic import() stays lazy.
 * - koffi (a native module that finds its binary relative to itself), chalk (only loaded when
 *   colours are possible) and @oclif/core (only loaded when the light runtime hands a command line
 *   to oclif's parser) stay in node_modules.
 * - `import.meta.url` in a bundled module becomes that module's own URL under dist/src, so that
 *   files found relative to a module (bpf/*.o, package.json, node_modules through createRequire)
 *   are found as they are without the bundle.
 *
 *   node dist/scripts/bundle.js
 */
import {readdir, readFile, rm} from 'node:fs/promises';
import path from 'node:path';
import {fileURLToPath} from 'node:url';
import {build, type BuildOptions, type Metafile, type Plugin} from 'esbuild';

const root = fileURLToPath(new URL('../..', import.meta.url));
const src = path.join(root, 'dist/src');
export const BUNDLE_DIR = path.join(root, 'dist/bundle');
const fastEntry = path.join(src, 'cli/fast.js');
const commandsDir = path.join(src, 'commands');

/** dist/src/commands/ports/add.js → ports-add.cjs */
const bundleName = (commandModule: string): string =>
  `${path.relative(commandsDir, commandModule).replace(/\.js$/, '').split(path.sep).join('-')}.cjs`;

/**
 * Every bundled module of skl keeps its own import.meta.url (the file it was bundled from). A
 * package from node_modules that uses import.meta cannot be bundled (where it is installed is only
 * known at run time): the build stops, naming it, to be added to `external`.
 */
const ownUrl: Plugin = {
  name: 'skl-own-import-meta-url',
  setup(b) {
    b.onLoad({filter: /\.[cm]?js$/}, async (args) => {
      const source = await readFile(args.path, 'utf8');
      if (!source.includes('import.meta')) return undefined;
      if (!args.path.startsWith(src + path.sep)) throw new Error(`${args.path} uses import.meta: leave its package in node_modules (external)`);
      const rel = path.relative(BUNDLE_DIR, args.path).split(path.sep).join('/');
      const contents = source.replaceAll('import.meta.url', `new URL(${JSON.stringify(rel)}, __bundleUrl).href`);
      if (contents.includes('import.meta')) throw new Error(`${args.path}: of import.meta, only import.meta.url can be bundled`);
      return {contents, loader: 'js'};
    });
  },
};

/** fast.ts's import() of a command becomes a require() of that command's own bundle. */
const commands = new Set<string>();
const commandBundles: Plugin = {
  name: 'skl-command-bundles',
  setup(b) {
    b.onResolve({filter: /\/commands\//}, (args) => {
      if (args.importer !== fastEntry) return undefined;
      const target = path.resolve(args.resolveDir, args.path);
      commands.add(target);
      return {path: `./${bundleName(target)}`, external: true};
    });
  },
};

const common: BuildOptions = {
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  banner: {js: 'const __bundleUrl = require("node:url").pathToFileURL(__filename).href;'},
  external: ['koffi', 'chalk', '@oclif/core'],
  // import() of another bundle (or of anything left in node_modules) as require(): no ES module loader
  supported: {'dynamic-import': false},
  legalComments: 'none',
  logLevel: 'warning',
  metafile: true,
};

const router = await build({...common, entryPoints: [fastEntry], outfile: path.join(BUNDLE_DIR, 'skl.cjs'), plugins: [commandBundles, ownUrl]});
if (commands.size === 0) throw new Error('bundle: src/cli/fast.ts imports no command');
const perCommand = await build({
  ...common,
  entryPoints: [...commands].map((c) => ({in: c, out: bundleName(c).replace(/\.cjs$/, '')})),
  outdir: BUNDLE_DIR,
  outExtension: {'.js': '.cjs'},
  // module.exports is the command class: what fast.ts's import() of it then gets as `default`, by
  // Node's own rule for CommonJS (default = module.exports)
  footer: {js: 'module.exports = module.exports.default;'},
  plugins: [ownUrl],
});

// what an earlier build left and this one did not write (files are replaced in place, never all
// removed first: skl processes running meanwhile, tests say, keep finding theirs)
const written = new Set([router, perCommand].flatMap((r) => Object.keys(r.metafile?.outputs ?? {}).map((f) => path.resolve(f))));
for (const f of await readdir(BUNDLE_DIR)) {
  if (!written.has(path.join(BUNDLE_DIR, f))) await rm(path.join(BUNDLE_DIR, f), {recursive: true, force: true});
}

const kib = (m: Metafile | undefined): string =>
  Object.entries(m?.outputs ?? {})
    .map(([f, o]) => `${path.basename(f)} ${Math.round(o.bytes / 1024)} KiB`)
    .join(', ');
console.log(`dist/bundle: ${kib(router.metafile)}, ${kib(perCommand.metafile)}`);
