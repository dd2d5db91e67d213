/**
 * Program cost (BPF_PROG_TEST_RUN) of skl's sk_lookup dispatcher against the floor (an empty
 * sk_lookup program, bench/bpf/sk_empty.c) and the seed's design (HASH of ≤1024 ports + a 1-entry
 * SOCKMAP, bench/bpf/sk_seed.c), on a port miss and on a hit, at several port and target counts.
 *
 * Runs inside a network namespace of the bench's own (the targets are real listening sockets of
 * this process on 127.0.0.1): `nsenter --net=/run/netns/NS node dist/bench/prog.js [--rounds N]
 * [--repeat N]` prints one JSON object (ProgBenchResult). bench/run.ts does that for you.
 *
 * Every variant is loaded up front (unpinned, never attached), then each round runs every variant
 * once, in an order that rotates between rounds. Per variant and round we keep the wall-clock time
 * of the test-run syscall divided by `repeat` (fractional ns; one syscall amortised over `repeat`
 * runs) and the kernel's own average (integer ns).
 */
import {spawnSync} from 'node:child_process';
import {readFileSync} from 'node:fs';
import net from 'node:net';
import {fileURLToPath, pathToFileURL} from 'node:url';
import {parseArgs} from 'node:util';
import {BpfObject, u32Key, type BpfMap, type Program} from '../src/bpf/index.js';
import {anyPrefix, destIndex, MAX_SERVICES, SVC_READY, type Prefix} from '../src/dispatcher/layout.js';
import {addBindings, type BindingSpec} from '../src/dispatcher/bindings.js';
import {DispatcherState, loadDispatcher} from '../src/dispatcher/state.js';
import {mapsOf, PROGRAM_NAME} from '../src/dispatcher/store.js';
import {roundOrder, summarize, type Summary} from './lib/stats.js';

const ROOT = new URL('../../', import.meta.url);
const AF_INET = 2;
const IPPROTO_TCP = 6;
const SK_PASS = 1;

/** Port counts measured for skl's dispatcher ("all" = every TCP port but the miss port). */
export const PORT_SIZES = [1, 1024, 65534] as const;
/** Services (each with its own listening socket) the ports are spread over. */
export const TARGET_COUNTS = [1, 64, MAX_SERVICES] as const;
/** Host (/32) and prefix (/24) bindings, both in the bindings hash: 1, and 1,000 addresses or prefixes × 1,000 ports. */
export const PREFIX_SIZES = [1, 1_000_000] as const;
/** The seed's HASH holds at most 1024 ports. */
export const SEED_PORT_SIZES = [1, 1024] as const;
/** No size claims this port: every miss is measured on it. */
export const MISS_PORT = 65535;
const FIRST_PORT = 10000;

export interface VariantResult {
  id: string;
  program: 'empty' | 'seed' | 'skl';
  case: 'miss' | 'hit' | 'any' | 'prefix-hit' | 'prefix-miss';
  ports: number;
  /** services the bindings are spread over */
  targets: number;
  /** bindings of a local prefix (the bindings hash) */
  prefixBindings?: number;
  /** wall-clock ns per run, one sample per round */
  wall: Summary;
  /** the kernel's average ns per run (integer), one sample per round */
  kernel: Summary;
  /** raw per-round wall samples (for paired ratios) */
  samples: number[];
}

export interface ProgramShape {
  program: string;
  xlatedInsns: number;
  jitedBytes: number;
  /** helper calls (and their names) in the translated program */
  calls: string[];
}

export interface ProgBenchResult {
  repeat: number;
  rounds: number;
  variants: VariantResult[];
  shapes: ProgramShape[];
  /** every hit assigned the expected socket (ctx cookie = SOCKMAP cookie), every miss none */
  verified: boolean;
}

/** struct bpf_sk_lookup (72 bytes) for an IPv4 TCP lookup 127.0.0.1:40000 → local:port. */
export function skLookupCtx(localPort: number, protocol = IPPROTO_TCP, local = 0x7f000001): Buffer {
  const b = Buffer.alloc(72);
  b.writeUInt32LE(AF_INET, 8); // family
  b.writeUInt32LE(protocol, 12); // protocol
  b.writeUInt32BE(0x7f000001, 16); // remote_ip4, network order
  b.writeUInt16BE(40000, 36); // remote_port, network order
  b.writeUInt32BE(local >>> 0, 40); // local_ip4, network order
  b.writeUInt32LE(localPort, 60); // local_port, host order
  return b; // ingress_ifindex (64) must stay 0 for a test run
}

interface Runner {
  id: string;
  program: VariantResult['program'];
  case: VariantResult['case'];
  ports: number;
  targets: number;
  prefixBindings?: number;
  prog: Program;
  ctx: Buffer;
  /** expected ctx cookie after the run: 0n for a miss */
  cookie: bigint;
}

function listen(): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen({host: '127.0.0.1', port: 0, backlog: 8}, () => resolve(s));
  });
}
const fdOf = (s: net.Server): number => (s as unknown as {_handle: {fd: number}})._handle.fd;

function cookieOf(map: BpfMap, slot: number): bigint {
  const v = map.lookup(u32Key(slot));
  if (!v) throw new Error(`no socket in slot ${slot}`);
  return v.readBigUInt64LE(0);
}

/** Claimed ports for a size: FIRST_PORT.. upwards, or every port but MISS_PORT. */
function portsFor(size: number): number[] {
  if (size >= 65534) return Array.from({length: 65534}, (_, i) => i + 1);
  return Array.from({length: size}, (_, i) => FIRST_PORT + i);
}

function shapeOf(prog: Program): ProgramShape {
  const bpftool = ['/usr/sbin/bpftool', '/sbin/bpftool', 'bpftool'].find((p) => spawnSync(p, ['version'], {stdio: 'ignore'}).status === 0);
  if (!bpftool) return {program: prog.name, xlatedInsns: NaN, jitedBytes: NaN, calls: []};
  // the program's id, from its fd's fdinfo
  const info = readFileSync(`/proc/self/fdinfo/${prog.fd}`, 'utf8');
  const id = Number(/prog_id:\s*(\d+)/.exec(info)?.[1]);
  const meta = JSON.parse(spawnSync(bpftool, ['-j', 'prog', 'show', 'id', String(id)], {encoding: 'utf8'}).stdout) as {bytes_xlated: number; bytes_jited: number};
  const xlated = spawnSync(bpftool, ['prog', 'dump', 'xlated', 'id', String(id)], {encoding: 'utf8'}).stdout;
  const calls = [...xlated.matchAll(/call ([A-Za-z_0-9#]+)/g)].map((m) => m[1]);
  return {program: prog.name, xlatedInsns: meta.bytes_xlated / 8, jitedBytes: meta.bytes_jited, calls};
}

export async function benchProgram(opts: {rounds?: number; repeat?: number} = {}): Promise<ProgBenchResult> {
  const rounds = opts.rounds ?? 15;
  const repeat = opts.repeat ?? 500_000;
  const servers: net.Server[] = [];
  const objects: BpfObject[] = [];
  try {
    for (let i = 0; i < MAX_SERVICES; i++) servers.push(await listen());
    const runners: Runner[] = [];

    // the floor
    const empty = BpfObject.load(readFileSync(new URL('bench/bpf/sk_empty.o', ROOT)), {name: 'sk_empty.o'});
    objects.push(empty);
    runners.push({id: 'empty', program: 'empty', case: 'any', ports: 0, targets: 0, prog: empty.program('sk_empty'), ctx: skLookupCtx(MISS_PORT), cookie: 0n});

    // the seed's design: one socket, ≤1024 ports
    for (const size of SEED_PORT_SIZES) {
      const seed = BpfObject.load(readFileSync(new URL('bench/bpf/sk_seed.o', ROOT)), {name: 'sk_seed.o'});
      objects.push(seed);
      const ports = portsFor(size);
      const keys = Buffer.alloc(2 * ports.length);
      ports.forEach((p, i) => keys.writeUInt16LE(p, 2 * i));
      seed.map('add_ports').updateBatch(keys, Buffer.alloc(ports.length, 1), ports.length);
      const sockmap = seed.map('target_socket');
      const v = Buffer.alloc(8);
      v.writeUInt32LE(fdOf(servers[0]));
      sockmap.update(u32Key(0), v);
      const prog = seed.program('redir_port');
      const base = {program: 'seed' as const, ports: size, targets: 1, prog};
      runners.push({...base, id: `seed-miss-${size}`, case: 'miss', ctx: skLookupCtx(MISS_PORT), cookie: 0n});
      runners.push({...base, id: `seed-hit-${size}`, case: 'hit', ctx: skLookupCtx(ports[ports.length - 1]), cookie: cookieOf(sockmap, 0)});
    }

    // skl's dispatcher, maps filled through skl's own binding code
    const dispatcher = (services: number): {obj: BpfObject; d: DispatcherState} => {
      const obj = loadDispatcher().obj;
      objects.push(obj);
      const d = new DispatcherState('foreground', mapsOf(obj), 0);
      for (let id = 0; id < services; id++) {
        d.resetCounters(id);
        d.setSocket(destIndex(id, 'tcp', 4), fdOf(servers[id]));
        d.writeService(id, {state: SVC_READY, pid: process.pid, createdNs: 0n, netnsIno: 0, ownerPid: 0, flags: 0, comm: 'bench', name: `s${id}`, cgroupIno: 0, sockets: []});
      }
      return {obj, d};
    };
    for (const size of PORT_SIZES) {
      for (const targets of TARGET_COUNTS) {
        const {obj, d} = dispatcher(targets);
        const ports = portsFor(size);
        // ports spread over the services round-robin; the hit port (the last) belongs to the last service
        const offset = targets - (ports.length % targets || targets);
        const by = new Map<number, BindingSpec[]>();
        ports.forEach((port, i) => {
          const id = (i + offset) % targets;
          by.set(id, [...(by.get(id) ?? []), {proto: 'tcp', prefix: anyPrefix(4), port}]);
        });
        for (const [id, list] of by) addBindings(d, id, list);
        const hitPort = ports[ports.length - 1];
        const prog = obj.program(PROGRAM_NAME);
        const base = {program: 'skl' as const, ports: size, targets, prog};
        runners.push({...base, id: `skl-miss-${size}-${targets}`, case: 'miss', ctx: skLookupCtx(MISS_PORT), cookie: 0n});
        runners.push({...base, id: `skl-hit-${size}-${targets}`, case: 'hit', ctx: skLookupCtx(hitPort), cookie: cookieOf(obj.map('target_socket'), destIndex(targets - 1, 'tcp', 4))});
      }
    }
    // host bindings (/32) and prefix bindings (/24), in the bindings hash with their length listed in
    // each port's entry: 1,000 addresses or prefixes × 1,000 ports (or one of each), one service; the
    // hit is the last of them
    for (const kind of ['host', 'prefix'] as const) {
      for (const n of PREFIX_SIZES) {
        const {obj, d} = dispatcher(1);
        const addrs = n === 1 ? 1 : 1000;
        const ports = portsFor(n / addrs);
        const len = kind === 'host' ? 32 : 24;
        // 127.1.0.1, 127.1.0.2, ... (/32) or 127.1.0.0/24, 127.1.1.0/24, ... (/24)
        const ip = (i: number): number => (kind === 'host' ? 0x7f010000 + i + 1 : 0x7f010000 + (i << 8)) >>> 0;
        const prefix = (i: number): Prefix => {
          const addr = new Uint8Array(16);
          addr[10] = addr[11] = 0xff;
          new DataView(addr.buffer).setUint32(12, ip(i));
          return {family: 4, addr, len};
        };
        const list: BindingSpec[] = [];
        for (let a = 0; a < addrs; a++) for (const port of ports) list.push({proto: 'tcp', prefix: prefix(a), port});
        addBindings(d, 0, list);
        const hitIp = kind === 'host' ? ip(addrs - 1) : ip(addrs - 1) + 7;
        const prog = obj.program(PROGRAM_NAME);
        const base = {program: 'skl' as const, ports: ports.length, targets: 1, prefixBindings: n, prog};
        runners.push({...base, id: `skl-${kind}-hit-${n}`, case: 'prefix-hit', ctx: skLookupCtx(ports[ports.length - 1], IPPROTO_TCP, hitIp), cookie: cookieOf(obj.map('target_socket'), destIndex(0, 'tcp', 4))});
        runners.push({...base, id: `skl-${kind}-miss-${n}`, case: 'prefix-miss', ctx: skLookupCtx(ports[0], IPPROTO_TCP, 0x7e000001), cookie: 0n});
      }
    }

    // verify each variant once, then warm up
    let verified = true;
    for (const r of runners) {
      const res = r.prog.testRun({ctx: r.ctx, repeat: 1});
      const cookie = res.ctxOut!.readBigUInt64LE(0);
      if (res.retval !== SK_PASS || cookie !== r.cookie) {
        verified = false;
        process.stderr.write(`bench: ${r.id}: retval ${res.retval}, cookie ${cookie} (expected ${r.cookie})\n`);
      }
      r.prog.testRun({ctx: r.ctx, repeat: Math.min(repeat, 100_000)});
    }

    const wall = runners.map(() => [] as number[]);
    const kernel = runners.map(() => [] as number[]);
    for (let round = 0; round < rounds; round++) {
      for (const i of roundOrder(runners.length, round)) {
        const r = runners[i];
        const t0 = process.hrtime.bigint();
        const res = r.prog.testRun({ctx: r.ctx, repeat});
        const ns = Number(process.hrtime.bigint() - t0);
        wall[i].push(ns / repeat);
        kernel[i].push(res.durationNs);
      }
    }

    const shapes = [empty.program('sk_empty'), objects[1].program('redir_port'), objects[objects.length - 1].program(PROGRAM_NAME)].map(shapeOf);
    return {
      repeat,
      rounds,
      verified,
      shapes,
      variants: runners.map((r, i) => ({
        id: r.id,
        program: r.program,
        case: r.case,
        ports: r.ports,
        targets: r.targets,
        ...(r.prefixBindings ? {prefixBindings: r.prefixBindings} : {}),
        wall: summarize(wall[i]),
        kernel: summarize(kernel[i]),
        samples: wall[i],
      })),
    };
  } finally {
    for (const o of objects) o.close();
    for (const s of servers) s.close();
  }
}

async function main(): Promise<void> {
  const {values} = parseArgs({options: {rounds: {type: 'string'}, repeat: {type: 'string'}}});
  const r = await benchProgram({rounds: values.rounds ? Number(values.rounds) : undefined, repeat: values.repeat ? Number(values.repeat) : undefined});
  process.stdout.write(`${JSON.stringify(r)}\n`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error) => {
    process.stderr.write(`bench/prog: ${(error as Error).stack ?? error}\n`);
    process.exit(1);
  });
}

export const PROG_WORKER = fileURLToPath(import.meta.url);
