// Helpers of the reliability, hostile-input and security tests: run the real CLI with a chosen
// environment, privileges or wrapper (setpriv, unshare, ip netns exec), quiet servers and an
// open-loop load client inside test namespaces, and direct looks at skl's pinned state.
//
// Every process started here is a child of the test process, stopped by its own PID. skl always
// acts on a test namespace (`--netns`), never on the host's.
import type {ChildProcess} from 'node:child_process';
import {existsSync, readdirSync, statSync} from 'node:fs';
import {createInterface} from 'node:readline';
import {fileURLToPath} from 'node:url';
import type {ExecutionContext} from 'ava';
import {BpfMap, u32Key} from '../../src/bpf/map.js';
import {Link} from '../../src/bpf/link.js';
import {decodeService, SERVICE_SIZE, MAX_SERVICES, SVC_FREE} from '../../src/dispatcher/layout.js';
import type {Netns} from './netns.js';
import {stopChild} from './netns.js';
import {runSkl, SKL_PIN_ROOT, type RunResult} from './dispatcher.js';
import {inCgroup} from './cgroups.js';
import type {LoadMark, LoadResult} from './load-client.js';

export type {LoadMark, LoadResult} from './load-client.js';
export const LOAD_CLIENT_SCRIPT = fileURLToPath(new URL('./load-client.js', import.meta.url));

/** The files a namespace's pinned dispatcher always consists of: its maps and its link. */
export const PIN_FILES = [
  'add_ports',
  'binding_tables',
  'counters',
  'follow',
  'follow_cgroups',
  'link',
  'reply_counters',
  'services',
  'skl_info',
  'sock_cgroup',
  'spare_next',
  'spare_socket',
  'target_socket',
  'udp_flows',
];
/** Pins of the programs besides sk_dispatch: each pinned when a service first needs it (UDP replies, following). */
export const PROGRAM_PIN_FILES = ['follow_prog', 'follow_sock_prog', 'follow_udp_prog', 'reply_prog'];
const PROGRAM_PINS = new Set(PROGRAM_PIN_FILES);

/** The namespace's pins split: the dispatcher's own (maps, link), its programs', and anything else. */
export function pinKindsOf(ino: number): {fixed: string[]; programs: string[]} {
  const files = pinFilesOf(ino);
  return {fixed: files.filter(f => !PROGRAM_PINS.has(f)), programs: files.filter(f => PROGRAM_PINS.has(f))};
}

/** Drop to nobody (uid/gid 65534, no supplementary groups) for the command that follows. */
export const AS_NOBODY = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];

export {runSkl, type RunOptions, type RunResult} from './dispatcher.js';

export function describeRun(r: Pick<RunResult, 'code' | 'signal' | 'stdout' | 'stderr' | 'timedOut'> & {elapsedMs?: number}): string {
  return `exit ${r.code ?? r.signal}${r.timedOut ? ' (TIMED OUT)' : ''}${r.elapsedMs === undefined ? '' : ` in ${r.elapsedMs} ms`}; stdout: ${JSON.stringify(r.stdout.trim())}; stderr: ${JSON.stringify(r.stderr.trim())}`;
}

/** Non-empty stderr lines. */
export const stderrLines = (r: {stderr: string}): string[] => r.stderr.split('\n').filter(l => l.trim() !== '');

/** `skl status --json` output, raw (for byte-for-byte comparisons); throws unless it succeeds. */
export async function statusText(netns: string): Promise<string> {
  const r = await runSkl(['status', '--json'], {netns});
  if (r.code !== 0) throw new Error(`skl status --json: ${describeRun(r)}`);
  return r.stdout;
}

/**
 * A quiet TCP server in `ns`: answers each connection like the toy server ({pid, localPort,
 * localAddress} and a newline), then closes; no output per connection (cheap under load). Exits
 * when its stdin closes. `host` may list several addresses ("127.0.0.1,::1"): one listening
 * socket each, all on the same port.
 */
export const QUIET_SERVER_SCRIPT = `
const net = require('node:net');
const [hosts, port] = process.argv.slice(1);
const list = hosts.split(',');
let bound = Number(port);
const listen = i => {
  const server = net.createServer(s => {
    s.on('error', () => undefined);
    s.end(JSON.stringify({pid: process.pid, localPort: s.localPort, localAddress: s.localAddress}) + '\\n');
  });
  server.on('error', e => { process.stderr.write(String(e) + '\\n'); process.exit(1); });
  server.listen({host: list[i], port: bound, backlog: 4096}, () => {
    bound = server.address().port;
    if (i + 1 < list.length) return listen(i + 1);
    process.stdout.write(JSON.stringify({event: 'listening', pid: process.pid, port: bound}) + '\\n');
  });
};
listen(0);
process.on('SIGTERM', () => process.exit(0));
process.stdin.on('end', () => process.exit(0)).on('error', () => process.exit(0)).resume();
`;

export interface QuietServer {
  pid: number;
  port: number;
  child: ChildProcess;
  stop(): Promise<void>;
}

/** The quiet server on `host` (one or several addresses) and `port`, in `ns` and, with `cgroup` (a directory), in that cgroup. */
export async function startQuietServer(ns: Netns, host: string, port = 0, cgroup?: string): Promise<QuietServer> {
  const argv = [process.execPath, '-e', QUIET_SERVER_SCRIPT, host, String(port)];
  const [cmd, ...args] = cgroup === undefined ? argv : inCgroup(cgroup, argv);
  const child = ns.spawn(cmd, args, {stdio: ['pipe', 'pipe', 'pipe']});
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const listening = await new Promise<{pid: number; port: number}>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`quiet server did not start; stderr: ${stderr}`)), 15_000);
    createInterface({input: child.stdout!}).once('line', line => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(line) as {pid: number; port: number});
      } catch {
        reject(new Error(`quiet server printed ${line}`));
      }
    });
    child.once('exit', code => {
      clearTimeout(timer);
      reject(new Error(`quiet server exited (${code}); stderr: ${stderr}`));
    });
  });
  let stopping: Promise<void> | undefined;
  return {...listening, child, stop: () => (stopping ??= stopChild(child))};
}

/** A sleeping process in `ns` (a pid with no sockets). */
export function startSleeper(ns: Netns): ChildProcess {
  return ns.spawn('sleep', ['600'], {stdio: 'ignore'});
}

export interface LoadRun {
  child: ChildProcess;
  /** resolves once the client has started (its first line) */
  started: Promise<void>;
  /** The client's counts now. */
  mark(): Promise<LoadMark>;
  /** Resolves once every connection started before `mark` has finished (rejects after `timeoutMs`: a hang). */
  drained(mark: LoadMark, timeoutMs?: number): Promise<void>;
  /** Start no more connections; resolves with the result once every one has finished. */
  stop(): Promise<LoadResult>;
  /** Settles when the client exits (with its result, or an error). */
  result: Promise<LoadResult>;
}

/**
 * Start the open-loop load client in `ns`. It runs until `stop()` (or until the test process goes
 * away: the end of its stdin stops it too); the test decides by counts, through `mark()`, how long.
 * With `record`, its result lists who answered each connection, in start order (`replies`).
 */
export function startLoad(ns: Netns, o: {host: string; ports: number[]; rate: number; timeoutMs?: number; record?: boolean}): LoadRun {
  const args = [LOAD_CLIENT_SCRIPT, '--host', o.host, '--ports', o.ports.join(','), '--rate', String(o.rate)];
  if (o.timeoutMs !== undefined) args.push('--timeout', String(o.timeoutMs));
  if (o.record === true) args.push('--record');
  const child = ns.spawn(process.execPath, args, {stdio: ['pipe', 'pipe', 'pipe']});
  child.stdin!.on('error', () => undefined);
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  let last = '';
  let onStart!: () => void;
  const started = new Promise<void>(resolve => (onStart = resolve));
  const markWaiters: Array<(m: LoadMark) => void> = [];
  const drainedMarks = new Set<number>();
  const drainWaiters = new Map<number, Array<() => void>>();
  createInterface({input: child.stdout!}).on('line', line => {
    last = line;
    let e: {event?: string; mark?: number};
    try {
      e = JSON.parse(line) as typeof e;
    } catch {
      return;
    }
    if (e.event === 'started') onStart();
    else if (e.event === 'mark') markWaiters.shift()?.(e as LoadMark);
    else if (e.event === 'drained' && e.mark !== undefined) {
      drainedMarks.add(e.mark);
      for (const w of drainWaiters.get(e.mark) ?? []) w();
      drainWaiters.delete(e.mark);
    }
  });
  let exited = false;
  let deadline: NodeJS.Timeout | undefined;
  const result = new Promise<LoadResult>((resolve, reject) => {
    child.once('close', code => {
      exited = true;
      clearTimeout(deadline);
      try {
        const r = JSON.parse(last) as LoadResult & {event?: string};
        if (code === 0 && r.event === undefined) return resolve(r);
      } catch {
        // fall through
      }
      reject(new Error(`load client exited (${code}) without a result; stderr: ${stderr}`));
    });
  });
  result.catch(() => undefined);
  const gone = (): Error => new Error(`load client has exited; stderr: ${stderr}`);
  return {
    child,
    started,
    result,
    mark: () =>
      new Promise<LoadMark>((resolve, reject) => {
        if (exited) return reject(gone());
        markWaiters.push(resolve);
        child.stdin!.write('mark\n');
        result.then(() => reject(gone()), reject);
      }),
    drained: (mark, timeoutMs = 60_000) =>
      new Promise<void>((resolve, reject) => {
        if (drainedMarks.has(mark.attempted)) return resolve();
        const timer = setTimeout(() => reject(new Error(`connections started before mark ${mark.attempted} not all finished after ${timeoutMs} ms`)), timeoutMs);
        const list = drainWaiters.get(mark.attempted) ?? [];
        list.push(() => {
          clearTimeout(timer);
          resolve();
        });
        drainWaiters.set(mark.attempted, list);
      }),
    stop: () => {
      // a hang-catcher only: every connection has its own timeout, so the client ends soon after a stop
      deadline ??= setTimeout(() => child.kill('SIGKILL'), 120_000);
      if (!exited) child.stdin!.end('stop\n');
      return result;
    },
  };
}

/** Entries of skl's bpffs root belonging to namespace inode `ino` (its directory, scratch directories, change journals). */
export function pinEntriesOf(ino: number): string[] {
  if (!existsSync(SKL_PIN_ROOT)) return [];
  return readdirSync(SKL_PIN_ROOT)
    .filter(e => e === String(ino) || /^\d+-(new|old|up|change)-\d+$/.test(e) && e.startsWith(`${ino}-`))
    .sort();
}

/** Files in the namespace's pin directory ([] when it has none). */
export function pinFilesOf(ino: number): string[] {
  const dir = `${SKL_PIN_ROOT}/${ino}`;
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

export interface SlotView {
  slot: number;
  state: number;
  name: string;
  pid: number;
}

/** Every used service id of the namespace's pinned dispatcher, read straight from its services map. */
export function slotsOf(ino: number): SlotView[] {
  const path = `${SKL_PIN_ROOT}/${ino}/services`;
  if (!existsSync(path)) return [];
  const m = BpfMap.openPinned(path);
  try {
    const out: SlotView[] = [];
    for (let slot = 0; slot < MAX_SERVICES; slot++) {
      const v = m.lookup(u32Key(slot));
      if (!v) continue;
      const meta = decodeService(v.subarray(0, SERVICE_SIZE));
      if (meta.state !== SVC_FREE) out.push({slot, state: meta.state, name: meta.name, pid: meta.pid});
    }
    return out;
  } finally {
    m.close();
  }
}

/**
 * A namespace's pinned skl state, read straight from bpffs by the test process: the entries of
 * skl's root that belong to it (its directory, scratch directories, change journals), the pins in
 * its directory, the link (id and program), and every non-empty entry of every map (keys and
 * values as hex; target_socket's values are the sockets' cookies). No skl runs, so nothing is
 * repaired first: half-made state left by a command shows here, where `skl status` (which repairs
 * before it reads) would hide it.
 */
export interface PinnedState {
  entries: string[];
  files: string[];
  link?: {id: number; progId: number};
  maps: Record<string, Record<string, string>>;
}

export function pinnedState(ino: number): PinnedState {
  const dir = `${SKL_PIN_ROOT}/${ino}`;
  const out: PinnedState = {entries: pinEntriesOf(ino), files: pinFilesOf(ino), maps: {}};
  if (out.files.includes('link')) {
    const l = Link.openPinned(`${dir}/link`);
    try {
      const i = l.info();
      out.link = {id: i.id, progId: i.progId};
    } finally {
      l.close();
    }
  }
  // maps only: the link, the follow program and its cgroup links show by their presence in `files`
  // (sock_cgroup, socket storage, cannot be listed from userspace)
  for (const name of out.files.filter(f => f !== 'link' && f !== 'sock_cgroup' && !PROGRAM_PINS.has(f) && !f.startsWith('follow-'))) {
    let m: BpfMap;
    try {
      m = BpfMap.openPinned(`${dir}/${name}`);
    } catch {
      out.maps[name] = {}; // a pin that is not a map (a program): its presence is in `files`
      continue;
    }
    const entries: Record<string, string> = {};
    const put = (k: Buffer, v: Buffer): void => {
      if (v.some(b => b !== 0)) entries[k.toString('hex')] = v.toString('hex');
    };
    try {
      if (name === 'binding_tables') {
        // a map of maps: its entry is the bindings hash's id; record the hash's entries instead
        const id = m.lookup(u32Key(0));
        if (id) {
          const inner = BpfMap.openById(id.readUInt32LE(0));
          const bindings: Record<string, string> = {};
          try {
            inner.lookupAll((keys, values, count) => {
              for (let i = 0; i < count; i++) bindings[keys.subarray(i * inner.keySize, (i + 1) * inner.keySize).toString('hex')] = values.subarray(i * inner.lookupSize, (i + 1) * inner.lookupSize).toString('hex');
            }, 4096);
          } finally {
            inner.close();
          }
          out.maps.bindings = bindings;
        }
      } else if (name === 'target_socket' || name === 'spare_socket') {
        // a SOCKMAP: lookups return the socket's cookie; no batch lookup
        for (let i = 0; i < m.maxEntries; i++) {
          const v = m.lookup(u32Key(i));
          if (v) put(u32Key(i), v);
        }
      } else {
        m.lookupAll((keys, values, count) => {
          for (let i = 0; i < count; i++) put(keys.subarray(i * m.keySize, (i + 1) * m.keySize), values.subarray(i * m.lookupSize, (i + 1) * m.lookupSize));
        }, 4096);
      }
    } finally {
      m.close();
    }
    out.maps[name] = entries;
  }
  return out;
}

/** What a rejected command must leave as it was: the raw pinned state, and what `skl status --json` says of it. */
export interface StateSnapshot {
  pinned: PinnedState;
  status: string;
}

/** The state before a command: `skl status --json` (which must find nothing to repair), then the raw pins. */
export async function snapshotState(netns: string): Promise<StateSnapshot> {
  const r = await runSkl(['status', '--json'], {netns});
  if (r.code !== 0 || stderrLines(r).length > 0) throw new Error(`skl status --json before the command: ${describeRun(r)}`);
  return {status: r.stdout, pinned: pinnedState(statSync(netns).ino)};
}

/**
 * The state after a command that must have changed nothing: first the raw pins (before any skl
 * runs: a half-made change would still be there), then `skl status --json`, which must have
 * nothing to repair (no notice) and print the same bytes.
 */
export async function assertStateUnchanged(t: ExecutionContext, netns: string, before: StateSnapshot, what: string): Promise<void> {
  t.deepEqual(pinnedState(statSync(netns).ino), before.pinned, `${what}: the pinned state, read raw, is unchanged`);
  const r = await runSkl(['status', '--json'], {netns});
  t.is(r.code, 0, `${what}: skl status --json: ${describeRun(r)}`);
  t.deepEqual(stderrLines(r), [], `${what}: nothing left for the next skl to repair`);
  t.is(r.stdout, before.status, `${what}: skl status --json is byte-for-byte the same`);
}

/** Mode bits (permissions) and owner of a path. */
export function modeOf(path: string): {mode: number; uid: number; gid: number} {
  const st = statSync(path);
  return {mode: st.mode & 0o7777, uid: st.uid, gid: st.gid};
}

export const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms));

/** Every file and directory below `dir` (relative paths), for "nothing was created" checks. */
export function treeOf(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string): void => {
    let entries: string[];
    try {
      entries = readdirSync(d);
    } catch {
      return;
    }
    for (const e of entries) {
      const path = `${d}/${e}`;
      out.push(`${rel}${e}`);
      let isDir = false;
      try {
        isDir = statSync(path).isDirectory();
      } catch {
        // gone meanwhile
      }
      if (isDir) walk(path, `${rel}${e}/`);
    }
  };
  walk(dir, '');
  return out.sort();
}
