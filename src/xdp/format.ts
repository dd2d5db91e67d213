/** Plain-text formatting of counts and rates (no colour; the command adds it). */

/** 1234567 → "1,234,567". (Not Intl.NumberFormat: loading ICU's number formats took ≈18 ms of the command's start.) */
export function formatCount(n: number): string {
  return String(Math.round(n)).replace(/\B(?=(\d{3})+$)/g, ',');
}

function scaled(n: number, units: readonly string[], base: number): string {
  let i = 0;
  let v = n;
  while (Math.abs(v) >= base && i < units.length - 1) {
    v /= base;
    i += 1;
  }
  const digits = i === 0 ? 0 : v >= 100 ? 0 : v >= 10 ? 1 : 2;
  return `${v.toFixed(digits)} ${units[i]}`;
}

/** 98123 → "98.1 kB" (SI). */
export function formatBytes(n: number): string {
  return scaled(n, ['B', 'kB', 'MB', 'GB', 'TB', 'PB'], 1000);
}

/** Bytes per second as a bit rate: 12500 → "100 kbit/s". */
export function formatBitRate(bytesPerSecond: number): string {
  return scaled(bytesPerSecond * 8, ['bit/s', 'kbit/s', 'Mbit/s', 'Gbit/s', 'Tbit/s'], 1000);
}

/** 3.25 → "3.25 s", 125.5 → "2 min 5.5 s". */
export function formatDuration(seconds: number): string {
  if (seconds < 60) return `${seconds.toFixed(2)} s`;
  const m = Math.floor(seconds / 60);
  const s = seconds - m * 60;
  if (m < 60) return `${m} min ${s.toFixed(1)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min ${Math.round(s)} s`;
}

/** Local wall-clock time HH:MM:SS. */
export function formatClock(d: Date): string {
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((x) => String(x).padStart(2, '0')).join(':');
}
