/**
 * UDP replies from the extra port (issue 15): what skl's programs cost, and what a DNS server's
 * clients see.
 *
 * 1. Program cost (BPF_PROG_TEST_RUN), inside a namespace of the bench's own: `sk_reply` (tc
 *    egress) on a prepared reply packet — rewritten (IPv4, IPv6), and packets it leaves alone (UDP
 *    from a port with no reply flag, TCP) — against an empty tc program on the same packet; and
 *    `sk_dispatch` steering a UDP datagram to a service with `--udp-replies rewrite` (it records the
 *    flow) against `off`. A test run reuses one skb for all its repeats, and sk_reply rewrites it in
 *    place: the rewritten case uses two flows, P → E and E → P, so that every run rewrites (flow
 *    lookup, service check, checksum fix, port store). Checked once: the port after one run, and a
 *    valid UDP checksum.
 *
 *        nsenter --net=/run/netns/NS node dist/bench/replies.js [--rounds N] [--repeat N]
 *
 * 2. End to end (`benchRepliesE2e`): dnsmasq on 127.0.0.1:5353, `skl attach --proto udp --ports
 *    5454`, and bench/replies-client.ts asking both ports from connected sockets in interleaved
 *    time slices: queries per second through the extra port against the own port.
 */
import dgram from 'node:dgram';
import {fileURLToPath, pathToFileURL} from 'node:url';
import {parseArgs} from 'node:util';
import {BpfObject, RawProgram, u32Key, type Program} from '../src/bpf/index.js';
import {BPF_PROG_TYPE_SCHED_CLS, TC_ACT_UNSPEC} from '../src/bpf/tc.js';
import {anyPrefix, destIndex, PORT_F_REPLY, portIndex, SVC_F_UDP_REPLIES, SVC_READY, addrBytes, type ServiceMeta} from '../src/dispatcher/layout.js';
import {addBindings} from '../src/dispatcher/bindings.js';
import {DispatcherState, loadDispatcher} from '../src/dispatcher/state.js';
import {mapsOf, PROGRAM_NAME} from '../src/dispatcher/store.js';
import {BenchNetns, check, tool} from './lib/netns.js';
import {dist, SKL} from './lib/proc.js';
import {pairedRatio, roundOrder, summarize, type Summary} from './lib/stats.js';
import type {E2eResult} from './e2e.js';

const SK_PASS = 1;
const IPPROTO_UDP = 17;
const OWN = 5353;
const EXTRA = 5454;
const CLIENT_PORT = 40000;

export interface ReplyVariant {
  id: string;
  program: 'tc-empty' | 'sk_reply' | 'sk_dispatch';
  what: string;
  /** the kernel's average ns per run, one sample per round */
  kernel: Summary;
  samples: number[];
  /** wall-clock ns per run (the syscall over `repeat`), one sample per round */
  wall: Summary;
}

export interface RepliesProgResult {
  repeat: number;
  rounds: number;
  /** each variant did what it should once (port rewritten with a valid checksum, or left alone; the datagram assigned) */
  verified: boolean;
  variants: ReplyVariant[];
}

/** The shape of the TCP end-to-end result (bench/e2e.ts), with answered queries per second for connections per second. */
export interface RepliesE2eResult extends Omit<E2eResult, 'errors' | 'redirected' | 'extraConnections'> {
  /** queries without an answer within the client's timeout */
  lost: {own: number; extra: number};
  /** skl's counters after the run */
  flows: number;
  rewritten: number;
}

export interface RepliesBenchResult {
  prog: RepliesProgResult;
  e2e?: RepliesE2eResult;
  /** why the end-to-end part did not run */
  e2eSkipped?: string;
}

// ---- packets ----

function sum16(b: Buffer, start: number, end: number, acc = 0): number {
  for (let i = start; i < end; i += 2) acc += (b[i] << 8) | (i + 1 < end ? b[i + 1] : 0);
  return acc;
}
const fold = (s: number): number => {
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
};

/** The UDP checksum of an Ethernet frame's IPv4/IPv6 UDP datagram, as it should be (0xffff for a computed 0). */
function udpChecksum(p: Buffer): number {
  const v6 = p.readUInt16BE(12) === 0x86dd;
  const l3 = 14;
  const l4 = v6 ? l3 + 40 : l3 + (p[l3] & 15) * 4;
  const len = p.readUInt16BE(l4 + 4);
  let s = v6 ? sum16(p, l3 + 8, l3 + 40) : sum16(p, l3 + 12, l3 + 20);
  s += IPPROTO_UDP + len;
  const saved = p.readUInt16BE(l4 + 6);
  p.writeUInt16BE(0, l4 + 6);
  s = sum16(p, l4, l4 + len, s);
  p.writeUInt16BE(saved, l4 + 6);
  const c = ~fold(s) & 0xffff;
  return c === 0 ? 0xffff : c;
}

/** An Ethernet frame with a UDP (or TCP: just the ports) datagram from [local]:sport to [client]:dport. */
function frame(family: 4 | 6, sport: number, dport: number, proto = IPPROTO_UDP, payload = 64): Buffer {
  const l4len = 8 + payload;
  const l3 = family === 4 ? 20 : 40;
  const p = Buffer.alloc(14 + l3 + l4len);
  p.writeUInt16BE(family === 4 ? 0x0800 : 0x86dd, 12);
  if (family === 4) {
    p[14] = 0x45;
    p.writeUInt16BE(l3 + l4len, 16);
    p[22] = 64;
    p[23] = proto;
    p.writeUInt32BE(0x7f000001, 26); // 127.0.0.1 → 127.0.0.1
    p.writeUInt32BE(0x7f000001, 30);
    p.writeUInt16BE(fold(~sum16(p, 14, 34) >>> 0) ^ 0xffff, 24);
  } else {
    p.writeUInt32BE(0x60000000, 14);
    p.writeUInt16BE(l4len, 18);
    p[20] = proto;
    p[21] = 64;
    p[37] = 1; // ::1
    p[53] = 1; // ::1
  }
  const l4 = 14 + l3;
  p.writeUInt16BE(sport, l4);
  p.writeUInt16BE(dport, l4 + 2);
  p.writeUInt16BE(l4len, l4 + 4);
  for (let i = 0; i < payload; i++) p[l4 + 8 + i] = (i * 7 + 3) & 255;
  if (proto === IPPROTO_UDP) p.writeUInt16BE(udpChecksum(p), l4 + 6);
  return p;
}

const sportOf = (p: Buffer): number => p.readUInt16BE(p.readUInt16BE(12) === 0x86dd ? 54 : 34);
const checkOf = (p: Buffer): number => p.readUInt16BE(p.readUInt16BE(12) === 0x86dd ? 60 : 40);

/** struct skl_flow_key + struct skl_flow: the client at [::1]/127.0.0.1:CLIENT_PORT, the service's port `from` → `to`. */
function flowEntry(family: 4 | 6, from: number, to: number, service: number): {key: Buffer; value: Buffer} {
  const key = Buffer.alloc(40);
  key[0] = family;
  key.writeUInt16BE(CLIENT_PORT, 2);
  key.writeUInt16BE(from, 4);
  if (family === 4) {
    key.writeUInt32BE(0x7f000001, 8);
    key.writeUInt32BE(0x7f000001, 24);
  } else {
    key[23] = 1;
    key[39] = 1;
  }
  const value = Buffer.alloc(16);
  value.writeBigUInt64LE(process.hrtime.bigint(), 0); // CLOCK_MONOTONIC: bpf_ktime_get_ns's clock
  value.writeUInt32LE(service, 8);
  value.writeUInt16BE(to, 12);
  return {key, value};
}

/** struct bpf_sk_lookup for a UDP datagram from 127.0.0.1:CLIENT_PORT to 127.0.0.1:port. */
function udpLookupCtx(port: number): Buffer {
  const b = Buffer.alloc(72);
  b.writeUInt32LE(2, 8); // AF_INET
  b.writeUInt32LE(IPPROTO_UDP, 12);
  b.writeUInt32BE(0x7f000001, 16);
  b.writeUInt16BE(CLIENT_PORT, 36);
  b.writeUInt32BE(0x7f000001, 40);
  b.writeUInt32LE(port, 60);
  return b;
}

interface Runner {
  id: string;
  program: ReplyVariant['program'];
  what: string;
  prog: Program | RawProgram;
  run: (repeat: number) => {retval: number; durationNs: number; ctxOut?: Buffer; dataOut?: Buffer};
  verify: () => boolean;
}

function meta(flags: number, udpPort: number): ServiceMeta {
  const sockets: ServiceMeta['sockets'] = [undefined, undefined, undefined, undefined];
  sockets[2] = {proto: 'udp', family: 4, v6only: false, pid: process.pid, listenPort: udpPort, listenAddr: addrBytes('127.0.0.1', 4), sockIno: 0};
  return {state: SVC_READY, pid: process.pid, createdNs: 0n, netnsIno: 0, ownerPid: 0, flags, comm: 'bench', name: 'dns', cgroupIno: 0, sockets};
}

export async function benchRepliesProgram(opts: {rounds?: number; repeat?: number} = {}): Promise<RepliesProgResult> {
  const rounds = opts.rounds ?? 15;
  const repeat = opts.repeat ?? 500_000;
  const objects: BpfObject[] = [];
  const raws: RawProgram[] = [];
  const sockets: dgram.Socket[] = [];
  try {
    const runners: Runner[] = [];
    const tcRun = (prog: Program | RawProgram, packet: Buffer) => (repeat: number) => prog.testRun({data: packet, repeat});

    // the floor: an empty tc program (TC_ACT_UNSPEC: next), on the same packet
    const empty = RawProgram.returning(BPF_PROG_TYPE_SCHED_CLS, 'tc_empty', TC_ACT_UNSPEC);
    raws.push(empty);
    const reply4 = frame(4, OWN, CLIENT_PORT);
    runners.push({id: 'tc-empty', program: 'tc-empty', what: 'empty tc program', prog: empty, run: tcRun(empty, reply4), verify: () => true});

    // sk_reply: a service (ready, --udp-replies rewrite) whose own port 5353 and extra port 5454 are both
    // marked, with flows 5353 → 5454 and 5454 → 5353 for the same client: every run rewrites
    const {obj} = loadDispatcher();
    objects.push(obj);
    const d = new DispatcherState('foreground', mapsOf(obj), 0);
    d.writeService(0, meta(SVC_F_UDP_REPLIES, OWN));
    d.writePorts([
      [portIndex('udp', OWN), PORT_F_REPLY],
      [portIndex('udp', EXTRA), PORT_F_REPLY],
    ]);
    for (const family of [4, 6] as const) {
      for (const [from, to] of [
        [OWN, EXTRA],
        [EXTRA, OWN],
      ]) {
        const f = flowEntry(family, from, to, 0);
        d.maps.udp_flows.update(f.key, f.value);
      }
    }
    const reply = obj.program('sk_reply');
    const rewritten = (packet: Buffer) => (): boolean => {
      const out = reply.testRun({data: packet, repeat: 1}).dataOut!;
      return sportOf(out) === EXTRA && checkOf(out) === udpChecksum(out);
    };
    const unchanged = (packet: Buffer) => (): boolean => reply.testRun({data: packet, repeat: 1}).dataOut!.equals(packet);
    const reply6 = frame(6, OWN, CLIENT_PORT);
    const other = frame(4, 9999, CLIENT_PORT);
    const tcp = frame(4, OWN, CLIENT_PORT, 6);
    runners.push({id: 'reply-rewrite-4', program: 'sk_reply', what: 'IPv4 reply rewritten', prog: reply, run: tcRun(reply, reply4), verify: rewritten(reply4)});
    runners.push({id: 'reply-rewrite-6', program: 'sk_reply', what: 'IPv6 reply rewritten', prog: reply, run: tcRun(reply, reply6), verify: rewritten(reply6)});
    runners.push({id: 'reply-other-udp', program: 'sk_reply', what: 'UDP from a port without replies (left alone)', prog: reply, run: tcRun(reply, other), verify: unchanged(other)});
    runners.push({id: 'reply-tcp', program: 'sk_reply', what: 'TCP (left alone)', prog: reply, run: tcRun(reply, tcp), verify: unchanged(tcp)});

    // sk_dispatch: a UDP datagram to the extra port, steered to the service's socket; with the
    // replies flag it also records (refreshes) the flow
    for (const flags of [0, SVC_F_UDP_REPLIES]) {
      const {obj: o} = loadDispatcher();
      objects.push(o);
      const dd = new DispatcherState('foreground', mapsOf(o), 0);
      const sock = dgram.createSocket('udp4');
      sockets.push(sock);
      await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', resolve));
      const fd = (sock as unknown as {_handle: {fd: number}})._handle.fd;
      dd.resetCounters(0);
      dd.setSocket(destIndex(0, 'udp', 4), fd);
      dd.writeService(0, meta(flags, sock.address().port));
      addBindings(dd, 0, [{proto: 'udp', prefix: anyPrefix(4), port: EXTRA}]);
      const cookie = o.map('target_socket').lookup(u32Key(destIndex(0, 'udp', 4)))!.readBigUInt64LE(0);
      const prog = o.program(PROGRAM_NAME);
      const ctx = udpLookupCtx(EXTRA);
      runners.push({
        id: flags ? 'dispatch-udp-rewrite' : 'dispatch-udp-off',
        program: 'sk_dispatch',
        what: flags ? 'UDP datagram steered, flow recorded (--udp-replies rewrite)' : 'UDP datagram steered (--udp-replies off)',
        prog,
        run: (r) => prog.testRun({ctx, repeat: r}),
        verify: () => {
          const res = prog.testRun({ctx, repeat: 1});
          const flows = [...o.map('udp_flows').keys()].length;
          return res.retval === SK_PASS && res.ctxOut!.readBigUInt64LE(0) === cookie && flows === (flags ? 1 : 0);
        },
      });
    }

    let verified = true;
    for (const r of runners) {
      if (!r.verify()) {
        verified = false;
        process.stderr.write(`bench/replies: ${r.id} did not do what it should\n`);
      }
      r.run(Math.min(repeat, 100_000)); // warm-up
    }
    const wall = runners.map(() => [] as number[]);
    const kernel = runners.map(() => [] as number[]);
    for (let round = 0; round < rounds; round++) {
      for (const i of roundOrder(runners.length, round)) {
        const t0 = process.hrtime.bigint();
        const res = runners[i].run(repeat);
        wall[i].push(Number(process.hrtime.bigint() - t0) / repeat);
        kernel[i].push(res.durationNs);
      }
    }
    return {
      repeat,
      rounds,
      verified,
      variants: runners.map((r, i) => ({id: r.id, program: r.program, what: r.what, kernel: summarize(kernel[i]), samples: kernel[i], wall: summarize(wall[i])})),
    };
  } finally {
    for (const s of sockets) s.close();
    for (const o of objects) o.close();
    for (const r of raws) r.close();
  }
}

// ---- end to end ----

interface ClientOut {
  slices: {port: number; round: number; ms: number; ok: number; lost: number; rate: number}[];
  warmup: Record<string, number>;
}

export async function benchRepliesE2e(opts: {rounds?: number; sliceMs?: number; parallel?: number} = {}): Promise<RepliesE2eResult> {
  const rounds = opts.rounds ?? 10;
  const sliceMs = opts.sliceMs ?? 500;
  const parallel = opts.parallel ?? 8;
  const dnsmasq = tool('dnsmasq');
  const ns = BenchNetns.create();
  try {
    const node = process.execPath;
    const server = ns.spawn(dnsmasq, ['--keep-in-foreground', '--no-resolv', '--no-hosts', '--conf-file=/dev/null', '--bind-interfaces', `--port=${OWN}`, '--listen-address=127.0.0.1', '--address=/skl.test/127.0.0.7', '--user=root', '--log-facility=-', '--pid-file='], {stdio: ['ignore', 'ignore', 'pipe']});
    // wait for its socket
    for (let i = 0; i < 100 && !ns.exec('ss', ['-Hlnu']).stdout.includes(`127.0.0.1:${OWN}`); i++) await new Promise((r) => setTimeout(r, 100));
    check('skl attach', ns.exec(node, [SKL, 'attach', '--pid', String(server.pid), '--proto', 'udp', '--ports', String(EXTRA), '--name', 'dns']));
    const client = ns.exec(node, [dist('replies-client.js'), '--ports', `${OWN},${EXTRA}`, '--rounds', String(rounds), '--slice-ms', String(sliceMs), '--parallel', String(parallel)], {
      timeoutMs: (rounds * 2 * sliceMs + 60_000) * 2,
    });
    check('replies-client', client);
    const out = JSON.parse(client.stdout.trim().split('\n').pop()!) as ClientOut;
    const status = JSON.parse(check('skl status', ns.exec(node, [SKL, 'status', 'dns', '--json'])).stdout) as {attachments: {flows?: number; rewritten?: number}[]};
    check('skl detach', ns.exec(node, [SKL, 'detach', 'dns']));
    const by = (port: number): number[] => out.slices.filter((s) => s.port === port).sort((a, b) => a.round - b.round).map((s) => s.rate);
    const lost = (port: number): number => out.slices.filter((s) => s.port === port).reduce((n, s) => n + s.lost, 0);
    const own = by(OWN);
    const extra = by(EXTRA);
    return {
      rounds,
      sliceMs,
      parallel,
      ownPort: OWN,
      extraPort: EXTRA,
      own: summarize(own),
      extra: summarize(extra),
      ownSamples: own,
      extraSamples: extra,
      ratio: pairedRatio(extra, own),
      lost: {own: lost(OWN), extra: lost(EXTRA)},
      flows: status.attachments[0]?.flows ?? 0,
      rewritten: status.attachments[0]?.rewritten ?? 0,
    };
  } finally {
    await ns.destroy();
  }
}

async function main(): Promise<void> {
  // a dgram socket's fd is only reachable through its (deprecated) _handle
  process.noDeprecation = true;
  const {values} = parseArgs({options: {rounds: {type: 'string'}, repeat: {type: 'string'}}});
  const r = await benchRepliesProgram({rounds: values.rounds ? Number(values.rounds) : undefined, repeat: values.repeat ? Number(values.repeat) : undefined});
  process.stdout.write(`${JSON.stringify(r)}\n`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error) => {
    process.stderr.write(`bench/replies: ${(error as Error).stack ?? error}\n`);
    process.exit(1);
  });
}

export const REPLIES_WORKER = fileURLToPath(import.meta.url);
