/**
 * The dispatcher as a library: attach, detach, ports add/remove, status. The CLI is a thin layer
 * over these; every function validates everything before it changes anything.
 */
import {closeSync} from 'node:fs';
import {requireFeature, probeProgType} from '../bpf/features.js';
import {BpfObject} from '../bpf/object.js';
import type {Link} from '../bpf/link.js';
import {SklError, UsageError} from '../sys/errors.js';
import {Netns} from '../sys/netns.js';
import {processAlive} from '../sys/proc.js';
import {serverSocketsHere, type Proto, type SocketEntry} from '../sys/sockets.js';
import {
  addrBytes,
  listenerText,
  portIndex,
  portValue,
  prefixText,
  SLOT_PENDING,
  SLOT_READY,
  type TargetMeta,
} from './layout.js';
import type {AddressPrefix} from './input.js';
import {compressPorts, defaultName, validateName} from './input.js';
import {DispatcherState, dispatcherObjectBytes, MAP_NAMES, type MapName} from './state.js';
import {PROGRAM_NAME, Store, type StoreOptions} from './store.js';
import {takeTarget, type Target, type TargetSpec} from './target.js';
import {crashPoint} from './faults.js';
import type {BpfMap} from '../bpf/map.js';

export interface CommonOptions extends StoreOptions {
  /** network namespace file (default: the caller's, /proc/self/ns/net) */
  netns?: string;
}

export interface AttachOptions extends CommonOptions {
  /** target process (default: this process, with `fd`) */
  pid?: number;
  /** fd of the socket in the target process (with no pid: an fd of this process) */
  fd?: number;
  listener?: {address?: string; port: number};
  /** extra ports; required for a new attachment, optional when replacing an existing name's socket */
  ports?: number[];
  proto?: Proto;
  name?: string;
  /** only steer connections to these local addresses */
  addresses?: AddressPrefix[];
  /** claim ports even when another socket already listens on them */
  force?: boolean;
}

export interface AttachResult {
  name: string;
  pid: number;
  comm: string;
  proto: Proto;
  ports: number[];
  listener: string;
  /** the name existed: its socket (and ports, if given) were replaced in place */
  replaced: boolean;
  netnsIno: number;
  notices: string[];
}

export interface AttachmentStatus {
  name: string;
  pid: number;
  command: string;
  protocol: Proto;
  listener: string;
  ports: number[];
  portsText: string;
  /** the target socket is still open (the kernel drops it from the SOCKMAP when it closes) */
  alive: boolean;
  processAlive: boolean;
  redirected: number;
  missed: number;
  filtered: number;
  addresses: string[];
  mode: 'persistent' | 'foreground';
  /** skl process holding a foreground attachment */
  ownerPid?: number;
  createdAt: string;
  netnsIno: number;
}

export interface StatusReport {
  netns: string;
  netnsIno: number;
  /** the namespace has a pinned dispatcher */
  dispatcher: boolean;
  /** what is wrong with the pinned state (a pin removed behind skl's back, ...), when something is */
  damaged?: string;
  attachments: AttachmentStatus[];
  notices: string[];
}

const DEFAULT_NETNS = '/proc/self/ns/net';

/** "this network namespace" or the --netns path, for messages. */
const where = (ns: Netns): string => (ns.path === DEFAULT_NETNS ? 'this network namespace' : `network namespace ${ns.path}`);

function withNetns<T>(path: string | undefined, fn: (ns: Netns) => Promise<T>): Promise<T> {
  const ns = Netns.open(path ?? DEFAULT_NETNS);
  return fn(ns).finally(() => ns.close());
}

/** All dispatchers of the namespace: the pinned one first, then foreground ones. */
function openAll(store: Store): DispatcherState[] {
  const pinned = store.openPinned();
  return [...(pinned ? [pinned] : []), ...store.foreground(pinned?.linkId ?? 0)];
}

function closeAll(ds: DispatcherState[]): void {
  for (const d of ds) d.close();
}

interface Claimed {
  /** (proto,port) index → owning attachment name */
  owners: Map<number, string>;
  names: Map<string, {state: DispatcherState; slot: number; meta: TargetMeta}>;
}

function claimed(ds: DispatcherState[]): Claimed {
  const owners = new Map<number, string>();
  const names = new Map<string, {state: DispatcherState; slot: number; meta: TargetMeta}>();
  for (const d of ds) {
    const slots = d.slots().filter((s) => s.state === SLOT_READY);
    const bySlot = new Map(slots.map((s) => [s.slot, s.name]));
    for (const s of slots) names.set(s.name, {state: d, slot: s.slot, meta: s});
    for (const [index, slot] of d.portTable()) {
      const name = bySlot.get(slot);
      if (name !== undefined) owners.set(index, name);
    }
  }
  return {owners, names};
}

/** Refuse ports owned by other attachments, or (unless forced) already served by another socket. */
function checkPorts(
  ns: Netns,
  c: Claimed,
  name: string,
  proto: Proto,
  ports: number[],
  force: boolean,
  ownInode: number | undefined,
): void {
  const taken = new Map<string, number[]>();
  for (const p of ports) {
    const owner = c.owners.get(portIndex(proto, p));
    if (owner !== undefined && owner !== name) taken.set(owner, [...(taken.get(owner) ?? []), p]);
  }
  if (taken.size) {
    const [owner, list] = [...taken][0];
    const held = c.names.get(owner);
    const fix = held?.state.kind === 'foreground' ? `stop its skl --foreground process (pid ${held.meta.ownerPid})` : `remove them there first (skl ports remove ${owner} ...)`;
    const plural = list.length > 1;
    throw new SklError(`${proto.toUpperCase()} port${plural ? 's' : ''} ${compressPorts(list)} already belong${plural ? '' : 's'} to attachment ${owner}; ${fix}`);
  }
  if (force) return;
  const wanted = new Set(ports);
  const servers: SocketEntry[] = ns.run(() => serverSocketsHere([proto]));
  const hijacked = servers.filter((s) => wanted.has(s.port) && s.inode !== ownInode && s.inode !== 0);
  if (hijacked.length) {
    const s = hijacked[0];
    const where = s.family === 6 ? `[${s.address}]:${s.port}` : `${s.address}:${s.port}`;
    const more = hijacked.length > 1 ? ` (and ${hijacked.length - 1} more)` : '';
    throw new SklError(`${proto.toUpperCase()} port ${s.port} already has a socket (${where})${more}: steering it would hijack that service; leave the port out or use --force`);
  }
}

function accepts(t: {family: 4 | 6; v6only: boolean}): {v4: boolean; v6: boolean} {
  return {v4: t.family === 4 || !t.v6only, v6: t.family === 6};
}

function metaFor(t: Target, name: string, netnsIno: number, ownerPid: number, nfilters: number, state: number): TargetMeta {
  return {
    state,
    pid: t.pid,
    proto: t.proto,
    family: t.family,
    v6only: t.v6only,
    listenPort: t.socket.port,
    listenAddr: addrBytes(t.socket.address, t.socket.family),
    sockIno: t.socket.inode,
    createdNs: BigInt(Date.now()) * 1_000_000n,
    netnsIno,
    ownerPid,
    nfilters,
    comm: t.comm,
    name,
  };
}

function resolveSpec(opts: AttachOptions): TargetSpec {
  const pid = opts.pid ?? process.pid;
  if (opts.pid === undefined && opts.fd === undefined) throw new UsageError('give the target: --pid PID (or, in-process, an fd of this process)');
  return {pid, proto: opts.proto ?? 'tcp', fd: opts.fd, listener: opts.listener};
}

function checkTargetNetns(t: Target, ns: Netns): void {
  if (t.netnsIno !== undefined && t.netnsIno !== ns.ino) {
    throw new SklError(
      `the socket of process ${t.pid} belongs to another network namespace than ${ns.path}; attach there with --netns /proc/${t.pid}/ns/net`,
    );
  }
}

/** Fill a free slot. Marked pending until complete, so an interrupted write is rolled back later. */
function writeSlot(d: DispatcherState, slot: number, t: Target, meta: TargetMeta, ports: number[], addresses: AddressPrefix[]): void {
  d.writeMeta(slot, {...meta, state: SLOT_PENDING});
  crashPoint('attach:pending');
  d.resetCounters(slot);
  d.setFilters(slot, addresses);
  d.setSocket(slot, t.fd);
  crashPoint('attach:socket-stored');
  const v = portValue(slot, accepts(t), addresses.length > 0);
  d.writePorts(ports.map((p) => [portIndex(t.proto, p), v]));
  crashPoint('attach:ports-written');
  d.writeMeta(slot, {...meta, state: SLOT_READY});
}

interface AttachContext {
  ns: Netns;
  store: Store;
  t: Target;
  name: string;
  /** every dispatcher of the namespace, open; closed afterwards (push what you open into it) */
  all: DispatcherState[];
  c: Claimed;
}

/**
 * What both attach modes do first: validate, take the target socket (closed again afterwards: the
 * SOCKMAP holds its own reference), then run `fn` under the lock with the namespace's state open.
 */
function withTarget<T>(opts: AttachOptions, fn: (x: AttachContext) => T): Promise<T> {
  const spec = resolveSpec(opts);
  if (opts.name !== undefined) validateName(opts.name);
  requireFeature('sk_lookup', () => probeProgType('sk_lookup'));
  return withNetns(opts.netns, async (ns) => {
    const store = new Store(ns, opts);
    const t = takeTarget(spec);
    try {
      checkTargetNetns(t, ns);
      const name = opts.name ?? defaultName(t.comm, t.pid);
      return await store.locked(() => {
        const all = openAll(store);
        try {
          return fn({ns, store, t, name, all, c: claimed(all)});
        } finally {
          closeAll(all);
        }
      });
    } finally {
      closeSync(t.fd);
    }
  });
}

/** Give a process extra ports through the namespace's shared, pinned dispatcher. */
export function attach(opts: AttachOptions): Promise<AttachResult> {
  return withTarget(opts, ({ns, store, t, name, all, c}) => {
    const existing = c.names.get(name);
    if (existing && existing.state.kind === 'foreground') {
      throw new SklError(`${name} is a foreground attachment of skl process ${existing.meta.ownerPid}; stop that process first or pick another --name`);
    }
    if (existing && existing.meta.proto !== t.proto) {
      throw new SklError(`attachment ${name} is ${existing.meta.proto.toUpperCase()}; detach it first to attach a ${t.proto.toUpperCase()} socket under that name`);
    }
    let ports = opts.ports;
    if (!ports) {
      if (!existing) throw new UsageError('--ports is required for a new attachment');
      ports = existing.state.portsOf(existing.slot)[t.proto];
    }
    if (ports.length === 0) throw new UsageError('--ports is empty');
    checkPorts(ns, c, name, t.proto, ports, opts.force ?? false, t.socket.inode);
    const addresses = opts.addresses ?? (existing ? existing.state.filters(existing.slot) : []).map((f) => ({...f, text: prefixText(f.addr, f.prefixLen)}));

    let pinned = all.find((d) => d.kind === 'pinned');
    // a dispatcher whose link is gone steers nothing: writing to it would be a silent no-op
    if (pinned?.damage) throw new SklError(`cannot attach: skl's pinned state in ${store.dir} is damaged: ${pinned.damage}`);
    const created = !pinned;
    pinned ??= store.createPinned();
    if (created) all.push(pinned);
    const notices = [...store.notices];
    if (existing) {
      replaceSlot(pinned, existing.slot, t, metaFor(t, name, ns.ino, 0, addresses.length, SLOT_READY), ports, addresses);
    } else {
      const slot = pinned.freeSlot();
      if (slot === undefined) throw new SklError('this namespace already has the maximum of 256 attachments; detach one first');
      try {
        writeSlot(pinned, slot, t, metaFor(t, name, ns.ino, 0, addresses.length, SLOT_READY), ports, addresses);
      } catch (error) {
        pinned.clearSlot(slot);
        if (created) {
          pinned.close();
          store.destroyPinned();
        }
        throw error;
      }
    }
    return {name, pid: t.pid, comm: t.comm, proto: t.proto, ports, listener: listenerText(metaFor(t, name, 0, 0, 0, 0)), replaced: !!existing, netnsIno: ns.ino, notices};
  });
}

/** Swap a slot's socket in place (SOCKMAP update is atomic) and bring its ports to `ports`. */
function replaceSlot(d: DispatcherState, slot: number, t: Target, meta: TargetMeta, ports: number[], addresses: AddressPrefix[]): void {
  const table = d.portTable();
  const v = portValue(slot, accepts(t), addresses.length > 0);
  // Filter prefixes: the new ones first (all or nothing), the old ones only once the ports no
  // longer rely on them; a failure before the socket is swapped leaves the attachment as it was.
  const previous = d.filters(slot);
  d.addFilters(slot, addresses);
  try {
    d.setSocket(slot, t.fd);
  } catch (error) {
    d.pruneFilters(slot, previous);
    throw error;
  }
  const want = new Set(ports.map((p) => portIndex(t.proto, p)));
  const writes: [number, number][] = [...want].map((i) => [i, v]);
  for (const [index, s] of table) if (s === slot && !want.has(index)) writes.push([index, 0]);
  d.writePorts(writes);
  d.writeMeta(slot, meta);
  d.pruneFilters(slot, addresses);
}

export interface ForegroundAttachment extends AttachResult {
  /** Remove the attachment (detach its link, free its maps). Idempotent. */
  close(): void;
}

/**
 * Attach with kernel objects of this process only (no pins): everything goes away when `close()`
 * is called or the process dies, even by SIGKILL. Still conflict-checked against the namespace.
 */
export function attachForeground(opts: AttachOptions): Promise<ForegroundAttachment> {
  if (!opts.ports || opts.ports.length === 0) return Promise.reject(new UsageError('--ports is required'));
  const ports = opts.ports;
  return withTarget(opts, ({ns, store, t, name, c}) => {
    if (c.names.has(name)) throw new SklError(`an attachment named ${name} already exists; pick another --name`);
    checkPorts(ns, c, name, t.proto, ports, opts.force ?? false, t.socket.inode);
    const addresses = opts.addresses ?? [];
    const obj = BpfObject.load(dispatcherObjectBytes(), {name: 'sk_dispatch.o'});
    let link: Link | undefined;
    try {
      const maps = {} as Record<MapName, BpfMap>;
      for (const n of MAP_NAMES) maps[n] = obj.map(n);
      const d = new DispatcherState('foreground', maps, 0);
      writeSlot(d, 0, t, metaFor(t, name, ns.ino, process.pid, addresses.length, SLOT_READY), ports, addresses);
      link = obj.program(PROGRAM_NAME).attachNetns(ns.fd, `netns ${ns.path}`);
    } catch (error) {
      link?.close();
      obj.close();
      throw error;
    }
    const held = link;
    let closed = false;
    return {
      name,
      pid: t.pid,
      comm: t.comm,
      proto: t.proto,
      ports,
      listener: listenerText(metaFor(t, name, 0, 0, 0, 0)),
      replaced: false,
      netnsIno: ns.ino,
      notices: [...store.notices],
      close: () => {
        if (closed) return;
        closed = true;
        held.close(); // links before objects
        obj.close();
      },
    };
  });
}

export interface DetachResult {
  detached: string[];
  /** the namespace's dispatcher (and all its pins) was removed */
  dispatcherRemoved: boolean;
  notices: string[];
}

/** Remove attachments by name (or all of them); removing the last removes the dispatcher. */
export function detach(target: {name: string} | {all: true}, opts: CommonOptions = {}): Promise<DetachResult> {
  if ('name' in target) validateName(target.name);
  return withNetns(opts.netns, async (ns) => {
    const store = new Store(ns, opts);
    return store.locked(() => {
      let pinned: DispatcherState | undefined;
      try {
        pinned = store.openPinned();
      } catch (error) {
        // damaged state: `--all` removes whatever is left
        if ('all' in target) {
          store.destroyPinned();
          return {detached: [], dispatcherRemoved: true, notices: [...store.notices, `removed damaged state in ${store.dir}`]};
        }
        throw error;
      }
      const fg = store.foreground(pinned?.linkId ?? 0);
      try {
        const slots = pinned ? pinned.slots() : [];
        let victims = slots;
        if ('name' in target) {
          victims = slots.filter((s) => s.name === target.name);
          if (victims.length === 0) {
            const f = fg.flatMap((d) => d.slots()).find((s) => s.name === target.name);
            if (f) throw new SklError(`${target.name} is a foreground attachment: stop its skl process (pid ${f.ownerPid}) to detach it`);
            const known = slots.map((s) => s.name);
            throw new SklError(`no attachment named ${target.name} in ${where(ns)}${known.length ? ` (there are: ${known.join(', ')})` : ''}`);
          }
        }
        if (!pinned) return {detached: [], dispatcherRemoved: false, notices: [...store.notices]};
        const table = pinned.portTable();
        const removeAll = victims.length === slots.length;
        if (!removeAll) for (const v of victims) pinned.clearSlot(v.slot, table);
        pinned.close();
        pinned = undefined;
        if (removeAll) store.destroyPinned();
        return {detached: victims.map((v) => v.name), dispatcherRemoved: removeAll, notices: [...store.notices]};
      } finally {
        pinned?.close();
        closeAll(fg);
      }
    });
  });
}

export interface PortsChange {
  name: string;
  proto: Proto;
  changed: number[];
  ports: number[];
}

/** Add or remove extra ports of an existing attachment, live. */
export function changePorts(name: string, op: 'add' | 'remove', ports: number[], opts: CommonOptions & {force?: boolean} = {}): Promise<PortsChange> {
  validateName(name);
  if (ports.length === 0) return Promise.reject(new UsageError('no ports given'));
  return withNetns(opts.netns, async (ns) => {
    const store = new Store(ns, opts);
    return store.locked(() => {
      const all = openAll(store);
      try {
        const c = claimed(all);
        const entry = c.names.get(name);
        if (!entry) throw new SklError(`no attachment named ${name} in ${where(ns)} (see skl status)`);
        if (entry.state.kind === 'foreground') throw new SklError(`${name} is a foreground attachment; its ports are fixed while it runs`);
        if (op === 'add' && entry.state.damage) throw new SklError(`cannot add ports: skl's pinned state in ${store.dir} is damaged: ${entry.state.damage}`);
        const {state: d, slot, meta} = entry;
        const current = new Set(d.portsOf(slot)[meta.proto]);
        if (op === 'add') {
          const fresh = ports.filter((p) => !current.has(p));
          checkPorts(ns, c, name, meta.proto, fresh, opts.force ?? false, meta.sockIno);
          const v = portValue(slot, accepts(meta), meta.nfilters > 0);
          d.writePorts(fresh.map((p) => [portIndex(meta.proto, p), v]));
          fresh.forEach((p) => current.add(p));
          return {name, proto: meta.proto, changed: fresh, ports: [...current].sort((a, b) => a - b)};
        }
        const gone = ports.filter((p) => current.has(p));
        const notMine = ports.filter((p) => !current.has(p));
        if (notMine.length) throw new UsageError(`attachment ${name} does not have ${meta.proto.toUpperCase()} port${notMine.length > 1 ? 's' : ''} ${compressPorts(notMine)}`);
        d.writePorts(gone.map((p) => [portIndex(meta.proto, p), 0]));
        gone.forEach((p) => current.delete(p));
        return {name, proto: meta.proto, changed: gone, ports: [...current].sort((a, b) => a - b)};
      } finally {
        closeAll(all);
      }
    });
  });
}

/** Everything skl has attached in a namespace, rebuilt from the kernel's state alone. */
export function status(opts: CommonOptions & {name?: string} = {}): Promise<StatusReport> {
  if (opts.name !== undefined) validateName(opts.name);
  return withNetns(opts.netns, async (ns) => {
    const store = new Store(ns, opts);
    // under the lock: a consistent snapshot (never a dispatcher half created or removed), repaired first
    return store.locked(() => statusLocked(ns, store, opts.name));
  });
}

function statusLocked(ns: Netns, store: Store, name: string | undefined): StatusReport {
  let damaged: string | undefined;
  let all: DispatcherState[];
  try {
    all = openAll(store);
    damaged = all.find((d) => d.kind === 'pinned')?.damage;
  } catch (error) {
    if (!(error instanceof SklError)) throw error;
    damaged = error.message;
    all = store.foreground();
  }
  try {
    const attachments: AttachmentStatus[] = [];
    for (const d of all) {
      const table = d.portTable();
      for (const s of d.slots()) {
        if (s.state !== SLOT_READY) continue;
        if (name !== undefined && s.name !== name) continue;
        const ports = d.portsOf(s.slot, table)[s.proto];
        const c = d.counters(s.slot);
        attachments.push({
          name: s.name,
          pid: s.pid,
          command: s.comm,
          protocol: s.proto,
          listener: listenerText(s),
          ports,
          portsText: compressPorts(ports),
          alive: d.socketAlive(s.slot),
          processAlive: processAlive(s.pid),
          redirected: c.redirected,
          missed: c.missed,
          filtered: c.filtered,
          addresses: d.filters(s.slot).map((f) => prefixText(f.addr, f.prefixLen)),
          mode: d.kind === 'pinned' ? 'persistent' : 'foreground',
          ...(d.kind === 'foreground' ? {ownerPid: s.ownerPid} : {}),
          createdAt: new Date(Number(s.createdNs / 1_000_000n)).toISOString(),
          netnsIno: ns.ino,
        });
      }
    }
    if (name !== undefined && attachments.length === 0) throw new SklError(`no attachment named ${name} in ${where(ns)}`);
    attachments.sort((a, b) => a.name.localeCompare(b.name));
    return {
      netns: ns.path,
      netnsIno: ns.ino,
      dispatcher: all.some((d) => d.kind === 'pinned'),
      ...(damaged ? {damaged} : {}),
      attachments,
      notices: [...store.notices],
    };
  } finally {
    closeAll(all);
  }
}
