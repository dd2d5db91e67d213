/** bpf_obj_get_info_by_fd for maps and links (struct layouts of linux/bpf.h). */
import {libbpf} from '../ffi/index.js';
import {allocZero, close as closeFd} from '../ffi/libc.js';
import {errorFor} from './errors.js';

const ENOENT = 2;

export interface MapInfo {
  type: number;
  id: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  name: string;
}

function infoByFd(fd: number, size: number): Buffer {
  const buf = Buffer.alloc(size);
  const len: [number] = [size];
  const rc = libbpf.bpf_obj_get_info_by_fd(fd, buf, len);
  if (rc < 0) throw Object.assign(new Error(`bpf_obj_get_info_by_fd: errno ${-rc}`), {errno: -rc});
  return buf;
}

const cstr = (b: Buffer): string => {
  const end = b.indexOf(0);
  return b.subarray(0, end < 0 ? b.length : end).toString();
};

export function mapInfoByFd(fd: number): MapInfo {
  const b = infoByFd(fd, 96);
  return {
    type: b.readUInt32LE(0),
    id: b.readUInt32LE(4),
    keySize: b.readUInt32LE(8),
    valueSize: b.readUInt32LE(12),
    maxEntries: b.readUInt32LE(16),
    name: cstr(b.subarray(24, 40)),
  };
}

export interface LinkInfo {
  type: number;
  id: number;
  progId: number;
  /** netns links: the namespace inode and attach type. xdp links: ifindex in `netnsIno`'s place; tcx links: ifindex, attach type. */
  netnsIno: number;
  attachType: number;
  ifindex: number;
  /** cgroup links: the cgroup's id (its cgroup2 directory's inode) */
  cgroupId?: number;
}

export const BPF_LINK_TYPE_CGROUP = 3;
export const BPF_LINK_TYPE_NETNS = 5;
export const BPF_LINK_TYPE_XDP = 6;
/** TCX links (Linux ≥6.6): ifindex and attach type (BPF_TCX_INGRESS/EGRESS) in the info. */
export const BPF_LINK_TYPE_TCX = 11;

export function linkInfoByFd(fd: number): LinkInfo {
  const b = infoByFd(fd, 64);
  const type = b.readUInt32LE(0);
  return {
    type,
    id: b.readUInt32LE(4),
    progId: b.readUInt32LE(8),
    netnsIno: type === BPF_LINK_TYPE_NETNS ? b.readUInt32LE(16) : 0,
    attachType: type === BPF_LINK_TYPE_NETNS || type === BPF_LINK_TYPE_TCX ? b.readUInt32LE(20) : 0,
    ifindex: type === BPF_LINK_TYPE_XDP || type === BPF_LINK_TYPE_TCX ? b.readUInt32LE(16) : 0,
    ...(type === BPF_LINK_TYPE_CGROUP ? {cgroupId: Number(b.readBigUInt64LE(16)), attachType: b.readUInt32LE(24)} : {}),
  };
}

/** A program's run statistics: what the kernel counted while statistics were on (enableRunStats). */
export interface ProgRunStats {
  runTimeNs: bigint;
  runCnt: bigint;
}

/** struct bpf_prog_info's run_time_ns (offset 192) and run_cnt (200). */
export function progRunStats(fd: number): ProgRunStats {
  const b = infoByFd(fd, 208);
  return {runTimeNs: b.readBigUInt64LE(192), runCnt: b.readBigUInt64LE(200)};
}

/**
 * Turn on the kernel's per-program run time statistics (BPF_ENABLE_STATS with BPF_STATS_RUN_TIME,
 * Linux ≥5.8) until `close()` (they cost every program two clock reads per run meanwhile).
 */
export function enableRunStats(): {close(): void} {
  const fd = libbpf.bpf_enable_stats(0);
  if (fd < 0) throw errorFor('enable BPF run time statistics', -fd);
  return {close: () => void closeFd(fd)};
}

export interface ProgInfo {
  type: number;
  id: number;
  name: string;
}

export function progInfoByFd(fd: number): ProgInfo {
  const b = infoByFd(fd, 128);
  return {type: b.readUInt32LE(0), id: b.readUInt32LE(4), name: cstr(b.subarray(64, 80))};
}

/** Ids of all BPF objects of a kind currently in the kernel. */
export function* mapIds(): Generator<number> {
  yield* ids(libbpf.bpf_map_get_next_id);
}
export function* linkIds(): Generator<number> {
  yield* ids(libbpf.bpf_link_get_next_id);
}
function* ids(next: (start: number, out: [number]) => number): Generator<number> {
  let id = 0;
  for (;;) {
    const out: [number] = [0];
    const rc = next(id, out);
    if (rc === -ENOENT) return; // no more
    // anything else (EPERM without CAP_SYS_ADMIN) must not pass for "there are none"
    if (rc < 0) throw errorFor('list BPF objects', -rc);
    id = out[0];
    yield id;
  }
}

/**
 * For each bpf_link attached to the network namespace with inode `netnsIno` with `attachType`
 * (BPF_SK_LOOKUP, …), in any process: `fn(fd of its program, the link's info)`; the fds are closed
 * afterwards. A link or program that goes away meanwhile is skipped.
 */
export function forEachNetnsLink(netnsIno: number, attachType: number, fn: (progFd: number, link: LinkInfo) => void): void {
  for (const id of linkIds()) {
    const lfd = libbpf.bpf_link_get_fd_by_id(id);
    if (lfd < 0) continue;
    try {
      let info: LinkInfo;
      try {
        info = linkInfoByFd(lfd);
      } catch {
        continue; // released meanwhile
      }
      if (info.type !== BPF_LINK_TYPE_NETNS || info.attachType !== attachType || info.netnsIno !== netnsIno) continue;
      const pfd = libbpf.bpf_prog_get_fd_by_id(info.progId);
      if (pfd < 0) continue;
      try {
        fn(pfd, info);
      } finally {
        closeFd(pfd);
      }
    } finally {
      closeFd(lfd);
    }
  }
}

/** Ids of the maps a program uses. */
export function progMapIds(fd: number): number[] {
  const first = infoByFd(fd, 128);
  const n = first.readUInt32LE(52);
  if (n === 0) return [];
  const ids = allocZero(4 * n);
  try {
    const b = Buffer.alloc(128);
    b.writeUInt32LE(n, 52);
    b.writeBigUInt64LE(ids.ptr, 56);
    const len: [number] = [128];
    const rc = libbpf.bpf_obj_get_info_by_fd(fd, b, len);
    if (rc < 0) throw Object.assign(new Error(`bpf_obj_get_info_by_fd: errno ${-rc}`), {errno: -rc});
    const view = Buffer.from(ids.view);
    return Array.from({length: Math.min(n, b.readUInt32LE(52))}, (_, i) => view.readUInt32LE(i * 4));
  } finally {
    ids.free();
  }
}
