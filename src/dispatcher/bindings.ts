/**
 * Bindings: (protocol, local prefix, port) → service. Any-address bindings (prefix length 0) live
 * in the port table (add_ports), the others in a hash keyed by (protocol, family, port, prefix),
 * with the prefix lengths in use per (protocol, port, family) listed in the port table, longest
 * first (at most MAX_LENS); port 0 = all ports.
 * Precedence (the program's, mirrored by `resolve`): the longest prefix wins; on equal prefixes an
 * explicit port beats "all ports".
 */
import {BpfError} from '../bpf/errors.js';
import {SklError} from '../sys/errors.js';
import type {Family, Proto, SocketEntry} from '../sys/sockets.js';
import {compareNames, compressPorts} from './input.js';
import {
  addrBytes,
  anyPrefix,
  BINDING_KEY_SIZE,
  BINDING_SIZE,
  encodeBinding,
  encodeBindingKey,
  indexProto,
  MAX_BINDINGS,
  MAX_LENS,
  portIndex,
  type PortLen,
  portService,
  prefixContains,
  prefixText,
  withPortService,
  type Prefix,
} from './layout.js';
import type {DispatcherState} from './state.js';

const ENOSPC = 28;
const E2BIG = 7;

/** A binding without its service. port 0 = all ports. */
export interface BindingSpec {
  proto: Proto;
  prefix: Prefix;
  port: number;
}

export interface Binding extends BindingSpec {
  service: number;
}

const isAny = (b: BindingSpec): boolean => b.prefix.len === 0;
const prefixId = (p: Prefix): string => `${p.family}|${p.len}|${Buffer.from(p.addr.buffer, p.addr.byteOffset, 16).toString('hex')}`;
/** A binding's identity (protocol, prefix, port) as a string, cheap to compute for millions. */
export const bindingId = (b: BindingSpec): string => `${b.proto}|${b.port}|${prefixId(b.prefix)}`;
export const portText = (port: number): string => (port === 0 ? 'all' : String(port));
export const bindingText = (b: BindingSpec): string => `${b.proto.toUpperCase()} ${prefixText(b.prefix)} port ${portText(b.port)}`;

/** Every binding of a dispatcher. */
export function readBindings(d: DispatcherState, table = d.portTable()): Binding[] {
  const out: Binding[] = [];
  for (const [index, v] of table) {
    const proto = indexProto(index);
    const port = index & 0xffff;
    for (const family of [4, 6] as const) {
      const service = portService(v, family);
      if (service !== undefined) out.push({proto, port, prefix: anyPrefix(family), service});
    }
  }
  for (const e of d.tableEntries()) out.push(e);
  return out;
}

/** The bindings of one service, grouped by (protocol, prefix), ports ascending (0 = all first). */
export function groupBindings(list: readonly BindingSpec[]): {proto: Proto; prefix: Prefix; ports: number[]}[] {
  const groups = new Map<string, {proto: Proto; prefix: Prefix; ports: number[]}>();
  for (const b of list) {
    const id = `${b.proto}|${prefixId(b.prefix)}`;
    let g = groups.get(id);
    if (!g) groups.set(id, (g = {proto: b.proto, prefix: b.prefix, ports: []}));
    g.ports.push(b.port);
  }
  const out = [...groups.values()];
  for (const g of out) g.ports.sort((a, b) => a - b);
  return out.sort((a, b) => compareNames(a.proto, b.proto) || a.prefix.family - b.prefix.family || compareNames(prefixText(a.prefix), prefixText(b.prefix)));
}

/** "8001-8003,9000" or "all" (or "all,8001": an all-ports binding and explicit ones). */
export const portsText = (ports: readonly number[]): string =>
  [...(ports.includes(0) ? ['all'] : []), ...(ports.some((p) => p !== 0) ? [compressPorts(ports.filter((p) => p !== 0))] : [])].join(',');

/** The bindings to add for protocols × prefixes × ports. */
export function bindingSpecs(protos: readonly Proto[], prefixes: readonly Prefix[], ports: readonly number[]): BindingSpec[] {
  const out: BindingSpec[] = [];
  for (const proto of protos) for (const prefix of prefixes) for (const port of ports) out.push({proto, prefix, port});
  return out;
}

/** Which service the dispatcher's program picks for a lookup (the same rules, for tests and tools). */
export function resolve(list: readonly Binding[], proto: Proto, family: Family, addr: Uint8Array, port: number): number | undefined {
  let best: Binding | undefined;
  for (const b of list) {
    if (b.proto !== proto || (b.port !== port && b.port !== 0) || !prefixContains(b.prefix, family, addr)) continue;
    if (!best || b.prefix.len > best.prefix.len || (b.prefix.len === best.prefix.len && b.port !== 0 && best.port === 0)) best = b;
  }
  return best?.service;
}

/** The service that holds exactly this binding in a dispatcher, if any. */
export function ownerOf(d: DispatcherState, b: BindingSpec): number | undefined {
  const v = d.portValue(portIndex(b.proto, b.port));
  if (isAny(b)) return portService(v, b.prefix.family);
  return d.tableOwner(encodeBindingKey(b));
}

/**
 * Relist the prefix lengths of (protocol, family) ports, given the lengths each changed port's own
 * bindings now use (`own`, by port; port 0 = "all ports"). A port lists its own lengths and those
 * of "all ports" (copied into every port: one pass over one list is the whole precedence), at most
 * MAX_LENS: refused, changing nothing, when a port would list more. `check` only checks.
 */
function relist(d: DispatcherState, proto: Proto, family: Family, own: ReadonlyMap<number, ReadonlySet<number>>, check: boolean): void {
  const ownOf = (port: number): Set<number> => new Set(own.get(port) ?? d.portLens(portIndex(proto, port), family).filter((e) => e.own).map((e) => e.len));
  const all = ownOf(0);
  // every port when "all ports" changed, else the changed ones
  const ports = own.has(0) ? Array.from({length: 65535}, (_, i) => i + 1) : [...own.keys()];
  const lists = new Map<number, PortLen[]>();
  for (const port of ports) {
    const mine = ownOf(port);
    const lens = new Set([...mine, ...all]);
    if (lens.size > MAX_LENS) {
      throw new SklError(
        `too many prefix lengths: ${proto.toUpperCase()} port ${port} would have IPv${family} bindings of ${lens.size} different prefix lengths (${[...lens].sort((a, b) => b - a).map((x) => `/${x}`).join(' ')}), its own and "all ports"; skl allows ${MAX_LENS} per port and family; nothing was changed`,
      );
    }
    if (!check) lists.set(port, [...lens].map((len) => ({len, own: mine.has(len), all: all.has(len)})));
  }
  if (check) return;
  if (own.has(0)) d.writePortLens(portIndex(proto, 0), family, [...all].map((len) => ({len, own: true, all: false})));
  for (const [port, list] of lists) {
    const current = d.portLens(portIndex(proto, port), family);
    if (current.length === list.length && current.every((c) => list.some((e) => e.len === c.len && e.own === c.own && e.all === c.all))) continue;
    d.writePortLens(portIndex(proto, port), family, list);
  }
}

/** Per (protocol, family): port → the prefix lengths its own bindings will use, for the ports `list` touches. */
function ownLengths(d: DispatcherState, list: readonly BindingSpec[], add: boolean): Map<string, Map<number, Set<number>>> {
  const out = new Map<string, Map<number, Set<number>>>();
  for (const b of list) {
    if (isAny(b)) continue;
    const k = `${b.proto}|${b.prefix.family}`;
    let m = out.get(k);
    if (!m) out.set(k, (m = new Map()));
    let l = m.get(b.port);
    if (!l) m.set(b.port, (l = add ? new Set(d.portLens(portIndex(b.proto, b.port), b.prefix.family).filter((e) => e.own).map((e) => e.len)) : new Set()));
    if (add) l.add(b.prefix.len);
  }
  return out;
}

const groupKey = (k: string): {proto: Proto; family: Family} => {
  const [proto, family] = k.split('|');
  return {proto: proto === 'udp' ? 'udp' : 'tcp', family: family === '6' ? 6 : 4};
};

/**
 * Add bindings of a service: all or nothing (when the hash is full, what was added is removed
 * again). Prefix entries go in before their length is listed for their ports, any-address ones in
 * one store each. The caller has checked that no other service holds any of them.
 */
export function addBindings(d: DispatcherState, service: number, list: readonly BindingSpec[]): void {
  // the prefix lengths each port will list: refused before anything is written
  const lengths = ownLengths(d, list, true);
  for (const [k, own] of lengths) relist(d, groupKey(k).proto, groupKey(k).family, own, true);
  const mine = list.filter((b) => !isAny(b));
  const inserted: Buffer[] = [];
  try {
    // in chunks: one batch syscall each
    for (let at = 0; at < mine.length; at += BATCH) {
      const chunk = mine.slice(at, at + BATCH);
      const keys = Buffer.alloc(chunk.length * BINDING_KEY_SIZE);
      const values = Buffer.alloc(chunk.length * BINDING_SIZE);
      chunk.forEach((b, i) => {
        encodeBindingKey(b).copy(keys, i * BINDING_KEY_SIZE);
        encodeBinding(service, b.prefix.len).copy(values, i * BINDING_SIZE);
      });
      for (let i = 0; i < chunk.length; i++) inserted.push(keys.subarray(i * BINDING_KEY_SIZE, (i + 1) * BINDING_KEY_SIZE));
      d.tableInsertBatch(keys, values, chunk.length);
    }
  } catch (error) {
    for (const k of inserted) d.tableDelete(k);
    if (error instanceof BpfError && (error.errno === ENOSPC || error.errno === E2BIG)) {
      throw new SklError(`too many bindings: a namespace holds at most ${MAX_BINDINGS.toLocaleString('en-US')} bindings of a local prefix (--address); nothing was changed`);
    }
    throw error;
  }
  for (const [k, own] of lengths) relist(d, groupKey(k).proto, groupKey(k).family, own, false);
  const writes = new Map<number, number>();
  const current = (i: number): number => writes.get(i) ?? d.portValue(i);
  for (const b of list) {
    if (!isAny(b)) continue;
    const index = portIndex(b.proto, b.port);
    writes.set(index, withPortService(current(index), b.prefix.family, service));
  }
  d.writePorts(writes);
}

const BATCH = 16384;

/** Remove bindings (those of `service` only); the prefix lengths no binding uses any more are unlisted. */
export function removeBindings(d: DispatcherState, service: number, list: readonly BindingSpec[]): void {
  const writes = new Map<number, number>();
  const current = (i: number): number => writes.get(i) ?? d.portValue(i);
  const removed: BindingSpec[] = [];
  for (const b of list) {
    const index = portIndex(b.proto, b.port);
    if (isAny(b)) {
      const v = current(index);
      if (portService(v, b.prefix.family) === service) writes.set(index, withPortService(v, b.prefix.family, undefined));
      continue;
    }
    const key = encodeBindingKey(b);
    if (d.tableOwner(key) === service) {
      d.tableDelete(key);
      removed.push(b);
    }
  }
  if (removed.length) {
    // which prefix lengths the touched ports' own bindings still use
    const lengths = ownLengths(d, removed, false);
    for (const e of d.tableEntries()) {
      const l = lengths.get(`${e.proto}|${e.prefix.family}`)?.get(e.port);
      l?.add(e.prefix.len);
    }
    for (const [k, own] of lengths) relist(d, groupKey(k).proto, groupKey(k).family, own, false);
  }
  d.writePorts(writes);
}

/** Every binding of `service` in a dispatcher. */
export const bindingsOf = (d: DispatcherState, service: number, all = readBindings(d)): Binding[] => all.filter((b) => b.service === service);

/**
 * The first socket of the namespace that a binding would take connections from: one bound to an
 * address in the binding's prefix (or to the wildcard address of a family the binding is of) on
 * the binding's port (any port for an all-ports binding). `own` excludes the service's own sockets.
 */
export function hijackedSocket(list: readonly BindingSpec[], sockets: readonly (SocketEntry & {v6only?: boolean})[], own: (s: SocketEntry) => boolean): {binding: BindingSpec; socket: SocketEntry} | undefined {
  const byPort = new Map<string, BindingSpec[]>();
  for (const b of list) {
    const id = `${b.proto}|${b.port}`;
    const l = byPort.get(id);
    if (l) l.push(b);
    else byPort.set(id, [b]);
  }
  for (const s of sockets) {
    if (own(s)) continue;
    const candidates = [...(byPort.get(`${s.proto}|${s.port}`) ?? []), ...(byPort.get(`${s.proto}|0`) ?? [])];
    for (const b of candidates) if (serves(s, b.prefix)) return {binding: b, socket: s};
  }
  return undefined;
}

/** Whether a socket would receive connections to some address of the prefix. */
function serves(s: SocketEntry & {v6only?: boolean}, p: Prefix): boolean {
  const wildcard = s.address === '0.0.0.0' || s.address === '::';
  if (wildcard) return p.family === s.family || (s.family === 6 && p.family === 4 && s.v6only === false);
  const mapped = s.family === 6 && s.address.startsWith('::ffff:') && s.address.includes('.');
  const family: Family = mapped ? 4 : s.family;
  const addr = addrBytes(mapped ? s.address.slice(7) : s.address, family);
  return prefixContains(p, family, addr);
}

