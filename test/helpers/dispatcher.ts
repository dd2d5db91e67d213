// Helpers for the dispatcher's end-to-end tests: run the real CLI (`node bin/run.js ...`) against a
// test namespace — with `--netns`, from outside it, or (useSkl's `inside`) the everyday way, in the
// namespace itself (`nsenter --net=/run/netns/NAME skl ...`, no --netns) — and check what it leaves
// in bpffs.
//
// Every skl process started here is a direct child of the test process and is stopped by its own
// PID; nothing here ever acts on the host's network namespace (every command gets `--netns`, or
// runs entered into the test namespace).
import {spawn, type ChildProcess} from 'node:child_process';
import {existsSync, readdirSync, rmdirSync, statSync, unlinkSync} from 'node:fs';
import {createInterface} from 'node:readline';
import {fileURLToPath} from 'node:url';
import {findExecutable} from './privileged.js';
import type {ExecutionContext} from 'ava';
import type {AttachmentStatus} from '../../src/dispatcher/api.js';
import type {Netns} from './netns.js';
import {stopChild} from './netns.js';
import {TOY_SERVER_SCRIPT} from './servers.js';

/** The CLI entry point (bin/run.js at the package root; this file is dist/test/helpers/dispatcher.js). */
export const SKL_BIN = fileURLToPath(new URL('../../../bin/run.js', import.meta.url));
/** skl's directory in bpffs: one subdirectory per network namespace inode. */
export const SKL_PIN_ROOT = '/sys/fs/bpf/skl';

export interface SklResult {
  /** Exit code, or null when killed by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** The last stdout line parsed as JSON, when it is JSON. */
  json: unknown;
  timedOut: boolean;
}

/**
 * Environment of skl processes, as a user's shell would give it: no colours (plain stderr lines),
 * no debug stack traces, and no NODE_ENV=test from ava (it puts oclif in development mode).
 */
export function sklEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {...process.env, NO_COLOR: '1', FORCE_COLOR: '0'};
  for (const k of ['SKL_DEBUG', 'SKL_TEST_CRASH_AT', 'SKL_FAKE_MISSING_FEATURES', 'SKL_LOCK_FILE', 'NODE_ENV']) delete env[k];
  return {...env, ...extra};
}

function lastJson(stdout: string): unknown {
  const line = stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as unknown;
  } catch {
    return undefined;
  }
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  elapsedMs: number;
  /** pid of the spawned process (with a wrapper that execs, skl's own pid) */
  pid: number;
  /** the last stdout line as JSON, if it is JSON */
  json: unknown;
}

export interface RunOptions {
  /** appended as `--netns PATH` (omit to pass your own, or none) */
  netns?: string;
  /** extra environment (on top of a clean one: no colours, no debug, no test switches) */
  env?: Record<string, string>;
  /** a command that runs skl: ['setpriv', ...], ['ip', 'netns', 'exec', NAME], ... */
  wrap?: string[];
  /** `sh -c SCRIPT`: skl is `"$@"` in the script (e.g. 'umask 000; exec "$@"') */
  shell?: string;
  timeoutMs?: number;
  /** another skl's entry point (bin/run.js), e.g. an older release's */
  bin?: string;
}

/** Run `skl ARGS [--netns PATH]` to completion; never hangs (SIGKILL after the timeout). */
export function runSkl(args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const full = [opts.bin ?? SKL_BIN, ...args, ...(opts.netns === undefined ? [] : ['--netns', opts.netns])];
  let cmd = process.execPath;
  let argv = full;
  if (opts.shell !== undefined) {
    argv = ['-c', opts.shell, 'sh', process.execPath, ...full];
    cmd = '/bin/sh';
  }
  if (opts.wrap !== undefined) {
    argv = [...opts.wrap.slice(1), cmd, ...argv];
    cmd = opts.wrap[0];
  }
  const started = Date.now();
  const child = spawn(cmd, argv, {stdio: ['ignore', 'pipe', 'pipe'], env: sklEnv(opts.env)});
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 30_000);
    child.on('error', err => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({code, signal, stdout, stderr, timedOut, elapsedMs: Date.now() - started, pid: child.pid ?? 0, json: lastJson(stdout)});
    });
  });
}

/** Run `skl ARGS --netns NETNS` to completion (from the test's own namespace). */
export function skl(args: readonly string[], opts: {netns: string; timeoutMs?: number}): Promise<SklResult> {
  return runSkl(args, opts);
}

/** `nsenter --net=PATH`: what runs a command inside a test namespace (and only its network namespace: bpffs stays the host's). */
export function enter(nsPath: string): string[] {
  const nsenter = findExecutable('nsenter');
  if (nsenter === undefined) throw new Error('nsenter (util-linux) not found');
  return [nsenter, `--net=${nsPath}`];
}

/** Run `skl ARGS` inside the namespace, the everyday way: entered with nsenter, no --netns. */
export function sklInside(args: readonly string[], opts: {netns: string; timeoutMs?: number}): Promise<SklResult> {
  return runSkl(args, {wrap: enter(opts.netns), timeoutMs: opts.timeoutMs});
}

/** Describe a run for assertion messages. */
export function show(r: SklResult): string {
  return `exit ${r.code ?? r.signal}${r.timedOut ? ' (timed out)' : ''}; stdout: ${r.stdout.trim()}; stderr: ${r.stderr.trim()}`;
}

/** One attachment as `skl status --json` prints it (the library's record without its text form). */
export type StatusAttachment = Omit<AttachmentStatus, 'portsText'>;

export interface StatusJson {
  netns: string;
  netnsIno: number;
  dispatcher: boolean;
  attachments: StatusAttachment[];
}

/** `skl status --json`, which must succeed (run inside the namespace with `inside`). */
export async function sklStatus(netns: string, inside = false): Promise<StatusJson> {
  const r = await (inside ? sklInside : skl)(['status', '--json'], {netns});
  if (r.code !== 0 || r.json === undefined) throw new Error(`skl status --json failed: ${show(r)}`);
  return r.json as StatusJson;
}

/** One attachment of `skl status --json`, which must exist. */
export async function attachmentStatus(netns: string, name: string, inside = false): Promise<StatusAttachment> {
  const st = await sklStatus(netns, inside);
  const a = st.attachments.find(x => x.name === name);
  if (a === undefined) throw new Error(`no attachment ${name} in status: ${JSON.stringify(st)}`);
  return a;
}

/** The namespace's pin directory, /sys/fs/bpf/skl/<netns inode>. */
export function pinDirOf(nsPath: string): string {
  return `${SKL_PIN_ROOT}/${statSync(nsPath).ino}`;
}

/** Entries of skl's bpffs root that belong to the namespace with this inode (its dir, a scratch dir, a change journal). */
export function pinsOf(ino: number): string[] {
  if (!existsSync(SKL_PIN_ROOT)) return [];
  return readdirSync(SKL_PIN_ROOT).filter(e => e === String(ino) || e.startsWith(`${ino}-`));
}

function removePinDir(dir: string): void {
  if (!statSync(dir).isDirectory()) {
    unlinkSync(dir); // a pinned object itself (a link pinned where skl should pin nothing)
    return;
  }
  // the link pin first: removing it detaches the program at once
  if (existsSync(`${dir}/link`)) unlinkSync(`${dir}/link`);
  for (const entry of readdirSync(dir)) unlinkSync(`${dir}/${entry}`);
  rmdirSync(dir);
}

/** A foreground `skl attach ... --foreground --json` that the test controls by its PID. */
export interface ForegroundSkl {
  readonly child: ChildProcess;
  readonly pid: number;
  /** The `{"event":"attached",...}` line. */
  readonly attached: Record<string, unknown>;
  stdout(): string;
  stderr(): string;
  /** Resolves when the process has exited. */
  readonly exited: Promise<{code: number | null; signal: NodeJS.Signals | null}>;
}

/**
 * The test's skl context for one namespace: runs skl there and, at teardown, stops any foreground
 * skl it started and runs `skl detach --all`. If pins are still there after that, it removes them
 * and fails the test: a test must never leave state behind, and skl must be able to remove it.
 * Register it after `createNetns(t)` so that it tears down before the namespace goes.
 */
export interface SklContext {
  readonly ns: Netns;
  readonly ino: number;
  readonly pinDir: string;
  /** skl runs inside the namespace (nsenter, no --netns): what `skl status --json` calls it ('/proc/self/ns/net'), else its path */
  readonly inside: boolean;
  readonly netnsShown: string;
  run(args: readonly string[], timeoutMs?: number): Promise<SklResult>;
  /** Run and require exit code 0; returns the result. */
  ok(args: readonly string[], timeoutMs?: number): Promise<SklResult>;
  status(): Promise<StatusJson>;
  attachment(name: string): Promise<StatusAttachment>;
  /** Start `skl attach ARGS --foreground --json` and wait for its "attached" line. */
  foreground(args: readonly string[]): Promise<ForegroundSkl>;
}

export function useSkl(t: ExecutionContext, ns: Netns, opts: {inside?: boolean} = {}): SklContext {
  const ino = statSync(ns.path).ino;
  const children = new Set<ChildProcess>();
  const inside = opts.inside === true;
  const run = inside ? sklInside : skl;

  const ctx: SklContext = {
    ns,
    ino,
    pinDir: `${SKL_PIN_ROOT}/${ino}`,
    inside,
    netnsShown: inside ? '/proc/self/ns/net' : ns.path,
    run: (args, timeoutMs) => run(args, {netns: ns.path, timeoutMs}),
    async ok(args, timeoutMs) {
      const r = await run(args, {netns: ns.path, timeoutMs});
      if (r.code !== 0) throw new Error(`skl ${args.join(' ')}${inside ? ' (inside the namespace)' : ''}: ${show(r)}`);
      return r;
    },
    status: () => sklStatus(ns.path, inside),
    attachment: name => attachmentStatus(ns.path, name, inside),
    async foreground(args) {
      const argv = [SKL_BIN, ...args, '--foreground', '--json', ...(inside ? [] : ['--netns', ns.path])];
      const [cmd, ...pre] = inside ? [...enter(ns.path), process.execPath] : [process.execPath];
      const child = spawn(cmd, [...pre, ...argv], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: sklEnv(),
      });
      children.add(child);
      let stdout = '';
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
      const exited = new Promise<{code: number | null; signal: NodeJS.Signals | null}>(resolve => {
        child.once('exit', (code, signal) => {
          children.delete(child);
          resolve({code, signal});
        });
      });
      const attached = await new Promise<Record<string, unknown>>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`foreground skl printed nothing within 20 s; stderr: ${stderr}`)), 20_000);
        createInterface({input: child.stdout}).on('line', line => {
          stdout += `${line}\n`;
          try {
            const event = JSON.parse(line) as Record<string, unknown>;
            if (event.event === 'attached') {
              clearTimeout(timer);
              resolve(event);
            }
          } catch {
            // not JSON: ignore
          }
        });
        void exited.then(({code, signal}) => {
          clearTimeout(timer);
          reject(new Error(`foreground skl exited (${code ?? signal}) before attaching; stderr: ${stderr.trim()}`));
        });
      });
      return {child, pid: child.pid!, attached, stdout: () => stdout, stderr: () => stderr, exited};
    },
  };

  t.teardown(async () => {
    await Promise.all([...children].map(c => stopChild(c)));
    if (ns.destroyed) return;
    const r = await skl(['detach', '--all'], {netns: ns.path});
    const left = pinsOf(ino);
    if (left.length > 0) {
      for (const entry of left) removePinDir(`${SKL_PIN_ROOT}/${entry}`);
      throw new Error(`skl detach --all left pins behind (${left.join(', ')}): ${show(r)}`);
    }
    if (r.code !== 0) throw new Error(`skl detach --all failed at teardown: ${show(r)}`);
  });
  return ctx;
}

/** Poll `check` until it returns true or `timeoutMs` passes; returns the last result. */
export async function eventually(check: () => Promise<boolean> | boolean, timeoutMs = 30_000, stepMs = 50): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise(resolve => setTimeout(resolve, stepMs));
  }
}

/**
 * A process with several listening TCP sockets, each answering like the toy server plus
 * `listener: <its bound port>`. Prints {"event":"listening","pid":...,"ports":[...]} when ready and
 * exits when its stdin closes (so it never outlives the test).
 */
export const MULTI_LISTENER_SCRIPT = `
const net = require('node:net');
const [host, ...ports] = process.argv.slice(1);
let ready = 0;
for (const port of ports.map(Number)) {
  net.createServer(s => {
    s.on('error', () => undefined);
    s.end(JSON.stringify({pid: process.pid, localPort: s.localPort, localAddress: s.localAddress, listener: port}) + '\\n');
  }).listen({host, port}, () => {
    if (++ready === ports.length) process.stdout.write(JSON.stringify({event: 'listening', pid: process.pid, ports: ports.map(Number)}) + '\\n');
  });
}
process.stdin.on('end', () => process.exit(0)).on('error', () => process.exit(0)).resume();
`;

/** Start MULTI_LISTENER_SCRIPT in `ns`, listening on `host` at each of `ports`. */
export async function startMultiListener(ns: Netns, host: string, ports: number[]): Promise<{pid: number; child: ChildProcess}> {
  const child = ns.spawn(process.execPath, ['-e', MULTI_LISTENER_SCRIPT, host, ...ports.map(String)], {stdio: ['pipe', 'pipe', 'pipe']});
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const pid = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`multi-listener did not start; stderr: ${stderr}`)), 10_000);
    createInterface({input: child.stdout!}).on('line', line => {
      try {
        const e = JSON.parse(line) as {event?: string; pid?: number};
        if (e.event === 'listening' && e.pid !== undefined) {
          clearTimeout(timer);
          resolve(e.pid);
        }
      } catch {
        // ignore
      }
    });
    child.once('exit', code => {
      clearTimeout(timer);
      reject(new Error(`multi-listener exited (${code}); stderr: ${stderr}`));
    });
  });
  return {pid, child};
}

/**
 * A toy TCP server whose parent never reaps it (`sh -c 'node toy-server & exec sleep'`): once
 * killed, it stays a zombie until the namespace's children are stopped. Killed (by its PID) at
 * teardown if still running; register after `createNetns(t)`.
 */
export async function startUnreapedServer(t: ExecutionContext, ns: Netns, host: string): Promise<{pid: number; port: number}> {
  const script = `"$0" "$1" --proto tcp --host "$2" & exec sleep 600`;
  const child = ns.spawn('sh', ['-c', script, process.execPath, TOY_SERVER_SCRIPT, host], {stdio: ['ignore', 'pipe', 'pipe']});
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const listening = await new Promise<{pid: number; port: number}>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`unreaped toy server did not start; stderr: ${stderr}`)), 10_000);
    createInterface({input: child.stdout!}).on('line', line => {
      try {
        const e = JSON.parse(line) as {event?: string; pid?: number; port?: number};
        if (e.event === 'listening' && e.pid !== undefined && e.port !== undefined) {
          clearTimeout(timer);
          resolve({pid: e.pid, port: e.port});
        }
      } catch {
        // ignore
      }
    });
  });
  // while its parent (the sleep) lives, the pid cannot be reused, so this kill is safe
  t.teardown(() => {
    try {
      process.kill(listening.pid, 'SIGKILL');
    } catch {
      // gone
    }
  });
  return listening;
}
