/**
 * Where dispatchers live: the pinned one of a namespace under <bpffs>/skl/<netns-ino>/, created
 * atomically (pinned in a scratch directory, then renamed), and foreground ones found through the
 * kernel's list of links. Also repairs what an interrupted skl left behind.
 */
import {accessSync, constants, existsSync, readdirSync, renameSync, rmdirSync, unlinkSync} from 'node:fs';
import {BpfObject} from '../bpf/object.js';
import {BpfMap} from '../bpf/map.js';
import {Link} from '../bpf/link.js';
import {BpfError} from '../bpf/errors.js';
import {libbpf} from '../ffi/index.js';
import {close as closeFd} from '../ffi/libc.js';
import {BPF_LINK_TYPE_NETNS, forEachNetnsLink, mapInfoByFd, progInfoByFd, progMapIds} from '../bpf/info.js';
import {ensureBpffs, mkdirBpffs} from '../sys/bpffs.js';
import {SklError} from '../sys/errors.js';
import {lock} from '../sys/lock.js';
import type {Netns} from '../sys/netns.js';
import {DispatcherState, KERNEL_MAP_NAMES, loadDispatcher, MAP_NAMES, PROGRAM_NAME, withServiceSnapshots, type MapName, type OptionalProgram} from './state.js';
import {decodeInfo, LAYOUT, SVC_F_REMOVING, SVC_PENDING} from './layout.js';
import {pruneFollow} from './follow.js';
import {isLegacyDir, isOlderLayoutDir, LEGACY_MAP_NAMES, LegacyState, openOlderPinned, type OlderState} from './legacy.js';
import {removeService} from './services.js';
import {SKL_VERSION} from '../version.js';
import {crashPoint} from './faults.js';
import {JOURNAL_RE, removeJournal, repairFromJournal} from './journal.js';
import {finishInterruptedApply} from './apply-journal.js';
import {coverInterfaces, releaseInterfaces, removeOrphanFilters} from './interfaces.js';
import {syncReplyPorts} from './replies.js';

const BPF_SK_LOOKUP = 36;
export {PROGRAM_NAME};

export interface StoreOptions {
  /** bpffs mount point (default /sys/fs/bpf) */
  bpffs?: string;
  /** lock file guarding writes (default /run/skl.lock; not in bpffs, so skl's bpffs directory can go away when empty) */
  lockFile?: string;
}

/** Pinned state of a layout this skl does not read or write. */
export class LayoutError extends SklError {
  constructor(
    readonly layout: number,
    message: string,
  ) {
    super(message);
  }
}

/** The dispatcher maps of a loaded object, by name. */
export function mapsOf(obj: BpfObject): Record<MapName, BpfMap> {
  const maps = {} as Record<MapName, BpfMap>;
  for (const n of MAP_NAMES) maps[n] = obj.map(n);
  return maps;
}

/** Pin of the follow program in a dispatcher's directory; its cgroup links are `follow-<cgroup inode>`. */
export const FOLLOW_PROG_PIN = 'follow_prog';
/** Pins of the optional programs in a dispatcher's directory (for attaching them later). */
export const PROGRAM_PINS: Record<OptionalProgram, string> = {
  sk_follow: FOLLOW_PROG_PIN,
  sk_follow_sock: 'follow_sock_prog',
  sk_follow_udp: 'follow_udp_prog',
  sk_reply: 'reply_prog',
};
/** A cgroup's links in a dispatcher's directory: `follow-<ino>` (sock_ops), `follow-sock-<ino>` (socket creation). */
export const FOLLOW_LINK_RE = /^follow-(?:sock-)?(\d+)$/;

/**
 * The pin of one of a pinned dispatcher's optional programs, loaded on the maps pinned in `dir`
 * and pinned there the first time something needs it; undefined when this kernel cannot load it.
 * (Loading them all with the dispatcher would make every first attach pay the verifier for
 * programs most dispatchers never use.) The caller holds the lock.
 */
export function ensureProgram(dir: string, program: OptionalProgram): string | undefined {
  const pin = `${dir}/${PROGRAM_PINS[program]}`;
  if (existsSync(pin)) return pin;
  const maps: Record<string, BpfMap> = {};
  try {
    for (const n of [...MAP_NAMES, ...KERNEL_MAP_NAMES]) maps[n] = BpfMap.openPinned(`${dir}/${n}`);
    let obj: BpfObject;
    try {
      obj = loadDispatcher({reuseMaps: maps, only: program}).obj;
    } catch (error) {
      if (error instanceof BpfError) return undefined;
      throw error;
    }
    try {
      obj.program(program).pin(pin);
    } finally {
      obj.close();
    }
    return pin;
  } finally {
    for (const m of Object.values(maps)) m.close();
  }
}

/** Pin a loaded dispatcher's maps and the optional programs this kernel loaded into `dir`. */
export function pinPrograms(obj: BpfObject, loaded: ReadonlySet<OptionalProgram>, dir: string): void {
  for (const n of [...MAP_NAMES, ...KERNEL_MAP_NAMES]) obj.map(n).pin(`${dir}/${n}`);
  for (const p of loaded) obj.program(p).pin(`${dir}/${PROGRAM_PINS[p]}`);
}

/** The lock file guarding writes (StoreOptions.lockFile, else $SKL_LOCK_FILE, else /run/skl.lock). */
export const lockPathOf = (opts: StoreOptions = {}): string => opts.lockFile ?? process.env.SKL_LOCK_FILE ?? '/run/skl.lock';

export class Store {
  readonly root: string;
  readonly notices: string[] = [];
  private readonly bpffs: string;
  private readonly lockFile: string;

  constructor(
    readonly netns: Netns,
    opts: StoreOptions = {},
  ) {
    this.bpffs = opts.bpffs ?? '/sys/fs/bpf';
    this.lockFile = lockPathOf(opts);
    const st = ensureBpffs(this.bpffs);
    if (st.mountedNow) this.notices.push(`mounted a BPF filesystem at ${this.bpffs}`);
    this.root = `${this.bpffs}/skl`;
    // skl's directory is root's only (0700): without access, "no dispatcher here" would be a lie
    try {
      if (existsSync(this.root)) accessSync(this.root, constants.R_OK | constants.X_OK);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      throw new SklError(`cannot read skl's state in ${this.root} (${code}): it is accessible to root only; run skl as root`);
    }
  }

  /** bpffs mount point */
  get bpffsRoot(): string {
    return this.bpffs;
  }

  get dir(): string {
    return `${this.root}/${this.netns.ino}`;
  }

  /** Repair half-made state now (the caller holds the lock: see lockPathOf). */
  repairNow(): void {
    this.repair();
  }

  /** Run `fn` holding skl's lock; repairs half-made state first. Services' records read meanwhile are kept between writes (withServiceSnapshots). */
  async locked<T>(fn: () => Promise<T> | T): Promise<T> {
    const fd = lock(this.lockFile);
    try {
      return await withServiceSnapshots(async () => {
        this.repair();
        return await fn();
      });
    } finally {
      closeFd(fd);
    }
  }

  /**
   * The namespace's pinned dispatcher, or undefined when there is none. Refuses state of another
   * layout (an older or newer skl wrote it) rather than misread it.
   */
  openPinned(): DispatcherState | undefined {
    if (!existsSync(this.dir)) return undefined;
    // the layout first: another layout's state has other maps, never "damaged" ones
    const known = this.pinnedLayout();
    if (known && known.layout !== LAYOUT) {
      const who = known.layout > LAYOUT ? `a newer skl (${known.version || 'unknown version'})` : `skl ${known.version || 'unknown version'}`;
      throw new LayoutError(
        known.layout,
        known.layout > LAYOUT
          ? `skl's state in ${this.dir} was created by ${who} with layout ${known.layout}; this skl (${SKL_VERSION}) knows layout ${LAYOUT} and never misreads newer state: use that skl, or upgrade this one`
          : `skl's state in ${this.dir} was created by ${who} (layout ${known.layout}); run: skl upgrade${this.netnsFlag()}`,
      );
    }
    const missing = MAP_NAMES.filter((n) => !existsSync(`${this.dir}/${n}`));
    if (missing.length) {
      throw new SklError(
        `skl's pinned state in ${this.dir} is damaged (missing: ${missing.join(', ')}); remove it with: skl detach --all${this.netnsFlag()}`,
      );
    }
    const maps = {} as Record<MapName, BpfMap>;
    try {
      for (const n of MAP_NAMES) maps[n] = BpfMap.openPinned(`${this.dir}/${n}`);
    } catch (error) {
      for (const m of Object.values(maps)) m.close();
      throw error;
    }
    let linkId = 0;
    let damage: string | undefined = `its link pin ${this.dir}/link is missing: the extra ports are not steered; run skl detach --all${this.netnsFlag()} and attach again`;
    if (existsSync(`${this.dir}/link`)) {
      damage = undefined;
      const link = Link.openPinned(`${this.dir}/link`);
      try {
        const info = link.info();
        linkId = info.netnsIno === this.netns.ino ? info.id : 0;
        if (!linkId) damage = `its link is no longer attached to the namespace; run skl detach --all${this.netnsFlag()} and attach again`;
      } finally {
        link.close();
      }
    }
    return new DispatcherState('pinned', maps, linkId, damage);
  }

  /** The pinned dispatcher's layout: undefined when there is none (LAYOUT for a damaged current one). */
  pinnedLayout(): {layout: number; version: string} | undefined {
    if (!existsSync(this.dir)) return undefined;
    if (isLegacyDir(this.dir)) return {layout: 0, version: '0.1.0'};
    if (!existsSync(`${this.dir}/skl_info`)) return {layout: LAYOUT, version: ''};
    const m = BpfMap.openPinned(`${this.dir}/skl_info`);
    try {
      const v = m.lookup(Buffer.alloc(4));
      return v ? decodeInfo(v) : {layout: LAYOUT, version: ''};
    } finally {
      m.close();
    }
  }

  /** The namespace's pinned state of an older layout (read only), when that is what is pinned. */
  openLegacyPinned(): OlderState | undefined {
    const l = this.pinnedLayout();
    return l && l.layout < LAYOUT ? openOlderPinned(this.dir, l.layout) : undefined;
  }

  netnsFlag(): string {
    return this.netns.path === '/proc/self/ns/net' ? '' : ` --netns ${this.netns.path}`;
  }

  /** Create, attach and pin the namespace's dispatcher; atomically visible once complete. */
  createPinned(): DispatcherState {
    // bpffs refuses names containing '.'
    const scratch = `${this.dir}-new-${process.pid}`;
    mkdirBpffs(this.bpffs, 'skl', `${this.netns.ino}-new-${process.pid}`);
    // the maps and sk_dispatch: the other programs are loaded and pinned when a service first needs
    // them (ensureProgram), so that a dispatcher of TCP services never pays the verifier for them
    const {obj, loaded} = loadDispatcher({mapsOnly: true});
    let link: Link | undefined;
    try {
      new DispatcherState('pinned', mapsOf(obj), 0).writeInfo(LAYOUT, SKL_VERSION);
      pinPrograms(obj, loaded, scratch);
      crashPoint('create:maps-pinned');
      link = obj.program(PROGRAM_NAME).attachNetns(this.netns.fd, `netns ${this.netns.path}`);
      link.pin(`${scratch}/link`);
      crashPoint('create:link-pinned');
      renameSync(scratch, this.dir);
      crashPoint('create:published');
    } catch (error) {
      removePins(scratch);
      throw error;
    } finally {
      link?.close();
      obj.close();
    }
    return this.openPinned()!;
  }

  /** Detach the pinned dispatcher (link pin first) and remove every pin. */
  destroyPinned(): void {
    // the removal is published at once (a rename); an interruption leaves `<ino>-old-<pid>`, which
    // the next skl removes, never a dispatcher with some pins missing
    const old = `${this.dir}-old-${process.pid}`;
    // its tc programs first: clsact filters (kernels without TCX) would outlive the directory
    try {
      if (existsSync(this.dir)) releaseInterfaces(this.netns, this.dir);
    } catch (error) {
      this.notices.push(`could not remove skl's tc programs from the interfaces: ${(error as Error).message}; the next skl command removes them`);
    }
    if (existsSync(this.dir)) renameSync(this.dir, old);
    crashPoint('detach:renamed');
    removePins(old);
    removeIfEmpty(this.root);
  }

  /**
   * Remove what an interrupted skl left in this namespace (scratch directories, pending slots, an
   * empty dispatcher) and the pins of namespaces that are gone. Runs under the lock, so nothing
   * found half-made is in progress. Best effort: what cannot be repaired is reported, not fatal.
   */
  private repair(): void {
    this.removeOrphanFilters();
    if (!existsSync(this.root)) return;
    const before = this.notices.length;
    try {
      this.repairNamespace();
      finishInterruptedApply(this); // an apply killed half-way: finished from its record (./apply-journal.ts)
    } catch (error) {
      this.notices.push(`could not repair skl's state in ${this.dir}: ${(error as Error).message}; if it persists, run skl detach --all${this.netnsFlag()}`);
    }
    // what an interrupted skl had started is finished or rolled back: the interfaces as the services now need them
    if (this.notices.length > before && existsSync(this.dir)) this.notices.push(...coverInterfaces(this));
    removeIfEmpty(this.root);
  }

  /** clsact filters of skl's tc programs whose dispatcher is gone (a SIGKILLed --foreground skl on a kernel without TCX links). */
  private removeOrphanFilters(): void {
    try {
      const n = removeOrphanFilters(this.netns);
      if (n) this.notices.push(`removed ${n} tc filter${n === 1 ? '' : 's'} of skl's that no dispatcher owns any more (left by a killed skl attach --foreground)`);
    } catch (error) {
      this.notices.push(`could not check the interfaces for tc filters a killed skl left: ${(error as Error).message}`);
    }
  }

  private repairNamespace(): void {
    const own = String(this.netns.ino);
    const journals: string[] = [];
    for (const entry of readdirSync(this.root)) {
      const j = JOURNAL_RE.exec(entry);
      if (j) {
        // a change an interrupted skl journaled: this namespace's are repaired below; another's
        // whose dispatcher is gone can never be applied
        if (j[1] === own) journals.push(`${this.root}/${entry}`);
        else if (!existsSync(`${this.root}/${j[1]}`)) removeJournal(`${this.root}/${entry}`);
        continue;
      }
      const m = /^(\d+)(?:-(new|old|up)-(\d+))?$/.exec(entry);
      if (!m) continue;
      const path = `${this.root}/${entry}`;
      if (m[1] === own && m[2] === 'up') {
        // an interrupted upgrade: past the program swap, finish it; before, roll it back
        if (upgradeSwapped(this.dir, path)) {
          finishUpgrade(this.dir, path);
          this.notices.push(`finished an upgrade an interrupted skl had started (pid ${m[3]})`);
        } else {
          removePins(path);
          this.notices.push(`rolled back an upgrade an interrupted skl had started (pid ${m[3]}); run skl upgrade${this.netnsFlag()} again`);
        }
      } else if (m[1] === own && m[2] !== undefined) {
        // dispatchers are only created and removed under the lock: any scratch directory is left over
        // an older layout's state set aside while a current dispatcher is in place: an upgrade
        // killed right after it published the new state
        const upgraded = m[2] === 'old' && existsSync(this.dir) && isOlderLayoutDir(path);
        removePins(path);
        this.notices.push(
          m[2] === 'new'
            ? `removed a half-made dispatcher left by an interrupted skl (pid ${m[3]})`
            : upgraded
              ? `finished an upgrade an interrupted skl had started (pid ${m[3]})`
              : `finished removing a dispatcher an interrupted skl was removing (pid ${m[3]})`,
        );
      } else if (linkDetached(path)) {
        // the kernel detaches a namespace's links when it goes away: these pins can never steer
        // again, and a new namespace may get the same inode (another namespace's: silently)
        removePins(path);
        if (m[1] === own) this.notices.push(`removed the stale dispatcher of an earlier network namespace with this inode (${own}); its link was no longer attached`);
      }
    }
    if (!existsSync(this.dir)) {
      for (const j of journals) removeJournal(j);
      return;
    }
    let st: DispatcherState | undefined;
    try {
      st = this.openPinned();
    } catch {
      return; // damaged: reported by the command that needs it
    }
    if (!st) return;
    try {
      // a ports add/remove or an in-place replacement killed half-way: rolled back or finished
      for (const j of journals) {
        this.notices.push(repairFromJournal(st, j));
        removeJournal(j);
      }
      for (const s of st.services()) {
        if (s.state === SVC_PENDING) {
          removeService(st, s.id);
          this.notices.push(s.flags & SVC_F_REMOVING ? `finished detaching ${s.name}, interrupted by an earlier skl` : `rolled back ${s.name}, left half-made by an interrupted skl`);
        }
      }
      // UDP replies: a replacement finished or rolled back may have changed a service's own ports
      if (journals.length) syncReplyPorts(st);
      // followed listeners of no service, and the cgroups' links and entries nothing follows any more
      pruneFollow(this.dir, st);
      if (st.services().length === 0) {
        st.close();
        st = undefined;
        this.destroyPinned();
        this.notices.push('removed an empty dispatcher left by an interrupted skl');
      }
    } finally {
      st?.close();
    }
  }

  /** Dispatchers of running `skl attach --foreground` processes in this namespace. */
  foreground(exceptLinkId = 0): DispatcherState[] {
    const pinned = pinnedLinkId(this.dir);
    return findDispatchers(this.netns.ino, false, (id) => id === exceptLinkId || id === pinned);
  }

  /** Foreground dispatchers of skl 0.1.0 processes still running in this namespace (never migrated). */
  legacyForeground(): LegacyState[] {
    const pinned = pinnedLinkId(this.dir);
    return findDispatchers(this.netns.ino, true, (id) => id === pinned);
  }
}

/**
 * Whether an upgrade's new program already runs behind the namespace's link: its link pin moved
 * into the upgrade directory, or the link's program is the one pinned there.
 */
function upgradeSwapped(dir: string, scratch: string): boolean {
  if (existsSync(`${scratch}/link`)) return true;
  if (!existsSync(`${scratch}/prog`) || !existsSync(`${dir}/link`)) return false;
  const pfd = libbpf.bpf_obj_get(`${scratch}/prog`);
  if (pfd < 0) return false;
  let link: Link | undefined;
  try {
    link = Link.openPinned(`${dir}/link`);
    return link.info().progId === progInfoByFd(pfd).id;
  } catch {
    return false;
  } finally {
    link?.close();
    closeFd(pfd);
  }
}

/**
 * An upgrade after its program swap: move the link pin into the new directory, drop the program
 * pin, then swap the directories. Every step is idempotent, so Store.repair can finish it too.
 */
export function finishUpgrade(dir: string, scratch: string): void {
  if (!existsSync(`${scratch}/link`)) renameSync(`${dir}/link`, `${scratch}/link`);
  crashPoint('upgrade:link-moved');
  if (existsSync(`${scratch}/prog`)) unlinkSync(`${scratch}/prog`);
  const oldDir = `${dir}-old-${scratch.slice(scratch.lastIndexOf('-up-') + 4)}`;
  if (existsSync(dir)) renameSync(dir, oldDir);
  crashPoint('upgrade:old-renamed');
  renameSync(scratch, dir);
  crashPoint('upgrade:published');
  removePins(oldDir);
}

/** The directory has a link pin whose link is no longer attached to any namespace. */
function linkDetached(dir: string): boolean {
  if (!existsSync(`${dir}/link`)) return false;
  let link: Link | undefined;
  try {
    link = Link.openPinned(`${dir}/link`);
    const info = link.info();
    return info.type === BPF_LINK_TYPE_NETNS && info.netnsIno === 0;
  } catch {
    return false;
  } finally {
    link?.close();
  }
}

/** The id of the link pinned in `dir` (0: none, or unreadable). */
function pinnedLinkId(dir: string): number {
  if (!existsSync(`${dir}/link`)) return 0;
  try {
    const l = Link.openPinned(`${dir}/link`);
    try {
      return l.info().id;
    } finally {
      l.close();
    }
  } catch {
    return 0;
  }
}

/**
 * Every skl sk_dispatch program attached to a namespace, found from the kernel's link list: of
 * this layout, or (legacy) skl 0.1.0's. Links `skip` names (the namespace's pinned one) are left
 * before their program's maps are opened.
 */
export function findDispatchers(netnsIno: number, legacy?: false, skip?: (linkId: number) => boolean): DispatcherState[];
export function findDispatchers(netnsIno: number, legacy: true, skip?: (linkId: number) => boolean): LegacyState[];
export function findDispatchers(netnsIno: number, legacy = false, skip: (linkId: number) => boolean = () => false): (DispatcherState | LegacyState)[] {
  const names: readonly string[] = legacy ? LEGACY_MAP_NAMES : MAP_NAMES;
  const out: (DispatcherState | LegacyState)[] = [];
  forEachNetnsLink(netnsIno, BPF_SK_LOOKUP, (pfd, info) => {
    if (skip(info.id)) return;
    try {
      if (progInfoByFd(pfd).name !== PROGRAM_NAME) return;
      const maps: Record<string, BpfMap> = {};
      for (const mid of progMapIds(pfd)) {
        const mfd = libbpf.bpf_map_get_fd_by_id(mid);
        if (mfd < 0) continue;
        const name = mapInfoByFd(mfd).name;
        if (names.includes(name) && !maps[name]) maps[name] = BpfMap.fromFd(mfd);
        else closeFd(mfd);
      }
      if (names.some((n) => !maps[n])) {
        for (const m of Object.values(maps)) m.close();
        return;
      }
      if (legacy) out.push(new LegacyState('foreground', maps as Record<(typeof LEGACY_MAP_NAMES)[number], BpfMap>, info.id));
      else out.push(new DispatcherState('foreground', maps as Record<MapName, BpfMap>, info.id));
    } catch (error) {
      if (!(error instanceof BpfError)) throw error;
    }
  });
  return out;
}

function removeIfEmpty(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {
    // not empty (other namespaces' dispatchers) or already gone
  }
}

export function removePins(dir: string): void {
  if (!existsSync(dir)) return;
  // the link first: unpinning it detaches the program at once
  if (existsSync(`${dir}/link`)) unlinkSync(`${dir}/link`);
  for (const entry of readdirSync(dir)) unlinkSync(`${dir}/${entry}`);
  rmdirSync(dir);
}
