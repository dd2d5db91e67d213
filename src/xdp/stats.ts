/** Pure arithmetic of the XDP counter: deltas, rates, the running session and its summary. */

/** Cumulative counts read from the kernel (summed over CPUs). */
export interface Counts {
  packets: bigint;
  bytes: bigint;
}

/** One line of the live output. Numbers are plain numbers (exact below 2^53). */
export interface Sample {
  type: 'sample';
  interface: string;
  mode: string;
  /** ISO 8601, when the counters were read. */
  timestamp: string;
  /** Seconds since the program was attached. */
  elapsed: number;
  /** Totals since attach. */
  packets: number;
  bytes: number;
  /** Since the previous sample. */
  delta: number;
  bytesDelta: number;
  /** delta / seconds since the previous sample. */
  pps: number;
  bytesPerSecond: number;
}

export type StopReason = 'signal' | 'count' | 'detached';

export interface Summary {
  type: 'summary';
  interface: string;
  mode: string;
  timestamp: string;
  /** Seconds between attach and the final read. */
  duration: number;
  packets: number;
  bytes: number;
  /** Average over the whole run. */
  pps: number;
  bytesPerSecond: number;
  samples: number;
  reason: StopReason;
}

const ZERO: Counts = {packets: 0n, bytes: 0n};

/** a - b, never negative (a counter cannot go backwards; guard against a reset map). */
function minus(a: bigint, b: bigint): number {
  return a > b ? Number(a - b) : 0;
}

/** Per-second rate, 0 for an empty interval. */
export function perSecond(n: number, seconds: number): number {
  return seconds > 0 ? n / seconds : 0;
}

/**
 * A counting session: fed cumulative counts with monotonic times (ms), it yields samples (delta
 * and rate since the previous one) and a summary.
 */
export class CounterSession {
  private prev: Counts;
  private prevMs: number;
  private samples = 0;

  constructor(
    readonly iface: string,
    readonly mode: string,
    /** Monotonic time of attach, ms. */
    private readonly startMs: number,
    /** Counts at attach (normally zero: the map is fresh). */
    private readonly base: Counts = ZERO,
  ) {
    this.prev = base;
    this.prevMs = startMs;
  }

  sample(now: Counts, nowMs: number, wallClock: Date = new Date()): Sample {
    const seconds = (nowMs - this.prevMs) / 1000;
    const delta = minus(now.packets, this.prev.packets);
    const bytesDelta = minus(now.bytes, this.prev.bytes);
    this.prev = now;
    this.prevMs = nowMs;
    this.samples += 1;
    return {
      type: 'sample',
      interface: this.iface,
      mode: this.mode,
      timestamp: wallClock.toISOString(),
      elapsed: round3((nowMs - this.startMs) / 1000),
      packets: minus(now.packets, this.base.packets),
      bytes: minus(now.bytes, this.base.bytes),
      delta,
      bytesDelta,
      pps: round3(perSecond(delta, seconds)),
      bytesPerSecond: round3(perSecond(bytesDelta, seconds)),
    };
  }

  summary(now: Counts, nowMs: number, reason: StopReason, wallClock: Date = new Date()): Summary {
    const duration = (nowMs - this.startMs) / 1000;
    const packets = minus(now.packets, this.base.packets);
    const bytes = minus(now.bytes, this.base.bytes);
    return {
      type: 'summary',
      interface: this.iface,
      mode: this.mode,
      timestamp: wallClock.toISOString(),
      duration: round3(duration),
      packets,
      bytes,
      pps: round3(perSecond(packets, duration)),
      bytesPerSecond: round3(perSecond(bytes, duration)),
      samples: this.samples,
      reason,
    };
  }
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}
