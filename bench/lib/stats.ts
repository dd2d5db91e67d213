/** Summary statistics for benchmark samples: median and spread (min–max, interquartile range). */

export interface Summary {
  n: number;
  median: number;
  min: number;
  max: number;
  q1: number;
  q3: number;
}

/** Linear-interpolated quantile of sorted values. */
function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

export function summarize(samples: number[]): Summary {
  const s = [...samples].sort((a, b) => a - b);
  return {n: s.length, median: quantile(s, 0.5), min: s[0] ?? NaN, max: s[s.length - 1] ?? NaN, q1: quantile(s, 0.25), q3: quantile(s, 0.75)};
}

export const median = (samples: number[]): number => summarize(samples).median;

/**
 * Ratio of two interleaved series: the median of the per-round ratios (round i of `a` was measured
 * next to round i of `b`, so slow phases of the machine cancel out), with its min–max.
 */
export function pairedRatio(a: number[], b: number[]): Summary {
  const n = Math.min(a.length, b.length);
  const r: number[] = [];
  for (let i = 0; i < n; i++) r.push(a[i] / b[i]);
  return summarize(r);
}

/** A rotation of 0..n-1 that changes every round, so no variant always runs first or last. */
export function roundOrder(n: number, round: number): number[] {
  const order = Array.from({length: n}, (_, i) => (i + round) % n);
  return round % 2 ? order.reverse() : order;
}

export function fmt(x: number, digits = 1): string {
  if (!Number.isFinite(x)) return '–';
  return x.toLocaleString('en-US', {minimumFractionDigits: digits, maximumFractionDigits: digits});
}

/** "12.3 (11.9–13.0)": median and min–max. */
export function fmtSummary(s: Summary, digits = 1): string {
  return `${fmt(s.median, digits)} (${fmt(s.min, digits)}–${fmt(s.max, digits)})`;
}
