/**
 * Control-plane benchmarks, run inside a network namespace of the bench's own:
 *
 * - populating 65,535 ports in-process: DispatcherState.writePorts (one batch syscall) on an
 *   unpinned dispatcher, from a list of ports to the kernel; the first call of the process (cold
 *   JIT) is reported apart from the following ones;
 * - wall time of whole commands, spawned one after another in interleaved rounds: `node -e 0`
 *   (the floor of any Node.js CLI), `skl --version`, loading skl's code without running anything,
 *   `skl attach` (first attachment: creates and pins the dispatcher), `skl status` (also on oclif's
 *   own path: as shipped, and with oclif bundled too), `skl detach` (last attachment: removes it);
 * - `skl ports add NAME 1-65535` minus the server's own port (with --force), `skl status` with
 *   those 65,534 ports, and `skl ports remove` back.
 *
 *   nsenter --net=/run/netns/NS node dist/bench/control.js [--rounds N] [--ports-rounds N] [--extra-ca-certs FILE]
 */
import {spawn, spawnSync} from 'node:child_process';
import {get} from 'node:http';
import {pathToFileURL} from 'node:url';
import {parseArgs} from 'node:util';
import type {BpfMap} from '../src/bpf/index.js';
import {portIndex, withPortService} from '../src/dispatcher/layout.js';
import {DispatcherState, loadDispatcher, MAP_NAMES, type MapName} from '../src/dispatcher/state.js';
import {buildOclifBundle} from './lib/oclif-bundle.js';
import {dist, ROOT, SKL, startAndWait, timed} from './lib/proc.js';
import {stop} from './lib/netns.js';
import {roundOrder, summarize, type Summary} from './lib/stats.js';

export interface Series {
  id: string;
  label: string;
  /** wall time, ms, one per round */
  samples: number[];
  summary: Summary;
  /** CPU time (user + system), ms, one per round: hardly affected by other load on the machine */
  cpu?: number[];
  cpuSummary?: Summary;
}

export interface ControlResult {
  populate: {ports: number; firstMs: number; warm: Series; clear: Series};
  cli: Series[];
  portsAdd: Series[];
  /** 1,000 host addresses × 1,000 ports bound by one `skl attach`, then status and detach */
  million: {bindings: number; attach: Series; status: Series; detach: Series};
  /** `skl attach` with TIME_WAIT sockets in the namespace against an idle one */
  busy: {timeWait: number; idle: Series; busy: Series};
  /** GET /metrics from `skl metrics --listen` (one service): ms per scrape, sequential */
  scrape?: Series;
  rounds: number;
  portsRounds: number;
}

const series = (id: string, label: string, samples: number[], cpu?: number[]): Series => ({
  id,
  label,
  samples,
  summary: summarize(samples),
  ...(cpu ? {cpu, cpuSummary: summarize(cpu)} : {}),
});

function benchPopulate(rounds: number): ControlResult['populate'] {
  const obj = loadDispatcher().obj;
  try {
    const maps = {} as Record<MapName, BpfMap>;
    for (const n of MAP_NAMES) maps[n] = obj.map(n);
    const d = new DispatcherState('foreground', maps, 0);
    const ports = Array.from({length: 65535}, (_, i) => i + 1);
    const value = withPortService(0, 4, 0);
    const fill = (): number => {
      const t0 = process.hrtime.bigint();
      d.writePorts(ports.map((p) => [portIndex('tcp', p), value]));
      return Number(process.hrtime.bigint() - t0) / 1e6;
    };
    const clear = (): number => {
      const t0 = process.hrtime.bigint();
      d.writePorts(ports.map((p) => [portIndex('tcp', p), 0]));
      return Number(process.hrtime.bigint() - t0) / 1e6;
    };
    const firstMs = fill();
    clear();
    const warm: number[] = [];
    const cleared: number[] = [];
    for (let r = 0; r < rounds; r++) {
      warm.push(fill());
      cleared.push(clear());
    }
    const count = d.portTable().size;
    if (count !== 0) throw new Error(`add_ports not empty after clearing (${count})`);
    return {ports: ports.length, firstMs, warm: series('populate', 'write 65,535 ports (in-process, batch)', warm), clear: series('clear', 'clear 65,535 ports (in-process, batch)', cleared)};
  } finally {
    obj.close();
  }
}

export async function benchControl(opts: {rounds?: number; portsRounds?: number; extraCaCerts?: string} = {}): Promise<ControlResult> {
  const rounds = opts.rounds ?? 20;
  const portsRounds = opts.portsRounds ?? 5;
  const populate = benchPopulate(rounds);

  const node = process.execPath;
  const server = spawn(node, [dist('e2e-server.js'), '--port', '8080'], {stdio: ['pipe', 'pipe', 'pipe']});
  try {
    const pid = await startAndWait(server, (e) => (e.event === 'listening' ? (e.pid as number) : undefined), 'e2e-server');
    const ids = ['node', 'nodeCerts', 'version', 'load', 'loadCli', 'attach', 'status', 'statusFull', 'statusOclif', 'detach'];
    const wall: Record<string, number[]> = Object.fromEntries(ids.map((id) => [id, []]));
    const cpu: Record<string, number[]> = Object.fromEntries(ids.map((id) => [id, []]));
    const record = (id: string, t: {ms: number; cpuMs: number}): void => {
      wall[id].push(t.ms);
      cpu[id].push(t.cpuMs);
    };
    const skl = (...args: string[]): {ms: number; cpuMs: number} => timed(node, [SKL, ...args]);

    // interleaved start-up rounds: the constant commands rotate, then attach → status → detach
    const api = new URL('../src/dispatcher/api.js', import.meta.url).href;
    const bundles = `${ROOT}dist/bundle`;
    // oclif's own path with oclif bundled too (bench-only build): what keeps the light runtime
    const oclifRun = await buildOclifBundle();
    const fixed: [string, () => {ms: number; cpuMs: number}][] = [
      ['node', () => timed(node, ['-e', '0'])],
      ['version', () => skl('--version')],
      // what loading skl's code costs before it does anything: the library (ES modules), and what
      // `skl attach` loads (its bundles on the light runtime, koffi) before it runs
      ['load', () => timed(node, ['--input-type=module', '-e', `await import(${JSON.stringify(api)})`])],
      ['loadCli', () => timed(node, ['-e', LOAD_CLI, bundles, 'attach.cjs'])],
      // `node -e 0` as the bench's environment would have run it (see run.ts)
      ...(opts.extraCaCerts ? [['nodeCerts', () => timed(node, ['-e', '0'], {NODE_EXTRA_CA_CERTS: opts.extraCaCerts})] as [string, () => {ms: number; cpuMs: number}]] : []),
    ];
    for (const [, f] of fixed) f(); // warm the page cache
    timed(node, [oclifRun, '--version']);
    for (let r = 0; r < rounds; r++) {
      for (const i of roundOrder(fixed.length, r)) record(fixed[i][0], fixed[i][1]());
      record('attach', skl('attach', '--pid', String(pid), '--ports', '9090', '--name', 'bench'));
      const status: [string, () => {ms: number; cpuMs: number}][] = [
        ['status', () => skl('status')],
        ['statusFull', () => timed(node, [SKL, 'status'], {SKL_FULL_CLI: '1'})],
        ['statusOclif', () => timed(node, [oclifRun, 'status'])],
      ];
      for (const i of roundOrder(status.length, r)) record(status[i][0], status[i][1]());
      record('detach', skl('detach', 'bench'));
    }
    const cli = [
      series('node', 'node -e 0', wall.node, cpu.node),
      ...(opts.extraCaCerts ? [series('nodeCerts', `node -e 0 with NODE_EXTRA_CA_CERTS=${opts.extraCaCerts} (this machine's environment)`, wall.nodeCerts, cpu.nodeCerts)] : []),
      series('version', 'skl --version', wall.version, cpu.version),
      series('load', "node: import skl's dispatcher library only", wall.load, cpu.load),
      series('loadCli', "node: load `skl attach`'s code only (its bundles, koffi)", wall.loadCli, cpu.loadCli),
      series('attach', 'skl attach --pid P --ports 9090 (creates the dispatcher)', wall.attach, cpu.attach),
      series('status', 'skl status (1 attachment, 1 port)', wall.status, cpu.status),
      series('statusFull', "SKL_FULL_CLI=1 skl status: oclif's own path, as shipped", wall.statusFull, cpu.statusFull),
      series('statusOclif', "skl status on oclif's own path, oclif bundled too (bench-only build)", wall.statusOclif, cpu.statusOclif),
      series('detach', 'skl detach NAME (removes the dispatcher)', wall.detach, cpu.detach),
    ];

    // 65,534 extra ports: everything but the server's own 8080
    skl('attach', '--pid', String(pid), '--ports', '9090', '--name', 'bench');
    const big: Record<string, {ms: number; cpuMs: number}[]> = {add: [], status: [], remove: []};
    try {
      for (let r = 0; r < portsRounds; r++) {
        big.add.push(skl('ports', 'add', 'bench', '1-8079,8081-65535', '--force'));
        big.status.push(skl('status'));
        big.remove.push(skl('ports', 'remove', 'bench', '1-8079,8081-9089,9091-65535'));
      }
    } finally {
      skl('detach', 'bench');
    }
    const ser = (id: string, label: string, t: {ms: number; cpuMs: number}[]): Series =>
      series(id, label, t.map((x) => x.ms), t.map((x) => x.cpuMs));
    const portsAdd = [
      ser('portsAdd', 'skl ports add NAME 1-8079,8081-65535 --force (65,534 ports)', big.add),
      ser('statusBig', 'skl status (65,534 ports)', big.status),
      ser('portsRemove', 'skl ports remove NAME (65,533 ports)', big.remove),
    ];

    // a million bindings in one command: 1,000 /32 addresses × 1,000 ports
    const addresses = Array.from({length: 1000}, (_, i) => ['--address', `127.1.${(i + 1) >> 8}.${(i + 1) & 0xff}`]).flat();
    const mil: Record<string, {ms: number; cpuMs: number}[]> = {attach: [], status: [], detach: []};
    for (let r = 0; r < Math.max(1, Math.min(portsRounds, 3)); r++) {
      mil.attach.push(skl('attach', '--pid', String(pid), '--ports', '10000-10999', '--name', 'million', ...addresses));
      mil.status.push(skl('status', '--json'));
      mil.detach.push(skl('detach', 'million'));
    }
    const million = {
      bindings: 1_000_000,
      attach: ser('millionAttach', 'skl attach … --ports 10000-10999 --address ×1,000 (1,000,000 host bindings)', mil.attach),
      status: ser('millionStatus', 'skl status --json (1,000,000 bindings)', mil.status),
      detach: ser('millionDetach', 'skl detach (1,000,000 bindings, the last service)', mil.detach),
    };

    // a busy namespace: attach with 20,000 TIME_WAIT sockets vs none (interleaved would need 60 s
    // for TIME_WAIT to drain: idle first, then busy)
    const attachOnce = (): {ms: number; cpuMs: number} => {
      const t = skl('attach', '--pid', String(pid), '--ports', '9090', '--name', 'busy');
      skl('detach', 'busy');
      return t;
    };
    const idle: {ms: number; cpuMs: number}[] = [];
    for (let r = 0; r < rounds; r++) idle.push(attachOnce());
    const churn = spawn(node, ['-e', TIME_WAIT_SCRIPT, '30000', '8080'], {stdio: ['ignore', 'pipe', 'inherit']});
    await new Promise((resolve) => churn.once('exit', resolve));
    const timeWait = Number(spawnSync('ss', ['-Htan', 'state', 'time-wait'], {encoding: 'utf8'}).stdout.split('\n').filter(Boolean).length);
    const busySamples: {ms: number; cpuMs: number}[] = [];
    for (let r = 0; r < rounds; r++) busySamples.push(attachOnce());
    const busy = {timeWait, idle: ser('attachIdle', 'skl attach, idle namespace', idle), busy: ser('attachBusy', `skl attach, ${timeWait.toLocaleString('en-US')} TIME_WAIT sockets`, busySamples)};

    // the scrape endpoint: each GET reads the pinned state again
    skl('attach', '--pid', String(pid), '--ports', '9090', '--name', 'scraped');
    const metrics = spawn(node, [SKL, 'metrics', '--listen', '127.0.0.1:9323'], {stdio: ['ignore', 'ignore', 'pipe']});
    let scrape: Series | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        let err = '';
        metrics.stderr!.setEncoding('utf8').on('data', (x: string) => {
          err += x;
          if (err.includes('serving metrics')) resolve();
        });
        metrics.once('exit', () => reject(new Error(`skl metrics --listen exited: ${err}`)));
      });
      const samples: number[] = [];
      for (let i = 0; i < Math.max(20, rounds * 4); i++) {
        const t0 = process.hrtime.bigint();
        await new Promise<void>((resolve, reject) => {
          get('http://127.0.0.1:9323/metrics', (res) => {
            res.resume();
            res.on('end', () => resolve());
          }).on('error', reject);
        });
        samples.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
      scrape = series('scrape', 'GET /metrics from skl metrics --listen (1 service; sequential)', samples.slice(2));
    } finally {
      metrics.kill('SIGTERM');
      await new Promise((resolve) => metrics.once('exit', resolve));
      skl('detach', 'scraped');
    }
    return {populate, cli, portsAdd, million, busy, scrape, rounds, portsRounds};
  } finally {
    await stop(server);
  }
}

/**
 * `node -e LOAD_CLI DIR FILE`: load what bin/run.js loads for a command on the light runtime (the
 * bundle of src/cli/fast.ts, then the command's own bundle and, through it, koffi), as bin/run.js
 * loads them (dist/bundle/load.cjs: with their code caches), without running it. Light mode first,
 * as src/cli/fast.ts enters it before it loads a command.
 */
const LOAD_CLI =
  "globalThis[Symbol.for('skl.cli.light')] = true; const [dir, file] = process.argv.slice(1); const {loadBundle} = require(dir + '/load.cjs'); loadBundle(dir + '/skl.cjs'); loadBundle(dir + '/' + file);";

/** N connections to 127.0.0.1:PORT, each closed right away (the side that closes first keeps it in TIME_WAIT for 60 s). */
const TIME_WAIT_SCRIPT = `
const net = require('node:net');
const [n, port] = process.argv.slice(1).map(Number);
let done = 0, open = 0, started = 0;
const next = () => {
  while (open < 200 && started < n) {
    started++; open++;
    // source addresses 127.0.0.2-9: more 4-tuples than one address's ephemeral ports
    const s = net.connect({port, host: '127.0.0.1', localAddress: '127.0.0.' + (2 + (started % 8))}, () => s.end());
    s.resume();
    s.on('close', () => { open--; if (++done === n) process.exit(0); next(); });
    s.on('error', () => undefined);
  }
};
next();
`;

async function main(): Promise<void> {
  const {values} = parseArgs({options: {rounds: {type: 'string'}, 'ports-rounds': {type: 'string'}, 'extra-ca-certs': {type: 'string'}}});
  const r = await benchControl({
    rounds: values.rounds ? Number(values.rounds) : undefined,
    portsRounds: values['ports-rounds'] ? Number(values['ports-rounds']) : undefined,
    extraCaCerts: values['extra-ca-certs'],
  });
  process.stdout.write(`${JSON.stringify(r)}\n`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error) => {
    process.stderr.write(`bench/control: ${(error as Error).stack ?? error}\n`);
    process.exit(1);
  });
}
