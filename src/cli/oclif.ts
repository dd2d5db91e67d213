/**
 * What skl's commands import instead of '@oclif/core': oclif's Args, Command, Errors and Flags, or,
 * when bin/run.js took the fast path (./fast.ts), the light stand-ins of ./light.ts, so that the
 * everyday commands start without loading oclif.
 */
import type * as Core from '@oclif/core';
import {lightMode} from './mode.js';

interface Facade {
  Args: typeof Core.Args;
  Command: typeof Core.Command;
  Errors: typeof Core.Errors;
  Flags: typeof Core.Flags;
}

const core = (lightMode() ? await import('./light.js') : await import('@oclif/core')) as unknown as Facade;

export const Args = core.Args;
export const Command = core.Command;
export const Errors = core.Errors;
export const Flags = core.Flags;
