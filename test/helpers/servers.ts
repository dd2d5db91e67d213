// Start the toy server (toy-server.ts) inside a test namespace and follow its events live.
import {createInterface} from 'node:readline';
import {fileURLToPath} from 'node:url';
import type {Netns} from './netns.js';
import {stopChild} from './netns.js';

export const TOY_SERVER_SCRIPT = fileURLToPath(new URL('./toy-server.js', import.meta.url));

export interface ToyServerOptions {
  proto: 'tcp' | 'udp';
  host: string;
  /** 0 or omitted = an ephemeral port. */
  port?: number;
  ipv6only?: boolean;
  /** How long to wait for the "listening" event. Default 10 s. */
  startTimeoutMs?: number;
}

/** One line of the server's stdout. `event` is listening | accepted | datagram. */
export interface ServerEvent {
  event: string;
  pid?: number;
  port?: number;
  address?: string;
  localPort?: number;
  localAddress?: string;
  remotePort?: number;
  remoteAddress?: string;
  [key: string]: unknown;
}

export interface ToyServer {
  /** PID of the node server process itself (nsenter execs it, so it is the child's pid). */
  readonly pid: number;
  /** The port it is bound to (resolved when an ephemeral port was asked for). */
  readonly port: number;
  readonly address: string;
  /** Every event printed so far, filled as they arrive. */
  readonly events: ServerEvent[];
  /** Captured stderr, for failure messages. */
  stderr(): string;
  /** Resolve with the first event (already seen or future) matching `pred`; reject after timeoutMs. */
  waitFor(pred: (e: ServerEvent) => boolean, timeoutMs?: number): Promise<ServerEvent>;
  /** SIGTERM, SIGKILL after a grace period; resolves once it has exited. Idempotent. */
  stop(): Promise<void>;
}

export async function startToyServer(ns: Netns, opts: ToyServerOptions): Promise<ToyServer> {
  const args = [TOY_SERVER_SCRIPT, '--proto', opts.proto, '--host', opts.host, '--port', String(opts.port ?? 0)];
  if (opts.ipv6only === true) args.push('--ipv6only');
  // The server exits when this pipe closes: it cannot outlive the test process, even a SIGKILLed one.
  args.push('--exit-on-stdin-eof');
  const child = ns.spawn(process.execPath, args, {stdio: ['pipe', 'pipe', 'pipe']});

  const events: ServerEvent[] = [];
  const waiters = new Set<{pred: (e: ServerEvent) => boolean; resolve: (e: ServerEvent) => void}>();
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  createInterface({input: child.stdout!}).on('line', line => {
    let event: ServerEvent;
    try {
      event = JSON.parse(line) as ServerEvent;
    } catch {
      stderr += `[unparsable stdout] ${line}\n`;
      return;
    }
    events.push(event);
    for (const w of waiters) {
      if (w.pred(event)) {
        waiters.delete(w);
        w.resolve(event);
      }
    }
  });

  let exited: {code: number | null; signal: NodeJS.Signals | null} | undefined;
  const exitListeners = new Set<() => void>();
  child.once('exit', (code, signal) => {
    exited = {code, signal};
    for (const l of exitListeners) l();
  });

  const waitFor = (pred: (e: ServerEvent) => boolean, timeoutMs = 30_000): Promise<ServerEvent> => {
    const seen = events.find(pred);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const cleanup = (): void => {
        clearTimeout(timer);
        waiters.delete(waiter);
        exitListeners.delete(onExit);
      };
      const waiter = {
        pred,
        resolve: (e: ServerEvent) => {
          cleanup();
          resolve(e);
        },
      };
      const fail = (why: string): void => {
        cleanup();
        reject(new Error(`toy server (${opts.proto} ${opts.host}): ${why}; events ${JSON.stringify(events)}; stderr: ${stderr.trim()}`));
      };
      const onExit = (): void => fail(`exited (${JSON.stringify(exited)}) before the awaited event`);
      const timer = setTimeout(() => fail(`no matching event within ${timeoutMs} ms`), timeoutMs);
      waiters.add(waiter);
      if (exited !== undefined) onExit();
      else exitListeners.add(onExit);
    });
  };

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => (stopping ??= stopChild(child));

  let listening: ServerEvent;
  try {
    listening = await waitFor(e => e.event === 'listening', opts.startTimeoutMs ?? 10_000);
  } catch (err) {
    await stop();
    throw err;
  }
  const pid = listening.pid;
  if (pid === undefined || pid !== child.pid) {
    await stop();
    throw new Error(`toy server reported pid ${listening.pid} but the spawned child is ${child.pid} (nsenter did not exec?)`);
  }

  return {
    pid,
    port: listening.port ?? 0,
    address: listening.address ?? opts.host,
    events,
    stderr: () => stderr,
    waitFor,
    stop,
  };
}
