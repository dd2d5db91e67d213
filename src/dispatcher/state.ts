/**
 * One sk_dispatch instance's kernel state: its maps (and link). Either the namespace's shared,
 * pinned dispatcher, or a foreground one owned by a running `skl attach --foreground`. Raw reads
 * and writes of services, their sockets, the port table and the prefix trie; what they mean is in
 * ./services.ts and ./bindings.ts.
 */
import {readFileSync} from 'node:fs';
import {fileURLToPath} from 'node:url';
import {BpfMap, u32Key, numPossibleCpus} from '../bpf/map.js';
import {BpfObject} from '../bpf/object.js';
import {BPF_ANY} from '../bpf/map.js';
import {BpfError, errorFor} from '../bpf/errors.js';
import {
  BINDING_KEY_SIZE,
  COUNTER_FIELDS,
  decodeBinding,
  decodeBindingKey,
  decodeInfo,
  decodeService,
  BINDING_SIZE,
  encodeInfo,
  encodeService,
  MAX_SERVICES,
  PORT_ENTRIES,
  SERVICE_SIZE,
  SVC_FREE,
  type BindingKey,
  type BindingTable,
  type FollowKey,
  decodeFollow,
  decodeFollowKey,
  encodeFollow,
  encodeFollowKey,
  type ServiceMeta,
} from './layout.js';

const EINVAL = 22;
const E2BIG = 7;

export const MAP_NAMES = ['add_ports', 'bindings', 'host_bindings', 'target_socket', 'counters', 'services', 'follow', 'skl_info'] as const;
/** The sock_ops program that follows services across restarts (pinned as follow_prog). */
export const FOLLOW_PROGRAM = 'sk_follow';
export type MapName = (typeof MAP_NAMES)[number];

/** The compiled dispatcher, shipped with the package (built by `npm run build:bpf`). */
export function dispatcherObjectBytes(): Buffer {
  return readFileSync(fileURLToPath(new URL('../../../bpf/sk_dispatch.o', import.meta.url)));
}

/**
 * Load the dispatcher object. Its follow program needs the netns cookie in sock_ops (Linux 5.15):
 * on an older kernel it is left out (`follow` false) and everything else works.
 */
export function loadDispatcher(): {obj: BpfObject; follow: boolean} {
  try {
    return {obj: BpfObject.load(dispatcherObjectBytes(), {name: 'sk_dispatch.o'}), follow: true};
  } catch (error) {
    if (!(error instanceof BpfError)) throw error;
    try {
      return {obj: BpfObject.load(dispatcherObjectBytes(), {name: 'sk_dispatch.o', skipPrograms: [FOLLOW_PROGRAM]}), follow: false};
    } catch {
      throw error;
    }
  }
}

export interface Counters {
  redirected: number;
  missed: number;
  /** sockets the follow program stored when the service listened again */
  retaken: number;
}

export interface ServiceRecord extends ServiceMeta {
  id: number;
}

export interface TrieEntry extends BindingKey {
  service: number;
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

  // ---- the dispatcher's own record ----

  info(): {layout: number; version: string} {
    const v = this.maps.skl_info.lookup(u32Key(0));
    return v ? decodeInfo(v) : {layout: 0, version: ''};
  }

  writeInfo(layout: number, version: string): void {
    this.maps.skl_info.update(u32Key(0), encodeInfo(layout, version));
  }

  // ---- services ----

  services(): ServiceRecord[] {
    const out: ServiceRecord[] = [];
    this.maps.services.lookupAll((keys, values, count) => {
      for (let i = 0; i < count; i++) {
        // state is the record's first field: decode only the services in use
        if (values.readUInt32LE(i * SERVICE_SIZE) === SVC_FREE) continue;
        out.push({...decodeService(values.subarray(i * SERVICE_SIZE, (i + 1) * SERVICE_SIZE)), id: keys.readUInt32LE(i * 4)});
      }
    }, MAX_SERVICES);
    return out;
  }

  freeService(): number | undefined {
    const used = new Set(this.services().map((s) => s.id));
    for (let s = 0; s < this.maps.services.maxEntries; s++) if (!used.has(s)) return s;
    return undefined;
  }

  writeService(id: number, meta: ServiceMeta): void {
    this.maps.services.update(u32Key(id), encodeService(meta));
  }

  clearService(id: number): void {
    this.maps.services.update(u32Key(id), Buffer.alloc(SERVICE_SIZE));
  }

  counters(id: number): Counters {
    const sums = this.maps.counters.sumPerCpuU64(u32Key(id)) ?? [];
    const c = {} as Counters;
    COUNTER_FIELDS.forEach((f, i) => (c[f] = Number(sums[i] ?? 0n)));
    return c;
  }

  resetCounters(id: number): void {
    this.maps.counters.update(u32Key(id), Buffer.alloc(this.maps.counters.perCpuStride * numPossibleCpus()));
  }

  // ---- sockets (target_socket: a SOCKMAP by destination index) ----

  /** Store (or atomically replace) a destination's socket. */
  setSocket(dest: number, fd: number): void {
    // from userspace a SOCKMAP update takes the socket's fd (lookups return its cookie)
    const v = Buffer.alloc(this.maps.target_socket.valueSize);
    v.writeUInt32LE(fd);
    this.maps.target_socket.update(u32Key(dest), v, BPF_ANY);
  }

  /** Remove a destination's socket; nothing to do when it is gone already (its target closed it). */
  deleteSocket(dest: number): void {
    try {
      this.maps.target_socket.delete(u32Key(dest));
    } catch (error) {
      // a SOCKMAP reports an empty slot as EINVAL, not ENOENT
      if (error instanceof BpfError && error.errno === EINVAL && !this.socketAlive(dest)) return;
      throw error;
    }
  }

  /** Whether the SOCKMAP still holds the destination's socket (the kernel drops it when the socket closes). */
  socketAlive(dest: number): boolean {
    return this.maps.target_socket.lookup(u32Key(dest)) !== undefined;
  }

  // ---- the port table (add_ports) ----

  /** add_ports as 32-bit words, when the map is memory-mapped (see bpf/sk_dispatch.c): entry i is words[i * stride]. */
  private portWords(): {words: Uint32Array; stride: number} | undefined {
    const mem = this.maps.add_ports.mapped();
    if (!mem) return undefined;
    // the kernel pads array values to 8 bytes
    return {words: new Uint32Array(mem.buffer, mem.byteOffset, mem.byteLength / 4), stride: this.maps.add_ports.elementStride / 4};
  }

  /** Every non-zero add_ports entry: index → value. */
  portTable(): Map<number, number> {
    const out = new Map<number, number>();
    const mem = this.portWords();
    if (mem) {
      const {words, stride} = mem;
      for (let i = 0, n = PORT_ENTRIES; i < n; i++) {
        const v = words[i * stride];
        if (v !== 0) out.set(i, v);
      }
      return out;
    }
    this.maps.add_ports.lookupAll((keys, values, count) => {
      for (let i = 0; i < count; i++) {
        const v = values.readUInt32LE(i * 4);
        if (v !== 0) out.set(keys.readUInt32LE(i * 4), v);
      }
    }, PORT_ENTRIES);
    return out;
  }

  /** add_ports[index]. */
  portValue(index: number): number {
    const mem = this.portWords();
    if (mem) return mem.words[index * mem.stride];
    return this.maps.add_ports.lookup(u32Key(index))?.readUInt32LE(0) ?? 0;
  }

  /** Set add_ports[index] = value for many indices (each store is seen by the program at once). */
  writePorts(entries: Iterable<[index: number, value: number]>): void {
    const list = [...entries];
    if (list.length === 0) return;
    for (const [k] of list) if (!(k >= 0 && k < PORT_ENTRIES)) throw errorFor('map update', E2BIG, `add_ports (index ${k})`);
    const mem = this.portWords();
    if (mem) {
      // one aligned 4-byte store per entry (what a single-element update does too)
      for (const [k, v] of list) mem.words[k * mem.stride] = v >>> 0;
      return;
    }
    const keys = Buffer.alloc(list.length * 4);
    const values = Buffer.alloc(list.length * 4);
    list.forEach(([k, v], i) => {
      keys.writeUInt32LE(k, i * 4);
      values.writeUInt32LE(v >>> 0, i * 4);
    });
    this.maps.add_ports.updateBatch(keys, values, list.length);
  }

  // ---- prefix bindings (the trie) and host bindings (the hash) ----

  /** Every binding of a table (the hash in batches; the trie, which has no batch lookup, key by key). */
  tableEntries(table: BindingTable): TrieEntry[] {
    const out: TrieEntry[] = [];
    const m = this.maps[table];
    if (table === 'host_bindings') {
      m.lookupAll((keys, values, count) => {
        for (let i = 0; i < count; i++) {
          const key = keys.subarray(i * BINDING_KEY_SIZE, (i + 1) * BINDING_KEY_SIZE);
          out.push({...decodeBindingKey(key), service: values.readUInt32LE(i * BINDING_SIZE)});
        }
      }, 16384);
      return out;
    }
    for (const key of m.keys()) {
      const v = m.lookup(key);
      if (!v) continue;
      out.push({...decodeBindingKey(key), service: decodeBinding(v).service});
    }
    return out;
  }

  /** The service holding exactly this key, if any (a trie lookup returns the longest match: compare lengths). */
  tableOwner(table: BindingTable, key: Buffer): number | undefined {
    const v = this.maps[table].lookup(key);
    if (!v) return undefined;
    const b = decodeBinding(v);
    return b.prefixLen === key.readUInt32LE(0) - 32 ? b.service : undefined;
  }

  tableInsert(table: BindingTable, key: Buffer, value: Buffer): void {
    this.maps[table].update(key, value, BPF_ANY);
  }

  /** Insert `count` packed keys and values at once (the hash; the trie has no batch update). */
  tableInsertBatch(table: BindingTable, keys: Buffer, values: Buffer, count: number): void {
    if (table === 'host_bindings') {
      this.maps[table].updateBatch(keys, values, count, BPF_ANY);
      return;
    }
    for (let i = 0; i < count; i++) this.tableInsert(table, keys.subarray(i * BINDING_KEY_SIZE, (i + 1) * BINDING_KEY_SIZE), values.subarray(i * BINDING_SIZE, (i + 1) * BINDING_SIZE));
  }

  // ---- followed listeners ----

  followEntries(): {key: FollowKey; service: number; dests: number; netnsCookie: bigint}[] {
    const out: {key: FollowKey; service: number; dests: number; netnsCookie: bigint}[] = [];
    for (const k of this.maps.follow.keys()) {
      const v = this.maps.follow.lookup(k);
      if (v) out.push({key: decodeFollowKey(k), ...decodeFollow(v)});
    }
    return out;
  }

  setFollow(key: FollowKey, service: number, dests: number, netnsCookie: bigint): void {
    this.maps.follow.update(encodeFollowKey(key), encodeFollow(service, dests, netnsCookie));
  }

  deleteFollow(key: FollowKey): void {
    this.maps.follow.delete(encodeFollowKey(key));
  }

  /** Delete a key (absent: nothing to do). */
  tableDelete(table: BindingTable, key: Buffer): void {
    this.maps[table].delete(key);
  }
}

export {BINDING_KEY_SIZE};
