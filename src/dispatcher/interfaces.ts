/**
 * The dispatcher's tc programs on the interfaces of its network namespace. Two programs of the
 * dispatcher's object run on every interface when some ready service needs them:
 *
 * - `sk_reply` on egress (pin `reply_prog`): a service with SVC_F_UDP_REPLIES and a UDP socket —
 *   its replies to datagrams that came in on an extra port leave from that port (./replies.ts);
 * - `sk_follow_udp` on ingress (pin `follow_udp_prog`): a followed service (SVC_F_FOLLOW) with a
 *   UDP socket — its new socket is stored on the first datagram after a restart.
 *
 * The namespace's pinned dispatcher holds them with TCX links (Linux ≥6.6) pinned in its
 * directory as `tc-<direction>-<ifindex>`, or, on older kernels, clsact filters, which are not
 * references to anything: their records (where to find each filter to remove it) live in a small
 * hash pinned beside them (`tc_filters`), created with the first. `syncInterfaces` makes that
 * match what the services need, on the interfaces there are now: every write command runs it, so
 * an interface created after an attach is covered by the next skl command that changes something,
 * and the programs of interfaces that are gone are pruned. Every skl command (Store.repair) also
 * removes the clsact filters a SIGKILLed `skl attach --foreground` left (`removeOrphanFilters`:
 * their program shares no map with any dispatcher attached to the namespace).
 *
 * A foreground dispatcher (`attachForegroundInterfaces`) holds unpinned TCX links, which die with
 * its process; on a clsact kernel its filters are removed when it stops, and by the next skl
 * command if it was killed.
 *
 * Only interfaces with an Ethernet header (Ethernet-like devices and `lo`) are covered: on an L3
 * device (ARPHRD_NONE: wireguard, tun; ip tunnels) a packet starts at its IP header, which the
 * programs do not parse. Those are listed as uncovered (`interfaceCoverage`), as is an interface
 * created since the last skl change.
 */
import {existsSync, readdirSync, unlinkSync} from 'node:fs';
import {BpfError} from '../bpf/errors.js';
import {libbpf} from '../ffi/index.js';
import {close as closeFd} from '../ffi/libc.js';
import {forEachNetnsLink, progInfoByFd, progMapIds, mapInfoByFd} from '../bpf/info.js';
import {BpfMap} from '../bpf/map.js';
import type {BpfObject} from '../bpf/object.js';
import {attachTc, ClsactFilter, clsactInterfaces, listTcFilters, tcxProgramIds, TcxLink, type ClsactFilterRecord, type TcAttachment, type TcDirection, type TcProgram} from '../bpf/tc.js';
import {ARPHRD_ETHER, ARPHRD_LOOPBACK, hwTypeName, interfaceTypes, listInterfaces} from '../sys/interfaces.js';
import {Netns} from '../sys/netns.js';
import {DESTS_PER_SERVICE, protoIndex, SVC_F_FOLLOW, SVC_F_UDP_REPLIES, SVC_READY, type ServiceMeta} from './layout.js';
import type {DispatcherState, OptionalProgram} from './state.js';
import {ensureProgram} from './store.js';

const EEXIST = 17;
const BPF_SK_LOOKUP = 36;
const BPF_MAP_TYPE_HASH = 1;
const BPF_F_NO_PREALLOC = 1;

export const TC_DIRECTIONS = ['egress', 'ingress'] as const;
/** The program each direction runs (its kernel name; pinned as PROGRAM_PINS in ./store.ts says). */
export const TC_PROGRAMS: Record<TcDirection, {program: OptionalProgram; what: string}> = {
  egress: {program: 'sk_reply', what: 'UDP replies from the extra port'},
  ingress: {program: 'sk_follow_udp', what: 'following UDP services across restarts'},
};
/** A pinned TCX link of the dispatcher: `tc-egress-<ifindex>`, `tc-ingress-<ifindex>`. */
export const TC_LINK_RE = /^tc-(ingress|egress)-(\d+)$/;
/** The records of the dispatcher's clsact filters (kernels without TCX links). */
export const TC_FILTERS_PIN = 'tc_filters';
const RECORD_KEY_SIZE = 8;
const RECORD_SIZE = 16;
const MAX_RECORDS = 65536;

/** Which of the tc programs a dispatcher's services need, by direction. */
export type TcNeeds = Record<TcDirection, boolean>;

const hasUdpSocket = (s: Pick<ServiceMeta, 'sockets'>): boolean => s.sockets.some((m, i) => m !== undefined && i >> 1 === protoIndex('udp') && i < DESTS_PER_SERVICE);

/** egress: some ready service rewrites UDP replies; ingress: some ready service with a UDP socket is followed. */
export function tcNeeds(services: readonly Pick<ServiceMeta, 'state' | 'flags' | 'sockets'>[]): TcNeeds {
  const ready = services.filter((s) => s.state === SVC_READY && hasUdpSocket(s));
  return {egress: ready.some((s) => s.flags & SVC_F_UDP_REPLIES), ingress: ready.some((s) => s.flags & SVC_F_FOLLOW)};
}

const needsAny = (n: TcNeeds): boolean => n.egress || n.ingress;

export interface Interface {
  name: string;
  ifindex: number;
  /** link-layer type (ARPHRD_*) */
  type: number;
  /** it has an Ethernet header: the programs can run there */
  ethernet: boolean;
}

/** The interfaces of the calling thread's namespace, with their link-layer type. */
function interfacesHere(): Interface[] {
  const list = listInterfaces();
  const types = interfaceTypes(list.map((i) => i.name));
  return list
    .filter((i) => types.has(i.name))
    .map((i) => {
      const type = types.get(i.name)!;
      return {...i, type, ethernet: type === ARPHRD_ETHER || type === ARPHRD_LOOPBACK};
    });
}

/** "a clsact filter of …" errors and the like, as one short line. */
const why = (error: unknown): string => (error instanceof Error ? error.message : String(error));

/** A pinned program, open by fd (closed by the caller). */
function openProgram(path: string): (TcProgram & {id: number; close(): void}) | undefined {
  const fd = libbpf.bpf_obj_get(path);
  if (fd < 0) return undefined;
  try {
    const info = progInfoByFd(fd);
    return {fd, id: info.id, name: info.name, close: () => closeFd(fd)};
  } catch (error) {
    closeFd(fd);
    throw error;
  }
}

/** Attach ahead of what is on the hook (TCX: BPF_F_BEFORE), or where the kernel puts it when a clsact filter already has priority 1. */
function attachFirst(program: TcProgram, ifindex: number, direction: TcDirection): TcAttachment {
  try {
    return attachTc(program, ifindex, direction, {first: true});
  } catch (error) {
    if (error instanceof BpfError && error.errno === EEXIST) return attachTc(program, ifindex, direction);
    throw error;
  }
}

// ---- the records of the pinned dispatcher's clsact filters ----

const recordKey = (ifindex: number, direction: TcDirection): Buffer => {
  const k = Buffer.alloc(RECORD_KEY_SIZE);
  k.writeUInt32LE(ifindex, 0);
  k.writeUInt32LE(direction === 'egress' ? 1 : 0, 4);
  return k;
};

function readRecords(dir: string, netnsIno: number): ClsactFilterRecord[] {
  const path = `${dir}/${TC_FILTERS_PIN}`;
  if (!existsSync(path)) return [];
  const m = BpfMap.openPinned(path);
  try {
    const out: ClsactFilterRecord[] = [];
    for (const k of m.keys()) {
      const v = m.lookup(k);
      if (!v) continue;
      out.push({
        netnsIno,
        ifindex: k.readUInt32LE(0),
        direction: k.readUInt32LE(4) === 1 ? 'egress' : 'ingress',
        handle: v.readUInt32LE(0),
        priority: v.readUInt32LE(4),
        progId: v.readUInt32LE(8),
        createdQdisc: v.readUInt32LE(12) === 1,
      });
    }
    return out;
  } finally {
    m.close();
  }
}

/** Record a filter (the map is created with the first record). */
function writeRecord(dir: string, r: ClsactFilterRecord): void {
  const path = `${dir}/${TC_FILTERS_PIN}`;
  let m: BpfMap;
  if (existsSync(path)) m = BpfMap.openPinned(path);
  else {
    m = BpfMap.create(BPF_MAP_TYPE_HASH, TC_FILTERS_PIN, RECORD_KEY_SIZE, RECORD_SIZE, MAX_RECORDS, BPF_F_NO_PREALLOC);
    try {
      m.pin(path);
    } catch (error) {
      m.close();
      throw error;
    }
  }
  try {
    const v = Buffer.alloc(RECORD_SIZE);
    v.writeUInt32LE(r.handle, 0);
    v.writeUInt32LE(r.priority, 4);
    v.writeUInt32LE(r.progId, 8);
    v.writeUInt32LE(r.createdQdisc ? 1 : 0, 12);
    m.update(recordKey(r.ifindex, r.direction), v);
  } finally {
    m.close();
  }
}

/** Forget records; the map goes once empty (a dispatcher without clsact filters has no such pin). */
function deleteRecords(dir: string, gone: readonly ClsactFilterRecord[]): void {
  const path = `${dir}/${TC_FILTERS_PIN}`;
  if (!existsSync(path)) return;
  const m = BpfMap.openPinned(path);
  let empty: boolean;
  try {
    for (const r of gone) m.delete(recordKey(r.ifindex, r.direction));
    empty = m.keys().next().done === true;
  } finally {
    m.close();
  }
  if (empty) unlinkSync(path);
}

// ---- the pinned dispatcher ----

export interface InterfacesSync {
  /** "could not attach …" and the like: the command succeeded, these interfaces stay uncovered */
  notices: string[];
  /** programs attached (interface × direction) by this run */
  attached: number;
  /** programs removed (no longer needed, interface gone, or left by a dead foreground skl) */
  removed: number;
}

/**
 * Make the pinned dispatcher's tc programs in `dir` match `needs` on every interface of the
 * namespace (entered here): attach the missing, prune the unneeded and those of interfaces that
 * are gone. Under skl's lock.
 * `needs` undefined: nothing (the dispatcher is being removed, or there is none).
 */
export function syncInterfaces(ns: Netns, dir: string, needs: TcNeeds | undefined): InterfacesSync {
  return ns.run(() => syncHere(ns.ino, dir, needs ?? {egress: false, ingress: false}));
}

function syncHere(netnsIno: number, dir: string, needs: TcNeeds): InterfacesSync {
  const result: InterfacesSync = {notices: [], attached: 0, removed: 0};
  const pinned = existsSync(dir) ? readdirSync(dir) : [];
  const records = readRecords(dir, netnsIno);
  // no service needs a tc program and the dispatcher holds none: nothing to look at (the interfaces
  // are not even listed: most commands of most namespaces end here)
  if (!needs.egress && !needs.ingress && records.length === 0 && !pinned.some((e) => TC_LINK_RE.test(e))) return result;
  const ifaces = interfacesHere();
  const byIndex = new Map(ifaces.map((i) => [i.ifindex, i]));
  const eligible = (ifindex: number): boolean => byIndex.get(ifindex)?.ethernet === true;
  const forgotten: ClsactFilterRecord[] = [];
  for (const direction of TC_DIRECTIONS) {
    const spec = TC_PROGRAMS[direction];
    // loaded on the dispatcher's maps and pinned the first time it is needed (undefined: this kernel cannot load it)
    const pin = needs[direction] && existsSync(dir) ? ensureProgram(dir, spec.program) : undefined;
    const prog = pin === undefined ? undefined : openProgram(pin);
    if (needs[direction] && !prog) {
      result.notices.push(`${spec.what} needs skl's ${spec.program} program, which this kernel could not load (see skl doctor)`);
    }
    try {
      const covered = new Set<number>();
      // TCX links pinned in the dispatcher's directory
      for (const entry of pinned) {
        const m = TC_LINK_RE.exec(entry);
        if (!m || m[1] !== direction) continue;
        const ifindex = Number(m[2]);
        const path = `${dir}/${entry}`;
        let keep = false;
        try {
          const link = TcxLink.openPinned(path);
          try {
            const info = link.link.info();
            if (prog && info.ifindex === ifindex && eligible(ifindex)) {
              // a program of an earlier load (an upgrade re-pins them): the new one, atomically
              if (info.progId !== prog.id) link.link.update(prog.fd, spec.program);
              keep = true;
              covered.add(ifindex);
            } else if (info.ifindex !== 0) {
              link.link.detach();
              result.removed++;
            }
          } finally {
            link.close();
          }
        } catch {
          // not a link any more (or unreadable): the pin goes, a new link is made below if needed
        }
        if (!keep && existsSync(path)) unlinkSync(path);
      }
      // clsact filters recorded
      const present = (r: ClsactFilterRecord): boolean =>
        listTcFilters(r.ifindex, direction).some((f) => f.priority === r.priority && f.handle === r.handle && f.kind === 'bpf' && f.progId === r.progId);
      for (const r of records.filter((x) => x.direction === direction)) {
        if (prog && r.progId === prog.id && eligible(r.ifindex) && present(r)) {
          covered.add(r.ifindex);
          continue;
        }
        if (byIndex.has(r.ifindex) && ClsactFilter.remove(r) === 'removed') result.removed++;
        forgotten.push(r);
      }
      if (!prog) continue;
      for (const i of ifaces) {
        if (!i.ethernet || covered.has(i.ifindex)) continue;
        try {
          const a = attachFirst(prog, i.ifindex, direction);
          if (a instanceof TcxLink) {
            try {
              a.pin(`${dir}/tc-${direction}-${i.ifindex}`);
            } finally {
              a.close();
            }
          } else if (a instanceof ClsactFilter) {
            try {
              writeRecord(dir, a.record);
            } catch (error) {
              a.detach();
              throw error;
            }
          }
          result.attached++;
        } catch (error) {
          result.notices.push(`could not attach skl's ${spec.program} program to the ${direction} of ${i.name}: ${why(error)}; ${spec.what} does not work through it`);
        }
      }
    } finally {
      prog?.close();
    }
  }
  deleteRecords(dir, forgotten);
  return result;
}

/**
 * Remove every tc program the pinned dispatcher in `dir` holds (before its directory goes: its
 * clsact filters would outlive it). TCX links go with their pins anyway; they are detached here too.
 */
export function releaseInterfaces(ns: Netns, dir: string): void {
  syncInterfaces(ns, dir, undefined);
}

// ---- filters no dispatcher owns ----

/** Ids of the maps of every sk_lookup program attached to the namespace `netnsIno` (any dispatcher, pinned or foreground, any layout). */
function liveDispatcherMaps(netnsIno: number): Set<number> {
  const out = new Set<number>();
  forEachNetnsLink(netnsIno, BPF_SK_LOOKUP, (pfd) => {
    for (const m of progMapIds(pfd)) out.add(m);
  });
  return out;
}

/** A program's name and the ids of its maps (undefined when it is gone). */
function programOf(id: number, cache: Map<number, {name: string; maps: number[]} | undefined>): {name: string; maps: number[]} | undefined {
  if (cache.has(id)) return cache.get(id);
  let out: {name: string; maps: number[]} | undefined;
  const fd = libbpf.bpf_prog_get_fd_by_id(id);
  if (fd >= 0) {
    try {
      out = {name: progInfoByFd(fd).name, maps: progMapIds(fd)};
    } catch {
      out = undefined;
    } finally {
      closeFd(fd);
    }
  }
  cache.set(id, out);
  return out;
}

const SKL_TC_NAMES = new Set<string>(TC_DIRECTIONS.map((d) => TC_PROGRAMS[d].program));

/**
 * Remove the clsact filters of the namespace (entered here) that run one of skl's tc programs
 * whose dispatcher is gone — a SIGKILLed `skl attach --foreground` on a kernel without TCX links,
 * or state removed behind skl's back: the program shares no map with any sk_lookup program
 * attached to the namespace. Returns how many. TCX links need no such thing (they go with their
 * owner). Under skl's lock.
 */
export function removeOrphanFilters(ns: Netns): number {
  // one qdisc dump: where there is no clsact qdisc (everywhere, on kernels with TCX links) there is nothing to look at
  return ns.run(() => sweepOrphans(ns.ino, clsactInterfaces()));
}

function sweepOrphans(netnsIno: number, ifindexes: readonly number[]): number {
  let live: Set<number> | undefined;
  const cache = new Map<number, {name: string; maps: number[]} | undefined>();
  let removed = 0;
  for (const ifindex of ifindexes) {
    for (const direction of TC_DIRECTIONS) {
      for (const f of listTcFilters(ifindex, direction)) {
        if (f.kind !== 'bpf' || f.progId === undefined) continue;
        const p = programOf(f.progId, cache);
        if (!p || !SKL_TC_NAMES.has(p.name)) continue;
        live ??= liveDispatcherMaps(netnsIno);
        if (p.maps.some((m) => live!.has(m))) continue;
        const r = ClsactFilter.remove({netnsIno, ifindex, direction, handle: f.handle, priority: f.priority, progId: f.progId, createdQdisc: false});
        if (r === 'removed') removed++;
      }
    }
  }
  return removed;
}

// ---- a foreground dispatcher ----

export interface ForegroundInterfaces {
  notices: string[];
  /** Take the programs off every interface (TCX links: closed, which detaches them; clsact filters: removed). Idempotent. */
  close(): void;
}

/**
 * Attach a foreground dispatcher's own tc programs (of its loaded object) to every interface of
 * the namespace: unpinned TCX links that die with this process, or clsact filters removed by
 * `close()` (and, if this process is killed, by the next skl command).
 */
export function attachForegroundInterfaces(ns: Netns, obj: BpfObject, loaded: ReadonlySet<OptionalProgram>, needs: TcNeeds): ForegroundInterfaces {
  const held: TcAttachment[] = [];
  const notices: string[] = [];
  let closed = false;
  // the namespace again at close(), which may come long after `ns` is closed
  const own = needsAny(needs) ? Netns.open(ns.path) : undefined;
  const close = (): void => {
    if (closed) return;
    closed = true;
    try {
      const filters = held.filter((a) => a instanceof ClsactFilter);
      if (filters.length && own) {
        own.run(() => {
          for (const a of filters) {
            try {
              a.detach();
            } catch {
              // the interface went away with it
            }
          }
        });
      }
      for (const a of held) if (a instanceof TcxLink) a.close();
    } finally {
      own?.close();
    }
  };
  if (!own) return {notices, close};
  try {
    own.run(() => {
      const ifaces = interfacesHere();
      for (const direction of TC_DIRECTIONS) {
        const spec = TC_PROGRAMS[direction];
        if (!needs[direction]) continue;
        if (!loaded.has(spec.program)) {
          notices.push(`${spec.what} needs skl's ${spec.program} program, which this kernel could not load (see skl doctor)`);
          continue;
        }
        const program = obj.program(spec.program);
        for (const i of ifaces) {
          if (!i.ethernet) continue;
          try {
            held.push(attachFirst(program, i.ifindex, direction));
          } catch (error) {
            notices.push(`could not attach skl's ${spec.program} program to the ${direction} of ${i.name}: ${why(error)}; ${spec.what} does not work through it`);
          }
        }
      }
    });
  } catch (error) {
    close();
    throw error;
  }
  return {notices, close};
}

// ---- coverage (skl status) ----

export interface UncoveredInterface {
  name: string;
  ifindex: number;
  /** why the programs are not there: an L3 device, or an interface newer than the last skl change */
  reason: string;
}

/**
 * The interfaces of the namespace where a program some dispatcher needs is not running: devices
 * without an Ethernet header, and interfaces created since the dispatcher last attached its
 * programs. Empty when no service needs any. Read from the kernel (the programs on each hook, TCX
 * and clsact), so foreground dispatchers count too.
 */
export function interfaceCoverage(ns: Netns, all: readonly DispatcherState[]): UncoveredInterface[] {
  const wanting = all
    .map((d) => ({d, needs: tcNeeds(d.services())}))
    .filter((x) => needsAny(x.needs))
    .map((x) => ({...x, services: mapInfoByFd(x.d.maps.services.fd).id}));
  if (wanting.length === 0) return [];
  return ns.run(() => {
    const out: UncoveredInterface[] = [];
    const cache = new Map<number, {name: string; maps: number[]} | undefined>();
    for (const i of interfacesHere()) {
      if (!i.ethernet) {
        out.push({name: i.name, ifindex: i.ifindex, reason: `no Ethernet header (link type ${hwTypeName(i.type)}): skl's tc programs do not run on L3 devices`});
        continue;
      }
      const missing: string[] = [];
      for (const direction of TC_DIRECTIONS) {
        const progs = [...tcxProgramIds(i.ifindex, direction), ...listTcFilters(i.ifindex, direction).flatMap((f) => (f.kind === 'bpf' && f.progId !== undefined ? [f.progId] : []))];
        for (const w of wanting) {
          if (!w.needs[direction]) continue;
          const has = progs.some((id) => {
            const p = programOf(id, cache);
            return p !== undefined && p.name === TC_PROGRAMS[direction].program && p.maps.includes(w.services);
          });
          if (!has) missing.push(`${TC_PROGRAMS[direction].what} (${direction}${w.d.kind === 'foreground' ? ', a foreground dispatcher' : ''})`);
        }
      }
      if (missing.length) {
        out.push({
          name: i.name,
          ifindex: i.ifindex,
          reason: `no ${[...new Set(missing)].join(', ')}: created after the last skl change (the next skl command that changes something covers it${wanting.some((w) => w.d.kind === 'foreground') ? '; a foreground dispatcher only covers the interfaces there were when it started' : ''})`,
        });
      }
    }
    return out;
  });
}

// ---- what write commands run ----

/** What coverInterfaces needs of a Store (a type only: no import cycle). */
export interface StoreLike {
  readonly netns: Netns;
  readonly dir: string;
  openPinned(): DispatcherState | undefined;
}

/**
 * After a write command's change: the namespace's pinned dispatcher's tc programs on every
 * interface there is now, as its services need them (see syncInterfaces). Never fails the
 * command: what could not be done comes back as notices (and `skl status` lists the interfaces).
 * State of another layout, or damaged state, is left alone.
 */
export function coverInterfaces(store: StoreLike): string[] {
  let needs: TcNeeds | undefined;
  try {
    const d = store.openPinned();
    if (d) {
      try {
        if (!d.damage) needs = tcNeeds(d.services());
      } finally {
        d.close();
      }
    }
  } catch {
    return [];
  }
  try {
    return syncInterfaces(store.netns, store.dir, needs).notices;
  } catch (error) {
    return [`could not update skl's tc programs on the interfaces of the namespace: ${why(error)}; see skl status`];
  }
}
