/**
 * Throwaway network namespaces for the benchmarks (bench code cannot import the ava-bound test
 * helpers). Named `skl-bench-<pid>-<n>`, entered with `nsenter --net=` (never `ip netns exec`: see
 * DESIGN.md), loopback up, nothing else. Children started here are stopped by PID; skl state pinned
 * for the namespace and the namespace itself are removed by `destroy()`, and, as a last resort, on
 * exit or SIGINT/SIGTERM/SIGHUP.
 */
import {spawn, spawnSync, type ChildProcess, type SpawnOptions} from 'node:child_process';
import {accessSync, constants, existsSync, readdirSync, rmdirSync, statSync, unlinkSync} from 'node:fs';
import path from 'node:path';

export interface Exec {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

const found = new Map<string, string>();
/** An executable from PATH or the sbin directories (root's tools are there on Debian). */
export function tool(name: string): string {
  const hit = found.get(name);
  if (hit) return hit;
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/local/sbin', '/usr/sbin', '/sbin'];
  for (const d of dirs) {
    if (!d) continue;
    const p = path.join(d, name);
    try {
      accessSync(p, constants.X_OK);
      found.set(name, p);
      return p;
    } catch {
      // next
    }
  }
  throw new Error(`${name} not found (PATH or sbin)`);
}

export function run(cmd: string, args: readonly string[], opts: {timeoutMs?: number; env?: NodeJS.ProcessEnv; input?: string} = {}): Exec {
  const r = spawnSync(cmd, args, {
    encoding: 'utf8',
    timeout: opts.timeoutMs ?? 60_000,
    killSignal: 'SIGKILL',
    env: opts.env,
    input: opts.input,
    stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    maxBuffer: 256 * 1024 * 1024,
  });
  if (r.error && (r.error as NodeJS.ErrnoException).code !== 'ETIMEDOUT') throw r.error;
  return {code: r.status, signal: r.signal, stdout: r.stdout ?? '', stderr: r.stderr ?? ''};
}

export function check(what: string, r: Exec): Exec {
  if (r.code !== 0) throw new Error(`${what}: ${r.signal ? `killed by ${r.signal}` : `exit code ${r.code}`}${r.stderr.trim() ? `\n${r.stderr.trim()}` : ''}`);
  return r;
}

const BPFFS_SKL = '/sys/fs/bpf/skl';
const live = new Set<BenchNetns>();
let counter = 0;
let hooked = false;

function hook(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', () => {
    for (const ns of live) ns.destroySync();
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      process.stderr.write(`bench: ${sig}, cleaning up\n`);
      for (const ns of live) ns.destroySync();
      process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1));
    });
  }
}

export class BenchNetns {
  private readonly children = new Set<ChildProcess>();
  private destroyed = false;

  private constructor(
    readonly name: string,
    readonly path: string,
    /** inode of the namespace (names skl's pin directory /sys/fs/bpf/skl/<ino>) */
    readonly ino: number,
  ) {}

  static create(): BenchNetns {
    hook();
    counter += 1;
    const name = `skl-bench-${process.pid}-${counter}`;
    check(`ip netns add ${name}`, run(tool('ip'), ['netns', 'add', name]));
    const nsPath = `/run/netns/${name}`;
    const ns = new BenchNetns(name, nsPath, statSync(nsPath).ino);
    live.add(ns);
    try {
      check('lo up', ns.exec(tool('ip'), ['link', 'set', 'dev', 'lo', 'up']));
    } catch (error) {
      ns.destroySync();
      throw error;
    }
    return ns;
  }

  /** Run a command inside the namespace and wait for it. */
  exec(cmd: string, args: readonly string[] = [], opts: {timeoutMs?: number; env?: NodeJS.ProcessEnv; input?: string} = {}): Exec {
    return run(tool('nsenter'), [`--net=${this.path}`, '--', cmd, ...args], opts);
  }

  /** Start a long-running command inside the namespace (nsenter execs it: the child's pid is the command's). */
  spawn(cmd: string, args: readonly string[] = [], opts: SpawnOptions = {}): ChildProcess {
    const child = spawn(tool('nsenter'), [`--net=${this.path}`, '--', cmd, ...args], {stdio: ['ignore', 'pipe', 'pipe'], ...opts});
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return child;
  }

  /** Write a sysctl of this namespace (/proc/sys/net is per network namespace of the writer). */
  sysctl(key: string, value: string): void {
    const file = `/proc/sys/${key.replaceAll('.', '/')}`;
    check(`sysctl ${key}`, this.exec(process.execPath, ['-e', 'require("fs").writeFileSync(process.argv[1], process.argv[2])', file, value]));
  }

  /** skl's pinned state for this namespace, if any. */
  get pinDir(): string {
    return `${BPFFS_SKL}/${this.ino}`;
  }

  destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const c of this.children) {
      if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    }
    removePins(this.pinDir);
    if (existsSync(this.path)) run(tool('ip'), ['netns', 'delete', this.name], {timeoutMs: 10_000});
    live.delete(this);
  }

  /** Stop children (SIGTERM, then SIGKILL), remove skl's pins for the namespace, delete it. */
  async destroy(): Promise<void> {
    await Promise.all([...this.children].map((c) => stop(c)));
    this.destroySync();
  }
}

/** SIGTERM the child by its PID, SIGKILL after `graceMs`; resolves when it has exited. */
export function stop(child: ChildProcess, graceMs = 2000, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill(signal);
  });
}

/** Remove a pin directory (link pin first: that detaches the program at once), then skl's root if empty. */
export function removePins(dir: string): void {
  if (!existsSync(dir)) return;
  if (existsSync(`${dir}/link`)) unlinkSync(`${dir}/link`);
  for (const e of readdirSync(dir)) unlinkSync(`${dir}/${e}`);
  rmdirSync(dir);
  try {
    rmdirSync(BPFFS_SKL);
  } catch {
    // other namespaces' dispatchers live there too
  }
}
