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

/** Counters the kernel keeps per network namespace (/proc/net/netstat, snmp, snmp6, read inside `ns`). */
export interface NetCounters {
  /** SYNs (and SYN-ACKs) sent again: a connection that was not answered or refused at once. */
  tcpSynRetrans: number;
  /** UDP datagrams that reached no socket, IPv4 and IPv6. */
  udpNoPorts: number;
  udp6NoPorts: number;
}

/** Parse the "Prefix: names…" / "Prefix: values…" line pairs of /proc/net/snmp and /proc/net/netstat. */
export function parseSnmpPairs(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  const lines = text.split('\n').filter(l => l.trim() !== '');
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const names = lines[i].split(/\s+/);
    const values = lines[i + 1].split(/\s+/);
    const prefix = names[0].replace(/:$/, '');
    for (let k = 1; k < names.length; k++) out[`${prefix}${names[k]}`] = Number(values[k]);
  }
  return out;
}

export function netCounters(ns: Netns): NetCounters {
  const read = (file: string): string => ns.exec('cat', [file], {check: true}).stdout;
  const netstat = parseSnmpPairs(read('/proc/net/netstat'));
  const snmp = parseSnmpPairs(read('/proc/net/snmp'));
  const snmp6 = Object.fromEntries(
    read('/proc/net/snmp6')
      .split('\n')
      .map(l => l.trim().split(/\s+/))
      .filter(f => f.length === 2)
      .map(([k, v]) => [k, Number(v)]),
  );
  const num = (v: number | undefined, what: string): number => {
    if (v === undefined || !Number.isFinite(v)) throw new Error(`no ${what} counter in ${ns.name}`);
    return v;
  };
  return {
    tcpSynRetrans: num(netstat.TcpExtTCPSynRetrans, 'TcpExt TCPSynRetrans'),
    udpNoPorts: num(snmp.UdpNoPorts, 'Udp NoPorts'),
    udp6NoPorts: num(snmp6.Udp6NoPorts, 'Udp6NoPorts'),
  };
}
