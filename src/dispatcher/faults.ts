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
  | 'foreground:attached'
  | 'journal:incomplete'
  | 'ports:journaled'
  | 'ports:half-written'
  | 'ports:written'
  | 'replace:journaled'
  | 'replace:bindings-added'
  | 'replace:socket-swapped'
  | 'replace:record-written'
  | 'replace:bindings-removed'
  | 'detach:pending'
  | 'detach:bindings-removed'
  | 'detach:all-pending'
  | 'detach:renamed'
  | 'upgrade:built'
  | 'upgrade:swapped'
  | 'upgrade:link-moved'
  | 'upgrade:old-renamed'
  | 'upgrade:published'
  | 'follow:entries'
  | 'follow:cgroup-listed'
  | 'follow:linked'
  | 'follow:seeded'
  | 'apply:recorded'
  | 'apply:sockets-replaced'
  | 'apply:bindings-added'
  | 'apply:service-added'
  | 'apply:bindings-removed'
  | 'apply:service-removed'
  | 'apply:applied';

export function crashPoint(point: CrashPoint): void {
  if (process.env.SKL_TEST_CRASH_AT === point) process.kill(process.pid, 'SIGKILL');
}
