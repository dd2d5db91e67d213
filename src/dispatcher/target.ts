/** Find a process's server socket and take a copy of it (pidfd_getfd). */
import {closeSync, fstatSync} from 'node:fs';
import {duplicateFd} from '../sys/pidfd.js';
import {SklError, UsageError} from '../sys/errors.js';
import {processInfo} from '../sys/proc.js';
import {serverSocketsOf, socketFdInfo, type ProcessSocket, type Proto} from '../sys/sockets.js';
import {socketNetnsIno} from '../sys/netns.js';
import {parseAddress} from './input.js';

export interface TargetSpec {
  pid: number;
  proto: Proto;
  /** fd number in the target process */
  fd?: number;
  /** pick the socket bound to this address:port */
  listener?: {address?: string; port: number};
}

export interface Target {
  pid: number;
  comm: string;
  proto: Proto;
  socket: ProcessSocket;
  /** our duplicate of the socket: close it once stored */
  fd: number;
  family: 4 | 6;
  v6only: boolean;
  netnsIno: number | undefined;
}

const sockText = (s: ProcessSocket): string => `fd ${s.fd} ${s.family === 6 ? `[${s.address}]` : s.address}:${s.port}`;
const kind = (proto: Proto): string => (proto === 'tcp' ? 'listening TCP' : 'unconnected UDP');

/** The same IP however it is spelt ("::1" = "0:0::1"; an IPv4 address = its v4-mapped IPv6 form). */
function sameAddress(a: string, b: string): boolean {
  return Buffer.from(parseAddress(a).addr).equals(parseAddress(b).addr);
}

function candidates(spec: TargetSpec): ProcessSocket[] {
  const info = processInfo(spec.pid);
  if (!info) throw new SklError(`process ${spec.pid} does not exist`);
  if (info.kernelThread) throw new SklError(`process ${spec.pid} (${info.comm}) is a kernel thread: it has no sockets to take`);
  try {
    return serverSocketsOf(spec.pid, spec.proto);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ESRCH') throw new SklError(`process ${spec.pid} exited`);
    if (code === 'EACCES' || code === 'EPERM') throw new SklError(`not permitted to inspect process ${spec.pid}'s sockets: needs ptrace access to it (CAP_SYS_PTRACE): run as root`);
    throw error;
  }
}

/** The one socket the spec designates; refuses (listing the choices) when it is ambiguous. */
export function chooseSocket(spec: TargetSpec): {socket: ProcessSocket; comm: string} {
  const comm = processInfo(spec.pid)?.comm ?? '?';
  let socks = candidates(spec);
  const all = socks;
  if (spec.fd !== undefined) socks = socks.filter((s) => s.fd === spec.fd);
  if (spec.listener) {
    const l = spec.listener;
    socks = socks.filter((s) => s.port === l.port && (l.address === undefined || sameAddress(s.address, l.address)));
  }
  if (socks.length === 1) return {socket: socks[0], comm};
  const list = all.map(sockText).join(', ');
  if (socks.length === 0) {
    if (all.length === 0) {
      const other = spec.proto === 'tcp' ? 'udp' : 'tcp';
      const hint = serverSocketsOf(spec.pid, other).length ? ` (it has ${kind(other)} sockets: use --proto ${other})` : '';
      throw new SklError(`process ${spec.pid} (${comm}) has no ${kind(spec.proto)} socket${hint}`);
    }
    const what = spec.fd !== undefined ? `--fd ${spec.fd}` : `--listener ${spec.listener!.address ?? '*'}:${spec.listener!.port}`;
    throw new UsageError(`${what} matches none of process ${spec.pid}'s ${kind(spec.proto)} sockets: ${list}`);
  }
  throw new UsageError(
    `process ${spec.pid} (${comm}) has ${socks.length} ${kind(spec.proto)} sockets: ${socks.map(sockText).join(', ')}; choose one with --listener ADDR:PORT or --fd N`,
  );
}

/** Choose and duplicate the target socket. The caller must close `target.fd`. */
export function takeTarget(spec: TargetSpec): Target {
  const {socket, comm} = chooseSocket(spec);
  const fd = duplicateFd(spec.pid, socket.fd);
  try {
    const info = socketFdInfo(fd);
    const wantProto = spec.proto === 'tcp' ? 6 : 17;
    // the fd could have been reused between listing and duplicating: check it is the same socket
    if (!info || info.protocol !== wantProto || fstatSync(fd).ino !== socket.inode) {
      throw new SklError(`process ${spec.pid}'s fd ${socket.fd} changed while skl was taking it; retry`);
    }
    if (spec.proto === 'tcp' && !info.listening) throw new SklError(`process ${spec.pid}'s fd ${socket.fd} is no longer listening`);
    return {
      pid: spec.pid,
      comm,
      proto: spec.proto,
      socket,
      fd,
      family: info.domain === 10 ? 6 : 4,
      v6only: info.v6only,
      netnsIno: socketNetnsIno(fd),
    };
  } catch (error) {
    closeSync(fd);
    throw error;
  }
}
