/** Time slices that alternate between ports, for the bench's clients (one process, interleaved rounds). */
import {roundOrder} from './stats.js';

export interface SliceCounts {
  ok: number;
  ms: number;
}

/**
 * A warm-up slice per port, then `rounds` rounds of one slice per port, in an order that rotates
 * between rounds. `slice(port, ms)` runs one and returns its counts (ok, failures, ...); each slice
 * gets its rate (ok per second). Returns the slices and, per port, what the warm-up attempted.
 */
export async function alternate<C extends SliceCounts>(
  ports: readonly number[],
  o: {rounds: number; sliceMs: number; warmupMs: number; attempts: (c: C) => number},
  slice: (port: number, ms: number) => Promise<C>,
): Promise<{slices: (C & {port: number; round: number; rate: number})[]; warmup: Record<string, number>}> {
  const slices: (C & {port: number; round: number; rate: number})[] = [];
  const warmup: Record<string, number> = {};
  for (const p of ports) warmup[p] = o.attempts(await slice(p, o.warmupMs));
  for (let r = 0; r < o.rounds; r++) {
    for (const i of roundOrder(ports.length, r)) {
      const s = await slice(ports[i], o.sliceMs);
      slices.push({port: ports[i], round: r, ...s, rate: (s.ok * 1000) / s.ms});
    }
  }
  return {slices, warmup};
}
