/** Attaching a service: persistent (the namespace's pinned dispatcher) or foreground (objects of this process only). */
import {requireFeature, probeProgType} from '../bpf/features.js';
import type {Link} from '../bpf/link.js';
import {SklError, UsageError} from '../sys/errors.js';
import type {Netns} from '../sys/netns.js';
import type {Proto} from '../sys/sockets.js';
import {bindingSpecs, bindingsOf, groupBindings, portsText, bindingId, type BindingSpec} from './bindings.js';
import {defaultName, validateName, type AddressPrefix, type PortSpec} from './input.js';
import {anyPrefix, DESTS_PER_SERVICE, LAYOUT, MAX_SERVICES, prefixText, SVC_F_FOLLOW, SVC_READY, type Prefix} from './layout.js';
import {cgroupByPath, cgroupOfPid, checkFollowClaims, ensureCgroupLinks, followedSocketMetas, followEntries, listenerText as followListenerText, listeningPidIn, pruneFollow, seedFromCgroup, setFollow, unitCgroup, type Cgroup, type FollowEntry} from './follow.js';
import {checkClaims, checkHijack, closeAll, DEFAULT_NETNS, legacyClaims, openAll, ownSockets, servicesByName, socketId, withNetns, type LegacyClaim, type ServiceRef} from './namespace.js';
import {familiesOf, releaseService, removeService, replaceService, serviceMeta, socketText, takeService, writeNewService, type ListenerChoice, type TakenService} from './services.js';
import {DispatcherState, loadDispatcher} from './state.js';
import {attachForegroundInterfaces, coverInterfaces, tcNeeds} from './interfaces.js';
import {DEFAULT_UDP_REPLIES, udpRepliesOf, type UdpRepliesMode} from './replies.js';
import {mapsOf, PROGRAM_NAME, Store, type StoreOptions} from './store.js';
import {SKL_VERSION} from '../version.js';
import {crashPoint} from './faults.js';

export interface CommonOptions extends StoreOptions {
  /** network namespace file (default: the caller's, /proc/self/ns/net) */
  netns?: string;
}

export interface AttachOptions extends CommonOptions {
  /** target process (default: this process, with `fd`) */
  pid?: number;
  /** fd(s) of the socket(s) in the target process (with no pid: fds of this process) */
  fd?: number | number[];
  /** the listener: address (undefined = every address, both families) and port; several allowed */
  listener?: ListenerChoice | ListenerChoice[];
  /** extra ports (or every port of the prefixes); required for a new service, optional when replacing an existing name's sockets */
  ports?: number[] | 'all';
  /** protocol(s) of the service (default TCP) */
  proto?: Proto | Proto[];
  name?: string;
  /** local prefixes the bindings route (default: every address of each family the service's sockets serve) */
  addresses?: AddressPrefix[];
  /** claim bindings even when another socket already serves them; follow a shared cgroup */
  force?: boolean;
  /** follow the service's listener in this cgroup v2 directory (absolute, or below the cgroup2 mount) */
  cgroup?: string;
  /** follow a systemd unit (its cgroup; its main process's sockets now) */
  unit?: string;
  /** follow `pid`'s cgroup */
  follow?: boolean;
  /**
   * A UDP service's replies to datagrams that came in on an extra port: 'rewrite' (default for a
   * new service) leaves them from that port, 'off' from the service's own port. Replacing an
   * existing name keeps its mode unless given.
   */
  udpReplies?: UdpRepliesMode;
}

export interface BindingStatus {
  protocol: Proto;
  /** "0.0.0.0/0", "127.0.0.0/8", "::/0" */
  prefix: string;
  /** "8001-8003,9000" or "all" */
  ports: string;
}

export interface AttachResult {
  name: string;
  pid: number;
  comm: string;
  protocols: Proto[];
  /** explicit ports of the bindings (all-ports bindings show in `bindings`) */
  ports: number[];
  portsText: string;
  /** the sockets the service's traffic goes to */
  listeners: string[];
  bindings: BindingStatus[];
  /** the name existed: its sockets (and bindings, if given) were replaced in place */
  replaced: boolean;
  /** followed across restarts: the cgroup and the listeners followed there */
  follow?: {cgroup: string; listeners: string[]};
  netnsIno: number;
  notices: string[];
}

const asList = <T>(x: T | T[] | undefined): T[] => (x === undefined ? [] : Array.isArray(x) ? x : [x]);

export function bindingStatus(list: readonly BindingSpec[]): BindingStatus[] {
  return groupBindings(list).map((g) => ({protocol: g.proto, prefix: prefixText(g.prefix), ports: portsText(g.ports)}));
}

/** What a new or changed service binds: protocols × prefixes × ports, each prefix of a family the service serves. */
export function plannedBindings(protos: readonly Proto[], sockets: readonly unknown[], addresses: readonly Prefix[] | undefined, ports: PortSpec): BindingSpec[] {
  const list = ports === 'all' ? [0] : ports;
  const out: BindingSpec[] = [];
  for (const proto of protos) {
    const families = familiesOf(sockets, proto);
    const prefixes = addresses?.length ? addresses : families.map(anyPrefix);
    for (const p of prefixes) {
      if (!families.includes(p.family)) {
        throw new SklError(`--address ${prefixText(p)}: the service has no socket that takes ${proto.toUpperCase()} over IPv${p.family} (it serves ${families.map((f) => `IPv${f}`).join(' and ') || 'neither family'})`);
      }
    }
    for (const b of bindingSpecs([proto], prefixes, list)) out.push(b);
  }
  return out;
}

function protosOf(opts: AttachOptions): Proto[] {
  const list = asList(opts.proto);
  return list.length ? (['tcp', 'udp'] as const).filter((p) => list.includes(p)) : ['tcp'];
}

function resultOf(t: TakenService, name: string, protos: Proto[], list: readonly BindingSpec[], replaced: boolean, ns: Netns, notices: string[]): AttachResult {
  const explicit = [...new Set(list.map((b) => b.port).filter((p) => p !== 0))].sort((a, b) => a - b);
  return {
    name,
    pid: t.pid,
    comm: t.comm,
    protocols: protos,
    ports: explicit,
    portsText: portsText([...new Set(list.map((b) => b.port))]),
    listeners: [...new Set(t.sockets.map(socketText))],
    bindings: bindingStatus(list),
    replaced,
    netnsIno: ns.ino,
    notices,
  };
}

interface AttachContext {
  ns: Netns;
  store: Store;
  t: TakenService;
  name: string;
  protos: Proto[];
  /** every dispatcher of the namespace, open; closed afterwards (push what you open into it) */
  all: DispatcherState[];
  existing: ServiceRef | undefined;
  /** foreground skl 0.1.0 processes' bindings */
  legacy: LegacyClaim[];
  /** following: the cgroup and the listeners to follow */
  follow?: {cgroup: Cgroup; entries: FollowEntry[]};
}

/**
 * What both attach modes do first: validate, take the service's sockets (closed again afterwards:
 * the SOCKMAP holds its own references), then run `fn` under the lock with the namespace's state open.
 */
function withService<T>(opts: AttachOptions, fn: (x: AttachContext) => T): Promise<T> {
  const following = opts.cgroup !== undefined || opts.unit !== undefined || opts.follow === true;
  if (opts.pid === undefined && asList(opts.fd).length === 0 && !following) return Promise.reject(new UsageError('give the target: --pid PID, --cgroup PATH or --unit NAME (or, in-process, an fd of this process)'));
  if ([opts.cgroup, opts.unit].filter((x) => x !== undefined).length > 1) return Promise.reject(new UsageError('give --cgroup or --unit, not both'));
  if (opts.follow && opts.pid === undefined && opts.cgroup === undefined && opts.unit === undefined) return Promise.reject(new UsageError('--follow needs --pid PID (or use --cgroup/--unit)'));
  if (opts.name !== undefined) validateName(opts.name);
  const protos = protosOf(opts);
  requireFeature('sk_lookup', () => probeProgType('sk_lookup'));
  return withNetns(opts.netns, async (ns) => {
    const store = new Store(ns, opts);
    const listeners = asList(opts.listener);
    // the cgroup followed, and the process (if one runs now) whose sockets are taken now
    let cgroup: Cgroup | undefined;
    let pid = opts.pid;
    if (opts.unit !== undefined) {
      const u = unitCgroup(opts.unit);
      cgroup = u.cgroup;
      pid ??= u.pid || undefined;
    } else if (opts.cgroup !== undefined) {
      cgroup = cgroupByPath(opts.cgroup);
      // with --listener, no single process need serve every protocol: each socket is then found in the cgroup
      pid ??= listeningPidIn(cgroup, listeners, protos, ns.ino, listeners.length > 0) || undefined;
    } else if (opts.follow) {
      cgroup = cgroupOfPid(pid!, opts.force ?? false);
    }
    if (cgroup && pid === undefined && listeners.length === 0) {
      throw new UsageError(`nothing in cgroup ${cgroup.path} listens yet: say which listener to follow with --listener ADDR:PORT (or :PORT)`);
    }
    const retry = (listener: string): string =>
      ['skl attach --pid', pid ?? process.pid, '--listener', listener, ...(protos.length > 1 || protos[0] !== 'tcp' ? ['--proto', protos.join(',')] : []), ...(opts.ports ? ['--ports', opts.ports === 'all' ? 'all' : portsText(opts.ports)] : []), ...(opts.name ? ['--name', opts.name] : []), ...(opts.netns ? ['--netns', opts.netns] : [])].join(' ');
    const t = pid !== undefined || !cgroup ? takeService({pid: pid ?? process.pid, protos, fds: asList(opts.fd), listeners, retry}) : emptyService();
    try {
      if (t.netnsIno !== undefined && t.netnsIno !== ns.ino) {
        const here = ns.path === DEFAULT_NETNS ? 'this one' : ns.path;
        throw new SklError(`the sockets of process ${t.pid} belong to another network namespace than ${here}; attach there with --netns /proc/${t.pid}/ns/net`);
      }
      const follow = cgroup ? {cgroup, entries: followEntries(t.sockets.length ? t : undefined, listeners, protos)} : undefined;
      const name = opts.name ?? (t.pid ? defaultName(t.comm, t.pid) : cgroup!.path.split('/').filter(Boolean).at(-1)?.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 64) || 'followed');
      return await store.locked(() => {
        const all = openAll(store);
        try {
          return fn({ns, store, t, name, protos, all, existing: servicesByName(all).get(name), legacy: legacyClaims(store), follow});
        } finally {
          closeAll(all);
        }
      });
    } finally {
      releaseService(t);
    }
  });
}

/** A service followed before its process runs: no sockets yet. */
function emptyService(): TakenService {
  return {pid: 0, comm: '', netnsIno: undefined, sockets: [], dests: new Array(DESTS_PER_SERVICE).fill(undefined)};
}

/** Give a process extra ports through the namespace's shared, pinned dispatcher. */
export function attach(opts: AttachOptions): Promise<AttachResult> {
  return withService(opts, ({ns, store, t, name, protos, all, existing, legacy, follow}) => {
    if (existing && existing.state.kind === 'foreground') {
      throw new SklError(`${name} is a foreground service of skl process ${existing.record.ownerPid}; stop that process first or pick another --name`);
    }
    const old = existing ? bindingsOf(existing.state, existing.record.id) : [];
    if (existing) {
      const had = [...new Set(existing.record.sockets.filter((s) => s).map((s) => s!.proto))].sort();
      if (had.join(',') !== protos.join(',')) {
        throw new SklError(`${name} serves ${had.map((p) => p.toUpperCase()).join('+')}; detach it first to attach ${protos.map((p) => p.toUpperCase()).join('+')} under that name`);
      }
    }
    let list: BindingSpec[];
    if (opts.ports === undefined && opts.addresses === undefined) {
      if (!existing) throw new UsageError('--ports is required for a new service');
      list = old;
    } else {
      const ports = opts.ports ?? [...new Set(old.map((b) => b.port))];
      if (ports !== 'all' && ports.length === 0) throw new UsageError('--ports is empty');
      // a followed service not running yet serves the families of the listeners it follows
      const slots = t.sockets.length || !follow ? t.dests : followedSocketMetas(follow.entries);
      list = plannedBindings(protos, slots, opts.addresses, ports !== 'all' && ports.includes(0) ? 'all' : ports);
    }
    checkClaims(all, existing, list, legacy);
    const held = new Set(old.map(bindingId));
    checkHijack(ns, list.filter((b) => !held.has(bindingId(b))), ownSockets(t.sockets), opts.force ?? false);

    let pinned = all.find((d) => d.kind === 'pinned');
    // a dispatcher whose link is gone steers nothing: writing to it would be a silent no-op
    if (pinned?.damage) throw new SklError(`cannot attach: skl's pinned state in ${store.dir} is damaged: ${pinned.damage}`);
    const created = !pinned;
    pinned ??= store.createPinned();
    if (created) all.push(pinned);
    const notices = [...store.notices];
    const meta = serviceMeta(t, name, ns.ino, 0, SVC_READY, opts.udpReplies ?? (existing ? udpRepliesOf(existing.record) : undefined) ?? DEFAULT_UDP_REPLIES);
    if (follow) {
      const names = new Map(pinned.services().map((x) => [x.id, x.name]));
      checkFollowClaims(pinned, existing?.record.id, follow.entries, (id) => names.get(id) ?? `service ${id}`);
      meta.flags |= SVC_F_FOLLOW;
      meta.cgroupIno = follow.cgroup.ino;
      if (!t.sockets.length) {
        // its listeners, for the follow programs (the UDP one finds the new socket by them)
        meta.pid = 0;
        meta.sockets = followedSocketMetas(follow.entries);
      }
    }
    if (existing) {
      const id = existing.record.id;
      meta.createdNs = existing.record.createdNs;
      if (follow) {
        setFollow(pinned, id, follow.entries, ns);
        ensureCgroupLinks(store.dir, pinned, follow.cgroup, protos);
      }
      const keep = new Set(list.map(bindingId));
      replaceService(store, pinned, id, meta, t, list.filter((b) => !held.has(bindingId(b))), old.filter((b) => !keep.has(bindingId(b))));
      if (follow) seedFromCgroup(store.dir, pinned, id, meta, t, follow.cgroup, ns);
      // what it no longer follows (re-attached without following, or in another cgroup)
      pruneFollow(store.dir, pinned);
      const lost = existing.record.sockets.map((s, i) => (s && !t.dests[i] ? i : -1)).filter((i) => i >= 0);
      if (lost.length) notices.push(`the new process has no socket for ${lost.map((i) => `${i >> 1 ? 'UDP' : 'TCP'} over IPv${i & 1 ? 6 : 4}`).join(', ')}: those bindings now refuse connections`);
    } else {
      const id = pinned.freeService();
      if (id === undefined) throw new SklError(`this namespace already has the maximum of ${MAX_SERVICES} services; detach one first`);
      try {
        const target = pinned;
        writeNewService(pinned, id, meta, t, list, () => {
          if (!follow) return;
          // while the service is pending: a socket stored meanwhile waits, steering nothing
          setFollow(target, id, follow.entries, ns);
          crashPoint('follow:entries');
          ensureCgroupLinks(store.dir, target, follow.cgroup, protos);
          // with the programs attached: what the cgroup serves the listeners with now
          seedFromCgroup(store.dir, target, id, meta, t, follow.cgroup, ns);
        });
      } catch (error) {
        removeServiceQuietly(pinned, id);
        if (created) {
          pinned.close();
          all.splice(all.indexOf(pinned), 1);
          store.destroyPinned();
        }
        throw error;
      }
    }
    // UDP replies (and UDP following) need the dispatcher's tc programs on every interface
    notices.push(...coverInterfaces(store));
    const r = resultOf(t, name, protos, list, !!existing, ns, notices);
    return follow ? {...r, follow: {cgroup: follow.cgroup.path, listeners: follow.entries.map((e) => followListenerText(e.key))}} : r;
  });
}

function removeServiceQuietly(d: DispatcherState, id: number): void {
  try {
    removeService(d, id);
  } catch {
    // the next skl rolls back what is left (the service is still pending)
  }
}

export interface ForegroundAttachment extends AttachResult {
  /** Remove the service (detach its link, free its maps). Idempotent. */
  close(): void;
}

/**
 * Attach with kernel objects of this process only (no pins): everything goes away when `close()`
 * is called or the process dies, even by SIGKILL. Still conflict-checked against the namespace.
 */
export function attachForeground(opts: AttachOptions): Promise<ForegroundAttachment> {
  if (opts.ports === undefined || (opts.ports !== 'all' && opts.ports.length === 0)) return Promise.reject(new UsageError('--ports is required'));
  const ports = opts.ports;
  if (opts.cgroup !== undefined || opts.unit !== undefined || opts.follow) {
    return Promise.reject(new UsageError('--foreground does not follow restarts (the follow program is pinned with the namespace\'s dispatcher); drop --foreground'));
  }
  return withService(opts, ({ns, store, t, name, protos, all, existing, legacy}) => {
    if (existing) throw new SklError(`a service named ${name} already exists; pick another --name`);
    const list = plannedBindings(protos, t.dests, opts.addresses, ports);
    checkClaims(all, undefined, list, legacy);
    checkHijack(ns, list, ownSockets(t.sockets), opts.force ?? false);
    const {obj, loaded} = loadDispatcher();
    let link: Link | undefined;
    let tc: ReturnType<typeof attachForegroundInterfaces> | undefined;
    const notices = [...store.notices];
    try {
      const d = new DispatcherState('foreground', mapsOf(obj), 0);
      d.writeInfo(LAYOUT, SKL_VERSION);
      const meta = serviceMeta(t, name, ns.ino, process.pid, SVC_READY, opts.udpReplies);
      writeNewService(d, 0, meta, t, list);
      link = obj.program(PROGRAM_NAME).attachNetns(ns.fd, `netns ${ns.path}`);
      crashPoint('foreground:attached');
      // its own tc programs, on every interface there is now (unpinned: they go with this process)
      tc = attachForegroundInterfaces(ns, obj, loaded, tcNeeds([meta]));
      notices.push(...tc.notices, ...coverInterfaces(store));
    } catch (error) {
      tc?.close();
      link?.close();
      obj.close();
      throw error;
    }
    const held = link;
    const programs = tc;
    let closed = false;
    return {
      ...resultOf(t, name, protos, list, false, ns, notices),
      close: () => {
        if (closed) return;
        closed = true;
        programs.close();
        held.close(); // links before objects
        obj.close();
      },
    };
  });
}

export {socketId};
