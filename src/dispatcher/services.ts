/**
 * Services as processes really listen: a service is a name, a target process, and per (protocol,
 * family) the socket that serves it. This file finds the sockets that form one listener (the v4
 * and v6 sockets of a port, one member of a reuseport group, TCP and UDP of the same port) and
 * takes a copy of each out of the process (pidfd_getfd).
 */
import {closeSync, fstatSync} from 'node:fs';
import {duplicateFd} from '../sys/pidfd.js';
import {SklError, UsageError} from '../sys/errors.js';
import {processInfo} from '../sys/proc.js';
import {serverSocketsOf, socketFdInfo, type Family, type ProcessSocket, type Proto} from '../sys/sockets.js';
import {socketNetnsIno} from '../sys/netns.js';
import {addrBytes, DESTS_PER_SERVICE, protoIndex, SVC_F_REMOVING, SVC_PENDING, SVC_READY, type ServiceMeta, type SocketMeta} from './layout.js';
import {addBindings, bindingsOf, removeBindings, type BindingSpec} from './bindings.js';
import {crashPoint} from './faults.js';
import {journaled, PHASE, type JournalPlace} from './journal.js';
import type {DispatcherState} from './state.js';
import {parseAddress} from './input.js';
import {DEFAULT_UDP_REPLIES, recordedUdpPorts, syncReplyPorts, udpRepliesFlags, type UdpRepliesMode} from './replies.js';

export interface ListenerChoice {
  /** undefined: every address, both families */
  address?: string;
  port: number;
}

export interface ServiceSpec {
  pid: number;
  protos: Proto[];
  /** fd numbers in the target process */
  fds?: number[];
  /** pick the sockets bound to these address:port */
  listeners?: ListenerChoice[];
  /** how the caller would retry with a --listener (for the ambiguity hint) */
  retry?: (listener: string) => string;
}

export interface TakenSocket extends ProcessSocket {
  /** our duplicate: the caller closes it once stored */
  dup: number;
  v6only: boolean;
  pid: number;
}

export interface TakenService {
  pid: number;
  comm: string;
  netnsIno: number | undefined;
  /** every socket taken (one per protocol and family of socket) */
  sockets: TakenSocket[];
  /** by destination index (protocol * 2 + traffic family is 6): the socket that serves it */
  dests: (TakenSocket | undefined)[];
}

const kind = (proto: Proto): string => (proto === 'tcp' ? 'listening TCP' : 'unconnected UDP');
export const socketText = (s: Pick<ProcessSocket, 'family' | 'address' | 'port'>): string => (s.family === 6 ? `[${s.address}]:${s.port}` : `${s.address}:${s.port}`);
const sockText = (s: ProcessSocket): string => `${s.proto.toUpperCase()} ${socketText(s)} (fd ${s.fd})`;

/** The same IP however it is spelt ("::1" = "0:0::1"). */
function sameAddress(a: string, b: string): boolean {
  const pa = parseAddress(a);
  const pb = parseAddress(b);
  return pa.family === pb.family && Buffer.from(pa.addr).equals(Buffer.from(pb.addr));
}

function candidates(pid: number, protos: Proto[]): ProcessSocket[] {
  const info = processInfo(pid);
  if (!info) throw new SklError(`process ${pid} does not exist`);
  if (info.kernelThread) throw new SklError(`process ${pid} (${info.comm}) is a kernel thread: it has no sockets to take`);
  try {
    return serverSocketsOf(pid, protos);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ESRCH') throw new SklError(`process ${pid} exited`);
    if (code === 'EACCES' || code === 'EPERM') throw new SklError(`not permitted to inspect process ${pid}'s sockets: needs ptrace access to it (CAP_SYS_PTRACE): run as root`);
    throw error;
  }
}

/** The sockets that form the one listener the spec designates; refuses (listing the choices) when ambiguous. */
export function chooseSockets(spec: ServiceSpec): {sockets: ProcessSocket[]; comm: string} {
  const comm = processInfo(spec.pid)?.comm ?? '?';
  const all = candidates(spec.pid, spec.protos);
  let socks = all;
  if (spec.fds?.length) socks = socks.filter((s) => spec.fds!.includes(s.fd));
  if (spec.listeners?.length) socks = socks.filter((s) => spec.listeners!.some((l) => s.port === l.port && (l.address === undefined || sameAddress(s.address, l.address))));
  const list = all.map(sockText).join(', ');
  const what = kind(spec.protos[0]) + (spec.protos.length > 1 ? ` or ${kind(spec.protos[1])}` : '');
  if (socks.length === 0) {
    if (all.length === 0) {
      const others = (['tcp', 'udp'] as const).filter((p) => !spec.protos.includes(p));
      const other = others.find((p) => serverSocketsOf(spec.pid, p).length > 0);
      const hint = other ? ` (it has ${kind(other)} sockets: use --proto ${other})` : '';
      throw new SklError(`process ${spec.pid} (${comm}) has no ${what} socket${hint}`);
    }
    const chosen = [...(spec.fds ?? []).map((f) => `--fd ${f}`), ...(spec.listeners ?? []).map((l) => `--listener ${l.address ?? ''}:${l.port}`)].join(' ');
    throw new UsageError(`${chosen} matches none of process ${spec.pid}'s ${what} sockets: ${list}`);
  }
  const ports = [...new Set(socks.map((s) => s.port))].sort((a, b) => a - b);
  if (ports.length > 1) {
    const example = spec.retry ? `; e.g. ${spec.retry(`:${ports[0]}`)}` : '';
    throw new UsageError(
      `process ${spec.pid} (${comm}) listens on ${ports.length} ports (${socks.map(sockText).join(', ')}): choose one with --listener :PORT (or ADDR:PORT, --fd N)${example}`,
    );
  }
  for (const proto of spec.protos) {
    const mine = socks.filter((s) => s.proto === proto);
    if (mine.length === 0) throw new SklError(`process ${spec.pid} (${comm}) has no ${kind(proto)} socket on port ${ports[0]} (it has: ${list}); leave ${proto.toUpperCase()} out of --proto`);
    for (const family of [4, 6] as const) {
      const addrs = [...new Set(mine.filter((s) => s.family === family).map((s) => s.address))];
      if (addrs.length > 1) {
        const first = socketText({family, address: addrs[0], port: ports[0]});
        const example = spec.retry ? `; e.g. ${spec.retry(first)}` : '';
        throw new UsageError(
          `process ${spec.pid} (${comm}) has ${proto.toUpperCase()} IPv${family} sockets on ${addrs.length} addresses of port ${ports[0]} (${addrs.map((a) => socketText({family, address: a, port: ports[0]})).join(', ')}): choose one with --listener ADDR:PORT${example}`,
        );
      }
    }
  }
  // one socket per (protocol, family, address): any member of a reuseport group will do (the kernel balances over the group)
  const seen = new Set<string>();
  const chosen = socks.filter((s) => {
    const id = `${s.proto}|${s.family}|${s.address}`;
    if (seen.has(id)) return false;
    seen.add(id);
    return true;
  });
  return {sockets: chosen, comm};
}

/** Choose and duplicate the service's sockets. The caller must call releaseService. */
export function takeService(spec: ServiceSpec): TakenService {
  const {sockets, comm} = chooseSockets(spec);
  const taken: TakenSocket[] = [];
  try {
    for (const socket of sockets) {
      const dup = duplicateFd(spec.pid, socket.fd);
      taken.push({...socket, dup, v6only: false, pid: spec.pid});
      const info = socketFdInfo(dup);
      // the fd could have been reused between listing and duplicating: check it is the same socket
      if (!info || info.protocol !== (socket.proto === 'tcp' ? 6 : 17) || fstatSync(dup).ino !== socket.inode) {
        throw new SklError(`process ${spec.pid}'s fd ${socket.fd} changed while skl was taking it; retry`);
      }
      if (socket.proto === 'tcp' && !info.listening) throw new SklError(`process ${spec.pid}'s fd ${socket.fd} is no longer listening`);
      taken[taken.length - 1].v6only = info.v6only;
    }
    const netns = new Set(taken.map((t) => socketNetnsIno(t.dup)));
    return {pid: spec.pid, comm, netnsIno: netns.size === 1 ? [...netns][0] : undefined, sockets: taken, dests: destinations(taken)};
  } catch (error) {
    for (const t of taken) closeSync(t.dup);
    throw error;
  }
}

export function releaseService(t: TakenService): void {
  for (const s of t.sockets) closeSync(s.dup);
}

const wildcard = (s: ProcessSocket): boolean => s.address === '0.0.0.0' || s.address === '::';

/** IPv4 goes to the IPv4 socket (or a dual-stack [::] one), IPv6 to the IPv6 socket. */
function destinations(sockets: TakenSocket[]): (TakenSocket | undefined)[] {
  const dests: (TakenSocket | undefined)[] = new Array(DESTS_PER_SERVICE).fill(undefined);
  for (const proto of ['tcp', 'udp'] as const) {
    const v4 = sockets.find((s) => s.proto === proto && s.family === 4);
    const v6 = sockets.find((s) => s.proto === proto && s.family === 6);
    const dual = v6 && !v6.v6only && wildcard(v6) ? v6 : undefined;
    dests[protoIndex(proto) * 2] = v4 ?? dual;
    dests[protoIndex(proto) * 2 + 1] = v6;
  }
  return dests;
}

/** Traffic families a service serves for a protocol. */
export function familiesOf(sockets: readonly (unknown | undefined)[], proto: Proto): Family[] {
  return ([4, 6] as const).filter((f) => sockets[protoIndex(proto) * 2 + (f === 6 ? 1 : 0)] !== undefined);
}

/** The record of a taken service (state set by the caller); a UDP service's replies are rewritten unless `udpReplies` is 'off'. */
export function serviceMeta(t: TakenService, name: string, netnsIno: number, ownerPid: number, state: number, udpReplies: UdpRepliesMode = DEFAULT_UDP_REPLIES): ServiceMeta {
  return {
    state,
    pid: t.pid,
    createdNs: BigInt(Date.now()) * 1_000_000n,
    netnsIno,
    ownerPid,
    flags: udpRepliesFlags(0, t.dests, udpReplies),
    comm: t.comm,
    name,
    cgroupIno: 0,
    sockets: t.dests.map((s): SocketMeta | undefined =>
      s && {proto: s.proto, family: s.family, v6only: s.v6only, pid: s.pid, listenPort: s.port, listenAddr: addrBytes(s.address, s.family), sockIno: s.inode},
    ),
  };
}

/**
 * Write a new service into a free id: marked pending until complete (the program ignores it, and
 * the next skl rolls back a pending service left by an interrupted one), then ready.
 */
export function writeNewService(d: DispatcherState, id: number, meta: ServiceMeta, t: TakenService, list: readonly BindingSpec[], whilePending?: () => void): void {
  d.writeService(id, {...meta, state: SVC_PENDING});
  crashPoint('attach:pending');
  for (let i = 0; i < DESTS_PER_SERVICE; i++) d.clearSpares(id * DESTS_PER_SERVICE + i);
  whilePending?.();
  d.resetCounters(id);
  t.dests.forEach((s, i) => s && d.setSocket(id * DESTS_PER_SERVICE + i, s.dup));
  crashPoint('attach:socket-stored');
  addBindings(d, id, list);
  crashPoint('attach:ports-written');
  syncReplyPorts(d, [], meta);
  d.writeService(id, {...meta, state: SVC_READY});
}

/**
 * Replace a ready service's sockets in place (each SOCKMAP update is atomic: no moment where a
 * port refuses) and its record.
 */
export function replaceSockets(d: DispatcherState, id: number, meta: ServiceMeta, t: TakenService): void {
  const was = recordedUdpPorts(d, id);
  t.dests.forEach((s, i) => {
    if (s) d.setSocket(id * DESTS_PER_SERVICE + i, s.dup);
  });
  t.dests.forEach((s, i) => {
    if (!s) d.deleteSocket(id * DESTS_PER_SERVICE + i);
    d.clearSpares(id * DESTS_PER_SERVICE + i);
  });
  d.writeService(id, {...meta, state: SVC_READY});
  syncReplyPorts(d, was);
}

/**
 * Replace a ready service's process in place, journaled: its new bindings first, then each socket
 * (one atomic SOCKMAP update each: no moment where a port refuses) and its record, then the
 * bindings it no longer has. Killed before the first socket swap, the next skl rolls it back;
 * after, it finishes it (taking the new sockets again from their process).
 */
export function replaceService(place: JournalPlace, d: DispatcherState, id: number, meta: ServiceMeta, t: TakenService, add: readonly BindingSpec[], remove: readonly BindingSpec[]): void {
  const change = {phase: PHASE.replaceAdding, id, meta: {...meta, state: SVC_READY}, add, remove};
  const was = recordedUdpPorts(d, id);
  journaled(place, d, change, (j) => {
    addBindings(d, id, add);
    crashPoint('replace:bindings-added');
    j.phase(PHASE.replaceSwitching);
    let swapped = 0;
    t.dests.forEach((s, i) => {
      if (!s) return;
      d.setSocket(id * DESTS_PER_SERVICE + i, s.dup);
      if (swapped++ === 0) crashPoint('replace:socket-swapped');
    });
    t.dests.forEach((s, i) => {
      if (!s) d.deleteSocket(id * DESTS_PER_SERVICE + i);
      // the previous process's spare sockets (a followed service's) are not the new one's
      d.clearSpares(id * DESTS_PER_SERVICE + i);
    });
    d.writeService(id, {...meta, state: SVC_READY});
    syncReplyPorts(d, was);
    crashPoint('replace:record-written');
    removeBindings(d, id, remove);
    crashPoint('replace:bindings-removed');
  }, 'replace:journaled');
}

/** Stop a service steering (pending: one store the program checks), marked as being removed. */
export function stopService(d: DispatcherState, id: number): void {
  const meta = d.services().find((s) => s.id === id);
  if (meta && meta.state !== SVC_PENDING) d.writeService(id, {...meta, state: SVC_PENDING, flags: meta.flags | SVC_F_REMOVING});
}

/**
 * Remove everything a service holds. It stops steering first, so an interruption leaves a pending
 * service the next skl finishes removing.
 */
export function removeService(d: DispatcherState, id: number): void {
  const was = recordedUdpPorts(d, id);
  stopService(d, id);
  // no longer ready: its reply ports lose the flag (unless another service has the same)
  syncReplyPorts(d, was);
  crashPoint('detach:pending');
  removeBindings(d, id, bindingsOf(d, id));
  crashPoint('detach:bindings-removed');
  for (const x of d.followEntries()) if (x.service === id) d.deleteFollow(x.key);
  for (let i = 0; i < DESTS_PER_SERVICE; i++) {
    d.deleteSocket(id * DESTS_PER_SERVICE + i);
    d.clearSpares(id * DESTS_PER_SERVICE + i);
  }
  d.resetCounters(id);
  d.clearService(id);
}
