/** Child processes for the benchmarks: timed runs, servers that announce readiness, workers that print JSON. */
import {spawnSync, type ChildProcess} from 'node:child_process';
import {readFileSync, rmSync} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {createInterface} from 'node:readline';
import {fileURLToPath} from 'node:url';

export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const SKL = fileURLToPath(new URL('../../../bin/run.js', import.meta.url));
export const dist = (name: string): string => fileURLToPath(new URL(`../${name}`, import.meta.url));

const TIMER = 'TIMEFORMAT="%3R %3U %3S"; { time "$@" >/dev/null 2>"$SKL_BENCH_ERR"; rc=$?; } 2>&1; exit $rc';

/**
 * One run of a command, timed by bash's `time` (so bash's own start-up is not counted): wall time
 * and CPU time (user + system, the command and its children), ms. Throws unless it exits 0.
 * `env` is added to the bench's environment.
 */
export function timed(cmd: string, args: readonly string[], env: NodeJS.ProcessEnv = {}): {ms: number; cpuMs: number} {
  const errFile = path.join(os.tmpdir(), `skl-bench-${process.pid}.err`);
  try {
    const r = spawnSync('bash', ['-c', TIMER, 'bash', cmd, ...args], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {...process.env, ...env, SKL_BENCH_ERR: errFile},
      timeout: 60_000,
    });
    if (r.status !== 0) {
      let err = '';
      try {
        err = readFileSync(errFile, 'utf8').trim();
      } catch {
        // none
      }
      throw new Error(`${[cmd, ...args].join(' ')}: exit ${r.status ?? r.signal}: ${err}`);
    }
    const [real, user, sys] = r.stdout.trim().split(/\s+/).map(Number);
    return {ms: real * 1000, cpuMs: (user + sys) * 1000};
  } finally {
    rmSync(errFile, {force: true});
  }
}

/** Start a process and wait for the first stdout line that is a JSON object matching `ready`. */
export function startAndWait<T>(
  child: ChildProcess,
  ready: (event: Record<string, unknown>) => T | undefined,
  what: string,
  timeoutMs = 15_000,
): Promise<T> {
  return new Promise((resolve, reject) => {
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => fail(new Error(`${what}: not ready after ${timeoutMs} ms${stderr ? `: ${stderr.trim()}` : ''}`)), timeoutMs);
    const rl = createInterface({input: child.stdout!});
    const onExit = (code: number | null): void => fail(new Error(`${what}: exited (${code}) before it was ready${stderr ? `: ${stderr.trim()}` : ''}`));
    const fail = (e: Error): void => {
      clearTimeout(timer);
      child.off('exit', onExit);
      rl.close();
      reject(e);
    };
    child.once('exit', onExit);
    rl.on('line', (line) => {
      let ev: Record<string, unknown>;
      try {
        ev = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      const v = ready(ev);
      if (v === undefined) return;
      clearTimeout(timer);
      child.off('exit', onExit);
      rl.close();
      resolve(v);
    });
  });
}

/** Wait for a bench worker (a dist/bench/*.js script printing one JSON line at the end) and parse its output. */
export function workerResult<T>(child: ChildProcess, what: string, timeoutMs = 600_000): Promise<T> {
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (s: string) => (out += s));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`${what}: exit ${code ?? signal}`));
      const last = out.trim().split('\n').pop() ?? '';
      try {
        resolve(JSON.parse(last) as T);
      } catch {
        reject(new Error(`${what}: no JSON result (${last.slice(0, 200)})`));
      }
    });
  });
}

/** Peak resident set size (VmHWM) of a live process, in KiB. */
export function vmHwmKiB(pid: number): number {
  const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmHWM for pid ${pid}`);
  return Number(m[1]);
}
