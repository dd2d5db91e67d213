/**
 * Changes of a ready service that take many map updates — `ports add`, `ports remove`, replacing
 * its process in place — are written to a journal first, so that an skl killed half-way never
 * leaves them half done: the next skl (Store.repair, under the lock) rolls back a ports add or a
 * replacement not yet switched, and finishes a ports remove or a replacement already switching.
 * Meanwhile every binding written points to the service it belongs to, and that service is ready:
 * half-made state never steers anywhere the change did not intend.
 *
 * A journal is a dispatcher-shaped image pinned beside the namespace's dispatcher, in
 * `<bpffs>/skl/<netns-ino>-change-<pid>/` (a name older skls of this layout ignore): the bindings
 * to add belong to pseudo-service 0 of the image and the bindings to remove to pseudo-service 1
 * (the same maps, capacities and code as live bindings; the two lists never share a binding), the
 * service's record as it is to be after the change sits at the service's own id in `services`,
 * and `skl_info` holds the phase. `skl_info` is pinned last: a journal without it is incomplete,
 * and nothing live was touched yet.
 */
import {closeSync, existsSync, rmdirSync, unlinkSync} from 'node:fs';
import {BpfObject} from '../bpf/object.js';
import {BpfMap, u32Key} from '../bpf/map.js';
import {mkdirBpffs} from '../sys/bpffs.js';
import {duplicateFd} from '../sys/pidfd.js';
import {socketInodesOf} from '../sys/sockets.js';
import {addBindings, bindingsOf, portsText, readBindings, removeBindings, type BindingSpec} from './bindings.js';
import {crashPoint, type CrashPoint} from './faults.js';
import {DESTS_PER_SERVICE, encodeInfo, SVC_READY, type ServiceMeta} from './layout.js';
import {DispatcherState, loadDispatcher, MAP_NAMES, type MapName, type ServiceRecord} from './state.js';
import {SKL_VERSION} from '../version.js';

/** Pseudo-services of a journal image. */
const ADD = 0;
const REMOVE = 1;

/** The phase a journal records (skl_info's layout word of the image). */
export const PHASE = {
  /** bindings being added to a ready service: roll back */
  portsAdd: 1,
  /** bindings being removed: finish */
  portsRemove: 2,
  /** replacing a service's sockets, bindings being added, no socket swapped yet: roll back */
  replaceAdding: 3,
  /** replacing, sockets being swapped (or swapped): finish, taking the new sockets again from their process */
  replaceSwitching: 4,
} as const;
type Phase = (typeof PHASE)[keyof typeof PHASE];

export const JOURNAL_RE = /^(\d+)-change-(\d+)$/;

/** Where journals go (a Store is one). */
export interface JournalPlace {
  /** bpffs mount point */
  readonly bpffsRoot: string;
  readonly netns: {readonly ino: number};
}

export interface Change {
  phase: Phase;
  id: number;
  /** the service's record after the change (for ports add/remove: as it is) */
  meta: ServiceMeta;
  add: readonly BindingSpec[];
  remove: readonly BindingSpec[];
}

/** A journal written by this process, open until done. */
export class Journal {
  private constructor(
    readonly dir: string,
    private readonly info: BpfMap,
  ) {}

  /** Write and publish a journal (nothing live is changed). */
  static write(place: JournalPlace, change: Change): Journal {
    const name = `${place.netns.ino}-change-${process.pid}`;
    const dir = mkdirBpffs(place.bpffsRoot, 'skl', name);
    try {
      const obj = loadDispatcher({mapsOnly: true}).obj;
      const img = new DispatcherState('pinned', mapsOfObject(obj), 0);
      try {
        img.writeService(change.id, change.meta);
        addBindings(img, ADD, change.add);
        addBindings(img, REMOVE, change.remove);
        img.writeInfo(change.phase, SKL_VERSION);
        // skl_info last (MAP_NAMES ends with it): its pin says the journal is complete
        for (const n of MAP_NAMES) {
          if (n === 'skl_info') crashPoint('journal:incomplete');
          obj.map(n).pin(`${dir}/${n}`);
        }
      } finally {
        img.close();
        obj.close();
      }
      return new Journal(dir, BpfMap.openPinned(`${dir}/skl_info`));
    } catch (error) {
      removeJournal(dir);
      throw error;
    }
  }

  /** Record a new phase (one map update: atomic). */
  phase(phase: Phase): void {
    this.info.update(u32Key(0), encodeInfo(phase, SKL_VERSION));
  }

  /** The change is complete: remove the journal. */
  done(): void {
    this.info.close();
    removeJournal(this.dir);
  }

  /** The change failed: repair live state as the next skl would (roll back or finish), then remove the journal; left for the next skl if that fails too. */
  abandon(live: DispatcherState): void {
    this.info.close();
    try {
      repairFromJournal(live, this.dir);
      removeJournal(this.dir);
    } catch {
      // the next skl repairs it
    }
  }
}

function mapsOfObject(obj: BpfObject): Record<MapName, BpfMap> {
  const maps = {} as Record<MapName, BpfMap>;
  for (const n of MAP_NAMES) maps[n] = obj.map(n);
  return maps;
}

/**
 * Run a journaled change: `apply` makes the live writes (with crash points between them); an error
 * repairs as the next skl would, and is rethrown.
 */
export function journaled<T>(place: JournalPlace, live: DispatcherState, change: Change, apply: (j: Journal) => T, point: CrashPoint): T {
  const j = Journal.write(place, change);
  crashPoint(point);
  let result: T;
  try {
    result = apply(j);
  } catch (error) {
    j.abandon(live);
    throw error;
  }
  j.done();
  return result;
}

/** Add (or remove) bindings in two halves, with a crash point between them (a change interrupted half-way, for tests). */
export function inHalves(list: readonly BindingSpec[], write: (part: readonly BindingSpec[]) => void, point: CrashPoint): void {
  const half = Math.ceil(list.length / 2);
  write(list.slice(0, half));
  crashPoint(point);
  write(list.slice(half));
}

export function removeJournal(dir: string): void {
  if (!existsSync(dir)) return;
  // the completeness marker first: a journal being removed is never mistaken for a complete one
  for (const n of ['skl_info', ...MAP_NAMES.filter((m) => m !== 'skl_info')]) {
    if (existsSync(`${dir}/${n}`)) unlinkPin(`${dir}/${n}`);
  }
  rmdirPin(dir);
}

/**
 * Repair the live dispatcher from an interrupted skl's journal (idempotent: a repair interrupted
 * in turn is done again by the next skl). Returns the notice to print. The caller removes the journal.
 */
export function repairFromJournal(live: DispatcherState, dir: string): string {
  const pid = Number(JOURNAL_RE.exec(dir.slice(dir.lastIndexOf('/') + 1))?.[2] ?? 0);
  if (!existsSync(`${dir}/skl_info`)) return `removed an unfinished change record of an interrupted skl (pid ${pid}); it had changed nothing`;
  const maps = {} as Record<MapName, BpfMap>;
  try {
    for (const n of MAP_NAMES) maps[n] = BpfMap.openPinned(`${dir}/${n}`);
    const img = new DispatcherState('pinned', maps, 0);
    const phase = img.info().layout as Phase;
    const records = img.services();
    if (records.length !== 1) return `discarded a damaged change record of an interrupted skl (pid ${pid})`;
    const target = records[0];
    const current = live.services().find((s) => s.id === target.id);
    if (!current || current.state !== SVC_READY || current.name !== target.name || current.createdNs !== target.createdNs) {
      return `discarded a change record of an interrupted skl (pid ${pid}): ${target.name} is no longer the service it was written for`;
    }
    const all = readBindings(img);
    const add = bindingsOf(img, ADD, all);
    const remove = bindingsOf(img, REMOVE, all);
    const what = (list: readonly BindingSpec[]): string => portsText([...new Set(list.map((b) => b.port))].sort((a, b) => a - b));
    switch (phase) {
      case PHASE.portsAdd:
        removeBindings(live, target.id, add);
        return `rolled back a ports add of ${target.name} (${what(add)}) an interrupted skl had started (pid ${pid})`;
      case PHASE.portsRemove:
        removeBindings(live, target.id, remove);
        return `finished a ports remove of ${target.name} (${what(remove)}) an interrupted skl had started (pid ${pid})`;
      case PHASE.replaceAdding:
        removeBindings(live, target.id, add);
        return `rolled back replacing ${target.name}'s process by pid ${target.pid}, which an interrupted skl had started (pid ${pid})`;
      case PHASE.replaceSwitching:
        finishReplace(live, target, add, remove);
        return `finished replacing ${target.name}'s process by pid ${target.pid}, which an interrupted skl had started (pid ${pid})`;
      default:
        return `discarded a change record of an interrupted skl (pid ${pid}) of an unknown kind (${phase})`;
    }
  } finally {
    for (const m of Object.values(maps)) m.close();
  }
}

/** A replacement past its switch: the new bindings, the new process's sockets (taken again), its record, then the old bindings removed. */
function finishReplace(live: DispatcherState, target: ServiceRecord, add: readonly BindingSpec[], remove: readonly BindingSpec[]): void {
  addBindings(live, target.id, add);
  for (let i = 0; i < DESTS_PER_SERVICE; i++) {
    const dest = target.id * DESTS_PER_SERVICE + i;
    const m = target.sockets[i];
    const fd = m ? retake(m.pid, m.sockIno) : undefined;
    if (fd === undefined) {
      // no socket for it in the new process (or it is gone): as a completed replacement would be
      live.deleteSocket(dest);
      continue;
    }
    try {
      live.setSocket(dest, fd);
    } catch {
      live.deleteSocket(dest); // no longer a socket the map takes (it stopped listening): as if gone
    } finally {
      closeSync(fd);
    }
  }
  const {id: _id, ...meta} = target;
  live.writeService(target.id, {...meta, state: SVC_READY});
  removeBindings(live, target.id, remove);
}

/** A process's socket by its inode, duplicated; undefined when the process or the socket is gone. */
function retake(pid: number, sockIno: number): number | undefined {
  try {
    const fd = socketInodesOf(pid).get(sockIno);
    return fd === undefined ? undefined : duplicateFd(pid, fd);
  } catch {
    return undefined;
  }
}

function unlinkPin(path: string): void {
  try {
    unlinkSync(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}

function rmdirPin(dir: string): void {
  try {
    rmdirSync(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}
