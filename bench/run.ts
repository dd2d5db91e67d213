/**
 * `npm run bench` (as root): every benchmark of issue 5 in one go, inside throwaway network
 * namespaces; prints a table, writes bench/results.json and regenerates BENCHMARKS.md.
 *
 *   node dist/bench/run.js [--quick] [--only prog,e2e,control,memory,xdp,follow,replies,matrix] [--no-markdown]
 *
 * Benchmarks print numbers; they never fail because of a timing (the exit code is non-zero only
 * when a section could not run at all).
 */
import {execFileSync} from 'node:child_process';
import {realpathSync, rmSync, writeFileSync} from 'node:fs';
import os from 'node:os';
import {parseArgs} from 'node:util';
import {libbpfVersion} from '../src/bpf/version.js';
import {benchE2e, type E2eResult} from './e2e.js';
import {benchMemory, type MemoryResult} from './memory.js';
import {BenchNetns} from './lib/netns.js';
import {dist, ROOT, workerResult} from './lib/proc.js';
import type {ControlResult} from './control.js';
import type {MatrixResult} from './matrix.js';
import type {FollowBenchResult} from './follow.js';
import type {ProgBenchResult} from './prog.js';
import {renderConsole, renderMarkdown, type Results} from './report.js';
import type {XdpBenchResult} from './xdp.js';
import type {RepliesBenchResult, RepliesProgResult} from './replies.js';

const SECTIONS = ['prog', 'e2e', 'control', 'memory', 'xdp', 'follow', 'replies', 'matrix'] as const;
type Section = (typeof SECTIONS)[number];

function machine(): Results['machine'] {
  const cpus = os.cpus();
  let libbpf = '?';
  try {
    libbpf = libbpfVersion();
    // the full version, from the library's file name (libbpf.so.1.1.2), when ldconfig knows it
    const line = execFileSync('ldconfig', ['-p'], {encoding: 'utf8'}).split('\n').find((l) => /libbpf\.so\.1 /.test(l));
    const file = line?.split('=> ')[1]?.trim();
    const full = file ? /libbpf\.so\.(\d+\.\d+\.\d+)$/.exec(realpathSync(file))?.[1] : undefined;
    if (full) libbpf = full;
  } catch {
    // what libbpf says, or '?'
  }
  let distro = '';
  try {
    distro = /^PRETTY_NAME="?([^"\n]*)/m.exec(execFileSync('cat', ['/etc/os-release'], {encoding: 'utf8'}))?.[1] ?? '';
  } catch {
    // none
  }
  return {
    cpu: cpus[0]?.model ?? '?',
    cpus: cpus.length,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: os.release(),
    distro,
    node: process.version,
    libbpf,
    loadAverageBefore: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

async function inNetns<T>(script: string, args: string[], what: string): Promise<T> {
  const ns = BenchNetns.create();
  try {
    // its stderr is the bench's (progress, problems); stdout carries the result
    const child = ns.spawn(process.execPath, [dist(script), ...args], {stdio: ['ignore', 'pipe', 'inherit']});
    return await workerResult<T>(child, what);
  } finally {
    await ns.destroy();
  }
}

async function main(): Promise<void> {
  const {values} = parseArgs({
    options: {
      quick: {type: 'boolean', default: false},
      only: {type: 'string'},
      'no-markdown': {type: 'boolean', default: false},
    },
  });
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench: run as root (it loads BPF programs and creates network namespaces): sudo npm run bench\n');
    process.exit(1);
  }
  // skl's lock file, private to this run: other skl processes on the machine (tests, say) cannot
  // make the measured commands wait, and the bench's cannot make them wait either
  const lockFile = `/run/skl-bench-${process.pid}.lock`;
  process.env.SKL_LOCK_FILE = lockFile;
  process.on('exit', () => rmSync(lockFile, {force: true}));
  const only = new Set((values.only?.split(',') ?? SECTIONS) as Section[]);
  for (const s of only) if (!SECTIONS.includes(s)) throw new Error(`--only: unknown section ${s} (${SECTIONS.join(', ')})`);
  const quick = values.quick;
  const started = Date.now();
  const results: Results = {date: new Date().toISOString(), quick, machine: machine(), errors: []};
  // NODE_EXTRA_CA_CERTS makes Node.js 20 read and parse every certificate of the file at start (it
  // took `node -e 0` from 26 to 69 ms of CPU time on the development VM, whose environment sets it;
  // Node.js ≥22 reads the file on first use): everything the bench runs runs without it, so that a
  // start-up ratio is skl's own cost against Node's, and the control section times `node -e 0`
  // with it too, to show what it costs here
  const extraCaCerts = process.env.NODE_EXTRA_CA_CERTS;
  delete process.env.NODE_EXTRA_CA_CERTS;
  if (extraCaCerts !== undefined) results.machine.nodeExtraCaCerts = extraCaCerts;
  const step = async <K extends Section>(name: K, run: () => Promise<NonNullable<Results[K]>>): Promise<void> => {
    if (!only.has(name)) return;
    const t0 = Date.now();
    process.stderr.write(`bench: ${name}…\n`);
    try {
      (results as unknown as Record<string, unknown>)[name] = await run();
      process.stderr.write(`bench: ${name} done in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
    } catch (error) {
      const message = (error as Error).message;
      results.errors.push({section: name, message});
      process.stderr.write(`bench: ${name} FAILED: ${message}\n`);
    }
  };

  await step('prog', () =>
    inNetns<ProgBenchResult>('prog.js', quick ? ['--rounds', '5', '--repeat', '200000'] : ['--rounds', '15', '--repeat', '500000'], 'program cost'),
  );
  await step('e2e', (): Promise<E2eResult> => benchE2e(quick ? {rounds: 6, sliceMs: 250} : {rounds: 30, sliceMs: 250}));
  await step('control', () =>
    inNetns<ControlResult>(
      'control.js',
      [...(quick ? ['--rounds', '5', '--ports-rounds', '2'] : ['--rounds', '25', '--ports-rounds', '5']), ...(extraCaCerts ? ['--extra-ca-certs', extraCaCerts] : [])],
      'control plane',
    ),
  );
  await step('memory', (): Promise<MemoryResult> => benchMemory());
  await step('xdp', async (): Promise<XdpBenchResult> => {
    const {benchXdp} = await import('./xdp.js');
    return benchXdp(quick ? {rounds: 5, repeat: 500_000, floodSeconds: 1} : {});
  });

  await step('follow', async (): Promise<FollowBenchResult> => {
    const {benchFollow} = await import('./follow.js');
    return benchFollow(quick ? {rounds: 5, perRound: 5_000, connRounds: 6, datagrams: 500} : {});
  });

  await step('replies', async (): Promise<RepliesBenchResult> => {
    const prog = await inNetns<RepliesProgResult>('replies.js', quick ? ['--rounds', '5', '--repeat', '200000'] : ['--rounds', '15', '--repeat', '500000'], 'UDP replies program cost');
    const {benchRepliesE2e} = await import('./replies.js');
    try {
      return {prog, e2e: await benchRepliesE2e(quick ? {rounds: 4, sliceMs: 400} : {rounds: 12, sliceMs: 500})};
    } catch (error) {
      return {prog, e2eSkipped: (error as Error).message};
    }
  });

  await step('matrix', () => inNetns<MatrixResult>('matrix.js', quick ? ['--rounds', '4'] : ['--rounds', '12'], 'kernel and Node.js matrix'));

  results.machine.loadAverageAfter = os.loadavg().map((x) => Math.round(x * 100) / 100);
  results.seconds = Math.round((Date.now() - started) / 100) / 10;
  writeFileSync(`${ROOT}bench/results.json`, `${JSON.stringify(results, null, 1)}\n`);
  process.stdout.write(`${renderConsole(results)}\n`);
  if (!values['no-markdown'] && only.size === SECTIONS.length) {
    writeFileSync(`${ROOT}BENCHMARKS.md`, renderMarkdown(results));
    process.stderr.write('bench: wrote bench/results.json and BENCHMARKS.md\n');
  } else {
    process.stderr.write('bench: wrote bench/results.json (BENCHMARKS.md is only regenerated by a full run)\n');
  }
  if (results.errors.length) process.exitCode = 1;
}

main().catch((error) => {
  process.stderr.write(`bench: ${(error as Error).stack ?? error}\n`);
  process.exit(1);
});
