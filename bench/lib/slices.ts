/** Time slices that alternate between ports, for the bench's clients (one process, interleaved rounds). */
import {parseArgs} from 'node:util';
import {roundOrder} from './stats.js';

/**
 * A client's command line: the options every slice client takes (--host, --ports, --rounds,
 * --slice-ms, --warmup-ms, --parallel; `sliceMs` is its default slice) and its own `extra` ones
 * (name → default), as strings.
 */
export function sliceClientArgs<E extends string>(
  sliceMs: string,
  extra: Record<E, string>,
): {host: string; ports: number[]; rounds: number; sliceMs: number; warmupMs: number; parallel: number; extra: Record<E, string>} {
  const defaults: Record<string, string> = {host: '127.0.0.1', rounds: '6', 'slice-ms': sliceMs, 'warmup-ms': '300', parallel: '8', ...extra};
  const options = Object.fromEntries([...Object.keys(defaults), 'ports'].map((k) => [k, k in defaults ? {type: 'string' as const, default: defaults[k]} : {type: 'string' as const}]));
  const v = parseArgs({options}).values as Record<string, string | undefined>;
  return {
    host: v.host!,
    ports: v.ports!.split(',').map(Number),
    rounds: Number(v.rounds),
    sliceMs: Number(v['slice-ms']),
    warmupMs: Number(v['warmup-ms']),
    parallel: Number(v.parallel),
    extra: Object.fromEntries(Object.keys(extra).map((k) => [k, v[k]!])) as Record<E, string>,
  };
}

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
