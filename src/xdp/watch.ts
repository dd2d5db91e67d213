/** The sampling loop of the counter: a line every interval until aborted, --count, or detached. */
import {CounterSession, type Counts, type Sample, type StopReason, type Summary} from './stats.js';

/** What the loop needs of a counter (XdpCounter, or a fake in tests). */
export interface CounterSource {
  readonly ifname: string;
  readonly mode: string;
  read(): Counts;
  attached(): boolean;
}

export interface WatchOptions {
  intervalMs: number;
  /** Stop after this many samples. */
  count?: number;
  /** Stop (with reason "signal") when aborted; the summary is still produced. */
  signal?: AbortSignal;
  onSample: (sample: Sample) => void;
  /** Monotonic clock in ms (default performance.now). */
  now?: () => number;
  /** Time of attach on `now`'s clock (default: when watch is called). */
  startMs?: number;
}

/**
 * Sample `counter` on a fixed grid (start + k × interval; missed ticks are skipped, never bunched)
 * and return the summary, read after the last sample. Does not close the counter.
 */
export async function watch(counter: CounterSource, opts: WatchOptions): Promise<Summary> {
  const now = opts.now ?? (() => performance.now());
  const t0 = opts.startMs ?? now();
  const session = new CounterSession(counter.ifname, counter.mode, t0);
  const signal = opts.signal;
  let stop: StopReason | undefined = signal?.aborted ? 'signal' : undefined;
  let samples = 0;
  let tick = 1;
  while (stop === undefined) {
    const t = now();
    while (t0 + tick * opts.intervalMs <= t) tick += 1;
    // Timers may fire a little early against the monotonic clock: wait out the remainder.
    for (let left = t0 + tick * opts.intervalMs - t; left > 0 && !signal?.aborted; left = t0 + tick * opts.intervalMs - now()) {
      await sleep(left, signal);
    }
    if (signal?.aborted) {
      stop = 'signal';
      break;
    }
    if (!counter.attached()) {
      stop = 'detached';
      break;
    }
    opts.onSample(session.sample(counter.read(), now()));
    samples += 1;
    tick += 1;
    if (opts.count !== undefined && samples >= opts.count) stop = 'count';
  }
  return session.summary(counter.read(), now(), stop);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, Math.max(1, Math.ceil(ms)));
    signal?.addEventListener('abort', done, {once: true});
  });
}
