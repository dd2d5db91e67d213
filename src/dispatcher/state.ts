/**
 * One sk_dispatch instance's kernel state: its maps (and link). Either the namespace's shared,
 * pinned dispatcher, or a foreground one owned by a running `skl attach --foreground`.
 */
import {readFileSync} from 'node:fs';
import {fileURLToPath} from 'node:url';
import {BpfMap, u32Key, numPossibleCpus} from '../bpf/map.js';
import {BPF_ANY} from '../bpf/map.js';
import {BpfError, errorFor} from '../bpf/errors.js';
import {SklError} from '../sys/errors.js';
import type {Proto} from '../sys/sockets.js';
import {
  ADDR_KEY_SIZE,
  COUNTER_FIELDS,
  decodeAddrKey,
  decodeMeta,
  encodeAddrKey,
  encodeMeta,
  indexProto,
  MAX_TARGETS,
  META_SIZE,
  PORT_ENTRIES,
  portIndex,
  SLOT_FREE,
  valueSlot,
  type TargetMeta,
} from './layout.js';

const EINVAL = 22;
const ENOSPC = 28;
const E2BIG = 7;

export const MAP_NAMES = ['add_ports', 'target_socket', 'counters', 'allowed_addrs', 'target_meta'] as const;
export type MapName = (typeof MAP_NAMES)[number];

/** The compiled dispatcher, shipped with the package (built by `npm run build:bpf`). */
export function dispatcherObjectBytes(): Buffer {
  return readFileSync(fileURLToPath(new URL('../../../bpf/sk_dispatch.o', import.meta.url)));
}

export interface Counters {
  redirected: number;
  missed: number;
  filtered: number;
}

export interface SlotRecord extends TargetMeta {
  slot: number;
}

export class DispatcherState {
  constructor(
    readonly kind: 'pinned' | 'foreground',
    readonly maps: Record<MapName, BpfMap>,
    /** id of the sk_lookup link (0 if unknown: detached or damaged) */
    readonly linkId: number,
    /** what is wrong with the pinned state, when something is */
    readonly damage?: string,
  ) {}

  close(): void {
    for (const m of Object.values(this.maps)) m.close();
  }

  // ---- reading ----

  /** Every claimed (protocol, port) index → slot, read with one batch lookup. */
  portTable(): Map<number, number> {
    const owners = new Map<number, number>();
    const words = this.portWords();
    if (words) {
      // add_ports is memory-mapped: read it in place, no syscall
      const stride = this.maps.add_ports.elementStride / 4;
      for (let i = 0, n = this.maps.add_ports.maxEntries; i < n; i++) {
        const v = words[i * stride];
        if (v !== 0) owners.set(i, valueSlot(v));
      }
      return owners;
    }
    this.maps.add_ports.lookupAll((keys, values, count) => {
      for (let i = 0; i < count; i++) {
        const v = values.readUInt32LE(i * 4);
        if (v !== 0) owners.set(keys.readUInt32LE(i * 4), valueSlot(v));
      }
    }, PORT_ENTRIES);
    return owners;
  }

  /** Raw add_ports values by index (for rewriting flags). */
  portValues(indices: Iterable<number>): Map<number, number> {
    const out = new Map<number, number>();
    for (const i of indices) out.set(i, this.maps.add_ports.lookup(u32Key(i))!.readUInt32LE(0));
    return out;
  }

  slots(): SlotRecord[] {
    const out: SlotRecord[] = [];
    this.maps.target_meta.lookupAll((_keys, values, count) => {
      for (let i = 0; i < count; i++) {
        // state is the record's first field: decode only the slots in use
        if (values.readUInt32LE(i * META_SIZE) === SLOT_FREE) continue;
        const meta = decodeMeta(values.subarray(i * META_SIZE, (i + 1) * META_SIZE));
        out.push({...meta, slot: _keys.readUInt32LE(i * 4)});
      }
    }, MAX_TARGETS);
    return out;
  }

  freeSlot(): number | undefined {
    const used = new Set(this.slots().map((s) => s.slot));
    for (let s = 0; s < MAX_TARGETS; s++) if (!used.has(s)) return s;
    return undefined;
  }

  counters(slot: number): Counters {
    const sums = this.maps.counters.sumPerCpuU64(u32Key(slot)) ?? [0n, 0n, 0n];
    const c = {} as Counters;
    COUNTER_FIELDS.forEach((f, i) => (c[f] = Number(sums[i] ?? 0n)));
    return c;
  }

  /** Whether the SOCKMAP still holds the slot's socket (the kernel drops it when the socket closes). */
  socketAlive(slot: number): boolean {
    return this.maps.target_socket.lookup(u32Key(slot)) !== undefined;
  }

  filters(slot: number): {addr: Uint8Array; prefixLen: number}[] {
    const out: {addr: Uint8Array; prefixLen: number}[] = [];
    for (const key of this.maps.allowed_addrs.keys()) {
      const k = decodeAddrKey(key);
      if (k.slot === slot) out.push(k);
    }
    return out;
  }

  // ---- writing (callers hold the lock) ----

  writeMeta(slot: number, meta: TargetMeta): void {
    this.maps.target_meta.update(u32Key(slot), encodeMeta(meta));
  }

  clearMeta(slot: number): void {
    this.maps.target_meta.update(u32Key(slot), Buffer.alloc(META_SIZE));
  }

  /** Store (or atomically replace) the slot's socket. */
  setSocket(slot: number, fd: number): void {
    // from userspace a SOCKMAP update takes the socket's fd (lookups return its cookie)
    const v = Buffer.alloc(this.maps.target_socket.valueSize);
    v.writeUInt32LE(fd);
    this.maps.target_socket.update(u32Key(slot), v, BPF_ANY);
  }

  /** Remove the slot's socket; nothing to do when it is gone already (its target closed it). */
  deleteSocket(slot: number): void {
    try {
      this.maps.target_socket.delete(u32Key(slot));
    } catch (error) {
      // a SOCKMAP reports an empty slot as EINVAL, not ENOENT
      if (error instanceof BpfError && error.errno === EINVAL && !this.socketAlive(slot)) return;
      throw error;
    }
  }

  resetCounters(slot: number): void {
    this.maps.counters.update(u32Key(slot), Buffer.alloc(this.maps.counters.perCpuStride * numPossibleCpus()));
  }

  /** Make the slot's filter exactly `prefixes`: the new ones first, so there is no moment it drops everything. */
  setFilters(slot: number, prefixes: {addr: Uint8Array; prefixLen: number}[]): void {
    this.addFilters(slot, prefixes);
    this.pruneFilters(slot, prefixes);
  }

  /**
   * Add the prefixes the slot's filter lacks. All or nothing: when the table (shared by every
   * slot) is full, what was added is removed again and the filter is as it was.
   */
  addFilters(slot: number, prefixes: {addr: Uint8Array; prefixLen: number}[]): void {
    const have = new Set(this.filterKeys(slot).map((k) => k.toString('hex')));
    const added: Buffer[] = [];
    const one = Buffer.from([1]);
    try {
      for (const p of prefixes) {
        const key = encodeAddrKey(slot, p.addr, p.prefixLen);
        if (have.has(key.toString('hex'))) continue;
        this.maps.allowed_addrs.update(key, one);
        have.add(key.toString('hex'));
        added.push(key);
      }
    } catch (error) {
      for (const k of added) this.maps.allowed_addrs.delete(k);
      if (error instanceof BpfError && error.errno === ENOSPC) {
        throw new SklError(`too many --address prefixes: the namespace's filters hold ${this.maps.allowed_addrs.maxEntries} in all`);
      }
      throw error;
    }
  }

  /** Remove the slot's filter prefixes that are not in `keep`. */
  pruneFilters(slot: number, keep: {addr: Uint8Array; prefixLen: number}[]): void {
    const wanted = new Set(keep.map((p) => encodeAddrKey(slot, p.addr, p.prefixLen).toString('hex')));
    for (const k of this.filterKeys(slot)) if (!wanted.has(k.toString('hex'))) this.maps.allowed_addrs.delete(k);
  }

  clearFilters(slot: number): void {
    this.pruneFilters(slot, []);
  }

  private filterKeys(slot: number): Buffer[] {
    return [...this.maps.allowed_addrs.keys()].filter((k) => decodeAddrKey(k).slot === slot);
  }

  /** Set add_ports[index] = value for many indices in one batch syscall. */
  writePorts(entries: [index: number, value: number][]): void {
    if (entries.length === 0) return;
    const words = this.portWords();
    const max = this.maps.add_ports.maxEntries;
    if (words) {
      // add_ports is memory-mapped: one aligned 4-byte store per entry (what a single-element
      // update does too); the program sees each entry as soon as it is stored
      // (indexed loops: this runs once per command, before the JIT has warmed up)
      const stride = this.maps.add_ports.elementStride / 4;
      const n = entries.length;
      for (let i = 0; i < n; i++) {
        const k = entries[i][0];
        if (!(k >= 0 && k < max)) throw errorFor('map update', E2BIG, `add_ports (index ${k})`);
      }
      for (let i = 0; i < n; i++) {
        const e = entries[i];
        words[e[0] * stride] = e[1] >>> 0;
      }
      return;
    }
    const keys = Buffer.alloc(entries.length * 4);
    const values = Buffer.alloc(entries.length * 4);
    const k32 = new Uint32Array(keys.buffer, keys.byteOffset, entries.length);
    const v32 = new Uint32Array(values.buffer, values.byteOffset, entries.length);
    for (let i = 0; i < entries.length; i++) {
      k32[i] = entries[i][0]; // little-endian host (skl refuses others)
      v32[i] = entries[i][1] >>> 0;
    }
    this.maps.add_ports.updateBatch(keys, values, entries.length);
  }

  /** add_ports as 32-bit words, when the map is memory-mapped (see bpf/sk_dispatch.c). */
  private portWords(): Uint32Array | undefined {
    const mem = this.maps.add_ports.mapped();
    return mem && new Uint32Array(mem.buffer, mem.byteOffset, mem.byteLength / 4);
  }

  /** Ports of a slot, grouped by protocol. */
  portsOf(slot: number, table = this.portTable()): Record<Proto, number[]> {
    const out: Record<Proto, number[]> = {tcp: [], udp: []};
    for (const [index, s] of table) if (s === slot) out[indexProto(index)].push(index & 0xffff);
    out.tcp.sort((a, b) => a - b);
    out.udp.sort((a, b) => a - b);
    return out;
  }

  /** Remove everything a slot holds (ports first, so nothing steers to a half-cleared slot). */
  clearSlot(slot: number, table = this.portTable()): void {
    const mine: [number, number][] = [];
    for (const [index, s] of table) if (s === slot) mine.push([index, 0]);
    this.writePorts(mine);
    this.deleteSocket(slot);
    this.clearFilters(slot);
    this.resetCounters(slot);
    this.clearMeta(slot);
  }
}

export {ADDR_KEY_SIZE, portIndex};
