/** bpffs: detection by filesystem magic (never trust the path), mounting, skl's directories. */
import {mkdirSync, readlinkSync, statSync} from 'node:fs';
import {libc} from '../ffi/index.js';
import {SklError} from './errors.js';
import {ipNetnsExecName} from './mounts.js';

export const BPFFS_MAGIC = 0xcafe4a11;
export const DEFAULT_BPFFS = '/sys/fs/bpf';

/** Filesystem magic of `path`, or undefined when it does not exist. */
export function fsMagic(path: string): number | undefined {
  const buf = Buffer.alloc(120);
  if (libc.statfs(path, buf) !== 0) return undefined;
  return Number(buf.readBigUInt64LE(0) & 0xffffffffn);
}

export const isBpffs = (path: string): boolean => fsMagic(path) === BPFFS_MAGIC;

/** Inode of the initial mount namespace on Linux ≥6.18 (PROC_MNT_INIT_INO); dynamic before. */
const MNT_NS_INIT_INO = 0xeffffff8;

/**
 * Whether this process is in the host's (initial) mount namespace, where a bpffs mounted now
 * outlives skl. Only a positive answer counts: a mount made in a private namespace (`unshare -m`,
 * `ip netns exec`, a container) dies with it and takes every pin with it.
 */
export function inInitMountNamespace(): boolean {
  if (ipNetnsExecName() !== undefined) return false;
  let self: string;
  try {
    self = readlinkSync('/proc/self/ns/mnt');
  } catch {
    return false;
  }
  try {
    return self === readlinkSync('/proc/1/ns/mnt');
  } catch {
    // PID 1's namespace may be unreadable (it is on some VMs and sandboxes, even for root):
    // recent kernels give the initial namespace a fixed inode; without that, we cannot tell.
    return self === `mnt:[${MNT_NS_INIT_INO}]`;
  }
}

export interface BpffsStatus {
  path: string;
  mounted: boolean;
  /** We mounted it just now. */
  mountedNow: boolean;
}

/**
 * Make sure `root` is a bpffs, mounting one when it is safe (the host's mount namespace).
 * In a private mount namespace (`ip netns exec`) a mount there would die with the command and take
 * every pin with it, so skl refuses instead.
 */
export function ensureBpffs(root = DEFAULT_BPFFS, {mount = true} = {}): BpffsStatus {
  // Under `ip netns exec` even a bpffs at root is private to the command (and its pins die with it).
  if (isBpffs(root) && ipNetnsExecName() === undefined) return {path: root, mounted: true, mountedNow: false};
  const exists = fsMagic(root) !== undefined;
  if (!inInitMountNamespace()) {
    const netnsExec = ipNetnsExecName();
    throw new SklError(
      netnsExec !== undefined
        ? `${root} is not the host's BPF filesystem under 'ip netns exec ${netnsExec}' (a private mount namespace): pins made here would vanish with the command; run skl outside it with --netns /run/netns/${netnsExec}`
        : `${root} is not a BPF filesystem, and skl cannot tell that this is the host's mount namespace (a bpffs mounted in a private one vanishes with it, pins and all); mount it in the host's with: mount -t bpf bpf ${root}`,
    );
  }
  if (!mount || !exists) {
    throw new SklError(`${root} is not a BPF filesystem; mount it with: mount -t bpf bpf ${root}`);
  }
  if (libc.mount('bpf', root, 'bpf', 0, null) !== 0) {
    const e = libc.errno();
    throw new SklError(`${root} is not a BPF filesystem and mounting one failed (errno ${e}); run as root or: mount -t bpf bpf ${root}`);
  }
  return {path: root, mounted: true, mountedNow: true};
}

/** mkdir -p below a bpffs root, mode 0700, checking it is bpffs first (see DESIGN.md). bpffs forbids '.' in names. */
export function mkdirBpffs(root: string, ...parts: string[]): string {
  if (!isBpffs(root)) throw new SklError(`${root} is not a BPF filesystem`);
  let dir = root;
  for (const part of parts) {
    if (!/^[A-Za-z0-9_-]+$/.test(part)) throw new SklError(`invalid bpffs path component ${part}`);
    dir = `${dir}/${part}`;
    try {
      mkdirSync(dir, {mode: 0o700});
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      if (!statSync(dir).isDirectory()) throw new SklError(`${dir} exists and is not a directory`);
    }
  }
  return dir;
}
