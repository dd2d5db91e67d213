/** Process facts from /proc. */
import {readFileSync, readlinkSync} from 'node:fs';
import path from 'node:path';

export interface ProcessInfo {
  pid: number;
  comm: string;
  kernelThread: boolean;
}

const PF_KTHREAD = 0x00200000;
/** TASK_COMM_LEN - 1: the longest comm the kernel keeps. */
const COMM_MAX = 15;

/**
 * Main-thread names that replace a process's comm: Node.js names its main thread (PR_SET_NAME on the
 * thread-group leader, whose name *is* the process's comm) "MainThread" from 24 on and
 * "node-MainThread" from 26 on, so every Node server would be called that. Such a process is named
 * after its executable instead ("node").
 */
const MAIN_THREAD_NAMES = new Set(['MainThread', 'node-MainThread']);

function programName(pid: number, comm: string): string {
  if (!MAIN_THREAD_NAMES.has(comm)) return comm;
  try {
    const exe = path.basename(readlinkSync(`/proc/${pid}/exe`).replace(/ \(deleted\)$/, ''));
    return exe === '' ? comm : exe.slice(0, COMM_MAX);
  } catch {
    return comm;
  }
}

/** Facts about a live process, or undefined when it does not exist. */
export function processInfo(pid: number): ProcessInfo | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const close = stat.lastIndexOf(')');
    const comm = programName(pid, stat.slice(stat.indexOf('(') + 1, close));
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
