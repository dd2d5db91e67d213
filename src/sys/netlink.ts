/**
 * Netlink dumps (NLM_F_DUMP): one request on a fresh socket, then every message of the answer
 * until NLMSG_DONE. What sock_diag (./sockdiag.ts: listening sockets) and the tc dumps of
 * src/bpf/tc.ts (qdiscs, filters) are made of.
 */
import {libc} from '../ffi/index.js';

const AF_NETLINK = 16;
const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0o2000000;
const NLM_F_REQUEST = 0x1;
const NLM_F_DUMP = 0x300;
const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const NLMSG_HDRLEN = 16;
const EINVAL = 22;

/** A dump that failed: at which step, with which errno (the kernel's own for an NLMSG_ERROR). */
export class NetlinkError extends Error {
  constructor(
    readonly step: 'socket' | 'send' | 'recv' | 'malformed' | 'error',
    readonly errno: number,
  ) {
    super(`netlink ${step}: errno ${errno}`);
  }
}

let seq = 0;

/**
 * Send a `type` request (`body`: what follows struct nlmsghdr) as a dump over a `protocol` socket
 * of the calling thread's network namespace, and call `each(type, payload)` for every message of
 * the answer (payload: what follows its nlmsghdr). Throws NetlinkError.
 */
export function netlinkDump(protocol: number, type: number, body: Buffer, each: (type: number, payload: Buffer) => void): void {
  const fd = libc.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, protocol);
  if (fd < 0) throw new NetlinkError('socket', libc.errno());
  try {
    const req = Buffer.alloc(NLMSG_HDRLEN + body.length);
    req.writeUInt32LE(req.length, 0);
    req.writeUInt16LE(type, 4);
    req.writeUInt16LE(NLM_F_REQUEST | NLM_F_DUMP, 6);
    req.writeUInt32LE(++seq, 8);
    body.copy(req, NLMSG_HDRLEN);
    if (libc.send(fd, req, req.length, 0) !== req.length) throw new NetlinkError('send', libc.errno());
    const buf = Buffer.alloc(64 * 1024); // a dump message fits in 32 KiB (the kernel's cap)
    for (;;) {
      const n = libc.recv(fd, buf, buf.length, 0);
      if (n <= 0) throw new NetlinkError('recv', n < 0 ? libc.errno() : EINVAL);
      for (let off = 0; off + NLMSG_HDRLEN <= n; ) {
        const len = buf.readUInt32LE(off);
        const t = buf.readUInt16LE(off + 4);
        if (len < NLMSG_HDRLEN || off + len > n) throw new NetlinkError('malformed', EINVAL);
        if (t === NLMSG_DONE) return;
        if (t === NLMSG_ERROR) {
          const e = -buf.readInt32LE(off + NLMSG_HDRLEN);
          if (e !== 0) throw new NetlinkError('error', e);
        } else {
          each(t, buf.subarray(off + NLMSG_HDRLEN, off + len));
        }
        off += (len + 3) & ~3;
      }
    }
  } finally {
    libc.close(fd);
  }
}
