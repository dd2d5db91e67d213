/** Base of every skl command: one-line errors with documented exit codes, never a stack trace. */
import type {Errors as OclifErrors} from '@oclif/core';
import {chalk} from './color.js';
import {Command, Errors} from './oclif.js';
import {BpfError} from '../bpf/errors.js';
import {FfiLoadError} from '../ffi/libc.js';
import {SklError} from '../sys/errors.js';

/** Exit codes (README "Exit codes"): 0 ok, 1 operation failed, 2 invalid input. */
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export function describeError(err: unknown): {message: string; code: number} {
  if (err instanceof SklError) return {message: err.message, code: err.exitCode};
  if (err instanceof BpfError || err instanceof FfiLoadError) return {message: err.message, code: EXIT_FAILURE};
  if (err instanceof Errors.CLIError) {
    const exit = (err as OclifErrors.CLIError & {oclif?: {exit?: number}}).oclif?.exit;
    return {message: `${parseErrorLine(err.message)} (see --help)`, code: exit === 2 || exit === undefined ? EXIT_USAGE : exit};
  }
  const e = err as Error;
  return {message: `unexpected error: ${e?.message ?? String(err)} (please report this)`, code: EXIT_FAILURE};
}

/**
 * oclif's flag/argument errors span several lines ("The following error occurred:\n  Missing
 * required flag pid\nSee more help with --help", "Parsing --fd\n\tExpected an integer ..."): the
 * whole of what they say, on one line.
 */
export function parseErrorLine(message: string): string {
  const lines = message
    .split('\n')
    .map((l) => l.trim().replace(/\s+/g, ' '))
    .filter((l) => l !== '' && !/^See more help with --help\.?$/.test(l));
  if (lines.length > 1 && /^The following errors? occurred:$/.test(lines[0])) return lines.slice(1).join('; ');
  const [head = message.trim(), ...rest] = lines;
  return rest.length ? `${head}${head.endsWith(':') ? ' ' : ': '}${rest.join('; ')}` : head;
}

export abstract class SklCommand extends Command {
  protected override async catch(err: Error & {exitCode?: number}): Promise<void> {
    // oclif uses exceptions for exit(); let them through
    if (err instanceof Errors.ExitError) throw err;
    if ((err as {code?: string}).code === 'EEXIT') throw err;
    const {message, code} = describeError(err);
    // a flag error was parsing's own failure: without this, oclif adds a misleading "did not parse
    // its arguments" warning (two more stderr lines) whenever NODE_ENV is development or test
    this.parsed = true;
    process.stderr.write(`${chalk.red('error:')} ${message}\n`);
    if (process.env.SKL_DEBUG && err?.stack) process.stderr.write(`${err.stack}\n`);
    process.exitCode = code;
  }
}
