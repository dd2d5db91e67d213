// SCHED_CLS programs on an interface's ingress/egress (src/bpf/tc.ts) and the interface list of a
// namespace (src/sys/interfaces.ts), against the real kernel, in namespaces of the test's own: a
// drop program on `lo` stops UDP datagrams and TCP connections over 127.0.0.1 while attached, and
// they flow again once it is detached; through TCX links (kernel ≥6.6) and through the clsact
// fallback (forced with mode 'clsact'). Nothing here touches the host's interfaces.
import {existsSync, rmSync, unlinkSync} from 'node:fs';
import type {ExecutionContext} from 'ava';
import {
  attachTc,
  BPF_LINK_TYPE_TCX,
  BPF_PROG_TYPE_SCHED_CLS,
  BPF_PROG_TYPE_XDP,
  BPF_TCX_EGRESS,
  BPF_TCX_INGRESS,
  BpfError,
  ClsactFilter,
  NotSupportedError,
  progInfoByFd,
  RawProgram,
  TC_ACT_OK,
  TC_ACT_SHOT,
  TcxLink,
  listTcFilters,
  tcxSupported,
  VerifierError,
  type TcDirection,
} from '../src/bpf/index.js';
import {DEFAULT_BPFFS, ensureBpffs, interfaceName, listInterfaces, mkdirBpffs, Netns} from '../src/sys/index.js';
import {bpfLinks, fdinfo} from './helpers/links.js';
import {createNetns, createVethPair, linkInfo, type Netns as TestNetns} from './helpers/netns.js';
import {connectOnce} from './helpers/clients.js';
import {findExecutable, needing, privileged} from './helpers/privileged.js';
import {startToyServer} from './helpers/servers.js';

const LO = 1;
const TRAFFIC_WAIT_MS = 700;

/** A SCHED_CLS program that returns `verdict` for every packet, closed with the test. */
function tcProgram(t: ExecutionContext, name: string, verdict: number): RawProgram {
  const prog = RawProgram.returning(BPF_PROG_TYPE_SCHED_CLS, name, verdict);
  t.teardown(() => prog.close());
  return prog;
}

/** The test namespace, opened for `Netns.run` (closed with the test). */
function enter(t: ExecutionContext, ns: TestNetns): Netns {
  const netns = Netns.open(ns.path);
  t.teardown(() => netns.close());
  return netns;
}

// One UDP datagram and one TCP connection over 127.0.0.1, from a process inside the namespace:
// {"udp":true,"tcp":true} when both got through within the wait.
const TRAFFIC = `
const dgram = require('node:dgram'), net = require('node:net');
const res = {};
const done = () => { if ('udp' in res && 'tcp' in res) { console.log(JSON.stringify(res)); process.exit(0); } };
const rx = dgram.createSocket('udp4');
rx.bind(0, '127.0.0.1', () => {
  const timer = setTimeout(() => { res.udp = false; done(); }, ${TRAFFIC_WAIT_MS});
  rx.on('message', () => { clearTimeout(timer); res.udp = true; done(); });
  dgram.createSocket('udp4').send('x', rx.address().port, '127.0.0.1', () => {});
});
const srv = net.createServer((c) => c.destroy()).listen(0, '127.0.0.1', () => {
  const c = net.connect(srv.address().port, '127.0.0.1');
  const timer = setTimeout(() => { res.tcp = false; c.destroy(); done(); }, ${TRAFFIC_WAIT_MS});
  c.on('connect', () => { clearTimeout(timer); res.tcp = true; c.destroy(); done(); });
  c.on('error', () => { clearTimeout(timer); res.tcp = false; done(); });
});`;

async function traffic(ns: TestNetns): Promise<{udp: boolean; tcp: boolean}> {
  const r = await ns.execAsync(process.execPath, ['-e', TRAFFIC], {timeoutMs: 15_000, check: true});
  return JSON.parse(r.stdout) as {udp: boolean; tcp: boolean};
}

const FLOWS = {udp: true, tcp: true};
const BLOCKED = {udp: false, tcp: false};

/** TCX links of a program, as the kernel lists them (every namespace). */
const tcxLinksOf = (progId: number): ReturnType<typeof bpfLinks> => bpfLinks().filter((l) => l.type === BPF_LINK_TYPE_TCX && l.progId === progId);

/** `tc` inside the namespace; its stdout. */
function tc(ns: TestNetns, ...args: string[]): string {
  return ns.exec(findExecutable('tc')!, args, {check: true}).stdout;
}
const hasClsact = (ns: TestNetns): boolean => /qdisc clsact /.test(tc(ns, 'qdisc', 'show', 'dev', 'lo'));

/** A directory of this test process in bpffs, removed (with whatever is left in it) at the end. */
function bpffsDir(t: ExecutionContext, name: string): string {
  ensureBpffs();
  const dir = mkdirBpffs(DEFAULT_BPFFS, `skl-test-${process.pid}-${name}`);
  t.teardown(() => {
    if (existsSync(dir)) rmSync(dir, {recursive: true});
  });
  return dir;
}

/** A test of TCX behaviour: passes with a note on kernels without TCX (the tests above check the refusal there). */
function tcxTest(title: string, impl: (t: ExecutionContext) => Promise<void>): void {
  privileged(title, async (t) => {
    if (!tcxSupported()) {
      t.pass('no TCX on this kernel: the refusal and the fallback are checked above');
      return;
    }
    await impl(t);
  });
}

for (const direction of ['egress', 'ingress'] as const) {
  privileged(`TCX: a drop program on lo ${direction} stops UDP and TCP over 127.0.0.1; detached, they flow again`, async (t) => {
    const ns = createNetns(t);
    const netns = enter(t, ns);
    const drop = tcProgram(t, 'skl_tc_drop', TC_ACT_SHOT);
    const progId = progInfoByFd(drop.fd).id;
    if (!tcxSupported()) {
      // an older kernel (Debian 12's 6.1): TCX refused in one line, and 'auto' falls back to clsact
      const error = t.throws(() => netns.run(() => attachTc(drop, LO, direction, {mode: 'tcx'})), {instanceOf: NotSupportedError});
      t.regex(error!.message, /^TCX links .* it needs Linux ≥6\.6$/);
      const filter = netns.run(() => attachTc(drop, LO, direction));
      t.is(filter.kind, 'clsact');
      t.is(netns.run(() => filter.detach()), 'removed');
      return;
    }
    t.deepEqual(await traffic(ns), FLOWS);

    const link = netns.run(() => attachTc(drop, LO, direction, {mode: 'tcx'}));
    t.teardown(() => link.close());
    t.true(link instanceof TcxLink);
    t.is(link.kind, 'tcx');
    t.is(link.ifindex, LO);
    t.is(link.ifname, 'lo');
    t.is(link.progId, progId);
    t.regex(link.describe(), new RegExp(`^TCX ${direction} link \\d+ on lo \\(ifindex 1\\): program ${progId}$`));
    // the kernel's own account of the link: the attach type numbers are the UAPI's
    const info = fdinfo((link as TcxLink).link.fd);
    t.is(info.link_type, 'tcx');
    t.is(info.ifindex, '1');
    t.is(info.attach_type, `${direction === 'egress' ? BPF_TCX_EGRESS : BPF_TCX_INGRESS} (${direction})`);
    t.deepEqual(
      tcxLinksOf(progId).map((l) => [l.ifindex, l.attachType]),
      [[LO, direction === 'egress' ? BPF_TCX_EGRESS : BPF_TCX_INGRESS]],
    );

    t.deepEqual(await traffic(ns), BLOCKED);
    t.is(link.detach(), 'removed');
    t.deepEqual(await traffic(ns), FLOWS);
    t.deepEqual(tcxLinksOf(progId), []);
  });
}

privileged("TCX: 'auto' takes a TCX link on this kernel; closing an unpinned link detaches it", async (t) => {
  const ns = createNetns(t);
  const netns = enter(t, ns);
  const drop = tcProgram(t, 'skl_tc_drop', TC_ACT_SHOT);
  const attached = netns.run(() => attachTc(drop, LO, 'egress'));
  t.teardown(() => attached.close());
  t.is(attached.kind, tcxSupported() ? 'tcx' : 'clsact');
  t.deepEqual(await traffic(ns), BLOCKED);
  if (attached.kind === 'tcx') {
    attached.close();
    t.deepEqual(await traffic(ns), FLOWS);
    t.deepEqual(tcxLinksOf(attached.progId), []);
  } else {
    t.is(netns.run(() => attached.detach()), 'removed');
  }
});

tcxTest('TCX: the programs of a hook run in order; first: true runs ahead of those already there', async (t) => {
  const ns = createNetns(t);
  const netns = enter(t, ns);
  // TCX_PASS (0) ends the hook's run: whatever comes after it never sees the packet
  const pass = tcProgram(t, 'skl_tc_pass', TC_ACT_OK);
  const drop = tcProgram(t, 'skl_tc_drop', TC_ACT_SHOT);
  const first = netns.run(() => attachTc(pass, LO, 'egress', {mode: 'tcx'}));
  t.teardown(() => first.close());
  const after = netns.run(() => attachTc(drop, LO, 'egress', {mode: 'tcx'}));
  t.deepEqual(await traffic(ns), FLOWS, 'the drop program runs after the pass program');
  after.detach();
  const ahead = netns.run(() => attachTc(drop, LO, 'egress', {mode: 'tcx', first: true}));
  t.teardown(() => ahead.close());
  t.deepEqual(await traffic(ns), BLOCKED, 'first: the drop program runs before the pass program');
});

tcxTest('TCX: a pinned link outlives the process that made it, and goes with its pin', async (t) => {
  const ns = createNetns(t);
  const pin = `${bpffsDir(t, 'tcx-pin')}/link`;
  t.teardown(() => {
    if (existsSync(pin)) unlinkSync(pin);
  });
  // another process, inside the namespace: load, attach to lo egress, pin, exit
  const bpf = new URL('../src/bpf/index.js', import.meta.url).href;
  const maker = `
    import {attachTc, RawProgram, BPF_PROG_TYPE_SCHED_CLS, TC_ACT_SHOT} from ${JSON.stringify(bpf)};
    const prog = RawProgram.returning(BPF_PROG_TYPE_SCHED_CLS, 'skl_tc_pinned', TC_ACT_SHOT);
    const link = attachTc(prog, 1, 'egress', {mode: 'tcx'});
    link.pin(${JSON.stringify(pin)});
    console.log(JSON.stringify({progId: link.progId, linkId: link.linkId}));`;
  const made = await ns.execAsync(process.execPath, ['--input-type=module', '-e', maker], {timeoutMs: 15_000, check: true});
  const {progId, linkId} = JSON.parse(made.stdout) as {progId: number; linkId: number};

  t.deepEqual(await traffic(ns), BLOCKED, 'its maker has exited; the pin holds the link');
  t.deepEqual(tcxLinksOf(progId).map((l) => l.id), [linkId]);
  const opened = TcxLink.openPinned(pin);
  t.is(opened.linkId, linkId);
  t.is(opened.direction, 'egress');
  t.is(opened.ifindex, LO);
  t.is(opened.pinPath, pin);
  t.regex(opened.describe(), new RegExp(`^TCX egress link ${linkId} on ifindex 1: program ${progId}$`));
  opened.close();
  t.deepEqual(await traffic(ns), BLOCKED, 'closing an opened pin leaves the link attached');

  unlinkSync(pin);
  t.deepEqual(await traffic(ns), FLOWS, 'the pin removed, the link is gone');
  t.deepEqual(tcxLinksOf(progId), []);
});

tcxTest('TCX: detach through a pinned link removes the pin too', async (t) => {
  const ns = createNetns(t);
  const netns = enter(t, ns);
  const pin = `${bpffsDir(t, 'tcx-detach')}/link`;
  const drop = tcProgram(t, 'skl_tc_drop', TC_ACT_SHOT);
  const link = netns.run(() => attachTc(drop, LO, 'ingress', {mode: 'tcx'})) as TcxLink;
  link.pin(pin);
  link.close();
  t.deepEqual(await traffic(ns), BLOCKED);
  const opened = TcxLink.openPinned(pin);
  const again = TcxLink.openPinned(pin);
  t.is(opened.direction, 'ingress');
  t.is(opened.detach(), 'removed');
  t.false(existsSync(pin));
  t.deepEqual(await traffic(ns), FLOWS);
  t.is(again.detach(), 'gone', 'a second reference finds it detached, and its pin already removed');
  t.deepEqual(tcxLinksOf(link.progId), []);
});

const withTc = needing(['tc']);

for (const direction of ['egress', 'ingress'] as const) {
  withTc.privileged(`clsact fallback: a drop filter on lo ${direction} stops UDP and TCP; detach removes it and the clsact qdisc it made`, async (t) => {
    const ns = createNetns(t);
    const netns = enter(t, ns);
    const drop = tcProgram(t, 'skl_tc_drop', TC_ACT_SHOT);
    const progId = progInfoByFd(drop.fd).id;
    t.deepEqual(await traffic(ns), FLOWS);
    t.false(hasClsact(ns));

    const filter = netns.run(() => attachTc(drop, LO, direction, {mode: 'clsact'}));
    t.true(filter instanceof ClsactFilter);
    const {record} = filter as ClsactFilter;
    t.deepEqual(record, {netnsIno: netns.ino, ifindex: LO, direction, handle: 1, priority: 49152, progId, createdQdisc: true});
    t.is(filter.describe(), `clsact ${direction} filter on lo (ifindex 1), priority 49152 handle 0x1: program ${progId}`);
    t.true(hasClsact(ns));
    // tc sees a direct-action filter running our program; so does our own dump
    t.regex(tc(ns, 'filter', 'show', 'dev', 'lo', direction), new RegExp(`pref 49152 bpf chain 0 handle 0x1 .*direct-action.* id ${progId} `));
    t.deepEqual(
      netns.run(() => listTcFilters(LO, direction)),
      [{kind: 'bpf', priority: 49152, handle: 1, protocol: 3, chain: 0, progId, progName: `skl_tc_drop:[${progId}]`}],
    );
    t.deepEqual(netns.run(() => listTcFilters(LO, direction === 'egress' ? 'ingress' : 'egress')), []);

    t.deepEqual(await traffic(ns), BLOCKED);
    filter.close(); // a filter is not held by anything: still attached
    t.deepEqual(await traffic(ns), BLOCKED);
    t.is(netns.run(() => filter.detach()), 'removed');
    t.deepEqual(await traffic(ns), FLOWS);
    t.false(hasClsact(ns), 'the qdisc skl created is gone with its last filter');
    t.is(netns.run(() => ClsactFilter.remove(record)), 'gone');
  });
}

withTc.privileged("clsact fallback: detach leaves other people's filters, and their qdisc, alone", async (t) => {
  const ns = createNetns(t);
  const netns = enter(t, ns);
  // someone else's clsact, with a u32 filter on each side (matching port 9 only; no action)
  tc(ns, 'qdisc', 'add', 'dev', 'lo', 'clsact');
  for (const side of ['egress', 'ingress']) {
    tc(ns, 'filter', 'add', 'dev', 'lo', side, 'pref', '100', 'protocol', 'ip', 'u32', 'match', 'ip', 'dport', '9', '0xffff', 'classid', '1:1');
  }
  const foreign = (side: TcDirection): string => tc(ns, 'filter', 'show', 'dev', 'lo', side);
  const before = {egress: foreign('egress'), ingress: foreign('ingress')};
  t.regex(before.egress, /pref 100 u32/);
  t.deepEqual(await traffic(ns), FLOWS);

  const drop = tcProgram(t, 'skl_tc_drop', TC_ACT_SHOT);
  const egress = netns.run(() => attachTc(drop, LO, 'egress', {mode: 'clsact'})) as ClsactFilter;
  const ingress = netns.run(() => attachTc(drop, LO, 'ingress', {mode: 'clsact', first: true})) as ClsactFilter;
  t.false(egress.record.createdQdisc);
  t.false(ingress.record.createdQdisc);
  t.is(egress.priority, 49152, "the kernel's choice: behind a filter given a low priority");
  t.is(ingress.priority, 99, 'first: ahead of the filter there');
  t.deepEqual(await traffic(ns), BLOCKED);

  t.is(netns.run(() => egress.detach()), 'removed');
  t.deepEqual(await traffic(ns), BLOCKED, 'the ingress filter still drops');
  // even when asked to take the qdisc, it stays while filters use it
  t.is(netns.run(() => ClsactFilter.remove(ingress.record, {removeQdisc: true})), 'removed');
  t.deepEqual(await traffic(ns), FLOWS);
  t.is(foreign('egress'), before.egress);
  t.is(foreign('ingress'), before.ingress);
  t.true(hasClsact(ns));
  // only theirs is left (u32 lists hash tables and keys, of both sides: one qdisc, one u32 table list)
  const left = netns.run(() => [...listTcFilters(LO, 'egress'), ...listTcFilters(LO, 'ingress')]);
  t.true(left.length > 0);
  t.deepEqual(new Set(left.map((f) => `${f.kind} ${f.priority}`)), new Set(['u32 100']));
});

withTc.privileged('clsact fallback: removal never takes a filter that replaced skl\'s at its slot', async (t) => {
  const ns = createNetns(t);
  const netns = enter(t, ns);
  const dir = bpffsDir(t, 'tc-foreign');
  const drop = tcProgram(t, 'skl_tc_drop', TC_ACT_SHOT);
  const other = tcProgram(t, 'other_drop', TC_ACT_SHOT);
  other.pin(`${dir}/other`);
  t.teardown(() => unlinkSync(`${dir}/other`));

  const ours = netns.run(() => attachTc(drop, LO, 'egress', {mode: 'clsact'})) as ClsactFilter;
  const {priority, handle} = ours.record;
  // someone deletes skl's filter and puts theirs at the very same priority and handle
  tc(ns, 'filter', 'del', 'dev', 'lo', 'egress', 'pref', String(priority), 'handle', `0x${handle.toString(16)}`, 'bpf');
  tc(ns, 'filter', 'add', 'dev', 'lo', 'egress', 'pref', String(priority), 'handle', `0x${handle.toString(16)}`, 'bpf', 'object-pinned', `${dir}/other`, 'direct-action');
  const otherId = progInfoByFd(other.fd).id;

  t.is(netns.run(() => ClsactFilter.remove(ours.record)), 'foreign');
  t.deepEqual(netns.run(() => listTcFilters(LO, 'egress').map((f) => [f.priority, f.handle, f.progId])), [[priority, handle, otherId]]);
  t.true(hasClsact(ns), 'the qdisc stays under a foreign filter, though skl made it');
  t.deepEqual(await traffic(ns), BLOCKED, 'their filter still works');
});

privileged('clsact records belong to their namespace: removal from another one refuses', (t) => {
  const a = createNetns(t);
  const b = createNetns(t);
  const inA = enter(t, a);
  const inB = enter(t, b);
  const drop = tcProgram(t, 'skl_tc_drop', TC_ACT_SHOT);
  const filter = inA.run(() => attachTc(drop, LO, 'egress', {mode: 'clsact'})) as ClsactFilter;
  // lo is ifindex 1 in b too: a record must never remove b's filter
  const error = t.throws(() => inB.run(() => ClsactFilter.remove(filter.record)), {instanceOf: BpfError});
  t.regex(error!.message, /is in network namespace \d+, not this thread's \(\d+\): remove it from inside its namespace/);
  t.throws(() => ClsactFilter.remove(filter.record), {instanceOf: BpfError}, 'nor from the test process\'s own namespace');
  t.is(inA.run(() => filter.detach()), 'removed');
});

privileged("mode 'auto' with SKL_FAKE_MISSING_FEATURES=tcx falls back to clsact; mode 'tcx' refuses in one line", (t) => {
  const ns = createNetns(t);
  const netns = enter(t, ns);
  const drop = tcProgram(t, 'skl_tc_drop', TC_ACT_SHOT);
  const saved = process.env.SKL_FAKE_MISSING_FEATURES;
  process.env.SKL_FAKE_MISSING_FEATURES = 'tcx';
  try {
    const filter = netns.run(() => attachTc(drop, LO, 'egress'));
    t.is(filter.kind, 'clsact');
    t.is(netns.run(() => filter.detach()), 'removed');
    const error = t.throws(() => netns.run(() => attachTc(drop, LO, 'egress', {mode: 'tcx'})), {instanceOf: NotSupportedError});
    t.is(error!.message, 'TCX links (BPF_TCX_INGRESS/BPF_TCX_EGRESS) is not supported by this kernel (EINVAL): it needs Linux ≥6.6');
  } finally {
    if (saved === undefined) delete process.env.SKL_FAKE_MISSING_FEATURES;
    else process.env.SKL_FAKE_MISSING_FEATURES = saved;
  }
});

privileged('errors: not a tc program, no such interface, a bad priority, a program the verifier rejects', (t) => {
  const ns = createNetns(t);
  const netns = enter(t, ns);
  const xdp = RawProgram.returning(BPF_PROG_TYPE_XDP, 'skl_xdp_pass', 2);
  t.teardown(() => xdp.close());
  const drop = tcProgram(t, 'skl_tc_drop', TC_ACT_SHOT);
  const notTc = t.throws(() => netns.run(() => attachTc(xdp, LO, 'egress')), {instanceOf: BpfError});
  t.is(notTc!.message, 'attach skl_xdp_pass to egress of lo (ifindex 1): skl_xdp_pass is not a SCHED_CLS (tc) program (program type 6)');
  const noIf = t.throws(() => netns.run(() => attachTc(drop, 999, 'ingress')), {instanceOf: BpfError});
  t.is(noIf!.message, 'attach skl_tc_drop to ingress of ifindex 999: no such interface in this network namespace');
  t.is(noIf!.errno, 19);
  const badPrio = t.throws(() => netns.run(() => attachTc(drop, LO, 'egress', {mode: 'clsact', priority: 70_000})), {instanceOf: BpfError});
  t.regex(badPrio!.message, /priority is 1-65535, not 70000$/);
  t.deepEqual(netns.run(() => listTcFilters(LO, 'egress')), []);
  // a raw program the verifier rejects: its log comes with the error
  const rejected = t.throws(() => RawProgram.load(BPF_PROG_TYPE_SCHED_CLS, 'skl_no_r0', Buffer.from([0x95, 0, 0, 0, 0, 0, 0, 0])), {instanceOf: VerifierError});
  t.regex(rejected!.message, /^program skl_no_r0 was rejected by the verifier .*R0 !read_ok/s);
});

privileged('interfaces: inside a namespace, exactly its lo and the veths made there (not sysfs, not the host)', (t) => {
  const a = createNetns(t);
  const b = createNetns(t);
  const pair = createVethPair(a, b, t);
  // a second pair with both ends in a
  const ip = findExecutable('ip')!;
  const [x, y] = [`sklx${process.pid % 10000}`, `skly${process.pid % 10000}`];
  a.exec(ip, ['link', 'add', x, 'type', 'veth', 'peer', 'name', y], {check: true});
  const inA = enter(t, a);
  const inB = enter(t, b);

  const listedA = inA.run(() => listInterfaces());
  t.deepEqual(
    listedA,
    [
      {name: 'lo', ifindex: 1},
      {name: pair.ifA, ifindex: pair.ifindexA},
      {name: x, ifindex: linkInfo(a, x).ifindex},
      {name: y, ifindex: linkInfo(a, y).ifindex},
    ].sort((p, q) => p.ifindex - q.ifindex),
  );
  t.deepEqual(inB.run(() => listInterfaces()), [
    {name: 'lo', ifindex: 1},
    {name: pair.ifB, ifindex: pair.ifindexB},
  ]);
  t.is(inA.run(() => interfaceName(pair.ifindexA)), pair.ifA);
  t.is(inA.run(() => interfaceName(1)), 'lo');
  t.is(inB.run(() => interfaceName(999_999)), undefined);
  // the test process's own namespace (the host's) has none of them
  const here = listInterfaces().map((i) => i.name);
  for (const name of [pair.ifA, pair.ifB, x, y]) t.false(here.includes(name), name);
});

privileged('TC on every interface of a namespace: drop filters on all of them stop TCP across a veth', async (t) => {
  const a = createNetns(t);
  const b = createNetns(t);
  const pair = createVethPair(a, b, t);
  const inA = enter(t, a);
  const drop = tcProgram(t, 'skl_tc_drop', TC_ACT_SHOT);
  const server = await startToyServer(b, {proto: 'tcp', host: pair.addrB});
  const reaches = async (): Promise<boolean> => (await connectOnce(a, {proto: 'tcp', host: pair.addrB, port: server.port, timeoutMs: TRAFFIC_WAIT_MS})).ok;
  t.true(await reaches());
  const attached = inA.run(() => listInterfaces().map(({ifindex}) => attachTc(drop, ifindex, 'egress', {mode: 'clsact'})));
  t.deepEqual(
    attached.map((f) => f.ifname),
    ['lo', pair.ifA],
  );
  t.false(await reaches());
  t.deepEqual(
    inA.run(() => attached.map((f) => f.detach())),
    ['removed', 'removed'],
  );
  t.true(await reaches());
});
