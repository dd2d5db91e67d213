/** Rendering helpers shared by commands (chalk honours NO_COLOR / FORCE_COLOR). */
import {chalk} from './color.js';

/** A plain text table: header row + rows, columns padded to width. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => visibleLength(r[i] ?? ''))));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c + ' '.repeat(widths[i] - visibleLength(c))))
      .join('  ')
      .trimEnd();
  return [chalk.bold(line(header)), ...rows.map(line)].join('\n');
}

// eslint-disable-next-line no-control-regex
const ANSI = /\u001b\[[0-9;]*m/g;
const visibleLength = (s: string): number => s.replace(ANSI, '').length;

/** Shorten a long port list for a table cell. */
export function ellipsize(text: string, max = 48): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

export const ok = (s: string): string => chalk.green(s);
export const bad = (s: string): string => chalk.red(s);
export const dim = (s: string): string => chalk.dim(s);
export const note = (s: string): string => chalk.yellow(s);
