/**
 * The XDP packet counter: attach bpf/xdp_count.o to an interface (in a mode, with fallback), read
 * its per-CPU counters summed, detach. Usable without the CLI:
 *
 *   using counter = XdpCounter.attach({ifname: 'eth0', mode: 'auto'});
 *   counter.read(); // {packets, bytes} since attach
 *
 * The program is attached through a bpf_link that is never pinned: the kernel detaches it when
 * the last fd goes away, so even a SIGKILLed process leaves nothing attached.
 */
import {readFileSync} from 'node:fs';
import {
  BpfError,
  BpfObject,
  Link,
  linkIds,
  BPF_LINK_TYPE_XDP,
  PermissionError,
  progNameById,
  requireFeature,
  u32Key,
  xdpAttached,
  xdpDetachMode,
  xdpQuery,
  XDP_MODE_FLAGS,
  type BpfMap,
  type XdpMode,
  type XdpState,
} from '../bpf/index.js';
import {SklError, UsageError} from '../sys/errors.js';
import {ifindexOf, interfaceNames, Netns} from '../sys/netns.js';
import {linkHolders, type LinkHolder} from './holders.js';
import type {Counts} from './stats.js';

export type XdpModeRequest = 'auto' | 'native' | 'skb';
export const XDP_MODE_REQUESTS: readonly XdpModeRequest[] = ['auto', 'native', 'skb'];

export const PROGRAM_NAME = 'xdp_count';
export const MAP_NAME = 'xdp_stats';

/** The committed object, next to the package root (dist/src/xdp → ../../../bpf). */
export function defaultObjectBytes(): Uint8Array {
  return readFileSync(new URL('../../../bpf/xdp_count.o', import.meta.url));
}

export interface XdpCounterOptions {
  /** Interface name, resolved in `netns` (default: the caller's namespace). */
  ifname: string;
  /** Network namespace file (/run/netns/NAME, /proc/PID/ns/net) the interface lives in. */
  netns?: string;
  /** auto (default): native, else generic (skb) with a notice. */
  mode?: XdpModeRequest;
  /** Replace XDP programs already attached to the interface instead of refusing. */
  force?: boolean;
  /** The compiled counter (default: bpf/xdp_count.o of the package). */
  object?: Uint8Array;
}

/** An XDP program found on the interface (ours to refuse or, with force, to replace). */
export interface ForeignProgram {
  id: number;
  name?: string;
  mode: XdpMode;
  /** The bpf_link holding it, when attached through one (else attached through netlink). */
  linkId?: number;
  holders: LinkHolder[];
}

/** Another XDP program is on the interface (exit code 1). */
export class XdpBusyError extends SklError {
  override name = 'XdpBusyError';
  constructor(
    readonly ifname: string,
    readonly programs: ForeignProgram[],
    hint = 'use --force to replace it',
  ) {
    super(`${ifname} already has an XDP program: ${programs.map(describeForeign).join('; ')}; ${hint}`);
  }
}

/** The interface cannot run XDP in the requested mode (exit code 1). */
export class XdpModeError extends SklError {
  override name = 'XdpModeError';
  constructor(
    message: string,
    readonly errno: number,
  ) {
    super(message);
  }
}

export function describeForeign(p: ForeignProgram): string {
  const name = p.name ? ` "${p.name}"` : '';
  let how: string;
  if (p.linkId === undefined) how = 'attached through netlink (e.g. ip link)';
  else if (p.holders.length === 0) how = `bpf_link ${p.linkId}, pinned or held by no visible process`;
  else how = `bpf_link ${p.linkId} held by ${p.holders.map((h) => `pid ${h.pid} (${h.command})`).join(', ')}`;
  return `id ${p.id}${name}, ${modeLabel(p.mode)} mode, ${how}`;
}

export function modeLabel(mode: XdpMode | string): string {
  return mode === 'skb' ? 'generic (skb)' : mode === 'hw' ? 'offloaded (hw)' : 'native';
}

const EOPNOTSUPP = 95;
const ENOTSUPP = 524;
const EINVAL = 22;
const EBUSY = 16;
const EEXIST = 17;

/** XDP links on `ifindex` (of some namespace) whose program is `progId`: id of the first, if any. */
function findXdpLink(ifindex: number, progId: number): number | undefined {
  for (const id of linkIds()) {
    let link: Link | undefined;
    try {
      link = Link.openById(id);
      const info = link.info();
      if (info.type === BPF_LINK_TYPE_XDP && info.ifindex === ifindex && info.progId === progId) return id;
    } catch {
      // gone meanwhile, or not ours to open
    } finally {
      link?.close();
    }
  }
  return undefined;
}

function foreignPrograms(ifindex: number, state: XdpState): ForeignProgram[] {
  return xdpAttached(state).map(([mode, id]) => {
    const linkId = findXdpLink(ifindex, id);
    return {id, mode, name: progNameById(id), linkId, holders: linkId === undefined ? [] : linkHolders(linkId)};
  });
}

export class XdpCounter implements Disposable {
  private link: Link | null;
  private obj: BpfObject | null;
  private readonly map: BpfMap;

  private constructor(
    readonly ifname: string,
    readonly ifindex: number,
    /** The mode the kernel reports the program runs in. */
    readonly mode: XdpMode,
    /** Id of the attached program. */
    readonly progId: number,
    /** Human notices (fallback to generic mode, …) for the caller to show. */
    readonly notices: string[],
    /** Programs removed because of `force`. */
    readonly replaced: ForeignProgram[],
    readonly netns: string | undefined,
    obj: BpfObject,
    link: Link,
  ) {
    this.obj = obj;
    this.link = link;
    this.map = obj.map(MAP_NAME);
  }

  static attach(opts: XdpCounterOptions): XdpCounter {
    const requested = opts.mode ?? 'auto';
    if (!XDP_MODE_REQUESTS.includes(requested)) {
      throw new UsageError(`unknown XDP mode ${JSON.stringify(requested)}: use one of ${XDP_MODE_REQUESTS.join(', ')}`);
    }
    const where = opts.netns ? ` in network namespace ${opts.netns}` : '';
    const netns = opts.netns ? Netns.open(opts.netns) : undefined;
    try {
      const inNs = <T>(fn: () => T): T => (netns ? netns.run(fn) : fn());
      const ifindex = inNs(() => {
        const idx = ifindexOf(opts.ifname);
        if (idx === 0) {
          const names = interfaceNames();
          throw new UsageError(
            `no interface named ${JSON.stringify(opts.ifname)}${where}; interfaces: ${names.length ? names.join(', ') : '(none)'}`,
          );
        }
        return idx;
      });
      if (process.geteuid?.() === 0) requireFeature('xdp_link');

      const obj = loadCounter(opts.object ?? defaultObjectBytes());
      try {
        const prog = obj.program(PROGRAM_NAME);
        const {link, mode, notices, replaced, progId} = inNs(() => {
          const replacedNow = clearInterface(opts.ifname, ifindex, opts.force ?? false);
          const attached = attachInMode(prog, opts.ifname, ifindex, requested);
          // Which mode did the kernel really use? (our program's id in the per-mode ids)
          const id = attached.link.info().progId;
          const state = xdpQuery(ifindex);
          const actual: XdpMode = state.skb === id ? 'skb' : state.hw === id ? 'hw' : attached.mode;
          return {...attached, mode: actual, replaced: replacedNow, progId: id};
        });
        return new XdpCounter(opts.ifname, ifindex, mode, progId, notices, replaced, opts.netns, obj, link);
      } catch (error) {
        obj.close();
        throw error;
      }
    } finally {
      netns?.close();
    }
  }

  /** Packets and bytes counted since attach (all CPUs). */
  read(): Counts {
    if (this.obj === null) throw new Error(`XDP counter on ${this.ifname} is closed`);
    const sums = this.map.sumPerCpuU64(u32Key(0));
    return {packets: sums?.[0] ?? 0n, bytes: sums?.[1] ?? 0n};
  }

  /**
   * Whether the program is still attached: false once the interface is gone or someone detached
   * the link (e.g. another skl with --force).
   */
  attached(): boolean {
    if (this.link === null) return false;
    try {
      return this.link.info().ifindex !== 0;
    } catch {
      return false;
    }
  }

  /** Detach (close the link) and unload. Idempotent. */
  close(): void {
    this.link?.close();
    this.link = null;
    this.obj?.close();
    this.obj = null;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

function loadCounter(bytes: Uint8Array): BpfObject {
  try {
    return BpfObject.load(bytes, {name: 'xdp_count.o'});
  } catch (error) {
    if (error instanceof PermissionError) {
      throw new PermissionError(
        `cannot load the XDP counter: permission denied; run as root (or with CAP_BPF and CAP_NET_ADMIN)`,
        error.errno,
        error.op,
      );
    }
    throw error;
  }
}

/** Refuse (or with force, remove) XDP programs already on the interface. */
function clearInterface(ifname: string, ifindex: number, force: boolean): ForeignProgram[] {
  const state = xdpQuery(ifindex);
  if (xdpAttached(state).length === 0) return [];
  const foreign = foreignPrograms(ifindex, state);
  if (!force) throw new XdpBusyError(ifname, foreign);
  for (const p of foreign) {
    if (p.linkId !== undefined) {
      const link = Link.openById(p.linkId);
      try {
        link.detach();
      } finally {
        link.close();
      }
    } else {
      xdpDetachMode(ifindex, p.mode);
    }
  }
  const after = xdpQuery(ifindex);
  if (xdpAttached(after).length !== 0) {
    throw new XdpBusyError(ifname, foreignPrograms(ifindex, after), 'it came back after --force removed it');
  }
  return foreign;
}

function attachInMode(
  prog: ReturnType<BpfObject['program']>,
  ifname: string,
  ifindex: number,
  requested: XdpModeRequest,
): {link: Link; mode: XdpMode; notices: string[]} {
  const notices: string[] = [];
  const modes: XdpMode[] = requested === 'auto' ? ['native', 'skb'] : [requested];
  for (const [i, mode] of modes.entries()) {
    try {
      return {link: prog.attachXdp(ifindex, ifname, XDP_MODE_FLAGS[mode]), mode, notices};
    } catch (error) {
      if (!(error instanceof BpfError)) throw error;
      const e = error.errno;
      if (e === EBUSY || e === EEXIST) {
        // Someone attached between our check and our attach.
        throw new XdpBusyError(ifname, foreignPrograms(ifindex, xdpQuery(ifindex)), 'retry, or use --force to replace it');
      }
      const unsupported = e === EOPNOTSUPP || e === ENOTSUPP || e === EINVAL;
      if (unsupported && i + 1 < modes.length) {
        notices.push(`${ifname} does not support native XDP (${errnoShort(e)}); falling back to generic (skb) mode, which is slower`);
        continue;
      }
      if (unsupported) {
        const alt = mode === 'native' ? '; use --mode skb (or auto) for generic XDP' : '';
        throw new XdpModeError(`${ifname} does not support ${modeLabel(mode)} XDP (${errnoShort(e)})${alt}`, e);
      }
      throw error;
    }
  }
  throw new Error('unreachable');
}

function errnoShort(e: number): string {
  return e === EOPNOTSUPP ? 'EOPNOTSUPP' : e === ENOTSUPP ? 'ENOTSUPP' : e === EINVAL ? 'EINVAL' : `errno ${e}`;
}
