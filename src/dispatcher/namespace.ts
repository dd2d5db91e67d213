/**
 * A network namespace's dispatchers seen together: the pinned one and the foreground ones, the
 * services they hold by name, and the rules every change obeys (one owner per binding; no
 * hijacking of a socket that already serves a bound address, unless forced).
 */
import {SklError} from '../sys/errors.js';
import {Netns} from '../sys/netns.js';
import {formatV6, serverSocketsHere, type Proto, type SocketEntry} from '../sys/sockets.js';
import {bindingId, bindingText, groupBindings, hijackedSocket, ownerOf, portsText, readBindings, type BindingSpec} from './bindings.js';
import {listenerText, prefixText, SVC_READY, type SocketMeta} from './layout.js';
import {socketText} from './services.js';
import type {DispatcherState, ServiceRecord} from './state.js';
import type {Store} from './store.js';

export const DEFAULT_NETNS = '/proc/self/ns/net';

/** "this network namespace" or the --netns path, for messages. */
export const where = (ns: Netns): string => (ns.path === DEFAULT_NETNS ? 'this network namespace' : `network namespace ${ns.path}`);

export function withNetns<T>(path: string | undefined, fn: (ns: Netns) => Promise<T>): Promise<T> {
  const ns = Netns.open(path ?? DEFAULT_NETNS);
  return fn(ns).finally(() => ns.close());
}

/** All dispatchers of the namespace: the pinned one first, then foreground ones. */
export function openAll(store: Store): DispatcherState[] {
  const pinned = store.openPinned();
  return [...(pinned ? [pinned] : []), ...store.foreground(pinned?.linkId ?? 0)];
}

export function closeAll(ds: DispatcherState[]): void {
  for (const d of ds) d.close();
}

export interface ServiceRef {
  state: DispatcherState;
  record: ServiceRecord;
}

/** Ready services of every dispatcher, by name. */
export function servicesByName(all: DispatcherState[]): Map<string, ServiceRef> {
  const out = new Map<string, ServiceRef>();
  for (const state of all) for (const record of state.services()) if (record.state === SVC_READY) out.set(record.name, {state, record});
  return out;
}

/** How to free what `owner` holds, for messages. */
function fixFor(owner: ServiceRef, proto: Proto, ports: string): string {
  return owner.state.kind === 'foreground'
    ? `stop its skl --foreground process (pid ${owner.record.ownerPid})`
    : `remove ${ports === 'all' || ports.includes(',') || ports.includes('-') ? 'them' : 'it'} there first (skl ports remove ${owner.record.name} ${ports}${proto === 'udp' ? ' --proto udp' : ''})`;
}

/** What foreground skl 0.1.0 processes hold in the namespace (they are never migrated, but still own their ports). */
export interface LegacyClaim {
  name: string;
  ownerPid: number;
  bindings: Set<string>;
}

export function legacyClaims(store: Store): LegacyClaim[] {
  const out: LegacyClaim[] = [];
  for (const l of store.legacyForeground()) {
    try {
      for (const s of l.services()) out.push({name: s.meta.name, ownerPid: s.meta.ownerPid, bindings: new Set(s.bindings.map(bindingId))});
    } finally {
      l.close();
    }
  }
  return out;
}

/** Refuse bindings another service already holds (the same protocol, prefix and port), naming the owner. */
export function checkClaims(all: DispatcherState[], self: ServiceRef | undefined, specs: readonly BindingSpec[], legacy: readonly LegacyClaim[] = []): void {
  for (const l of legacy) {
    const hit = specs.find((b) => l.bindings.has(bindingId(b)));
    if (hit) throw new SklError(`${bindingText(hit)} already belongs to ${l.name}, a foreground attachment of skl 0.1.0 process ${l.ownerPid}; stop that process first`);
  }
  const taken: {spec: BindingSpec; owner: ServiceRef}[] = [];
  const names = new Map<DispatcherState, Map<number, ServiceRecord>>();
  for (const d of all) names.set(d, new Map(d.services().filter((s) => s.state === SVC_READY).map((s) => [s.id, s])));
  // many bindings: read each dispatcher's bindings once instead of one lookup per binding
  const bulk = specs.length > 4096 ? all.map((d) => new Map(readBindings(d).map((b) => [bindingId(b), b.service]))) : undefined;
  for (const spec of specs) {
    for (const [n, d] of all.entries()) {
      const id = bulk ? bulk[n].get(bindingId(spec)) : ownerOf(d, spec);
      if (id === undefined || (self && self.state === d && self.record.id === id)) continue;
      const record = names.get(d)!.get(id);
      if (record) taken.push({spec, owner: {state: d, record}});
    }
  }
  if (taken.length === 0) return;
  const owner = taken[0].owner;
  const mine = taken.filter((x) => x.owner.record === owner.record);
  const group = groupBindings(mine.map((x) => x.spec))[0];
  const ports = portsText(group.ports);
  const plural = group.ports.length > 1 || group.ports[0] === 0;
  const prefix = group.prefix.len === 0 ? '' : ` for ${prefixText(group.prefix)}`;
  throw new SklError(
    `${group.proto.toUpperCase()} port${plural ? 's' : ''} ${ports}${prefix} already belong${plural ? '' : 's'} to ${owner.record.name}; ${fixFor(owner, group.proto, ports)}`,
  );
}

export interface SocketId {
  proto: Proto;
  family: 4 | 6;
  address: string;
  port: number;
  inode: number;
}

/** A service's recorded socket, as sock_diag spells it. */
export function socketId(m: SocketMeta): SocketId {
  const text = formatV6(m.listenAddr);
  return {proto: m.proto, family: m.family, address: m.family === 4 ? text.replace(/^::ffff:/, '') : text, port: m.listenPort, inode: m.sockIno};
}

/** Sockets that are the service's own: the same socket, or another member of the same listener (reuseport). */
export function ownSockets(sockets: readonly SocketId[]): (s: SocketEntry) => boolean {
  const ids = new Set(sockets.map((s) => `${s.proto}|${s.family}|${s.address}|${s.port}`));
  const inodes = new Set(sockets.map((s) => s.inode));
  return (s) => inodes.has(s.inode) || ids.has(`${s.proto}|${s.family}|${s.address}|${s.port}`);
}

/** Refuse bindings that would take connections another socket of the namespace serves today. */
export function checkHijack(ns: Netns, specs: readonly BindingSpec[], own: (s: SocketEntry) => boolean, force: boolean): void {
  if (force || specs.length === 0) return;
  const protos = [...new Set(specs.map((s) => s.proto))];
  const sockets = ns.run(() => serverSocketsHere(protos));
  const hit = hijackedSocket(specs, sockets.filter((s) => s.inode !== 0), own);
  if (!hit) return;
  const {binding, socket} = hit;
  throw new SklError(
    `${socket.proto.toUpperCase()} ${socketText(socket)} is already served by another socket, and binding ${bindingText(binding)} would take its connections (hijacking that service); leave it out (a narrower --address, other ports) or use --force`,
  );
}

export {listenerText};
