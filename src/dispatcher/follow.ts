/**
 * Following a service across restarts, in the kernel, with no daemon (bpf/sk_dispatch.c):
 *
 * - TCP: a sock_ops program on the service's cgroup v2 directory (pinned link `follow-<cgroup
 *   inode>` in the dispatcher's directory) stores each new listening socket that matches a followed
 *   listener — its address, port and family, in the dispatcher's network namespace only — into the
 *   service's SOCKMAP slots (sk_follow). A process outside the cgroup never triggers it.
 * - UDP: no cgroup hook can store a UDP socket. A cgroup/sock_create program on the cgroup (pinned
 *   link `follow-sock-<cgroup inode>`) tags each UDP socket created there with the cgroup
 *   (sk_follow_sock, socket storage `sock_cgroup`, for the cgroups listed in `follow_cgroups`); a tc
 *   ingress program (sk_follow_udp, on the namespace's interfaces) looks the service's socket up by
 *   its listener on the first datagram for a service whose socket is gone, and stores it if it
 *   carries the service's tag. A socket created before the attach is tagged by skl at attach.
 * - Reuseport groups: the other members of the listener's group in the cgroup are kept in the
 *   destination's spare slots (spare_socket), which the dispatcher tries when the stored member is
 *   gone; the follow programs add each new listener to the spares too.
 */
import {closeSync, constants, existsSync, fstatSync, openSync, readdirSync, readFileSync, statSync, unlinkSync} from 'node:fs';
import {execFileSync} from 'node:child_process';
import {Link} from '../bpf/link.js';
import {BpfMap, BPF_ANY, u32Key} from '../bpf/map.js';
import {SklError} from '../sys/errors.js';
import {cgroup2Mount} from '../sys/mounts.js';
import {netnsCookieHere, socketNetnsIno, type Netns} from '../sys/netns.js';
import {duplicateFd} from '../sys/pidfd.js';
import {processInfo} from '../sys/proc.js';
import {serverSocketsOf, socketFdInfo, type Family, type Proto} from '../sys/sockets.js';
import {addrBytes, DESTS_PER_SERVICE, FOLLOW_D_V4, FOLLOW_D_V6, listenerText as socketListenerText, protoIndex, SPARES, SVC_F_FOLLOW, SVC_READY, type FollowKey, type ServiceMeta, type SocketMeta} from './layout.js';
import {parseAddress} from './input.js';
import {crashPoint} from './faults.js';
import type {ListenerChoice, TakenService} from './services.js';
import type {DispatcherState} from './state.js';
import {ensureProgram, PROGRAM_PINS} from './store.js';

/** enum bpf_attach_type (include/uapi/linux/bpf.h): BPF_CGROUP_INET_SOCK_CREATE, BPF_CGROUP_SOCK_OPS */
const BPF_CGROUP_INET_SOCK_CREATE = 2;
const BPF_CGROUP_SOCK_OPS = 3;
/** Socket storage the sock_create program tags UDP sockets with (pinned with the maps). */
const SOCK_CGROUP_PIN = 'sock_cgroup';

export interface Cgroup {
  /** the directory in the cgroup2 mount */
  dir: string;
  /** its path below the mount, as /proc/PID/cgroup and systemd show it */
  path: string;
  ino: number;
}

function cgroupOf(dir: string, mount: string): Cgroup {
  return {dir, path: dir.slice(mount.length) || '/', ino: statSync(dir).ino};
}

function mountOrFail(): string {
  const mount = cgroup2Mount();
  if (!mount) throw new SklError('following needs cgroup v2, which is not mounted on this host (see skl doctor)');
  return mount;
}

/** A cgroup v2 directory given as a path (absolute, or below the cgroup2 mount). */
export function cgroupByPath(path: string): Cgroup {
  const mount = mountOrFail();
  const dir = path === mount || path.startsWith(`${mount}/`) ? path : `${mount}/${path.replace(/^\/+/, '')}`;
  if (!existsSync(`${dir}/cgroup.procs`)) throw new SklError(`--cgroup ${path}: ${dir} is not a cgroup v2 directory`);
  return cgroupOf(dir.replace(/\/+$/, ''), mount);
}

/** A systemd unit's cgroup and main process (0 when it is not running). */
export function unitCgroup(unit: string): {cgroup: Cgroup; pid: number} {
  if (!existsSync('/run/systemd/system')) throw new SklError(`--unit ${unit}: systemd is not running on this host; give --cgroup PATH or --pid P --follow`);
  let out: string;
  try {
    out = execFileSync('systemctl', ['show', '--property=ControlGroup,MainPID', unit], {encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000});
  } catch (error) {
    throw new SklError(`--unit ${unit}: systemctl failed (${(error as Error).message.split('\n')[0]})`);
  }
  const prop = (k: string): string => (out.split('\n').find((l) => l.startsWith(`${k}=`)) ?? '').slice(k.length + 1).trim();
  const path = prop('ControlGroup');
  if (!path) throw new SklError(`--unit ${unit}: systemd knows no cgroup for it (is the unit loaded? systemctl status ${unit})`);
  return {cgroup: cgroupByPath(path), pid: Number(prop('MainPID')) || 0};
}

/**
 * The cgroup of process `pid`, for `--pid P --follow`. Refused (unless forced) when it is the
 * root cgroup, or shared with processes that are not P's (a login session, say): their listeners
 * would be followed too.
 */
export function cgroupOfPid(pid: number, force: boolean): Cgroup {
  const mount = mountOrFail();
  let line: string | undefined;
  try {
    line = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').find((l) => l.startsWith('0::'));
  } catch {
    throw new SklError(`process ${pid} does not exist`);
  }
  if (!line) throw new SklError(`process ${pid} is in no cgroup v2 directory; give --cgroup PATH`);
  const path = line.slice(3);
  if (path === '/' && !force) throw new SklError(`process ${pid} is in the root cgroup: following it would follow every process of the host; move it to a cgroup of its own (a systemd unit, a container) or use --force`);
  const cg = cgroupOf(`${mount}${path === '/' ? '' : path}`, mount);
  if (force) return cg;
  const mine = new Set<number>([pid]);
  const procs = readFileSync(`${cg.dir}/cgroup.procs`, 'utf8').split('\n').filter(Boolean).map(Number);
  const strangers = procs.filter((p) => !isDescendant(p, pid, mine));
  if (strangers.length) {
    const names = strangers.slice(0, 3).map((p) => `${processInfo(p)?.comm ?? '?'}[${p}]`).join(', ');
    throw new SklError(`the cgroup of process ${pid} (${cg.path}) is shared with ${strangers.length} unrelated process${strangers.length > 1 ? 'es' : ''} (${names}): their listeners would be followed too; give the service a cgroup of its own, or use --force`);
  }
  return cg;
}

/** Whether `p` is `root` or one of its descendants (by parent chain). */
function isDescendant(p: number, root: number, known: Set<number>): boolean {
  const chain: number[] = [];
  for (let cur = p, n = 0; cur > 1 && n < 64; n++) {
    if (known.has(cur)) {
      for (const c of chain) known.add(c);
      return true;
    }
    chain.push(cur);
    let stat: string;
    try {
      stat = readFileSync(`/proc/${cur}/stat`, 'utf8');
    } catch {
      return false;
    }
    cur = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  }
  return false;
}

/** The processes of a cgroup and of the cgroups below it (what its programs apply to), lowest pid first. */
export function cgroupPids(cg: Pick<Cgroup, 'dir'>): number[] {
  const out: number[] = [];
  const walk = (dir: string, depth: number): void => {
    try {
      for (const l of readFileSync(`${dir}/cgroup.procs`, 'utf8').split('\n')) if (l) out.push(Number(l));
    } catch {
      return; // removed meanwhile
    }
    if (depth >= 16) return;
    let subs: string[] = [];
    try {
      subs = readdirSync(dir, {withFileTypes: true}).filter((e) => e.isDirectory()).map((e) => e.name);
    } catch {
      // removed meanwhile
    }
    for (const sub of subs) walk(`${dir}/${sub}`, depth + 1);
  };
  walk(cg.dir, 0);
  return [...new Set(out)].sort((a, b) => a - b);
}

/** The network namespace inode of a process, or undefined when it is gone. */
function netnsOfPid(pid: number): number | undefined {
  try {
    return statSync(`/proc/${pid}/ns/net`).ino;
  } catch {
    return undefined;
  }
}

/**
 * The process of a cgroup (or below) that serves the followed port now (the lowest pid, preferring
 * one that serves every protocol; with `every`, only such a one), or 0: a listening TCP / unconnected
 * UDP socket of `protos` on one of the listeners' ports, in network namespace `netnsIno` when given.
 */
export function listeningPidIn(cg: Cgroup, listeners: readonly Pick<ListenerChoice, 'port'>[], protos: readonly Proto[] = ['tcp'], netnsIno?: number, every = false): number {
  let some = 0;
  for (const pid of cgroupPids(cg)) {
    if (netnsIno !== undefined && netnsOfPid(pid) !== netnsIno) continue;
    try {
      const socks = serverSocketsOf(pid, protos).filter((s) => listeners.length === 0 || listeners.some((l) => l.port === s.port));
      // the process that serves every protocol, else the first that serves one
      if (protos.every((p) => socks.some((s) => s.proto === p))) return pid;
      if (socks.length) some ||= pid;
    } catch {
      // gone meanwhile
    }
  }
  return every ? 0 : some;
}

/** Find a cgroup directory by inode below the cgroup2 mount (for status), or undefined. */
export function cgroupPathByIno(ino: number): string | undefined {
  const mount = cgroup2Mount();
  if (!mount) return undefined;
  const walk = (dir: string, depth: number): string | undefined => {
    if (depth > 8) return undefined;
    let entries: string[];
    try {
      entries = readdirSync(dir, {withFileTypes: true}).filter((e) => e.isDirectory()).map((e) => e.name);
    } catch {
      return undefined;
    }
    for (const e of entries) {
      const sub = `${dir}/${e}`;
      try {
        if (statSync(sub).ino === ino) return sub.slice(mount.length);
      } catch {
        continue;
      }
      const found = walk(sub, depth + 1);
      if (found) return found;
    }
    return undefined;
  };
  return walk(mount, 0);
}

export interface FollowEntry {
  proto: Proto;
  /** the listener: family, port and address as bound */
  key: FollowKey;
  /** FOLLOW_D_*: the traffic families its socket serves */
  dests: number;
}

const entryId = (e: Pick<FollowEntry, 'proto' | 'key'>): string => `${e.proto}|${e.key.family}|${e.key.port}|${Buffer.from(e.key.addr).toString('hex')}`;

/**
 * The listeners to follow, per protocol: the sockets the service has now (a dual-stack [::] socket
 * also fills the IPv4 destination when there is no IPv4 socket), else the --listener choices
 * (`:PORT`: the IPv4 and IPv6 wildcard addresses, each for its own family).
 */
export function followEntries(t: TakenService | undefined, listeners: readonly ListenerChoice[], protos: readonly Proto[] = ['tcp']): FollowEntry[] {
  const out: FollowEntry[] = [];
  if (t && t.sockets.length) {
    for (const s of t.sockets) {
      let dests = s.family === 4 ? FOLLOW_D_V4 : FOLLOW_D_V6;
      if (s.family === 6 && t.dests[protoIndex(s.proto) * 2] === s) dests |= FOLLOW_D_V4;
      out.push({proto: s.proto, key: {family: s.family, port: s.port, addr: addrBytes(s.address, s.family)}, dests});
    }
    return dedupe(out);
  }
  for (const proto of protos) {
    for (const l of listeners) {
      if (l.address === undefined) {
        out.push({proto, key: {family: 4, port: l.port, addr: addrBytes('0.0.0.0', 4)}, dests: FOLLOW_D_V4});
        out.push({proto, key: {family: 6, port: l.port, addr: new Uint8Array(16)}, dests: FOLLOW_D_V6});
      } else {
        const p = parseAddress(l.address);
        out.push({proto, key: {family: p.family, port: l.port, addr: p.addr}, dests: p.family === 4 ? FOLLOW_D_V4 : FOLLOW_D_V6});
      }
    }
  }
  return dedupe(out);
}

function dedupe(list: FollowEntry[]): FollowEntry[] {
  const seen = new Map<string, FollowEntry>();
  for (const e of list) {
    const had = seen.get(entryId(e));
    if (had) had.dests |= e.dests;
    else seen.set(entryId(e), {...e});
  }
  return [...seen.values()];
}

/**
 * The socket records of a followed service that does not run yet: its listeners, by destination
 * (no socket, no pid). The tc program finds a UDP service's new socket by this record's listener.
 */
export function followedSocketMetas(entries: readonly FollowEntry[]): (SocketMeta | undefined)[] {
  const out: (SocketMeta | undefined)[] = new Array(DESTS_PER_SERVICE).fill(undefined);
  for (const e of entries) {
    for (const family of [4, 6] as const) {
      if (!(e.dests & (family === 4 ? FOLLOW_D_V4 : FOLLOW_D_V6))) continue;
      const i = protoIndex(e.proto) * 2 + (family === 6 ? 1 : 0);
      // a socket of the traffic's own family wins over a dual-stack one
      if (out[i] && out[i]!.family === family) continue;
      out[i] = {proto: e.proto, family: e.key.family, v6only: false, pid: 0, listenPort: e.key.port, listenAddr: e.key.addr, sockIno: 0};
    }
  }
  return out;
}

/** Refuse TCP listeners another service already follows (the follow program stores a listener in one service). */
export function checkFollowClaims(d: DispatcherState | undefined, self: number | undefined, entries: readonly FollowEntry[], nameOf: (id: number) => string): void {
  if (!d) return;
  const taken = d.followEntries();
  for (const e of entries) {
    if (e.proto !== 'tcp') continue;
    const other = taken.find((x) => x.service !== self && x.key.family === e.key.family && x.key.port === e.key.port && Buffer.from(x.key.addr).equals(Buffer.from(e.key.addr)));
    if (other) throw new SklError(`the listener ${listenerText(e.key)} is already followed by ${nameOf(other.service)}`);
  }
}

/** "127.0.0.1:7001" / "[::1]:7001": the listener a follow key names. */
export const listenerText = (k: FollowKey): string => socketListenerText({listenAddr: k.addr, listenPort: k.port, family: k.family});

/** Write a service's followed TCP listeners for the sock_ops program (replacing what it followed before). */
export function setFollow(d: DispatcherState, service: number, entries: readonly FollowEntry[], ns: Netns): void {
  const tcp = entries.filter((e) => e.proto === 'tcp');
  const cookie = tcp.length ? ns.run(() => netnsCookieHere()) : 0n;
  for (const e of tcp) d.setFollow(e.key, service, e.dests, cookie);
  const keep = new Set(tcp.map(entryId));
  for (const x of d.followEntries()) {
    if (x.service === service && !keep.has(entryId({proto: 'tcp', key: x.key}))) d.deleteFollow(x.key);
  }
}

export function clearFollow(d: DispatcherState, service: number): void {
  for (const x of d.followEntries()) if (x.service === service) d.deleteFollow(x.key);
}

const u64 = (n: number): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
};

/** Attach a pinned program of the dispatcher to a cgroup with a pinned link (once: shared by the services following it). */
function cgroupLink(dir: string, cg: Cgroup, pin: string, prog: string, attachType: number, what: string): void {
  if (existsSync(`${dir}/${pin}`)) return;
  const fd = openSync(cg.dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    const link = Link.createForPinnedProgram(`${dir}/${prog}`, fd, attachType, `${what}@cgroup ${cg.path}`);
    try {
      link.pin(`${dir}/${pin}`);
    } finally {
      link.close();
    }
  } finally {
    closeSync(fd);
  }
}

/** Whether this dispatcher can follow a protocol: its programs load on this kernel (pinned beside the maps the first time). */
export function followAvailable(dir: string, proto: Proto): boolean {
  const progs = proto === 'tcp' ? (['sk_follow'] as const) : (['sk_follow_sock', 'sk_follow_udp'] as const);
  return progs.every((p) => ensureProgram(dir, p) !== undefined);
}

/**
 * The cgroup's programs for the protocols followed there: the sock_ops link (TCP), and the
 * follow_cgroups entry then the sock_create link (UDP: the entry first, so that every socket
 * created once the link is attached is tagged).
 */
export function ensureCgroupLinks(dir: string, d: DispatcherState, cg: Cgroup, protos: readonly Proto[]): void {
  for (const proto of protos) {
    if (!followAvailable(dir, proto)) {
      throw new SklError(
        proto === 'tcp'
          ? "following is not available: this kernel cannot load skl's follow program (it needs Linux ≥5.15: the network namespace cookie in sock_ops); see skl doctor"
          : "following a UDP service is not available: this kernel cannot load skl's UDP follow programs (socket storage in cgroup sock_create programs); see skl doctor",
      );
    }
  }
  if (protos.includes('tcp')) cgroupLink(dir, cg, `follow-${cg.ino}`, PROGRAM_PINS.sk_follow, BPF_CGROUP_SOCK_OPS, 'sk_follow');
  if (protos.includes('udp')) {
    d.maps.follow_cgroups.update(u64(cg.ino), u32Key(1), BPF_ANY);
    crashPoint('follow:cgroup-listed');
    cgroupLink(dir, cg, `follow-sock-${cg.ino}`, PROGRAM_PINS.sk_follow_sock, BPF_CGROUP_INET_SOCK_CREATE, 'sk_follow_sock');
  }
  crashPoint('follow:linked');
}

/** The protocols a service's record follows (its sockets' protocols, and the TCP listeners of the follow map). */
export function followedProtos(s: ServiceMeta, tcpFollowed: boolean): Proto[] {
  return (['tcp', 'udp'] as const).filter((p) => s.sockets.some((m) => m?.proto === p) || (p === 'tcp' && tcpFollowed));
}

/**
 * Remove what no ready followed service needs any more: followed listeners of other services, the
 * cgroups' links (unlinking a pin detaches at once) and follow_cgroups entries. Run by detach and by
 * every skl's repair (an interrupted attach leaves them behind).
 */
export function pruneFollow(dir: string, d: DispatcherState): void {
  const ready = d.services().filter((x) => x.state === SVC_READY && x.flags & SVC_F_FOLLOW);
  const entries = d.followEntries();
  const live = new Set(ready.map((x) => x.id));
  for (const f of entries) if (!live.has(f.service)) d.deleteFollow(f.key);
  const byProto = {tcp: new Set<number>(), udp: new Set<number>()};
  for (const s of ready) for (const p of followedProtos(s, entries.some((f) => f.service === s.id))) byProto[p].add(s.cgroupIno);
  for (const k of [...d.maps.follow_cgroups.keys()]) if (!byProto.udp.has(Number(k.readBigUInt64LE(0)))) d.maps.follow_cgroups.delete(k);
  if (!existsSync(dir)) return;
  for (const e of readdirSync(dir)) {
    const m = /^follow-(sock-)?(\d+)$/.exec(e);
    if (m && !byProto[m[1] ? 'udp' : 'tcp'].has(Number(m[2]))) unlinkSync(`${dir}/${e}`);
  }
}

/** A socket of a cgroup's process that serves a destination's listener. */
interface Candidate {
  pid: number;
  fd: number;
  inode: number;
  proto: Proto;
}

const sameListener = (m: SocketMeta, s: {proto: Proto; family: Family; address: string; port: number}): boolean =>
  s.proto === m.proto && s.family === m.family && s.port === m.listenPort && Buffer.from(addrBytes(s.address, s.family)).equals(Buffer.from(m.listenAddr));

/**
 * Take what the cgroup serves the followed listeners with now, once the cgroup's programs are
 * attached (so that nothing started meanwhile is missed): for each destination of the service, the
 * sockets of the cgroup's processes (in the dispatcher's network namespace only) on its listener —
 * the members of a reuseport group. The first fills the destination when the service has no socket
 * there; the others (up to SPARES) go to its spare slots, which the dispatcher tries when the stored
 * one is gone. UDP sockets are tagged with the cgroup, as the sock_create program tags new ones.
 * Returns how many sockets were stored.
 */
export function seedFromCgroup(dir: string, d: DispatcherState, id: number, meta: ServiceMeta, t: TakenService, cg: Cgroup, ns: Netns): number {
  const protos = [...new Set(meta.sockets.filter((m) => m).map((m) => m!.proto))];
  const found = new Map<number, Candidate[]>();
  for (let i = 0; i < DESTS_PER_SERVICE; i++) found.set(i, []);
  for (const pid of cgroupPids(cg)) {
    if (netnsOfPid(pid) !== ns.ino) continue; // a listener of another namespace is never stored
    let socks;
    try {
      socks = serverSocketsOf(pid, protos);
    } catch {
      continue; // exited meanwhile
    }
    for (const s of socks) {
      meta.sockets.forEach((m, i) => {
        if (m && sameListener(m, s) && !found.get(i)!.some((c) => c.inode === s.inode)) found.get(i)!.push({pid, fd: s.fd, inode: s.inode, proto: s.proto});
      });
    }
  }
  let stored = 0;
  const tags = protos.includes('udp') ? BpfMap.openPinned(`${dir}/${SOCK_CGROUP_PIN}`) : undefined;
  const dups = new Map<number, number>(); // inode -> our duplicate
  try {
    const tag = (fd: number): void => tags?.update(u32Key(fd), u64(cg.ino), BPF_ANY);
    for (const s of t.sockets) if (s.proto === 'udp') tag(s.dup);
    const take = (c: Candidate): number | undefined => {
      if (dups.has(c.inode)) return dups.get(c.inode);
      let fd: number;
      try {
        fd = duplicateFd(c.pid, c.fd);
      } catch {
        return undefined; // exited or closed meanwhile
      }
      dups.set(c.inode, fd);
      const info = socketFdInfo(fd);
      // the same socket, still serving, in the dispatcher's namespace
      if (!info || info.protocol !== (c.proto === 'tcp' ? 6 : 17) || fstatSync(fd).ino !== c.inode || (c.proto === 'tcp' && !info.listening) || socketNetnsIno(fd) !== ns.ino) return undefined;
      if (c.proto === 'udp') tag(fd);
      return fd;
    };
    for (let i = 0; i < DESTS_PER_SERVICE; i++) {
      const dest = id * DESTS_PER_SERVICE + i;
      const list = found.get(i)!.filter((c) => c.inode !== t.dests[i]?.inode);
      let k = 0;
      for (const c of list) {
        const fd = take(c);
        if (fd === undefined) continue;
        if (!t.dests[i] && !d.socketAlive(dest)) {
          d.setSocket(dest, fd);
          stored++;
          continue;
        }
        if (k >= SPARES) continue;
        d.setSpare(dest, k++, fd);
        stored++;
      }
      // the follow programs fill empty slots first, then take turns from here
      if (k) d.maps.spare_next.update(u32Key(dest), u32Key(k), BPF_ANY);
    }
    crashPoint('follow:seeded');
  } finally {
    for (const fd of dups.values()) closeSync(fd);
    tags?.close();
  }
  return stored;
}
