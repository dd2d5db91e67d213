// Throwaway network namespaces (and veth pairs between them) for privileged tests.
//
// Everything here runs commands with argument arrays (no shell) and enters namespaces with
// `nsenter --net=/run/netns/NAME`, never `ip netns exec` (which gives the command a private mount
// namespace and a fresh sysfs without bpffs; see DESIGN.md). Nothing touches the host's network:
// namespaces get their own loopback, and veth pairs are created *inside* the test namespaces.
import {spawn as spawnChild, spawnSync, type ChildProcess, type SpawnOptions} from 'node:child_process';
import {randomBytes} from 'node:crypto';
import {existsSync} from 'node:fs';
import type {ExecutionContext} from 'ava';
import {findExecutable} from './privileged.js';

export interface ExecResult {
  /** Exit code, or null when killed by a signal (see `signal`). */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** True when the command was killed because it exceeded its timeout. */
  timedOut: boolean;
}

export interface ExecOptions {
  /** Kill the command (SIGKILL) after this long. Default 30 s. */
  timeoutMs?: number;
  /** Written to the command's stdin. */
  input?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Throw a descriptive error unless the command exits with code 0. */
  check?: boolean;
}

export interface Netns {
  readonly name: string;
  /** The bind-mounted namespace file, `/run/netns/NAME`. */
  readonly path: string;
  readonly destroyed: boolean;
  /** Run a command inside the namespace, synchronously. */
  exec(cmd: string, args?: readonly string[], opts?: ExecOptions): ExecResult;
  /** Run a command inside the namespace without blocking the event loop. */
  execAsync(cmd: string, args?: readonly string[], opts?: ExecOptions): Promise<ExecResult>;
  /**
   * Start a long-running command inside the namespace. nsenter execs the command, so the
   * returned child's pid is the command's own pid. The child is killed by `destroy()`.
   */
  spawn(cmd: string, args?: readonly string[], opts?: SpawnOptions): ChildProcess;
  /** Kill the children started through this object, then delete the namespace. Idempotent. */
  destroy(): Promise<void>;
}

const DEFAULT_TIMEOUT_MS = 30_000;
const TERM_GRACE_MS = 1_000;
const KILL_WAIT_MS = 3_000;

function tool(name: string): string {
  const found = findExecutable(name);
  if (found === undefined) throw new Error(`${name} not found in PATH or sbin directories`);
  return found;
}

function describe(cmd: string, args: readonly string[]): string {
  return [cmd, ...args].join(' ');
}

function checkResult(what: string, result: ExecResult): ExecResult {
  if (result.code !== 0) {
    const why = result.timedOut ? 'timed out' : result.signal !== null ? `killed by ${result.signal}` : `exit code ${result.code}`;
    throw new Error(`${what}: ${why}${result.stderr.trim() === '' ? '' : `\n${result.stderr.trim()}`}`);
  }
  return result;
}

/** Run a command (not in any namespace) synchronously with a timeout. */
export function runSync(cmd: string, args: readonly string[], opts: ExecOptions = {}): ExecResult {
  const r = spawnSync(cmd, args, {
    encoding: 'utf8',
    timeout: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    killSignal: 'SIGKILL',
    input: opts.input,
    env: opts.env,
    cwd: opts.cwd,
    stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    maxBuffer: 64 * 1024 * 1024,
  });
  const errno = (r.error as NodeJS.ErrnoException | undefined)?.code;
  if (r.error !== undefined && errno !== 'ETIMEDOUT') throw new Error(`${describe(cmd, args)}: ${r.error.message}`);
  const result: ExecResult = {
    code: r.status,
    signal: r.signal,
    stdout: r.stdout ?? '',
    stderr: r.stderr ?? '',
    timedOut: errno === 'ETIMEDOUT',
  };
  return opts.check === true ? checkResult(describe(cmd, args), result) : result;
}

let nameCounter = 0;

/** A fresh namespace name: `skl-test-<pid>-<counter>-<random>`. */
export function uniqueNetnsName(pid: number = process.pid): string {
  nameCounter += 1;
  return `skl-test-${pid}-${nameCounter}-${randomBytes(3).toString('hex')}`;
}

/** Names listed by `ip netns list` output (which may carry " (id: N)" suffixes). */
export function parseNetnsList(output: string): string[] {
  return output
    .split('\n')
    .map(line => line.trim().split(/\s+/)[0] ?? '')
    .filter(name => name !== '');
}

/** Names of every named network namespace on the machine. */
export function listNetns(): string[] {
  return parseNetnsList(runSync(tool('ip'), ['netns', 'list'], {check: true}).stdout);
}

function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (!isRunning(child)) return Promise.resolve(true);
  return new Promise(resolve => {
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolve(false);
    }, ms);
    const onExit = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    child.once('exit', onExit);
  });
}

/** SIGTERM, then SIGKILL after a short grace, addressing the child by its own PID only. */
export async function stopChild(child: ChildProcess, graceMs: number = TERM_GRACE_MS): Promise<void> {
  if (!isRunning(child) || child.pid === undefined) return;
  child.kill('SIGTERM');
  if (await waitExit(child, graceMs)) return;
  child.kill('SIGKILL');
  await waitExit(child, KILL_WAIT_MS);
}

// Namespaces created by this process and not yet destroyed: cleaned up as a last resort when the
// process exits, is told to terminate (ava kills its workers with SIGTERM on a timeout, which
// skips 'exit' handlers), or loses its IPC channel to ava.
const live = new Map<string, {children: Set<ChildProcess>}>();
let exitHookInstalled = false;

/** Synchronously SIGKILL every child and delete every namespace this process still owns. */
export function cleanupAllSync(): void {
  for (const [name, state] of live) {
    for (const child of state.children) {
      if (isRunning(child)) {
        try {
          child.kill('SIGKILL');
        } catch {
          // best effort
        }
      }
    }
    try {
      runSync(tool('ip'), ['netns', 'delete', name], {timeoutMs: 5_000});
    } catch {
      // best effort
    }
  }
  live.clear();
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', cleanupAllSync);
  if (typeof process.send === 'function') process.once('disconnect', cleanupAllSync);
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.once(signal, () => {
      cleanupAllSync();
      // Our listener is gone now: re-raise so the signal has its usual effect.
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    });
  }
}

/**
 * Create a uniquely named network namespace with `lo` up. With `t`, its destruction is registered
 * as a teardown, so it happens even when the test fails.
 */
export function createNetns(t?: ExecutionContext): Netns {
  const ip = tool('ip');
  const nsenter = tool('nsenter');
  const name = uniqueNetnsName();
  const nsPath = `/run/netns/${name}`;
  installExitHook();

  runSync(ip, ['netns', 'add', name], {check: true});
  const children = new Set<ChildProcess>();
  live.set(name, {children});

  let destroying: Promise<void> | undefined;
  const enter = (cmd: string, args: readonly string[]): string[] => [`--net=${nsPath}`, '--', cmd, ...args];

  const ns: Netns = {
    name,
    path: nsPath,
    get destroyed(): boolean {
      return destroying !== undefined;
    },

    exec(cmd, args = [], opts = {}) {
      if (destroying !== undefined) throw new Error(`netns ${name} is destroyed`);
      const result = runSync(nsenter, enter(cmd, args), {...opts, check: false});
      return opts.check === true ? checkResult(`[netns ${name}] ${describe(cmd, args)}`, result) : result;
    },

    execAsync(cmd, args = [], opts = {}) {
      if (destroying !== undefined) return Promise.reject(new Error(`netns ${name} is destroyed`));
      const child = ns.spawn(cmd, args, {env: opts.env, cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe']});
      return new Promise<ExecResult>((resolve, reject) => {
        let stdout = '';
        let stderr = '';
        let timedOut = false;
        child.stdout?.setEncoding('utf8').on('data', (s: string) => (stdout += s));
        child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
        const timer = setTimeout(() => {
          timedOut = true;
          child.kill('SIGKILL');
        }, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
        child.on('error', err => {
          clearTimeout(timer);
          reject(err);
        });
        child.on('close', (code, signal) => {
          clearTimeout(timer);
          const result: ExecResult = {code, signal, stdout, stderr, timedOut};
          try {
            resolve(opts.check === true ? checkResult(`[netns ${name}] ${describe(cmd, args)}`, result) : result);
          } catch (err) {
            reject(err);
          }
        });
        child.stdin?.on('error', () => undefined);
        child.stdin?.end(opts.input ?? '');
      });
    },

    spawn(cmd, args = [], opts = {}) {
      if (destroying !== undefined) throw new Error(`netns ${name} is destroyed`);
      const child = spawnChild(nsenter, enter(cmd, args), {stdio: ['ignore', 'pipe', 'pipe'], ...opts});
      children.add(child);
      child.once('exit', () => children.delete(child));
      child.once('error', () => children.delete(child));
      return child;
    },

    destroy() {
      destroying ??= (async () => {
        await Promise.all([...children].map(child => stopChild(child)));
        if (existsSync(nsPath)) {
          const r = runSync(ip, ['netns', 'delete', name], {timeoutMs: 10_000});
          if (r.code !== 0 && existsSync(nsPath)) {
            throw new Error(`ip netns delete ${name} failed: ${r.stderr.trim()}`);
          }
        }
        live.delete(name);
      })();
      return destroying;
    },
  };

  // Bring loopback up; if that fails, do not leak the namespace.
  try {
    ns.exec(ip, ['link', 'set', 'dev', 'lo', 'up'], {check: true});
  } catch (err) {
    void ns.destroy().catch(() => undefined);
    throw err;
  }
  t?.teardown(() => ns.destroy());
  return ns;
}

export interface LinkLocalPair {
  /** The third octet, 1–254 (169.254.0/24 and 169.254.255/24 are reserved). */
  subnet: number;
  addrA: string;
  addrB: string;
  prefixLen: 30;
}

/** The n-th /30 link-local pair: 169.254.x.1 and 169.254.x.2, x in 1..254. */
export function linkLocalPair(n: number): LinkLocalPair {
  const subnet = ((n % 254) + 254) % 254 + 1;
  return {subnet, addrA: `169.254.${subnet}.1`, addrB: `169.254.${subnet}.2`, prefixLen: 30};
}

export interface VethPair {
  ifA: string;
  ifB: string;
  addrA: string;
  addrB: string;
  prefixLen: number;
  macA: string;
  macB: string;
  ifindexA: number;
  ifindexB: number;
}

interface LinkInfo {
  ifindex: number;
  address: string;
}

/** ifindex and MAC of an interface inside a namespace. */
export function linkInfo(ns: Netns, dev: string): LinkInfo {
  const out = ns.exec(tool('ip'), ['-j', 'link', 'show', 'dev', dev], {check: true}).stdout;
  const parsed = JSON.parse(out) as Array<{ifindex: number; address: string}>;
  const link = parsed[0];
  if (link === undefined) throw new Error(`no link ${dev} in netns ${ns.name}`);
  return {ifindex: link.ifindex, address: link.address};
}

function setSysctl(ns: Netns, key: string, value: string): void {
  const sysctl = findExecutable('sysctl');
  if (sysctl !== undefined) {
    ns.exec(sysctl, ['-q', '-w', `${key}=${value}`], {check: true});
    return;
  }
  // No procps: /proc/sys/net is per network namespace of the writer, so write it from inside.
  const file = `/proc/sys/${key.replaceAll('.', '/')}`;
  ns.exec(process.execPath, ['-e', 'require("fs").writeFileSync(process.argv[1], process.argv[2])', file, value], {
    check: true,
  });
}

let vethCounter = 0;

/**
 * A veth pair with one end in each namespace, both up, IPv6 disabled on both ends (so packet
 * counts are exact), addressed 169.254.x.1/30 (A) and 169.254.x.2/30 (B). The pair is created
 * inside `a` directly, so it never appears in the host namespace.
 */
export function createVethPair(a: Netns, b: Netns, t?: ExecutionContext): VethPair {
  const ip = tool('ip');
  vethCounter += 1;
  const {addrA, addrB, prefixLen} = linkLocalPair(process.pid + vethCounter);
  const tag = `${vethCounter}${randomBytes(2).toString('hex')}`;
  const ifA = `sklv${tag}a`;
  const ifB = `sklv${tag}b`;

  a.exec(ip, ['link', 'add', ifA, 'type', 'veth', 'peer', 'name', ifB, 'netns', b.name], {check: true});
  t?.teardown(() => {
    if (!a.destroyed) a.exec(ip, ['link', 'delete', ifA], {timeoutMs: 5_000});
  });
  // Disable IPv6 while the links are still down: no router solicitations or MLD reports, ever.
  setSysctl(a, `net.ipv6.conf.${ifA}.disable_ipv6`, '1');
  setSysctl(b, `net.ipv6.conf.${ifB}.disable_ipv6`, '1');
  a.exec(ip, ['addr', 'add', `${addrA}/${prefixLen}`, 'dev', ifA], {check: true});
  b.exec(ip, ['addr', 'add', `${addrB}/${prefixLen}`, 'dev', ifB], {check: true});
  a.exec(ip, ['link', 'set', 'dev', ifA, 'up'], {check: true});
  b.exec(ip, ['link', 'set', 'dev', ifB, 'up'], {check: true});

  const infoA = linkInfo(a, ifA);
  const infoB = linkInfo(b, ifB);
  return {
    ifA,
    ifB,
    addrA,
    addrB,
    prefixLen,
    macA: infoA.address,
    macB: infoB.address,
    ifindexA: infoA.ifindex,
    ifindexB: infoB.ifindex,
  };
}

/** `ip neigh replace ADDRESS lladdr MAC dev DEV nud permanent` inside `ns`. */
export function addStaticNeighbour(ns: Netns, dev: string, address: string, mac: string): void {
  ns.exec(tool('ip'), ['neigh', 'replace', address, 'lladdr', mac, 'dev', dev, 'nud', 'permanent'], {check: true});
}

/** Static ARP entries on both ends of a pair, so no ARP traffic disturbs packet counts. */
export function addStaticNeighbours(a: Netns, b: Netns, pair: VethPair): void {
  addStaticNeighbour(a, pair.ifA, pair.addrB, pair.macB);
  addStaticNeighbour(b, pair.ifB, pair.addrA, pair.macA);
}
