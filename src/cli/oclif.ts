/**
 * What skl's commands import instead of '@oclif/core': oclif's Args, Command, Errors and Flags, or,
 * when bin/run.js took the fast path (./fast.ts), the light stand-ins of ./light.ts, so that the
 * everyday commands start without loading oclif. Synchronous (no top-level await), so that the
 * bundle of the everyday commands (scripts/bundle.ts) can be a CommonJS file.
 */
import {createRequire} from 'node:module';
import type * as Core from '@oclif/core';
import * as light from './light.js';
import {lightMode} from './mode.js';

interface Facade {
  Args: typeof Core.Args;
  Command: typeof Core.Command;
  Errors: typeof Core.Errors;
  Flags: typeof Core.Flags;
}

// @oclif/core is CommonJS: require() loads it as import() would
const core = (lightMode() ? light : createRequire(import.meta.url)('@oclif/core')) as unknown as Facade;

export const Args = core.Args;
export const Command = core.Command;
export const Errors = core.Errors;
export const Flags = core.Flags;
