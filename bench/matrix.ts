/**
 * The kernel and Node.js matrix, for BENCHMARKS.md, run inside a network namespace of the bench's own:
 *
 * - the outcome of the last `npm run test:node` per Node major and of the last `npm run test:kernel`
 *   per kernel, as those scripts recorded them (`<cache>/matrix/*.json`; the cache is /var/cache/skl
 *   for root, as for the scripts);
 * - skl's start-up under each of those Node binaries and under the bench's own node: CPU time of
 *   `skl attach` (creating the dispatcher) and `skl status` against `node -e 0` of the same binary,
 *   interleaved rounds. (Node.js ≥22.1 keeps its compile cache in the package: one run first fills it.)
 *
 *   nsenter --net=/run/netns/NS node dist/bench/matrix.js [--rounds N]
 */
import {spawn} from 'node:child_process';
import {existsSync, readdirSync, readFileSync} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {pathToFileURL} from 'node:url';
import {parseArgs} from 'node:util';
import {stop} from './lib/netns.js';
import {dist, SKL, startAndWait, timed} from './lib/proc.js';
import {pairedRatio, summarize, type Summary} from './lib/stats.js';

/** What scripts/test-node.sh records per major. */
export interface NodeRecord {
  node: string;
  bin: string;
  mode: 'smoke' | 'suite';
  status: string;
  koffi: string;
  summary: string;
  date: string;
}

/** What scripts/test-kernel.sh records per kernel (its default job: the smoke and doctor's tests). */
export interface KernelRecord {
  kernel: string;
  exit: number;
  vmSeconds: number;
  wallSeconds: number;
  smoke: string;
  doctor: string;
  date: string;
  hostCpus: number;
}

export interface NodeRow {
  node: string;
  /** the bench's own node (no test:node record) */
  own: boolean;
  record?: NodeRecord;
  /** CPU time of `node -e 0`, ms */
  nodeCpu: Summary;
  /** CPU time ratios to `node -e 0` of the same round */
  attach: Summary;
  status: Summary;
}

export interface MatrixResult {
  rounds: number;
  kernel: string;
  nodes: NodeRow[];
  kernels: KernelRecord[];
}

/** The scripts' matrix directory (SKL_CACHE_DIR, else /var/cache/skl for root, else ~/.cache/skl). */
export function matrixDir(): string {
  if (process.env.SKL_CACHE_DIR) return path.join(process.env.SKL_CACHE_DIR, 'matrix');
  if (process.getuid?.() === 0) return '/var/cache/skl/matrix';
  return path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'skl', 'matrix');
}

function records<T>(prefix: string): T[] {
  const dir = matrixDir();
  if (!existsSync(dir)) return [];
  const out: T[] = [];
  for (const f of readdirSync(dir).filter((x) => x.startsWith(prefix) && x.endsWith('.json')).sort()) {
    try {
      out.push(JSON.parse(readFileSync(path.join(dir, f), 'utf8')) as T);
    } catch {
      // a record being written, or damaged: left out
    }
  }
  return out;
}

export async function benchMatrix(opts: {rounds?: number} = {}): Promise<MatrixResult> {
  const rounds = opts.rounds ?? 12;
  const recorded = records<NodeRecord>('node-').filter((r) => existsSync(r.bin));
  const binaries: {bin: string; version: string; own: boolean; record?: NodeRecord}[] = [
    {bin: process.execPath, version: process.version, own: true},
    ...recorded.filter((r) => r.node !== process.version).map((r) => ({bin: r.bin, version: r.node, own: false, record: r})),
  ];
  const server = spawn(process.execPath, [dist('e2e-server.js'), '--port', '8080'], {stdio: ['pipe', 'pipe', 'pipe']});
  try {
    const pid = await startAndWait(server, (e) => (e.event === 'listening' ? (e.pid as number) : undefined), 'e2e-server');
    const nodes: NodeRow[] = [];
    for (const b of binaries) {
      const skl = (...args: string[]): number => timed(b.bin, [SKL, ...args]).cpuMs;
      // the first run of a Node.js ≥22.1 fills its compile cache
      skl('attach', '--pid', String(pid), '--ports', '9090', '--name', 'matrix');
      skl('status');
      skl('detach', 'matrix');
      const node: number[] = [];
      const attach: number[] = [];
      const status: number[] = [];
      for (let r = 0; r < rounds; r++) {
        node.push(timed(b.bin, ['-e', '0']).cpuMs);
        attach.push(skl('attach', '--pid', String(pid), '--ports', '9090', '--name', 'matrix'));
        status.push(skl('status'));
        skl('detach', 'matrix');
      }
      nodes.push({node: b.version, own: b.own, record: b.record, nodeCpu: summarize(node), attach: pairedRatio(attach, node), status: pairedRatio(status, node)});
    }
    return {rounds, kernel: os.release(), nodes, kernels: records<KernelRecord>('kernel-')};
  } finally {
    await stop(server);
  }
}

async function main(): Promise<void> {
  const {values} = parseArgs({options: {rounds: {type: 'string'}}});
  const r = await benchMatrix({rounds: values.rounds ? Number(values.rounds) : undefined});
  process.stdout.write(`${JSON.stringify(r)}\n`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error) => {
    process.stderr.write(`bench/matrix: ${(error as Error).stack ?? error}\n`);
    process.exit(1);
  });
}
