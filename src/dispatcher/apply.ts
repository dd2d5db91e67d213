/**
 * `skl apply`: make namespaces match a desired-state file (./desired.ts), idempotently. Everything
 * is validated first — the file, the targets, conflicts between entries and with what is attached,
 * the hijack guard — and nothing changes if anything is wrong. Then each namespace changes in one
 * locked transaction, only what differs, in an order that never drops a connection to a port that
 * stays: sockets replaced in place, bindings added before bindings removed (a binding that moves
 * to another service moves in one store: the new owner overwrites it), services removed last.
 * Crash-safe as a whole: before its first change apply records its intent, and an apply killed
 * half-way is finished by the next skl (./apply-journal.ts). `skl export` writes the file that
 * describes what is attached.
 */
import {closeSync} from 'node:fs';
import {resolve as resolvePath} from 'node:path';
import {SklError, UsageError} from '../sys/errors.js';
import {lock} from '../sys/lock.js';
import {Netns} from '../sys/netns.js';
import type {Proto} from '../sys/sockets.js';
import {addBindings, bindingId, bindingsOf, bindingText, groupBindings, portsText, readBindings, removeBindings, type Binding, type BindingSpec} from './bindings.js';
import {plannedBindings, type CommonOptions} from './attach.js';
import type {DesiredService} from './desired.js';
import {crashPoint, type CrashPoint} from './faults.js';
import {MAX_SERVICES, prefixText, SVC_READY} from './layout.js';
import {checkHijack, closeAll, DEFAULT_NETNS, legacyClaims, openAll, ownSockets, servicesByName, type ServiceRef} from './namespace.js';
import {releaseService, removeService, replaceSockets, serviceMeta, socketText, takeService, writeNewService, type TakenService} from './services.js';
import type {DispatcherState} from './state.js';
import {lockPathOf, Store, type StoreOptions} from './store.js';
import {resolveTarget} from './targets.js';
import {removeApplyRecord, writeApplyRecord} from './apply-journal.js';
import {coverInterfaces} from './interfaces.js';
import {setUdpReplies, udpRepliesOf, type UdpRepliesMode} from './replies.js';
import {compareNames} from './input.js';

export interface ApplyOptions extends StoreOptions {
  /** the namespace of entries that name none (default: the caller's) */
  netns?: string;
  dryRun?: boolean;
  /** detach services the file does not mention */
  prune?: boolean;
  /** the file the desired state came from (for the notice of a repair) */
  file?: string;
}

export interface ApplyAction {
  op: '+' | '-' | '~';
  netns: string;
  service: string;
  /** service, binding or sockets */
  what: 'service' | 'binding' | 'sockets' | 'udp replies';
  detail: string;
}

export interface ApplyReport {
  changed: boolean;
  dryRun: boolean;
  actions: ApplyAction[];
  /** attached services the file does not mention, left alone (without --prune) */
  unmanaged: {netns: string; service: string}[];
  notices: string[];
}

/** Several problems, one line each (exit code 1: refused; DesiredStateError: 2). */
export class ApplyRefused extends SklError {
  constructor(readonly problems: string[]) {
    super(problems.join('\n'));
  }
}

interface ServicePlan {
  d: DesiredService;
  t: TakenService;
  list: BindingSpec[];
  existing?: ServiceRef;
  add: BindingSpec[];
  remove: BindingSpec[];
  socketsChanged: boolean;
  /** protocols changed: removed and attached again */
  recreate: boolean;
  /** an existing service's UDP replies mode as it will be (undefined: it has no UDP socket) */
  replies?: UdpRepliesMode;
}

/** A reason not to apply: of one service of the file, or of the whole namespace (no service). */
interface Problem {
  service?: string;
  text: string;
}

interface NsPlan {
  ns: Netns;
  store: Store;
  all: DispatcherState[];
  services: ServicePlan[];
  prune: ServiceRef[];
  actions: ApplyAction[];
  problems: Problem[];
}

const label = (ns: Netns): string => (ns.path === DEFAULT_NETNS ? 'this namespace' : ns.path);

function summarize(list: readonly BindingSpec[]): string[] {
  return groupBindings(list).map((g) => `${g.proto.toUpperCase()} ${portsText(g.ports)} @${prefixText(g.prefix)}`);
}

/** Apply a desired-state file. */
export async function applyFile(file: string, opts: ApplyOptions = {}): Promise<ApplyReport> {
  // the YAML parser is loaded by apply only, not by every skl that may repair an interrupted apply
  const {readDesired} = await import('./desired.js');
  return apply(readDesired(file), {file: resolvePath(file), ...opts});
}

export async function apply(desired: DesiredService[], opts: ApplyOptions = {}): Promise<ApplyReport> {
  // a bad --netns is bad input (exit 2), as for every command, even when no entry ends up there
  if (opts.netns !== undefined) Netns.open(opts.netns).close();
  const byNs = new Map<string, DesiredService[]>();
  for (const d of desired) {
    const path = d.netns || opts.netns || DEFAULT_NETNS;
    byNs.set(path, [...(byNs.get(path) ?? []), d]);
  }
  if (byNs.size === 0) byNs.set(opts.netns ?? DEFAULT_NETNS, []);
  const namespaces: Netns[] = [];
  const plans: NsPlan[] = [];
  const problems: string[] = [];
  const notices: string[] = [];
  // one lock for the whole file: validated across every namespace, then applied
  const fd = lock(lockPathOf(opts));
  try {
    for (const [path, list] of byNs) {
      let ns: Netns;
      try {
        ns = Netns.open(path);
      } catch (error) {
        problems.push((error as Error).message);
        continue;
      }
      namespaces.push(ns);
      const store = new Store(ns, opts);
      store.repairNow();
      const plan = planNamespace(ns, store, list, opts.prune ?? false);
      plans.push(plan);
      problems.push(...plan.problems.map((p) => p.text));
    }
    for (const p of plans) notices.push(...p.store.notices);
    const report: ApplyReport = {
      changed: false,
      dryRun: opts.dryRun ?? false,
      actions: plans.flatMap((p) => p.actions),
      unmanaged: opts.prune ? [] : plans.flatMap((p) => unmanaged(p)),
      notices,
    };
    if (problems.length) throw new ApplyRefused(problems);
    if (opts.dryRun) return report;
    const changing = plans.filter((p) => p.actions.length > 0);
    // the intent of every namespace recorded before the first change of any: an apply killed
    // half-way is finished by the next skl in each namespace (./apply-journal.ts)
    const records = new Map<NsPlan, string>();
    try {
      for (const p of changing) {
        records.set(p, writeApplyRecord(p.store, {file: opts.file ?? 'a desired state', prune: opts.prune ?? false, services: byNs.get(p.ns.path) ?? []}));
      }
    } catch (error) {
      for (const r of records.values()) removeApplyRecord(r);
      throw error;
    }
    crashPoint('apply:recorded');
    for (const p of changing) {
      try {
        execute(p);
      } catch (error) {
        // finish what can be finished now, as the next skl would; if that fails too, the record is left for it
        try {
          rollForward(p.store, byNs.get(p.ns.path) ?? [], opts.prune ?? false);
          removeApplyRecord(records.get(p)!);
        } catch {
          // the next skl finishes it
        }
        throw error;
      }
      crashPoint('apply:applied');
      removeApplyRecord(records.get(p)!);
    }
    report.changed = report.actions.length > 0;
    return report;
  } finally {
    for (const p of plans) release(p);
    for (const ns of namespaces) ns.close();
    closeSync(fd);
  }
}

function release(p: NsPlan): void {
  for (const s of p.services) releaseService(s.t);
  closeAll(p.all);
}

/**
 * Finish an interrupted apply (the next skl, under the lock, from its record): plan the recorded
 * desired state against what is there now and make what still differs. A service that cannot be
 * applied now (its process gone, say) is left as it is and reported; the others are applied.
 * Services the record names are never pruned.
 */
export function rollForward(store: Store, desired: readonly DesiredService[], prune: boolean): {skipped: string[]} {
  const keep = new Set(desired.map((d) => d.name));
  const skipped: string[] = [];
  let list = [...desired];
  for (;;) {
    const plan = planNamespace(store.netns, store, list, prune, keep);
    try {
      const whole = plan.problems.filter((p) => p.service === undefined);
      if (whole.length) throw new SklError(whole.map((p) => p.text).join('; '));
      if (plan.problems.length === 0) {
        execute(plan);
        return {skipped};
      }
      const bad = new Set(plan.problems.map((p) => p.service));
      skipped.push(...plan.problems.map((p) => p.text));
      list = list.filter((d) => !bad.has(d.name));
    } finally {
      release(plan);
    }
  }
}

function unmanaged(p: NsPlan): {netns: string; service: string}[] {
  const mentioned = new Set(p.services.map((s) => s.d.name));
  return [...servicesByName(p.all).values()].filter((r) => !mentioned.has(r.record.name)).map((r) => ({netns: p.ns.path, service: r.record.name}));
}

/** `keep`: names never pruned (default: the desired services'). */
function planNamespace(ns: Netns, store: Store, desired: readonly DesiredService[], prune: boolean, keep = new Set(desired.map((d) => d.name))): NsPlan {
  const plan: NsPlan = {ns, store, all: [], services: [], prune: [], actions: [], problems: []};
  const problem = (d: DesiredService | undefined, text: string): void => {
    plan.problems.push({service: d?.name, text});
  };
  const where = label(ns);
  try {
    plan.all = openAll(store);
  } catch (error) {
    problem(undefined, (error as Error).message);
    return plan;
  }
  const current = servicesByName(plan.all);
  // who claims what in the file: two entries may not claim the same binding
  const claimedBy = new Map<string, DesiredService>();
  for (const d of desired) {
    const at = `line ${d.line}: service ${d.name}`;
    let pid: number;
    try {
      pid = resolveTarget(d.target, d.protos, d.listeners);
    } catch (error) {
      problem(d, `${at}: ${(error as Error).message}`);
      continue;
    }
    let t: TakenService;
    try {
      t = takeService({pid, protos: d.protos, fds: d.fds, listeners: d.listeners});
    } catch (error) {
      problem(d, `${at}: ${(error as Error).message}`);
      continue;
    }
    const sp: ServicePlan = {d, t, list: [], add: [], remove: [], socketsChanged: false, recreate: false};
    plan.services.push(sp);
    if (t.netnsIno !== undefined && t.netnsIno !== ns.ino) {
      problem(d, `${at}: the sockets of process ${pid} belong to another network namespace than ${ns.path === DEFAULT_NETNS ? 'this one' : ns.path}; give netns: /proc/${pid}/ns/net`);
      continue;
    }
    try {
      for (const b of d.bindings) {
        const extra = b.protos.filter((p) => !d.protos.includes(p));
        if (extra.length) throw new UsageError(`a binding's proto ${extra.join(',')} is not one of the service's (${d.protos.join(',')})`);
        for (const x of plannedBindings(b.protos, t.dests, b.addresses, b.ports)) sp.list.push(x);
      }
    } catch (error) {
      problem(d, `${at}: ${(error as Error).message}`);
      continue;
    }
    const dup = new Set<string>();
    sp.list = sp.list.filter((b) => (dup.has(bindingId(b)) ? false : (dup.add(bindingId(b)), true)));
    for (const b of sp.list) {
      const other = claimedBy.get(bindingId(b));
      if (other) problem(d, `${at}: ${bindingText(b)} is also claimed by service ${other.name} (line ${other.line})`);
      else claimedBy.set(bindingId(b), d);
    }
    const existing = current.get(d.name);
    if (existing?.state.kind === 'foreground') {
      problem(d, `${at}: ${d.name} is a foreground service of skl process ${existing.record.ownerPid}; stop it or rename the entry`);
      continue;
    }
    sp.existing = existing;
    if (!existing) {
      plan.actions.push({op: '+', netns: where, service: d.name, what: 'service', detail: `${t.comm}[${t.pid}] ${t.sockets.map(socketText).join(' ')}: ${summarize(sp.list).join(', ')}`});
      sp.add = sp.list;
      continue;
    }
    const had = (['tcp', 'udp'] as const).filter((p) => existing.record.sockets.some((s) => s?.proto === p));
    sp.recreate = had.join() !== d.protos.join();
    const cur = bindingsOf(existing.state, existing.record.id);
    if (sp.recreate) {
      plan.actions.push({op: '~', netns: where, service: d.name, what: 'service', detail: `protocols ${had.join('+')} → ${d.protos.join('+')}: detached and attached again`});
      sp.add = sp.list;
      sp.remove = cur;
      continue;
    }
    sp.socketsChanged = existing.record.sockets.some((s, i) => (s?.sockIno ?? 0) !== (t.dests[i]?.inode ?? 0)) || existing.record.pid !== t.pid;
    if (sp.socketsChanged) {
      plan.actions.push({op: '~', netns: where, service: d.name, what: 'sockets', detail: `→ ${t.comm}[${t.pid}] ${t.sockets.map(socketText).join(' ')} (replaced in place)`});
    }
    const mode = udpRepliesOf(existing.record);
    sp.replies = mode && (d.udpReplies ?? mode);
    if (mode && sp.replies !== mode) plan.actions.push({op: '~', netns: where, service: d.name, what: 'udp replies', detail: `${mode} → ${sp.replies}`});
    const want = new Set(sp.list.map(bindingId));
    const have = new Set(cur.map(bindingId));
    sp.add = sp.list.filter((b) => !have.has(bindingId(b)));
    sp.remove = cur.filter((b) => !want.has(bindingId(b)));
    for (const g of summarize(sp.add)) plan.actions.push({op: '+', netns: where, service: d.name, what: 'binding', detail: g});
    for (const g of summarize(sp.remove)) plan.actions.push({op: '-', netns: where, service: d.name, what: 'binding', detail: g});
  }
  if (prune) {
    for (const ref of current.values()) {
      if (keep.has(ref.record.name) || ref.state.kind !== 'pinned') continue;
      plan.prune.push(ref);
      plan.actions.push({op: '-', netns: where, service: ref.record.name, what: 'service', detail: `${ref.record.comm}[${ref.record.pid}]`});
    }
  }
  // what each binding's owner will be once applied: a binding may only be taken from a service
  // that gives it up in this same apply
  const losing = new Set<string>();
  for (const sp of plan.services) if (sp.existing) for (const b of sp.remove) losing.add(`${sp.existing.record.id}|${bindingId(b)}`);
  for (const ref of plan.prune) for (const b of bindingsOf(ref.state, ref.record.id)) losing.add(`${ref.record.id}|${bindingId(b)}`);
  const owners = new Map<string, {ref: ServiceRef; binding: Binding}>();
  const names = new Map<DispatcherState, Map<number, ServiceRef>>();
  for (const ref of current.values()) {
    if (!names.has(ref.state)) names.set(ref.state, new Map());
    names.get(ref.state)!.set(ref.record.id, ref);
  }
  for (const d of plan.all) for (const b of readBindings(d)) {
    const ref = names.get(d)?.get(b.service);
    if (ref) owners.set(bindingId(b), {ref, binding: b});
  }
  const legacy = legacyClaims(store);
  for (const sp of plan.services) {
    const at = `line ${sp.d.line}: service ${sp.d.name}`;
    for (const b of sp.add) {
      const o = owners.get(bindingId(b));
      if (o && o.ref.record.name !== sp.d.name && !losing.has(`${o.ref.record.id}|${bindingId(b)}`)) {
        problem(sp.d, `${at}: ${bindingText(b)} already belongs to ${o.ref.record.name}${o.ref.state.kind === 'foreground' ? ` (foreground, skl process ${o.ref.record.ownerPid})` : ' (not in the file: use --prune, or remove it there)'}`);
        break;
      }
      const l = legacy.find((x) => x.bindings.has(bindingId(b)));
      if (l) {
        problem(sp.d, `${at}: ${bindingText(b)} already belongs to ${l.name}, a foreground attachment of skl 0.1.0 process ${l.ownerPid}`);
        break;
      }
    }
    try {
      const mine = new Set(sp.existing ? bindingsOf(sp.existing.state, sp.existing.record.id).map(bindingId) : []);
      // the sockets of every service in the file are "own": steering one service's port to another is the file's intent
      const own = ownSockets(plan.services.flatMap((x) => x.t.sockets));
      checkHijack(ns, sp.add.filter((b) => !mine.has(bindingId(b)) && !owners.has(bindingId(b))), own, sp.d.force);
    } catch (error) {
      problem(sp.d, `${at}: ${(error as Error).message}`);
    }
  }
  const pinned = plan.all.find((d) => d.kind === 'pinned');
  if (pinned?.damage) problem(undefined, `skl's pinned state in ${store.dir} is damaged: ${pinned.damage}`);
  const newCount = plan.services.filter((s) => !s.existing).length;
  const used = pinned ? pinned.services().length : 0;
  if (used - plan.prune.length + newCount > MAX_SERVICES) problem(undefined, `${where}: ${used - plan.prune.length + newCount} services would exceed the maximum of ${MAX_SERVICES}`);
  return plan;
}

/** Run `step` on each item (false: nothing to do for it), with `point`'s crash after the first that did something. */
function steps<T>(items: readonly T[], point: CrashPoint, step: (x: T) => boolean): void {
  let first = true;
  for (const x of items) {
    if (!step(x) || !first) continue;
    first = false;
    crashPoint(point);
  }
}

/**
 * Make the namespace match (its plan was validated), in an order where every port that stays is
 * served at every moment: sockets replaced in place; bindings added to existing services (one that
 * moves from another service is overwritten in one store); new services written pending with the
 * bindings nobody holds, made ready, then given the bindings they take over (one store each);
 * bindings given up removed; services pruned. A service whose protocols change is removed and
 * attached again (its ports refuse in between: the plan says so). Each step is crash-safe by
 * itself, and the whole is finished by the next skl from apply's record. Crash points (tests)
 * after the first action of each step: a plan interrupted truly half-way.
 */
function execute(p: NsPlan): void {
  if (p.actions.length === 0) return;
  let pinned = p.all.find((d) => d.kind === 'pinned');
  if (!pinned) {
    pinned = p.store.createPinned();
    p.all.push(pinned);
  }
  const d = pinned;
  const existing = p.services.filter((sp) => sp.existing && !sp.recreate);
  const fresh = p.services.filter((sp) => !sp.existing || sp.recreate);
  const idOf = (sp: ServicePlan): number => sp.existing!.record.id;
  // 1. sockets of existing services, in place (each SOCKMAP update is atomic)
  steps(existing, 'apply:sockets-replaced', (sp) => {
    if (!sp.socketsChanged) return false;
    replaceSockets(d, idOf(sp), {...serviceMeta(sp.t, sp.d.name, p.ns.ino, 0, SVC_READY, sp.replies), createdNs: sp.existing!.record.createdNs}, sp.t);
    return true;
  });
  // UDP replies turned on or off (one store the programs check)
  for (const sp of existing) {
    const r = sp.existing!.record;
    if (!sp.socketsChanged && sp.replies && sp.replies !== udpRepliesOf(r)) setUdpReplies(d, r, sp.replies);
  }
  // 2. bindings added to existing services; one held by another service is overwritten: it moves in one store
  steps(existing, 'apply:bindings-added', (sp) => sp.add.length > 0 && (addBindings(d, idOf(sp), sp.add), true));
  // 3. services whose protocols change: removed (then written anew below)
  steps(fresh, 'apply:service-removed', (sp) => sp.existing !== undefined && (removeService(d, idOf(sp)), true));
  // services pruned before new ones only when there is no room for both at once
  const roomy = d.services().length + fresh.length <= MAX_SERVICES;
  const pruneAll = (): void => steps(p.prune, 'apply:service-removed', (ref) => (removeService(d, ref.record.id), true));
  if (!roomy) pruneAll();
  // 4. new services: pending with the bindings nobody holds, ready, then the ones they take over
  steps(fresh, 'apply:service-added', (sp) => {
    const owned = new Set(readBindings(d).map(bindingId));
    const id = d.freeService();
    if (id === undefined) throw new SklError(`this namespace already has the maximum of ${MAX_SERVICES} services`);
    writeNewService(d, id, serviceMeta(sp.t, sp.d.name, p.ns.ino, 0, SVC_READY, sp.d.udpReplies), sp.t, sp.list.filter((b) => !owned.has(bindingId(b))));
    addBindings(d, id, sp.list.filter((b) => owned.has(bindingId(b))));
    return true;
  });
  // 5. bindings given up (those another service took over are no longer this one's: left alone)
  steps(existing, 'apply:bindings-removed', (sp) => sp.remove.length > 0 && (removeBindings(d, idOf(sp), sp.remove), true));
  // 6. services the file does not mention (--prune)
  if (roomy) pruneAll();
  if (d.services().length === 0) {
    d.close();
    p.all.splice(p.all.indexOf(d), 1);
    p.store.destroyPinned();
    return;
  }
  // UDP replies (and UDP following) need the dispatcher's tc programs on every interface
  p.store.notices.push(...coverInterfaces(p.store));
}

// ---- export ----

export type ExportOptions = CommonOptions;

/** The namespace's attached (persistent) services as a desired-state file that `apply` accepts. */
export async function exportState(opts: ExportOptions = {}): Promise<string> {
  const ns = Netns.open(opts.netns ?? DEFAULT_NETNS);
  try {
    const store = new Store(ns, opts);
    const {stringify} = await import('yaml');
    return await store.locked(() => {
      const all = openAll(store);
      try {
        const services: Record<string, unknown>[] = [];
        for (const ref of [...servicesByName(all).values()].filter((r) => r.state.kind === 'pinned').sort((a, b) => compareNames(a.record.name, b.record.name))) {
          services.push(exportService(ref));
        }
        return `# skl desired state, exported from network namespace ${ns.path} (inode ${ns.ino})\n${stringify({...(opts.netns ? {netns: opts.netns} : {}), services})}`;
      } finally {
        closeAll(all);
      }
    });
  } finally {
    ns.close();
  }
}

function exportService(ref: ServiceRef): Record<string, unknown> {
  const r = ref.record;
  const sockets = r.sockets.filter((s) => s !== undefined).map((s) => s!);
  const listeners = [...new Set(sockets.map((s) => socketText({family: s.family, address: addressText(s.listenAddr, s.family), port: s.listenPort})))];
  const protos: Proto[] = (['tcp', 'udp'] as const).filter((p) => sockets.some((s) => s.proto === p));
  const groups = groupBindings(bindingsOf(ref.state, r.id));
  const out: Record<string, unknown> = {name: r.name, target: {pid: r.pid, listener: listeners.length === 1 ? listeners[0] : listeners}, proto: protos.join(',')};
  if (udpRepliesOf(r) === 'off') out.udp_replies = 'off';
  // one cross product (every protocol × every prefix × the same ports): ports/addresses; else bindings
  const portSets = new Set(groups.map((g) => portsText(g.ports)));
  const prefixes = [...new Set(groups.map((g) => prefixText(g.prefix)))];
  const defaultPrefixes = prefixes.every((p) => p === '0.0.0.0/0' || p === '::/0');
  const cross = portSets.size === 1 && groups.length === protos.length * prefixes.length;
  if (groups.length === 0) out.bindings = [];
  else if (cross) {
    out.ports = [...portSets][0];
    if (!defaultPrefixes) out.addresses = prefixes;
  } else {
    out.bindings = groups.map((g) => ({proto: g.proto, ports: portsText(g.ports), addresses: [prefixText(g.prefix)]}));
  }
  return out;
}

function addressText(addr: Uint8Array, family: 4 | 6): string {
  const p = prefixText({family, addr, len: family === 4 ? 32 : 128});
  return p.slice(0, p.lastIndexOf('/'));
}

