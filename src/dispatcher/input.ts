/** Parsing and validation of user input for the dispatcher (pure: unit-tested without root). */
import {isIP} from 'node:net';
import {UsageError} from '../sys/errors.js';
import type {Proto} from '../sys/sockets.js';
import {prefixText, type Prefix} from './layout.js';

export const MAX_PORT = 65535;

/** Ports of a binding: explicit ports, or every port of the prefixes. */
export type PortSpec = number[] | 'all';

/** "all" or a port list (see parsePorts). */
export function parsePortSpec(spec: string): PortSpec {
  return spec.trim().toLowerCase() === 'all' ? 'all' : parsePorts(spec);
}

/** "tcp", "udp", "tcp,udp" → protocols, in that order. */
export function parseProtos(spec: string): Proto[] {
  const parts = spec.split(',').map((p) => p.trim().toLowerCase());
  if (parts.length === 0 || parts.some((p) => p !== 'tcp' && p !== 'udp') || new Set(parts).size !== parts.length) {
    throw new UsageError(`invalid --proto ${JSON.stringify(truncate(spec))}: use tcp, udp or tcp,udp`);
  }
  return (['tcp', 'udp'] as const).filter((p) => parts.includes(p));
}

/** "80,443,8000-8999" → sorted unique ports. Rejects anything malformed, naming the bad part. */
export function parsePorts(spec: string): number[] {
  const text = spec.trim();
  if (text === '') throw new UsageError('--ports is empty: give ports like 8080,9090 or ranges like 8000-8999');
  const seen = new Uint8Array(MAX_PORT + 1);
  // few ports (the everyday case): collected and sorted, not found by a sweep of all 65,535
  let few: number[] | undefined = [];
  for (const raw of text.split(',')) {
    const part = raw.trim();
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(part);
    if (!m) {
      throw new UsageError(`invalid port ${JSON.stringify(part)} in --ports ${JSON.stringify(truncate(spec))}: use numbers 1-65535 or ranges like 8000-8999, comma-separated`);
    }
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    for (const p of [lo, hi]) {
      if (p < 1 || p > MAX_PORT) throw new UsageError(`port ${p} in --ports is out of range: ports are 1-65535`);
    }
    if (hi < lo) throw new UsageError(`invalid range ${part} in --ports: the start is above the end (did you mean ${hi}-${lo}?)`);
    seen.fill(1, lo, hi + 1);
    if (few && few.length + hi - lo < FEW) for (let p = lo; p <= hi; p++) few.push(p);
    else few = undefined;
  }
  if (few) return sortedUnique(few);
  const out: number[] = [];
  for (let p = 1; p <= MAX_PORT; p++) if (seen[p]) out.push(p);
  return out;
}

/** Up to this many ports, sorting beats sweeping a 65,536-entry table (code that runs once, unoptimised). */
const FEW = 256;

function truncate(s: string): string {
  return s.length > 40 ? `${s.slice(0, 37)}...` : s;
}

/** Distinct values, ascending. Port numbers (up to all 65,535 of them) through a bitmap: no sort. */
function sortedUnique(ports: readonly number[]): number[] {
  if (ports.length < FEW || !ports.every((p) => Number.isInteger(p) && p >= 0 && p <= 65535)) return [...new Set(ports)].sort((a, b) => a - b);
  const seen = new Uint8Array(65536);
  for (let i = 0; i < ports.length; i++) seen[ports[i]] = 1;
  const out: number[] = [];
  for (let p = 0; p < 65536; p++) if (seen[p]) out.push(p);
  return out;
}

/** [80, 443, 8000, 8001, 8002] → "80,443,8000-8002". */
export function compressPorts(ports: readonly number[]): string {
  const sorted = sortedUnique(ports);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j++;
    parts.push(j === i ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}

const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;

/** Attachment names: [A-Za-z0-9_.-]{1,64}, not "." or "..". They never become paths. */
export function validateName(name: string): string {
  if (!NAME_RE.test(name) || name === '.' || name === '..') {
    throw new UsageError(`invalid name ${JSON.stringify(truncate(name))}: use 1-64 characters of A-Z a-z 0-9 _ . -`);
  }
  return name;
}

/**
 * Order of names (and other plain ASCII words): case-insensitive, then by code unit. Never
 * localeCompare: its first call loads ICU's collation data, ≈9 ms of a command's start.
 */
export function compareNames(a: string, b: string): number {
  const x = a.toLowerCase();
  const y = b.toLowerCase();
  if (x !== y) return x < y ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Default attachment name from the target: "<comm>-<pid>", sanitised. */
export function defaultName(comm: string, pid: number): string {
  const clean = comm.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 40) || 'proc';
  return `${clean}-${pid}`;
}

/** A process id given on the command line. */
export function parsePid(text: string): number {
  if (!/^\d{1,10}$/.test(text.trim())) throw new UsageError(`invalid --pid ${JSON.stringify(truncate(text))}: give a process id (a positive integer)`);
  const pid = Number(text.trim());
  if (pid < 1 || pid > 4194304) throw new UsageError(`invalid --pid ${pid}: process ids are 1-4194304`);
  return pid;
}

export interface AddressPrefix extends Prefix {
  text: string;
}

/** "127.0.0.1", "10.0.0.0/8" style, "::1", "fd00::/8" → a prefix of its family (addr: 16 bytes, IPv4 mapped). */
export function parseAddress(text: string): AddressPrefix {
  const [ip, plen, extra] = text.trim().split('/');
  const kind = isIP(ip ?? '');
  if (extra !== undefined || kind === 0) throw new UsageError(`invalid --address ${JSON.stringify(truncate(text))}: give an IPv4 or IPv6 address, optionally /PREFIX`);
  const max = kind === 4 ? 32 : 128;
  let len = max;
  if (plen !== undefined) {
    if (!/^\d{1,3}$/.test(plen) || Number(plen) > max) throw new UsageError(`invalid prefix length in --address ${text}: 0-${max} for IPv${kind}`);
    len = Number(plen);
  }
  const addr = new Uint8Array(16);
  if (kind === 4) {
    addr[10] = 0xff;
    addr[11] = 0xff;
    ip.split('.').forEach((o, i) => (addr[12 + i] = Number(o)));
  } else {
    addr.set(parseV6(ip));
  }
  // a v4-mapped IPv6 prefix (::ffff:a.b.c.d/96 and longer) is the IPv4 prefix it maps
  const mapped = kind === 6 && len >= 96 && addr.subarray(0, 10).every((b) => b === 0) && addr[10] === 0xff && addr[11] === 0xff;
  const family = kind === 4 || mapped ? 4 : 6;
  if (mapped) len -= 96;
  // zero host bits so the table key is canonical
  for (let bit = (family === 4 ? 96 : 0) + len; bit < 128; bit++) addr[bit >> 3] &= ~(0x80 >> (bit & 7));
  return {family, addr, len, text: prefixText({family, addr, len})};
}

/** Bytes of an IPv6 address already validated by net.isIP (handles "::" and a trailing IPv4). */
function parseV6(ip: string): Uint8Array {
  let text = ip;
  const tail: number[] = [];
  const v4 = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const o = v4[2].split('.').map(Number);
    tail.push((o[0] << 8) | o[1], (o[2] << 8) | o[3]);
    text = v4[1].endsWith('::') ? v4[1] : v4[1].slice(0, -1);
  }
  const words = (part: string): number[] => (part === '' ? [] : part.split(':').map((w) => parseInt(w, 16)));
  const halves = text.split('::');
  const head = words(halves[0]);
  const back = [...(halves.length > 1 ? words(halves[1]) : []), ...tail];
  const all = halves.length > 1 ? [...head, ...new Array(8 - head.length - back.length).fill(0), ...back] : [...head, ...back];
  const out = new Uint8Array(16);
  all.forEach((w, i) => {
    out[i * 2] = w >> 8;
    out[i * 2 + 1] = w & 0xff;
  });
  return out;
}

/** "127.0.0.1:8080", "[::1]:8080", "*:8080", ":8080", "8080" → address (undefined = every address, both families) and port. */
export function parseListener(text: string, flag = '--listener'): {address?: string; port: number} {
  if (/^\s*\d{1,5}\s*$/.test(text)) return parseListener(`:${text.trim()}`, flag);
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+|\*)?):(\d{1,5})$/.exec(text.trim());
  const port = m ? Number(m[3]) : NaN;
  // a bracketed address must be IPv6, a bare one IPv4 (or * / nothing: any address)
  const badAddress = m !== null && (m[1] !== undefined ? isIP(m[1]) !== 6 : m[2] !== undefined && m[2] !== '*' && isIP(m[2]) !== 4);
  if (!m || badAddress || port < 1 || port > MAX_PORT) throw new UsageError(`invalid ${flag} ${JSON.stringify(truncate(text))}: use ADDR:PORT, [V6ADDR]:PORT, :PORT or PORT`);
  const address = m[1] ?? (m[2] === '*' ? undefined : m[2]);
  return {address, port};
}
