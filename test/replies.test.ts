// UDP replies from the extra port (issue 15), with a real DNS server (dnsmasq) and a real client
// (dig), which rejects a reply from another port than the one it asked: a dig answered on the extra
// port proves the reply's source port was rewritten. Over IPv4 and IPv6 loopback, across a veth
// from another namespace (link-local addresses) with checksum offload off on both ends (the
// receiver verifies every checksum: its InCsumErrors stay 0), TCP beside UDP (--proto tcp,udp), one
// socket asking the service's own port and the extra port in turn, a GSO batch (UDP_SEGMENT) and
// IPv4 and IPv6 fragmented replies; `--udp-replies off`; the tc programs on every interface: added
// for an interface created after the attach by the next skl command, pruned when its interface or
// the last service needing them goes, none left after detach or a SIGKILLed --foreground; L3
// devices listed as uncovered. The main cases run twice: with TCX links, and with the clsact
// fallback (SKL_FAKE_MISSING_FEATURES=tcx, what a kernel below 6.6 gets).
//
// Everything runs in namespaces the tests create, on loopback and on link-local addresses of veths
// between them; skl runs inside the namespace (nsenter, no --netns), as a user runs it.
import {spawn} from 'node:child_process';
import {existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {createInterface} from 'node:readline';
import test, {type ExecutionContext} from 'ava';
import {BPF_LINK_TYPE_TCX} from '../src/bpf/index.js';
import {createNetns, linkInfo, linkLocalPair, stopChild, type Netns} from './helpers/netns.js';
import {enter, eventually, runSkl, show, SKL_BIN, SKL_PIN_ROOT, sklEnv, type SklResult} from './helpers/dispatcher.js';
import {bpfLinks} from './helpers/links.js';
import {needing} from './helpers/privileged.js';
import {ask, describeTc, dig, DNS_ANSWER, startDnsmasq, startPyServer, tcProgramsOf, udpCounters} from './helpers/udp-replies.js';
import type {StatusReport} from '../src/dispatcher/api.js';

const TOOLS = ['dnsmasq', 'dig', 'ethtool', 'ss', 'tc'];

interface Mode {
  title: string;
  env: Record<string, string>;
  kind: 'tcx' | 'clsact';
}
// a lock of this file's own: skl processes of other test files (and other runs on the machine) act
// on other namespaces, and must not make these wait (they still take turns among themselves)
const LOCK = `${tmpdir()}/skl-replies-test-${process.pid}.lock`;
test.after.always(() => rmSync(LOCK, {force: true}));
const TCX: Mode = {title: 'TCX links', env: {SKL_LOCK_FILE: LOCK}, kind: 'tcx'};
const CLSACT: Mode = {title: 'clsact fallback', env: {SKL_LOCK_FILE: LOCK, SKL_FAKE_MISSING_FEATURES: 'tcx'}, kind: 'clsact'};
const MODES = [TCX, CLSACT];

/** skl run inside a test namespace, in a mode; `detach --all` at teardown, which must leave no pin and no tc program. */
interface Skl {
  ns: Netns;
  pinDir: string;
  run(args: readonly string[]): Promise<SklResult>;
  ok(args: readonly string[]): Promise<SklResult>;
  status(): Promise<StatusReport>;
}

function useSkl(t: ExecutionContext, ns: Netns, mode: Mode): Skl {
  const ino = statSync(ns.path).ino;
  const run = (args: readonly string[]): Promise<SklResult> => runSkl(args, {wrap: enter(ns.path), env: mode.env, timeoutMs: 60_000});
  const sk: Skl = {
    ns,
    pinDir: `${SKL_PIN_ROOT}/${ino}`,
    run,
    async ok(args) {
      const r = await run(args);
      if (r.code !== 0) throw new Error(`skl ${args.join(' ')}: ${show(r)}`);
      return r;
    },
    async status() {
      const r = await sk.ok(['status', '--json']);
      return r.json as StatusReport;
    },
  };
  t.teardown(async () => {
    if (ns.destroyed) return;
    const r = await run(['detach', '--all']);
    if (r.code !== 0) throw new Error(`skl detach --all at teardown: ${show(r)}`);
    const left = existsSync(SKL_PIN_ROOT) ? readdirSync(SKL_PIN_ROOT).filter((e) => e === String(ino) || e.startsWith(`${ino}-`)) : [];
    if (left.length) throw new Error(`pins left after detach --all: ${left.join(', ')}`);
    const tc = skls(tcProgramsOf(ns.path));
    if (tc.length) throw new Error(`tc programs left after detach --all: ${describeTc(tc).join('; ')}`);
  });
  return sk;
}

/** skl's own tc programs among those listed. */
const skls = <T extends {name: string}>(list: readonly T[]): T[] => list.filter((p) => p.name === 'sk_reply' || p.name === 'sk_follow_udp');

/** The pins of tc programs in the dispatcher's directory. */
const tcPins = (dir: string): string[] => (existsSync(dir) ? readdirSync(dir).filter((e) => e.startsWith('tc')).sort() : []);

/** The kernel's TCX links running one of these programs (any namespace). */
const tcxLinksOf = (progIds: readonly number[]): number => bpfLinks().filter((l) => l.type === BPF_LINK_TYPE_TCX && progIds.includes(l.progId)).length;

/** Checks that skl's reply program is on the egress of exactly these interfaces, attached the mode's way. */
function expectReplyOn(t: ExecutionContext, ns: Netns, mode: Mode, ifnames: readonly string[], what: string): void {
  const seen = skls(tcProgramsOf(ns.path));
  t.deepEqual(describeTc(seen), ifnames.map((i) => `${i} egress sk_reply (${mode.kind})`).sort(), what);
}

/** A veth pair between two test namespaces: link-local IPv4 (169.254.x.1/.2) and IPv6 (fe80::1/fe80::2, no other address); offload off on both ends with `offload: false`. */
function vethPair(t: ExecutionContext, a: Netns, b: Netns, n: number, opts: {offload: boolean; mtu?: number}): {ifA: string; ifB: string; v4A: string; v4B: string} {
  const {addrA, addrB} = linkLocalPair(process.pid + 100 + n);
  const tag = `${n}${process.pid % 1000}`;
  const ifA = `rpa${tag}`;
  const ifB = `rpb${tag}`;
  a.exec('ip', ['link', 'add', ifA, 'type', 'veth', 'peer', 'name', ifB, 'netns', b.name], {check: true});
  t.teardown(() => {
    if (!a.destroyed) a.exec('ip', ['link', 'delete', ifA], {timeoutMs: 5_000});
  });
  for (const [ns, dev, v4, v6] of [
    [a, ifA, addrA, 'fe80::1'],
    [b, ifB, addrB, 'fe80::2'],
  ] as const) {
    // only the link-local address given (no EUI-64 one), so that a server on the interface has one IPv6 address
    ns.exec('sysctl', ['-q', '-w', `net.ipv6.conf.${dev}.addr_gen_mode=1`], {check: true});
    ns.exec('ip', ['addr', 'add', `${v4}/30`, 'dev', dev], {check: true});
    ns.exec('ip', ['addr', 'add', `${v6}/64`, 'dev', dev, 'nodad'], {check: true});
    if (opts.mtu !== undefined) ns.exec('ip', ['link', 'set', 'dev', dev, 'mtu', String(opts.mtu)], {check: true});
    ns.exec('ip', ['link', 'set', 'dev', dev, 'up'], {check: true});
    // checksums computed in software by the sender (which skl's program must then fix) and verified by the receiver
    if (!opts.offload) ns.exec('ethtool', ['-K', dev, 'tx', 'off', 'rx', 'off'], {check: true});
  }
  return {ifA, ifB, v4A: addrA, v4B: addrB};
}

for (const mode of MODES) {
  needing(TOOLS).privilegedSerial(`[${mode.title}] dig gets its answer through the extra port over IPv4 and IPv6 loopback, and over TCP beside UDP (--proto tcp,udp); status counts flows and rewritten replies`, async (t) => {
    t.timeout(120_000);
    const ns = createNetns(t);
    const sk = useSkl(t, ns, mode);
    const dns = await startDnsmasq(t, ns, ['--port=5353', '--listen-address=127.0.0.1', '--listen-address=::1'], ['127.0.0.1:5353', '[::1]:5353']);
    await sk.ok(['attach', '--pid', String(dns.pid), '--proto', 'tcp,udp', '--ports', '5454', '--name', 'dns']);
    expectReplyOn(t, ns, mode, ['lo'], 'the reply program on the one interface there is');
    t.deepEqual(tcPins(sk.pinDir), mode.kind === 'tcx' ? ['tc-egress-1'] : ['tc_filters'], 'a pinned TCX link, or the record of the clsact filter');
    for (const server of ['127.0.0.1', '::1']) {
      for (const port of [5454, 5353]) {
        const d = await dig(ns, server, port);
        t.is(d.answer, DNS_ANSWER, `dig @${server} -p ${port}: ${d.output}`);
      }
      const tcp = await dig(ns, server, 5454, ['+tcp']);
      t.is(tcp.answer, DNS_ANSWER, `dig +tcp @${server} -p 5454: ${tcp.output}`);
    }
    const st = await sk.status();
    const a = st.attachments.find((x) => x.name === 'dns')!;
    t.is(a.udpReplies, 'rewrite');
    // two UDP queries came in on the extra port: two flows recorded, two replies rewritten (TCP and the own port count in neither)
    t.is(a.flows, 2);
    t.is(a.rewritten, 2);
    t.is(a.redirected, 4, 'two UDP datagrams and two TCP connections steered');
    t.deepEqual(st.uncovered ?? [], []);
    const m = await sk.ok(['metrics']);
    t.regex(m.stdout, /^skl_udp_flows_total\{[^}]*name="dns"[^}]*\} 2$/m);
    t.regex(m.stdout, /^skl_udp_replies_rewritten_total\{[^}]*name="dns"[^}]*\} 2$/m);
    t.regex(m.stdout, /^skl_uncovered_interfaces\{[^}]*\} 0$/m);
  });

  needing(TOOLS).privilegedSerial(`[${mode.title}] across a veth from another namespace (link-local IPv4 and IPv6), checksum offload off: dig answered from the extra port, every checksum right`, async (t) => {
    t.timeout(120_000);
    const server = createNetns(t);
    const client = createNetns(t);
    const sk = useSkl(t, server, mode);
    const v = vethPair(t, server, client, 1, {offload: false});
    const dns = await startDnsmasq(t, server, ['--port=5353', `--interface=${v.ifA}`, '--except-interface=lo'], [`${v.v4A}:5353`, `[fe80::1]%${v.ifA}:5353`]);
    await sk.ok(['attach', '--pid', String(dns.pid), '--proto', 'udp', '--ports', '5454', '--name', 'dns']);
    expectReplyOn(t, server, mode, ['lo', v.ifA], 'on every interface of the namespace, lo included');
    const before = udpCounters(client);
    const answers: string[] = [];
    for (const host of [v.v4A, `fe80::1%${v.ifB}`]) {
      for (let i = 0; i < 3; i++) {
        const d = await dig(client, host, 5454);
        answers.push(d.answer);
        t.is(d.answer, DNS_ANSWER, `dig @${host} -p 5454: ${d.output}`);
      }
    }
    const after = udpCounters(client);
    t.is(after.in4 - before.in4, 3, 'three IPv4 replies delivered');
    t.is(after.in6 - before.in6, 3, 'three IPv6 replies delivered');
    t.is(after.csum4 - before.csum4, 0, 'no IPv4 checksum error at the receiver');
    t.is(after.csum6 - before.csum6, 0, 'no IPv6 checksum error at the receiver');
    const a = (await sk.status()).attachments.find((x) => x.name === 'dns')!;
    t.is(a.rewritten, 6);
  });

  needing(TOOLS).privilegedSerial(`[${mode.title}] one socket asking the service's own port and the extra port in turn gets each reply from the port it asked; a connected socket too`, async (t) => {
    t.timeout(120_000);
    const ns = createNetns(t);
    const sk = useSkl(t, ns, mode);
    const dns = await startDnsmasq(t, ns, ['--port=5353', '--listen-address=127.0.0.1', '--listen-address=::1'], ['127.0.0.1:5353', '[::1]:5353']);
    await sk.ok(['attach', '--pid', String(dns.pid), '--proto', 'udp', '--ports', '5454,5455', '--name', 'dns']);
    const order = [5353, 5454, 5353, 5455, 5454, 5454, 5353, 5353, 5455, 5353];
    for (const host of ['127.0.0.1', '::1']) {
      const asks = await ask(ns, {host, ports: order, kind: 'dns'});
      t.deepEqual(
        asks.map((x) => x.from),
        order.map((p) => [p]),
        `${host}: each reply from the port asked, one reply each`,
      );
      t.true(asks.every((x) => x.ok), `${host}: every answer right: ${JSON.stringify(asks)}`);
      const connected = await ask(ns, {host, ports: order, kind: 'dns', connect: true});
      t.true(
        connected.every((x) => x.ok && x.from.length === 1),
        `${host}, connected: ${JSON.stringify(connected)}`,
      );
    }
  });

  needing([...TOOLS, 'python3']).privilegedSerial(`[${mode.title}] a GSO batch (UDP_SEGMENT), IPv4 and IPv6 fragmented replies and IPv4 replies without a checksum arrive whole from the extra port, checksums right`, async (t) => {
    t.timeout(120_000);
    const server = createNetns(t);
    const client = createNetns(t);
    const sk = useSkl(t, server, mode);
    // fragments: offload off (the checksum covers every fragment, computed in software, fixed by skl, verified on reassembly)
    const v = vethPair(t, server, client, 2, {offload: false});
    // GSO: UDP_SEGMENT needs checksum offload on the sending device (before Linux 6.11): a second pair, offload on
    const g = vethPair(t, server, client, 3, {offload: true});
    const toy = await startPyServer(t, server, '::', 7000);
    await sk.ok(['attach', '--pid', String(toy.pid), '--proto', 'udp', '--ports', '7001', '--name', 'toy']);
    expectReplyOn(t, server, mode, ['lo', g.ifA, v.ifA].sort(), 'on every interface');
    const before = udpCounters(client);
    // 3000 bytes over a 1500-byte MTU: two fragments each way
    for (const host of [v.v4A, `fe80::1%${v.ifB}`]) {
      const [r] = await ask(client, {host, ports: [7001], kind: 'toy', size: 3000});
      t.deepEqual(r.from, [7001], `${host}: one datagram, from the extra port`);
      t.true(r.ok && r.bytes === 3000, `${host}: 3000 bytes, intact: ${JSON.stringify(r)}`);
    }
    // IPv4 without a UDP checksum (0): left 0 (a "fixed" one would be wrong, and the receiver would drop it)
    for (const size of [100, 3000]) {
      const [r] = await ask(client, {host: v.v4A, ports: [7001], kind: 'toy', size, nocheck: true});
      t.deepEqual(r.from, [7001], `no checksum, ${size} bytes: from the extra port`);
      t.true(r.ok, `no checksum, ${size} bytes: intact`);
    }
    const after = udpCounters(client);
    t.true(after.reasm4 > before.reasm4 && after.reasm6 > before.reasm6, 'the replies were fragmented (the receiver reassembled them)');
    t.is(after.csum4 - before.csum4, 0, 'no IPv4 checksum error');
    t.is(after.csum6 - before.csum6, 0, 'no IPv6 checksum error');
    // a GSO batch: one sendmsg of 4 × 1000 bytes, split after skl's program saw it whole
    for (const host of [g.v4A, `fe80::1%${g.ifB}`, '127.0.0.1']) {
      const on = host === '127.0.0.1' ? server : client;
      const [r] = await ask(on, {host, ports: [7001], kind: 'toy', size: 4000, gso: 1000});
      t.deepEqual(r.from, [7001, 7001, 7001, 7001], `${host}: four segments, each from the extra port`);
      t.true(r.ok, `${host}: the 4000 bytes intact, in order: ${JSON.stringify(r)}`);
    }
    t.true(toy.events.some((e) => e.event === 'sent' && e.gso === 1000), 'the server sent a GSO batch');
    // the same toy asked on its own port: replies from there, nothing rewritten
    const [own] = await ask(client, {host: v.v4A, ports: [7000], kind: 'toy', size: 100});
    t.deepEqual(own.from, [7000]);
    t.true(toy.events.some((e) => e.event === 'sent' && e.nocheck === true));
    const a = (await sk.status()).attachments.find((x) => x.name === 'toy')!;
    t.is(a.flows, 7);
    // the first fragment of each fragmented reply (the others carry no port) and each GSO batch once
    t.is(a.rewritten, 7);
  });

  needing(TOOLS).privilegedSerial(`[${mode.title}] the programs follow the interfaces and the services: an interface created after the attach is covered by the next skl change, one deleted is pruned, L3 devices are listed as uncovered, the last UDP service takes them with it`, async (t) => {
    t.timeout(120_000);
    const ns = createNetns(t);
    const sk = useSkl(t, ns, mode);
    const dns = await startDnsmasq(t, ns, ['--port=5353', '--listen-address=127.0.0.1'], ['127.0.0.1:5353']);
    const web = await startDnsmasq(t, ns, ['--port=5363', '--listen-address=127.0.0.1'], ['127.0.0.1:5363']);
    // a TCP service needs no tc program
    await sk.ok(['attach', '--pid', String(web.pid), '--proto', 'tcp', '--ports', '5464', '--name', 'web']);
    t.deepEqual(skls(tcProgramsOf(ns.path)), [], 'TCP only: nothing on the interfaces');
    await sk.ok(['attach', '--pid', String(dns.pid), '--proto', 'udp', '--ports', '5454', '--name', 'dns']);
    expectReplyOn(t, ns, mode, ['lo'], 'a UDP service: the reply program');
    // interfaces created after the attach (a veth pair, both ends here), and an L3 one
    ns.exec('ip', ['link', 'add', 'late0', 'type', 'veth', 'peer', 'name', 'late1'], {check: true});
    ns.exec('ip', ['tuntap', 'add', 'mode', 'tun', 'name', 'tun0'], {check: true});
    let st = await sk.status();
    t.deepEqual(
      (st.uncovered ?? []).map((u) => u.name).sort(),
      ['late0', 'late1', 'tun0'],
    );
    t.regex((st.uncovered ?? []).find((u) => u.name === 'late0')!.reason, /created after the last skl change/);
    t.regex((st.uncovered ?? []).find((u) => u.name === 'tun0')!.reason, /no Ethernet header/);
    const text = await sk.ok(['status']);
    t.regex(text.stdout, /uncovered interface: tun0/);
    // the next change covers late0 and late1 (never tun0)
    await sk.ok(['ports', 'add', 'dns', '5455']);
    expectReplyOn(t, ns, mode, ['lo', 'late0', 'late1'], 'the next skl change covered the new interfaces');
    st = await sk.status();
    t.deepEqual(
      (st.uncovered ?? []).map((u) => u.name),
      ['tun0'],
    );
    const late = [linkInfo(ns, 'late0').ifindex, linkInfo(ns, 'late1').ifindex];
    t.deepEqual(tcPins(sk.pinDir), mode.kind === 'tcx' ? ['tc-egress-1', ...late.map((i) => `tc-egress-${i}`)].sort() : ['tc_filters']);
    // deleted interfaces: their programs go with them, their pins or records with the next change
    ns.exec('ip', ['link', 'delete', 'late0'], {check: true});
    await sk.ok(['ports', 'remove', 'dns', '5455']);
    expectReplyOn(t, ns, mode, ['lo'], 'pruned with its interface');
    t.deepEqual(tcPins(sk.pinDir), mode.kind === 'tcx' ? ['tc-egress-1'] : ['tc_filters']);
    t.is((await dig(ns, '127.0.0.1', 5454)).answer, DNS_ANSWER);
    // the last UDP service detached, the TCP one stays: no program needed any more
    const ids = skls(tcProgramsOf(ns.path)).map((p) => p.progId);
    await sk.ok(['detach', 'dns']);
    t.deepEqual(skls(tcProgramsOf(ns.path)), [], 'no tc program once no service needs one');
    t.deepEqual(tcPins(sk.pinDir), []);
    t.is(tcxLinksOf(ids), 0, 'no TCX link of them left in the kernel');
    st = await sk.status();
    t.deepEqual(st.uncovered ?? [], [], 'nothing needs the interfaces');
  });

  needing(TOOLS).privilegedSerial(`[${mode.title}] detach removes every tc program skl added, from every interface`, async (t) => {
    t.timeout(120_000);
    const server = createNetns(t);
    const client = createNetns(t);
    const sk = useSkl(t, server, mode);
    const v = vethPair(t, server, client, 4, {offload: true});
    const dns = await startDnsmasq(t, server, ['--port=5353', `--interface=${v.ifA}`, '--except-interface=lo'], [`${v.v4A}:5353`]);
    await sk.ok(['attach', '--pid', String(dns.pid), '--proto', 'udp', '--ports', '5454', '--name', 'dns']);
    const seen = skls(tcProgramsOf(server.path));
    t.deepEqual(describeTc(seen), [`${v.ifA} egress sk_reply (${mode.kind})`, `lo egress sk_reply (${mode.kind})`].sort(), 'positive control: the reader sees them');
    t.is((await dig(client, v.v4A, 5454)).answer, DNS_ANSWER);
    if (mode.kind === 'tcx') t.is(tcxLinksOf(seen.map((p) => p.progId)), 2, 'positive control: two TCX links in the kernel');
    await sk.ok(['detach', 'dns']);
    t.deepEqual(skls(tcProgramsOf(server.path)), [], 'none left on any interface');
    t.is(tcxLinksOf(seen.map((p) => p.progId)), 0, 'no TCX link of them in the kernel');
    t.false(existsSync(sk.pinDir));
    // and clsact: the qdisc skl created went too
    t.false(server.exec('tc', ['qdisc', 'show', 'dev', 'lo']).stdout.includes('clsact'), 'no clsact qdisc left on lo');
  });
}

needing(TOOLS).privilegedSerial('--udp-replies off: the datagram still reaches the service, but its reply leaves from the own port (dig never sees it); nothing on the interfaces', async (t) => {
  t.timeout(120_000);
  const ns = createNetns(t);
  const sk = useSkl(t, ns, TCX);
  const dns = await startDnsmasq(t, ns, ['--port=5353', '--listen-address=127.0.0.1'], ['127.0.0.1:5353']);
  await sk.ok(['attach', '--pid', String(dns.pid), '--proto', 'udp', '--ports', '5454', '--name', 'dns', '--udp-replies', 'off']);
  t.deepEqual(skls(tcProgramsOf(ns.path)), [], 'no reply program: nothing needs it');
  t.deepEqual(programPins(sk.pinDir), [], 'nor loaded: the dispatcher was created with sk_dispatch alone');
  const d = await dig(ns, '127.0.0.1', 5454);
  t.not(d.answer, DNS_ANSWER, `dig (its socket is connected to the port it asks) never sees the reply: ${d.output}`);
  // an unconnected socket takes any reply: it came from the own port
  const [r] = await ask(ns, {host: '127.0.0.1', ports: [5454], kind: 'dns'});
  t.deepEqual(r.from, [5353], 'the reply left from the own port');
  t.true(r.ok);
  const a = (await sk.status()).attachments.find((x) => x.name === 'dns')!;
  t.is(a.udpReplies, 'off');
  t.is(a.redirected, 2, 'both queries did reach dnsmasq through the extra port');
  t.is(a.flows, 0);
  // replacing the name keeps the mode unless given; given, it changes
  await sk.ok(['attach', '--pid', String(dns.pid), '--proto', 'udp', '--name', 'dns']);
  t.is((await sk.status()).attachments.find((x) => x.name === 'dns')!.udpReplies, 'off');
  await sk.ok(['attach', '--pid', String(dns.pid), '--proto', 'udp', '--name', 'dns', '--udp-replies', 'rewrite']);
  t.is((await dig(ns, '127.0.0.1', 5454)).answer, DNS_ANSWER, 'rewrite: answered');
  expectReplyOn(t, ns, TCX, ['lo'], 'now needed');
  t.deepEqual(programPins(sk.pinDir), ['reply_prog'], 'loaded and pinned when first needed');
  t.is(statSync(`${sk.pinDir}/reply_prog`).mode & 0o777, 0o600, 'root-only, as every pin');
  const bad = await sk.run(['attach', '--pid', String(dns.pid), '--proto', 'udp', '--name', 'dns', '--udp-replies', 'maybe']);
  t.is(bad.code, 2);
});

/** The pins of the dispatcher's programs besides sk_dispatch (each pinned when a service first needs it). */
const programPins = (dir: string): string[] => readdirSync(dir).filter((f) => f.endsWith('_prog')).sort();

/** `skl attach … --foreground --json` inside the namespace, in a mode; resolves once attached. */
async function foreground(t: ExecutionContext, ns: Netns, mode: Mode, args: readonly string[]): Promise<{pid: number; exited: Promise<unknown>}> {
  const [cmd, ...pre] = [...enter(ns.path), process.execPath];
  const child = spawn(cmd, [...pre, SKL_BIN, ...args, '--foreground', '--json'], {stdio: ['ignore', 'pipe', 'pipe'], env: sklEnv(mode.env)});
  t.teardown(() => stopChild(child));
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`foreground skl did not attach; stderr: ${stderr}`)), 30_000);
    createInterface({input: child.stdout}).on('line', (line) => {
      if (line.includes('"event":"attached"')) {
        clearTimeout(timer);
        resolve();
      }
    });
    void exited.then(() => reject(new Error(`foreground skl exited; stderr: ${stderr}`)));
  });
  return {pid: child.pid!, exited};
}

for (const mode of MODES) {
  needing(TOOLS).privilegedSerial(`[${mode.title}] --foreground has its own reply programs; SIGKILLed, ${mode.kind === 'tcx' ? 'it leaves none (its TCX links die with it)' : 'its clsact filters stay until the next skl command, which removes them'}`, async (t) => {
    t.timeout(120_000);
    const ns = createNetns(t);
    const sk = useSkl(t, ns, mode);
    const dns = await startDnsmasq(t, ns, ['--port=5353', '--listen-address=127.0.0.1'], ['127.0.0.1:5353']);
    const fg = await foreground(t, ns, mode, ['attach', '--pid', String(dns.pid), '--proto', 'udp', '--ports', '5456', '--name', 'fg']);
    t.is((await dig(ns, '127.0.0.1', 5456)).answer, DNS_ANSWER, 'answered through the foreground service');
    const seen = skls(tcProgramsOf(ns.path));
    t.deepEqual(describeTc(seen), [`lo egress sk_reply (${mode.kind})`], 'positive control: its program on lo');
    t.false(existsSync(sk.pinDir), 'nothing pinned');
    const st = await sk.status();
    t.is(st.attachments.find((x) => x.name === 'fg')!.rewritten, 1);
    process.kill(fg.pid, 'SIGKILL');
    await fg.exited;
    if (mode.kind === 'tcx') {
      t.true(await eventually(() => skls(tcProgramsOf(ns.path)).length === 0, 10_000), `left: ${describeTc(tcProgramsOf(ns.path)).join('; ')}`);
      t.is(tcxLinksOf(seen.map((p) => p.progId)), 0);
      return;
    }
    t.deepEqual(describeTc(skls(tcProgramsOf(ns.path))), ['lo egress sk_reply (clsact)'], 'a clsact filter outlives its creator');
    const next = await sk.ok(['status']);
    t.regex(next.stderr, /removed 1 tc filter of skl's that no dispatcher owns any more/);
    t.deepEqual(skls(tcProgramsOf(ns.path)), [], 'the next skl command removed it');
  });
}

needing(TOOLS).privilegedSerial('skl apply: a UDP service of the file gets its replies from the extra port (the programs on the interfaces); udp_replies: off in the file turns them off in place; export says so', async (t) => {
  t.timeout(120_000);
  const ns = createNetns(t);
  const sk = useSkl(t, ns, TCX);
  const dns = await startDnsmasq(t, ns, ['--port=5353', '--listen-address=127.0.0.1'], ['127.0.0.1:5353']);
  const dir = mkdtempSync(`${tmpdir()}/skl-replies-apply-`);
  t.teardown(() => rmSync(dir, {recursive: true, force: true}));
  const file = `${dir}/services.yaml`;
  const entry = `services:\n  - name: dns\n    target: {pid: ${dns.pid}}\n    proto: udp\n    ports: "5454"\n`;
  writeFileSync(file, entry);
  await sk.ok(['apply', file]);
  expectReplyOn(t, ns, TCX, ['lo'], 'apply put the reply program on the interfaces');
  t.is((await dig(ns, '127.0.0.1', 5454)).answer, DNS_ANSWER);
  t.is((await sk.status()).attachments.find((x) => x.name === 'dns')!.udpReplies, 'rewrite');
  // off: a change of its own in the plan, made in place (the same service, its counters kept)
  writeFileSync(file, `${entry}    udp_replies: off\n`);
  const plan = (await sk.ok(['apply', file, '--dry-run', '--json'])).json as {actions: {op: string; service: string; what: string; detail: string}[]};
  t.deepEqual(
    plan.actions.map(({op, service, what, detail}) => ({op, service, what, detail})),
    [{op: '~', service: 'dns', what: 'udp replies', detail: 'rewrite → off'}],
  );
  await sk.ok(['apply', file]);
  const a = (await sk.status()).attachments.find((x) => x.name === 'dns')!;
  t.like(a, {udpReplies: 'off', rewritten: 1});
  t.deepEqual(skls(tcProgramsOf(ns.path)), [], 'no program needed any more');
  t.not((await dig(ns, '127.0.0.1', 5454)).answer, DNS_ANSWER);
  t.regex((await sk.ok(['apply', file])).stdout, /^no changes/m);
  const exported = (await sk.ok(['export'])).stdout;
  t.regex(exported, /udp_replies: off/);
  writeFileSync(`${dir}/bad.yaml`, `${entry}    udp_replies: maybe\n`);
  const refused = await sk.run(['apply', `${dir}/bad.yaml`]);
  t.is(refused.code, 2);
  t.regex(refused.stderr, /udp_replies must be rewrite or off/);
});
