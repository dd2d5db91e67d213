/** Everything skl has attached in a namespace, rebuilt from the kernel's state alone. */
import {SklError} from '../sys/errors.js';
import {processAlive, processInfo} from '../sys/proc.js';
import type {Proto} from '../sys/sockets.js';
import {groupBindings, portsText, readBindings, type Binding, type BindingSpec} from './bindings.js';
import {compareNames, validateName} from './input.js';
import {destKey, DESTS_PER_SERVICE, FOLLOW_D_V4, FOLLOW_D_V6, LAYOUT, listenerText, prefixText, SVC_F_FOLLOW, SVC_READY, type FollowKey, type ServiceMeta} from './layout.js';
import {cgroupByPath, cgroupPathByIno, listeningPidIn, listenerText as followListenerText} from './follow.js';
import type {OlderState} from './legacy.js';
import {closeAll, openAll, where, withNetns} from './namespace.js';
import {LayoutError, Store} from './store.js';
import type {Netns} from '../sys/netns.js';
import type {Counters, DispatcherState, ReplyCounters} from './state.js';
import type {BindingStatus, CommonOptions} from './attach.js';
import {interfaceCoverage, type UncoveredInterface} from './interfaces.js';
import {udpRepliesOf, type UdpRepliesMode} from './replies.js';

export interface SocketStatus {
  protocol: Proto;
  /** the traffic family this socket takes (a dual-stack IPv6 socket may take IPv4) */
  family: 4 | 6;
  listener: string;
  pid: number;
  /** still open (the kernel drops it from the SOCKMAP when it closes) */
  alive: boolean;
}

export interface ServiceStatus {
  name: string;
  pid: number;
  command: string;
  protocols: Proto[];
  /** the service's listeners (distinct socket addresses) */
  listeners: string[];
  sockets: SocketStatus[];
  bindings: BindingStatus[];
  /** explicit ports over all bindings (all-ports bindings show in `bindings` and portsText) */
  ports: number[];
  portsText: string;
  /** every socket of the service is still open */
  alive: boolean;
  processAlive: boolean;
  redirected: number;
  missed: number;
  /** new listening sockets the follow program stored (restarts followed in the kernel) */
  retaken: number;
  /** followed across restarts: the cgroup, and the process listening there now (0: none) */
  follow?: {cgroup: string; currentPid: number; listeners: string[]};
  /** a UDP service: whether its replies to datagrams that came in on an extra port leave from that port ('rewrite') or from its own ('off') */
  udpReplies?: UdpRepliesMode;
  /** a UDP service: datagrams from an extra port that recorded (or refreshed) their flow */
  flows?: number;
  /** a UDP service: replies that left from the extra port */
  rewritten?: number;
  mode: 'persistent' | 'foreground';
  /** skl process holding a foreground service */
  ownerPid?: number;
  createdAt: string;
  netnsIno: number;
  /** layout of the state holding it (0: written by skl 0.1.0, see skl upgrade) */
  layout: number;
}

/** @deprecated the name of ServiceStatus before services replaced single-socket attachments */
export type AttachmentStatus = ServiceStatus;

export interface StatusReport {
  netns: string;
  netnsIno: number;
  /** the namespace has a pinned dispatcher */
  dispatcher: boolean;
  /** what is wrong with the pinned state (a pin removed behind skl's back, a newer layout, ...), when something is */
  damaged?: string;
  /** the pinned state was written by an older skl: read fine, but changes need `skl upgrade` first (this says how) */
  upgrade?: string;
  attachments: ServiceStatus[];
  /** interfaces where a tc program some service needs (UDP replies, UDP following) is not running: L3 devices, interfaces newer than the last skl change (absent when there are none) */
  uncovered?: UncoveredInterface[];
  notices: string[];
}

export function status(opts: CommonOptions & {name?: string} = {}): Promise<StatusReport> {
  if (opts.name !== undefined) validateName(opts.name);
  return withNetns(opts.netns, async (ns) => {
    const store = new Store(ns, opts);
    // under the lock: a consistent snapshot (never a dispatcher half created or removed), repaired first
    return store.locked(() => statusLocked(ns, store, opts.name));
  });
}

function statusLocked(ns: Netns, store: Store, name: string | undefined): StatusReport {
  let damaged: string | undefined;
  let upgrade: string | undefined;
  let all: DispatcherState[];
  let legacy: OlderState[] = [];
  let pinnedElsewhere = false;
  try {
    all = openAll(store);
    damaged = all.find((d) => d.kind === 'pinned')?.damage;
  } catch (error) {
    if (!(error instanceof SklError)) throw error;
    // a newer skl's state is never read (it would be misread)
    if (error instanceof LayoutError && error.layout > LAYOUT) throw error;
    damaged = error.message;
    pinnedElsewhere = error instanceof LayoutError;
    all = store.foreground();
    // skl 0.1.0's pinned state: read it (read-only commands read every layout skl shipped)
    if (error instanceof LayoutError && error.layout < LAYOUT) {
      const old = store.openLegacyPinned();
      if (old) legacy.push(old);
      upgrade = damaged;
      damaged = undefined;
    }
  }
  try {
    legacy = [...legacy, ...store.legacyForeground()];
    const attachments: ServiceStatus[] = [];
    for (const d of all) for (const x of servicesOf(d, ns, name)) attachments.push(x);
    for (const l of legacy) for (const x of legacyServicesOf(l, ns, name)) attachments.push(x);
    if (name !== undefined && attachments.length === 0) throw new SklError(`no service named ${name} in ${where(ns)}`);
    attachments.sort((a, b) => compareNames(a.name, b.name));
    let uncovered: UncoveredInterface[] = [];
    try {
      uncovered = interfaceCoverage(ns, all);
    } catch (error) {
      store.notices.push(`could not check skl's tc programs on the interfaces: ${(error as Error).message}`);
    }
    return {
      netns: ns.path,
      netnsIno: ns.ino,
      dispatcher: pinnedElsewhere || all.some((d) => d.kind === 'pinned'),
      ...(damaged ? {damaged} : {}),
      ...(upgrade ? {upgrade} : {}),
      attachments,
      ...(uncovered.length ? {uncovered} : {}),
      notices: [...store.notices],
    };
  } finally {
    closeAll(all);
    for (const l of legacy) l.close();
  }
}

interface ServiceView {
  meta: ServiceMeta;
  follow?: ServiceStatus['follow'];
  /** a followed service's listeners */
  followed?: {key: FollowKey; dests: number}[];
  bindings: readonly BindingSpec[];
  counters: Counters;
  replies?: ReplyCounters;
  /** whether the SOCKMAP still holds the socket of destination i */
  alive: (dest: number) => boolean;
  kind: 'pinned' | 'foreground';
  layout: number;
}

function serviceStatus(v: ServiceView, ns: Netns): ServiceStatus {
  const s = v.meta;
  const sockets: SocketStatus[] = [];
  if (v.followed) {
    // a followed service's sockets are the ones the kernel stored last: its followed listeners
    // (TCP: the follow map's; a record of layout 3 before UDP following has none for a service
    // attached before it started)
    for (const f of v.followed) {
      for (const family of [4, 6] as const) {
        const i = family === 4 ? 0 : 1;
        if (!(f.dests & (family === 4 ? FOLLOW_D_V4 : FOLLOW_D_V6)) || s.sockets[i]) continue;
        sockets.push({protocol: 'tcp', family, listener: followListenerText(f.key), pid: v.follow?.currentPid ?? 0, alive: v.alive(i)});
      }
    }
  }
  s.sockets.forEach((m, i) => {
    if (m) sockets.push({protocol: destKey(i).proto, family: destKey(i).family, listener: listenerText(m), pid: v.follow ? v.follow.currentPid : m.pid, alive: v.alive(i)});
  });
  sockets.sort((a, b) => compareNames(a.protocol, b.protocol) * 2 + (a.family - b.family) / 2);
  const ports = [...new Set(v.bindings.map((b) => b.port))].sort((a, b) => a - b);
  const pid = v.follow?.currentPid || s.pid;
  return {
    name: s.name,
    pid,
    command: v.follow?.currentPid ? (processInfo(v.follow.currentPid)?.comm ?? s.comm) : s.comm,
    protocols: (['tcp', 'udp'] as const).filter((p) => sockets.some((x) => x.protocol === p)),
    listeners: [...new Set(sockets.map((x) => x.listener))],
    sockets,
    bindings: groupBindings(v.bindings).map((g) => ({protocol: g.proto, prefix: prefixText(g.prefix), ports: portsText(g.ports)})),
    ports: ports.filter((p) => p !== 0),
    portsText: portsText(ports),
    alive: sockets.length > 0 && sockets.every((x) => x.alive),
    processAlive: pid !== 0 && processAlive(pid),
    redirected: v.counters.redirected,
    missed: v.counters.missed,
    retaken: v.counters.retaken,
    ...(v.follow ? {follow: v.follow} : {}),
    ...udpView(s, v.replies),
    mode: v.kind === 'pinned' ? 'persistent' : 'foreground',
    ...(v.kind === 'foreground' ? {ownerPid: s.ownerPid} : {}),
    createdAt: new Date(Number(s.createdNs / 1_000_000n)).toISOString(),
    netnsIno: ns.ino,
    layout: v.layout,
  };
}

function servicesOf(d: DispatcherState, ns: Netns, name: string | undefined): ServiceStatus[] {
  const records = d.services().filter((s) => s.state === SVC_READY && (name === undefined || s.name === name));
  if (records.length === 0) return [];
  const bindings = new Map<number, Binding[]>();
  for (const b of readBindings(d)) {
    const l = bindings.get(b.service);
    if (l) l.push(b);
    else bindings.set(b.service, [b]);
  }
  const layout = d.info().layout;
  const followed = records.some((s) => s.flags & SVC_F_FOLLOW) ? d.followEntries() : [];
  return records.map((s) =>
    serviceStatus(
      {
        meta: s,
        bindings: bindings.get(s.id) ?? [],
        counters: d.counters(s.id),
        replies: d.replyCounters(s.id),
        // its socket, or a spare one (another member of its reuseport group) the program falls back to
        alive: (i) => d.destAlive(s.id * DESTS_PER_SERVICE + i),
        kind: d.kind,
        layout,
        follow: s.flags & SVC_F_FOLLOW ? followView(s, followed.filter((f) => f.service === s.id).map((f) => f.key), ns) : undefined,
        followed: s.flags & SVC_F_FOLLOW ? followed.filter((f) => f.service === s.id) : undefined,
      },
      ns,
    ),
  );
}

/** A UDP service's replies: mode and counts (none for a TCP-only service, nor in older layouts' state, which had neither). */
function udpView(meta: ServiceMeta, counts: ReplyCounters | undefined): Pick<ServiceStatus, 'udpReplies' | 'flows' | 'rewritten'> {
  const mode = udpRepliesOf(meta);
  if (mode === undefined || counts === undefined) return {};
  return {udpReplies: mode, flows: counts.flows, rewritten: counts.rewritten};
}

function followView(s: ServiceMeta, keys: FollowKey[], ns: Netns): NonNullable<ServiceStatus['follow']> {
  const path = cgroupPathByIno(s.cgroupIno);
  const metas = s.sockets.filter((m): m is NonNullable<typeof m> => m !== undefined);
  const listeners = [...new Set([...keys.map(followListenerText), ...metas.map(listenerText)])];
  const protos = [...new Set<Proto>([...(keys.length ? ['tcp' as const] : []), ...metas.map((m) => m.proto)])];
  let currentPid = 0;
  if (path !== undefined) {
    try {
      const ports = [...new Set([...keys.map((k) => k.port), ...metas.map((m) => m.listenPort)])].map((port) => ({port}));
      currentPid = listeningPidIn(cgroupByPath(path), ports, protos, ns.ino);
    } catch {
      // the cgroup went away meanwhile
    }
  }
  return {cgroup: path ?? `(gone: inode ${s.cgroupIno})`, currentPid, listeners};
}

function legacyServicesOf(l: OlderState, ns: Netns, name: string | undefined): ServiceStatus[] {
  return l
    .services()
    .filter((s) => name === undefined || s.meta.name === name)
    .map((s) =>
      serviceStatus(
        {
          meta: s.meta,
          bindings: s.bindings,
          counters: {redirected: s.redirected, missed: s.missed, retaken: s.retaken ?? 0},
          alive: (i) => s.destAlive?.[i] ?? s.alive,
          kind: l.kind,
          layout: l.layout,
          // layout 2 followed services as today's
          follow: s.followed ? followView(s.meta, s.followed.map((f) => f.key), ns) : undefined,
          followed: s.followed,
        },
        ns,
      ),
    );
}
