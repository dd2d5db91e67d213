// Following a service across restarts, in the kernel, with no daemon: real processes in a real
// cgroup v2 directory (created under the cgroup2 mount found in /proc/self/mountinfo), restarted
// while skl is not running. The follow programs must store every new listener (TCP) or socket (UDP)
// of the service, and never a socket of a process outside the cgroup or of another network
// namespace; a reuseport group keeps serving while one member is left.
import type {ExecutionContext} from 'ava';
import {existsSync} from 'node:fs';
import {spawnSync} from 'node:child_process';
import {createInterface} from 'node:readline';
import {Netns as SysNetns} from '../src/sys/netns.js';
import {listTcFilters} from '../src/bpf/tc.js';
import {BpfMap} from '../src/bpf/map.js';
import {progInfoByFd} from '../src/bpf/info.js';
import {libbpf} from '../src/ffi/index.js';
import {close as closeFd} from '../src/ffi/libc.js';
import {createNetns, stopChild, type Netns} from './helpers/netns.js';
import {useSkl, type SklContext} from './helpers/dispatcher.js';
import {connectOnce, netCounters} from './helpers/clients.js';
import {TOY_SERVER_SCRIPT} from './helpers/servers.js';
import {needing, privileged} from './helpers/privileged.js';
import {bpfLinks} from './helpers/links.js';
import {inCgroup, makeCgroup, type TestCgroup} from './helpers/cgroups.js';
import {reuseportServerBinary, startReuseportMember, startServerIn, type ServerProcess} from './helpers/reuseport.js';
import {describeRun, pinFilesOf, runSkl, stderrLines} from './helpers/reliability.js';

const HOST = '127.0.0.1';
const BPF_LINK_TYPE_CGROUP = 3;
/** enum bpf_attach_type */
const BPF_CGROUP_INET_SOCK_CREATE = 2;
const BPF_CGROUP_SOCK_OPS = 3;
type Proto = 'tcp' | 'udp';
type Cg = TestCgroup;

type Srv = ServerProcess;

/** The toy server (TCP or UDP), started inside cgroup `cg` (or none) and namespace `ns`; resolves once it listens (is bound). */
async function serve(t: ExecutionContext, ns: Netns, cg: Cg | undefined, port: number, host = HOST, proto: Proto = 'tcp'): Promise<Srv> {
  const argv = [process.execPath, TOY_SERVER_SCRIPT, '--proto', proto, '--host', host, '--port', String(port), '--exit-on-stdin-eof'];
  const s = await startServerIn(ns, argv, cg?.dir, 'toy server');
  t.teardown(() => s.stop());
  return s;
}

/** Who answers one connection (TCP) or datagram (UDP) to host:port: its pid, or the error. */
const who = async (ns: Netns, port: number, host = HOST, proto: Proto = 'tcp', timeoutMs = 10_000): Promise<number | string> => {
  const r = await connectOnce(ns, {proto, host, port, timeoutMs});
  return r.ok ? r.reply.pid : r.error;
};

/**
 * A datagram nobody must answer: it reaches no socket (the namespace's UdpNoPorts counter goes up
 * by exactly one) and gets no reply. The wait only bounds how long the client listens for one.
 */
async function unanswered(t: ExecutionContext, ns: Netns, port: number, what: string): Promise<void> {
  const before = netCounters(ns).udpNoPorts;
  t.is(await who(ns, port, HOST, 'udp', 1_000), 'ETIMEDOUT', `${what}: no reply`);
  t.is(netCounters(ns).udpNoPorts - before, 1, `${what}: the datagram reached no socket`);
}

/** The cgroup's bpf_links (any attach type): skl attaches nothing to a cgroup any other way. */
const cgroupLinksOf = (cg: Cg) => bpfLinks().filter(l => l.type === BPF_LINK_TYPE_CGROUP && l.cgroupId === cg.ino);
const cgroupLinks = (cg: Cg): number => cgroupLinksOf(cg).length;
/** The attach types of the cgroup's links, sorted: 2 sock_create (UDP), 3 sock_ops (TCP). */
const cgroupLinkTypes = (cg: Cg): number[] => cgroupLinksOf(cg).map(l => l.attachType).sort();

/** The cgroups listed in the dispatcher's follow_cgroups map (a UDP service follows them). */
function followedCgroups(sk: SklContext): number[] {
  if (!existsSync(`${sk.pinDir}/follow_cgroups`)) return [];
  const m = BpfMap.openPinned(`${sk.pinDir}/follow_cgroups`);
  try {
    return [...m.keys()].map(k => Number(k.readBigUInt64LE(0))).sort();
  } finally {
    m.close();
  }
}

/**
 * skl put its UDP follow program (sk_follow_udp, tc ingress) on lo itself: loaded and pinned when
 * the first followed UDP service came (a dispatcher is created without it), then attached as a
 * TCX link or a clsact filter.
 */
function expectFollowUdpOnLo(t: ExecutionContext, ns: Netns, sk: SklContext): void {
  const fd = libbpf.bpf_obj_get(`${sk.pinDir}/follow_udp_prog`);
  t.true(fd >= 0, `follow_udp_prog pinned in ${sk.pinDir}`);
  if (fd < 0) return;
  const sys = SysNetns.open(ns.path);
  try {
    const id = progInfoByFd(fd).id;
    t.true(bpfLinks().some(l => l.progId === id) || sys.run(() => listTcFilters(1, 'ingress').some(f => f.progId === id)), "skl's sk_follow_udp is on lo's ingress");
  } finally {
    sys.close();
    closeFd(fd);
  }
}

async function setup(t: ExecutionContext): Promise<{ns: Netns; sk: SklContext; cg: Cg}> {
  const ns = createNetns(t);
  const sk = useSkl(t, ns);
  return {ns, sk, cg: makeCgroup(t)};
}

privileged.serial('follow: attached before it starts; 20 restarts with no skl running: the first connection to the extra port after each start reaches the new process, every time', async t => {
  t.timeout(300_000);
  const {ns, sk, cg} = await setup(t);
  const r = await sk.ok(['attach', '--cgroup', cg.path, '--listener', `${HOST}:7001`, '--ports', '8001', '--name', 'app']);
  t.regex(r.stdout, new RegExp(`attached app: TCP 8001 → the first listener on 127\\.0\\.0\\.1:7001 \\(follows cgroup ${cg.path} across restarts\\)`));
  t.like(await sk.attachment('app'), {alive: false, retaken: 0, follow: {cgroup: cg.path, currentPid: 0, listeners: ['127.0.0.1:7001']}});
  t.is(cgroupLinks(cg), 1, 'one sock_ops link on the cgroup');
  let late = 0;
  let wrong = 0;
  let stale = 0;
  for (let i = 0; i < 20; i++) {
    const s = await serve(t, ns, cg, 7001);
    t.is(await who(ns, 7001), s.pid, 'the new process accepts on its own port');
    const extra = await who(ns, 8001);
    if (typeof extra === 'string') late++;
    else if (extra !== s.pid) wrong++;
    await s.stop();
    if ((await who(ns, 8001)) !== 'ECONNREFUSED') stale++;
  }
  t.deepEqual({late, wrong, stale}, {late: 0, wrong: 0, stale: 0}, 'each start: the extra port at once; each stop: refused at once');
  const st = await sk.attachment('app');
  t.is(st.retaken, 20);
  t.is(st.redirected, 20);
});

privileged.serial('follow: never a black hole — an impostor outside the cgroup and a listener of another namespace in the cgroup are never steered to', async t => {
  t.timeout(180_000);
  const {ns, sk, cg} = await setup(t);
  await sk.ok(['attach', '--cgroup', cg.path, '--listener', `${HOST}:7001`, '--ports', '8001', '--name', 'app']);
  // a process outside the cgroup takes the address while the service is down
  const impostor = await serve(t, ns, undefined, 7001);
  t.is(await who(ns, 7001), impostor.pid, 'it owns its own port');
  t.is(await who(ns, 8001), 'ECONNREFUSED', 'but never the extra ports');
  await impostor.stop();
  // a process in the cgroup but in another network namespace, same address and port
  const other = createNetns(t);
  const foreign = await serve(t, other, cg, 7001);
  t.is(await who(other, 7001), foreign.pid);
  t.is(await who(ns, 8001), 'ECONNREFUSED', 'refused, not hanging: the foreign socket was not stored');
  t.is((await sk.attachment('app')).retaken, 0);
  // the real one
  const real = await serve(t, ns, cg, 7001);
  t.is(await who(ns, 8001), real.pid);
  t.is((await sk.attachment('app')).retaken, 1);
});

privileged.serial('follow --pid P --follow: restarts followed; a shared cgroup is refused with the reason (unless --force); detach leaves nothing on the cgroup', async t => {
  t.timeout(180_000);
  const {ns, sk, cg} = await setup(t);
  const first = await serve(t, ns, cg, 7001);
  await sk.ok(['attach', '--pid', String(first.pid), '--follow', '--ports', '8001', '--name', 'app']);
  t.is(await who(ns, 8001), first.pid);
  await first.stop();
  const second = await serve(t, ns, cg, 7001);
  t.is(await who(ns, 8001), second.pid, 'the restart was followed');
  t.like(await sk.attachment('app'), {pid: second.pid, alive: true, retaken: 1, follow: {currentPid: second.pid}});

  // a cgroup shared with an unrelated process
  const shared = makeCgroup(t);
  const s = await serve(t, ns, shared, 7002);
  const [sh, ...shArgs] = inCgroup(shared.dir, ['sleep', '600']);
  const stranger = ns.spawn(sh, shArgs, {stdio: 'ignore'});
  t.teardown(() => stopChild(stranger));
  await new Promise(r => setTimeout(r, 200));
  const refused = await sk.run(['attach', '--pid', String(s.pid), '--follow', '--ports', '8002', '--name', 'shared']);
  t.is(refused.code, 1, refused.stderr);
  t.regex(refused.stderr, new RegExp(`^error: the cgroup of process ${s.pid} \\(${shared.path}\\) is shared with 1 unrelated process \\(sleep\\[\\d+\\]\\): .*--force\\n$`));
  t.false((await sk.status()).attachments.some(a => a.name === 'shared'), 'nothing changed');
  await sk.ok(['attach', '--pid', String(s.pid), '--follow', '--force', '--ports', '8002', '--name', 'shared']);
  t.is(await who(ns, 8002), s.pid);

  t.is(cgroupLinks(cg), 1);
  t.is(cgroupLinks(shared), 1);
  await sk.ok(['detach', 'app']);
  t.is(cgroupLinks(cg), 0, 'the cgroup no service follows any more has no link');
  t.is(cgroupLinks(shared), 1);
  t.false(pinFilesOf(sk.ino).includes(`follow-${cg.ino}`));
  await sk.ok(['detach', 'shared']);
  t.is(cgroupLinks(shared), 0);
  t.deepEqual(pinFilesOf(sk.ino), []);
});

privileged.serial('follow: refused with one line where it cannot work (--foreground, nothing to follow yet, not a cgroup)', async t => {
  t.timeout(60_000);
  const {ns, sk, cg} = await setup(t);
  const cases: [string[], number, RegExp][] = [
    [['attach', '--cgroup', cg.path, '--listener', ':7001', '--ports', '8001', '--foreground'], 2, /--foreground does not follow restarts/],
    [['attach', '--cgroup', cg.path, '--ports', '8001'], 2, /nothing in cgroup .* listens yet: say which listener to follow with --listener/],
    [['attach', '--cgroup', '/no/such/cgroup', '--listener', ':7001', '--ports', '8001'], 1, /is not a cgroup v2 directory/],
    [['attach', '--ports', '8001'], 2, /give the target: --pid PID, --cgroup PATH or --unit NAME/],
  ];
  for (const [args, code, says] of cases) {
    const r = await runSkl(args, {netns: ns.path});
    t.is(r.code, code, `${args.join(' ')}: ${describeRun(r)}`);
    t.is(stderrLines(r).length, 1, r.stderr);
    t.regex(r.stderr, says);
  }
  t.deepEqual(pinFilesOf(sk.ino), [], 'nothing was created');
  t.is(cgroupLinks(cg), 0);
});

privileged.serial('follow: skl SIGKILLed with the follow entries written → the pending service steers nothing; the next skl rolls it back and removes the cgroup link', async t => {
  t.timeout(120_000);
  const {ns, sk, cg} = await setup(t);
  const keep = await serve(t, ns, undefined, 7100);
  await sk.ok(['attach', '--pid', String(keep.pid), '--name', 'keep', '--ports', '8100']);
  const crashed = await runSkl(['attach', '--cgroup', cg.path, '--listener', `${HOST}:7001`, '--ports', '8001', '--name', 'app'], {netns: ns.path, env: {SKL_TEST_CRASH_AT: 'follow:entries'}});
  t.is(crashed.signal, 'SIGKILL', describeRun(crashed));
  const s = await serve(t, ns, cg, 7001);
  t.is(await who(ns, 8001), 'ECONNREFUSED', 'a pending service never steers, even with its socket stored');
  const next = await runSkl(['status', '--json'], {netns: ns.path});
  t.true(stderrLines(next).includes('notice: rolled back app, left half-made by an interrupted skl'), next.stderr);
  t.is(cgroupLinks(cg), 0, 'the link of a cgroup nothing follows is removed');
  t.is(await who(ns, 8100), keep.pid);
  await sk.ok(['attach', '--cgroup', cg.path, '--listener', `${HOST}:7001`, '--ports', '8001', '--name', 'app']);
  t.is(await who(ns, 8001), s.pid, 'attached while it runs: its socket is taken now');
});

// ---------------------------------------------------------------------------------------------
// UDP: tagged at creation in the cgroup (sock_create), stored on the first datagram (tc ingress)
// ---------------------------------------------------------------------------------------------

privileged.serial('follow UDP: attached before it starts; 20 restarts with no skl running: the first datagram to the extra port after each start is answered by the new process, every time', async t => {
  t.timeout(300_000);
  const {ns, sk, cg} = await setup(t);
  const r = await sk.ok(['attach', '--cgroup', cg.path, '--listener', `${HOST}:7001`, '--proto', 'udp', '--ports', '8001', '--name', 'app']);
  t.regex(r.stdout, new RegExp(`attached app: UDP 8001 → the first listener on 127\\.0\\.0\\.1:7001 \\(follows cgroup ${cg.path} across restarts\\)`));
  expectFollowUdpOnLo(t, ns, sk);
  t.like(await sk.attachment('app'), {protocols: ['udp'], alive: false, retaken: 0, follow: {cgroup: cg.path, currentPid: 0, listeners: ['127.0.0.1:7001']}});
  t.deepEqual(cgroupLinkTypes(cg), [BPF_CGROUP_INET_SOCK_CREATE], 'a UDP service: the sock_create link only (no sock_ops program on the cgroup)');
  t.deepEqual(followedCgroups(sk), [cg.ino]);
  await unanswered(t, ns, 8001, 'before the service starts');
  let late = 0;
  let wrong = 0;
  for (let i = 0; i < 20; i++) {
    const s = await serve(t, ns, cg, 7001, HOST, 'udp');
    // the first datagram after the start goes to the extra port
    const extra = await who(ns, 8001, HOST, 'udp');
    if (typeof extra === 'string') late++;
    else if (extra !== s.pid) wrong++;
    t.is(await who(ns, 7001, HOST, 'udp'), s.pid, 'its own port');
    if (i === 0) t.like(await sk.attachment('app'), {alive: true, pid: s.pid, retaken: 1, follow: {currentPid: s.pid}, sockets: [{protocol: 'udp', family: 4, listener: '127.0.0.1:7001', pid: s.pid, alive: true}]});
    await s.stop();
  }
  t.deepEqual({late, wrong}, {late: 0, wrong: 0}, 'each start: the first datagram to the extra port reaches the new process');
  await unanswered(t, ns, 8001, 'after the last stop');
  const st = await sk.attachment('app');
  t.like(st, {alive: false, retaken: 20, redirected: 20, follow: {currentPid: 0}});
  const metrics = await sk.ok(['metrics']);
  t.regex(metrics.stdout, /^skl_retaken_total\{[^}]*name="app"[^}]*protocol="udp"[^}]*\} 20$/m);
});

privileged.serial('follow UDP: never a black hole — an impostor outside the cgroup, and a socket of another namespace in the cgroup, never get the extra port\'s datagrams', async t => {
  t.timeout(180_000);
  const {ns, sk, cg} = await setup(t);
  // a socket of another namespace in the cgroup, there before the attach: not the service's
  const other = createNetns(t);
  const foreign = await serve(t, other, cg, 7001, HOST, 'udp');
  const refused = await sk.run(['attach', '--cgroup', cg.path, '--proto', 'udp', '--ports', '8001', '--name', 'app']);
  t.regex(refused.stderr, /nothing in cgroup .* listens yet/, 'the cgroup\'s only socket is another namespace\'s: nothing to follow');
  await sk.ok(['attach', '--cgroup', cg.path, '--listener', `${HOST}:7001`, '--proto', 'udp', '--ports', '8001', '--name', 'app']);
  expectFollowUdpOnLo(t, ns, sk);
  t.like(await sk.attachment('app'), {alive: false, follow: {currentPid: 0}}, 'nothing stored at attach');
  await unanswered(t, ns, 8001, 'with only a socket of another namespace in the cgroup');
  t.is(foreign.served(), 0);

  // a process outside the cgroup takes the address while the service is down
  const impostor = await serve(t, ns, undefined, 7001, HOST, 'udp');
  t.is(await who(ns, 7001, HOST, 'udp'), impostor.pid, 'it owns its own port');
  const before = netCounters(ns).udpNoPorts;
  for (let i = 0; i < 5; i++) t.is(await who(ns, 8001, HOST, 'udp', 1_000), 'ETIMEDOUT');
  t.is(netCounters(ns).udpNoPorts - before, 5, 'every datagram to the extra port reached no socket');
  t.is(impostor.served(), 1, 'the impostor got its own port\'s datagram only');
  t.like(await sk.attachment('app'), {alive: false, retaken: 0});
  await impostor.stop();

  // the real one
  const real = await serve(t, ns, cg, 7001, HOST, 'udp');
  t.is(await who(ns, 8001, HOST, 'udp'), real.pid);
  t.like(await sk.attachment('app'), {alive: true, retaken: 1, follow: {currentPid: real.pid}});
  t.is(foreign.served(), 0, 'the other namespace\'s socket never got one');
});

needing(['bpftool']).privilegedSerial('follow UDP --pid P --follow: a restart is followed; the extra port\'s datagrams go to the new process; detach leaves nothing on the cgroup', async (t, [bpftool]) => {
  t.timeout(120_000);
  const {ns, sk, cg} = await setup(t);
  const first = await serve(t, ns, cg, 7001, HOST, 'udp');
  const r = await sk.ok(['attach', '--pid', String(first.pid), '--follow', '--proto', 'udp', '--ports', '8001', '--name', 'app', '--json']);
  t.like(r.json, {protocols: ['udp'], follow: {cgroup: cg.path, listeners: ['127.0.0.1:7001']}});
  expectFollowUdpOnLo(t, ns, sk);
  t.is(await who(ns, 8001, HOST, 'udp'), first.pid);
  await first.stop();
  await unanswered(t, ns, 8001, 'while it is down');
  const second = await serve(t, ns, cg, 7001, HOST, 'udp');
  t.is(await who(ns, 8001, HOST, 'udp'), second.pid, 'the restart was followed');
  t.like(await sk.attachment('app'), {pid: second.pid, alive: true, retaken: 1, follow: {currentPid: second.pid}});
  const status = await sk.ok(['status']);
  t.regex(status.stdout, new RegExp(`follows ${cg.path} \\(1 re-taken\\)`));

  // a TCP service of another cgroup stays followed
  const tcg = makeCgroup(t);
  const tcp = await serve(t, ns, tcg, 7002);
  await sk.ok(['attach', '--pid', String(tcp.pid), '--follow', '--ports', '8002', '--name', 'web']);
  t.deepEqual(cgroupLinkTypes(tcg), [BPF_CGROUP_SOCK_OPS]);

  // bpftool prints an empty line, not [], for a cgroup with nothing attached
  const shown = (dir: string): unknown[] => JSON.parse(spawnSync(bpftool, ['cgroup', 'show', dir, '-j'], {encoding: 'utf8'}).stdout.trim() || '[]') as unknown[];
  t.deepEqual(cgroupLinkTypes(cg), [BPF_CGROUP_INET_SOCK_CREATE]);
  t.is(shown(cg.dir).length, 1, 'bpftool sees the sock_create program on the cgroup (positive control)');
  await sk.ok(['detach', 'app']);
  t.deepEqual(cgroupLinks(cg), 0, 'no link left on the cgroup');
  t.deepEqual(shown(cg.dir), [], 'bpftool cgroup show: no program attached');
  t.deepEqual(followedCgroups(sk), [], 'the cgroup is no longer listed for tagging');
  t.false(pinFilesOf(sk.ino).includes(`follow-sock-${cg.ino}`));
  t.true(pinFilesOf(sk.ino).includes(`follow-${tcg.ino}`), 'the other cgroup keeps its link');
  t.is(await who(ns, 8002), tcp.pid);
  await sk.ok(['detach', 'web']);
  t.is(cgroupLinks(tcg), 0);
  t.deepEqual(shown(tcg.dir), []);
});

// ---------------------------------------------------------------------------------------------
// Reuseport: the other members of the group are kept as spares
// ---------------------------------------------------------------------------------------------

for (const proto of ['tcp', 'udp'] as const) {
  needing(['cc|gcc|clang']).privilegedSerial(`follow ${proto.toUpperCase()} reuseport: the member stored for the service is killed → the other member keeps serving the extra port (0 failures); the killed one restarted is stored again`, async (t, [cc]) => {
    t.timeout(180_000);
    const {ns, sk, cg} = await setup(t);
    const bin = reuseportServerBinary(cc);
    const a = await startReuseportMember(bin, ns, proto, HOST, 7001, cg.dir);
    const b = await startReuseportMember(bin, ns, proto, HOST, 7001, cg.dir);
    t.teardown(() => a.stop());
    t.teardown(() => b.stop());
    const [first, second] = a.pid < b.pid ? [a, b] : [b, a];
    const r = await sk.ok(['attach', '--cgroup', cg.path, '--proto', proto, '--ports', '8001', '--name', 'app', '--json']);
    t.like(r.json, {pid: first.pid}, 'the lowest pid of the cgroup is taken: its socket is the one stored');
    if (proto === 'udp') expectFollowUdpOnLo(t, ns, sk);

    const round = async (n: number): Promise<Map<number | string, number>> => {
      const seen = new Map<number | string, number>();
      for (let i = 0; i < n; i++) {
        const w = await who(ns, 8001, HOST, proto, 5_000);
        seen.set(w, (seen.get(w) ?? 0) + 1);
      }
      return seen;
    };
    const both = await round(40);
    t.deepEqual([...both.keys()].sort(), [first.pid, second.pid].sort(), 'the kernel balances over the group');

    await first.stop();
    const after = await round(40);
    t.deepEqual([...after.entries()], [[second.pid, 40]], 'every one served by the remaining member: 0 failures');
    t.like(await sk.attachment('app'), {alive: true, retaken: 0});

    // the killed member comes back: stored again (its listen, or its first datagram)
    const again = await startReuseportMember(bin, ns, proto, HOST, 7001, cg.dir);
    t.teardown(() => again.stop());
    if (proto === 'udp') {
      // the tc program stores a socket only when the service has none: the new member joins the
      // group the kernel balances over through the remaining one
      const seen = await round(40);
      t.is((seen.get(again.pid) ?? 0) + (seen.get(second.pid) ?? 0), 40, `0 failures: ${JSON.stringify([...seen])}`);
      await second.stop();
      t.is(await who(ns, 8001, HOST, proto), again.pid, 'the service had no socket: the first datagram stored the new member');
    } else {
      t.is((await sk.attachment('app')).retaken, 1, 'its listen() was seen');
      await second.stop();
      const last = await round(20);
      t.deepEqual([...last.entries()], [[again.pid, 20]], 'the restarted member serves alone: it was stored');
    }
    t.like(await sk.attachment('app'), {alive: true, retaken: 1});
  });
}

// ---------------------------------------------------------------------------------------------
// Crash points: skl SIGKILLed at each step of following's writes
// ---------------------------------------------------------------------------------------------

/** A process serving TCP and UDP on the same port, answering like the toy server. */
const DUAL_SCRIPT = `
const net = require('node:net');
const dgram = require('node:dgram');
const [host, port] = [process.argv[1], Number(process.argv[2])];
const reply = (localPort, localAddress) => JSON.stringify({pid: process.pid, localPort, localAddress}) + '\\n';
let ready = 0;
const up = () => { if (++ready === 2) process.stdout.write(JSON.stringify({event: 'listening', pid: process.pid}) + '\\n'); };
net.createServer(s => { s.on('error', () => undefined); s.end(reply(s.localPort, s.localAddress)); }).listen({host, port}, up);
const u = dgram.createSocket('udp4');
u.on('message', (m, r) => u.send(reply(u.address().port, u.address().address), r.port, r.address));
u.bind({address: host, port}, up);
process.stdin.on('end', () => process.exit(0)).on('error', () => process.exit(0)).resume();
`;

async function serveDual(t: ExecutionContext, ns: Netns, cg: Cg, port: number): Promise<number> {
  const [sh, ...args] = inCgroup(cg.dir, [process.execPath, '-e', DUAL_SCRIPT, HOST, String(port)]);
  const child = ns.spawn(sh, args, {stdio: ['pipe', 'pipe', 'pipe']});
  t.teardown(() => stopChild(child));
  return new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('dual server did not start')), 30_000);
    createInterface({input: child.stdout!}).on('line', line => {
      const e = JSON.parse(line) as {event?: string; pid?: number};
      if (e.event === 'listening' && e.pid) {
        clearTimeout(timer);
        resolve(e.pid);
      }
    });
  });
}

/** Sockets in the dispatcher's spare slots (any service). */
function sparesInUse(sk: SklContext): number {
  const m = BpfMap.openPinned(`${sk.pinDir}/spare_socket`);
  try {
    let n = 0;
    for (let i = 0; i < m.maxEntries; i++) {
      const k = Buffer.alloc(4);
      k.writeUInt32LE(i);
      if (m.lookup(k) !== undefined) n++;
    }
    return n;
  } finally {
    m.close();
  }
}

privileged.serial('follow crash points: skl SIGKILLed at each step of a TCP+UDP follow → the pending service steers nothing in the window, the next skl rolls it back and leaves nothing on the cgroup; attaching again works', async t => {
  t.timeout(300_000);
  const {ns, sk, cg} = await setup(t);
  const keep = await serve(t, ns, undefined, 7100);
  await sk.ok(['attach', '--pid', String(keep.pid), '--name', 'keep', '--ports', '8100']);
  t.false(existsSync(`${sk.pinDir}/follow_udp_prog`), 'a dispatcher of TCP services has no UDP follow program');
  const dual = await serveDual(t, ns, cg, 7001);
  // a second member of the UDP socket's reuseport group would be a spare: here the seed stores the
  // process's sockets themselves (taken) and tags the UDP one
  for (const point of ['follow:entries', 'follow:cgroup-listed', 'follow:linked', 'follow:seeded']) {
    const crashed = await runSkl(['attach', '--cgroup', cg.path, '--proto', 'tcp,udp', '--ports', '8001', '--name', 'app'], {netns: ns.path, env: {SKL_TEST_CRASH_AT: point}});
    t.is(crashed.signal, 'SIGKILL', `${point}: ${describeRun(crashed)}`);
    // the window, before any skl repairs
    t.is(await who(ns, 8001), 'ECONNREFUSED', `${point}: a pending service never steers TCP`);
    await unanswered(t, ns, 8001, `${point}: a pending service never steers UDP`);
    t.is(await who(ns, 8100), keep.pid, `${point}: the other service is untouched`);
    const next = await runSkl(['status', '--json'], {netns: ns.path});
    t.deepEqual(stderrLines(next), ['notice: rolled back app, left half-made by an interrupted skl'], `${point}: ${next.stderr}`);
    t.is(cgroupLinks(cg), 0, `${point}: no link left on the cgroup`);
    t.deepEqual(followedCgroups(sk), [], `${point}: the cgroup is not listed`);
    t.is(sparesInUse(sk), 0, `${point}: no spare socket left`);
    t.deepEqual(pinFilesOf(sk.ino).filter(f => f.startsWith('follow-')), [], `${point}: no link pin`);
    const again = await runSkl(['status', '--json'], {netns: ns.path});
    t.deepEqual(stderrLines(again), [], `${point}: nothing left to repair`);
  }
  const r = await sk.ok(['attach', '--cgroup', cg.path, '--proto', 'tcp,udp', '--ports', '8001', '--name', 'app', '--json']);
  t.like(r.json, {pid: dual, protocols: ['tcp', 'udp']});
  t.deepEqual(cgroupLinkTypes(cg), [BPF_CGROUP_INET_SOCK_CREATE, BPF_CGROUP_SOCK_OPS]);
  expectFollowUdpOnLo(t, ns, sk);
  t.is(await who(ns, 8001), dual);
  t.is(await who(ns, 8001, HOST, 'udp'), dual);
  t.like(await sk.attachment('app'), {alive: true, protocols: ['tcp', 'udp'], follow: {currentPid: dual, listeners: ['127.0.0.1:7001']}});
});

privileged.serial('follow TCP+UDP served by two processes of the cgroup: attached before they start, and while they run (--listener), each protocol reaches its own process, across restarts', async t => {
  t.timeout(180_000);
  const {ns, sk, cg} = await setup(t);
  await sk.ok(['attach', '--cgroup', cg.path, '--listener', `${HOST}:7001`, '--proto', 'tcp,udp', '--ports', '8001', '--name', 'app']);
  expectFollowUdpOnLo(t, ns, sk);
  t.deepEqual(cgroupLinkTypes(cg), [BPF_CGROUP_INET_SOCK_CREATE, BPF_CGROUP_SOCK_OPS]);
  for (let i = 0; i < 3; i++) {
    const tcp = await serve(t, ns, cg, 7001, HOST, 'tcp');
    const udp = await serve(t, ns, cg, 7001, HOST, 'udp');
    t.is(await who(ns, 8001, HOST, 'udp'), udp.pid, `start ${i}: UDP`);
    t.is(await who(ns, 8001), tcp.pid, `start ${i}: TCP`);
    await tcp.stop();
    await udp.stop();
  }
  t.is((await sk.attachment('app')).retaken, 6);
  await sk.ok(['detach', 'app']);
  // while they run: no single process serves both, so each socket is found in the cgroup
  const tcp = await serve(t, ns, cg, 7001, HOST, 'tcp');
  const udp = await serve(t, ns, cg, 7001, HOST, 'udp');
  const refused = await sk.run(['attach', '--cgroup', cg.path, '--proto', 'tcp,udp', '--ports', '8001', '--name', 'app']);
  t.is(refused.code, 1, 'without --listener the lowest pid must serve both');
  t.regex(refused.stderr, /has no (unconnected UDP|listening TCP) socket/);
  const r = await sk.ok(['attach', '--cgroup', cg.path, '--listener', `${HOST}:7001`, '--proto', 'tcp,udp', '--ports', '8001', '--name', 'app', '--json']);
  t.like(r.json, {pid: 0, protocols: ['tcp', 'udp'], follow: {listeners: ['127.0.0.1:7001']}});
  expectFollowUdpOnLo(t, ns, sk);
  t.is(await who(ns, 8001), tcp.pid);
  t.is(await who(ns, 8001, HOST, 'udp'), udp.pid);
  t.like(await sk.attachment('app'), {alive: true, retaken: 0, protocols: ['tcp', 'udp']});
});
