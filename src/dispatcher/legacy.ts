/**
 * Layout 0: the pinned state skl 0.1.0 wrote (no skl_info map). Read only: its attachments as
 * services and bindings of today's model, for `skl status`/`metrics` and for `skl upgrade`.
 *
 * skl 0.1.0's maps: add_ports (ARRAY of (protocol, port) → (flags << 16) | (slot + 1); flags
 * V4 1<<16, V6 1<<17, FILTER 1<<18), target_socket (SOCKMAP by slot), counters (per-CPU
 * {redirected, missed, filtered}), allowed_addrs (LPM trie {prefixlen = 32 + over-128-bit length,
 * slot, v4-mapped address} → 1), target_meta (ARRAY of 152-byte records, below).
 */
import {existsSync} from 'node:fs';
import {BpfMap, u32Key} from '../bpf/map.js';
import type {Family, Proto} from '../sys/sockets.js';
import {
  anyPrefix,
  BINDING_KEY_SIZE,
  BINDING_SIZE,
  decodeBinding,
  decodeBindingKey,
  decodeFollow,
  decodeFollowKey,
  decodeInfo,
  decodeService,
  destKey,
  DESTS_PER_SERVICE,
  indexProto,
  LAYOUT,
  portService,
  SERVICE_SIZE,
  SVC_F_FOLLOW,
  SVC_READY,
  type FollowKey,
  type Prefix,
  type ServiceMeta,
  type SocketMeta,
} from './layout.js';
import type {Binding, BindingSpec} from './bindings.js';

export const LEGACY_MAP_NAMES = ['add_ports', 'target_socket', 'counters', 'allowed_addrs', 'target_meta'] as const;
export type LegacyMapName = (typeof LEGACY_MAP_NAMES)[number];

const MAX_SLOTS = 256;
const META_SIZE = 152;
const F_V4 = 1 << 16;
const F_V6 = 1 << 17;
const F_FILTER = 1 << 18;
const SLOT_READY = 1;

/** An older layout's state, read only: its services in today's model. */
export interface OlderState {
  readonly kind: 'pinned' | 'foreground';
  readonly layout: number;
  services(): LegacyService[];
  close(): void;
}

/** Whether a pinned directory holds skl 0.1.0's layout. */
export const isLegacyDir = (dir: string): boolean => !existsSync(`${dir}/skl_info`) && existsSync(`${dir}/target_meta`);

/** Whether a pinned directory holds the state of an older layout than this skl's (0.1.0's, or an skl_info saying so). */
export function isOlderLayoutDir(dir: string): boolean {
  if (isLegacyDir(dir)) return true;
  if (!existsSync(`${dir}/skl_info`)) return false;
  const m = BpfMap.openPinned(`${dir}/skl_info`);
  try {
    const v = m.lookup(u32Key(0));
    return v !== undefined && decodeInfo(v).layout < LAYOUT;
  } finally {
    m.close();
  }
}

export interface LegacyService {
  /** the 0.1.0 slot */
  slot: number;
  /** the service it is in today's model (state READY) */
  meta: ServiceMeta;
  bindings: BindingSpec[];
  redirected: number;
  missed: number;
  /** the slot's socket is still in the SOCKMAP */
  alive: boolean;
  /** per destination (service * DESTS_PER_SERVICE + i): its socket is still in the SOCKMAP (layouts 1 and 2) */
  destAlive?: boolean[];
  /** sockets the follow program stored (layout 2) */
  retaken?: number;
  /** a followed service's listeners (layout 2) */
  followed?: {key: FollowKey; dests: number}[];
}

function cstr(b: Buffer, at: number, size: number): string {
  const part = b.subarray(at, at + size);
  const end = part.indexOf(0);
  return part.subarray(0, end < 0 ? size : end).toString('utf8');
}

/** A 0.1.0 filter prefix (over the v4-mapped 128-bit space) as a prefix of its family. */
function legacyPrefix(addr: Uint8Array, len128: number): Prefix {
  const mapped = addr.subarray(0, 10).every((b) => b === 0) && addr[10] === 0xff && addr[11] === 0xff && len128 >= 96;
  return mapped ? {family: 4, addr: new Uint8Array(addr), len: len128 - 96} : {family: 6, addr: new Uint8Array(addr), len: len128};
}

export class LegacyState implements OlderState {
  readonly layout = 0;
  constructor(
    readonly kind: 'pinned' | 'foreground',
    readonly maps: Record<LegacyMapName, BpfMap>,
    /** id of its sk_lookup link (foreground ones) */
    readonly linkId = 0,
  ) {}

  static openPinned(dir: string): LegacyState {
    const maps = {} as Record<LegacyMapName, BpfMap>;
    try {
      for (const n of LEGACY_MAP_NAMES) maps[n] = BpfMap.openPinned(`${dir}/${n}`);
    } catch (error) {
      for (const m of Object.values(maps)) m.close();
      throw error;
    }
    return new LegacyState('pinned', maps);
  }

  close(): void {
    for (const m of Object.values(this.maps)) m.close();
  }

  /** Every complete attachment, as a service of today's model with its bindings. */
  services(): LegacyService[] {
    const slots = new Map<number, Buffer>();
    for (let slot = 0; slot < MAX_SLOTS; slot++) {
      const v = this.maps.target_meta.lookup(u32Key(slot));
      if (v && v.readUInt32LE(0) === SLOT_READY) slots.set(slot, Buffer.from(v.subarray(0, META_SIZE)));
    }
    if (slots.size === 0) return [];
    const ports = new Map<number, {index: number; flags: number}[]>();
    this.maps.add_ports.lookupAll((keys, values, count) => {
      for (let i = 0; i < count; i++) {
        const v = values.readUInt32LE(i * 4);
        if (v === 0) continue;
        const slot = (v & 0xffff) - 1;
        const l = ports.get(slot) ?? [];
        l.push({index: keys.readUInt32LE(i * 4), flags: v & ~0xffff});
        ports.set(slot, l);
      }
    });
    const filters = new Map<number, Prefix[]>();
    for (const key of this.maps.allowed_addrs.keys()) {
      const slot = key.readUInt32LE(4);
      filters.set(slot, [...(filters.get(slot) ?? []), legacyPrefix(new Uint8Array(key.subarray(8, 24)), key.readUInt32LE(0) - 32)]);
    }
    const out: LegacyService[] = [];
    for (const [slot, m] of slots) {
      const proto: Proto = m.readUInt32LE(8) === 1 ? 'udp' : 'tcp';
      const family: Family = m.readUInt32LE(12) === 10 ? 6 : 4;
      const v6only = m.readUInt32LE(16) === 1;
      const socket: SocketMeta = {
        proto,
        family,
        v6only,
        pid: m.readUInt32LE(4),
        listenPort: m.readUInt32LE(20),
        listenAddr: new Uint8Array(m.subarray(24, 40)),
        sockIno: Number(m.readBigUInt64LE(40)),
      };
      // which traffic families the socket takes, as 0.1.0 steered them
      const families: Family[] = [...(family === 4 || !v6only ? [4 as const] : []), ...(family === 6 ? [6 as const] : [])];
      const sockets: (SocketMeta | undefined)[] = new Array(DESTS_PER_SERVICE).fill(undefined);
      for (let d = 0; d < DESTS_PER_SERVICE; d++) {
        const k = destKey(d);
        if (k.proto === proto && families.includes(k.family)) sockets[d] = socket;
      }
      const meta: ServiceMeta = {
        state: SVC_READY,
        pid: m.readUInt32LE(4),
        createdNs: m.readBigUInt64LE(48),
        netnsIno: Number(m.readBigUInt64LE(56)),
        ownerPid: m.readUInt32LE(64),
        flags: 0,
        comm: cstr(m, 72, 16),
        name: cstr(m, 88, 64),
        cgroupIno: 0,
        sockets,
      };
      const bindings: BindingSpec[] = [];
      for (const {index, flags} of ports.get(slot) ?? []) {
        const port = index & 0xffff;
        const fams = ([4, 6] as const).filter((f) => flags & (f === 4 ? F_V4 : F_V6));
        const prefixes = flags & F_FILTER ? (filters.get(slot) ?? []).filter((p) => fams.includes(p.family)) : fams.map(anyPrefix);
        for (const prefix of prefixes) bindings.push({proto, prefix, port});
      }
      const sums = this.maps.counters.sumPerCpuU64(u32Key(slot)) ?? [];
      out.push({
        slot,
        meta,
        bindings,
        redirected: Number(sums[0] ?? 0n),
        missed: Number(sums[1] ?? 0n),
        alive: this.maps.target_socket.lookup(u32Key(slot)) !== undefined,
      });
    }
    return out;
  }
}

// ---- layouts 1 (skl 0.2.0) and 2 (skl 0.3.0): services and bindings. Layout 1 has no following
// (no follow map, a 240-byte service record without cgroup_ino, counters without retaken). Both
// keep bindings of a local prefix in an LPM trie (`bindings`) and of a whole address in a hash
// (`host_bindings`), flagged per port in add_ports (32-bit values) ----

const V1_SERVICE_SIZE = 240;
/** add_ports flags of layouts 1 and 2: which table holds bindings of the port, per family */
const V2_PORT_TABLE_FLAGS = {bindings: {4: 1 << 24, 6: 1 << 25}, host_bindings: {4: 1 << 26, 6: 1 << 27}} as const;

function decodeServiceV1(b: Buffer): ServiceMeta {
  // today's record, with the sockets where cgroup_ino now is
  const shifted = Buffer.alloc(SERVICE_SIZE);
  b.copy(shifted, 0, 0, 112);
  b.copy(shifted, 120, 112, V1_SERVICE_SIZE);
  return {...decodeService(shifted), cgroupIno: 0};
}

const mapNamesOf = (layout: 1 | 2): string[] => ['add_ports', 'bindings', 'host_bindings', 'target_socket', 'counters', 'services', 'skl_info', ...(layout === 2 ? ['follow'] : [])];

export class ServicesLayoutState implements OlderState {
  readonly kind = 'pinned' as const;
  private constructor(
    readonly layout: 1 | 2,
    private readonly maps: Record<string, BpfMap>,
  ) {}

  static openPinned(dir: string, layout: 1 | 2): ServicesLayoutState {
    const maps: Record<string, BpfMap> = {};
    try {
      for (const n of mapNamesOf(layout)) maps[n] = BpfMap.openPinned(`${dir}/${n}`);
    } catch (error) {
      for (const m of Object.values(maps)) m.close();
      throw error;
    }
    return new ServicesLayoutState(layout, maps);
  }

  close(): void {
    for (const m of Object.values(this.maps)) m.close();
  }

  /** Every binding: any-address ones from add_ports, the others from the tables its flags name. */
  private bindings(): Binding[] {
    const out: Binding[] = [];
    const used = new Set<'bindings' | 'host_bindings'>();
    this.maps.add_ports.lookupAll((keys, values, count) => {
      for (let i = 0; i < count; i++) {
        const v = values.readUInt32LE(i * 4);
        if (v === 0) continue;
        const index = keys.readUInt32LE(i * 4);
        for (const family of [4, 6] as const) {
          const service = portService(v, family);
          if (service !== undefined) out.push({proto: indexProto(index), port: index & 0xffff, prefix: anyPrefix(family), service});
          for (const t of ['bindings', 'host_bindings'] as const) if (v & V2_PORT_TABLE_FLAGS[t][family]) used.add(t);
        }
      }
    });
    for (const t of used) {
      for (const key of this.maps[t].keys()) {
        const v = this.maps[t].lookup(key);
        if (v && key.length === BINDING_KEY_SIZE && v.length >= BINDING_SIZE) out.push({...decodeBindingKey(key), service: decodeBinding(v).service});
      }
    }
    return out;
  }

  services(): LegacyService[] {
    const size = this.layout === 1 ? V1_SERVICE_SIZE : SERVICE_SIZE;
    const records: {id: number; meta: ServiceMeta}[] = [];
    this.maps.services.lookupAll((keys, values, count) => {
      for (let i = 0; i < count; i++) {
        if (values.readUInt32LE(i * size) !== SVC_READY) continue;
        const rec = values.subarray(i * size, (i + 1) * size);
        records.push({id: keys.readUInt32LE(i * 4), meta: this.layout === 1 ? decodeServiceV1(rec) : decodeService(rec)});
      }
    });
    const byService = new Map<number, BindingSpec[]>();
    for (const b of this.bindings()) {
      const l = byService.get(b.service) ?? [];
      l.push({proto: b.proto, prefix: b.prefix, port: b.port});
      byService.set(b.service, l);
    }
    const followed = new Map<number, {key: FollowKey; dests: number}[]>();
    if (this.maps.follow) {
      for (const k of this.maps.follow.keys()) {
        const v = this.maps.follow.lookup(k);
        if (!v) continue;
        const f = decodeFollow(v);
        followed.set(f.service, [...(followed.get(f.service) ?? []), {key: decodeFollowKey(k), dests: f.dests}]);
      }
    }
    return records.map(({id, meta}) => {
      const sums = this.maps.counters.sumPerCpuU64(u32Key(id)) ?? [];
      const destAlive = Array.from({length: DESTS_PER_SERVICE}, (_, i) => this.maps.target_socket.lookup(u32Key(id * DESTS_PER_SERVICE + i)) !== undefined);
      // a followed service's sockets are the ones the follow program stored (its record names the first)
      const alive = destAlive.some((a, i) => a && (meta.sockets[i] !== undefined || (meta.flags & SVC_F_FOLLOW) !== 0));
      return {
        slot: id,
        meta,
        bindings: byService.get(id) ?? [],
        redirected: Number(sums[0] ?? 0n),
        missed: Number(sums[1] ?? 0n),
        alive,
        destAlive,
        ...(this.layout === 2 ? {retaken: Number(sums[2] ?? 0n)} : {}),
        ...(meta.flags & SVC_F_FOLLOW ? {followed: followed.get(id) ?? []} : {}),
      };
    });
  }
}

/** Read the pinned state of an older layout (0, 1 or 2), or undefined when the directory has none. */
export function openOlderPinned(dir: string, layout: number): OlderState | undefined {
  if (!existsSync(dir)) return undefined;
  if (layout === 0 && isLegacyDir(dir)) return LegacyState.openPinned(dir);
  if (layout === 1 || layout === 2) return ServicesLayoutState.openPinned(dir, layout);
  return undefined;
}
