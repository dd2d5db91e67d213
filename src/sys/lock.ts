/**
 * An advisory lock (flock) guarding writes to skl's pinned state. Waiting is bounded: after
 * LOCK_TIMEOUT_MS skl gives up with one line naming the lock file (README: "Guarantees",
 * "Environment variables" for SKL_LOCK_FILE).
 */
import {closeSync, constants, fstatSync, openSync} from 'node:fs';
import {libc} from '../ffi/index.js';
import {SklError} from './errors.js';

const LOCK_EX = 2;
const LOCK_NB = 4;
const EWOULDBLOCK = 11;

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/** How long skl waits for the lock before giving up (documented in the README: 15 s). */
export const LOCK_TIMEOUT_MS = 15_000;

/** Hold an exclusive lock on `path` (a file, created mode 0600 if missing) while `fn` runs. */
export async function withLock<T>(path: string, fn: () => Promise<T> | T, timeoutMs = LOCK_TIMEOUT_MS): Promise<T> {
  const fd = lock(path, timeoutMs);
  try {
    return await fn();
  } finally {
    closeSync(fd); // closing the only fd releases the flock
  }
}

export function lock(path: string, timeoutMs = LOCK_TIMEOUT_MS): number {
  let fd: number;
  try {
    // no symlinks, never block on a FIFO: the path may come from the environment (SKL_LOCK_FILE)
    fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_APPEND | constants.O_NOFOLLOW | constants.O_NONBLOCK, 0o600);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'unknown error';
    const hint: Record<string, string> = {
      ELOOP: 'it is a symbolic link; remove it',
      ENOENT: 'its directory does not exist; create it',
      ENOTDIR: 'its directory does not exist; create it',
    };
    throw new SklError(`cannot open the lock file ${path} (${code}): ${hint[code] ?? 'run as root'}`);
  }
  if (!fstatSync(fd).isFile()) {
    closeSync(fd);
    throw new SklError(`the lock file ${path} is not a regular file; remove it`);
  }
  const deadline = Date.now() + timeoutMs;
  // poll often: a waiter that sleeps long loses the lock to ones that poll more often
  for (let wait = 1; ; wait = Math.min(wait * 2, 10)) {
    if (libc.flock(fd, LOCK_EX | LOCK_NB) === 0) return fd;
    const e = libc.errno();
    if (e !== EWOULDBLOCK) {
      closeSync(fd);
      throw new SklError(`cannot lock ${path}: errno ${e}`);
    }
    if (Date.now() > deadline) {
      closeSync(fd);
      throw new SklError(`another skl has held the lock on ${path} for ${timeoutMs / 1000}s; retry, or find it with: fuser ${path}`);
    }
    Atomics.wait(sleeper, 0, 0, wait);
  }
}
