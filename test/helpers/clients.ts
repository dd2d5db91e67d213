// Run the toy client (toy-client.ts) inside a test namespace.
import {fileURLToPath} from 'node:url';
import type {Netns} from './netns.js';
import type {ClientResult, Reply} from './toy-client.js';

export type {ClientResult, Reply} from './toy-client.js';

export const TOY_CLIENT_SCRIPT = fileURLToPath(new URL('./toy-client.js', import.meta.url));

export interface ClientOptions {
  proto: 'tcp' | 'udp';
  host: string;
  port: number;
  /** Number of attempts (ignored with durationS). Default 1. */
  count?: number;
  /** Per-attempt timeout. Default 2000 ms. */
  timeoutMs?: number;
  /** Attempts per second (paced, concurrent); default sequential, or 10/s with durationS. */
  rate?: number;
  /** Keep attempting for this many seconds. */
  durationS?: number;
}

/** The toy client's command-line arguments for `opts`. */
export function clientArgs(opts: ClientOptions): string[] {
  const args = ['--proto', opts.proto, '--host', opts.host, '--port', String(opts.port)];
  if (opts.count !== undefined) args.push('--count', String(opts.count));
  if (opts.timeoutMs !== undefined) args.push('--timeout', String(opts.timeoutMs));
  if (opts.rate !== undefined) args.push('--rate', String(opts.rate));
  if (opts.durationS !== undefined) args.push('--duration', String(opts.durationS));
  return args;
}

/** An upper bound on how long the client process may take, for the process-level timeout. */
export function clientDeadlineMs(opts: ClientOptions): number {
  const perAttempt = opts.timeoutMs ?? 2_000;
  const margin = 10_000;
  if (opts.durationS !== undefined) return opts.durationS * 1000 + perAttempt + margin;
  const count = opts.count ?? 1;
  const pacing = opts.rate === undefined ? count * perAttempt : (count / opts.rate) * 1000 + perAttempt;
  return pacing + margin;
}

/** Run the toy client in `ns` and return its parsed result. Throws if the client itself fails. */
export async function runClient(ns: Netns, opts: ClientOptions): Promise<ClientResult> {
  const r = await ns.execAsync(process.execPath, [TOY_CLIENT_SCRIPT, ...clientArgs(opts)], {
    timeoutMs: clientDeadlineMs(opts),
  });
  if (r.code !== 0) {
    const why = r.timedOut ? 'timed out' : `exit ${r.code ?? r.signal}`;
    throw new Error(`toy client in ${ns.name} failed (${why}): ${r.stderr.trim()}`);
  }
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as ClientResult;
  } catch {
    throw new Error(`toy client in ${ns.name} printed no JSON result: ${JSON.stringify(r.stdout)}`);
  }
}

export type ConnectResult = {ok: true; reply: Reply} | {ok: false; error: string};

/** One connection (TCP) or datagram exchange (UDP): the server's reply, or the error code. */
export async function connectOnce(
  ns: Netns,
  opts: {proto: 'tcp' | 'udp'; host: string; port: number; timeoutMs?: number},
): Promise<ConnectResult> {
  const result = await runClient(ns, {...opts, count: 1});
  const reply = result.replies[0];
  if (result.ok === 1 && reply !== undefined) return {ok: true, reply};
  const error = Object.keys(result.errors)[0] ?? 'EUNKNOWN';
  return {ok: false, error};
}
