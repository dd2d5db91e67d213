/**
 * chalk (for stdout), chalkStderr and Chalk, honouring NO_COLOR for `chalk` (chalk 5 ignores it:
 * https://no-color.org). In the light runtime (./fast.ts) chalk is only imported when its colours
 * could be on at all: the stream a terminal, FORCE_COLOR, a --color/--no-color argument, or Azure
 * Pipelines (chalk's own rules, which give level 0 — plain text — in every other case). Otherwise
 * stand-ins return the text unchanged, as chalk at level 0 does.
 *
 * Synchronous (no top-level await), so that the bundle of the everyday commands (scripts/bundle.ts)
 * can be a CommonJS file: chalk (an ES module without top-level await) is loaded with require(),
 * which Node.js ≥20.19 does without a warning.
 */
import {fstatSync} from 'node:fs';
import {createRequire} from 'node:module';
import type {Chalk as ChalkClass, ChalkInstance} from 'chalk';
import {lightMode} from './mode.js';

const noColor = process.env.NO_COLOR !== undefined && process.env.NO_COLOR !== '';

function colourPossible(fd: 1 | 2): boolean {
  const env = process.env;
  if ('FORCE_COLOR' in env || ('TF_BUILD' in env && 'AGENT_NAME' in env)) return true;
  if (process.argv.some((a) => a.startsWith('--color') || a.startsWith('--no-color'))) return true;
  return maybeTerminal(fd);
}

/**
 * Whether fd may be a terminal (process.stdout.isTTY, process.stderr.isTTY), without making those
 * streams (creating one loads node:stream and more: ≈2 ms of CPU time, BENCHMARKS.md). A file, a
 * pipe, a socket, a closed fd or a memory device (/dev/null: major 1) is not; for any other character
 * device, node:tty's isatty (what the streams use) decides.
 */
function maybeTerminal(fd: number): boolean {
  let st;
  try {
    st = fstatSync(fd);
  } catch {
    return false;
  }
  if (!st.isCharacterDevice()) return false;
  // Linux's dev_t: major in bits 8-19 and 32-43
  const major = ((st.rdev >>> 8) & 0xfff) | (Math.floor(st.rdev / 2 ** 32) & ~0xfff);
  if (major === 1) return false;
  return (createRequire(import.meta.url)('node:tty') as typeof import('node:tty')).isatty(fd);
}

/** chalk at level 0: every style returns its text (several arguments joined by spaces). */
function plainChalk(): ChalkInstance {
  const text = (...args: unknown[]): string => (args.length === 1 ? String(args[0]) : args.join(' '));
  const styled: ChalkInstance = new Proxy(text, {
    // every style name gives the same function; not a thenable, nothing for symbols
    get: (_t, prop) => (prop === 'level' ? 0 : prop === 'then' || typeof prop === 'symbol' ? undefined : styled),
    set: () => true,
  }) as unknown as ChalkInstance;
  return styled;
}

interface Colours {
  chalk: ChalkInstance;
  chalkStderr: ChalkInstance;
  Chalk: typeof ChalkClass;
}

function load(): Colours {
  if (lightMode() && !colourPossible(1) && !colourPossible(2)) {
    // only level 0 can be asked for here: new Chalk({level: 0}) is plain too
    const Plain = function Chalk() {
      return plainChalk();
    } as unknown as typeof ChalkClass;
    return {chalk: plainChalk(), chalkStderr: plainChalk(), Chalk: Plain};
  }
  const m = createRequire(import.meta.url)('chalk') as typeof import('chalk');
  if (noColor) m.default.level = 0;
  return {chalk: m.default, chalkStderr: m.chalkStderr, Chalk: m.Chalk};
}

const colours = load();
export const chalk = colours.chalk;
export const chalkStderr = colours.chalkStderr;
export const Chalk = colours.Chalk;
