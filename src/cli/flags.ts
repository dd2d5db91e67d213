/** Flags shared by several commands. */
import {Flags} from './oclif.js';

export const netnsFlag = Flags.string({
  description: 'network namespace file to act on (e.g. /run/netns/NAME, /proc/PID/ns/net); default: the current one',
  helpValue: 'PATH',
});

export const jsonFlag = Flags.boolean({description: 'print machine-readable JSON', default: false});
