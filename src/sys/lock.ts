/** An advisory lock (flock) guarding writes to skl's pinned state. */
import {closeSync, constants, fstatSync, openSync} from 'node:fs';
import {libc} from '../ffi/index.js';
import {SklError} from './errors.js';

const LOCK_EX = 2;
const LOCK_NB = 4;
const EWOULDBLOCK = 11;

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/** Hold an exclusive lock on `path` (a file, created mode 0600 if missing) while `fn` runs. */
export async function withLock<T>(path: string, fn: () => Promise<T> | T, timeoutMs = 15000): Promise<T> {
  const fd = lock(path, timeoutMs);
  try {
    return await fn();
  } finally {
    closeSync(fd); // closing the only fd releases the flock
  }
}

export function lock(path: string, timeoutMs = 15000): number {
  let fd: number;
  try {
    // no symlinks, never block on a FIFO: the path may come from the environment (SKL_LOCK_FILE)
    fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_APPEND | constants.O_NOFOLLOW | constants.O_NONBLOCK, 0o600);
  } catch (error) {
    throw new SklError(`cannot open the lock file ${path} (${(error as NodeJS.ErrnoException).code}): run as root`);
  }
  if (!fstatSync(fd).isFile()) {
    closeSync(fd);
    throw new SklError(`the lock file ${path} is not a regular file; remove it`);
  }
  const deadline = Date.now() + timeoutMs;
  for (let wait = 1; ; wait = Math.min(wait * 2, 50)) {
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
