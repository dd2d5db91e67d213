// Helpers of the `skl xdp-count` end-to-end tests: run the real CLI, look at XDP state with `ip`,
// send exact numbers of UDP datagrams from a peer namespace.
import {spawn, type ChildProcess} from 'node:child_process';
import {fileURLToPath} from 'node:url';
import type {ExecutionContext} from 'ava';
import {stopChild, type Netns} from './netns.js';
import {findExecutable} from './privileged.js';

/** Repository root (this file runs from dist/test/helpers/). */
export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const CLI = fileURLToPath(new URL('../../../bin/run.js', import.meta.url));
/** The counter object, for attaching a "foreign" program with `ip link set … xdpgeneric obj`. */
export const XDP_COUNT_OBJ = fileURLToPath(new URL('../../../bpf/xdp_count.o', import.meta.url));

function ip(): string {
  const found = findExecutable('ip');
  if (found === undefined) throw new Error('ip not found');
  return found;
}

export interface XdpOnLink {
  id: number;
  name: string;
  /** iproute2's XDP_ATTACHED_*: 1 native (driver), 2 generic (skb), 3 hw, 4 several. */
  mode: number;
}

/** The XDP program `ip -j link show` reports on `dev` inside `ns`, or undefined. */
export function xdpOn(ns: Netns, dev: string): XdpOnLink | undefined {
  const out = ns.exec(ip(), ['-j', 'link', 'show', 'dev', dev], {check: true}).stdout;
  const [link] = JSON.parse(out) as Array<{xdp?: {mode: number; prog?: {id: number; name: string}}}>;
  if (link?.xdp === undefined) return undefined;
  return {id: link.xdp.prog?.id ?? 0, name: link.xdp.prog?.name ?? '', mode: link.xdp.mode};
}

/**
 * Attach the counter object in generic mode with iproute2 (netlink, no bpf_link): a "foreign" program.
 * iproute2 creates tc/, ip and xdp entries in the bpffs it finds; it runs in a private mount
 * namespace with a bpffs of its own, so nothing lands in the host's /sys/fs/bpf.
 */
export function attachForeignXdp(ns: Netns, dev: string, t?: ExecutionContext): XdpOnLink {
  const script = 'mount -t bpf bpf /sys/fs/bpf && exec "$0" link set dev "$1" xdpgeneric obj "$2" sec xdp';
  ns.exec('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, ip(), dev, XDP_COUNT_OBJ], {check: true});
  t?.teardown(() => {
    if (!ns.destroyed) ns.exec(ip(), ['link', 'set', 'dev', dev, 'xdpgeneric', 'off'], {timeoutMs: 5_000});
  });
  const on = xdpOn(ns, dev);
  if (on === undefined) throw new Error(`ip link set ${dev} xdpgeneric did not attach anything`);
  return on;
}

export async function waitUntil<T>(what: string, probe: () => T | undefined | false, timeoutMs = 30_000, stepMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

export interface CliRun {
  child: ChildProcess;
  pid: number;
  /** stdout and stderr so far. */
  readonly stdout: string;
  readonly stderr: string;
  /** Parsed JSON lines of stdout so far (lines that are not JSON are skipped). */
  records(): Array<Record<string, unknown>>;
  /** Resolves when the process has exited (and its output is complete). */
  exited: Promise<{code: number | null; signal: NodeJS.Signals | null}>;
}

/**
 * Start `node bin/run.js ARGS` (outside any namespace unless `ns`: then through nsenter, which
 * execs, so the pid is node's own). It is stopped (SIGTERM, then SIGKILL, by pid) at teardown.
 */
export function startCli(t: ExecutionContext, args: readonly string[], ns?: Netns): CliRun {
  const env = {...process.env, NO_COLOR: '1'};
  const child = ns ? ns.spawn(process.execPath, [CLI, ...args], {env, stdio: ['ignore', 'pipe', 'pipe']}) : spawn(process.execPath, [CLI, ...args], {env, stdio: ['ignore', 'pipe', 'pipe']});
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<{code: number | null; signal: NodeJS.Signals | null}>((resolve) => {
    child.on('close', (code, signal) => resolve({code, signal}));
  });
  t.teardown(() => stopChild(child));
  if (child.pid === undefined) throw new Error('could not start the CLI');
  return {
    child,
    pid: child.pid,
    get stdout() {
      return stdout;
    },
    get stderr() {
      return stderr;
    },
    records() {
      const out: Array<Record<string, unknown>> = [];
      for (const line of stdout.split('\n')) {
        try {
          out.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          // partial or human line
        }
      }
      return out;
    },
    exited,
  };
}

/** Run the CLI to completion (with a timeout, then SIGKILL). */
export async function runCli(
  t: ExecutionContext,
  args: readonly string[],
  timeoutMs = 20_000,
): Promise<{code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string}> {
  const run = startCli(t, args);
  const timer = setTimeout(() => run.child.kill('SIGKILL'), timeoutMs);
  const {code, signal} = await run.exited;
  clearTimeout(timer);
  return {code, signal, stdout: run.stdout, stderr: run.stderr};
}

/**
 * From inside `ns`, send exactly `count` UDP datagrams of `payload` bytes to `address:port`, one
 * after the other (each send completes before the next). The frame on the wire is
 * 14 + 20 + 8 + payload bytes.
 */
export function sendUdp(ns: Netns, address: string, port: number, count: number, payload = 18): void {
  const script = `
    const dgram = require('node:dgram');
    const [addr, port, count, size] = process.argv.slice(1);
    const s = dgram.createSocket('udp4');
    const buf = Buffer.alloc(Number(size), 0x5a);
    let sent = 0;
    const next = (err) => {
      if (err) { console.error(err.message); process.exit(1); }
      if (sent === Number(count)) { s.close(); return; }
      sent += 1;
      s.send(buf, Number(port), addr, next);
    };
    next();`;
  ns.exec(process.execPath, ['-e', script, address, String(port), String(count), String(payload)], {check: true, timeoutMs: 60_000});
}

/** A network interface's rx_dropped/tx_dropped, for diagnostics. */
export function dropCounters(ns: Netns, dev: string): string {
  const r = ns.exec(ip(), ['-s', 'link', 'show', 'dev', dev]);
  return r.stdout.trim();
}
