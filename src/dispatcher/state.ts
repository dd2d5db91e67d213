/**
 * One sk_dispatch instance's kernel state: its maps (and link). Either the namespace's shared,
 * pinned dispatcher, or a foreground one owned by a running `skl attach --foreground`. Raw reads
 * and writes of services, their sockets, the port table and the bindings hash; what they mean is in
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
  MAX_BINDINGS,
  MAX_LENS,
  PORT_LENS_AT,
  PORT_MASKS_AT,
  PORT_SIZE,
  type PortLen,
  REPLY_COUNTER_FIELDS,
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
  SPARES,
  SVC_FREE,
  type BindingKey,
  type FollowKey,
  decodeFollow,
  decodeFollowKey,
  encodeFollow,
  encodeFollowKey,
  type ServiceMeta,
} from './layout.js';

const EINVAL = 22;
const E2BIG = 7;

/** The maps skl reads and writes (all of them maps of the sk_lookup program, so a foreground dispatcher's are found from its link). */
export const MAP_NAMES = [
  'add_ports',
  'binding_tables',
  'target_socket',
  'spare_socket',
  'spare_next',
  'counters',
  'services',
  'follow',
  'follow_cgroups',
  'udp_flows',
  'reply_counters',
  'skl_info',
] as const;
/** Maps only the kernel uses (pinned with the others). */
export const KERNEL_MAP_NAMES = ['sock_cgroup'] as const;
/** The sk_lookup program. */
export const PROGRAM_NAME = 'sk_dispatch';
/** The sock_ops program that follows services across restarts (pinned as follow_prog). */
export const FOLLOW_PROGRAM = 'sk_follow';
/** The programs besides sk_dispatch, each left out on a kernel that cannot load it. */
export const OPTIONAL_PROGRAMS = [FOLLOW_PROGRAM, 'sk_follow_sock', 'sk_follow_udp', 'sk_reply'] as const;
export type OptionalProgram = (typeof OPTIONAL_PROGRAMS)[number];
export type MapName = (typeof MAP_NAMES)[number];
const BPF_MAP_TYPE_HASH = 1;
const BPF_F_NO_PREALLOC = 1;

/** The compiled dispatcher, shipped with the package (built by `npm run build:bpf`). */
export function dispatcherObjectBytes(): Buffer {
  return readFileSync(fileURLToPath(new URL('../../../bpf/sk_dispatch.o', import.meta.url)));
}

/**
 * Load the dispatcher object. Programs besides sk_dispatch may need newer kernels (sk_follow the
 * netns cookie in sock_ops, 5.15; sk_follow_udp SOCKMAP updates from tc, 5.10; see skl doctor): on a
 * kernel that cannot load one, it is left out (absent from `loaded`) and everything else works.
 */
export function loadDispatcher(
  opts: {reuseMaps?: Record<string, BpfMap>; mapsOnly?: boolean; only?: OptionalProgram} = {},
): {obj: BpfObject; follow: boolean; loaded: Set<OptionalProgram>} {
  const {reuseMaps} = opts;
  const load = (skip: readonly string[]): BpfObject => BpfObject.load(dispatcherObjectBytes(), {name: 'sk_dispatch.o', skipPrograms: [...skip], reuseMaps});
  // the maps and sk_dispatch only: a new dispatcher (the others load when first needed:
  // ensureProgram in ./store.ts), an image of the state (a journal)
  if (opts.mapsOnly) return {obj: load(OPTIONAL_PROGRAMS), follow: false, loaded: new Set()};
  // one optional program, on the maps of a dispatcher (reuseMaps): throws when the kernel cannot load it
  if (opts.only) {
    const only = opts.only;
    return {obj: load([PROGRAM_NAME, ...OPTIONAL_PROGRAMS.filter((p) => p !== only)]), follow: only === FOLLOW_PROGRAM, loaded: new Set([only])};
  }
  const result = (obj: BpfObject, skipped: readonly string[]) => {
    const loaded = new Set(OPTIONAL_PROGRAMS.filter((p) => !skipped.includes(p)));
    return {obj, follow: loaded.has(FOLLOW_PROGRAM), loaded};
  };
  try {
    return result(load([]), []);
  } catch (error) {
    if (!(error instanceof BpfError)) throw error;
    // which optional programs this kernel refuses: each on its own
    const refused = OPTIONAL_PROGRAMS.filter((p) => {
      try {
        load(OPTIONAL_PROGRAMS.filter((q) => q !== p)).close();
        return false;
      } catch {
        return true;
      }
    });
    try {
      return result(load(refused), refused);
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

export interface ReplyCounters {
  /** datagrams from an extra port that recorded (or refreshed) their flow */
  flows: number;
  /** replies that left from the extra port */
  rewritten: number;
}

export interface ServiceRecord extends ServiceMeta {
  id: number;
}

export interface TrieEntry extends BindingKey {
  service: number;
}

/** A port entry's list of prefix lengths for a family (see struct skl_port). */
function readLens(v: Uint8Array, family: 4 | 6): PortLen[] {
  const at = PORT_LENS_AT[family];
  const {own, all} = PORT_MASKS_AT[family];
  const out: PortLen[] = [];
  for (let i = 0; i < MAX_LENS && v[at + i] !== 0; i++) out.push({len: v[at + i], own: (v[own] & (1 << i)) !== 0, all: (v[all] & (1 << i)) !== 0});
  return out;
}

/**
 * Rewrite one struct skl_port's list for a family into `target` (at most MAX_LENS lengths, longest
 * first), byte by byte in `v` (the entry as memory the program reads meanwhile), so that every
 * state in between keeps each length that stays findable with the kinds it has before and after:
 * a position is made inert (no kind) before it is rewritten, a length moves by being copied first
 * (a duplicate is harmless), never by being overwritten, and a kind that changes is set before the
 * old one is cleared. (test/state-ports.test.ts checks every state in between.)
 */
export function rewritePortLens(v: Uint8Array, family: 4 | 6, target: readonly PortLen[]): void {
  const at = PORT_LENS_AT[family];
  const {own: O, all: A} = PORT_MASKS_AT[family];
  const put = (p: number, e: PortLen | undefined): void => {
    v[O] &= ~(1 << p);
    v[A] &= ~(1 << p);
    v[at + p] = e ? e.len : 0;
    if (e?.own) v[O] |= 1 << p;
    if (e?.all) v[A] |= 1 << p;
  };
  const want = new Map(target.map((e) => [e.len, e]));
  let cur = readLens(v, family);
  // lengths that go: the tail moves up over them
  for (let k = cur.findIndex((e) => !want.has(e.len)); k >= 0; k = cur.findIndex((e) => !want.has(e.len))) {
    for (let p = k; p < cur.length - 1; p++) put(p, cur[p + 1]);
    put(cur.length - 1, undefined);
    cur = readLens(v, family);
  }
  // lengths that stay: their kinds, the new one set before the old one is cleared
  cur.forEach((e, p) => {
    const w = want.get(e.len)!;
    if (w.own) v[O] |= 1 << p;
    if (w.all) v[A] |= 1 << p;
    if (!w.own) v[O] &= ~(1 << p);
    if (!w.all) v[A] &= ~(1 << p);
  });
  // read again: a length moved down below copies its kinds as they are now (copying the ones read
  // before this step put a staying length back to its old kinds when a longer one came)
  cur = readLens(v, family);
  // lengths that come: the tail moves down to make room, longest first
  for (const e of [...want.values()].sort((x, y) => y.len - x.len)) {
    if (cur.some((c) => c.len === e.len)) continue;
    const k = cur.findIndex((c) => c.len < e.len);
    const pos = k < 0 ? cur.length : k;
    for (let p = cur.length; p > pos; p--) put(p, cur[p - 1]);
    put(pos, e);
    cur = readLens(v, family);
  }
}

/** Entries of add_ports compared with zero at once by portTable. */
const PORT_BLOCK = 512;

/** Inside withServiceSnapshots (depth > 0), services' records read since the last write (epoch) are reused. */
let snapshotDepth = 0;
let snapshotEpoch = 0;
const keptRecords = new Map<number | DispatcherState, {epoch: number; records: {id: number; bytes: Buffer}[]}>();

/**
 * Run `fn` while no other process writes services' records (under skl's lock): their reads are
 * kept between writes of this process (any write, through any DispatcherState, forgets them all).
 */
export async function withServiceSnapshots<T>(fn: () => Promise<T> | T): Promise<T> {
  snapshotDepth++;
  try {
    return await fn();
  } finally {
    snapshotDepth--;
    snapshotEpoch++;
    if (snapshotDepth === 0) keptRecords.clear();
  }
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

  /** the bindings hash, once opened or created */
  private table: BpfMap | undefined;

  close(): void {
    for (const m of Object.values(this.maps)) m.close();
    this.table?.close();
    this.table = undefined;
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
    return this.serviceRecords().map(({id, bytes}) => ({...decodeService(bytes), id}));
  }

  /**
   * The records in use (state ≠ SVC_FREE), raw: one batch read of all 1,024 slots (≈1 ms of CPU
   * time), kept while the caller holds skl's lock (see withServiceSnapshots) until any service is
   * written. A command reads them up to seven times (attach); nothing else writes them meanwhile (no other skl
   * does, and the programs only read them).
   */
  serviceRecords(): readonly {id: number; bytes: Buffer}[] {
    // kept by the map's kernel id where known: the same pinned map, opened again by another part of the command
    const key = this.maps.services.id || this;
    const kept = keptRecords.get(key);
    if (kept && kept.epoch === snapshotEpoch && snapshotDepth > 0) return kept.records;
    const records: {id: number; bytes: Buffer}[] = [];
    this.maps.services.lookupAll((keys, values, count) => {
      // state is the record's first field, 4-aligned in every record (SERVICE_SIZE % 4 === 0; the
      // values are a Buffer.alloc, never a slice of Node's pool)
      const states = new Uint32Array(values.buffer, values.byteOffset, (count * SERVICE_SIZE) / 4);
      for (let i = 0, w = SERVICE_SIZE / 4; i < count; i++) {
        if (states[i * w] !== SVC_FREE) records.push({id: keys.readUInt32LE(i * 4), bytes: Buffer.from(values.subarray(i * SERVICE_SIZE, (i + 1) * SERVICE_SIZE))});
      }
    }, MAX_SERVICES);
    if (snapshotDepth > 0) keptRecords.set(key, {epoch: snapshotEpoch, records});
    return records;
  }

  freeService(): number | undefined {
    const used = new Set(this.services().map((s) => s.id));
    for (let s = 0; s < this.maps.services.maxEntries; s++) if (!used.has(s)) return s;
    return undefined;
  }

  writeService(id: number, meta: ServiceMeta): void {
    const bytes = encodeService(meta);
    this.maps.services.update(u32Key(id), bytes);
    this.keepWritten(id, bytes);
  }

  clearService(id: number): void {
    this.maps.services.update(u32Key(id), Buffer.alloc(SERVICE_SIZE));
    this.keepWritten(id, undefined);
  }

  /** A record written: the kept records of the map follow it (a map known only to this instance: every kept read is forgotten). */
  private keepWritten(id: number, bytes: Buffer | undefined): void {
    const kept = this.maps.services.id ? keptRecords.get(this.maps.services.id) : undefined;
    if (!kept || kept.epoch !== snapshotEpoch) {
      snapshotEpoch++;
      return;
    }
    const records = kept.records.filter((r) => r.id !== id);
    if (bytes && bytes.readUInt32LE(0) !== SVC_FREE) records.push({id, bytes: Buffer.from(bytes)});
    kept.records = records.sort((a, b) => a.id - b.id);
  }

  counters(id: number): Counters {
    const sums = this.maps.counters.sumPerCpuU64(u32Key(id)) ?? [];
    const c = {} as Counters;
    COUNTER_FIELDS.forEach((f, i) => (c[f] = Number(sums[i] ?? 0n)));
    return c;
  }

  resetCounters(id: number): void {
    this.maps.counters.update(u32Key(id), Buffer.alloc(this.maps.counters.perCpuStride * numPossibleCpus()));
    this.maps.reply_counters.update(u32Key(id), Buffer.alloc(this.maps.reply_counters.perCpuStride * numPossibleCpus()));
  }

  replyCounters(id: number): ReplyCounters {
    const sums = this.maps.reply_counters.sumPerCpuU64(u32Key(id)) ?? [];
    const c = {} as ReplyCounters;
    REPLY_COUNTER_FIELDS.forEach((f, i) => (c[f] = Number(sums[i] ?? 0n)));
    return c;
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

  // ---- spare sockets (spare_socket: SPARES per destination, tried when its socket is gone) ----

  /** Store a socket (fd) in spare slot k of a destination. */
  setSpare(dest: number, k: number, fd: number): void {
    const v = Buffer.alloc(this.maps.spare_socket.valueSize);
    v.writeUInt32LE(fd);
    this.maps.spare_socket.update(u32Key(dest * SPARES + k), v, BPF_ANY);
  }

  /** Empty a destination's spare slots, and start its turn (spare_next) at `next`. */
  clearSpares(dest: number, next = 0): void {
    for (let k = 0; k < SPARES; k++) {
      const key = u32Key(dest * SPARES + k);
      if (this.maps.spare_socket.lookup(key) === undefined) continue;
      try {
        this.maps.spare_socket.delete(key);
      } catch (error) {
        // emptied meanwhile (its socket closed): a SOCKMAP says EINVAL
        if (!(error instanceof BpfError && error.errno === EINVAL)) throw error;
      }
    }
    const n = Buffer.alloc(4);
    n.writeUInt32LE(next);
    this.maps.spare_next.update(u32Key(dest), n);
  }

  /** How many spare slots of a destination hold a socket. */
  sparesAlive(dest: number): number {
    let n = 0;
    for (let k = 0; k < SPARES; k++) if (this.maps.spare_socket.lookup(u32Key(dest * SPARES + k)) !== undefined) n++;
    return n;
  }

  /** Whether the destination is served: its socket, or a spare one (what the program tries). */
  destAlive(dest: number): boolean {
    return this.socketAlive(dest) || this.sparesAlive(dest) > 0;
  }

  // ---- the port table (add_ports: struct skl_port per (protocol, port)) ----

  /** add_ports as bytes, when the map is memory-mapped (see bpf/sk_dispatch.c): entry i at i * stride. */
  private portMemory(): {mem: Buffer; words: Uint32Array; stride: number} | undefined {
    const mem = this.maps.add_ports.mapped();
    if (!mem) return undefined;
    // the kernel pads array values to 8 bytes
    return {mem, words: new Uint32Array(mem.buffer, mem.byteOffset, mem.byteLength / 4), stride: this.maps.add_ports.elementStride};
  }

  /** Every (protocol, port) with a non-zero services word or a prefix length: index → services word. */
  portTable(): Map<number, number> {
    const out = new Map<number, number>();
    const m = this.portMemory();
    if (m) {
      const {mem, words, stride} = m;
      const step = stride / 4;
      // most of the 131,072 entries are zero: whole blocks of them are skipped by one memcmp (a scan
      // entry by entry cost `skl status` ≈5 ms)
      const zero = Buffer.alloc(PORT_BLOCK * stride);
      for (let b = 0; b < PORT_ENTRIES; b += PORT_BLOCK) {
        const end = Math.min(b + PORT_BLOCK, PORT_ENTRIES);
        if (mem.compare(zero, 0, (end - b) * stride, b * stride, end * stride) === 0) continue;
        for (let i = b; i < end; i++) {
          const v = words[i * step];
          if (v !== 0 || mem[i * stride + PORT_LENS_AT[4]] !== 0 || mem[i * stride + PORT_LENS_AT[6]] !== 0) out.set(i, v);
        }
      }
      return out;
    }
    this.maps.add_ports.lookupAll((keys, values, count) => {
      for (let i = 0; i < count; i++) {
        const at = i * PORT_SIZE;
        const v = values.readUInt32LE(at);
        if (v !== 0 || values[at + PORT_LENS_AT[4]] !== 0 || values[at + PORT_LENS_AT[6]] !== 0) out.set(keys.readUInt32LE(i * 4), v);
      }
    }, PORT_ENTRIES);
    return out;
  }

  /** The services word of add_ports[index]. */
  portValue(index: number): number {
    const m = this.portMemory();
    if (m) return m.words[(index * m.stride) / 4];
    return this.maps.add_ports.lookup(u32Key(index))?.readUInt32LE(0) ?? 0;
  }

  /** add_ports[index] as bytes: a view of the mapped memory (writes are live), else a copy (written back by `flush`). */
  private portBytes(index: number): {v: Uint8Array; flush: () => void} {
    const m = this.portMemory();
    if (m) return {v: m.mem.subarray(index * m.stride, index * m.stride + PORT_SIZE), flush: () => {}};
    const v = Buffer.alloc(PORT_SIZE);
    this.maps.add_ports.lookup(u32Key(index))?.copy(v, 0, 0, PORT_SIZE);
    return {v, flush: () => this.maps.add_ports.update(u32Key(index), v)};
  }

  /** Set the services word of add_ports[index] for many indices (each store is seen by the program at once). */
  writePorts(entries: Iterable<[index: number, value: number]>): void {
    const list = [...entries];
    if (list.length === 0) return;
    for (const [k] of list) if (!(k >= 0 && k < PORT_ENTRIES)) throw errorFor('map update', E2BIG, `add_ports (index ${k})`);
    const m = this.portMemory();
    if (m) {
      // one aligned 4-byte store per entry (what a single-element update does too)
      const step = m.stride / 4;
      for (const [k, v] of list) m.words[k * step] = v >>> 0;
      return;
    }
    for (const [k, v] of list) {
      const value = this.maps.add_ports.lookup(u32Key(k)) ?? Buffer.alloc(PORT_SIZE);
      value.writeUInt32LE(v >>> 0, 0);
      this.maps.add_ports.update(u32Key(k), value.subarray(0, PORT_SIZE));
    }
  }

  /** The prefix lengths add_ports[index] lists for a family (longest first). */
  portLens(index: number, family: 4 | 6): PortLen[] {
    return readLens(this.portBytes(index).v, family);
  }

  /**
   * Make add_ports[index]'s list for a family `target` (at most MAX_LENS lengths), one step at a
   * time, so that the program, reading the list while it changes, always finds every length that
   * stays, with its right kinds (rewritePortLens).
   */
  writePortLens(index: number, family: 4 | 6, target: readonly PortLen[]): void {
    if (target.length > MAX_LENS) throw errorFor('map update', E2BIG, `add_ports (index ${index}: ${target.length} prefix lengths)`);
    const {v, flush} = this.portBytes(index);
    rewritePortLens(v, family, target);
    flush();
  }

  // ---- bindings of a local prefix (a hash, created with the first one) ----

  /** The bindings hash: opened from binding_tables, or created when `create` (else undefined). */
  bindingTable(create = false): BpfMap | undefined {
    if (this.table) return this.table;
    const v = this.maps.binding_tables.lookup(u32Key(0));
    if (v) {
      // a map-in-map lookup from userspace gives the inner map's id
      this.table = BpfMap.openById(v.readUInt32LE(0));
      return this.table;
    }
    if (!create) return undefined;
    const t = BpfMap.create(BPF_MAP_TYPE_HASH, 'bindings', BINDING_KEY_SIZE, BINDING_SIZE, MAX_BINDINGS, BPF_F_NO_PREALLOC);
    try {
      this.maps.binding_tables.update(u32Key(0), u32Key(t.fd));
    } catch (error) {
      t.close();
      throw error;
    }
    this.table = t;
    return t;
  }

  /** Every binding of a local prefix, in batches. */
  tableEntries(): TrieEntry[] {
    const out: TrieEntry[] = [];
    this.bindingTable()?.lookupAll((keys, values, count) => {
      for (let i = 0; i < count; i++) {
        const key = keys.subarray(i * BINDING_KEY_SIZE, (i + 1) * BINDING_KEY_SIZE);
        out.push({...decodeBindingKey(key), service: values.readUInt32LE(i * BINDING_SIZE)});
      }
    }, 16384);
    return out;
  }

  /** The service holding exactly this key, if any. */
  tableOwner(key: Buffer): number | undefined {
    const v = this.bindingTable()?.lookup(key);
    return v ? decodeBinding(v).service : undefined;
  }

  /** Insert `count` packed keys and values at once. */
  tableInsertBatch(keys: Buffer, values: Buffer, count: number): void {
    this.bindingTable(true)!.updateBatch(keys, values, count, BPF_ANY);
  }

  /** Delete a key (absent: nothing to do). */
  tableDelete(key: Buffer): void {
    this.bindingTable()?.delete(key);
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
}

export {BINDING_KEY_SIZE};
