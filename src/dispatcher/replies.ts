/**
 * UDP replies from the extra port. sk_dispatch records the flow of a datagram it steers from an
 * extra port to a service with SVC_F_UDP_REPLIES (client address and port, local address, the
 * service's own port → the extra port); sk_reply, on the egress of every interface
 * (./interfaces.ts), makes the service's reply to that flow leave from the extra port. A datagram
 * sent straight to the service's own port forgets the flow, so a client that talks to both ports
 * from one socket gets each reply from the port it asked — the program does that only on ports
 * marked PORT_F_REPLY in add_ports, which this module keeps equal to "the own UDP port of some
 * ready service with the flag" (syncReplyPorts, after every change of services).
 */
import {UsageError} from '../sys/errors.js';
import {
  DESTS_PER_SERVICE,
  PORT_ENTRIES,
  PORT_F_REPLY,
  portIndex,
  protoIndex,
  SERVICE_SIZE,
  SOCKET_META_SIZE,
  SVC_F_UDP_REPLIES,
  SVC_READY,
  type ServiceMeta,
} from './layout.js';
import {u32Key} from '../bpf/map.js';
import type {DispatcherState} from './state.js';

/** rewrite: replies to a datagram that came in on an extra port leave from that port; off: from the service's own port. */
export type UdpRepliesMode = 'rewrite' | 'off';
export const UDP_REPLIES_MODES: readonly UdpRepliesMode[] = ['rewrite', 'off'];
export const DEFAULT_UDP_REPLIES: UdpRepliesMode = 'rewrite';

export function parseUdpReplies(text: string): UdpRepliesMode {
  const v = text.trim().toLowerCase();
  if (v === 'rewrite' || v === 'off') return v;
  throw new UsageError(`invalid --udp-replies ${JSON.stringify(text.slice(0, 40))}: use rewrite or off`);
}

const hasUdp = (sockets: ServiceMeta['sockets'] | readonly unknown[]): boolean =>
  sockets.some((s, i) => s !== undefined && s !== null && i >> 1 === protoIndex('udp'));

/** The service flags for a mode: the flag only on a service with a UDP socket (nothing to rewrite otherwise). */
export function udpRepliesFlags(flags: number, sockets: ServiceMeta['sockets'] | readonly unknown[], mode: UdpRepliesMode): number {
  return mode === 'rewrite' && hasUdp(sockets) ? flags | SVC_F_UDP_REPLIES : flags & ~SVC_F_UDP_REPLIES;
}

/** A service's mode (undefined when it has no UDP socket). */
export function udpRepliesOf(meta: Pick<ServiceMeta, 'flags' | 'sockets'>): UdpRepliesMode | undefined {
  if (!hasUdp(meta.sockets)) return undefined;
  return meta.flags & SVC_F_UDP_REPLIES ? 'rewrite' : 'off';
}

// struct skl_service (see layout.ts): state @0, flags @28, the socket records last (listen_port
// @12 and flags @15 of each, SKL_SOCK_F_USED = 1)
const FLAGS_AT = 28;
const SOCKETS_AT = SERVICE_SIZE - DESTS_PER_SERVICE * SOCKET_META_SIZE;

/**
 * The own UDP ports of the ready services with SVC_F_UDP_REPLIES, read from the raw records (no
 * decoding: apply and repair call this after every change, and a namespace holds up to 1,024).
 */
export function replyPorts(d: DispatcherState): Set<number> {
  const out = new Set<number>();
  for (const {bytes} of d.serviceRecords()) {
    if (bytes.readUInt32LE(0) !== SVC_READY || !(bytes.readUInt32LE(FLAGS_AT) & SVC_F_UDP_REPLIES)) continue;
    for (let dest = protoIndex('udp') * 2; dest < DESTS_PER_SERVICE; dest++) {
      const o = SOCKETS_AT + dest * SOCKET_META_SIZE;
      if (bytes.readUInt8(o + 15) & 1) out.add(bytes.readUInt16LE(o + 12));
    }
  }
  return out;
}

/** Turn a ready service's UDP replies on or off in place (one store the programs check), and the reply ports with it. */
export function setUdpReplies(d: DispatcherState, record: ServiceMeta & {id: number}, mode: UdpRepliesMode): void {
  d.writeService(record.id, {...record, flags: udpRepliesFlags(record.flags, record.sockets, mode)});
  syncReplyPorts(d, ownUdpPorts(record));
}

/** A service record's own UDP ports (of its socket records). */
export function ownUdpPorts(meta: Pick<ServiceMeta, 'sockets'>): number[] {
  return [...new Set(meta.sockets.filter((m) => m?.proto === 'udp').map((m) => m!.listenPort))];
}

/** The own UDP ports of service `id` as its record says now (none when the slot is free). */
export function recordedUdpPorts(d: DispatcherState, id: number): number[] {
  const v = d.maps.services.lookup(u32Key(id));
  if (!v) return [];
  const out = new Set<number>();
  for (let dest = protoIndex('udp') * 2; dest < DESTS_PER_SERVICE; dest++) {
    const o = SOCKETS_AT + dest * SOCKET_META_SIZE;
    if (v.readUInt8(o + 15) & 1) out.add(v.readUInt16LE(o + 12));
  }
  return [...out];
}

/**
 * Make add_ports' PORT_F_REPLY flags equal to the own UDP ports of the ready services with
 * SVC_F_UDP_REPLIES: set where missing, cleared where no such service is left (the other bits of
 * each entry, its bindings, are kept). `touched`: the ports whose flag may have to go (those of the
 * services just changed or removed, as they were); without it, every UDP port of the table is
 * looked at (a repair, an upgrade). `ready`: a service record about to be made ready, whose ports
 * count as wanted already. Under skl's lock; the kernel never writes add_ports.
 */
export function syncReplyPorts(d: DispatcherState, touched?: Iterable<number>, ready?: Pick<ServiceMeta, 'flags' | 'sockets'>): void {
  const want = replyPorts(d);
  // a service about to be made ready: its ports flagged first (a flag on a port whose service is not ready yet changes nothing)
  if (ready && ready.flags & SVC_F_UDP_REPLIES) for (const p of ownUdpPorts(ready)) want.add(p);
  const writes: [number, number][] = [];
  const clear = (index: number, v: number): void => {
    if (v & PORT_F_REPLY && !want.has(index & 0xffff)) writes.push([index, (v & ~PORT_F_REPLY) >>> 0]);
  };
  if (touched === undefined) {
    const udp = portIndex('udp', 0);
    for (const [index, v] of d.portTable()) if (index >= udp && index < PORT_ENTRIES) clear(index, v);
  } else {
    for (const port of touched) clear(portIndex('udp', port), d.portValue(portIndex('udp', port)));
  }
  for (const port of want) {
    const index = portIndex('udp', port);
    const v = d.portValue(index);
    if (!(v & PORT_F_REPLY)) writes.push([index, (v | PORT_F_REPLY) >>> 0]);
  }
  d.writePorts(writes);
}
