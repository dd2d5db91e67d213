/**
 * Socket discovery: which sockets a process holds, from /proc/PID/fd, and which server sockets a
 * namespace has, from sock_diag (./sockdiag.ts) or /proc/PID/net/*.
 */
import {readdirSync, readFileSync, readlinkSync, statSync} from 'node:fs';
import {libc} from '../ffi/index.js';
import {diagServerSockets} from './sockdiag.js';
import {Netns} from './netns.js';

export type Proto = 'tcp' | 'udp';
export type Family = 4 | 6;

export interface SocketEntry {
  proto: Proto;
  family: Family;
  /** Local address as text ("127.0.0.1", "::", "::ffff:127.0.0.1"). */
  address: string;
  port: number;
  remoteAddress: string;
  remotePort: number;
  /** Kernel state: TCP 0x0A = LISTEN, UDP 0x07 = unconnected. */
  state: number;
  inode: number;
  /** IPv6 sockets, from sock_diag: IPV6_V6ONLY (undefined when unknown) */
  v6only?: boolean;
}

export interface ProcessSocket extends SocketEntry {
  fd: number;
}

const TCP_LISTEN = 0x0a;
const UDP_UNCONNECTED = 0x07;

function hexToV4(hex: string): string {
  const n = parseInt(hex, 16);
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24].join('.');
}

function hexToV6(hex: string): string {
  const bytes = Buffer.alloc(16);
  for (let i = 0; i < 4; i++) bytes.writeUInt32LE(parseInt(hex.slice(i * 8, i * 8 + 8), 16) >>> 0, i * 4);
  return formatV6(bytes);
}

/** RFC 5952 text of 16 bytes (with ::ffff:a.b.c.d for v4-mapped). */
export function formatV6(b: Uint8Array): string {
  const isMapped = b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff;
  if (isMapped) return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  const words: number[] = [];
  for (let i = 0; i < 16; i += 2) words.push((b[i] << 8) | b[i + 1]);
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = words.map((w) => w.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** Parse one /proc/net/{tcp,tcp6,udp,udp6} table. */
export function parseProcNet(text: string, proto: Proto, family: Family): SocketEntry[] {
  const out: SocketEntry[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    const [la, lp] = f[1].split(':');
    const [ra, rp] = f[2].split(':');
    const addr = family === 4 ? hexToV4 : hexToV6;
    out.push({
      proto,
      family,
      address: addr(la),
      port: parseInt(lp, 16),
      remoteAddress: addr(ra),
      remotePort: parseInt(rp, 16),
      state: parseInt(f[3], 16),
      inode: Number(f[9]),
    });
  }
  return out;
}

const TABLES: [Proto, Family, string][] = [
  ['tcp', 4, 'tcp'],
  ['tcp', 6, 'tcp6'],
  ['udp', 4, 'udp'],
  ['udp', 6, 'udp6'],
];

function readTables(dir: string, protos: Proto[]): SocketEntry[] {
  const out: SocketEntry[] = [];
  for (const [proto, family, file] of TABLES) {
    if (!protos.includes(proto)) continue;
    let text: string;
    try {
      text = readFileSync(`${dir}/${file}`, 'utf8');
    } catch {
      continue; // e.g. IPv6 disabled
    }
    out.push(...parseProcNet(text, proto, family));
  }
  return out;
}

/** Whether a socket entry is a "server" socket skl can steer to: TCP listening / UDP unconnected. */
export const isServerSocket = (s: SocketEntry): boolean =>
  s.proto === 'tcp' ? s.state === TCP_LISTEN : s.state === UDP_UNCONNECTED && s.remotePort === 0;

/** Socket inodes held by a process, with their fd numbers. Throws ENOENT/EACCES from /proc. */
export function socketInodesOf(pid: number): Map<number, number> {
  const map = new Map<number, number>();
  for (const name of readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${name}`);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue; // closed meanwhile
      throw error; // EACCES without ptrace access: "no sockets" would be a lie
    }
    const m = /^socket:\[(\d+)\]$/.exec(target);
    if (m && !map.has(Number(m[1]))) map.set(Number(m[1]), Number(name));
  }
  return map;
}

/** Whether process `pid` is in the calling thread's network namespace (false when that cannot be told). */
function inThisNetns(pid: number): boolean {
  try {
    return statSync(`/proc/${pid}/ns/net`).ino === statSync('/proc/thread-self/ns/net').ino;
  } catch {
    return false;
  }
}

/** Server sockets of the calling thread's namespace: sock_diag (fast), else /proc/net/*. */
function serverTablesHere(protos: Proto[]): SocketEntry[] {
  return diagServerSockets(protos) ?? readTables('/proc/thread-self/net', protos);
}

/**
 * Server sockets (listening TCP / unconnected UDP) a process holds. Its namespace's listeners come
 * from sock_diag run inside that namespace (O(listeners), whatever the number of connections);
 * /proc/PID/net/* (which walks every connection) only when sock_diag cannot answer.
 */
export function serverSocketsOf(pid: number, protos: Proto | readonly Proto[]): ProcessSocket[] {
  const list = typeof protos === 'string' ? [protos] : [...protos];
  const inodes = socketInodesOf(pid);
  let tables: SocketEntry[] | undefined;
  if (inThisNetns(pid)) tables = diagServerSockets(list);
  else tables = inNetnsOf(pid, () => diagServerSockets(list));
  tables ??= readTables(`/proc/${pid}/net`, list);
  return tables
    .filter((s) => isServerSocket(s) && inodes.has(s.inode))
    .map((s) => ({...s, fd: inodes.get(s.inode)!}))
    .sort((a, b) => a.fd - b.fd);
}

/** Run `fn` inside process `pid`'s network namespace; undefined when it cannot be entered. */
function inNetnsOf<T>(pid: number, fn: () => T | undefined): T | undefined {
  let ns: Netns;
  try {
    ns = Netns.open(`/proc/${pid}/ns/net`);
  } catch {
    return undefined;
  }
  try {
    return ns.run(fn);
  } catch {
    return undefined;
  } finally {
    ns.close();
  }
}

/** Server sockets of the calling thread's network namespace (use inside Netns.run). */
export function serverSocketsHere(protos: Proto[] = ['tcp', 'udp']): SocketEntry[] {
  return serverTablesHere(protos).filter(isServerSocket);
}

/** All sockets (any state) of the calling thread's network namespace. */
export function socketsHere(protos: Proto[] = ['tcp', 'udp']): SocketEntry[] {
  return readTables('/proc/thread-self/net', protos);
}

// --- properties of a socket fd we hold ---
const SOL_SOCKET = 1;
const SO_PROTOCOL = 38;
const SO_DOMAIN = 39;
const SO_ACCEPTCONN = 30;
const IPPROTO_IPV6 = 41;
const IPV6_V6ONLY = 26;

function intOpt(fd: number, level: number, opt: number): number | undefined {
  const buf = Buffer.alloc(4);
  const len: [number] = [4];
  if (libc.getsockopt(fd, level, opt, buf, len) !== 0) return undefined;
  return buf.readInt32LE(0);
}

export interface SocketFdInfo {
  /** AF_INET 2 / AF_INET6 10 */
  domain: number;
  /** IPPROTO_TCP 6 / IPPROTO_UDP 17 */
  protocol: number;
  listening: boolean;
  v6only: boolean;
}

/** Inspect a socket fd of our own; undefined when it is not a socket. */
export function socketFdInfo(fd: number): SocketFdInfo | undefined {
  const domain = intOpt(fd, SOL_SOCKET, SO_DOMAIN);
  const protocol = intOpt(fd, SOL_SOCKET, SO_PROTOCOL);
  if (domain === undefined || protocol === undefined) return undefined;
  return {
    domain,
    protocol,
    listening: intOpt(fd, SOL_SOCKET, SO_ACCEPTCONN) === 1,
    v6only: domain === 10 ? intOpt(fd, IPPROTO_IPV6, IPV6_V6ONLY) === 1 : false,
  };
}

/** Local address and port of a socket fd we hold (getsockname); undefined when not an inet socket. */
export function socketLocalAddress(fd: number): {family: Family; address: string; port: number} | undefined {
  const buf = Buffer.alloc(128);
  const len: [number] = [buf.length];
  if (libc.getsockname(fd, buf, len) !== 0) return undefined;
  const domain = buf.readUInt16LE(0);
  const port = buf.readUInt16BE(2);
  if (domain === 2) return {family: 4, address: `${buf[4]}.${buf[5]}.${buf[6]}.${buf[7]}`, port};
  if (domain === 10) return {family: 6, address: formatV6(buf.subarray(8, 24)), port};
  return undefined;
}
