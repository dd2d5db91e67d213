/** Binary layout of the dispatcher's maps; mirrors bpf/headers/skl.h (a test checks it against BTF). */
import type {Proto} from '../sys/sockets.js';
import {formatV6} from '../sys/sockets.js';

export const MAX_TARGETS = 256;
export const PORT_ENTRIES = 2 * 65536;
export const PORT_SLOT_MASK = 0xffff;
export const PORT_F_V4 = 1 << 16;
export const PORT_F_V6 = 1 << 17;
export const PORT_F_FILTER = 1 << 18;
export const META_SIZE = 152;
export const ADDR_KEY_SIZE = 24;
export const COUNTER_FIELDS = ['redirected', 'missed', 'filtered'] as const;

/** in_use values: a slot being written (stale if seen under the lock) or ready. */
export const SLOT_FREE = 0;
export const SLOT_READY = 1;
export const SLOT_PENDING = 2;

export const portIndex = (proto: Proto, port: number): number => ((proto === 'udp' ? 1 : 0) << 16) | port;
export const indexProto = (index: number): Proto => (index >> 16 === 1 ? 'udp' : 'tcp');

export function portValue(slot: number, accepts: {v4: boolean; v6: boolean}, filtered: boolean): number {
  return ((slot + 1) | (accepts.v4 ? PORT_F_V4 : 0) | (accepts.v6 ? PORT_F_V6 : 0) | (filtered ? PORT_F_FILTER : 0)) >>> 0;
}
export const valueSlot = (value: number): number => (value & PORT_SLOT_MASK) - 1;

export interface TargetMeta {
  state: number;
  pid: number;
  proto: Proto;
  /** 4 or 6: family of the target socket */
  family: 4 | 6;
  v6only: boolean;
  listenPort: number;
  /** 16 bytes (IPv4 as v4-mapped) */
  listenAddr: Uint8Array;
  sockIno: number;
  createdNs: bigint;
  netnsIno: number;
  /** skl --foreground process owning the slot; 0 for persistent attachments */
  ownerPid: number;
  nfilters: number;
  comm: string;
  name: string;
}

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

export function encodeMeta(m: TargetMeta): Buffer {
  const b = Buffer.alloc(META_SIZE);
  b.writeUInt32LE(m.state, 0);
  b.writeUInt32LE(m.pid, 4);
  b.writeUInt32LE(m.proto === 'udp' ? 1 : 0, 8);
  b.writeUInt32LE(m.family === 6 ? 10 : 2, 12);
  b.writeUInt32LE(m.v6only ? 1 : 0, 16);
  b.writeUInt32LE(m.listenPort, 20);
  Buffer.from(m.listenAddr).copy(b, 24);
  b.writeBigUInt64LE(BigInt(m.sockIno), 40);
  b.writeBigUInt64LE(m.createdNs, 48);
  b.writeBigUInt64LE(BigInt(m.netnsIno), 56);
  b.writeUInt32LE(m.ownerPid, 64);
  b.writeUInt32LE(m.nfilters, 68);
  writeCString(b, 72, 16, m.comm);
  writeCString(b, 88, 64, m.name);
  return b;
}

export function decodeMeta(b: Buffer): TargetMeta {
  return {
    state: b.readUInt32LE(0),
    pid: b.readUInt32LE(4),
    proto: b.readUInt32LE(8) === 1 ? 'udp' : 'tcp',
    family: b.readUInt32LE(12) === 10 ? 6 : 4,
    v6only: b.readUInt32LE(16) === 1,
    listenPort: b.readUInt32LE(20),
    listenAddr: new Uint8Array(b.subarray(24, 40)),
    sockIno: Number(b.readBigUInt64LE(40)),
    createdNs: b.readBigUInt64LE(48),
    netnsIno: Number(b.readBigUInt64LE(56)),
    ownerPid: b.readUInt32LE(64),
    nfilters: b.readUInt32LE(68),
    comm: readCString(b, 72, 16),
    name: readCString(b, 88, 64),
  };
}

/** "127.0.0.1:8080" / "[::]:8080" */
export function listenerText(m: Pick<TargetMeta, 'listenAddr' | 'listenPort' | 'family'>): string {
  const text = formatV6(m.listenAddr);
  if (m.family === 4) return `${text.replace(/^::ffff:/, '')}:${m.listenPort}`;
  return `[${text}]:${m.listenPort}`;
}

/** Address text ("127.0.0.1" or "::") → 16 bytes, IPv4 mapped. */
export function addrBytes(text: string, family: 4 | 6): Uint8Array {
  const out = new Uint8Array(16);
  if (family === 4) {
    out[10] = 0xff;
    out[11] = 0xff;
    text.split('.').forEach((o, i) => (out[12 + i] = Number(o)));
    return out;
  }
  // from /proc formatting (formatV6 output); expand "::"
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

export function encodeAddrKey(slot: number, addr: Uint8Array, prefixLen: number): Buffer {
  const b = Buffer.alloc(ADDR_KEY_SIZE);
  b.writeUInt32LE(32 + prefixLen, 0);
  b.writeUInt32LE(slot, 4);
  Buffer.from(addr).copy(b, 8);
  return b;
}

export function decodeAddrKey(b: Buffer): {slot: number; addr: Uint8Array; prefixLen: number} {
  return {prefixLen: b.readUInt32LE(0) - 32, slot: b.readUInt32LE(4), addr: new Uint8Array(b.subarray(8, 24))};
}

/** "10.0.0.0/8" / "fd00::/8" text of a filter prefix. */
export function prefixText(addr: Uint8Array, prefixLen: number): string {
  const text = formatV6(addr);
  if (text.startsWith('::ffff:') && prefixLen >= 96) return `${text.slice(7)}/${prefixLen - 96}`;
  return `${text}/${prefixLen}`;
}
