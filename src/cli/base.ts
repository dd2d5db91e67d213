/** Base of every skl command: one-line errors with documented exit codes, never a stack trace. */
import {Command, Errors} from '@oclif/core';
import chalk from 'chalk';
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
    const exit = (err as Errors.CLIError & {oclif?: {exit?: number}}).oclif?.exit;
    // flag parsing errors: keep the first meaningful line
    const first = err.message.split('\n').find((l) => l.trim()) ?? err.message;
    return {message: `${first.trim()} (see --help)`, code: exit === 2 || exit === undefined ? EXIT_USAGE : exit};
  }
  const e = err as Error;
  return {message: `unexpected error: ${e?.message ?? String(err)} (please report this)`, code: EXIT_FAILURE};
}

// chalk 5 ignores NO_COLOR (https://no-color.org): honour it for every command.
if (process.env.NO_COLOR !== undefined && process.env.NO_COLOR !== '') chalk.level = 0;

export abstract class SklCommand extends Command {
  protected override async catch(err: Error & {exitCode?: number}): Promise<void> {
    // oclif uses exceptions for exit(); let them through
    if (err instanceof Errors.ExitError) throw err;
    if ((err as {code?: string}).code === 'EEXIT') throw err;
    const {message, code} = describeError(err);
    process.stderr.write(`${chalk.red('error:')} ${message}\n`);
    if (process.env.SKL_DEBUG && err?.stack) process.stderr.write(`${err.stack}\n`);
    process.exitCode = code;
  }
}
