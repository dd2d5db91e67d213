// A cgroup v2 directory of a test's own (under the cgroup2 mount found in /proc/self/mountinfo), for
// following services across restarts: its processes are killed and it is removed at teardown.
import type {ExecutionContext} from 'ava';
import {existsSync, mkdirSync, readFileSync, rmdirSync, statSync} from 'node:fs';
import {cgroup2Mount} from '../../src/sys/mounts.js';

export interface TestCgroup {
  dir: string;
  /** below the cgroup2 mount */
  path: string;
  ino: number;
}

let seq = 0;

export function makeCgroup(t: ExecutionContext): TestCgroup {
  const mount = cgroup2Mount();
  if (!mount) throw new Error('cgroup v2 is not mounted');
  const path = `/skl-test-${process.pid}-c${seq++}`;
  const dir = `${mount}${path}`;
  mkdirSync(dir);
  t.teardown(async () => {
    for (let i = 0; i < 50 && existsSync(dir); i++) {
      for (const p of readFileSync(`${dir}/cgroup.procs`, 'utf8').split('\n').filter(Boolean).map(Number)) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          // gone
        }
      }
      try {
        rmdirSync(dir);
      } catch {
        await new Promise(r => setTimeout(r, 100));
      }
    }
  });
  return {dir, path, ino: statSync(dir).ino};
}

/** argv that runs `argv` inside the cgroup directory `dir` (the shell moves itself there, then becomes the command: same pid). */
export const inCgroup = (dir: string, argv: readonly string[]): string[] => ['sh', '-c', `echo $$ > ${dir}/cgroup.procs && exec "$0" "$@"`, ...argv];
