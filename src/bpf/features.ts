/**
 * Kernel feature probes: each feature skl uses (or is about to use), the oldest Linux that has it,
 * and a real probe on the running kernel — a tiny program loaded, a tiny map created, a link made,
 * a helper tried — never a version table alone (distribution kernels backport, and configs differ).
 *
 * Probes that attach something (netns links, XDP and TCX links, sockets in a SOCKMAP) do it inside
 * a throwaway network namespace made for the purpose (unshare on the calling thread, then back):
 * nothing of the host's network is touched, and everything dies with the namespace.
 *
 * Test seam: SKL_FAKE_MISSING_FEATURES=sk_lookup,xdp_link,… makes those probes report "missing".
 */
import {closeSync, openSync} from 'node:fs';
import {libbpf, libc} from '../ffi/index.js';
import {BpfError, errorFor, NotSupportedError} from './errors.js';
import {errnoName} from './errno.js';
import {BPF_PROG_TYPE_SK_LOOKUP, BPF_PROG_TYPE_XDP} from './program.js';

export type Feature =
  | 'sk_lookup'
  | 'sk_lookup_link'
  | 'link_update'
  | 'sockmap'
  | 'pidfd_getfd'
  | 'inner_map'
  | 'batch_ops'
  | 'mmapable'
  | 'xdp'
  | 'xdp_link'
  | 'netns_cookie'
  | 'tcx';

export interface FeatureInfo {
  /** What it is, as a noun phrase ("BPF sk_lookup programs"). */
  description: string;
  /** The oldest mainline Linux that has it. */
  minKernel: string;
}

/** Every probed feature, in the order `skl doctor` shows them. */
export const FEATURES: Record<Feature, FeatureInfo> = {
  sk_lookup: {description: 'BPF sk_lookup programs', minKernel: '5.9'},
  sk_lookup_link: {description: 'sk_lookup programs attached to a network namespace through a bpf_link', minKernel: '5.9'},
  link_update: {description: 'bpf_link_update on a network namespace link (swap the program atomically)', minKernel: '5.9'},
  sockmap: {description: 'listening TCP and unconnected UDP sockets in a SOCKMAP', minKernel: '5.7'},
  pidfd_getfd: {description: 'pidfd_getfd(2)', minKernel: '5.6'},
  inner_map: {description: 'a map-in-map slot taking a hash larger than its template (the bindings hash of a local prefix)', minKernel: '5.10'},
  batch_ops: {description: 'batched map updates (BPF_MAP_UPDATE_BATCH on hashes and arrays)', minKernel: '5.6'},
  mmapable: {description: 'memory-mapped arrays (BPF_F_MMAPABLE)', minKernel: '5.5'},
  xdp: {description: 'XDP programs', minKernel: '4.8'},
  xdp_link: {description: 'XDP programs attached through a bpf_link', minKernel: '5.9'},
  netns_cookie: {description: 'bpf_get_netns_cookie() in sock_ops programs', minKernel: '5.15'},
  tcx: {description: 'TCX links (BPF_TCX_EGRESS)', minKernel: '6.6'},
};

/** Minimum kernel of each feature (kept for callers of the old API). */
export const MIN_KERNEL = Object.fromEntries(Object.entries(FEATURES).map(([k, v]) => [k, v.minKernel])) as Record<Feature, string>;

export interface ProbeResult {
  feature: Feature;
  available: boolean;
  /** Why not, when not available: what was tried and what the kernel answered. */
  reason?: string;
  /** The errno of that answer. */
  errno?: number;
}

function faked(feature: Feature): boolean {
  return (process.env.SKL_FAKE_MISSING_FEATURES ?? '').split(',').includes(feature);
}

const EPERM = 1;
const EACCES = 13;
const isPermission = (e: number): boolean => e === EPERM || e === EACCES;

// --- program, map and attach types, helpers (include/uapi/linux/bpf.h) ---
const BPF_PROG_TYPE_SCHED_CLS = 3;
const BPF_PROG_TYPE_SOCK_OPS = 13;
const BPF_MAP_TYPE_HASH = 1;
const BPF_MAP_TYPE_ARRAY = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS = 12;
const BPF_MAP_TYPE_SOCKMAP = 15;
const BPF_SK_LOOKUP = 36;
const BPF_XDP = 37;
const BPF_TCX_EGRESS = 47;
const BPF_FUNC_get_netns_cookie = 122;
const BPF_F_NO_PREALLOC = 1 << 0;
const BPF_F_MMAPABLE = 1 << 10;
const SK_PASS = 1;
const XDP_PASS = 2;
const TC_ACT_OK = 0;
/** sizeof(struct bpf_link_create_opts), sizeof(struct bpf_map_create_opts), libbpf 1.1.2. */
const LINK_CREATE_OPTS_SIZE = 64;
const MAP_CREATE_OPTS_SIZE = 48;
/** offsetofend(struct bpf_prog_load_opts, expected_attach_type): the prefix we fill. */
const PROG_LOAD_OPTS_SIZE = 16;
const CLONE_NEWNET = 0x40000000;
const UNSHARE_OP = 'creating a throwaway network namespace for the probes (unshare)';
const AF_INET = 2;
const SOCK_STREAM = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;

/** A probe step that failed: the errno and what was being done. */
class Refused extends Error {
  constructor(
    readonly errno: number,
    what: string,
  ) {
    super(`${what}: ${errnoName(errno).split(':')[0]}`);
  }
}

/** -errno (libbpf 1.x) or -1 with errno: the positive errno of a failed call. */
const errOf = (rc: number): number => (rc < -1 ? -rc : libc.errno() || -rc);

function check(rc: number, what: string): number {
  if (rc < 0) {
    const e = errOf(rc);
    if (isPermission(e)) throw errorFor(what, e);
    throw new Refused(e, what);
  }
  return rc;
}

/** `r0 = retval; exit` */
function trivialProgram(retval: number): Buffer {
  const insns = Buffer.alloc(16);
  insns[0] = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K, dst r0
  insns.writeInt32LE(retval, 4);
  insns[8] = 0x95; // BPF_JMP | BPF_EXIT
  return insns;
}

function loadProgram(type: number, retval: number, expectedAttachType = 0): number {
  const opts = Buffer.alloc(PROG_LOAD_OPTS_SIZE);
  opts.writeBigUInt64LE(BigInt(PROG_LOAD_OPTS_SIZE), 0);
  opts.writeUInt32LE(expectedAttachType, 12);
  return check(libbpf.bpf_prog_load(type, 'skl_probe', 'GPL', trivialProgram(retval), 2, opts), `loading a test program (type ${type})`);
}

function createMap(type: number, keySize: number, valueSize: number, maxEntries: number, flags = 0, innerMapFd = 0): number {
  const opts = Buffer.alloc(MAP_CREATE_OPTS_SIZE);
  opts.writeBigUInt64LE(BigInt(MAP_CREATE_OPTS_SIZE), 0);
  opts.writeUInt32LE(innerMapFd, 24);
  opts.writeUInt32LE(flags >>> 0, 28);
  return check(libbpf.bpf_map_create(type, 'skl_probe', keySize, valueSize, maxEntries, opts), `creating a test map (type ${type})`);
}

function createLink(progFd: number, target: number, attachType: number): number {
  const opts = Buffer.alloc(LINK_CREATE_OPTS_SIZE);
  opts.writeBigUInt64LE(BigInt(LINK_CREATE_OPTS_SIZE), 0);
  return check(libbpf.bpf_link_create(progFd, target, attachType, opts), `creating a test link (attach type ${attachType})`);
}

/** Run `fn` with fds it opens closed afterwards, whatever happens. */
function withFds<T>(fn: (keep: (fd: number) => number) => T): T {
  const fds: number[] = [];
  try {
    return fn((fd) => {
      fds.push(fd);
      return fd;
    });
  } finally {
    for (const fd of fds.reverse()) libc.close(fd);
  }
}

/**
 * Run `fn` on this thread inside a brand-new network namespace (its fd passed), then switch back.
 * The namespace, and every link, socket and program made in it, is gone once its last fd closes.
 */
function inThrowawayNetns<T>(fn: (netnsFd: number) => T): T {
  const self = openSync('/proc/thread-self/ns/net', 'r');
  try {
    if (libc.unshare(CLONE_NEWNET) !== 0) throw errorFor(UNSHARE_OP, libc.errno());
    let ns = -1;
    try {
      ns = openSync('/proc/thread-self/ns/net', 'r');
      return fn(ns);
    } finally {
      if (ns >= 0) closeSync(ns);
      // cannot fail for the namespace we were just in; if it did, nothing below would be safe
      if (libc.setns(self, CLONE_NEWNET) !== 0) process.abort();
    }
  } finally {
    closeSync(self);
  }
}

/** A socket of `type` bound to 0.0.0.0, port 0 (in the caller's namespace), listening for TCP. */
function boundSocket(type: number): number {
  const fd = check(libc.socket(AF_INET, type | SOCK_CLOEXEC, 0), 'creating a test socket');
  const addr = Buffer.alloc(16);
  addr.writeUInt16LE(AF_INET, 0);
  if (libc.bind(fd, addr, addr.length) !== 0 || (type === SOCK_STREAM && libc.listen(fd, 1) !== 0)) {
    const e = libc.errno();
    libc.close(fd);
    throw new Refused(e, 'binding a test socket');
  }
  return fd;
}

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};

/** The probes, each returning normally when the feature works and throwing Refused when not. */
const PROBES: Record<Feature, () => void> = {
  sk_lookup: () => {
    if (libbpf.libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SK_LOOKUP, null) !== 1) {
      const e = libc.errno();
      if (isPermission(e)) throw errorFor('loading BPF programs (sk_lookup probe)', e);
      throw new Refused(e || 22, 'loading a test sk_lookup program');
    }
  },
  sk_lookup_link: () => netnsProbe('sk_lookup_link'),
  link_update: () => netnsProbe('link_update'),
  sockmap: () => netnsProbe('sockmap'),
  pidfd_getfd: () => {
    const pidfd = libc.pidfd_open(process.pid, 0);
    if (pidfd < 0) throw new Refused(libc.errno(), 'pidfd_open(2) on skl itself');
    try {
      const dup = libc.pidfd_getfd(pidfd, 0, 0);
      if (dup >= 0) libc.close(dup);
      else if (libc.errno() === 38) throw new Refused(38, 'pidfd_getfd(2)');
    } finally {
      libc.close(pidfd);
    }
  },
  // skl's binding_tables: an array of maps declared with a 1-entry hash, holding the bindings hash
  // of up to a million (Linux 5.10 stopped comparing an inner hash's max_entries with the template's)
  inner_map: () =>
    withFds((keep) => {
      const template = keep(createMap(BPF_MAP_TYPE_HASH, 24, 8, 1, BPF_F_NO_PREALLOC));
      const outer = keep(createMap(BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, 1, 0, template));
      const table = keep(createMap(BPF_MAP_TYPE_HASH, 24, 8, 2, BPF_F_NO_PREALLOC));
      check(libbpf.bpf_map_update_elem(outer, u32(0), u32(table), 0), 'putting a larger hash into an array of maps');
    }),
  batch_ops: () =>
    withFds((keep) => {
      const opts = Buffer.alloc(24);
      opts.writeBigUInt64LE(24n, 0);
      for (const type of [BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_ARRAY]) {
        const fd = keep(createMap(type, 4, 4, 1));
        check(libbpf.bpf_map_update_batch(fd, u32(0), u32(1), [1], opts), `a batched update of a test map (type ${type})`);
      }
    }),
  mmapable: () =>
    withFds((keep) => {
      const fd = keep(createMap(BPF_MAP_TYPE_ARRAY, 4, 8, 1, BPF_F_MMAPABLE));
      const size = 4096;
      const ptr = libc.mmap(null, size, libc.PROT_READ, libc.MAP_SHARED, fd, 0);
      if (ptr === libc.MAP_FAILED) throw new Refused(libc.errno(), 'mapping a BPF_F_MMAPABLE array');
      libc.munmap(ptr, size);
    }),
  xdp: () => {
    if (libbpf.libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_XDP, null) !== 1) {
      const e = libc.errno();
      if (isPermission(e)) throw errorFor('loading BPF programs (xdp probe)', e);
      throw new Refused(e || 22, 'loading a test XDP program');
    }
  },
  xdp_link: () => netnsProbe('xdp_link'),
  netns_cookie: () => {
    const rc = libbpf.libbpf_probe_bpf_helper(BPF_PROG_TYPE_SOCK_OPS, BPF_FUNC_get_netns_cookie, null);
    if (rc < 0) check(rc, 'probing bpf_get_netns_cookie() in a sock_ops program');
    if (rc !== 1) throw new Refused(22, 'a sock_ops program calling bpf_get_netns_cookie() (rejected by the verifier)');
  },
  tcx: () => netnsProbe('tcx'),
};

type NetnsFeature = 'sk_lookup_link' | 'link_update' | 'sockmap' | 'xdp_link' | 'tcx';
/** The probes run inside one throwaway namespace, once: each entry says how it went. */
let netnsResults: Record<NetnsFeature, Refused | null> | undefined;

/** Run the probes that need a network namespace (all at once, the first time), then report one of them. */
function netnsProbe(feature: NetnsFeature): void {
  netnsResults ??= inThrowawayNetns((netnsFd) => {
    const results = {} as Record<NetnsFeature, Refused | null>;
    const attempt = (feature: NetnsFeature, fn: () => void): void => {
      try {
        fn();
        results[feature] = null;
      } catch (error) {
        if (!(error instanceof Refused)) throw error;
        results[feature] = error;
      }
    };
    withFds((keep) => {
      let link = -1;
      attempt('sk_lookup_link', () => {
        const prog = keep(loadProgram(BPF_PROG_TYPE_SK_LOOKUP, SK_PASS, BPF_SK_LOOKUP));
        link = keep(createLink(prog, netnsFd, BPF_SK_LOOKUP));
      });
      attempt('link_update', () => {
        if (link < 0) throw results.sk_lookup_link!;
        const next = keep(loadProgram(BPF_PROG_TYPE_SK_LOOKUP, SK_PASS, BPF_SK_LOOKUP));
        check(libbpf.bpf_link_update(link, next, null), 'bpf_link_update on a test sk_lookup link');
      });
      attempt('sockmap', () => {
        const map = keep(createMap(BPF_MAP_TYPE_SOCKMAP, 4, 4, 2));
        const tcp = keep(boundSocket(SOCK_STREAM));
        check(libbpf.bpf_map_update_elem(map, u32(0), u32(tcp), 0), 'storing a listening TCP socket in a SOCKMAP');
        const udp = keep(boundSocket(SOCK_DGRAM));
        check(libbpf.bpf_map_update_elem(map, u32(1), u32(udp), 0), 'storing an unconnected UDP socket in a SOCKMAP');
      });
      // ifindex 1 is the namespace's own loopback device
      attempt('xdp_link', () => {
        const prog = keep(loadProgram(BPF_PROG_TYPE_XDP, XDP_PASS, BPF_XDP));
        keep(createLink(prog, 1, BPF_XDP));
      });
      attempt('tcx', () => {
        const prog = keep(loadProgram(BPF_PROG_TYPE_SCHED_CLS, TC_ACT_OK, BPF_TCX_EGRESS));
        keep(createLink(prog, 1, BPF_TCX_EGRESS));
      });
    });
    return results;
  });
  const refused = netnsResults[feature];
  if (refused) throw refused;
}

const cache = new Map<Feature, ProbeResult>();

/**
 * Probe one feature on the running kernel (cached per process). Throws PermissionError without
 * the privileges to load programs (the answer would be meaningless).
 */
export function probe(feature: Feature): ProbeResult {
  if (faked(feature)) return {feature, available: false, reason: 'SKL_FAKE_MISSING_FEATURES'};
  let result = cache.get(feature);
  if (result === undefined) {
    try {
      PROBES[feature]();
      result = {feature, available: true};
    } catch (error) {
      if (!(error instanceof Refused)) throw error;
      result = {feature, available: false, reason: error.message, errno: error.errno};
    }
    cache.set(feature, result);
  }
  return result;
}

/** Whether the kernel supports a program type (loads a trivial program). Throws PermissionError without privileges. */
export function probeProgType(feature: 'sk_lookup' | 'xdp'): boolean {
  return probe(feature).available;
}

/**
 * Throw NotSupportedError (one line naming the minimum kernel) unless the feature is there.
 * `available` overrides the probe (tests); by default the feature's own probe runs.
 */
export function requireFeature(feature: Feature, available: () => boolean = () => probe(feature).available): void {
  let ok = false;
  if (!faked(feature)) {
    try {
      ok = available();
    } catch (error) {
      // A process that may not create a network namespace (no CAP_SYS_ADMIN) cannot run the probes
      // that need one; the operation itself will say whether the kernel has the feature.
      if (error instanceof BpfError && error.op === UNSHARE_OP) return;
      throw error;
    }
  }
  if (!ok) {
    const e = cache.get(feature)?.errno;
    throw new NotSupportedError(FEATURES[feature].description, FEATURES[feature].minKernel, e === undefined ? '' : errnoName(e).split(':')[0]);
  }
}
