/**
 * `skl upgrade`: move a namespace's pinned dispatcher to this skl's layout. The new state is built
 * beside the old one (`<ino>-up-<pid>`), the new program replaces the old one behind the same
 * pinned link (bpf_link_update: at no moment is nothing attached), then the directories swap.
 * From layouts 0 and 1, sockets are taken again from their processes (pid + socket inode are in the
 * old metadata): a SOCKMAP cannot be read back. From layout 2, the maps whose definitions did not
 * change (sockets, services, counters, followed listeners) are reused as they are, and the cgroups'
 * follow links run the new follow program (pinned in the new directory too). A service whose process
 * is gone keeps its bindings and shows dead. Interrupted at any step, the next skl finishes or rolls
 * back (Store.repair).
 */
import {closeSync, existsSync, readdirSync, statSync} from 'node:fs';
import {Link} from '../bpf/link.js';
import {mkdirBpffs} from '../sys/bpffs.js';
import {duplicateFd} from '../sys/pidfd.js';
import {SklError} from '../sys/errors.js';
import {Netns} from '../sys/netns.js';
import {socketInodesOf} from '../sys/sockets.js';
import {addBindings} from './bindings.js';
import {crashPoint} from './faults.js';
import {DESTS_PER_SERVICE, LAYOUT, type ServiceMeta} from './layout.js';
import type {LegacyService, OlderState} from './legacy.js';
import {DEFAULT_NETNS, withNetns} from './namespace.js';
import {DispatcherState, FOLLOW_PROGRAM, loadDispatcher} from './state.js';
import {BpfMap} from '../bpf/map.js';
import {finishUpgrade, FOLLOW_LINK_RE, mapsOf, pinPrograms, PROGRAM_NAME, removePins, Store, type StoreOptions} from './store.js';
import {SKL_VERSION} from '../version.js';
import {coverInterfaces} from './interfaces.js';
import {DEFAULT_UDP_REPLIES, syncReplyPorts, udpRepliesFlags} from './replies.js';

export interface UpgradeOptions extends StoreOptions {
  netns?: string;
  /** every namespace that has skl state under the bpffs root */
  all?: boolean;
  dryRun?: boolean;
}

export interface UpgradedService {
  name: string;
  pid: number;
  /** its sockets were taken again from the process */
  alive: boolean;
  bindings: number;
}

export interface NamespaceUpgrade {
  netns: string;
  netnsIno: number;
  /** what was (or, with dryRun, would be) done */
  result: 'upgraded' | 'would upgrade' | 'already current' | 'nothing to upgrade';
  fromLayout?: number;
  fromVersion?: string;
  toLayout: number;
  services: UpgradedService[];
  /** bpf_link id (unchanged) and program ids before and after */
  linkId?: number;
  oldProgId?: number;
  newProgId?: number;
  notices: string[];
}

export interface UpgradeReport {
  namespaces: NamespaceUpgrade[];
}

/** `--all`: some namespaces could not be upgraded (the others were); one line each. */
export class UpgradeFailed extends SklError {
  constructor(
    readonly done: NamespaceUpgrade[],
    readonly problems: string[],
  ) {
    super(problems.join('\n'));
  }
}

/** Upgrade one namespace (--netns or this one), or every namespace with skl state (--all). */
export async function upgrade(opts: UpgradeOptions = {}): Promise<UpgradeReport> {
  if (opts.all && opts.netns) throw new SklError('give --all or --netns, not both');
  if (!opts.all) return {namespaces: [await withNetns(opts.netns, (ns) => upgradeNamespace(ns, opts))]};
  const namespaces: NamespaceUpgrade[] = [];
  const failed: string[] = [];
  for (const path of namespacesWithState(opts.bpffs ?? '/sys/fs/bpf')) {
    let ns: Netns;
    try {
      ns = Netns.open(path);
    } catch {
      continue; // gone since it was listed
    }
    try {
      namespaces.push(await upgradeNamespace(ns, opts));
    } catch (error) {
      // one namespace's failure does not stop the others; it is reported and makes the exit code 1
      failed.push(`${path}: ${(error as Error).message}`);
    } finally {
      ns.close();
    }
  }
  if (failed.length) throw new UpgradeFailed(namespaces, failed);
  return {namespaces};
}

/**
 * A path for every namespace with a dispatcher directory (`<bpffs>/skl/<ino>`): found among
 * /run/netns/* and /proc/PID/ns/net (any process in it), the caller's own first.
 */
function namespacesWithState(bpffs: string): string[] {
  const root = `${bpffs}/skl`;
  if (!existsSync(root)) return [];
  const wanted = new Set(readdirSync(root).filter((e) => /^\d+$/.test(e)).map(Number));
  const found = new Map<number, string>();
  const consider = (path: string): void => {
    try {
      const ino = statSync(path).ino;
      if (wanted.has(ino) && !found.has(ino)) found.set(ino, path);
    } catch {
      // gone meanwhile, or not ours to see
    }
  };
  consider(DEFAULT_NETNS);
  for (const dir of ['/run/netns', '/var/run/netns']) {
    try {
      for (const n of readdirSync(dir)) consider(`${dir}/${n}`);
    } catch {
      // none
    }
  }
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    if (found.size === wanted.size) break;
    consider(`/proc/${pid}/ns/net`);
  }
  return [...found.values()];
}

function upgradeNamespace(ns: Netns, opts: UpgradeOptions): Promise<NamespaceUpgrade> {
  const store = new Store(ns, opts);
  // with --all, a namespace already current is only reported: not locked, not repaired (that is
  // the business of whoever acts on it)
  const before = opts.all ? store.pinnedLayout() : undefined;
  if (before?.layout === LAYOUT) {
    return Promise.resolve({netns: ns.path, netnsIno: ns.ino, toLayout: LAYOUT, services: [], result: 'already current', fromLayout: LAYOUT, fromVersion: before.version, notices: []});
  }
  return store.locked(() => {
    const base = {netns: ns.path, netnsIno: ns.ino, toLayout: LAYOUT, services: [] as UpgradedService[]};
    const notes = (): string[] => {
      const out = [...store.notices];
      const fg = store.legacyForeground();
      for (const l of fg) {
        for (const s of l.services()) out.push(`${s.meta.name} is a foreground attachment of skl 0.1.0 process ${s.meta.ownerPid}: left alone (it lives as long as that process)`);
        l.close();
      }
      return out;
    };
    const layout = store.pinnedLayout();
    if (!layout) return {...base, result: 'nothing to upgrade', notices: notes()};
    if (layout.layout > LAYOUT) {
      throw new SklError(`skl's state in ${store.dir} was created by a newer skl (${layout.version || 'unknown version'}, layout ${layout.layout}); this skl (${SKL_VERSION}) cannot downgrade it`);
    }
    if (layout.layout === LAYOUT) return {...base, result: 'already current', fromLayout: layout.layout, fromVersion: layout.version, notices: notes()};
    const old = store.openLegacyPinned();
    if (!old) throw new SklError(`skl's state in ${store.dir} has layout ${layout.layout}, which this skl cannot read`);
    try {
      const services = old.services();
      const link = Link.openPinned(`${store.dir}/link`);
      try {
        const before = link.info();
        const planned = services.map((s) => ({name: s.meta.name, pid: s.meta.pid, alive: s.alive, bindings: s.bindings.length}));
        if (opts.dryRun) {
          return {...base, result: 'would upgrade', fromLayout: layout.layout, fromVersion: layout.version, services: planned, linkId: before.id, oldProgId: before.progId, notices: notes()};
        }
        const done = migrate(store, old, services, link);
        const covered = coverInterfaces(store);
        return {
          ...base,
          result: 'upgraded',
          fromLayout: layout.layout,
          fromVersion: layout.version,
          services: done,
          linkId: before.id,
          oldProgId: before.progId,
          newProgId: link.info().progId,
          // layout 2's counters are carried over with its services
          notices: [...notes(), ...(layout.layout < 2 ? ['counters restart from 0 in the new layout'] : []), ...covered],
        };
      } finally {
        link.close();
      }
    } finally {
      old.close();
    }
  });
}

/**
 * Maps a layout-2 dispatcher shares with this layout, definitions unchanged: reused as they are,
 * so sockets (also those the follow program stored after restarts), service records, follow
 * entries and counters carry over untouched.
 */
const REUSED_FROM_LAYOUT2 = ['target_socket', 'services', 'counters', 'follow'] as const;

/** Build the new state beside the old, swap the program behind the link, then swap the directories. */
function migrate(store: Store, old: OlderState, services: LegacyService[], link: Link): UpgradedService[] {
  const scratch = `${store.dir}-up-${process.pid}`;
  mkdirBpffs(store.bpffsRoot, 'skl', `${store.netns.ino}-up-${process.pid}`);
  const reused: Record<string, BpfMap> = {};
  if (old.layout === 2) for (const n of REUSED_FROM_LAYOUT2) reused[n] = BpfMap.openPinned(`${store.dir}/${n}`);
  let loaded: ReturnType<typeof loadDispatcher>;
  try {
    loaded = loadDispatcher({reuseMaps: reused});
  } finally {
    for (const m of Object.values(reused)) m.close();
  }
  const {obj, follow} = loaded;
  const out: UpgradedService[] = [];
  try {
    const d = new DispatcherState('pinned', mapsOf(obj), 0);
    d.writeInfo(LAYOUT, SKL_VERSION);
    // UDP services get this layout's default: replies from the extra port the client used
    const upgraded = (m: ServiceMeta): ServiceMeta => ({...m, flags: udpRepliesFlags(m.flags, m.sockets, DEFAULT_UDP_REPLIES)});
    // layout 2's records as they are in its (reused) services map
    const records = old.layout === 2 ? new Map(d.services().map((r) => [r.id, r])) : undefined;
    for (const s of services) {
      if (records) {
        // the same service record, sockets and counters: only its bindings move to the new tables
        const rec = records.get(s.slot);
        if (rec && upgraded(rec).flags !== rec.flags) d.writeService(s.slot, upgraded(rec));
        addBindings(d, s.slot, s.bindings);
        out.push({name: s.meta.name, pid: s.meta.pid, alive: s.alive, bindings: s.bindings.length});
        continue;
      }
      // service id = its 0.1.0 slot (< 256 < 1024): nothing to renumber
      d.resetCounters(s.slot);
      // each socket again from its process (a dual-stack one may serve two destinations)
      const fds = new Map<number, number | undefined>();
      let alive = false;
      try {
        s.meta.sockets.forEach((m, i) => {
          if (!m) return;
          if (!fds.has(m.sockIno)) fds.set(m.sockIno, retake(m.pid, m.sockIno));
          const fd = fds.get(m.sockIno);
          if (fd !== undefined) {
            d.setSocket(s.slot * DESTS_PER_SERVICE + i, fd);
            alive = true;
          }
        });
      } finally {
        for (const fd of fds.values()) if (fd !== undefined) closeSync(fd);
      }
      d.writeService(s.slot, upgraded(s.meta));
      addBindings(d, s.slot, s.bindings);
      out.push({name: s.meta.name, pid: s.meta.pid, alive, bindings: s.bindings.length});
    }
    syncReplyPorts(d);
    pinPrograms(obj, loaded.loaded, scratch);
    obj.program(PROGRAM_NAME).pin(`${scratch}/prog`);
    // the cgroups' follow links run the new follow program too, and move with the state
    for (const entry of readdirSync(store.dir).filter((e) => FOLLOW_LINK_RE.test(e))) {
      // a second pin of the same link (the old directory's stays until the swap is published)
      const l = Link.openPinnedFd(`${store.dir}/${entry}`);
      try {
        if (follow) l.update(obj.program(FOLLOW_PROGRAM).fd, `${FOLLOW_PROGRAM} (layout ${LAYOUT})`);
        l.pin(`${scratch}/${entry}`);
      } finally {
        l.close();
      }
    }
    crashPoint('upgrade:built');
    // the new program behind the same link, atomically
    link.update(obj.program(PROGRAM_NAME).fd, `${PROGRAM_NAME} (layout ${LAYOUT})`);
    crashPoint('upgrade:swapped');
  } catch (error) {
    obj.close();
    removePins(scratch);
    throw error;
  }
  obj.close();
  finishUpgrade(store.dir, scratch);
  return out;
}

/** Take a socket again from its process: the fd holding that socket inode, or undefined. */
function retake(pid: number, sockIno: number): number | undefined {
  try {
    const fd = socketInodesOf(pid).get(sockIno);
    return fd === undefined ? undefined : duplicateFd(pid, fd);
  } catch {
    return undefined; // the process is gone: the service keeps its bindings and shows dead
  }
}
