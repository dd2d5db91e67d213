/**
 * V8's compiled code for skl's CommonJS bundles (dist/bundle/*.cjs), made when they are built and
 * kept beside them, for Node.js versions without `module.enableCompileCache` (Node.js 20, 22.0;
 * on later ones bin/run.js turns Node's own compile cache on and this module lets Node load the
 * bundles as usual). Compiling a bundle (parsing ≈130-200 KiB of JavaScript, then each function
 * on its first call) is a good part of what loading skl costs: see BENCHMARKS.md.
 *
 *   dist/bundle/<name>.cjs.v8cache = MAGIC, the bundle's length (u32 LE), the bundle's bytes, V8's data
 *
 * When a cache is used:
 * - it was made from exactly this bundle: its copy of the bundle is compared with the bundle, byte
 *   for byte (V8 itself only compares lengths). A stale cache (an edited or rebuilt bundle) is never
 *   used; neither is one of another Node.js/V8 version or other V8 flags (V8 rejects it: the bundle
 *   is then compiled as without a cache);
 * - nobody can write it who cannot write the bundle: a regular file (not a symbolic link) of the
 *   bundle's owner, writable by its group or by others only if the bundle is too (and for the group,
 *   the same group). V8 trusts a code cache as it trusts code (a release build checks no checksum
 *   of it: flipped bytes are run as they are): a root skl must never take one from where its user
 *   could not change skl's code anyway;
 * - nothing is written at run time: caches are made by `npm run build` (scripts/bundle.ts) only,
 *   each written to a temporary file and renamed into place.
 *
 * The bundle runs as Node.js's CommonJS loader would run it (same wrapper, `require` resolving
 * from the bundle's own directory); a bundle's require() of a sibling bundle ('./status.cjs') loads
 * that one through here too.
 */
import {chmodSync, closeSync, constants, fstatSync, openSync, readFileSync, renameSync, statSync, writeFileSync, type Stats} from 'node:fs';
import {createRequire, Module} from 'node:module';
import {dirname, join} from 'node:path';
import {Script} from 'node:vm';

const MAGIC = Buffer.from('skl V8 code cache 1\n');
/** Node.js's own CommonJS wrapper (Module.wrap), so that the code runs as under require(). */
const HEAD = '(function (exports, require, module, __filename, __dirname) { ';
const TAIL = '\n});';

export const cacheFileOf = (bundle: string): string => `${bundle}.v8cache`;

/** Node.js ≥22.1 has its own compile cache (bin/run.js turns it on): nothing of ours is used there. */
export const ownCacheWanted = (): boolean => typeof (Module as unknown as {enableCompileCache?: unknown}).enableCompileCache !== 'function';

interface CjsModule {
  exports: unknown;
  id: string;
  filename: string;
  loaded: boolean;
}
const loaded = new Map<string, CjsModule>();

/** `require` for code in `file`: Node's, except that a sibling bundle ('./x.cjs') loads through loadBundle. */
function requireFor(file: string): NodeJS.Require {
  const real = createRequire(file);
  const dir = dirname(file);
  const req = (id: string): unknown => (id.startsWith('./') && id.endsWith('.cjs') && !id.includes('/', 2) ? loadBundle(join(dir, id)) : real(id));
  return Object.assign(req, {resolve: real.resolve, cache: real.cache, main: real.main, extensions: real.extensions}) as NodeJS.Require;
}

function compile(file: string, source: Buffer, cachedData?: Buffer): Script {
  return new Script(HEAD + source.toString('utf8') + TAIL, {filename: file, cachedData});
}

/** The bundle's exports: loaded once per process, with its code cache when one may be used. */
export function loadBundle(file: string): unknown {
  const done = loaded.get(file);
  if (done) return done.exports;
  const req = requireFor(file);
  if (!ownCacheWanted()) return req(file);
  let source: Buffer;
  let st: Stats;
  const fd = openSync(file, 'r');
  try {
    st = fstatSync(fd);
    source = readFileSync(fd);
  } finally {
    closeSync(fd);
  }
  // a byte-order mark or a #! line: Node's loader knows what to do with them (skl's bundles have neither)
  if (source[0] === 0x23 || source[0] === 0xef) return req(file);
  const script = compile(file, source, readCache(file, st, source));
  const module: CjsModule = {exports: {}, id: file, filename: file, loaded: false};
  loaded.set(file, module);
  try {
    (script.runInThisContext() as (...a: unknown[]) => void).call(module.exports, module.exports, req, module, file, dirname(file));
  } catch (error) {
    loaded.delete(file);
    throw error;
  }
  module.loaded = true;
  return module.exports;
}

/** Whoever may write `st` may write `bundle` too (owner; group and others' write permission). */
function noWiderThan(st: Stats, bundle: Stats): boolean {
  if (st.uid !== bundle.uid) return false;
  if (st.mode & 0o020 && (!(bundle.mode & 0o020) || st.gid !== bundle.gid)) return false;
  if (st.mode & 0o002 && !(bundle.mode & 0o002)) return false;
  return true;
}

/** V8's data from the bundle's cache file, or undefined when there is none that may be used. */
function readCache(file: string, bundle: Stats, source: Buffer): Buffer | undefined {
  let fd: number;
  try {
    fd = openSync(cacheFileOf(file), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile() || !noWiderThan(st, bundle)) return undefined;
    const data = readFileSync(fd);
    const at = MAGIC.length + 4;
    if (data.length < at || !data.subarray(0, MAGIC.length).equals(MAGIC)) return undefined;
    const length = data.readUInt32LE(MAGIC.length);
    if (length !== source.length || data.length <= at + length || !data.subarray(at, at + length).equals(source)) return undefined;
    return data.subarray(at + length);
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/**
 * Build time (scripts/bundle.ts, in a fresh `node` with default flags): write each bundle's cache.
 * Every function is compiled, not only those V8 compiles up front (a cache made before the code
 * ran would hold little else); V8's flags are back to their defaults when the data is taken, or V8
 * would reject it in a process started with them (checked: verifyCodeCache).
 */
export function writeCodeCache(files: readonly string[], setFlags: (flags: string) => void): void {
  for (const file of files) {
    const source = readFileSync(file);
    setFlags('--no-lazy');
    let script: Script;
    try {
      script = compile(file, source);
    } finally {
      setFlags('--lazy');
    }
    const length = Buffer.alloc(4);
    length.writeUInt32LE(source.length);
    const target = cacheFileOf(file);
    const tmp = `${target}.${process.pid}.tmp`;
    writeFileSync(tmp, Buffer.concat([MAGIC, length, source, script.createCachedData()]));
    chmodSync(tmp, statSync(file).mode & 0o777 & ~0o111);
    renameSync(tmp, target);
  }
}

/** Build time, in another fresh `node`: the bundles whose cache this Node.js would reject. */
export function verifyCodeCache(files: readonly string[]): string[] {
  return files.filter((file) => {
    const source = readFileSync(file);
    const data = readCache(file, statSync(file), source);
    return data === undefined || compile(file, source, data).cachedDataRejected !== false;
  });
}
