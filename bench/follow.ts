/**
 * Following restarts: what the follow programs cost, in a namespace and cgroups of the bench's own.
 *
 * - listen(): the sock_ops program (sk_follow) runs on every listen() in a followed cgroup. A worker
 *   process loops socket + bind + listen + close and measures its own CPU time, in three cgroups:
 *   one nobody follows (no program), a followed one on a port nobody follows (the program looks the
 *   listener up and returns), and a followed one on the followed listener (the program stores the
 *   socket in the service's SOCKMAP slots; its close takes it out again). Interleaved rounds; the
 *   program's own time per run comes from the kernel's run time statistics (BPF_ENABLE_STATS).
 * - connections: the same program runs on a followed server's connections (the kernel calls
 *   sock_ops programs at several steps of a TCP connection, whatever the callback flags). Connection
 *   rate through the extra port of one server, with the program attached to its cgroup for every
 *   other slice (bench/e2e-client.ts), so that nothing else differs; then the program's runs and
 *   time per connection.
 * - UDP: the tc ingress program (sk_follow_udp) runs on every packet of the namespace's interfaces
 *   once a UDP service is followed: its time per packet, for datagrams to a followed service's extra
 *   port (its socket alive: the common case) and to a port nothing is bound to.
 */
import {closeSync, constants, mkdirSync, openSync, readFileSync, rmdirSync} from 'node:fs';
import type {ChildProcess} from 'node:child_process';
import {createInterface} from 'node:readline';
import {libbpf} from '../src/ffi/index.js';
import {close as closeFd} from '../src/ffi/libc.js';
import {enableRunStats, progInfoByFd, progRunStats} from '../src/bpf/info.js';
import {attachTc, listTcFilters, tcxProgramIds} from '../src/bpf/tc.js';
import {Link} from '../src/bpf/link.js';
import {Netns} from '../src/sys/netns.js';
import {cgroup2Mount} from '../src/sys/mounts.js';
import {BenchNetns, check, stop} from './lib/netns.js';
import {dist, SKL, startAndWait} from './lib/proc.js';
import {fmt, pairedRatio, roundOrder, summarize, type Summary} from './lib/stats.js';

/** enum bpf_attach_type BPF_CGROUP_SOCK_OPS */
const BPF_CGROUP_SOCK_OPS = 3;
import {mdTable, type Check} from './report.js';

export interface ProgCost {
  /** program runs counted */
  runs: number;
  /** its time per run, ns (the kernel's run time statistics) */
  nsPerRun: number;
}

export interface FollowBenchResult {
  listen: {
    rounds: number;
    perRound: number;
    /** CPU time per listen() + close(), ns: no program / the program, listener not followed / followed (stored) */
    none: Summary;
    miss: Summary;
    store: Summary;
    /** per round: miss − none, store − none (ns) */
    missExtra: Summary;
    storeExtra: Summary;
    failed: number;
    progMiss: ProgCost;
    progStore: ProgCost;
  };
  connect: {
    rounds: number;
    sliceMs: number;
    parallel: number;
    /** connections per second through the extra port, the same server: with the follow program on its cgroup / without */
    followed: Summary;
    plain: Summary;
    /** with / without, per round (adjacent slices) */
    ratio: Summary;
    errors: Record<string, number>;
    /** a stats pass: connections made with the program on, the program's runs and time for them */
    connections: number;
    runsPerConnection: number;
    nsPerConnection: number;
    /** the same with the program off (0: the control) */
    plainRunsPerConnection: number;
  };
  udp: {
    datagrams: number;
    /** the tc program per packet: datagrams to a followed service's extra port (and their replies) */
    hit: ProgCost;
    /** packets of datagrams to a port nothing is bound to (and the ICMP errors they draw) */
    unbound: ProgCost;
  };
}

/** A cgroup v2 directory of the bench's own: its processes are killed and it is removed afterwards. */
class BenchCgroup {
  readonly dir: string;
  constructor(name: string) {
    const mount = cgroup2Mount();
    if (!mount) throw new Error('cgroup v2 is not mounted: following cannot be measured');
    this.dir = `${mount}/skl-bench-${process.pid}-${name}`;
    mkdirSync(this.dir);
  }

  /** Start `cmd` in namespace `ns`, moved into this cgroup before it execs. */
  spawn(ns: BenchNetns, cmd: string, args: readonly string[]): ChildProcess {
    return ns.spawn('sh', ['-c', `echo $$ > ${this.dir}/cgroup.procs && exec "$0" "$@"`, cmd, ...args], {stdio: ['pipe', 'pipe', 'pipe']});
  }

  async remove(): Promise<void> {
    for (let i = 0; i < 50; i++) {
      for (const pid of readFileSync(`${this.dir}/cgroup.procs`, 'utf8').split('\n').filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // gone
        }
      }
      try {
        rmdirSync(this.dir);
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
}

/** A listen worker (bench/follow-listen.ts) and a way to run n iterations in it. */
interface ListenWorker {
  child: ChildProcess;
  run(n: number): Promise<{n: number; cpuUs: number; failed: number}>;
}

async function listenWorker(ns: BenchNetns, cg: BenchCgroup, port: number): Promise<ListenWorker> {
  const child = cg.spawn(ns, process.execPath, [dist('follow-listen.js'), '--port', String(port)]);
  const lines = createInterface({input: child.stdout!});
  const queue: ((line: string) => void)[] = [];
  lines.on('line', (line) => queue.shift()?.(line));
  await new Promise<void>((resolve, reject) => {
    queue.push(() => resolve());
    child.once('exit', (code) => reject(new Error(`follow-listen exited (${code})`)));
  });
  return {
    child,
    run: (n) =>
      new Promise((resolve) => {
        queue.push((line) => resolve(JSON.parse(line) as {n: number; cpuUs: number; failed: number}));
        child.stdin!.write(`${n}\n`);
      }),
  };
}

/** A pinned program's run statistics, by its pin. */
function pinnedStats(path: string): {runTimeNs: bigint; runCnt: bigint} {
  const fd = libbpf.bpf_obj_get(path);
  if (fd < 0) throw new Error(`cannot open ${path}: errno ${-fd}`);
  try {
    return progRunStats(fd);
  } finally {
    closeFd(fd);
  }
}

/** Run `fn` with the kernel's run time statistics on; the program's runs and time per run meanwhile. */
async function measured(path: string, fn: () => Promise<unknown>): Promise<ProgCost> {
  const stats = enableRunStats();
  try {
    const a = pinnedStats(path);
    await fn();
    const b = pinnedStats(path);
    const runs = Number(b.runCnt - a.runCnt);
    return {runs, nsPerRun: runs ? Number(b.runTimeNs - a.runTimeNs) / runs : NaN};
  } finally {
    stats.close();
  }
}

const UDP_SERVER = `
const u = require('node:dgram').createSocket('udp4');
u.on('message', (m, r) => u.send('ok', r.port, r.address));
u.bind({address: '127.0.0.1', port: Number(process.argv[1])}, () => process.stdout.write(JSON.stringify({event: 'listening', pid: process.pid}) + '\\n'));
process.stdin.on('end', () => process.exit(0)).resume();
`;
/** n datagrams to 127.0.0.1:PORT, sent back to back (each send waits for the previous one), then 200 ms for the replies. */
const UDP_CLIENT = `
const u = require('node:dgram').createSocket('udp4');
const [port, n] = process.argv.slice(1).map(Number);
let replies = 0;
u.on('message', () => replies++);
(async () => {
  for (let i = 0; i < n; i++) await new Promise((resolve) => u.send('x', port, '127.0.0.1', resolve));
  setTimeout(() => { process.stdout.write(JSON.stringify({replies}) + '\\n'); process.exit(0); }, 200);
})();
`;

export async function benchFollow(opts: {rounds?: number; perRound?: number; connRounds?: number; sliceMs?: number; datagrams?: number} = {}): Promise<FollowBenchResult> {
  const rounds = opts.rounds ?? 15;
  const perRound = opts.perRound ?? 20_000;
  const connRounds = opts.connRounds ?? 20;
  const sliceMs = opts.sliceMs ?? 250;
  const datagrams = opts.datagrams ?? 2_000;
  const parallel = 8;
  const node = process.execPath;
  const ns = BenchNetns.create();
  const followed = new BenchCgroup('followed');
  const plain = new BenchCgroup('plain');
  try {
    const skl = (args: string[]): void => void check(`skl ${args.join(' ')}`, ns.exec(node, [SKL, ...args]));
    // ---- listen() ----
    skl(['attach', '--cgroup', followed.dir, '--listener', '127.0.0.1:7001', '--ports', '9001', '--name', 'listen']);
    const none = await listenWorker(ns, plain, 7101);
    const miss = await listenWorker(ns, followed, 7102);
    const store = await listenWorker(ns, followed, 7001);
    const workers = [none, miss, store];
    for (const w of workers) await w.run(Math.min(2_000, perRound)); // warm-up
    const ns3: number[][] = [[], [], []];
    let failed = 0;
    for (let r = 0; r < rounds; r++) {
      for (const i of roundOrder(3, r)) {
        const out = await workers[i].run(perRound);
        failed += out.failed;
        ns3[i].push((out.cpuUs * 1000) / out.n);
      }
    }
    const prog = `${ns.pinDir}/follow_prog`;
    const progMiss = await measured(prog, () => miss.run(perRound));
    const progStore = await measured(prog, () => store.run(perRound));
    for (const w of workers) w.child.stdin!.end();

    // ---- connections: one server; the program on its cgroup or not, slice by slice ----
    const server = plain.spawn(ns, node, [dist('e2e-server.js'), '--port', '8080']);
    const serverPid = await startAndWait(server, (e) => (e.event === 'listening' ? (e.pid as number) : undefined), 'e2e-server');
    skl(['attach', '--pid', String(serverPid), '--ports', '9080', '--name', 'conn']);
    let link: Link | undefined;
    // the follow program on the server's cgroup through a link of the bench's own (as skl's follow-<ino> link)
    const setProgram = (on: boolean): void => {
      if (on && !link) {
        const dirFd = openSync(plain.dir, constants.O_RDONLY | constants.O_DIRECTORY);
        try {
          link = Link.createForPinnedProgram(prog, dirFd, BPF_CGROUP_SOCK_OPS, 'sk_follow@bench cgroup');
        } finally {
          closeSync(dirFd);
        }
      } else if (!on && link) {
        link.close();
        link = undefined;
      }
    };
    const errors: Record<string, number> = {};
    const slice = (ms: number): {ok: number; rate: number} => {
      const c = ns.exec(node, [dist('e2e-client.js'), '--ports', '9080', '--rounds', '1', '--slice-ms', String(ms), '--warmup-ms', '50', '--parallel', String(parallel)], {timeoutMs: ms * 4 + 60_000});
      check('e2e-client', c);
      const out = JSON.parse(c.stdout.trim().split('\n').pop()!) as {slices: {ok: number; rate: number}[]; errors: Record<string, number>};
      for (const [k, v] of Object.entries(out.errors)) errors[k] = (errors[k] ?? 0) + v;
      return out.slices[0];
    };
    const rates: number[][] = [[], []]; // without, with the program
    let connections = 0;
    let conn: ProgCost;
    let off: ProgCost;
    let offConnections = 0;
    try {
      for (let r = 0; r < connRounds; r++) {
        for (const i of roundOrder(2, r)) {
          setProgram(i === 1);
          rates[i].push(slice(sliceMs).rate);
        }
      }
      setProgram(true);
      conn = await measured(prog, async () => {
        connections = slice(500).ok;
      });
      setProgram(false);
      off = await measured(prog, async () => {
        offConnections = slice(500).ok;
      });
    } finally {
      setProgram(false);
    }

    // ---- UDP: the tc program on the namespace's loopback ----
    const udpServer = followed.spawn(ns, node, ['-e', UDP_SERVER, '5301']);
    await startAndWait(udpServer, (e) => (e.event === 'listening' ? true : undefined), 'udp server');
    skl(['attach', '--cgroup', followed.dir, '--listener', '127.0.0.1:5301', '--proto', 'udp', '--ports', '9053', '--name', 'udp']);
    const tcProg = `${ns.pinDir}/follow_udp_prog`;
    const here = Netns.open(ns.path);
    const fd = libbpf.bpf_obj_get(tcProg);
    // skl attaches it to the namespace's interfaces itself (src/dispatcher/interfaces.ts); only where it has not, it goes on lo here
    const id = progInfoByFd(fd).id;
    const there = here.run(() => tcxProgramIds(1, 'ingress').includes(id) || listTcFilters(1, 'ingress').some((f) => f.progId === id));
    const tc = there ? undefined : here.run(() => attachTc({fd, name: 'sk_follow_udp'}, 1, 'ingress'));
    const send = (port: number): void => void check('udp client', ns.exec(node, ['-e', UDP_CLIENT, String(port), String(datagrams)], {timeoutMs: 120_000}));
    let hit: ProgCost;
    let unbound: ProgCost;
    try {
      hit = await measured(tcProg, async () => send(9053));
      unbound = await measured(tcProg, async () => send(5999));
    } finally {
      if (tc) here.run(() => tc.detach());
      here.close();
      closeFd(fd);
      await stop(udpServer);
    }
    return {
      listen: {
        rounds,
        perRound,
        none: summarize(ns3[0]),
        miss: summarize(ns3[1]),
        store: summarize(ns3[2]),
        missExtra: summarize(ns3[1].map((v, i) => v - ns3[0][i])),
        storeExtra: summarize(ns3[2].map((v, i) => v - ns3[0][i])),
        failed,
        progMiss,
        progStore,
      },
      connect: {
        rounds: connRounds,
        sliceMs,
        parallel,
        followed: summarize(rates[1]),
        plain: summarize(rates[0]),
        ratio: pairedRatio(rates[1], rates[0]),
        errors,
        connections,
        runsPerConnection: conn.runs / Math.max(1, connections),
        nsPerConnection: (conn.runs * conn.nsPerRun) / Math.max(1, connections),
        plainRunsPerConnection: off.runs / Math.max(1, offConnections),
      },
      udp: {datagrams, hit, unbound},
    };
  } finally {
    await ns.destroy();
    await followed.remove();
    await plain.remove();
  }
}

// ---------------------------------------------------------------------------------------------
// report (bench/report.ts calls these)

const n0 = (v: number): string => fmt(v, 0);
/** "+1,138" / "−58": a difference, signed */
const signed = (v: number): string => `${v < 0 ? '−' : '+'}${fmt(Math.abs(v), 0)}`;

/** The summary rows of section 6. */
export function followChecks(f: FollowBenchResult): Check[] {
  const l = f.listen;
  const c = f.connect;
  return [
    {
      section: '6 following',
      what: 'sock_ops program per `listen()` of the followed listener (it stores the socket): CPU time of listen + close, followed cgroup / none',
      result: `${signed(l.storeExtra.median)} ns (${n0(l.store.median)} vs ${n0(l.none.median)} ns; the program itself ${fmt(l.progStore.nsPerRun, 0)} ns per run)`,
      target: '—',
    },
    {
      section: '6 following',
      what: 'sock_ops program per `listen()` on a port nobody follows, in a followed cgroup',
      result: `${signed(l.missExtra.median)} ns (${n0(l.miss.median)} vs ${n0(l.none.median)} ns; the program itself ${fmt(l.progMiss.nsPerRun, 0)} ns per run)`,
      target: '—',
    },
    {
      section: '6 following',
      what: 'TCP connect+accept+close rate through the extra port, one server: the follow program on its cgroup / not',
      result:
        `${fmt(c.ratio.median, 2)}× (${n0(c.followed.median)} vs ${n0(c.plain.median)} conn/s; per-round ${fmt(c.ratio.min, 2)}–${fmt(c.ratio.max, 2)}); ` +
        `the program: ${fmt(c.runsPerConnection, 1)} runs, ${fmt(c.nsPerConnection, 0)} ns per connection`,
      target: '≥ 0.95×',
      met: c.ratio.median >= 0.95,
      limits:
        `The program runs ${fmt(c.runsPerConnection, 1)} times per connection (the kernel calls sock_ops programs at several steps of a ` +
        `connection) for ${fmt(c.nsPerConnection, 0)} ns in all, against ≈${n0(1e9 / c.plain.median)} ns per connection here: the per-round spread ` +
        `(${fmt(c.ratio.min, 2)}–${fmt(c.ratio.max, 2)}) is noise of the machine, far larger than that.`,
    },
    {
      section: '6 following',
      what: 'UDP: tc ingress program per packet (datagrams to a followed service; to a port nothing is bound to)',
      result: `${fmt(f.udp.hit.nsPerRun, 0)} ns; ${fmt(f.udp.unbound.nsPerRun, 0)} ns`,
      target: '—',
    },
  ];
}

/** Section 6 of BENCHMARKS.md. */
export function followMarkdown(f: FollowBenchResult): string[] {
  const l = f.listen;
  const c = f.connect;
  const row = (what: string, s: Summary, extra: Summary | undefined, prog: ProgCost | undefined): string[] => [
    what,
    `${n0(s.median)} (${n0(s.min)}–${n0(s.max)})`,
    extra ? `${signed(extra.median)} (${signed(extra.min)} to ${signed(extra.max)})` : '',
    prog ? `${fmt(prog.nsPerRun, 0)} ns × ${prog.runs.toLocaleString('en-US')} runs` : '',
  ];
  return [
    '## 6. Following restarts',
    '',
    'From `bench/follow.ts`, in a namespace and cgroups of its own. **listen()**: a worker process loops socket + bind +',
    `listen + close on 127.0.0.1 and measures its own CPU time (user + system), ${l.rounds} interleaved rounds × ${l.perRound.toLocaleString('en-US')}`,
    'iterations, in a cgroup nobody follows, in a followed cgroup on a port nobody follows (the sock_ops program looks the',
    'listener up and returns), and in a followed cgroup on the followed listener (the program stores the socket in the',
    "service's SOCKMAP slots, and the close takes it out again). The program's own time comes from the kernel's run time",
    `statistics (BPF_ENABLE_STATS), in a separate pass. Failed iterations: ${l.failed}.`,
    '',
    ...mdTable(
      ['listen() + close(), CPU ns per iteration', 'median (min–max)', 'vs no program, per round', 'sk_follow itself'],
      [row('cgroup nobody follows', l.none, undefined, undefined), row('followed cgroup, port not followed', l.miss, l.missExtra, l.progMiss), row('followed cgroup, followed listener', l.store, l.storeExtra, l.progStore)],
    ),
    '',
    `**Connections**: one server (bench/e2e-server.ts) in a cgroup of its own, attached with \`--pid\`; the follow program is`,
    'attached to its cgroup (a link of the bench\'s own, like skl\'s `follow-<ino>`) for every other slice, so nothing else differs.',
    `bench/e2e-client.ts runs one ${c.sliceMs} ms slice at a time to the extra port, ${c.rounds} rounds, ${c.parallel} connections in flight.`,
    `With the program ${n0(c.followed.median)} conn/s (${n0(c.followed.min)}–${n0(c.followed.max)}), without ${n0(c.plain.median)} (${n0(c.plain.min)}–${n0(c.plain.max)}):`,
    `${fmt(c.ratio.median, 2)}× (per round ${fmt(c.ratio.min, 2)}–${fmt(c.ratio.max, 2)}); errors ${JSON.stringify(c.errors)}. With statistics on, ${c.connections.toLocaleString('en-US')} connections`,
    `ran the program ${fmt(c.runsPerConnection, 1)} times each, ${fmt(c.nsPerConnection, 0)} ns per connection in all; with it detached, ${fmt(c.plainRunsPerConnection, 1)} runs.`,
    '',
    `**UDP**: the tc ingress program (on the namespace's loopback here), ${f.udp.datagrams.toLocaleString('en-US')} datagrams back to back: to a followed`,
    `service's extra port (its socket alive, so the program only checks that: request and reply packets) ${fmt(f.udp.hit.nsPerRun, 0)} ns per packet`,
    `(${f.udp.hit.runs.toLocaleString('en-US')} runs); to a port nothing is bound to (the datagram and the ICMP error it draws) ${fmt(f.udp.unbound.nsPerRun, 0)} ns per packet`,
    `(${f.udp.unbound.runs.toLocaleString('en-US')} runs).`,
    '',
  ];
}

/** A line for the console summary. */
export function followConsole(f: FollowBenchResult): string {
  const l = f.listen;
  return (
    `Following: listen()+close() CPU ${n0(l.none.median)} ns (none), ${n0(l.miss.median)} ns (port not followed), ${n0(l.store.median)} ns (followed listener); ` +
    `sk_follow ${fmt(l.progMiss.nsPerRun, 0)} / ${fmt(l.progStore.nsPerRun, 0)} ns per run; connections ${fmt(f.connect.ratio.median, 2)}× (${fmt(f.connect.runsPerConnection, 1)} runs, ${fmt(f.connect.nsPerConnection, 0)} ns each); ` +
    `UDP tc ${fmt(f.udp.hit.nsPerRun, 0)} / ${fmt(f.udp.unbound.nsPerRun, 0)} ns per packet`
  );
}
