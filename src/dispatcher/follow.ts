/**
 * Following a service across restarts, in the kernel, with no daemon: a sock_ops program on the
 * service's cgroup v2 directory (pinned link `follow-<cgroup inode>` in the dispatcher's
 * directory) stores each new listening socket that matches a followed listener — its address,
 * port and family, in the dispatcher's network namespace only — into the service's SOCKMAP slots
 * (bpf/sk_dispatch.c, sk_follow). A process outside the cgroup never triggers it.
 */
import {closeSync, constants, existsSync, openSync, readdirSync, readFileSync, statSync, unlinkSync} from 'node:fs';
import {execFileSync} from 'node:child_process';
import {Link} from '../bpf/link.js';
import {SklError} from '../sys/errors.js';
import {cgroup2Mount} from '../sys/mounts.js';
import {netnsCookieHere, type Netns} from '../sys/netns.js';
import {processInfo} from '../sys/proc.js';
import {serverSocketsOf, type Family} from '../sys/sockets.js';
import {addrBytes, FOLLOW_D_V4, FOLLOW_D_V6, listenerText as socketListenerText, type FollowKey} from './layout.js';
import {parseAddress} from './input.js';
import type {ListenerChoice, TakenService} from './services.js';
import type {DispatcherState} from './state.js';
import {FOLLOW_LINK_RE, FOLLOW_PROG_PIN} from './store.js';

/** enum bpf_attach_type BPF_CGROUP_SOCK_OPS */
const BPF_CGROUP_SOCK_OPS = 3;

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

/** The process of a cgroup that listens on the followed port now (the lowest pid), or 0. */
export function listeningPidIn(cg: Cgroup, listeners: readonly ListenerChoice[]): number {
  const procs = readFileSync(`${cg.dir}/cgroup.procs`, 'utf8').split('\n').filter(Boolean).map(Number).sort((a, b) => a - b);
  for (const pid of procs) {
    try {
      if (serverSocketsOf(pid, 'tcp').some((s) => listeners.length === 0 || listeners.some((l) => l.port === s.port))) return pid;
    } catch {
      // gone meanwhile
    }
  }
  return 0;
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
  key: FollowKey;
  dests: number;
}

/**
 * The listeners to follow: the sockets the service has now (a dual-stack [::] socket also fills
 * the IPv4 destination when there is no IPv4 socket), else the --listener choices (`:PORT`: the
 * IPv4 and IPv6 wildcard addresses, each for its own family).
 */
export function followEntries(t: TakenService | undefined, listeners: readonly ListenerChoice[]): FollowEntry[] {
  const out: FollowEntry[] = [];
  if (t && t.sockets.length) {
    for (const s of t.sockets) {
      if (s.proto !== 'tcp') continue;
      let dests = s.family === 4 ? FOLLOW_D_V4 : FOLLOW_D_V6;
      if (s.family === 6 && t.dests[0] === s) dests |= FOLLOW_D_V4;
      out.push({key: {family: s.family, port: s.port, addr: addrBytes(s.address, s.family)}, dests});
    }
    return dedupe(out);
  }
  for (const l of listeners) {
    if (l.address === undefined) {
      out.push({key: {family: 4, port: l.port, addr: addrBytes('0.0.0.0', 4)}, dests: FOLLOW_D_V4});
      out.push({key: {family: 6, port: l.port, addr: new Uint8Array(16)}, dests: FOLLOW_D_V6});
    } else {
      const p = parseAddress(l.address);
      out.push({key: {family: p.family, port: l.port, addr: p.addr}, dests: p.family === 4 ? FOLLOW_D_V4 : FOLLOW_D_V6});
    }
  }
  return dedupe(out);
}

function dedupe(list: FollowEntry[]): FollowEntry[] {
  const seen = new Map<string, FollowEntry>();
  for (const e of list) {
    const id = `${e.key.family}|${e.key.port}|${Buffer.from(e.key.addr).toString('hex')}`;
    const had = seen.get(id);
    if (had) had.dests |= e.dests;
    else seen.set(id, {...e});
  }
  return [...seen.values()];
}

/** The traffic families a followed service will serve (for its default bindings). */
export function followFamilies(entries: readonly FollowEntry[]): Family[] {
  const mask = entries.reduce((m, e) => m | e.dests, 0);
  return ([4, 6] as const).filter((f) => mask & (f === 4 ? FOLLOW_D_V4 : FOLLOW_D_V6));
}

/** Refuse listeners another service already follows. */
export function checkFollowClaims(d: DispatcherState | undefined, self: number | undefined, entries: readonly FollowEntry[], nameOf: (id: number) => string): void {
  if (!d) return;
  const taken = d.followEntries();
  for (const e of entries) {
    const other = taken.find((x) => x.service !== self && x.key.family === e.key.family && x.key.port === e.key.port && Buffer.from(x.key.addr).equals(Buffer.from(e.key.addr)));
    if (other) throw new SklError(`the listener ${listenerText(e.key)} is already followed by ${nameOf(other.service)}`);
  }
}

/** "127.0.0.1:7001" / "[::1]:7001": the listener a follow key names. */
export const listenerText = (k: FollowKey): string => socketListenerText({listenAddr: k.addr, listenPort: k.port, family: k.family});

/** Write a service's followed listeners (replacing what it followed before). */
export function setFollow(d: DispatcherState, service: number, entries: readonly FollowEntry[], ns: Netns): void {
  const cookie = ns.run(() => netnsCookieHere());
  for (const e of entries) d.setFollow(e.key, service, e.dests, cookie);
  const keep = new Set(entries.map((e) => `${e.key.family}|${e.key.port}|${Buffer.from(e.key.addr).toString('hex')}`));
  for (const x of d.followEntries()) {
    if (x.service === service && !keep.has(`${x.key.family}|${x.key.port}|${Buffer.from(x.key.addr).toString('hex')}`)) d.deleteFollow(x.key);
  }
}

export function clearFollow(d: DispatcherState, service: number): void {
  for (const x of d.followEntries()) if (x.service === service) d.deleteFollow(x.key);
}

/** The pinned sock_ops link of a cgroup (created once, shared by the services of that cgroup). */
export function ensureCgroupLink(dir: string, cg: Cgroup): void {
  const pin = `${dir}/follow-${cg.ino}`;
  if (existsSync(pin)) return;
  if (!existsSync(`${dir}/${FOLLOW_PROG_PIN}`)) {
    throw new SklError('following is not available: this kernel cannot load skl\'s follow program (it needs Linux ≥5.15: the network namespace cookie in sock_ops); see skl doctor');
  }
  const fd = openSync(cg.dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    const link = Link.createForPinnedProgram(`${dir}/${FOLLOW_PROG_PIN}`, fd, BPF_CGROUP_SOCK_OPS, `sk_follow@cgroup ${cg.path}`);
    try {
      link.pin(pin);
    } finally {
      link.close();
    }
  } finally {
    closeSync(fd);
  }
}

/** Remove the cgroup links no ready service follows any more (unlinking a pin detaches at once). */
export function pruneCgroupLinks(dir: string, followed: ReadonlySet<number>): void {
  if (!existsSync(dir)) return;
  for (const e of readdirSync(dir)) {
    const m = FOLLOW_LINK_RE.exec(e);
    if (m && !followed.has(Number(m[1]))) unlinkSync(`${dir}/${e}`);
  }
}
