// A toy TCP/UDP client for end-to-end tests, run as a standalone process inside a namespace:
//
//   node dist/test/helpers/toy-client.js --proto tcp|udp --host H --port P
//        [--count N] [--timeout MS] [--rate PER_SEC] [--duration S]
//
// Makes N connections (TCP) or sends N datagrams (UDP), each with its own timeout, reads the toy
// server's JSON reply, and prints ONE JSON line: a ClientResult. With --duration it keeps
// attempting at --rate per second (default 10) for that many seconds instead.
//
// UDP uses an unconnected socket: a reply is accepted from any source (the toy server replies
// from its bound port, which with sk_lookup differs from the port dialled), and the source is
// recorded in `from`. An unconnected socket gets no ICMP errors, so "nobody listening" shows up
// as ETIMEDOUT for UDP rather than ECONNREFUSED.
import dgram from 'node:dgram';
import net from 'node:net';
import {pathToFileURL} from 'node:url';
import {parseArgs} from 'node:util';

export interface ToyClientArgs {
  proto: 'tcp' | 'udp';
  host: string;
  port: number;
  count: number;
  timeoutMs: number;
  /** Attempts per second; undefined = one after another as fast as possible. */
  rate: number | undefined;
  /** Seconds; when set, `count` is ignored. */
  durationS: number | undefined;
}

/** What the toy server answers (plus, for UDP, where the answer came from). */
export interface Reply {
  pid: number;
  localPort: number;
  localAddress: string;
  from?: {address: string; port: number};
}

export type Outcome = {ok: true; reply: Reply} | {ok: false; error: string};

export interface ClientResult {
  attempted: number;
  ok: number;
  failed: number;
  /** Error code → count, e.g. {"ECONNREFUSED": 3}. */
  errors: Record<string, number>;
  /** The first few replies, in completion order. */
  replies: Reply[];
  /** Server-side local port → number of replies that reported it. */
  localPorts: Record<string, number>;
  elapsedMs: number;
}

export const MAX_REPLIES = 5;

function positive(name: string, value: string | undefined, integer: boolean): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) {
    throw new Error(`--${name} must be a positive ${integer ? 'integer' : 'number'}`);
  }
  return n;
}

/** Parse and validate the command line. */
export function parseClientArgs(argv: readonly string[]): ToyClientArgs {
  const {values} = parseArgs({
    args: [...argv],
    options: {
      proto: {type: 'string'},
      host: {type: 'string'},
      port: {type: 'string'},
      count: {type: 'string'},
      timeout: {type: 'string'},
      rate: {type: 'string'},
      duration: {type: 'string'},
    },
    strict: true,
  });
  const proto = values.proto;
  if (proto !== 'tcp' && proto !== 'udp') throw new Error('--proto must be tcp or udp');
  const host = values.host;
  if (host === undefined || net.isIP(host) === 0) throw new Error('--host must be an IP address');
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error('--port must be 1..65535');
  return {
    proto,
    host,
    port,
    count: positive('count', values.count, true) ?? 1,
    timeoutMs: positive('timeout', values.timeout, false) ?? 2_000,
    rate: positive('rate', values.rate, false),
    durationS: positive('duration', values.duration, false),
  };
}

/** Accumulates outcomes into a ClientResult. */
export class Tally {
  private readonly result: ClientResult = {
    attempted: 0,
    ok: 0,
    failed: 0,
    errors: {},
    replies: [],
    localPorts: {},
    elapsedMs: 0,
  };

  private readonly started = Date.now();

  attempt(): void {
    this.result.attempted += 1;
  }

  record(outcome: Outcome): void {
    if (outcome.ok) {
      this.result.ok += 1;
      if (this.result.replies.length < MAX_REPLIES) this.result.replies.push(outcome.reply);
      const key = String(outcome.reply.localPort);
      this.result.localPorts[key] = (this.result.localPorts[key] ?? 0) + 1;
    } else {
      this.result.failed += 1;
      this.result.errors[outcome.error] = (this.result.errors[outcome.error] ?? 0) + 1;
    }
  }

  finish(): ClientResult {
    return {...this.result, elapsedMs: Date.now() - this.started};
  }
}

function parseReply(text: string): Reply | undefined {
  try {
    const value = JSON.parse(text) as Partial<Reply>;
    if (typeof value.pid === 'number' && typeof value.localPort === 'number') return value as Reply;
  } catch {
    // fall through
  }
  return undefined;
}

function errorCode(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e.code ?? e.message ?? String(err);
}

/** One TCP connection: connect, read the first line, close. */
export function tcpOnce(host: string, port: number, timeoutMs: number): Promise<Outcome> {
  return new Promise(resolve => {
    let data = '';
    let done = false;
    const socket = net.connect({host, port});
    const finish = (outcome: Outcome): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(outcome);
    };
    const timer = setTimeout(() => finish({ok: false, error: 'ETIMEDOUT'}), timeoutMs);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      data += chunk;
      const nl = data.indexOf('\n');
      if (nl >= 0) {
        const reply = parseReply(data.slice(0, nl));
        finish(reply === undefined ? {ok: false, error: 'EBADREPLY'} : {ok: true, reply});
      }
    });
    socket.on('end', () => finish({ok: false, error: data === '' ? 'EEMPTY' : 'EBADREPLY'}));
    socket.on('close', () => finish({ok: false, error: 'ECLOSED'}));
    socket.on('error', err => finish({ok: false, error: errorCode(err)}));
  });
}

/** One UDP exchange: send a datagram from a fresh unconnected socket, wait for one reply. */
export function udpOnce(host: string, port: number, timeoutMs: number): Promise<Outcome> {
  return new Promise(resolve => {
    let done = false;
    const socket = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
    const finish = (outcome: Outcome): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      try {
        socket.close();
      } catch {
        // already closed
      }
      resolve(outcome);
    };
    const timer = setTimeout(() => finish({ok: false, error: 'ETIMEDOUT'}), timeoutMs);
    socket.on('error', err => finish({ok: false, error: errorCode(err)}));
    socket.on('message', (msg, rinfo) => {
      const reply = parseReply(msg.toString('utf8').trim());
      finish(
        reply === undefined
          ? {ok: false, error: 'EBADREPLY'}
          : {ok: true, reply: {...reply, from: {address: rinfo.address, port: rinfo.port}}},
      );
    });
    socket.send('ping\n', port, host, err => {
      if (err) finish({ok: false, error: errorCode(err)});
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, Math.max(0, ms)));

/** Run the whole workload described by `args`. */
export async function runWorkload(args: ToyClientArgs): Promise<ClientResult> {
  const once = args.proto === 'tcp' ? tcpOnce : udpOnce;
  const tally = new Tally();
  const one = async (): Promise<void> => {
    tally.attempt();
    tally.record(await once(args.host, args.port, args.timeoutMs));
  };

  if (args.durationS === undefined && args.rate === undefined) {
    for (let i = 0; i < args.count; i++) await one();
    return tally.finish();
  }

  // Paced: attempt i starts at start + i/rate, concurrently with earlier ones still in flight.
  const interval = 1000 / (args.rate ?? 10);
  const start = Date.now();
  const end = args.durationS === undefined ? Infinity : start + args.durationS * 1000;
  const limit = args.durationS === undefined ? args.count : Infinity;
  const inflight: Array<Promise<void>> = [];
  for (let i = 0; i < limit; i++) {
    const at = start + i * interval;
    if (at >= end) break;
    await sleep(at - Date.now());
    inflight.push(one());
  }
  await Promise.all(inflight);
  return tally.finish();
}

async function main(): Promise<void> {
  let args: ToyClientArgs;
  try {
    args = parseClientArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`toy-client: ${(err as Error).message}\n`);
    process.exit(2);
  }
  const result = await runWorkload(args);
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch(err => {
    process.stderr.write(`toy-client: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
