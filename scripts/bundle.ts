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
 *   dist/bundle/load.cjs         src/cli/bundle-cache.ts: how bin/run.js loads skl.cjs, and skl.cjs
 *                                a command's bundle: with V8's compiled code, made here
 *   dist/bundle/*.cjs.v8cache    that compiled code, one per bundle (not used by Node.js ≥22.1,
 *                                which has its own compile cache)
 *
 * - CommonJS, not ES modules: Node.js resolves, links and evaluates an ES module's imports of
 *   built-in modules (node:http, node:crypto, …) when it loads, whether the code that needs them
 *   runs or not; in CommonJS each becomes a require() run only when the module that needs it is
 *   initialised, and no ES module loader is involved. (So no skl module may use top-level await.)
 * - Modules are initialised in the order and at the time they would be without the bundle: a
 *   dynamic import() stays lazy. A built-in module that Node.js does not load at start-up is
 *   required on its first use (lazyBuiltins).
 * - koffi (a native module that finds its binary relative to itself), chalk (only loaded when
 *   colours are possible) and @oclif/core (only loaded when the light runtime hands a command line
 *   to oclif's parser) stay in node_modules.
 * - `import.meta.url` in a bundled module becomes that module's own URL under dist/src, so that
 *   files found relative to a module (bpf/*.o, package.json, node_modules through createRequire)
 *   are found as they are without the bundle.
 *
 *   node dist/scripts/bundle.js
 */
import {spawnSync} from 'node:child_process';
import {mkdirSync, realpathSync, renameSync, statSync, writeFileSync} from 'node:fs';
import {createRequire} from 'node:module';
import {readdir, readFile, rm} from 'node:fs/promises';
import path from 'node:path';
import {fileURLToPath} from 'node:url';
import {build, type BuildOptions, type BuildResult, type Plugin} from 'esbuild';
import {cacheFileOf} from '../src/cli/bundle-cache.js';

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

/**
 * koffi, as Node.js finds it from dist/bundle (skl's own node_modules, then its package "exports"),
 * without that search where koffi is installed inside skl's own node_modules (`npm install -g`, a
 * checkout): resolving "exports" loads Node's ES module resolver, ≈1.5 ms of CPU time. Where it is
 * not (npm hoisted it into an application's node_modules), require('koffi') finds it as before.
 * The build checks that Node.js resolves koffi to that very file here.
 */
const OWN_KOFFI = '../../node_modules/koffi/index.cjs';
const ownKoffi = createRequire(path.join(BUNDLE_DIR, 'x.cjs')).resolve('koffi') === realpathSync(path.join(BUNDLE_DIR, OWN_KOFFI));
const koffiFromOwnModules: Plugin = {
  name: 'skl-koffi',
  setup(b) {
    b.onResolve({filter: /^koffi$/}, (args) => (args.namespace === 'skl-koffi' || !ownKoffi ? {path: 'koffi', external: true} : {path: 'koffi', namespace: 'skl-koffi'}));
    b.onLoad({filter: /.*/, namespace: 'skl-koffi'}, () => ({
      contents: `const own = require("node:path").join(__dirname, ${JSON.stringify(OWN_KOFFI)});\nmodule.exports = require("node:fs").existsSync(own) ? require(own) : require("koffi");\n`,
      loader: 'js',
    }));
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
  write: false,
};

/**
 * A built-in module that Node.js does not load while it starts (node:child_process, node:net,
 * node:http, node:crypto: 2-3 ms of CPU time each) is required where a bundle first uses it, not
 * where the bundle loads: `skl attach` needs node:child_process only for --unit (systemctl), and
 * node:net only for some addresses. esbuild writes a named import of a built-in module as
 * `var import_node_x = require("node:x");` (inside a module's initializer, when esbuild wraps one,
 * `import_node_x = require("node:x");`) and reads each name from that object where it is used
 * (`(0, import_node_x.name)(…)`): the object becomes a stand-in that requires the module on the
 * first read. Default and namespace imports (`__toESM(require(…))`) stay as they are, and so do
 * the modules Node.js has loaded anyway when skl starts (EAGER).
 */
const EAGER = new Set(['buffer', 'events', 'fs', 'module', 'path', 'timers', 'url', 'util', 'vm']);
const LAZY_BUILTIN =
  'const __lazyBuiltin = (id) => { let m; const real = () => (m ??= require(id)); return new Proxy({}, {' +
  'get: (_, k) => real()[k], has: (_, k) => k in real(), ownKeys: () => Reflect.ownKeys(real()), ' +
  'getOwnPropertyDescriptor: (_, k) => { const d = Reflect.getOwnPropertyDescriptor(real(), k); return d && {...d, configurable: true}; }}); };\n';
function lazyBuiltins(code: string): string {
  let lazy = 0;
  // at the top level (`var import_node_x = require(…)`), or inside the initializer esbuild wraps a
  // module in when it is reached through a cycle (`  import_node_x = require(…)`)
  const out = code.replace(/^(\s*(?:var )?)(import_node_[\w$]+) = require\("node:([\w/]+)"\);$/gm, (line, head: string, name: string, id: string) => {
    if (EAGER.has(id)) return line;
    lazy++;
    return `${head}${name} = __lazyBuiltin("node:${id}");`;
  });
  return lazy === 0 ? out : LAZY_BUILTIN + out;
}

/** Write a build's files, each replaced at once (an skl starting meanwhile reads the old or the new one); their paths. */
function emit(r: BuildResult): string[] {
  mkdirSync(BUNDLE_DIR, {recursive: true});
  return (r.outputFiles ?? []).map((f) => {
    const tmp = `${f.path}.${process.pid}.tmp`;
    writeFileSync(tmp, lazyBuiltins(f.text));
    renameSync(tmp, f.path);
    return f.path;
  });
}

// what bin/run.js loads the others with (src/cli/bundle-cache.ts), itself loaded by Node's require()
const loader = await build({...common, banner: {}, entryPoints: [path.join(src, 'cli/bundle-cache.js')], outfile: path.join(BUNDLE_DIR, 'load.cjs')});
const router = await build({...common, entryPoints: [fastEntry], outfile: path.join(BUNDLE_DIR, 'skl.cjs'), plugins: [commandBundles, koffiFromOwnModules, ownUrl]});
if (commands.size === 0) throw new Error('bundle: src/cli/fast.ts imports no command');
const perCommand = await build({
  ...common,
  entryPoints: [...commands].map((c) => ({in: c, out: bundleName(c).replace(/\.cjs$/, '')})),
  outdir: BUNDLE_DIR,
  outExtension: {'.js': '.cjs'},
  // module.exports is the command class: what fast.ts's import() of it then gets as `default`, by
  // Node's own rule for CommonJS (default = module.exports)
  footer: {js: 'module.exports = module.exports.default;'},
  plugins: [koffiFromOwnModules, ownUrl],
});

const [loaderFile] = emit(loader);
const cached = [...emit(router), ...emit(perCommand)];

// V8's compiled code for the router and each command's bundle (src/cli/bundle-cache.ts), made and
// then checked by fresh Node.js processes with V8's default flags (NODE_OPTIONS left out), as
// bin/run.js runs: a bundle whose cache that Node.js would reject gets none
const fresh = (code: string): string => {
  const {NODE_OPTIONS: _o, ...env} = process.env;
  const r = spawnSync(process.execPath, ['-e', code, loaderFile, ...cached], {env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit']});
  if (r.status !== 0) throw new Error(`bundle: making the code caches failed (${r.status ?? r.signal})`);
  return r.stdout;
};
fresh("const [l, ...f] = process.argv.slice(1); require(l).writeCodeCache(f, require('node:v8').setFlagsFromString)");
const rejected = JSON.parse(fresh("const [l, ...f] = process.argv.slice(1); process.stdout.write(JSON.stringify(require(l).verifyCodeCache(f)))")) as string[];
for (const f of rejected) {
  await rm(cacheFileOf(f), {force: true});
  console.warn(`bundle: ${path.basename(f)}: this Node.js rejects its code cache (it runs without one)`);
}

// what an earlier build left and this one did not write (files are replaced one by one, never all
// removed first: skl processes running meanwhile, tests say, keep finding theirs)
const written = new Set([loaderFile, ...cached, ...cached.filter((f) => !rejected.includes(f)).map(cacheFileOf)]);
for (const f of await readdir(BUNDLE_DIR)) {
  if (!written.has(path.join(BUNDLE_DIR, f))) await rm(path.join(BUNDLE_DIR, f), {recursive: true, force: true});
}

const kib = (f: string): number => Math.round(statSync(f).size / 1024);
const cacheKib = cached.filter((f) => !rejected.includes(f)).reduce((n, f) => n + kib(cacheFileOf(f)), 0);
console.log(`dist/bundle: ${[loaderFile, ...cached].map((f) => `${path.basename(f)} ${kib(f)} KiB`).join(', ')}; code caches ${cacheKib} KiB`);
