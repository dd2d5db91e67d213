/** Process facts from /proc. */
import {readFileSync} from 'node:fs';

export interface ProcessInfo {
  pid: number;
  comm: string;
  kernelThread: boolean;
}

const PF_KTHREAD = 0x00200000;

/** Facts about a live process, or undefined when it does not exist. */
export function processInfo(pid: number): ProcessInfo | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const close = stat.lastIndexOf(')');
    const comm = stat.slice(stat.indexOf('(') + 1, close);
    const fields = stat.slice(close + 2).split(' ');
    const flags = Number(fields[6]);
    return {pid, comm, kernelThread: (flags & PF_KTHREAD) !== 0};
  } catch {
    return undefined;
  }
}

/** Whether the process exists and has not exited: a zombie (dead, not yet reaped) has exited. */
export function processAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.charAt(stat.lastIndexOf(')') + 2);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}
