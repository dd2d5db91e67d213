/**
 * The light CLI runtime: just enough of oclif's Command, Flags and Args for skl's everyday commands
 * to run without importing @oclif/core (≈200 CommonJS modules, ≈60 ms of a ≈50 ms Node.js start).
 * bin/run.js selects it (src/cli/fast.ts) for the commands listed there; src/cli/oclif.ts hands
 * these stand-ins to the commands instead of oclif's.
 *
 * Parsing: the plain cases (`--flag value`, `--flag=value`, `-c value`, booleans, positional
 * arguments, defaults, `options`, integers) are parsed here, to exactly what oclif's parser returns.
 * Anything else (an unknown or repeated flag, a missing value or required flag, a value starting
 * with "-", an invalid option or integer, extra arguments, `--`, a flag property not handled here)
 * is handed to oclif's own parser, loaded only then: every error message and exit code stays
 * oclif's. test/cli-light.test.ts checks both parsers agree.
 */
import {writeSync} from 'node:fs';
import {createRequire} from 'node:module';
import {format, inspect} from 'node:util';

type OclifCore = typeof import('@oclif/core');
let real: OclifCore | undefined;

/** oclif itself (CommonJS: loaded synchronously), for what the light runtime does not handle. */
export function oclif(): OclifCore {
  real ??= createRequire(import.meta.url)('@oclif/core') as OclifCore;
  return real;
}

// ---------------------------------------------------------------------------------------------
// Flags and Args: the same objects oclif's builders return, plus how to rebuild oclif's own.

interface Recipe {
  kind: 'flag' | 'arg';
  builder: string;
  options: Record<string, unknown>;
}
const RECIPE = Symbol('skl.light.recipe');

interface LightDef {
  [RECIPE]: Recipe;
  type: 'option' | 'boolean';
  name?: string;
  char?: string;
  multiple?: boolean;
  required?: boolean;
  default?: unknown;
  options?: readonly string[];
  min?: number;
  max?: number;
  ignoreStdin?: boolean;
}

/** Definition properties the light parser understands; any other one sends the command to oclif's parser. */
const PLAIN = new Set(['description', 'summary', 'helpValue', 'helpGroup', 'helpLabel', 'hidden', 'char', 'multiple', 'required', 'default', 'options', 'min', 'max', 'ignoreStdin', 'name']);

function def(kind: Recipe['kind'], builder: string, type: LightDef['type'], options: Record<string, unknown> = {}): LightDef {
  return {
    ...options,
    ...(kind === 'flag' && type === 'option' ? {multiple: Boolean(options.multiple)} : {}),
    ...(kind === 'flag' && type === 'boolean' ? {allowNo: Boolean(options.allowNo)} : {}),
    type,
    [RECIPE]: {kind, builder, options},
  };
}

const flagBuilder = (builder: string) => (options: Record<string, unknown> = {}) => def('flag', builder, 'option', options);
export const Flags = {
  string: flagBuilder('string'),
  integer: flagBuilder('integer'),
  directory: flagBuilder('directory'),
  file: flagBuilder('file'),
  url: flagBuilder('url'),
  boolean: (options: Record<string, unknown> = {}) => def('flag', 'boolean', 'boolean', options),
  /** Flags.option(defaults)(options), as in oclif. */
  option: (defaults: Record<string, unknown>) => (options: Record<string, unknown> = {}) => def('flag', 'option', 'option', {...defaults, ...options}),
  /** Flags.custom(defaults)(options): always parsed by oclif (its parse function is arbitrary). */
  custom: (defaults: Record<string, unknown> = {}) => (options: Record<string, unknown> = {}) => def('flag', 'custom', 'option', {...defaults, ...options}),
};

const argBuilder = (builder: string) => (options: Record<string, unknown> = {}) => def('arg', builder, 'option', options);
export const Args = {
  string: argBuilder('string'),
  integer: argBuilder('integer'),
  boolean: argBuilder('boolean'),
  directory: argBuilder('directory'),
  file: argBuilder('file'),
  url: argBuilder('url'),
  custom: (defaults: Record<string, unknown> = {}) => (options: Record<string, unknown> = {}) => def('arg', 'custom', 'option', {...defaults, ...options}),
};

/** oclif's own definition for a light one. */
function toOclif(core: OclifCore, d: LightDef): unknown {
  const {kind, builder, options} = d[RECIPE];
  const ns = (kind === 'flag' ? core.Flags : core.Args) as unknown as Record<string, (o: unknown) => unknown>;
  if (builder === 'option' || builder === 'custom') return (ns[builder] as unknown as (o: unknown) => (o: unknown) => unknown)(options)({});
  return ns[builder](options);
}

// ---------------------------------------------------------------------------------------------
// Parsing

export interface ParseInput {
  flags?: Record<string, LightDef>;
  args?: Record<string, LightDef>;
  strict?: boolean;
  [key: string]: unknown;
}

export interface ParseOutput {
  args: Record<string, unknown>;
  flags: Record<string, unknown>;
  argv: unknown[];
  raw: {type: 'flag' | 'arg'; flag?: string; arg?: string; input: string}[];
  metadata: {flags: Record<string, {setFromDefault: boolean}>};
  nonExistentFlags: string[];
}

const plain = (d: LightDef): boolean =>
  Object.keys(d[RECIPE].options).every((k) => PLAIN.has(k)) && typeof d.default !== 'function' && ['string', 'integer', 'boolean', 'option'].includes(d[RECIPE].builder);

/** An option value as oclif would return it, or undefined when oclif's parser must decide. */
function value(d: LightDef, input: string): unknown {
  if (d.options && !d.options.includes(input)) return undefined;
  if (d[RECIPE].builder !== 'integer') return input;
  if (!/^\d+$/.test(input)) return undefined;
  const n = Number.parseInt(input, 10);
  if (!Number.isSafeInteger(n) || (d.min !== undefined && n < d.min) || (d.max !== undefined && n > d.max)) return undefined;
  return n;
}

/**
 * oclif's parse result for the plain cases; undefined for anything else (oclif's parser then
 * decides, with its own errors). Exported for the test that compares both.
 */
export function lightParse(argv: readonly string[], input: ParseInput): ParseOutput | undefined {
  const flagDefs = input.flags ?? {};
  const argDefs = input.args ?? {};
  const all = [...Object.values(flagDefs), ...Object.values(argDefs)];
  if (all.some((d) => d === undefined || !(RECIPE in d) || !plain(d))) return undefined;
  if (input.strict === false || input['--'] === false || input.baseFlags || input.enableJsonFlag) return undefined;
  const flagNames = Object.keys(flagDefs);
  const flags: Record<string, unknown> = {};
  const raw: ParseOutput['raw'] = [];
  const positional: string[] = [];
  let greedy = false; // a multiple option flag was seen: oclif gives it the following bare words
  for (let i = 0; i < argv.length; i++) {
    const tok = argv[i];
    if (!tok.startsWith('-') || tok === '-') {
      if (greedy || tok === '' || tok === '-') return undefined;
      positional.push(tok);
      continue;
    }
    let name: string | undefined;
    let val: string | undefined;
    if (tok.startsWith('--')) {
      const eq = tok.indexOf('=');
      name = eq < 0 ? tok.slice(2) : tok.slice(2, eq);
      val = eq < 0 ? undefined : tok.slice(eq + 1);
      if (!Object.hasOwn(flagDefs, name)) return undefined;
    } else {
      if (tok.length !== 2) return undefined;
      name = flagNames.find((n) => flagDefs[n].char === tok[1]);
      if (name === undefined) return undefined;
    }
    const d = flagDefs[name];
    if (Object.hasOwn(flags, name) && !(d.type === 'option' && d.multiple)) return undefined;
    if (d.type === 'boolean') {
      if (val !== undefined) return undefined;
      flags[name] = true;
      raw.push({flag: name, input: tok, type: 'flag'});
      continue;
    }
    if (val === undefined) {
      val = argv[++i];
      if (val === undefined) return undefined;
    }
    if (val === '' || val.startsWith('-')) return undefined;
    const v = value(d, val);
    if (v === undefined) return undefined;
    raw.push({flag: name, input: val, type: 'flag'});
    if (d.multiple) {
      greedy = true;
      flags[name] = [...((flags[name] as unknown[] | undefined) ?? []), v];
    } else {
      flags[name] = v;
    }
  }
  const argNames = Object.keys(argDefs);
  if (positional.length > argNames.length) return undefined;
  const args: Record<string, unknown> = {};
  const argvOut: unknown[] = [];
  for (const [k, n] of argNames.entries()) {
    const d = argDefs[n];
    if (k < positional.length) {
      const v = value(d, positional[k]);
      if (v === undefined) return undefined;
      args[n] = v;
      argvOut.push(v);
      raw.push({arg: n, input: positional[k], type: 'arg'});
    } else if (d.required || !d.ignoreStdin || d.multiple) {
      return undefined; // oclif reports it, or reads stdin
    } else if (d.default !== undefined && (d.default || d.default === false)) {
      args[n] = d.default;
      argvOut.push(d.default);
    }
  }
  const metadata: ParseOutput['metadata'] = {flags: {}};
  for (const n of flagNames) {
    if (Object.hasOwn(flags, n)) continue;
    const d = flagDefs[n];
    if (d.required) return undefined;
    if (d.default !== undefined) {
      flags[n] = d.default;
      metadata.flags[n] = {setFromDefault: true};
    }
  }
  return {args, flags, argv: argvOut, raw, metadata, nonExistentFlags: []};
}

/** oclif's own parser, on oclif's own definitions rebuilt from the light ones. */
export async function oclifParse(argv: readonly string[], input: ParseInput, context: unknown): Promise<ParseOutput> {
  const core = oclif();
  const conv = (defs: Record<string, LightDef> | undefined): Record<string, unknown> =>
    Object.fromEntries(Object.entries(defs ?? {}).map(([n, d]) => [n, RECIPE in d ? toOclif(core, d) : d]));
  const opts = {context, ...input, flags: conv(input.flags), args: conv(input.args)};
  return (await core.Parser.parse([...argv], opts as never)) as unknown as ParseOutput;
}

// ---------------------------------------------------------------------------------------------
// Errors: oclif's classes are only loaded with oclif's parser, and only its errors can occur then.

class OclifClassProxy {
  /** `x instanceof Errors.CLIError`: true for oclif's own errors, once oclif is loaded. */
  static [Symbol.hasInstance](x: unknown): boolean {
    return real !== undefined && x instanceof real.Errors.CLIError;
  }
}
class ExitProxy {
  static [Symbol.hasInstance](x: unknown): boolean {
    return real !== undefined && x instanceof real.Errors.ExitError;
  }
}
export const Errors = {CLIError: OclifClassProxy, ExitError: ExitProxy};

// ---------------------------------------------------------------------------------------------
// Output

let direct = true;

/**
 * What console.log(line) does with a line (oclif's `this.log` too), without making process.stdout:
 * that stream (and the node:stream modules under it) costs more CPU time to create than writing a
 * status table takes (BENCHMARKS.md). Written synchronously with write(2), as process.stdout writes
 * to files, terminals and pipes on Linux; errors are ignored, as console.log ignores them (EPIPE:
 * nobody reads the output any more). Only if stdout cannot take it now (EAGAIN: a non-blocking pipe
 * that is full) does the rest go to process.stdout, which queues it, and every later line after it,
 * in order.
 */
export function writeStdout(line: string): void {
  if (direct) {
    const buf = Buffer.from(line);
    let off = 0;
    try {
      while (off < buf.length) off += writeSync(1, buf, off);
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EAGAIN') return;
      direct = false;
      queueStdout(buf.subarray(off));
      return;
    }
  }
  queueStdout(line);
}

/** process.stdout.write, write errors ignored as console.log ignores them. */
function queueStdout(data: string | Uint8Array): void {
  const out = process.stdout;
  const noop = (): void => undefined;
  try {
    if (out.listenerCount('error') === 0) out.once('error', noop);
    out.write(data, noop);
  } catch {
    // as console.log
  } finally {
    out.removeListener('error', noop);
  }
}

// ---------------------------------------------------------------------------------------------
// Command

export interface LightConfig {
  bin: string;
  name: string;
  version: string;
  root: string;
}

/** oclif's Command lifecycle (init → run → catch → finally) and output helpers, without oclif. */
export abstract class Command {
  static id?: string;
  static args: Record<string, LightDef> = {};
  static flags?: Record<string, LightDef>;
  static strict = true;
  static summary?: string;
  static description?: string;
  static examples?: unknown[];
  static aliases: string[] = [];
  static hidden?: boolean;
  static enableJsonFlag = false;

  id: string | undefined;
  parsed = false;

  constructor(
    public argv: string[],
    public config: LightConfig,
  ) {
    this.id = (this.constructor as typeof Command).id;
  }

  abstract run(): Promise<unknown>;

  /** As oclif's Command._run (no --json support: skl's commands declare their own flag). */
  async _run(): Promise<unknown> {
    let err: Error | undefined;
    let result: unknown;
    try {
      delete process.env.SKL_REDIRECTED;
      await this.init();
      result = await this.run();
    } catch (error) {
      err = error as Error;
      await this.catch(error as Error);
    } finally {
      await this.finally(err);
    }
    // as oclif (outside production, e.g. NODE_ENV=test, also when parsing failed)
    if (!this.parsed && ['development', 'test'].includes(process.env.NODE_ENV ?? '')) {
      process.emitWarning(`Command ${this.id} did not parse its arguments. Did you forget to call 'this.parse'?`, {code: 'UnparsedCommand'});
    }
    return result;
  }

  protected async init(): Promise<void> {}

  protected async catch(err: Error & {exitCode?: number}): Promise<unknown> {
    process.exitCode = process.exitCode ?? err.exitCode ?? 1;
    throw err;
  }

  protected async finally(_err: Error | undefined): Promise<unknown> {
    return undefined;
  }

  jsonEnabled(): boolean {
    return false;
  }

  async parse(options?: ParseInput, argv: string[] = this.argv): Promise<ParseOutput> {
    const input = options ?? (this.constructor as unknown as ParseInput);
    this.argv = [...argv];
    const out = lightParse(argv, input) ?? (await oclifParse(argv, input, this));
    this.parsed = true;
    return out;
  }

  log(message: unknown = '', ...args: unknown[]): void {
    const text = typeof message === 'string' ? message : inspect(message);
    writeStdout(`${!text && args ? format(...args) : format(text, ...args)}\n`);
  }

  logToStderr(message: unknown = '', ...args: unknown[]): void {
    const text = typeof message === 'string' ? message : inspect(message);
    if (!text && args) console.error(format(...args));
    else console.error(format(text, ...args));
  }

  // rarely used: oclif's own implementations
  exit(code = 0): never {
    return oclif().Errors.exit(code);
  }

  warn(input: string | Error): string | Error {
    oclif().Errors.warn(input);
    return input;
  }

  error(input: string | Error, options: Record<string, unknown> = {}): never {
    return oclif().Errors.error(input, options as never) as never;
  }
}
