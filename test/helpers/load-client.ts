// An open-loop TCP load client for the reliability tests, run as a standalone process inside a
// test namespace:
//
//   node dist/test/helpers/load-client.js --host H --ports P1,P2,... --rate PER_SEC [--timeout MS] [--record]
//
// Connection i starts at start + i/rate (whatever happened to earlier ones: a stall makes it catch
// up in a burst instead of lowering the rate; at most 2,000 are open at once), goes to ports[i % ports.length], reads the server's
// JSON reply ({pid, ...}) up to its FIN, then closes (the client closes second, so it leaves no TIME_WAIT behind).
//
// With --record, the result also lists every connection's outcome in the order they were started
// (`replies[i]`: the replying pid, or the error code), so a test can tell who answered when.
//
// It runs until told to stop, so that a test decides by counts (never by time) how long the load
// lasts. Commands on stdin, one per line:
//   mark   prints {"event":"mark","attempted":A,"succeeded":S,"failed":F} at once, and later
//          {"event":"drained","mark":A} when every connection started before the mark has finished
//   stop   (or the end of stdin) starts no more connections; when every one has finished, prints
//          one JSON line, a LoadResult, and exits
import net from 'node:net';

const MAX_IN_FLIGHT = 2000;
import {pathToFileURL} from 'node:url';
import {createInterface} from 'node:readline';
import {parseArgs} from 'node:util';

export interface LoadFailure {
  port: number;
  error: string;
  /** ms after the start at which the connection was started */
  startedAt: number;
}

export interface LoadResult {
  attempted: number;
  succeeded: number;
  failed: number;
  /** error code → count */
  errors: Record<string, number>;
  /** replying server pid → count */
  byPid: Record<string, number>;
  perPort: Record<string, {ok: number; failed: number}>;
  /** the first failures (at most 20), for diagnosis */
  failures: LoadFailure[];
  /** ms from the first start to the last finish */
  elapsedMs: number;
  /** ms during which connections were started (until the stop) */
  startSpanMs: number;
  /** highest number of connections in flight at once */
  maxInFlight: number;
  /** slowest successful connection, ms */
  slowestMs: number;
  /** with --record: connection i (in start order, to ports[i % ports.length]) → the replying pid or the error code */
  replies?: (number | string)[];
}

interface Args {
  host: string;
  ports: number[];
  rate: number;
  timeoutMs: number;
  record: boolean;
}

export interface LoadMark {
  event: 'mark';
  attempted: number;
  succeeded: number;
  failed: number;
}

function parse(argv: string[]): Args {
  const {values} = parseArgs({
    args: argv,
    options: {host: {type: 'string'}, ports: {type: 'string'}, rate: {type: 'string'}, timeout: {type: 'string'}, record: {type: 'boolean'}},
    strict: true,
  });
  const ports = (values.ports ?? '').split(',').map(Number);
  if (ports.length === 0 || ports.some(p => !Number.isInteger(p) || p < 1 || p > 65535)) throw new Error('--ports: a comma-separated list of ports');
  const host = values.host ?? '';
  if (net.isIP(host) === 0) throw new Error('--host must be an IP address');
  const rate = Number(values.rate);
  const timeoutMs = Number(values.timeout ?? 10_000);
  if (!(rate > 0) || !(timeoutMs > 0)) throw new Error('--rate and --timeout must be positive');
  return {host, ports, rate, timeoutMs, record: values.record === true};
}

/** What drives the client: counts to report, and when to stop. */
export interface LoadControl {
  /** Called with a mark; `drained` is called later, once every connection started before it has finished. */
  onMark(mark: LoadMark): void;
  onDrained(attempted: number): void;
  /** Resolves when the client is to stop starting connections. */
  stopped: Promise<void>;
  /** Registers the function that takes a mark now. */
  setMarker(mark: () => void): void;
}

async function run(a: Args, control: LoadControl): Promise<LoadResult> {
  const r: LoadResult = {
    attempted: 0,
    succeeded: 0,
    failed: 0,
    errors: {},
    byPid: {},
    perPort: {},
    failures: [],
    elapsedMs: 0,
    startSpanMs: 0,
    maxInFlight: 0,
    slowestMs: 0,
  };
  for (const p of a.ports) r.perPort[p] = {ok: 0, failed: 0};
  const replies: (number | string)[] | undefined = a.record ? [] : undefined;
  if (replies) r.replies = replies;
  const start = performance.now();
  let inFlight = 0;
  let stopping = false;
  let onIdle: (() => void) | undefined;
  // which connections have finished: every index below `lowestOpen` has; pending marks wait for it
  const finishedIdx: boolean[] = [];
  let lowestOpen = 0;
  let pendingMarks: number[] = [];
  const checkMarks = (): void => {
    while (finishedIdx[lowestOpen] === true) lowestOpen++;
    const drained = pendingMarks.filter(m => m <= lowestOpen);
    pendingMarks = pendingMarks.filter(m => m > lowestOpen);
    for (const m of drained) control.onDrained(m);
  };
  control.setMarker(() => {
    control.onMark({event: 'mark', attempted: r.attempted, succeeded: r.succeeded, failed: r.failed});
    pendingMarks.push(r.attempted);
    checkMarks();
  });

  const done = (idx: number, port: number, startedAt: number, outcome: {pid: number} | {error: string}): void => {
    inFlight--;
    finishedIdx[idx] = true;
    if (replies) replies[idx] = 'pid' in outcome ? outcome.pid : outcome.error;
    if ('pid' in outcome) {
      r.succeeded++;
      r.perPort[port].ok++;
      r.byPid[outcome.pid] = (r.byPid[outcome.pid] ?? 0) + 1;
      r.slowestMs = Math.max(r.slowestMs, performance.now() - start - startedAt);
    } else {
      r.failed++;
      r.perPort[port].failed++;
      r.errors[outcome.error] = (r.errors[outcome.error] ?? 0) + 1;
      if (r.failures.length < 20) r.failures.push({port, error: outcome.error, startedAt: Math.round(startedAt)});
    }
    checkMarks();
    if (stopping && inFlight === 0) onIdle?.();
  };

  const connect = (port: number): void => {
    const idx = r.attempted;
    const startedAt = performance.now() - start;
    r.attempted++;
    inFlight++;
    r.maxInFlight = Math.max(r.maxInFlight, inFlight);
    let data = '';
    let settled = false;
    const socket = net.connect({host: a.host, port});
    const finish = (outcome: {pid: number} | {error: string}): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      done(idx, port, startedAt, outcome);
    };
    const timer = setTimeout(() => finish({error: 'ETIMEDOUT'}), a.timeoutMs);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (data += chunk));
    socket.on('end', () => {
      let pid = 0;
      try {
        pid = (JSON.parse(data) as {pid?: number}).pid ?? 0;
      } catch {
        // not a reply
      }
      finish(Number.isInteger(pid) && pid > 0 ? {pid} : {error: data === '' ? 'EEMPTY' : 'EBADREPLY'});
    });
    socket.on('error', err => finish({error: (err as NodeJS.ErrnoException).code ?? err.message}));
    socket.on('close', () => finish({error: 'ECLOSED'}));
  };

  void control.stopped.then(() => (stopping = true));
  await new Promise<void>(resolve => {
    const tick = (): void => {
      if (stopping) {
        r.startSpanMs = Math.round(performance.now() - start);
        resolve();
        return;
      }
      const due = Math.floor(((performance.now() - start) * a.rate) / 1000) + 1;
      // at most MAX_IN_FLIGHT open at once: on a machine too busy to keep up, the client waits
      // instead of running out of file descriptors (EMFILE is the client's failure, not skl's)
      while (r.attempted < due && inFlight < MAX_IN_FLIGHT) connect(a.ports[r.attempted % a.ports.length]);
      setTimeout(tick, 1);
    };
    tick();
  });
  if (inFlight > 0) await new Promise<void>(resolve => (onIdle = resolve));
  r.elapsedMs = Math.round(performance.now() - start);
  r.slowestMs = Math.round(r.slowestMs);
  return r;
}

async function main(): Promise<void> {
  let args: Args;
  try {
    args = parse(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`load-client: ${(err as Error).message}\n`);
    process.exit(2);
  }
  const print = (value: unknown): void => void process.stdout.write(`${JSON.stringify(value)}\n`);
  let stop!: () => void;
  let marker: () => void = () => undefined;
  const control: LoadControl = {
    onMark: print,
    onDrained: mark => print({event: 'drained', mark}),
    stopped: new Promise<void>(resolve => (stop = resolve)),
    setMarker: m => (marker = m),
  };
  createInterface({input: process.stdin})
    .on('line', line => {
      if (line.trim() === 'mark') marker();
      else if (line.trim() === 'stop') stop();
    })
    .on('close', () => stop());
  print({event: 'started'});
  const result = await run(args, control);
  print(result);
  process.exit(0);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch(err => {
    process.stderr.write(`load-client: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
