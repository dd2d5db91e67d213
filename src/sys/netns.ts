/** Network namespaces: open by path (checked to really be one), inode, run code inside one. */
import {closeSync, fstatSync, openSync, readFileSync} from 'node:fs';
import {libc} from '../ffi/index.js';
import {SklError, UsageError} from './errors.js';

const CLONE_NEWNET = 0x40000000;
const NS_GET_NSTYPE = 0xb703;

export class Netns {
  private closed = false;
  private constructor(
    readonly fd: number,
    readonly ino: number,
    readonly path: string,
  ) {}

  /** Open a network namespace file (/proc/PID/ns/net, /run/netns/NAME). Default: the caller's. */
  static open(path = '/proc/self/ns/net'): Netns {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      throw new UsageError(`--netns ${path}: cannot open it (${code}); give a network namespace file such as /run/netns/NAME or /proc/PID/ns/net`);
    }
    const type = libc.ioctl0(fd, NS_GET_NSTYPE);
    if (type !== CLONE_NEWNET) {
      closeSync(fd);
      throw new UsageError(`--netns ${path}: not a network namespace file; give one such as /run/netns/NAME or /proc/PID/ns/net`);
    }
    return new Netns(fd, fstatSync(fd).ino, path);
  }

  /** Run `fn` with the calling thread inside this namespace (synchronously), then switch back. */
  run<T>(fn: () => T): T {
    const self = openSync('/proc/thread-self/ns/net', 'r');
    try {
      if (fstatSync(self).ino === this.ino) return fn();
      if (libc.setns(this.fd, CLONE_NEWNET) !== 0) {
        throw new SklError(`cannot enter network namespace ${this.path}: errno ${libc.errno()} (needs CAP_SYS_ADMIN: run as root)`);
      }
      try {
        return fn();
      } finally {
        // cannot fail for a namespace we were just in; if it did, nothing below would be safe
        if (libc.setns(self, CLONE_NEWNET) !== 0) process.abort();
      }
    } finally {
      closeSync(self);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
  }
}

/** Inode of the network namespace a socket fd belongs to (SIOCGSKNS). */
export function socketNetnsIno(fd: number): number | undefined {
  const SIOCGSKNS = 0x894c;
  const nsfd = libc.ioctl0(fd, SIOCGSKNS);
  if (nsfd < 0) return undefined;
  try {
    return fstatSync(nsfd).ino;
  } finally {
    closeSync(nsfd);
  }
}

/** Names of the network interfaces of the current thread's namespace. */
export function interfaceNames(): string[] {
  return readFileSync('/proc/thread-self/net/dev', 'utf8')
    .split('\n')
    .slice(2)
    .map((l) => l.split(':')[0].trim())
    .filter(Boolean);
}

/** ifindex of an interface in the current thread's namespace, or 0. */
export function ifindexOf(name: string): number {
  if (name.length === 0 || name.length > 15) return 0;
  return libc.if_nametoindex(name);
}

/** The calling thread's network namespace cookie (SO_NETNS_COOKIE, Linux 5.14): what BPF programs compare. */
export function netnsCookieHere(): bigint {
  const AF_INET = 2;
  const SOCK_DGRAM = 2;
  const SOL_SOCKET = 1;
  const SO_NETNS_COOKIE = 71;
  const fd = libc.socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) throw new SklError(`cannot create a socket to read the network namespace cookie: errno ${libc.errno()}`);
  try {
    const buf = Buffer.alloc(8);
    const len: [number] = [8];
    if (libc.getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, buf, len) !== 0) {
      throw new SklError(`cannot read the network namespace cookie (SO_NETNS_COOKIE, Linux ≥5.14): errno ${libc.errno()}`);
    }
    return buf.readBigUInt64LE(0);
  } finally {
    libc.close(fd);
  }
}
