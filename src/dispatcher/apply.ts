/**
 * `skl apply`: make namespaces match a desired-state file (./desired.ts), idempotently. Everything
 * is validated first — the file, the targets, conflicts between entries and with what is attached,
 * the hijack guard — and nothing changes if anything is wrong. Then each namespace changes in one
 * locked transaction, only what differs, in an order that never drops a connection to a port that
 * stays: sockets replaced in place, bindings added before bindings removed (a binding that moves
 * to another service moves in one step), services removed last. `skl export` writes the file that
 * describes what is attached.
 */
import {closeSync} from 'node:fs';
import {stringify} from 'yaml';
import {SklError, UsageError} from '../sys/errors.js';
import {lock} from '../sys/lock.js';
import {Netns} from '../sys/netns.js';
import type {Proto} from '../sys/sockets.js';
import {addBindings, bindingId, bindingsOf, bindingText, groupBindings, portsText, readBindings, removeBindings, type Binding, type BindingSpec} from './bindings.js';
import {plannedBindings, type CommonOptions} from './attach.js';
import {readDesired, DesiredStateError, type DesiredService} from './desired.js';
import {MAX_SERVICES, prefixText, SVC_READY} from './layout.js';
import {checkHijack, closeAll, DEFAULT_NETNS, legacyClaims, openAll, ownSockets, servicesByName, type ServiceRef} from './namespace.js';
import {releaseService, removeService, replaceSockets, serviceMeta, socketText, takeService, writeNewService, type TakenService} from './services.js';
import type {DispatcherState} from './state.js';
import {lockPathOf, Store, type StoreOptions} from './store.js';
import {resolveTarget} from './targets.js';

export interface ApplyOptions extends StoreOptions {
  /** the namespace of entries that name none (default: the caller's) */
  netns?: string;
  dryRun?: boolean;
  /** detach services the file does not mention */
  prune?: boolean;
}

export interface ApplyAction {
  op: '+' | '-' | '~';
  netns: string;
  service: string;
  /** service, binding or sockets */
  what: 'service' | 'binding' | 'sockets';
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
}

interface NsPlan {
  ns: Netns;
  store: Store;
  all: DispatcherState[];
  services: ServicePlan[];
  prune: ServiceRef[];
  actions: ApplyAction[];
}

const label = (ns: Netns): string => (ns.path === DEFAULT_NETNS ? 'this namespace' : ns.path);

function summarize(list: readonly BindingSpec[]): string[] {
  return groupBindings(list).map((g) => `${g.proto.toUpperCase()} ${portsText(g.ports)} @${prefixText(g.prefix)}`);
}

/** Apply a desired-state file. */
export async function applyFile(file: string, opts: ApplyOptions = {}): Promise<ApplyReport> {
  return apply(readDesired(file), opts);
}

export async function apply(desired: DesiredService[], opts: ApplyOptions = {}): Promise<ApplyReport> {
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
      plans.push(planNamespace(ns, store, list, opts, problems));
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
    for (const p of plans) execute(p);
    report.changed = report.actions.length > 0;
    return report;
  } finally {
    for (const p of plans) {
      for (const s of p.services) releaseService(s.t);
      closeAll(p.all);
    }
    for (const ns of namespaces) ns.close();
    closeSync(fd);
  }
}

function unmanaged(p: NsPlan): {netns: string; service: string}[] {
  const mentioned = new Set(p.services.map((s) => s.d.name));
  return [...servicesByName(p.all).values()].filter((r) => !mentioned.has(r.record.name)).map((r) => ({netns: p.ns.path, service: r.record.name}));
}

function planNamespace(ns: Netns, store: Store, desired: DesiredService[], opts: ApplyOptions, problems: string[]): NsPlan {
  const plan: NsPlan = {ns, store, all: [], services: [], prune: [], actions: []};
  const where = label(ns);
  try {
    plan.all = openAll(store);
  } catch (error) {
    problems.push((error as Error).message);
    return plan;
  }
  const current = servicesByName(plan.all);
  const wanted = new Set(desired.map((d) => d.name));
  // who claims what in the file: two entries may not claim the same binding
  const claimedBy = new Map<string, DesiredService>();
  for (const d of desired) {
    const at = `line ${d.line}: service ${d.name}`;
    let pid: number;
    try {
      pid = resolveTarget(d.target, d.protos, d.listeners);
    } catch (error) {
      problems.push(`${at}: ${(error as Error).message}`);
      continue;
    }
    let t: TakenService;
    try {
      t = takeService({pid, protos: d.protos, fds: d.fds, listeners: d.listeners});
    } catch (error) {
      problems.push(`${at}: ${(error as Error).message}`);
      continue;
    }
    const sp: ServicePlan = {d, t, list: [], add: [], remove: [], socketsChanged: false, recreate: false};
    plan.services.push(sp);
    if (t.netnsIno !== undefined && t.netnsIno !== ns.ino) {
      problems.push(`${at}: the sockets of process ${pid} belong to another network namespace than ${ns.path === DEFAULT_NETNS ? 'this one' : ns.path}; give netns: /proc/${pid}/ns/net`);
      continue;
    }
    try {
      for (const b of d.bindings) {
        const extra = b.protos.filter((p) => !d.protos.includes(p));
        if (extra.length) throw new UsageError(`a binding's proto ${extra.join(',')} is not one of the service's (${d.protos.join(',')})`);
        for (const x of plannedBindings(b.protos, t.dests, b.addresses, b.ports)) sp.list.push(x);
      }
    } catch (error) {
      problems.push(`${at}: ${(error as Error).message}`);
      continue;
    }
    const dup = new Set<string>();
    sp.list = sp.list.filter((b) => (dup.has(bindingId(b)) ? false : (dup.add(bindingId(b)), true)));
    for (const b of sp.list) {
      const other = claimedBy.get(bindingId(b));
      if (other) problems.push(`${at}: ${bindingText(b)} is also claimed by service ${other.name} (line ${other.line})`);
      else claimedBy.set(bindingId(b), d);
    }
    const existing = current.get(d.name);
    if (existing?.state.kind === 'foreground') {
      problems.push(`${at}: ${d.name} is a foreground service of skl process ${existing.record.ownerPid}; stop it or rename the entry`);
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
    const want = new Set(sp.list.map(bindingId));
    const have = new Set(cur.map(bindingId));
    sp.add = sp.list.filter((b) => !have.has(bindingId(b)));
    sp.remove = cur.filter((b) => !want.has(bindingId(b)));
    for (const g of summarize(sp.add)) plan.actions.push({op: '+', netns: where, service: d.name, what: 'binding', detail: g});
    for (const g of summarize(sp.remove)) plan.actions.push({op: '-', netns: where, service: d.name, what: 'binding', detail: g});
  }
  if (opts.prune) {
    for (const ref of current.values()) {
      if (wanted.has(ref.record.name) || ref.state.kind !== 'pinned') continue;
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
        problems.push(`${at}: ${bindingText(b)} already belongs to ${o.ref.record.name}${o.ref.state.kind === 'foreground' ? ` (foreground, skl process ${o.ref.record.ownerPid})` : ' (not in the file: use --prune, or remove it there)'}`);
        break;
      }
      const l = legacy.find((x) => x.bindings.has(bindingId(b)));
      if (l) {
        problems.push(`${at}: ${bindingText(b)} already belongs to ${l.name}, a foreground attachment of skl 0.1.0 process ${l.ownerPid}`);
        break;
      }
    }
    try {
      const mine = new Set(sp.existing ? bindingsOf(sp.existing.state, sp.existing.record.id).map(bindingId) : []);
      // the sockets of every service in the file are "own": steering one service's port to another is the file's intent
      const own = ownSockets(plan.services.flatMap((x) => x.t.sockets));
      checkHijack(ns, sp.add.filter((b) => !mine.has(bindingId(b)) && !owners.has(bindingId(b))), own, sp.d.force);
    } catch (error) {
      problems.push(`${at}: ${(error as Error).message}`);
    }
  }
  const pinned = plan.all.find((d) => d.kind === 'pinned');
  if (pinned?.damage) problems.push(`skl's pinned state in ${store.dir} is damaged: ${pinned.damage}`);
  const newCount = plan.services.filter((s) => !s.existing).length;
  const used = pinned ? pinned.services().length : 0;
  if (used - plan.prune.length + newCount > MAX_SERVICES) problems.push(`${where}: ${used - plan.prune.length + newCount} services would exceed the maximum of ${MAX_SERVICES}`);
  return plan;
}

/** Make the namespace match (its plan was validated): sockets, then bindings added, removed, services removed. */
function execute(p: NsPlan): void {
  if (p.actions.length === 0) return;
  let pinned = p.all.find((d) => d.kind === 'pinned');
  if (!pinned) {
    pinned = p.store.createPinned();
    p.all.push(pinned);
  }
  const d = pinned;
  // 1. sockets of existing services, in place
  for (const sp of p.services) {
    if (sp.existing && sp.socketsChanged && !sp.recreate) {
      const meta = {...serviceMeta(sp.t, sp.d.name, p.ns.ino, 0, SVC_READY), createdNs: sp.existing.record.createdNs};
      replaceSockets(d, sp.existing.record.id, meta, sp.t);
    }
  }
  // 2. bindings that move from one service to another: removed from the old owner, then added
  const ids = new Map<string, number>();
  for (const sp of p.services) if (sp.existing) ids.set(sp.d.name, sp.existing.record.id);
  const owner = new Map<string, number>();
  for (const b of readBindings(d)) owner.set(bindingId(b), b.service);
  for (const sp of p.services) {
    if (!sp.existing || sp.recreate) continue;
    const id = sp.existing.record.id;
    const moving = sp.add.filter((b) => owner.has(bindingId(b)) && owner.get(bindingId(b)) !== id);
    for (const b of moving) removeBindings(d, owner.get(bindingId(b))!, [b]);
    addBindings(d, id, sp.add);
  }
  // 3. bindings given up
  for (const sp of p.services) if (sp.existing && !sp.recreate) removeBindings(d, sp.existing.record.id, sp.remove);
  // 4. services recreated (protocols changed) and new services (after the bindings they take were freed)
  for (const sp of p.services) {
    if (sp.existing && sp.recreate) removeService(d, sp.existing.record.id);
  }
  for (const ref of p.prune) removeService(d, ref.record.id);
  for (const sp of p.services) {
    if (sp.existing && !sp.recreate) continue;
    const taken = new Map<string, number>();
    for (const b of readBindings(d)) taken.set(bindingId(b), b.service);
    for (const b of sp.list) if (taken.has(bindingId(b))) removeBindings(d, taken.get(bindingId(b))!, [b]);
    const id = d.freeService();
    if (id === undefined) throw new SklError(`this namespace already has the maximum of ${MAX_SERVICES} services`);
    writeNewService(d, id, serviceMeta(sp.t, sp.d.name, p.ns.ino, 0, SVC_READY), sp.t, sp.list);
  }
  if (d.services().length === 0) {
    d.close();
    p.all.splice(p.all.indexOf(d), 1);
    p.store.destroyPinned();
  }
}

// ---- export ----

export type ExportOptions = CommonOptions;

/** The namespace's attached (persistent) services as a desired-state file that `apply` accepts. */
export async function exportState(opts: ExportOptions = {}): Promise<string> {
  const ns = Netns.open(opts.netns ?? DEFAULT_NETNS);
  try {
    const store = new Store(ns, opts);
    return await store.locked(() => {
      const all = openAll(store);
      try {
        const services: Record<string, unknown>[] = [];
        for (const ref of [...servicesByName(all).values()].filter((r) => r.state.kind === 'pinned').sort((a, b) => a.record.name.localeCompare(b.record.name))) {
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

export {DesiredStateError};
