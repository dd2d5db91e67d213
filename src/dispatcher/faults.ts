/**
 * Crash points for fault-injection tests: with SKL_TEST_CRASH_AT=<point>, skl SIGKILLs itself
 * there, so tests can prove the next invocation repairs whatever was half made.
 */
export type CrashPoint =
  | 'create:maps-pinned'
  | 'create:link-pinned'
  | 'create:published'
  | 'attach:pending'
  | 'attach:socket-stored'
  | 'attach:ports-written'
  | 'detach:pending'
  | 'detach:bindings-removed'
  | 'detach:all-pending'
  | 'detach:renamed'
  | 'upgrade:built'
  | 'upgrade:swapped'
  | 'upgrade:link-moved'
  | 'upgrade:old-renamed';

export function crashPoint(point: CrashPoint): void {
  if (process.env.SKL_TEST_CRASH_AT === point) process.kill(process.pid, 'SIGKILL');
}
