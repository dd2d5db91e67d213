/**
 * End to end: TCP connect + accept + close rate through an extra port (steered by skl's dispatcher
 * to the server's socket) against the server's own port, with the same server, the same client
 * process and interleaved time slices, inside a namespace of the bench's own. Both ports go through
 * the dispatcher (the own port is a miss); the difference is the hit: sockmap lookup + assign.
 */
import {BenchNetns, check} from './lib/netns.js';
import {dist, SKL, startAndWait} from './lib/proc.js';
import {pairedRatio, summarize, type Summary} from './lib/stats.js';

export interface E2eResult {
  rounds: number;
  sliceMs: number;
  parallel: number;
  ownPort: number;
  extraPort: number;
  /** connections per second, one sample per slice */
  own: Summary;
  extra: Summary;
  ownSamples: number[];
  extraSamples: number[];
  /** extra / own, per round (adjacent slices), median and spread */
  ratio: Summary;
  errors: Record<string, number>;
  /** the dispatcher's redirected counter, against the connections attempted to the extra port (warm-up included) */
  redirected: number;
  extraConnections: number;
}

interface ClientOut {
  slices: {port: number; round: number; ms: number; ok: number; failed: number; rate: number}[];
  errors: Record<string, number>;
  warmup: Record<string, number>;
}

export async function benchE2e(opts: {rounds?: number; sliceMs?: number; parallel?: number} = {}): Promise<E2eResult> {
  const rounds = opts.rounds ?? 8;
  const sliceMs = opts.sliceMs ?? 1000;
  const parallel = opts.parallel ?? 8;
  const ownPort = 8080;
  const extraPort = 9090;
  const ns = BenchNetns.create();
  try {
    const node = process.execPath;
    const server = ns.spawn(node, [dist('e2e-server.js'), '--port', String(ownPort)], {stdio: ['pipe', 'pipe', 'pipe']});
    const pid = await startAndWait(server, (e) => (e.event === 'listening' ? (e.pid as number) : undefined), 'e2e-server');
    check('skl attach', ns.exec(node, [SKL, 'attach', '--pid', String(pid), '--ports', String(extraPort), '--name', 'e2e']));
    const client = ns.exec(node, [dist('e2e-client.js'), '--ports', `${ownPort},${extraPort}`, '--rounds', String(rounds), '--slice-ms', String(sliceMs), '--parallel', String(parallel)], {
      timeoutMs: (rounds * 2 * sliceMs + 60_000) * 2,
    });
    check('e2e-client', client);
    const out = JSON.parse(client.stdout.trim().split('\n').pop()!) as ClientOut;
    const status = JSON.parse(check('skl status', ns.exec(node, [SKL, 'status', 'e2e', '--json'])).stdout) as {attachments: {redirected: number}[]};
    check('skl detach', ns.exec(node, [SKL, 'detach', 'e2e']));
    const by = (port: number): number[] => out.slices.filter((s) => s.port === port).sort((a, b) => a.round - b.round).map((s) => s.rate);
    const own = by(ownPort);
    const extra = by(extraPort);
    return {
      rounds,
      sliceMs,
      parallel,
      ownPort,
      extraPort,
      own: summarize(own),
      extra: summarize(extra),
      ownSamples: own,
      extraSamples: extra,
      ratio: pairedRatio(extra, own),
      errors: out.errors,
      redirected: status.attachments[0]?.redirected ?? 0,
      extraConnections: (out.warmup[extraPort] ?? 0) + out.slices.filter((s) => s.port === extraPort).reduce((n, s) => n + s.ok + s.failed, 0),
    };
  } finally {
    await ns.destroy();
  }
}
