/**
 * Writing a file for node_exporter's textfile collector, as root, in a directory other users may
 * be able to write to: readers see the old file or the new one, never a partial one, and nothing
 * planted in the directory can redirect the write.
 *
 * The temporary file gets an unpredictable name in the target's directory (so the rename stays on
 * one filesystem) and is created exclusively without following symlinks (O_EXCL|O_NOFOLLOW): a
 * symlink or file planted at that name makes the open fail instead of being written through. It
 * is fsynced, renamed over the target (which replaces a symlink at the target itself, never the
 * file it points to), and the directory is fsynced. On any error the temporary file is removed.
 */
import {randomBytes} from 'node:crypto';
import {closeSync, constants, fsyncSync, openSync, renameSync, unlinkSync, writeFileSync} from 'node:fs';
import path from 'node:path';
import {SklError} from '../sys/errors.js';

const CREATE_EXCLUSIVE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/** Atomically replace `target` with `data` (mode `mode`, less the umask). Throws SklError. */
export function writeFileAtomic(target: string, data: string | Uint8Array, mode = 0o644): void {
  const dir = path.dirname(target);
  const tmp = tempNameFor(target);
  let fd: number | undefined;
  let created = false;
  let renamed = false;
  try {
    fd = createExclusive(tmp, mode);
    created = true;
    writeFileSync(fd, data); // with an fd: writes all of it, leaves the fd open
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, target);
    renamed = true;
    fsyncDirectory(dir);
  } catch (error) {
    if (fd !== undefined) closeQuietly(fd);
    if (created && !renamed) unlinkQuietly(tmp);
    throw new SklError(describeWriteError(target, error, renamed));
  }
}

/** An unpredictable name next to `target`; hidden and not ending in .prom, so the collector skips it. */
export function tempNameFor(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.${randomBytes(12).toString('hex')}.tmp`);
}

/** Create `file` for writing; fails (EEXIST, ELOOP) if anything, a symlink included, is already there. */
export function createExclusive(file: string, mode: number): number {
  return openSync(file, CREATE_EXCLUSIVE, mode);
}

function fsyncDirectory(dir: string): void {
  const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already failing: the first error is the one to report
  }
}

function unlinkQuietly(file: string): void {
  try {
    unlinkSync(file);
  } catch {
    // already failing: the first error is the one to report
  }
}

/** One line: what failed, why (the system's words and code), what to do. */
export function describeWriteError(target: string, error: unknown, replaced = false): string {
  const e = error as NodeJS.ErrnoException;
  const code = e.code ?? 'unknown error';
  // Node's message is "ENOSPC: no space left on device, write": keep the middle
  const why = (e.message ?? String(error)).replace(/^[A-Z0-9]+: /, '').replace(/, \w+(?: '.*')?$/, '');
  const dir = path.dirname(target);
  const hints: Record<string, string> = {
    ENOSPC: `free space on the filesystem of ${dir}`,
    EDQUOT: `free space on the filesystem of ${dir}`,
    EACCES: 'run as root, or choose a directory skl may write to',
    EPERM: 'run as root, or choose a directory skl may write to',
    ENOENT: `create the directory ${dir} first`,
    ENOTDIR: `${dir} is not a directory: choose another --output`,
    EISDIR: `${target} is a directory: name a file`,
    EROFS: 'the filesystem is read-only: choose another --output',
  };
  const hint = hints[code] ?? 'choose another --output';
  const state = replaced ? `${target} was replaced but may not survive a crash` : `${target} is unchanged`;
  return `cannot write ${target}: ${why} (${code}); ${state}; ${hint}`;
}
