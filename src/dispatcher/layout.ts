/** Binary layout of the dispatcher's maps; mirrors bpf/headers/skl.h (a test checks it against BTF). */
import type {Family, Proto} from '../sys/sockets.js';
import {formatV6} from '../sys/sockets.js';

/** Layout of the pinned state this skl writes (SKL_LAYOUT). 0 = skl 0.1.0's (no skl_info map). */
export const LAYOUT = 3;
export const MAX_SERVICES = 1024;
export const DESTS_PER_SERVICE = 4;
export const MAX_DESTS = MAX_SERVICES * DESTS_PER_SERVICE;
/** bindings of a local prefix (the any-address ones live in add_ports and do not count) */
export const MAX_BINDINGS = 1_000_000;
/** distinct prefix lengths per (protocol, port, family) */
export const MAX_LENS = 8;
export const PORT_ENTRIES = 2 * 65536;
/** struct skl_port: services word, lens4[8], lens6[8], then the own/all bitmasks of each list */
export const PORT_SIZE = 4 + 2 * MAX_LENS + 4;
export const PORT_LENS_AT = {4: 4, 6: 4 + MAX_LENS} as const;
export const PORT_MASKS_AT = {4: {own: 4 + 2 * MAX_LENS, all: 5 + 2 * MAX_LENS}, 6: {own: 6 + 2 * MAX_LENS, all: 7 + 2 * MAX_LENS}} as const;

/** One prefix length a port's list names: whether the port has bindings of it (own) and "all ports" has (all). */
export interface PortLen {
  len: number;
  own: boolean;
  all: boolean;
}
export const PORT_SVC_MASK = 0xfff;
export const PORT_V6_SHIFT = 12;
/** add_ports services word: a UDP service's own port whose replies skl rewrites */
export const PORT_F_REPLY = 1 << 24;
export const SOCKET_META_SIZE = 32;
export const SERVICE_SIZE = 48 + 64 + 8 + DESTS_PER_SERVICE * SOCKET_META_SIZE;
const SOCKETS_AT = 120;
export const BINDING_KEY_SIZE = 24;
export const BINDING_SIZE = 8;
export const INFO_SIZE = 40;
export const COUNTER_FIELDS = ['redirected', 'missed', 'retaken'] as const;
export const REPLY_COUNTER_FIELDS = ['flows', 'rewritten'] as const;
/** spare sockets per destination (spare_socket index = dest * SPARES + k) */
export const SPARES = 4;
export const MAX_FLOWS = 65536;
export const FLOW_KEY_SIZE = 40;
export const FLOW_SIZE = 16;
export const MAX_FOLLOW = 4096;
export const FOLLOW_KEY_SIZE = 20;
export const FOLLOW_SIZE = 16;
export const FOLLOW_D_V4 = 1;
export const FOLLOW_D_V6 = 2;

/** Service states: only a ready service is steered to (the program checks). */
export const SVC_FREE = 0;
export const SVC_READY = 1;
export const SVC_PENDING = 2;
/** service flags: a pending service that was being removed (not added) */
export const SVC_F_REMOVING = 1;
/** service flags: new listening sockets of its cgroup are stored as they appear */
export const SVC_F_FOLLOW = 2;
/** service flags: replies to datagrams steered from an extra port leave from that port */
export const SVC_F_UDP_REPLIES = 4;

const SOCK_F_USED = 1;
const SOCK_F_V6ONLY = 2;

export const portIndex = (proto: Proto, port: number): number => ((proto === 'udp' ? 1 : 0) << 16) | port;
export const indexProto = (index: number): Proto => (index >> 16 === 1 ? 'udp' : 'tcp');
export const protoIndex = (proto: Proto): number => (proto === 'udp' ? 1 : 0);

/** target_socket index of a service's socket for (protocol, family of the traffic). */
export const destIndex = (service: number, proto: Proto, family: Family): number =>
  service * DESTS_PER_SERVICE + protoIndex(proto) * 2 + (family === 6 ? 1 : 0);

// ---- add_ports values ----

/** The service of the any-address binding of this family in an add_ports value, or undefined. */
export function portService(value: number, family: Family): number | undefined {
  const v = (value >>> (family === 6 ? PORT_V6_SHIFT : 0)) & PORT_SVC_MASK;
  return v === 0 ? undefined : v - 1;
}

export function withPortService(value: number, family: Family, service: number | undefined): number {
  const shift = family === 6 ? PORT_V6_SHIFT : 0;
  const cleared = value & ~(PORT_SVC_MASK << shift);
  return (cleared | (service === undefined ? 0 : (service + 1) << shift)) >>> 0;
}

export const familyBits = (family: Family): number => (family === 4 ? 32 : 128);

// ---- prefixes and binding keys ----

/** A local address prefix of one family. addr: 16 bytes (IPv4 as ::ffff:a.b.c.d); len: over the family's own bits. */
export interface Prefix {
  family: Family;
  addr: Uint8Array;
  len: number;
}

export const anyPrefix = (family: Family): Prefix => ({family, addr: mappedZero(family), len: 0});
function mappedZero(family: Family): Uint8Array {
  const a = new Uint8Array(16);
  if (family === 4) a[10] = a[11] = 0xff;
  return a;
}

export interface BindingKey {
  proto: Proto;
  /** 0 = all ports */
  port: number;
  prefix: Prefix;
}

/** A binding's key in the bindings hash: the address bits past the prefix are zero (the program masks the same way). */
export function encodeBindingKey(k: BindingKey): Buffer {
  const b = Buffer.alloc(BINDING_KEY_SIZE);
  b.writeUInt32LE(32 + k.prefix.len, 0);
  b.writeUInt8(protoIndex(k.proto), 4);
  b.writeUInt8(k.prefix.family, 5);
  b.writeUInt16LE(k.port, 6);
  writeKeyAddr(b, 8, k.prefix.family, maskedAddr(k.prefix));
  return b;
}

/** The prefix's address with the bits past its length cleared (16 bytes, IPv4 mapped). */
export function maskedAddr(p: Prefix): Uint8Array {
  const out = new Uint8Array(p.addr);
  const base = p.family === 4 ? 96 : 0;
  for (let bit = base + p.len; bit < 128; bit++) out[bit >> 3] &= ~(0x80 >> (bit & 7));
  return out;
}

/** A key's address: IPv4 in its first 4 bytes, IPv6 in 16; in memory always 16 bytes, IPv4 mapped. */
function writeKeyAddr(b: Buffer, at: number, family: Family, addr: Uint8Array): void {
  if (family === 4) Buffer.from(addr.subarray(12, 16)).copy(b, at);
  else Buffer.from(addr).copy(b, at);
}

function readKeyAddr(b: Buffer, at: number, family: Family): Uint8Array {
  const addr = new Uint8Array(16);
  if (family === 4) {
    addr[10] = addr[11] = 0xff;
    addr.set(b.subarray(at, at + 4), 12);
  } else {
    addr.set(b.subarray(at, at + 16));
  }
  return addr;
}

export function decodeBindingKey(b: Buffer): BindingKey {
  const family: Family = b.readUInt8(5) === 4 ? 4 : 6;
  const addr = readKeyAddr(b, 8, family);
  return {proto: b.readUInt8(4) === 1 ? 'udp' : 'tcp', port: b.readUInt16LE(6), prefix: {family, addr, len: b.readUInt32LE(0) - 32}};
}

export function encodeBinding(service: number, prefixLen: number): Buffer {
  const b = Buffer.alloc(BINDING_SIZE);
  b.writeUInt32LE(service, 0);
  b.writeUInt32LE(prefixLen, 4);
  return b;
}

export const decodeBinding = (b: Buffer): {service: number; prefixLen: number} => ({service: b.readUInt32LE(0), prefixLen: b.readUInt32LE(4)});

// ---- services ----

export interface SocketMeta {
  proto: Proto;
  /** the socket's own family (a dual-stack IPv6 socket may serve IPv4 too) */
  family: Family;
  v6only: boolean;
  pid: number;
  listenPort: number;
  /** 16 bytes (IPv4 as v4-mapped) */
  listenAddr: Uint8Array;
  sockIno: number;
}

export interface ServiceMeta {
  state: number;
  pid: number;
  createdNs: bigint;
  netnsIno: number;
  /** skl --foreground process owning the service; 0 for persistent ones */
  ownerPid: number;
  flags: number;
  comm: string;
  name: string;
  /** the followed cgroup v2 directory's inode (SVC_F_FOLLOW), else 0 */
  cgroupIno: number;
  /** by destination: index protocol * 2 + (traffic family == 6) */
  sockets: (SocketMeta | undefined)[];
}

/** Destination (within a service) → protocol and traffic family. */
export const destKey = (i: number): {proto: Proto; family: Family} => ({proto: i >> 1 === 1 ? 'udp' : 'tcp', family: (i & 1) === 1 ? 6 : 4});

/**
 * A fixed-size, NUL-padded text field (like the kernel's comm): text of exactly `size` bytes fills
 * it with no NUL, so a 64-character name fits `char name[64]` (readCString stops at the field's end).
 */
function writeCString(buf: Buffer, offset: number, size: number, text: string): void {
  const bytes = Buffer.from(text, 'utf8').subarray(0, size);
  bytes.copy(buf, offset);
}
function readCString(buf: Buffer, offset: number, size: number): string {
  const part = buf.subarray(offset, offset + size);
  const end = part.indexOf(0);
  return part.subarray(0, end < 0 ? size : end).toString('utf8');
}

export function encodeService(m: ServiceMeta): Buffer {
  const b = Buffer.alloc(SERVICE_SIZE);
  b.writeUInt32LE(m.state, 0);
  b.writeUInt32LE(m.pid, 4);
  b.writeBigUInt64LE(m.createdNs, 8);
  b.writeBigUInt64LE(BigInt(m.netnsIno), 16);
  b.writeUInt32LE(m.ownerPid, 24);
  b.writeUInt32LE(m.flags, 28);
  writeCString(b, 32, 16, m.comm);
  writeCString(b, 48, 64, m.name);
  b.writeBigUInt64LE(BigInt(m.cgroupIno), 112);
  for (let i = 0; i < DESTS_PER_SERVICE; i++) {
    const s = m.sockets[i];
    if (!s) continue;
    const o = SOCKETS_AT + i * SOCKET_META_SIZE;
    b.writeBigUInt64LE(BigInt(s.sockIno), o);
    b.writeUInt32LE(s.pid, o + 8);
    b.writeUInt16LE(s.listenPort, o + 12);
    b.writeUInt8(s.family, o + 14);
    b.writeUInt8(SOCK_F_USED | (s.v6only ? SOCK_F_V6ONLY : 0), o + 15);
    Buffer.from(s.listenAddr).copy(b, o + 16);
  }
  return b;
}

export function decodeService(b: Buffer): ServiceMeta {
  const sockets: (SocketMeta | undefined)[] = [];
  for (let i = 0; i < DESTS_PER_SERVICE; i++) {
    const o = SOCKETS_AT + i * SOCKET_META_SIZE;
    const flags = b.readUInt8(o + 15);
    if (!(flags & SOCK_F_USED)) {
      sockets.push(undefined);
      continue;
    }
    sockets.push({
      proto: destKey(i).proto,
      sockIno: Number(b.readBigUInt64LE(o)),
      pid: b.readUInt32LE(o + 8),
      listenPort: b.readUInt16LE(o + 12),
      family: b.readUInt8(o + 14) === 6 ? 6 : 4,
      v6only: (flags & SOCK_F_V6ONLY) !== 0,
      listenAddr: new Uint8Array(b.subarray(o + 16, o + 32)),
    });
  }
  return {
    state: b.readUInt32LE(0),
    pid: b.readUInt32LE(4),
    createdNs: b.readBigUInt64LE(8),
    netnsIno: Number(b.readBigUInt64LE(16)),
    ownerPid: b.readUInt32LE(24),
    flags: b.readUInt32LE(28),
    comm: readCString(b, 32, 16),
    name: readCString(b, 48, 64),
    cgroupIno: Number(b.readBigUInt64LE(112)),
    sockets,
  };
}

export function encodeInfo(layout: number, version: string): Buffer {
  const b = Buffer.alloc(INFO_SIZE);
  b.writeUInt32LE(layout, 0);
  writeCString(b, 8, 32, version);
  return b;
}
export const decodeInfo = (b: Buffer): {layout: number; version: string} => ({layout: b.readUInt32LE(0), version: readCString(b, 8, 32)});

// ---- following ----

export interface FollowKey {
  family: Family;
  port: number;
  /** 16 bytes, IPv4 mapped (as everywhere else) */
  addr: Uint8Array;
}

export function encodeFollowKey(k: FollowKey): Buffer {
  const b = Buffer.alloc(FOLLOW_KEY_SIZE);
  b.writeUInt8(k.family, 0);
  b.writeUInt16LE(k.port, 2);
  writeKeyAddr(b, 4, k.family, k.addr);
  return b;
}

export function decodeFollowKey(b: Buffer): FollowKey {
  const family: Family = b.readUInt8(0) === 4 ? 4 : 6;
  return {family, port: b.readUInt16LE(2), addr: readKeyAddr(b, 4, family)};
}

export function encodeFollow(service: number, dests: number, netnsCookie: bigint): Buffer {
  const b = Buffer.alloc(FOLLOW_SIZE);
  b.writeUInt32LE(service, 0);
  b.writeUInt32LE(dests, 4);
  b.writeBigUInt64LE(netnsCookie, 8);
  return b;
}

export const decodeFollow = (b: Buffer): {service: number; dests: number; netnsCookie: bigint} => ({service: b.readUInt32LE(0), dests: b.readUInt32LE(4), netnsCookie: b.readBigUInt64LE(8)});

// ---- text ----

/** "127.0.0.1:8080" / "[::]:8080" */
export function listenerText(m: Pick<SocketMeta, 'listenAddr' | 'listenPort' | 'family'>): string {
  const text = formatV6(m.listenAddr);
  if (m.family === 4) return `${text.replace(/^::ffff:/, '')}:${m.listenPort}`;
  return `[${text}]:${m.listenPort}`;
}

/** Address text ("127.0.0.1" or "::") → 16 bytes, IPv4 mapped. */
export function addrBytes(text: string, family: Family): Uint8Array {
  const out = new Uint8Array(16);
  if (family === 4) {
    out[10] = 0xff;
    out[11] = 0xff;
    text.split('.').forEach((o, i) => (out[12 + i] = Number(o)));
    return out;
  }
  // from /proc or sock_diag formatting (formatV6 output); expand "::"
  const halves = text.split('::');
  const words = (s: string): number[] => (s ? s.split(':').map((w) => parseInt(w, 16)) : []);
  const head = words(halves[0]);
  const tail = halves.length > 1 ? words(halves[1]) : [];
  const all = halves.length > 1 ? [...head, ...new Array(8 - head.length - tail.length).fill(0), ...tail] : head;
  all.forEach((w, i) => {
    out[i * 2] = w >> 8;
    out[i * 2 + 1] = w & 0xff;
  });
  return out;
}

/** "10.0.0.0/8" / "fd00::/8" text of a prefix. */
export function prefixText(p: Prefix): string {
  const text = formatV6(p.addr);
  return p.family === 4 ? `${text.replace(/^::ffff:/, '')}/${p.len}` : `${text}/${p.len}`;
}

/** Whether the address (16 bytes, IPv4 mapped) of this family falls in the prefix. */
export function prefixContains(p: Prefix, family: Family, addr: Uint8Array): boolean {
  if (p.family !== family) return false;
  const base = family === 4 ? 96 : 0;
  for (let bit = 0; bit < p.len; bit++) {
    const i = base + bit;
    const mask = 0x80 >> (i & 7);
    if ((p.addr[i >> 3] & mask) !== (addr[i >> 3] & mask)) return false;
  }
  return true;
}

