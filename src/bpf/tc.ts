/**
 * SCHED_CLS (tc) programs on an interface's ingress or egress, two ways:
 *
 * - **TCX links** (Linux ≥6.6): `bpf_link_create(prog_fd, ifindex, BPF_TCX_INGRESS/EGRESS)`, libbpf
 *   1.1's low-level call (its bpf_program__attach_tcx is 1.3). A bpf_link like the others: it
 *   detaches when its last reference goes (this process's fd, or a pin in bpffs), and can be pinned.
 *   Several programs share a hook; the kernel runs them in order until one returns something other
 *   than TCX_NEXT (-1, TC_ACT_UNSPEC), then any clsact filters.
 * - **clsact filters** (every kernel skl supports; the fallback below 6.6): the clsact qdisc plus a
 *   direct-action cls_bpf filter, through libbpf's netlink helpers (bpf_tc_hook_create,
 *   bpf_tc_attach, bpf_tc_detach, bpf_tc_hook_destroy; libbpf ≥0.4). A filter is not a reference
 *   to anything: it **outlives the process that added it**, until someone removes it. The handle
 *   therefore exposes a plain record (namespace, ifindex, direction, handle, priority, program id)
 *   for its owner to keep, and removal checks that the filter at that slot still runs that program:
 *   it never removes another filter, and never the clsact qdisc while any filter is on it.
 *
 * What the kernel and libbpf require (checked on 6.18 with libbpf 1.1.2):
 * - The attach types are 46 (BPF_TCX_INGRESS) and 47 (BPF_TCX_EGRESS) in include/uapi/linux/bpf.h
 *   of 6.6+ (this machine's /usr/include/linux/bpf.h is 6.1's and has neither); the kernel's own
 *   /proc/PID/fdinfo of such a link says `attach_type: 46 (ingress)` / `47 (egress)`.
 * - No expected_attach_type is needed at load: for SCHED_CLS, bpf_prog_attach_check_attach_type()
 *   only checks that the attach type is a TCX (or netkit) one, so one program loaded from SEC("tc")
 *   (expected_attach_type 0) attaches to both sides, and to clsact. libbpf ≥1.3 reads it from
 *   SEC("tcx/ingress") for bpf_program__attach_tcx; libbpf 1.1 knows no "tcx/" section and fails to
 *   open such an object: use SEC("tc") (or "classifier"). `Program.setExpectedAttachType` and
 *   `OpenOptions.expectedAttachTypes` set it where a program type does need it.
 * - Verdicts read the same both ways: TC_ACT_UNSPEC = TCX_NEXT (-1), TC_ACT_OK = TCX_PASS (0),
 *   TC_ACT_SHOT = TCX_DROP (2).
 * - Struct layouts of libbpf 1.1.2 (x86_64/aarch64): bpf_link_create_opts 64 bytes (flags @8),
 *   bpf_tc_hook 24 (ifindex @8, attach_point @12, parent @16), bpf_tc_opts 32 (prog_fd @8, flags
 *   @12, prog_id @16, handle @20, priority @24); `sz` first in each.
 *
 * An ifindex means an interface of the calling thread's network namespace (the kernel and libbpf's
 * netlink socket resolve it there): attach and remove from inside the target namespace (Netns.run).
 * `lo` is ifindex 1 in every namespace, so a clsact record carries the namespace's inode, and
 * removal refuses to run anywhere else.
 */
import {statSync} from 'node:fs';
import {libbpf, libc} from '../ffi/index.js';
import {BpfError, errorFor, NotFoundError, NotSupportedError} from './errors.js';
import {errnoName} from './errno.js';
import {probe} from './features.js';
import {BPF_LINK_TYPE_TCX, progInfoByFd} from './info.js';
import {Link} from './link.js';
import {netlinkDump, NetlinkError} from '../sys/netlink.js';

export type TcDirection = 'ingress' | 'egress';
export type TcKind = 'tcx' | 'clsact';

export const BPF_PROG_TYPE_SCHED_CLS = 3;
export const BPF_TCX_INGRESS = 46;
export const BPF_TCX_EGRESS = 47;
/** Verdicts of a SCHED_CLS program (clsact direct action and TCX alike). */
export const TC_ACT_UNSPEC = -1;
export const TC_ACT_OK = 0;
export const TC_ACT_SHOT = 2;

const TCX_ATTACH_TYPE: Record<TcDirection, number> = {ingress: BPF_TCX_INGRESS, egress: BPF_TCX_EGRESS};
const TCX_DIRECTION: Record<number, TcDirection> = {[BPF_TCX_INGRESS]: 'ingress', [BPF_TCX_EGRESS]: 'egress'};
/** BPF_F_BEFORE (linux/bpf.h ≥6.6) with no relative program: ahead of every program there. */
const BPF_F_BEFORE = 1 << 3;
const LINK_CREATE_OPTS_SIZE = 64;
const TC_HOOK_SIZE = 24;
const TC_OPTS_SIZE = 32;
/** enum bpf_tc_attach_point. */
const BPF_TC_ATTACH_POINT: Record<TcDirection, number> = {ingress: 1 << 0, egress: 1 << 1};
const BPF_TC_BOTH = (1 << 0) | (1 << 1);
/** tcm_parent of clsact's hooks: TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS / TC_H_MIN_EGRESS). */
const TC_PARENT: Record<TcDirection, number> = {ingress: 0xfffffff2, egress: 0xfffffff3};

const ENOENT = 2;
const ENODEV = 19;
const EINVAL = 22;
const EEXIST = 17;
const EOPNOTSUPP = 95;
const ENOSPC = 28;

const TCX_FEATURE = 'TCX links (BPF_TCX_INGRESS/BPF_TCX_EGRESS)';

/** A loaded SCHED_CLS program: a Program of a BpfObject, a RawProgram, anything with an fd. */
export interface TcProgram {
  readonly fd: number;
  readonly name: string;
}

export interface TcAttachOptions {
  /**
   * 'auto' (default): a TCX link where the kernel has them (≥6.6; SKL_FAKE_MISSING_FEATURES=tcx
   * pretends it does not), else a clsact filter. 'tcx': a TCX link or NotSupportedError. 'clsact':
   * a clsact filter even where TCX exists.
   */
  mode?: 'auto' | TcKind;
  /**
   * Run ahead of what is already on the hook. TCX: BPF_F_BEFORE (by default a link goes after the
   * programs there). clsact: the priority one below the lowest there (refused when that is 1).
   */
  first?: boolean;
  /**
   * clsact: the filter's priority (1–65535, lower runs first; wins over `first`). By default the
   * kernel picks one: one below the first filter of priority ≥32768 on the hook, else 49152 —
   * ahead of filters added without a priority, behind those given a low one (cilium's is 1).
   */
  priority?: number;
}

/** What removing an attachment found: it removed it, it was already gone, or its slot now holds someone else's filter (left alone). */
export type TcRemoval = 'removed' | 'gone' | 'foreign';

/**
 * Everything needed to find and remove a clsact filter later, from any process (plain data: store
 * it as JSON). Remove it with `ClsactFilter.remove(record)` from inside its namespace.
 */
export interface ClsactFilterRecord {
  /** Inode of the network namespace the ifindex belongs to. */
  netnsIno: number;
  ifindex: number;
  direction: TcDirection;
  handle: number;
  priority: number;
  /** The program the filter runs: the filter at (handle, priority) is skl's only while it runs this one. */
  progId: number;
  /** This attach created the clsact qdisc (removal then takes the qdisc too, once no filter is left on it). */
  createdQdisc: boolean;
}

/** A filter on a clsact hook, whoever added it. */
export interface TcFilter {
  /** The classifier: 'bpf', 'u32', 'matchall', … */
  kind: string;
  priority: number;
  handle: number;
  /** Ethernet protocol (host order; 3 = ETH_P_ALL). */
  protocol: number;
  chain: number;
  /** cls_bpf filters: the program's id and tc's name for it ("name:[id]" when libbpf added it). */
  progId?: number;
  progName?: string;
}

/** The calling thread's network namespace inode (what ifindexes are relative to). */
const threadNetnsIno = (): number => statSync('/proc/thread-self/ns/net').ino;

function ifnameOf(ifindex: number): string | undefined {
  return libc.if_indextoname(ifindex, Buffer.alloc(16)) ?? undefined;
}

/** "lo (ifindex 1)", or "ifindex 7" when the name is not known. */
const ifaceText = (ifindex: number, ifname: string | undefined): string => (ifname === undefined ? `ifindex ${ifindex}` : `${ifname} (ifindex ${ifindex})`);

/** An attached SCHED_CLS program. */
export abstract class TcAttachment {
  abstract readonly kind: TcKind;

  protected constructor(
    readonly ifindex: number,
    readonly direction: TcDirection,
    readonly progId: number,
    /** Known when this process attached it (read in the namespace at that time). */
    readonly ifname: string | undefined,
  ) {}

  /** One line for people, e.g. "TCX egress link 12 on lo (ifindex 1): program 345". */
  abstract describe(): string;

  /** Take the program off the hook now (a clsact filter: from inside its namespace). */
  abstract detach(): TcRemoval;

  /**
   * Release what this process holds. A TCX link that is not pinned detaches; a clsact filter stays
   * attached (remove it with `detach()` or `ClsactFilter.remove(record)`).
   */
  abstract close(): void;

  protected get on(): string {
    return ifaceText(this.ifindex, this.ifname);
  }
}

/** A program on a TCX hook through a bpf_link. */
export class TcxLink extends TcAttachment {
  readonly kind = 'tcx';
  private pinnedAt: string | undefined;

  constructor(
    readonly link: Link,
    ifindex: number,
    direction: TcDirection,
    progId: number,
    readonly linkId: number,
    ifname?: string,
  ) {
    super(ifindex, direction, progId, ifname);
  }

  /** Open a pinned TCX link (a new reference: closing it leaves the link attached). */
  static openPinned(path: string): TcxLink {
    const link = Link.openPinned(path);
    try {
      const info = link.info();
      const direction = TCX_DIRECTION[info.attachType];
      if (info.type !== BPF_LINK_TYPE_TCX || direction === undefined) {
        throw new BpfError(`${path} is not a TCX link (link type ${info.type})`, EINVAL, 'open pinned link');
      }
      const tcx = new TcxLink(link, info.ifindex, direction, info.progId, info.id);
      tcx.pinnedAt = path;
      return tcx;
    } catch (error) {
      link.close();
      throw error;
    }
  }

  /** Pin the link in bpffs: it then stays attached after this process exits, until the pin is removed. */
  pin(path: string): void {
    this.link.pin(path);
    this.pinnedAt = path;
  }

  /** The pin this handle made or was opened from, if it is still there. */
  get pinPath(): string | undefined {
    return this.pinnedAt;
  }

  /** Remove the pin this handle made or was opened from (if still there): the link detaches once nothing else holds it. */
  unpin(): void {
    if (this.pinnedAt === undefined) return;
    try {
      this.link.unpin();
    } catch (error) {
      if (!(error instanceof NotFoundError)) throw error;
    }
    this.pinnedAt = undefined;
  }

  describe(): string {
    return `TCX ${this.direction} link ${this.linkId} on ${this.on}: program ${this.progId}`;
  }

  /**
   * Detach now (whoever else holds the link), remove the pin this handle knows of, release the fd.
   * 'gone' when the link was already detached (its interface gone, or detached through another
   * reference: the kernel then reports ifindex 0).
   */
  detach(): TcRemoval {
    const attached = this.link.info().ifindex !== 0;
    this.link.detach();
    this.unpin();
    this.link.close();
    return attached ? 'removed' : 'gone';
  }

  close(): void {
    this.link.close();
  }
}

/** A direct-action cls_bpf filter on a clsact hook; it stays attached after its creator exits. */
export class ClsactFilter extends TcAttachment {
  readonly kind = 'clsact';

  constructor(
    readonly record: Readonly<ClsactFilterRecord>,
    ifname?: string,
  ) {
    super(record.ifindex, record.direction, record.progId, ifname);
  }

  get handle(): number {
    return this.record.handle;
  }

  get priority(): number {
    return this.record.priority;
  }

  describe(): string {
    return `clsact ${this.direction} filter on ${this.on}, priority ${this.priority} handle 0x${this.handle.toString(16)}: program ${this.progId}`;
  }

  detach(): TcRemoval {
    return ClsactFilter.remove(this.record);
  }

  /** Nothing to release: the filter stays (see `record`). */
  close(): void {}

  /**
   * Remove the filter a record describes, from inside its network namespace, if it is still there
   * and still runs the recorded program; another filter at its slot is left alone ('foreign').
   * Then, when `removeQdisc` (default: the record's createdQdisc) and no filter is left on either
   * side of the clsact qdisc, remove the qdisc too.
   */
  static remove(record: ClsactFilterRecord, opts: {removeQdisc?: boolean} = {}): TcRemoval {
    const here = threadNetnsIno();
    if (here !== record.netnsIno) {
      throw new BpfError(
        `the clsact filter on ifindex ${record.ifindex} is in network namespace ${record.netnsIno}, not this thread's (${here}): remove it from inside its namespace`,
        EINVAL,
        'detach',
      );
    }
    const what = `clsact ${record.direction} filter (priority ${record.priority}, handle 0x${record.handle.toString(16)}) of ifindex ${record.ifindex}`;
    const found = dumpFilters(record.ifindex, record.direction).find((f) => f.priority === record.priority && f.handle === record.handle);
    let result: TcRemoval;
    if (found === undefined) result = 'gone';
    else if (found.kind !== 'bpf' || found.progId !== record.progId) result = 'foreign';
    else {
      const rc = libbpf.bpf_tc_detach(tcHook(record.ifindex, BPF_TC_ATTACH_POINT[record.direction]), tcOpts({handle: record.handle, priority: record.priority}));
      if (rc === -ENOENT || rc === -ENODEV) result = 'gone';
      else if (rc < 0) throw errorFor('detach', -rc, what);
      else result = 'removed';
    }
    if (result !== 'foreign' && (opts.removeQdisc ?? record.createdQdisc)) removeClsactIfEmpty(record.ifindex);
    return result;
  }
}

/** struct bpf_tc_hook. */
function tcHook(ifindex: number, attachPoint: number): Buffer {
  const b = Buffer.alloc(TC_HOOK_SIZE);
  b.writeBigUInt64LE(BigInt(TC_HOOK_SIZE), 0);
  b.writeInt32LE(ifindex, 8);
  b.writeUInt32LE(attachPoint, 12);
  return b;
}

/** struct bpf_tc_opts. */
function tcOpts(o: {progFd?: number; handle?: number; priority?: number}): Buffer {
  const b = Buffer.alloc(TC_OPTS_SIZE);
  b.writeBigUInt64LE(BigInt(TC_OPTS_SIZE), 0);
  b.writeInt32LE(o.progFd ?? 0, 8);
  b.writeUInt32LE(o.handle ?? 0, 20);
  b.writeUInt32LE(o.priority ?? 0, 24);
  return b;
}

/**
 * Attach a SCHED_CLS program to the ingress or egress of interface `ifindex` of the calling
 * thread's network namespace: a TCX link where the kernel has them, else (or with mode 'clsact') a
 * clsact filter. See the module comment for what each leaves behind.
 */
export function attachTc(program: TcProgram, ifindex: number, direction: TcDirection, opts: TcAttachOptions = {}): TcAttachment {
  if (direction !== 'ingress' && direction !== 'egress') throw new BpfError(`tc direction must be ingress or egress, not ${String(direction)}`, EINVAL, 'attach');
  const ifname = ifnameOf(ifindex);
  const what = `${program.name} to ${direction} of ${ifaceText(ifindex, ifname)}`;
  if (ifname === undefined) throw new BpfError(`attach ${what}: no such interface in this network namespace`, ENODEV, 'attach');
  const prog = progInfoByFd(program.fd);
  if (prog.type !== BPF_PROG_TYPE_SCHED_CLS) {
    throw new BpfError(`attach ${what}: ${program.name} is not a SCHED_CLS (tc) program (program type ${prog.type})`, EINVAL, 'attach');
  }
  const mode = opts.mode ?? 'auto';
  const fakedMissing = (process.env.SKL_FAKE_MISSING_FEATURES ?? '').split(',').includes('tcx');
  if (mode === 'tcx' || (mode === 'auto' && !fakedMissing)) {
    const lopts = Buffer.alloc(LINK_CREATE_OPTS_SIZE);
    lopts.writeBigUInt64LE(BigInt(LINK_CREATE_OPTS_SIZE), 0);
    lopts.writeUInt32LE(opts.first ? BPF_F_BEFORE : 0, 8);
    const fd = fakedMissing ? -EINVAL : libbpf.bpf_link_create(program.fd, ifindex, TCX_ATTACH_TYPE[direction], lopts);
    if (fd >= 0) {
      const link = new Link({fd}, `${program.name}@tcx-${direction}:${ifname}`);
      return new TcxLink(link, ifindex, direction, prog.id, link.info().id, ifname);
    }
    // Below 6.6 the kernel knows neither attach type: EINVAL (the program type was checked above).
    if (-fd !== EINVAL) throw errorFor('attach', -fd, what);
    if (mode === 'tcx') throw new NotSupportedError(TCX_FEATURE, '6.6', errnoName(EINVAL).split(':')[0]);
  }
  return attachClsact(program, ifindex, ifname, direction, what, opts.priority ?? (opts.first ? priorityAhead(ifindex, direction, what) : 0));
}

/** The priority that runs ahead of every filter on the hook now (0: let the kernel pick, on an empty hook). */
function priorityAhead(ifindex: number, direction: TcDirection, what: string): number {
  const lowest = Math.min(...dumpFilters(ifindex, direction, true).map((f) => f.priority));
  if (lowest === Infinity) return 0;
  if (lowest <= 1) throw new BpfError(`attach ${what}: cannot run first, a filter there has priority 1`, EEXIST, 'attach');
  return lowest - 1;
}

function attachClsact(program: TcProgram, ifindex: number, ifname: string, direction: TcDirection, what: string, priority: number): ClsactFilter {
  if (!Number.isInteger(priority) || priority < 0 || priority > 0xffff) {
    throw new BpfError(`attach ${what}: a clsact filter priority is 1-65535, not ${priority}`, EINVAL, 'attach');
  }
  const netnsIno = threadNetnsIno();
  const created = libbpf.bpf_tc_hook_create(tcHook(ifindex, BPF_TC_ATTACH_POINT[direction]));
  if (created < 0 && created !== -EEXIST) {
    const e = -created;
    if (e === ENOENT || e === EOPNOTSUPP) throw new NotSupportedError('the clsact qdisc (tc BPF filters)', '4.5', errnoName(e).split(':')[0]);
    throw errorFor('attach', e, `${what} (creating its clsact qdisc)`);
  }
  const o = tcOpts({progFd: program.fd, priority});
  const rc = libbpf.bpf_tc_attach(tcHook(ifindex, BPF_TC_ATTACH_POINT[direction]), o);
  if (rc < 0) {
    if (created === 0) removeClsactIfEmpty(ifindex);
    throw errorFor('attach', -rc, `${what} (a clsact filter)`);
  }
  const record: ClsactFilterRecord = {
    netnsIno,
    ifindex,
    direction,
    handle: o.readUInt32LE(20),
    priority: o.readUInt32LE(24),
    progId: o.readUInt32LE(16),
    createdQdisc: created === 0,
  };
  return new ClsactFilter(record, ifname);
}

/** Remove the clsact qdisc of `ifindex` if neither of its hooks has a filter. True when removed (or already gone). */
function removeClsactIfEmpty(ifindex: number): boolean {
  if (dumpFilters(ifindex, 'ingress', true).length > 0 || dumpFilters(ifindex, 'egress', true).length > 0) return false;
  const rc = libbpf.bpf_tc_hook_destroy(tcHook(ifindex, BPF_TC_BOTH));
  if (rc < 0 && rc !== -ENOENT && rc !== -EINVAL && rc !== -ENODEV) throw errorFor('remove clsact qdisc', -rc, `of ifindex ${ifindex}`);
  return true;
}

/**
 * The filters on the clsact `direction` hook of `ifindex` (calling thread's namespace), anyone's:
 * none when there is no clsact qdisc (or no such interface).
 */
export function listTcFilters(ifindex: number, direction: TcDirection): TcFilter[] {
  return dumpFilters(ifindex, direction);
}

// --- an RTM_GETTFILTER dump over NETLINK_ROUTE (what `tc filter show dev X ingress` does) ---
const NETLINK_ROUTE = 0;
const RTM_NEWQDISC = 36;
const RTM_GETQDISC = 38;
const RTM_NEWTFILTER = 44;
const RTM_GETTFILTER = 46;
const TCMSG_LEN = 20;
const TCA_KIND = 1;
const TCA_OPTIONS = 2;
const TCA_CHAIN = 11;
const TCA_BPF_NAME = 7;
const TCA_BPF_ID = 11;
const NLA_TYPE_MASK = 0x3fff;

/** nlattrs of `b` → type → payload. */
function attrs(b: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  for (let off = 0; off + 4 <= b.length; ) {
    const len = b.readUInt16LE(off);
    if (len < 4 || off + len > b.length) break;
    out.set(b.readUInt16LE(off + 2) & NLA_TYPE_MASK, b.subarray(off + 4, off + len));
    off += (len + 3) & ~3;
  }
  return out;
}

const cstring = (b: Buffer | undefined): string | undefined => {
  if (b === undefined) return undefined;
  const end = b.indexOf(0);
  return b.subarray(0, end < 0 ? b.length : end).toString();
};

/**
 * Every message of the dump, or (`headers` false) the filters only: the kernel sends one message
 * per classifier instance (handle 0, no options) before that instance's filters.
 */
function dumpFilters(ifindex: number, direction: TcDirection, headers = false): TcFilter[] {
  const out: TcFilter[] = [];
  tcDump(RTM_GETTFILTER, ifindex, TC_PARENT[direction], 'list tc filters', `of ifindex ${ifindex}`, (type, m) => {
    if (type !== RTM_NEWTFILTER) return;
    const f = filterOf(m);
    if (headers || f.handle !== 0) out.push(f);
  });
  return out;
}

/**
 * The interfaces (ifindex) of the calling thread's namespace that have a clsact qdisc: one
 * RTM_GETQDISC dump for all of them (`tc qdisc show`), so that looking for clsact filters costs
 * nothing more where there is none.
 */
export function clsactInterfaces(): number[] {
  const out: number[] = [];
  tcDump(RTM_GETQDISC, 0, 0, 'list qdiscs', '', (type, m) => {
    if (type === RTM_NEWQDISC && cstring(attrs(m.subarray(TCMSG_LEN)).get(TCA_KIND)) === 'clsact') out.push(m.readInt32LE(4));
  });
  return out;
}

/** An RTM_GET* dump of tc objects over NETLINK_ROUTE: `each(type, struct tcmsg + attributes)` per message. */
function tcDump(request: number, ifindex: number, parent: number, op: string, what: string, each: (type: number, m: Buffer) => void): void {
  const req = Buffer.alloc(TCMSG_LEN);
  req.writeInt32LE(ifindex, 4); // tcm_ifindex (tcm_family 0: AF_UNSPEC)
  req.writeUInt32LE(parent, 12); // tcm_parent
  try {
    netlinkDump(NETLINK_ROUTE, request, req, (type, m) => {
      if (m.length >= TCMSG_LEN) each(type, m);
    });
  } catch (error) {
    if (!(error instanceof NetlinkError)) throw error;
    throw errorFor(op, error.errno, error.step === 'error' ? what : error.step === 'malformed' ? '(malformed netlink message)' : `(netlink ${error.step})`);
  }
}

/** struct tcmsg + attributes → TcFilter. */
function filterOf(m: Buffer): TcFilter {
  const info = m.readUInt32LE(16);
  const a = attrs(m.subarray(TCMSG_LEN));
  const chain = a.get(TCA_CHAIN);
  const f: TcFilter = {
    kind: cstring(a.get(TCA_KIND)) ?? '',
    priority: info >>> 16,
    handle: m.readUInt32LE(8),
    protocol: ((info & 0xff) << 8) | ((info >>> 8) & 0xff), // network order in tcm_info's low 16 bits
    chain: chain === undefined ? 0 : chain.readUInt32LE(0),
  };
  const options = a.get(TCA_OPTIONS);
  if (f.kind === 'bpf' && options !== undefined) {
    const o = attrs(options);
    const id = o.get(TCA_BPF_ID);
    if (id !== undefined) f.progId = id.readUInt32LE(0);
    f.progName = cstring(o.get(TCA_BPF_NAME));
  }
  return f;
}

/**
 * Ids of the programs on the TCX `direction` hook of `ifindex` (calling thread's namespace), in the
 * order they run: none below Linux 6.6 (the kernel knows no such hook) or when the interface is gone.
 */
export function tcxProgramIds(ifindex: number, direction: TcDirection): number[] {
  for (let room = 64; ; room *= 4) {
    const ids = Buffer.alloc(4 * room);
    const count: [number] = [room];
    const rc = libbpf.bpf_prog_query(ifindex, TCX_ATTACH_TYPE[direction], 0, [0], ids, count);
    if (rc === -EINVAL || rc === -ENODEV || rc === -ENOENT) return [];
    if (rc === -ENOSPC && room < 65536) continue;
    if (rc < 0) throw errorFor('query tc programs', -rc, `${direction} of ${ifaceText(ifindex, ifnameOf(ifindex))}`);
    return Array.from({length: Math.min(count[0], room)}, (_, i) => ids.readUInt32LE(i * 4));
  }
}

/**
 * Whether this kernel has TCX links (Linux ≥6.6): the doctor's real probe ("tcx" in
 * src/bpf/features.ts: a tiny SCHED_CLS program and a TCX link on `lo` of a throwaway network
 * namespace; nothing of the host's network is touched), cached per process. `skl doctor` shows it
 * as "TCX links". Throws PermissionError without the privileges to load programs, and BpfError
 * without CAP_SYS_ADMIN (for the namespace). `attachTc` does not need it: it tries a TCX link and
 * falls back on the kernel's answer.
 */
export function tcxSupported(): boolean {
  return probe('tcx').available;
}
