/**
 * Server sockets (listening TCP, unconnected UDP) of the calling thread's network namespace via
 * NETLINK_SOCK_DIAG (inet_diag), the interface `ss` uses. Asking for the LISTEN state only, the
 * kernel walks just its listening hash; reading /proc/net/tcp{,6} walks the whole established hash
 * (262,144 buckets on a 4 GiB machine, more on bigger ones: ≈5 ms per file here, tens of ms on
 * large servers), whatever the namespace holds. Returns undefined when sock_diag is unavailable,
 * so callers fall back to /proc.
 */
import type {Family, Proto, SocketEntry} from './sockets.js';
import {formatV6} from './sockets.js';
import {netlinkDump, NetlinkError} from './netlink.js';

const NETLINK_SOCK_DIAG = 4;
const SOCK_DIAG_BY_FAMILY = 20;
const REQ_LEN = 56; // struct inet_diag_req_v2
const MSG_LEN = 72; // struct inet_diag_msg
const TCP_LISTEN = 10;
const TCP_CLOSE = 7; // an unconnected UDP socket
const IPPROTO = {tcp: 6, udp: 17} as const;
const AF = {4: 2, 6: 10} as const;

/** One dump: sockets of a protocol and family in the given states. undefined: sock_diag unusable. */
function dump(proto: Proto, family: Family, state: number): SocketEntry[] | undefined {
  const req = Buffer.alloc(REQ_LEN);
  req.writeUInt8(AF[family], 0); // sdiag_family
  req.writeUInt8(IPPROTO[proto], 1); // sdiag_protocol
  req.writeUInt32LE(1 << state, 4); // idiag_states
  const out: SocketEntry[] = [];
  try {
    netlinkDump(NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, req, (type, m) => {
      if (type === SOCK_DIAG_BY_FAMILY && m.length >= MSG_LEN) out.push(entry(m, proto, family));
    });
  } catch (error) {
    // e.g. no inet_diag/udp_diag, or IPv6 off
    if (error instanceof NetlinkError) return undefined;
    throw error;
  }
  return out;
}

const INET_DIAG_SKV6ONLY = 11;

/** struct inet_diag_msg (+ its attributes) → the same entry /proc/net/* parsing gives, plus v6only for IPv6. */
function entry(m: Buffer, proto: Proto, family: Family): SocketEntry {
  const addr = (at: number): string => (family === 4 ? `${m[at]}.${m[at + 1]}.${m[at + 2]}.${m[at + 3]}` : formatV6(m.subarray(at, at + 16)));
  return {
    proto,
    family,
    address: addr(8),
    port: m.readUInt16BE(4),
    remoteAddress: addr(24),
    remotePort: m.readUInt16BE(6),
    state: m[1],
    inode: m.readUInt32LE(68),
    ...(family === 6 ? {v6only: v6onlyAttr(m)} : {}),
  };
}

/** The INET_DIAG_SKV6ONLY attribute the kernel adds for every IPv6 socket (undefined when absent). */
function v6onlyAttr(m: Buffer): boolean | undefined {
  for (let off = MSG_LEN; off + 4 <= m.length; ) {
    const len = m.readUInt16LE(off);
    if (len < 4) return undefined;
    if (m.readUInt16LE(off + 2) === INET_DIAG_SKV6ONLY && len >= 5) return m[off + 4] === 1;
    off += (len + 3) & ~3;
  }
  return undefined;
}

/**
 * Listening TCP / unconnected UDP sockets of the calling thread's namespace (IPv4 and IPv6), or
 * undefined when sock_diag cannot answer (no inet_diag/udp_diag, IPv6 disabled, ...): then read
 * /proc/net/*, which copes with all of those.
 */
export function diagServerSockets(protos: readonly Proto[]): SocketEntry[] | undefined {
  const out: SocketEntry[] = [];
  for (const proto of protos) {
    const state = proto === 'tcp' ? TCP_LISTEN : TCP_CLOSE;
    for (const family of [4, 6] as const) {
      const got = dump(proto, family, state);
      if (got === undefined) return undefined;
      out.push(...got);
    }
  }
  return out;
}
