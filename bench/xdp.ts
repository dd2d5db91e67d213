/**
 * XDP counter benchmarks (numbers, never assertions):
 *
 * 1. Per-packet cost via BPF_PROG_TEST_RUN of skl's counter (per-CPU array, plain adds) against an
 *    empty XDP program and against the seed's design (shared ARRAY + atomic add): the three are run
 *    interleaved for several rounds and the median is kept. Reported both as the kernel's own
 *    average (integer ns, excludes the syscall) and as wall-clock time / repeat (fractional ns).
 * 2. The same with one test-runner per CPU at once, all updating one map (contention).
 * 3. Flood on a veth pair between two throwaway namespaces: the peer sends UDP frames to a
 *    link-local address as fast as it can (AF_PACKET + sendmmsg, bench/xdp-flood.ts); we report the
 *    rate received with no program / the empty program / the seed / skl's counter attached (native
 *    mode), and whether the counter's count equals the frames sent.
 *
 * `node dist/bench/xdp.js [--rounds N] [--repeat N] [--flood-seconds S] [--no-flood] [--no-contended] [--json]`
 * (as root), or
 * import benchXdp() from bench/run.ts.
 */
import {spawn, spawnSync} from 'node:child_process';
import {randomBytes} from 'node:crypto';
import {readFileSync} from 'node:fs';
import {fileURLToPath} from 'node:url';
import {BpfObject, mapInfoByFd, XDP_MODE_FLAGS, type Link, type Program} from '../src/bpf/index.js';
import {ifindexOf, Netns} from '../src/sys/index.js';
import {XdpCounter} from '../src/xdp/index.js';
import {udpFrame} from './xdp-flood.js';

const ROOT = new URL('../../', import.meta.url);
const FLOODER = fileURLToPath(new URL('xdp-flood.js', import.meta.url));
const WORKER = fileURLToPath(new URL('xdp-testrun-worker.js', import.meta.url));

export type XdpVariant = 'empty' | 'seed' | 'counter';
const OBJECTS: Record<XdpVariant, {file: string; program: string; map?: string}> = {
  empty: {file: 'bench/bpf/xdp_empty.o', program: 'xdp_empty'},
  seed: {file: 'bench/bpf/xdp_seed.o', program: 'count_packets', map: 'pkt_count'},
  counter: {file: 'bpf/xdp_count.o', program: 'xdp_count', map: 'xdp_stats'},
};

export interface TestRunCost {
  /**
   * Median over rounds of this process's CPU time (user + system, getrusage) / repeat: the cost of
   * one run including the amortised syscall, and unlike wall-clock time not inflated when other
   * work on the machine preempts us.
   */
  nsPerPacket: number;
  /** Minimum over rounds of the same. */
  minNsPerPacket: number;
  /** Median over rounds of wall-clock ns / repeat (inflated by preemption on a busy machine). */
  wallNsPerPacket: number;
  /** Median over rounds of the kernel's reported average (integer ns). */
  kernelNs: number;
  rounds: number[];
}

export interface XdpTestRunResult {
  repeat: number;
  rounds: number;
  frameBytes: number;
  costs: Record<XdpVariant, TestRunCost>;
  /** counter / empty and seed / empty, from the wall-clock medians. */
  counterVsEmpty: number;
  seedVsEmpty: number;
  /** The packets each counting program saw equal the test runs made (sanity check of the setup). */
  countsVerified: boolean;
}

export interface FloodRun {
  variant: 'none' | XdpVariant;
  seconds: number;
  /** Frames the flooder's sendmmsg calls accepted. */
  sent: number;
  /** Frames the receiving veth counted (rx_packets delta). */
  received: number;
  /** received / seconds. */
  pps: number;
  /** The counter's own count (variant counter only). */
  counted?: number;
  /** counted === sent (variant counter only). */
  exact?: boolean;
  drops: number;
}

export interface XdpFloodResult {
  mode: 'native';
  frameBytes: number;
  runs: FloodRun[];
}

export interface XdpBenchResult {
  testRun: XdpTestRunResult;
  contended?: XdpContendedResult;
  flood?: XdpFloodResult;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

function loadVariant(v: XdpVariant): {obj: BpfObject; prog: Program} {
  const obj = BpfObject.load(readFileSync(new URL(OBJECTS[v].file, ROOT)), {name: OBJECTS[v].file});
  return {obj, prog: obj.program(OBJECTS[v].program)};
}

/** Per-packet cost of the three programs via BPF_PROG_TEST_RUN, interleaved rounds, medians. */
export function benchXdpTestRun(opts: {rounds?: number; repeat?: number} = {}): XdpTestRunResult {
  const rounds = opts.rounds ?? 15;
  const repeat = opts.repeat ?? 2_000_000;
  const frame = udpFrame('02:00:00:00:00:01', '02:00:00:00:00:02', '169.254.1.2', '169.254.1.1', 18);
  const variants: XdpVariant[] = ['empty', 'seed', 'counter'];
  const loaded = variants.map((v) => ({v, ...loadVariant(v)}));
  try {
    const cpu: Record<XdpVariant, number[]> = {empty: [], seed: [], counter: []};
    const wall: Record<XdpVariant, number[]> = {empty: [], seed: [], counter: []};
    const kernel: Record<XdpVariant, number[]> = {empty: [], seed: [], counter: []};
    // Warm-up, then rounds rotating the order so that none always runs first.
    for (const {prog} of loaded) prog.testRun({data: frame, repeat: Math.min(repeat, 100_000)});
    for (let r = 0; r < rounds; r++) {
      for (let k = 0; k < loaded.length; k++) {
        const {v, prog} = loaded[(r + k) % loaded.length];
        const c0 = process.cpuUsage();
        const t0 = process.hrtime.bigint();
        const res = prog.testRun({data: frame, repeat});
        const ns = Number(process.hrtime.bigint() - t0);
        const c = process.cpuUsage(c0);
        if (res.retval !== 2) throw new Error(`${v} returned ${res.retval}, not XDP_PASS`);
        cpu[v].push(((c.user + c.system) * 1000) / repeat);
        wall[v].push(ns / repeat);
        kernel[v].push(res.durationNs);
      }
    }
    const warm = Math.min(repeat, 100_000);
    const expected = BigInt(warm + rounds * repeat);
    const seedCount = loaded[1].obj.map('pkt_count').lookup(Buffer.alloc(4))?.readBigUInt64LE(0);
    const counterCount = loaded[2].obj.map('xdp_stats').sumPerCpuU64(Buffer.alloc(4))?.[0];
    const costs = Object.fromEntries(
      variants.map((v) => [
        v,
        {
          nsPerPacket: round2(median(cpu[v])),
          minNsPerPacket: round2(Math.min(...cpu[v])),
          wallNsPerPacket: round2(median(wall[v])),
          kernelNs: median(kernel[v]),
          rounds: cpu[v].map(round2),
        },
      ]),
    ) as Record<XdpVariant, TestRunCost>;
    return {
      repeat,
      rounds,
      frameBytes: frame.length,
      costs,
      counterVsEmpty: round2(costs.counter.nsPerPacket / costs.empty.nsPerPacket),
      seedVsEmpty: round2(costs.seed.nsPerPacket / costs.empty.nsPerPacket),
      countsVerified: seedCount === expected && counterCount === expected,
    };
  } finally {
    for (const {obj} of loaded) obj.close();
  }
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}

// ---------- contended: every CPU test-runs the same program (and map) at once ----------

export interface ContendedCost {
  /** Parallel test-runners, one per CPU (taskset when available). */
  cpus: number;
  /** Median over all runners' rounds of CPU time (user + system) / repeat. */
  nsPerPacket: number;
  /** The shared map holds exactly the number of runs made by all runners. */
  countsVerified?: boolean;
}

export interface XdpContendedResult {
  repeat: number;
  rounds: number;
  costs: Record<XdpVariant, ContendedCost>;
  counterVsEmpty: number;
  seedVsEmpty: number;
}

async function contendedVariant(v: XdpVariant, cpus: number, repeat: number, rounds: number): Promise<ContendedCost> {
  const {obj} = loadVariant(v);
  try {
    const spec = OBJECTS[v];
    const mapId = spec.map ? mapInfoByFd(obj.map(spec.map).fd).id : 0;
    const objPath = fileURLToPath(new URL(spec.file, ROOT));
    const args = [WORKER, objPath, spec.program, spec.map ?? '-', String(mapId), String(repeat), String(rounds)];
    const taskset = spawnSync('taskset', ['--version']).status === 0;
    const children = Array.from({length: cpus}, (_, cpu) =>
      taskset ? spawn('taskset', ['-c', String(cpu), process.execPath, ...args]) : spawn(process.execPath, args),
    );
    const outputs = children.map((c) => {
      let out = '';
      c.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
      let err = '';
      c.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
      const ready = new Promise<void>((resolve, reject) => {
        const check = (): void => {
          if (out.includes('ready\n')) resolve();
        };
        c.stdout.on('data', check);
        c.on('exit', (code) => reject(new Error(`test-run worker exited (${code}): ${err.trim()}`)));
      });
      const done = new Promise<{ns: number[]; runs: number}>((resolve, reject) => {
        c.on('close', (code) => {
          if (code !== 0) return reject(new Error(`test-run worker failed (${code}): ${err.trim()}`));
          resolve(JSON.parse(out.trim().split('\n').pop() ?? '{}') as {ns: number[]; runs: number});
        });
      });
      done.catch(() => undefined);
      return {ready, done};
    });
    await Promise.all(outputs.map((o) => o.ready));
    for (const c of children) c.stdin.end('go\n');
    const results = await Promise.all(outputs.map((o) => o.done));
    const ns = results.flatMap((r) => r.ns);
    const runs = results.reduce((n, r) => n + r.runs, 0);
    let countsVerified: boolean | undefined;
    if (v === 'seed') countsVerified = obj.map('pkt_count').lookup(Buffer.alloc(4))?.readBigUInt64LE(0) === BigInt(runs);
    if (v === 'counter') countsVerified = obj.map('xdp_stats').sumPerCpuU64(Buffer.alloc(4))?.[0] === BigInt(runs);
    return {cpus, nsPerPacket: round2(median(ns)), countsVerified};
  } finally {
    obj.close();
  }
}

/**
 * The same programs test-run by one process per CPU at once, all updating one map: the seed's
 * shared atomic counter bounces its cache line between CPUs, skl's per-CPU counter does not.
 */
export async function benchXdpContended(opts: {rounds?: number; repeat?: number; cpus?: number} = {}): Promise<XdpContendedResult> {
  const rounds = opts.rounds ?? 9;
  const repeat = opts.repeat ?? 1_000_000;
  const cpus = opts.cpus ?? Math.max(2, availableCpus());
  const costs = {} as Record<XdpVariant, ContendedCost>;
  for (const v of ['empty', 'seed', 'counter'] as const) costs[v] = await contendedVariant(v, cpus, repeat, rounds);
  return {
    repeat,
    rounds,
    costs,
    counterVsEmpty: round2(costs.counter.nsPerPacket / costs.empty.nsPerPacket),
    seedVsEmpty: round2(costs.seed.nsPerPacket / costs.empty.nsPerPacket),
  };
}

function availableCpus(): number {
  try {
    return readFileSync('/sys/devices/system/cpu/online', 'utf8')
      .trim()
      .split(',')
      .reduce((n, range) => {
        const [a, b] = range.split('-').map(Number);
        return n + (b === undefined ? 1 : b - a + 1);
      }, 0);
  } catch {
    return 2;
  }
}

// ---------- flood on a veth pair ----------

function run(cmd: string, args: string[], timeoutMs = 30_000): string {
  const r = spawnSync(cmd, args, {encoding: 'utf8', timeout: timeoutMs});
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.error?.message ?? r.stderr.trim()}`);
  return r.stdout;
}

interface Bed {
  nsA: string;
  nsB: string;
  ifA: string;
  ifB: string;
  macA: string;
  macB: string;
  addrA: string;
  addrB: string;
}

function inNs(ns: string, cmd: string, args: string[], timeoutMs?: number): string {
  return run('nsenter', [`--net=/run/netns/${ns}`, '--', cmd, ...args], timeoutMs);
}

function createBed(): Bed {
  const tag = `${process.pid}-${randomBytes(2).toString('hex')}`;
  const nsA = `skl-bench-${tag}-a`;
  const nsB = `skl-bench-${tag}-b`;
  const ifA = `sklb${randomBytes(2).toString('hex')}a`;
  const ifB = `${ifA.slice(0, -1)}b`;
  const bed: Bed = {nsA, nsB, ifA, ifB, macA: '', macB: '', addrA: '169.254.253.1', addrB: '169.254.253.2'};
  run('ip', ['netns', 'add', nsA]);
  try {
    run('ip', ['netns', 'add', nsB]);
    inNs(nsA, 'ip', ['link', 'add', ifA, 'type', 'veth', 'peer', 'name', ifB, 'netns', nsB]);
    inNs(nsA, 'sysctl', ['-qw', `net.ipv6.conf.${ifA}.disable_ipv6=1`]);
    inNs(nsB, 'sysctl', ['-qw', `net.ipv6.conf.${ifB}.disable_ipv6=1`]);
    inNs(nsA, 'ip', ['addr', 'add', `${bed.addrA}/30`, 'dev', ifA]);
    inNs(nsB, 'ip', ['addr', 'add', `${bed.addrB}/30`, 'dev', ifB]);
    for (const [ns, dev] of [[nsA, ifA], [nsB, ifB], [nsA, 'lo'], [nsB, 'lo']]) inNs(ns, 'ip', ['link', 'set', 'dev', dev, 'up']);
    bed.macA = (JSON.parse(inNs(nsA, 'ip', ['-j', 'link', 'show', 'dev', ifA])) as [{address: string}])[0].address;
    bed.macB = (JSON.parse(inNs(nsB, 'ip', ['-j', 'link', 'show', 'dev', ifB])) as [{address: string}])[0].address;
    inNs(nsA, 'ip', ['neigh', 'replace', bed.addrB, 'lladdr', bed.macB, 'dev', ifA, 'nud', 'permanent']);
    inNs(nsB, 'ip', ['neigh', 'replace', bed.addrA, 'lladdr', bed.macA, 'dev', ifB, 'nud', 'permanent']);
    return bed;
  } catch (error) {
    destroyBed(bed);
    throw error;
  }
}

function destroyBed(bed: Bed): void {
  for (const ns of [bed.nsA, bed.nsB]) spawnSync('ip', ['netns', 'delete', ns], {timeout: 10_000});
}

function linkStats(ns: string, dev: string): {rxPackets: number; rxDropped: number; txDropped: number} {
  const [l] = JSON.parse(inNs(ns, 'ip', ['-s', '-j', 'link', 'show', 'dev', dev])) as [
    {stats64: {rx: {packets: number; dropped: number}; tx: {dropped: number}}},
  ];
  return {rxPackets: l.stats64.rx.packets, rxDropped: l.stats64.rx.dropped, txDropped: l.stats64.tx.dropped};
}

function flood(bed: Bed, seconds: number): {sent: number; seconds: number; frameBytes: number} {
  const out = inNs(
    bed.nsB,
    process.execPath,
    [FLOODER, bed.ifB, bed.macA, bed.macB, bed.addrB, bed.addrA, String(seconds)],
    (seconds + 30) * 1000,
  );
  return JSON.parse(out.trim().split('\n').pop() ?? '{}') as {sent: number; seconds: number; frameBytes: number};
}

/** Flood the veth pair with nothing, the empty program, the seed and skl's counter attached (native mode). */
export async function benchXdpFlood(opts: {seconds?: number} = {}): Promise<XdpFloodResult> {
  const seconds = opts.seconds ?? 3;
  const bed = createBed();
  const netns = Netns.open(`/run/netns/${bed.nsA}`);
  const runs: FloodRun[] = [];
  let frameBytes = 0;
  try {
    for (const variant of ['none', 'empty', 'seed', 'counter'] as const) {
      let counter: XdpCounter | undefined;
      let other: {obj: BpfObject; link: Link} | undefined;
      try {
        if (variant === 'counter') {
          counter = XdpCounter.attach({ifname: bed.ifA, netns: netns.path, mode: 'native'});
        } else if (variant !== 'none') {
          const {obj, prog} = loadVariant(variant);
          other = {obj, link: netns.run(() => prog.attachXdp(ifindexOf(bed.ifA), bed.ifA, XDP_MODE_FLAGS.native))};
        }
        const before = linkStats(bed.nsA, bed.ifA);
        const beforeB = linkStats(bed.nsB, bed.ifB);
        const f = flood(bed, seconds);
        frameBytes = f.frameBytes;
        await new Promise((r) => setTimeout(r, 300)); // let the last frames land
        const after = linkStats(bed.nsA, bed.ifA);
        const afterB = linkStats(bed.nsB, bed.ifB);
        const received = after.rxPackets - before.rxPackets;
        const drops = after.rxDropped - before.rxDropped + (afterB.txDropped - beforeB.txDropped);
        const r: FloodRun = {variant, seconds: round2(f.seconds), sent: f.sent, received, pps: Math.round(received / f.seconds), drops};
        if (counter) {
          r.counted = Number(counter.read().packets);
          r.exact = r.counted === f.sent;
        }
        runs.push(r);
      } finally {
        counter?.close();
        other?.link.close();
        other?.obj.close();
      }
    }
  } finally {
    netns.close();
    destroyBed(bed);
  }
  return {mode: 'native', frameBytes, runs};
}

export interface XdpBenchOptions {
  rounds?: number;
  repeat?: number;
  /** Also test-run on every CPU at once (default true). */
  contended?: boolean;
  /** Also flood a veth pair (default true; needs root, ip, nsenter, sysctl). */
  flood?: boolean;
  floodSeconds?: number;
}

export async function benchXdp(opts: XdpBenchOptions = {}): Promise<XdpBenchResult> {
  const testRun = benchXdpTestRun(opts);
  const contended = opts.contended === false ? undefined : await benchXdpContended({rounds: opts.rounds, repeat: opts.repeat});
  const flood = opts.flood === false ? undefined : await benchXdpFlood({seconds: opts.floodSeconds});
  return {testRun, contended, flood};
}

/** Human summary of a result, one line per measurement. */
export function formatXdpBench(r: XdpBenchResult): string {
  const t = r.testRun;
  const lines = [
    `XDP per-packet cost via BPF_PROG_TEST_RUN, CPU time (${t.frameBytes}-byte frame, ${t.rounds} interleaved rounds × ${t.repeat} runs, median):`,
    ...(['empty', 'seed', 'counter'] as const).map(
      (v) =>
        `  ${v.padEnd(8)} ${t.costs[v].nsPerPacket.toFixed(2).padStart(6)} ns/packet  ` +
        `(min ${t.costs[v].minNsPerPacket.toFixed(2)}; wall-clock ${t.costs[v].wallNsPerPacket.toFixed(2)}; kernel-reported ${t.costs[v].kernelNs})`,
    ),
    `  counter / empty = ${t.counterVsEmpty.toFixed(2)}×, seed / empty = ${t.seedVsEmpty.toFixed(2)}×; counts verified: ${t.countsVerified}`,
  ];
  if (r.contended) {
    const c = r.contended;
    lines.push(`Same, on ${c.costs.empty.cpus} CPUs at once sharing one map (${c.rounds} rounds × ${c.repeat} runs each, median):`);
    for (const v of ['empty', 'seed', 'counter'] as const) {
      const verified = c.costs[v].countsVerified === undefined ? '' : `  (counts verified: ${c.costs[v].countsVerified})`;
      lines.push(`  ${v.padEnd(8)} ${c.costs[v].nsPerPacket.toFixed(2).padStart(6)} ns/packet${verified}`);
    }
    lines.push(`  counter / empty = ${c.counterVsEmpty.toFixed(2)}×, seed / empty = ${c.seedVsEmpty.toFixed(2)}×`);
  }
  if (r.flood) {
    lines.push(`Flood on a veth pair (${r.flood.frameBytes}-byte UDP frames from the peer, ${r.flood.mode} mode):`);
    for (const f of r.flood.runs) {
      const exact = f.counted === undefined ? '' : `; counter counted ${f.counted} of ${f.sent} sent (${f.exact ? 'exact' : 'NOT exact'})`;
      lines.push(`  ${f.variant.padEnd(8)} ${f.pps.toLocaleString('en-US').padStart(10)} pps received (${f.received} in ${f.seconds} s, drops ${f.drops})${exact}`);
    }
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const num = (flag: string): number | undefined => {
    const i = argv.indexOf(flag);
    return i >= 0 ? Number(argv[i + 1]) : undefined;
  };
  const result = await benchXdp({
    rounds: num('--rounds'),
    repeat: num('--repeat'),
    floodSeconds: num('--flood-seconds'),
    flood: !argv.includes('--no-flood'),
    contended: !argv.includes('--no-contended'),
  });
  process.stdout.write(`${formatXdpBench(result)}\n`);
  if (argv.includes('--json')) process.stdout.write(`${JSON.stringify(result)}\n`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((error: unknown) => {
    process.stderr.write(`bench/xdp: ${(error as Error).message}\n`);
    process.exitCode = 1;
  });
}
