// End-to-end tests of the dispatcher through the real CLI: `node bin/run.js attach|detach|status|
// ports ... --netns /run/netns/<test namespace>`, started from outside that namespace and never
// acting on the namespace it runs in (the host's) — or, for the tests marked "the everyday form",
// run inside the test namespace (`nsenter --net=/run/netns/<test namespace> skl ...`, no --netns),
// as a user runs it. Each test gets its own namespace with toy servers in it and asserts what a user observes:
// connections to the extra ports succeed and the target server's reply shows it accepted them
// (`reply.pid` is the server's pid, `reply.localPort` the extra port dialled), or they are refused.
//
// Tests run serially inside this file (other test files still run in parallel with it): each one
// starts many short node processes, and on a 2-core runner that is load enough.
import {spawn} from 'node:child_process';
import {existsSync, rmSync, readFileSync} from 'node:fs';
import {tmpdir} from 'node:os';
import type {ExecutionContext} from 'ava';
import {connectOnce, netCounters, runClient, type Reply} from './helpers/clients.js';
import {
  eventually,
  pinsOf,
  show,
  skl as runSkl,
  SKL_BIN,
  sklEnv,
  startMultiListener,
  startUnreapedServer,
  useSkl,
  type SklResult,
  type StatusJson,
} from './helpers/dispatcher.js';
import {createNetns, type Netns} from './helpers/netns.js';
import {netnsLinks as linksOnNetns} from './helpers/links.js';
import {privileged} from './helpers/privileged.js';
import {assertStateUnchanged, pinnedState, snapshotState, startLoad} from './helpers/reliability.js';
import {startToyServer, type ToyServer} from './helpers/servers.js';

const LO4 = '127.0.0.1';
const LO6 = '::1';

type Proto = 'tcp' | 'udp';

/** Connect (TCP) or exchange a datagram (UDP) and require the target server to answer. */
async function steered(
  t: ExecutionContext,
  ns: Netns,
  server: {pid: number},
  port: number,
  opts: {host?: string; proto?: Proto} = {},
): Promise<Reply | undefined> {
  const proto = opts.proto ?? 'tcp';
  const host = opts.host ?? LO4;
  const r = await connectOnce(ns, {proto, host, port, timeoutMs: 20_000});
  const where = `${proto} ${host.includes(':') ? `[${host}]` : host}:${port}`;
  if (!r.ok) {
    t.fail(`${where}: expected the server (pid ${server.pid}) to answer, got ${r.error}`);
    return undefined;
  }
  t.is(r.reply.pid, server.pid, `${where} answered by pid ${r.reply.pid}, expected ${server.pid}`);
  // TCP: the accepted socket's local port is the port dialled. UDP: the server only knows its bound port.
  if (proto === 'tcp') t.is(r.reply.localPort, port, `${where}: server saw local port ${r.reply.localPort}`);
  return r.reply;
}

/**
 * A TCP connection that must be refused at once (RST), not hang: ECONNREFUSED, and no SYN sent
 * again in the namespace (a refusal after a retransmission is not "at once"). The timeout only
 * catches a hang.
 */
async function refused(t: ExecutionContext, ns: Netns, port: number, host = LO4): Promise<void> {
  const before = netCounters(ns).tcpSynRetrans;
  const r = await runClient(ns, {proto: 'tcp', host, port, count: 1, timeoutMs: 20_000});
  t.deepEqual(r.errors, {ECONNREFUSED: 1}, `tcp ${host}:${port} should be refused: ${JSON.stringify(r)}`);
  t.is(netCounters(ns).tcpSynRetrans, before, `tcp ${host}:${port}: refused at the first SYN, none retransmitted`);
}

/**
 * A UDP datagram that reaches no socket. The evidence is the namespace's UDP "no port" counter
 * (one more), not the silence: an unconnected client sees no ICMP error, only its own timeout,
 * which says nothing about a late answer.
 */
async function unanswered(t: ExecutionContext, ns: Netns, port: number, host = LO4): Promise<void> {
  const counter = host.includes(':') ? 'udp6NoPorts' : 'udpNoPorts';
  const before = netCounters(ns)[counter];
  const r = await connectOnce(ns, {proto: 'udp', host, port, timeoutMs: 400});
  t.deepEqual(r, {ok: false, error: 'ETIMEDOUT'}, `udp ${host}:${port} should go unanswered`);
  t.true(await eventually(() => netCounters(ns)[counter] === before + 1, 30_000), `udp ${host}:${port}: the datagram reached no socket (${counter} ${before} → ${netCounters(ns)[counter]})`);
}

/** A failed command: the exit code, one line on stderr, no stack trace, nothing on stdout. */
function failsCleanly(t: ExecutionContext, r: SklResult, code: 1 | 2, message?: RegExp, label = ''): void {
  const what = `${label} ${show(r)}`;
  t.is(r.code, code, what);
  t.false(r.timedOut, what);
  const lines = r.stderr.split('\n').filter(l => l.trim() !== '');
  t.is(lines.length, 1, `one line on stderr: ${what}`);
  t.regex(r.stderr, /^error: /, what);
  t.notRegex(r.stderr, /^\s+at /m, `no stack trace: ${what}`);
  t.notRegex(r.stderr, /unexpected error/, what);
  t.is(r.stdout, '', what);
  if (message) t.regex(r.stderr, message, what);
}

const pidArgs = (s: {pid: number}): string[] => ['--pid', String(s.pid)];

/** Netns links (sk_lookup) attached to a namespace, per skl's own loader (helpers/links.ts). */
function netnsLinks(ino: number): number {
  return linksOnNetns(ino).length;
}

// ---------------------------------------------------------------------------------------------

privileged.serial('TCP: single extra ports and a range reach the target; its own port still works (the everyday form: inside the namespace, no --netns)', async t => {
  const ns = createNetns(t);
  const skl = useSkl(t, ns, {inside: true});
  const server = await startToyServer(ns, {proto: 'tcp', host: LO4});

  const r = await skl.ok(['attach', ...pidArgs(server), '--ports', '8081,9000-9010', '--name', 'web', '--json']);
  t.like(r.json as object, {event: 'attached', name: 'web', pid: server.pid, protocols: ['tcp'], replaced: false, foreground: false, netnsIno: skl.ino});
  t.deepEqual((r.json as {ports: number[]}).ports, [8081, 9000, 9001, 9002, 9003, 9004, 9005, 9006, 9007, 9008, 9009, 9010]);
  t.true(existsSync(skl.pinDir), 'the dispatcher is pinned below /sys/fs/bpf/skl/<netns inode>');

  for (const port of [8081, 9000, 9005, 9010]) await steered(t, ns, server, port);
  for (const port of [8081, 9000, 9005, 9010]) {
    const e = await server.waitFor(ev => ev.event === 'accepted' && ev.localPort === port);
    t.is(e.localAddress, LO4);
  }
  // the target's own port is untouched
  const own = await connectOnce(ns, {proto: 'tcp', host: LO4, port: server.port});
  t.true(own.ok && own.reply.pid === server.pid && own.reply.localPort === server.port, JSON.stringify(own));
  // ports next to the claimed ones are not steered
  for (const port of [8080, 8082, 8999, 9011]) await refused(t, ns, port);

  const human = await skl.ok(['attach', ...pidArgs(server), '--ports', '9500']);
  t.regex(human.stdout, new RegExp(`attached node-${server.pid}: TCP 9500 → node\\[${server.pid}\\] 127\\.0\\.0\\.1:${server.port}`));
  await steered(t, ns, server, 9500);
});

privileged.serial('UDP: datagrams to extra ports reach the target socket (replies leave from the port asked)', async t => {
  const ns = createNetns(t);
  const skl = useSkl(t, ns);
  const server = await startToyServer(ns, {proto: 'udp', host: LO4});
  const r = await skl.ok(['attach', ...pidArgs(server), '--proto', 'udp', '--ports', '5353,6000-6001', '--name', 'dns', '--json']);
  t.like(r.json as object, {name: 'dns', protocols: ['udp'], ports: [5353, 6000, 6001]});

  for (const port of [5353, 6000, 6001]) {
    const reply = await steered(t, ns, server, port, {proto: 'udp'});
    t.deepEqual(reply?.from, {address: LO4, port}, 'the reply comes from the extra port the client asked (skl rewrites it; test/replies.test.ts)');
  }
  await eventually(() => server.events.filter(e => e.event === 'datagram').length >= 3);
  t.is(server.events.filter(e => e.event === 'datagram').length, 3);

  await unanswered(t, ns, 6002);
  // the attachment is UDP only: TCP to the same port is not steered
  await refused(t, ns, 5353);
  const st = await skl.attachment('dns');
  t.like(st, {protocols: ['udp'], ports: [5353, 6000, 6001], redirected: 3, alive: true});

  // IPv6 datagrams to a [::1] UDP socket
  const v6 = await startToyServer(ns, {proto: 'udp', host: LO6});
  await skl.ok(['attach', ...pidArgs(v6), '--proto', 'udp', '--ports', '6100', '--name', 'dns6']);
  await steered(t, ns, v6, 6100, {proto: 'udp', host: LO6});
  await unanswered(t, ns, 6100, LO4);
});

privileged.serial('IPv6 and dual-stack: v6 to v6 sockets, v4 to dual-stack [::], never v4 to a v6-only socket', async t => {
  const ns = createNetns(t);
  const skl = useSkl(t, ns);

  // [::1]: the kernel makes a socket bound to a specific IPv6 address v6-only
  const v6 = await startToyServer(ns, {proto: 'tcp', host: LO6});
  await skl.ok(['attach', ...pidArgs(v6), '--ports', '7100', '--name', 'v6']);
  const r6 = await steered(t, ns, v6, 7100, {host: LO6});
  t.is(r6?.localAddress, LO6);
  await refused(t, ns, 7100, LO4);

  // [::] without IPV6_V6ONLY: dual-stack, takes IPv4 too
  const dual = await startToyServer(ns, {proto: 'tcp', host: '::', ipv6only: false});
  await skl.ok(['attach', ...pidArgs(dual), '--ports', '7200', '--name', 'dual']);
  const r4 = await steered(t, ns, dual, 7200, {host: LO4});
  t.is(r4?.localAddress, '::ffff:127.0.0.1', 'an IPv4 connection accepted by the dual-stack socket');
  await steered(t, ns, dual, 7200, {host: LO6});

  // [::] with IPV6_V6ONLY: must NOT get IPv4
  const only = await startToyServer(ns, {proto: 'tcp', host: '::', ipv6only: true});
  await skl.ok(['attach', ...pidArgs(only), '--ports', '7300', '--name', 'v6only']);
  await steered(t, ns, only, 7300, {host: LO6});
  await refused(t, ns, 7300, LO4);

  // an IPv4 socket never gets IPv6
  const v4 = await startToyServer(ns, {proto: 'tcp', host: LO4});
  await skl.ok(['attach', ...pidArgs(v4), '--ports', '7400', '--name', 'v4']);
  await steered(t, ns, v4, 7400, {host: LO4});
  await refused(t, ns, 7400, LO6);

  const st = await skl.status();
  const by = Object.fromEntries(st.attachments.map(a => [a.name, a]));
  t.deepEqual(by.v6.listeners, [`[::1]:${v6.port}`]);
  t.deepEqual(by.dual.listeners, [`[::]:${dual.port}`]);
  t.deepEqual(by.dual.sockets.map(s => s.family), [4, 6], 'the dual-stack socket takes both families');
  t.deepEqual(by.v6only.sockets.map(s => s.family), [6], 'a v6-only socket takes IPv6 only');
  t.deepEqual(by.v4.listeners, [`127.0.0.1:${v4.port}`]);
  t.is(by.dual.redirected, 2);
  t.is(by.v6only.redirected, 1);
});

privileged.serial('--address: only connections to the given local prefixes are bound and steered', async t => {
  const ns = createNetns(t);
  const skl = useSkl(t, ns);
  const server = await startToyServer(ns, {proto: 'tcp', host: LO4});
  // 127.0.0.0/8 is all on lo: 127.0.0.2 etc. are local addresses of the namespace too
  await skl.ok(['attach', ...pidArgs(server), '--ports', '7500', '--name', 'filtered', '--address', '127.0.0.1', '--address', '127.0.0.4/30']);

  const a = await steered(t, ns, server, 7500, {host: '127.0.0.1'});
  t.is(a?.localAddress, '127.0.0.1');
  const b = await steered(t, ns, server, 7500, {host: '127.0.0.5'});
  t.is(b?.localAddress, '127.0.0.5');
  await refused(t, ns, 7500, '127.0.0.2');
  await refused(t, ns, 7500, '127.0.0.8');

  const st = await skl.attachment('filtered');
  t.deepEqual(st.bindings, [
    {protocol: 'tcp', prefix: '127.0.0.1/32', ports: '7500'},
    {protocol: 'tcp', prefix: '127.0.0.4/30', ports: '7500'},
  ]);
  t.is(st.redirected, 2);

  // an IPv6 filter on a dual-stack socket: IPv4 (v4-mapped) does not match ::1
  const dual = await startToyServer(ns, {proto: 'tcp', host: '::'});
  await skl.ok(['attach', ...pidArgs(dual), '--ports', '7600', '--name', 'only-v6-lo', '--address', '::1']);
  await steered(t, ns, dual, 7600, {host: LO6});
  await refused(t, ns, 7600, LO4);

  // a v4-mapped IPv6 prefix matches IPv4 connections
  await skl.ok(['attach', ...pidArgs(dual), '--ports', '7700', '--name', 'mapped', '--address', '::ffff:127.0.0.0/104']);
  await steered(t, ns, dual, 7700, {host: '127.0.0.9'});
  await refused(t, ns, 7700, LO6);
  t.deepEqual((await skl.attachment('mapped')).bindings.map(b => b.prefix), ['127.0.0.0/8'], 'a v4-mapped prefix is the IPv4 prefix');

  // replacing the target keeps the filter when no --address is given
  const next = await startToyServer(ns, {proto: 'tcp', host: LO4});
  await skl.ok(['attach', ...pidArgs(next), '--name', 'filtered']);
  await steered(t, ns, next, 7500, {host: '127.0.0.1'});
  await refused(t, ns, 7500, '127.0.0.2');
  t.deepEqual((await skl.attachment('filtered')).bindings.map(b => b.prefix), ['127.0.0.1/32', '127.0.0.4/30']);
});

privileged.serial('names: default <comm>-<pid>; a 64-character name works for status, replace and detach', async t => {
  const ns = createNetns(t);
  const skl = useSkl(t, ns);
  const a = await startToyServer(ns, {proto: 'tcp', host: LO4});
  const b = await startToyServer(ns, {proto: 'tcp', host: LO4});
  const dflt = await skl.ok(['attach', ...pidArgs(a), '--ports', '7100', '--json']);
  t.like(dflt.json as object, {name: `node-${a.pid}`});

  const longest = `${'x'.repeat(60)}-._9`;
  t.is(longest.length, 64);
  await skl.ok(['attach', ...pidArgs(a), '--ports', '7101', '--name', longest]);
  t.like(await skl.attachment(longest), {pid: a.pid, ports: [7101]});
  const replaced = await skl.ok(['attach', ...pidArgs(b), '--name', longest, '--json']);
  t.like(replaced.json as object, {replaced: true, name: longest});
  await steered(t, ns, b, 7101);
  t.deepEqual((await skl.status()).attachments.map(x => x.name).sort(), [longest, `node-${a.pid}`].sort(), 'replaced in place, not added');
  await skl.ok(['ports', 'add', longest, '7102']);
  await skl.ok(['detach', longest]);
  await refused(t, ns, 7101);
  t.deepEqual((await skl.status()).attachments.map(x => x.name), [`node-${a.pid}`]);
});

privileged.serial('two attachments side by side; a port claimed by one is refused to another, naming the owner', async t => {
  const ns = createNetns(t);
  const skl = useSkl(t, ns);
  const a = await startToyServer(ns, {proto: 'tcp', host: LO4});
  const b = await startToyServer(ns, {proto: 'tcp', host: LO4});
  await skl.ok(['attach', ...pidArgs(a), '--ports', '7600-7601', '--name', 'alpha']);
  await skl.ok(['attach', ...pidArgs(b), '--ports', '7700', '--name', 'beta']);
  await steered(t, ns, a, 7600);
  await steered(t, ns, a, 7601);
  await steered(t, ns, b, 7700);

  const before = await snapshotState(ns.path);
  failsCleanly(t, await skl.run(['attach', ...pidArgs(b), '--ports', '7601,7800', '--name', 'gamma']), 1, /port 7601 already belongs to alpha/);
  t.deepEqual(pinnedState(skl.ino), before.pinned, 'a refused attach changed nothing (read raw)');
  failsCleanly(t, await skl.run(['ports', 'add', 'beta', '7600']), 1, /port 7600 already belongs to alpha/);
  t.deepEqual(pinnedState(skl.ino), before.pinned, 'a refused ports add changed nothing (read raw)');
  failsCleanly(t, await skl.run(['attach', ...pidArgs(b), '--ports', '7700,7601', '--name', 'beta']), 1, /7601 .*alpha/);
  await assertStateUnchanged(t, ns.path, before, 'refused commands');
  // the same ports under the other protocol are free
  const udp = await startToyServer(ns, {proto: 'udp', host: LO4});
  await skl.ok(['attach', ...pidArgs(udp), '--proto', 'udp', '--ports', '7600', '--name', 'udp-7600']);
  await steered(t, ns, udp, 7600, {proto: 'udp'});

  await steered(t, ns, a, 7601);
  await refused(t, ns, 7800);
  const st = await skl.status();
  t.deepEqual(st.attachments.map(x => [x.name, x.protocols.join(), x.ports]), [
    ['alpha', 'tcp', [7600, 7601]],
    ['beta', 'tcp', [7700]],
    ['udp-7600', 'udp', [7600]],
  ]);
});

privileged.serial('hijack guard: ports another socket listens on are refused unless --force', async t => {
  const ns = createNetns(t);
  const skl = useSkl(t, ns);
  const target = await startToyServer(ns, {proto: 'tcp', host: LO4});
  const other = await startToyServer(ns, {proto: 'tcp', host: LO4, port: 7900});

  failsCleanly(t, await skl.run(['attach', ...pidArgs(target), '--ports', '7900-7901', '--name', 'grab']), 1, /TCP 127\.0\.0\.1:7900 is already served by another socket.*--force/);
  t.false(existsSync(skl.pinDir), 'a refused first attach creates no dispatcher');
  t.deepEqual((await skl.status()).attachments, []);
  await steered(t, ns, other, 7900);

  // an IPv6 listener does not block the IPv4-only service's binding (the addresses differ), but it
  // does block an IPv6 one; a UDP socket does not block a TCP claim
  const six = await startToyServer(ns, {proto: 'tcp', host: LO6, port: 7910});
  await skl.ok(['attach', ...pidArgs(target), '--ports', '7910', '--name', 'four-only']);
  await steered(t, ns, target, 7910);
  await steered(t, ns, six, 7910, {host: LO6});
  const dualTarget = await startToyServer(ns, {proto: 'tcp', host: '::'});
  failsCleanly(t, await skl.run(['attach', ...pidArgs(dualTarget), '--ports', '7910', '--address', '::/0', '--name', 'grab']), 1, /TCP \[::1\]:7910 is already served by another socket/);
  await startToyServer(ns, {proto: 'udp', host: LO4, port: 7920});
  await skl.ok(['attach', ...pidArgs(target), '--ports', '7920', '--name', 'beside-udp']);
  await steered(t, ns, target, 7920);

  await skl.ok(['attach', ...pidArgs(target), '--ports', '7900-7901', '--name', 'grab', '--force']);
  await steered(t, ns, target, 7900);
  await steered(t, ns, target, 7901);

  // ports add has the same guard
  const third = await startToyServer(ns, {proto: 'tcp', host: '0.0.0.0', port: 7930});
  failsCleanly(t, await skl.run(['ports', 'add', 'grab', '7930']), 1, /TCP 0\.0\.0\.0:7930 is already served by another socket/);
  await steered(t, ns, third, 7930);
  await skl.ok(['ports', 'add', 'grab', '7930', '--force']);
  await steered(t, ns, target, 7930);
});

privileged.serial('several listeners: refused with the list (exit 2), then --listener or --fd picks one', async t => {
  const ns = createNetns(t);
  const skl = useSkl(t, ns);
  const multi = await startMultiListener(ns, LO4, [7401, 7402]);

  const r = await skl.run(['attach', '--pid', String(multi.pid), '--ports', '7410']);
  failsCleanly(t, r, 2, /listens on 2 ports \(TCP 127\.0\.0\.1:7401 \(fd \d+\), TCP 127\.0\.0\.1:7402 \(fd \d+\)\): choose one with --listener :PORT \(or ADDR:PORT, --fd N\); e\.g\. skl attach --pid \d+ --listener :7401 --ports 7410/);
  t.false(existsSync(skl.pinDir));
  const fds = Object.fromEntries([...r.stderr.matchAll(/127\.0\.0\.1:(\d+) \(fd (\d+)\)/g)].map(m => [m[1], m[2]]));

  await skl.ok(['attach', '--pid', String(multi.pid), '--listener', '127.0.0.1:7402', '--ports', '7410', '--name', 'second']);
  const viaListener = (await steered(t, ns, multi, 7410)) as (Reply & {listener?: number}) | undefined;
  t.is(viaListener?.listener, 7402, 'accepted by the socket bound to 7402');

  await skl.ok(['attach', '--pid', String(multi.pid), '--fd', fds['7401'], '--ports', '7411', '--name', 'first']);
  const viaFd = (await steered(t, ns, multi, 7411)) as (Reply & {listener?: number}) | undefined;
  t.is(viaFd?.listener, 7401, 'accepted by the socket with that fd');

  await skl.ok(['attach', '--pid', String(multi.pid), '--listener', ':7401', '--ports', '7412', '--name', 'any-address']);
  t.is(((await steered(t, ns, multi, 7412)) as Reply & {listener?: number})?.listener, 7401);

  // IPv6 listeners, chosen with the address spelt another way
  const multi6 = await startMultiListener(ns, LO6, [7403, 7404]);
  failsCleanly(t, await skl.run(['attach', '--pid', String(multi6.pid), '--ports', '7420']), 2, /TCP \[::1\]:7403 \(fd \d+\), TCP \[::1\]:7404 \(fd \d+\)/);
  await skl.ok(['attach', '--pid', String(multi6.pid), '--listener', '[0:0:0:0:0:0:0:1]:7404', '--ports', '7420', '--name', 'six']);
  t.is(((await steered(t, ns, multi6, 7420, {host: LO6})) as Reply & {listener?: number})?.listener, 7404);
  await skl.ok(['detach', 'six']);

  failsCleanly(t, await skl.run(['attach', '--pid', String(multi.pid), '--listener', '127.0.0.1:7499', '--ports', '7413']), 2, /--listener 127\.0\.0\.1:7499 matches none/);
  failsCleanly(t, await skl.run(['attach', '--pid', String(multi.pid), '--fd', '999', '--ports', '7413']), 2, /--fd 999 matches none/);

  const st = await skl.status();
  t.deepEqual(st.attachments.map(a => [a.name, a.listeners.join()]), [
    ['any-address', '127.0.0.1:7401'],
    ['first', '127.0.0.1:7401'],
    ['second', '127.0.0.1:7402'],
  ]);
});

privileged.serial('ports add and ports remove change the ports live (the everyday form: inside the namespace, no --netns)', async t => {
  const ns = createNetns(t);
  const skl = useSkl(t, ns, {inside: true});
  const server = await startToyServer(ns, {proto: 'tcp', host: LO4});
  await skl.ok(['attach', ...pidArgs(server), '--ports', '7500', '--name', 'live']);
  await refused(t, ns, 7502);

  const add = await skl.ok(['ports', 'add', 'live', '7501-7503', '--json']);
  t.deepEqual(add.json, {name: 'live', protocols: ['tcp'], added: [7501, 7502, 7503], ports: [7500, 7501, 7502, 7503], portsText: '7500-7503'});
  await steered(t, ns, server, 7502);

  const rm = await skl.ok(['ports', 'remove', 'live', '7500,7502', '--json']);
  t.deepEqual(rm.json, {name: 'live', protocols: ['tcp'], removed: [7500, 7502], ports: [7501, 7503], portsText: '7501,7503'});
  await refused(t, ns, 7500);
  await refused(t, ns, 7502);
  await steered(t, ns, server, 7501);
  await steered(t, ns, server, 7503);

  const again = await skl.ok(['ports', 'add', 'live', '7501', '--json']);
  t.like(again.json as object, {added: [], ports: [7501, 7503]});
  const human = await skl.ok(['ports', 'add', 'live', '7504']);
  t.regex(human.stdout, /live: added 7504; TCP ports now 7501,7503-7504/);

  const before = await snapshotState(ns.path);
  failsCleanly(t, await skl.run(['ports', 'remove', 'live', '7502,7503']), 2, /does not have TCP port 7502/);
  await assertStateUnchanged(t, ns.path, before, 'a refused remove removes nothing, not even the ports it has');
  await steered(t, ns, server, 7503);
  t.deepEqual((await skl.attachment('live')).ports, [7501, 7503, 7504]);
});

privileged.serial('detach one attachment, then --all: ports stop at once, own ports keep working, no pins left (the everyday form: inside the namespace, no --netns)', async t => {
  const ns = createNetns(t);
  const skl = useSkl(t, ns, {inside: true});
  const a = await startToyServer(ns, {proto: 'tcp', host: LO4});
  const b = await startToyServer(ns, {proto: 'udp', host: LO4});
  await skl.ok(['attach', ...pidArgs(a), '--ports', '7600,7610-7620', '--name', 'alpha']);
  await skl.ok(['attach', ...pidArgs(b), '--proto', 'udp', '--ports', '7700', '--name', 'beta']);
  await steered(t, ns, a, 7615);
  await steered(t, ns, b, 7700, {proto: 'udp'});

  const one = await skl.ok(['detach', 'alpha', '--json']);
  t.deepEqual(one.json, {detached: ['alpha'], dispatcherRemoved: false});
  await refused(t, ns, 7600);
  await refused(t, ns, 7615);
  await steered(t, ns, a, a.port);
  await steered(t, ns, b, 7700, {proto: 'udp'});
  t.true(existsSync(skl.pinDir));
  t.deepEqual((await skl.status()).attachments.map(x => x.name), ['beta']);

  const all = await skl.ok(['detach', '--all', '--json']);
  t.deepEqual(all.json, {detached: ['beta'], dispatcherRemoved: true});
  await unanswered(t, ns, 7700);
  await steered(t, ns, b, b.port, {proto: 'udp'});
  t.deepEqual(pinsOf(skl.ino), [], 'no pins left for the namespace');
  t.false(existsSync(skl.pinDir));
  t.is(netnsLinks(skl.ino), 0, 'no sk_lookup link left on the namespace');
  t.like(await skl.status(), {dispatcher: false, attachments: []});

  const nothing = await skl.ok(['detach', '--all']);
  t.regex(nothing.stdout, /nothing attached/);
  failsCleanly(t, await skl.run(['detach', 'alpha']), 1, /^error: no service named alpha in this network namespace$/m);
});

privileged.serial('re-attaching a name with a new --pid replaces the target in place, without refusing connections', async t => {
  const ns = createNetns(t);
  const skl = useSkl(t, ns);
  const a = await startToyServer(ns, {proto: 'tcp', host: LO4});
  // with an address filter, which the replacement keeps: it must not drop connections either
  await skl.ok(['attach', ...pidArgs(a), '--ports', '7800-7801', '--name', 'svc', '--address', '127.0.0.0/8']);
  await steered(t, ns, a, 7800);

  const b = await startToyServer(ns, {proto: 'tcp', host: LO4});
  // a steady stream of connections across the switch: none may fail. It runs until each target
  // has served some of it (counts, not time).
  const on7801 = (s: ToyServer): number => s.events.filter(e => e.event === 'accepted' && e.localPort === 7801).length;
  const load = startLoad(ns, {host: LO4, ports: [7801], rate: 30, timeoutMs: 20_000});
  t.teardown(() => {
    load.child.kill('SIGKILL');
  });
  await load.started;
  t.true(await eventually(() => on7801(a) >= 5, 30_000), 'the old target served the stream before the switch');
  const r = await skl.ok(['attach', ...pidArgs(b), '--name', 'svc', '--json']);
  t.like(r.json as object, {name: 'svc', pid: b.pid, replaced: true, ports: [7800, 7801]});
  t.true(await eventually(() => on7801(b) >= 5, 30_000), 'the new target serves it after');
  const result = await load.stop();
  t.is(result.failed, 0, `connections failed during the replacement: ${JSON.stringify(result.errors)}`);
  t.is(result.succeeded, result.attempted);
  // what the client saw is what the targets saw: each connection accepted by one of them
  await eventually(() => on7801(a) + on7801(b) >= result.succeeded, 30_000);
  t.deepEqual(result.byPid, {[a.pid]: on7801(a), [b.pid]: on7801(b)}, JSON.stringify(result));

  await steered(t, ns, b, 7800);
  await steered(t, ns, b, 7801);
  await steered(t, ns, a, a.port); // the old target itself is unaffected
  t.like(await skl.attachment('svc'), {pid: b.pid, ports: [7800, 7801], alive: true, listeners: [`127.0.0.1:${b.port}`]});

  // replacing with --ports also sets the ports
  await skl.ok(['attach', ...pidArgs(a), '--name', 'svc', '--ports', '7802']);
  await refused(t, ns, 7800);
  await steered(t, ns, a, 7802);
  t.like(await skl.attachment('svc'), {pid: a.pid, ports: [7802]});

  // replacing an IPv4 socket by a v6-only one changes which families are steered
  await refused(t, ns, 7802, LO6);
  const v6 = await startToyServer(ns, {proto: 'tcp', host: '::', ipv6only: true});
  await skl.ok(['attach', ...pidArgs(v6), '--name', 'svc']);
  await refused(t, ns, 7802, LO6); // the kept bindings are IPv4 ones (0.0.0.0/0): nothing for IPv6
  await refused(t, ns, 7802, LO4); // and the new process has no IPv4 socket for them
  await skl.ok(['attach', ...pidArgs(v6), '--name', 'svc', '--address', '::1']);
  await steered(t, ns, v6, 7802, {host: LO6});
  await refused(t, ns, 7802, LO4);
  t.deepEqual((await skl.attachment('svc')).bindings, [{protocol: 'tcp', prefix: '::1/128', ports: '7802'}]);
  t.is((await skl.status()).attachments.length, 1);
});

privileged.serial('target process killed: its extra ports refuse at once and status says it is gone', async t => {
  const ns = createNetns(t);
  const skl = useSkl(t, ns);
  const server = await startToyServer(ns, {proto: 'tcp', host: LO4});
  const bystander = await startToyServer(ns, {proto: 'tcp', host: LO4});
  await skl.ok(['attach', ...pidArgs(server), '--ports', '7900,7901', '--name', 'doomed']);
  await skl.ok(['attach', ...pidArgs(bystander), '--ports', '7950', '--name', 'bystander']);
  await steered(t, ns, server, 7900);

  process.kill(server.pid, 'SIGKILL');
  await server.stop();
  await refused(t, ns, 7900);
  await refused(t, ns, 7901);
  await steered(t, ns, bystander, 7950);

  const st = await skl.attachment('doomed');
  t.like(st, {pid: server.pid, alive: false, processAlive: false, ports: [7900, 7901], redirected: 1, missed: 2});
  const human = await skl.ok(['status']);
  t.regex(human.stdout, /doomed .* process gone/);
  await skl.ok(['detach', 'doomed']);
  t.deepEqual((await skl.status()).attachments.map(a => a.name), ['bystander']);

  // a dead target its parent has not reaped yet (a zombie) is gone too
  const zombie = await startUnreapedServer(t, ns, LO4);
  await skl.ok(['attach', '--pid', String(zombie.pid), '--ports', '7960', '--name', 'zombie']);
  await steered(t, ns, zombie, 7960);
  process.kill(zombie.pid, 'SIGKILL');
  t.true(await eventually(() => /^\d+ \(.*\) Z /.test(readFileSync(`/proc/${zombie.pid}/stat`, 'utf8'))), 'the target is a zombie');
  await refused(t, ns, 7960);
  t.like(await skl.attachment('zombie'), {alive: false, processAlive: false});

  // detaching the last attachment by name removes the dispatcher and its pins
  await skl.ok(['detach', 'zombie']);
  const last = await skl.ok(['detach', 'bystander', '--json']);
  t.deepEqual(last.json, {detached: ['bystander'], dispatcherRemoved: true});
  t.deepEqual(pinsOf(skl.ino), []);
  await steered(t, ns, bystander, bystander.port);
});

privileged.serial('foreground: status and conflicts both ways while it runs; SIGTERM detaches and exits 0 (the everyday form: inside the namespace, no --netns)', async t => {
  const ns = createNetns(t);
  const skl = useSkl(t, ns, {inside: true});
  const server = await startToyServer(ns, {proto: 'tcp', host: LO4});
  const fg = await skl.foreground(['attach', ...pidArgs(server), '--ports', '8100-8101', '--name', 'fg']);
  t.like(fg.attached, {event: 'attached', name: 'fg', pid: server.pid, foreground: true, ports: [8100, 8101]});
  t.false(existsSync(skl.pinDir), 'a foreground attachment pins nothing');
  await steered(t, ns, server, 8100);

  const st = await skl.attachment('fg');
  t.like(st, {mode: 'foreground', ownerPid: fg.pid, pid: server.pid, ports: [8100, 8101], alive: true, redirected: 1});

  // its ports are taken for persistent attachments, its name too; it cannot be detached or changed
  failsCleanly(t, await skl.run(['attach', ...pidArgs(server), '--ports', '8101,8102', '--name', 'other']), 1, /8101 already belongs to fg/);
  failsCleanly(t, await skl.run(['attach', ...pidArgs(server), '--ports', '8103', '--name', 'fg']), 1, /fg is a foreground service/);
  failsCleanly(t, await skl.run(['detach', 'fg']), 1, /foreground/);
  failsCleanly(t, await skl.run(['ports', 'add', 'fg', '8102']), 1, /foreground/);
  // and persistent attachments' ports are taken for foreground ones
  await skl.ok(['attach', ...pidArgs(server), '--ports', '8200', '--name', 'persistent']);
  failsCleanly(t, await skl.run(['attach', ...pidArgs(server), '--ports', '8200', '--name', 'fg2', '--foreground']), 1, /8200 already belongs to persistent/);
  // and two foreground attachments cannot share a port either
  failsCleanly(t, await skl.run(['attach', ...pidArgs(server), '--ports', '8101', '--name', 'fg3', '--foreground']), 1, /8101 already belongs to fg/);
  await steered(t, ns, server, 8200);

  // detach --all removes the persistent attachments only
  const all = await skl.ok(['detach', '--all', '--json']);
  t.deepEqual(all.json, {detached: ['persistent'], dispatcherRemoved: true});
  await refused(t, ns, 8200);
  await steered(t, ns, server, 8101);
  t.deepEqual((await skl.status()).attachments.map(a => [a.name, a.mode]), [['fg', 'foreground']]);

  fg.child.kill('SIGTERM');
  const exit = await fg.exited;
  t.deepEqual(exit, {code: 0, signal: null}, fg.stderr());
  t.regex(fg.stdout(), /"event":"detached","name":"fg","signal":"SIGTERM"/);
  await refused(t, ns, 8100);
  t.like(await skl.status(), {dispatcher: false, attachments: []});
  t.deepEqual(pinsOf(skl.ino), []);
  t.is(netnsLinks(skl.ino), 0, 'no sk_lookup link left on the namespace');
});

privileged.serial('foreground: SIGINT and SIGHUP detach and exit 0 too', async t => {
  const ns = createNetns(t);
  const skl = useSkl(t, ns);
  const server = await startToyServer(ns, {proto: 'udp', host: LO4});
  for (const signal of ['SIGINT', 'SIGHUP'] as const) {
    const fg = await skl.foreground(['attach', ...pidArgs(server), '--proto', 'udp', '--ports', '8150', '--name', `fg-${signal}`]);
    await steered(t, ns, server, 8150, {proto: 'udp'});
    fg.child.kill(signal);
    t.deepEqual(await fg.exited, {code: 0, signal: null}, `${signal}: ${fg.stderr()}`);
    t.regex(fg.stdout(), new RegExp(`"signal":"${signal}"`));
    await unanswered(t, ns, 8150);
    t.deepEqual((await skl.status()).attachments, []);
  }
  t.is(netnsLinks(skl.ino), 0);
});

privileged.serial('foreground killed with SIGKILL: nothing remains and its ports refuse', async t => {
  const ns = createNetns(t);
  const skl = useSkl(t, ns);
  const server = await startToyServer(ns, {proto: 'tcp', host: LO4});
  const fg = await skl.foreground(['attach', ...pidArgs(server), '--ports', '8300', '--name', 'fgk']);
  await steered(t, ns, server, 8300);
  t.is(netnsLinks(skl.ino), 1);

  fg.child.kill('SIGKILL');
  t.deepEqual(await fg.exited, {code: null, signal: 'SIGKILL'});
  // the kernel releases the link when the process's last fd closes
  t.true(await eventually(async () => (await connectOnce(ns, {proto: 'tcp', host: LO4, port: 8300, timeoutMs: 1_000})).ok === false, 30_000));
  await refused(t, ns, 8300);
  await steered(t, ns, server, server.port);
  t.like(await skl.status(), {dispatcher: false, attachments: []});
  t.deepEqual(pinsOf(skl.ino), []);
  t.is(netnsLinks(skl.ino), 0, 'no sk_lookup link left on the namespace');
  // and the port is free for others
  await skl.ok(['attach', ...pidArgs(server), '--ports', '8300', '--name', 'after']);
  await steered(t, ns, server, 8300);
});

privileged.serial('status --json: every attachment with its pid, protocol, ports, liveness and counts (the everyday form: inside the namespace, no --netns)', async t => {
  const ns = createNetns(t);
  const skl = useSkl(t, ns, {inside: true});
  const empty = await skl.status();
  t.deepEqual(empty, {netns: '/proc/self/ns/net', netnsIno: skl.ino, dispatcher: false, attachments: []}, 'the namespace skl runs in');

  const web = await startToyServer(ns, {proto: 'tcp', host: LO4});
  const dns = await startToyServer(ns, {proto: 'udp', host: LO4});
  const started = Date.now();
  await skl.ok(['attach', ...pidArgs(web), '--ports', '7000,7002-7003']);
  await skl.ok(['attach', ...pidArgs(dns), '--proto', 'udp', '--ports', '5353', '--name', 'dns', '--address', '127.0.0.1']);

  for (let i = 0; i < 3; i++) await steered(t, ns, web, 7000);
  for (let i = 0; i < 2; i++) await steered(t, ns, web, 7003);
  await steered(t, ns, web, web.port); // its own port: not counted
  for (let i = 0; i < 2; i++) await steered(t, ns, dns, 5353, {proto: 'udp'});

  const st = await skl.status();
  t.like(st, {netns: '/proc/self/ns/net', netnsIno: skl.ino, dispatcher: true});
  t.deepEqual(st.attachments.map(a => a.name), ['dns', `node-${web.pid}`], 'sorted by name; default name <comm>-<pid>');
  const [d, w] = st.attachments;
  t.like(w, {
    pid: web.pid,
    command: 'node',
    protocols: ['tcp'],
    listeners: [`127.0.0.1:${web.port}`],
    sockets: [{protocol: 'tcp', family: 4, listener: `127.0.0.1:${web.port}`, pid: web.pid, alive: true}],
    bindings: [{protocol: 'tcp', prefix: '0.0.0.0/0', ports: '7000,7002-7003'}],
    ports: [7000, 7002, 7003],
    alive: true,
    processAlive: true,
    redirected: 5,
    missed: 0,
    mode: 'persistent',
    netnsIno: skl.ino,
  });
  t.like(d, {pid: dns.pid, protocols: ['udp'], ports: [5353], redirected: 2, bindings: [{protocol: 'udp', prefix: '127.0.0.1/32', ports: '5353'}], alive: true});
  const created = Date.parse(w.createdAt);
  t.true(created >= started - 2_000 && created <= Date.now() + 2_000, w.createdAt);

  const one = await skl.ok(['status', 'dns', '--json']);
  t.deepEqual((one.json as StatusJson).attachments, [d]);
  const human = await skl.ok(['status']);
  t.regex(human.stdout, /NAME +PID +COMMAND +PROTO +LISTENER +PORTS +REDIRECTED/);
  t.regex(human.stdout, new RegExp(`node-${web.pid} +${web.pid} +node +tcp +127\\.0\\.0\\.1:${web.port} +7000,7002-7003 +5 `));
  failsCleanly(t, await skl.run(['status', 'nope']), 1, /^error: no service named nope in this network namespace$/m);
});

privileged.serial('65,535 ports attached; connections to the lowest and highest work', async t => {
  const ns = createNetns(t);
  const skl = useSkl(t, ns);
  const server = await startToyServer(ns, {proto: 'tcp', host: LO4});
  const other = await startToyServer(ns, {proto: 'tcp', host: LO4, port: 20000});

  // the server's own port is no conflict; another service's port is
  const guarded = await skl.run(['attach', ...pidArgs(server), '--ports', '1-65535', '--name', 'all']);
  failsCleanly(t, guarded, 1, /TCP 127\.0\.0\.1:20000 is already served by another socket/);
  t.notRegex(guarded.stderr, new RegExp(`port ${server.port}\\b`));
  t.false(existsSync(skl.pinDir));

  const started = process.hrtime.bigint();
  const r = await skl.ok(['attach', ...pidArgs(server), '--ports', '1-65535', '--name', 'all', '--force', '--json']);
  t.log(`skl attach of 65,535 ports: ${Number(process.hrtime.bigint() - started) / 1e6} ms wall (including node start)`);
  t.is((r.json as {ports: number[]}).ports.length, 65535);

  await steered(t, ns, server, 65535);
  await steered(t, ns, server, 1);
  await steered(t, ns, server, 20000); // hijacked, as --force asked
  await steered(t, ns, server, server.port);
  const st = await skl.attachment('all');
  t.is(st.ports.length, 65535);
  t.is(st.ports[0], 1);
  t.is(st.ports[65534], 65535);
  t.is(st.redirected, 4);

  const rm = await skl.ok(['ports', 'remove', 'all', '20000', '--json']);
  t.is((rm.json as {ports: number[]}).ports.length, 65534);
  await steered(t, ns, other, 20000);
});

privileged.serial('the everyday form, inside the namespace with no --netns: messages name this network namespace; a socket of another namespace is refused, naming the --netns to use', async t => {
  const home = createNetns(t);
  const elsewhere = createNetns(t);
  const sklHome = useSkl(t, home, {inside: true});
  const sklElsewhere = useSkl(t, elsewhere, {inside: true});
  const server = await startToyServer(home, {proto: 'tcp', host: LO4});
  await sklHome.ok(['attach', ...pidArgs(server), '--ports', '8400', '--name', 'web']);
  await steered(t, home, server, 8400);

  failsCleanly(t, await sklHome.run(['detach', 'nosuch']), 1, /^error: no service named nosuch in this network namespace \(there are: web\)$/m);
  failsCleanly(t, await sklHome.run(['ports', 'add', 'nosuch', '8401']), 1, /^error: no service named nosuch in this network namespace \(see skl status\)$/m);
  failsCleanly(t, await sklHome.run(['status', 'nosuch']), 1, /^error: no service named nosuch in this network namespace$/m);
  // the target's socket is in `home`; this skl runs in `elsewhere`
  const wrong = await sklElsewhere.run(['attach', ...pidArgs(server), '--ports', '8402', '--name', 'x']);
  failsCleanly(t, wrong, 1, new RegExp(`^error: the sockets of process ${server.pid} belong to another network namespace than this one; attach there with --netns /proc/${server.pid}/ns/net$`, 'm'));
  t.deepEqual(pinsOf(sklElsewhere.ino), []);
  t.like(await sklHome.status(), {netns: '/proc/self/ns/net', netnsIno: sklHome.ino});
  t.deepEqual((await sklElsewhere.status()).attachments, []);
  await sklHome.ok(['detach', 'web']);
  await refused(t, home, 8400);
});

privileged.serial('--netns from outside: a socket of another namespace is refused, naming the --netns to use', async t => {
  const home = createNetns(t);
  const elsewhere = createNetns(t);
  const sklHome = useSkl(t, home);
  const sklElsewhere = useSkl(t, elsewhere);
  const server = await startToyServer(home, {proto: 'tcp', host: LO4});

  const wrong = await sklElsewhere.run(['attach', ...pidArgs(server), '--ports', '8400', '--name', 'x']);
  failsCleanly(t, wrong, 1, new RegExp(`another network namespace .*--netns /proc/${server.pid}/ns/net`));
  t.deepEqual(pinsOf(sklElsewhere.ino), []);

  const r = await runSkl(['attach', ...pidArgs(server), '--ports', '8400', '--name', 'via-proc', '--json'], {netns: `/proc/${server.pid}/ns/net`});
  t.is(r.code, 0, show(r));
  t.like(r.json as object, {netnsIno: sklHome.ino});
  await steered(t, home, server, 8400);
  await refused(t, elsewhere, 8400);
  t.deepEqual((await sklHome.status()).attachments.map(a => a.name), ['via-proc']);
  t.deepEqual((await sklElsewhere.status()).attachments, []);
});

privileged.serial('concurrent skl invocations leave consistent state: each claim once, one winner per port', async t => {
  const ns = createNetns(t);
  const skl = useSkl(t, ns);
  const server = await startToyServer(ns, {proto: 'tcp', host: LO4});
  const names = [0, 1, 2, 3, 4, 5];

  const distinct = await Promise.all(names.map(i => skl.run(['attach', ...pidArgs(server), '--ports', String(8500 + i), '--name', `c${i}`])));
  for (const r of distinct) t.is(r.code, 0, show(r));
  const st = await skl.status();
  t.deepEqual(st.attachments.map(a => [a.name, a.ports]), names.map(i => [`c${i}`, [8500 + i]]));

  const contested = await Promise.all(names.map(i => skl.run(['attach', ...pidArgs(server), '--ports', '8600', '--name', `d${i}`])));
  const winners = contested.filter(r => r.code === 0);
  t.is(winners.length, 1, contested.map(show).join('\n'));
  const winner = (await skl.status()).attachments.find(a => a.ports.includes(8600))?.name;
  t.truthy(winner);
  for (const r of contested.filter(x => x.code !== 0)) failsCleanly(t, r, 1, new RegExp(`port 8600 already belongs to ${winner}`));

  const detached = await Promise.all(names.map(i => skl.run(['detach', `c${i}`])));
  for (const r of detached) t.is(r.code, 0, show(r));
  t.deepEqual((await skl.status()).attachments.map(a => a.name), [winner]);
  await steered(t, ns, server, 8600);
});

privileged.serial('bad input: exit 2 (invalid) or 1 (failed), one line on stderr, and the state unchanged', async t => {
  const ns = createNetns(t);
  const skl = useSkl(t, ns);
  const server = await startToyServer(ns, {proto: 'tcp', host: LO4});
  const P = String(server.pid);
  await skl.ok(['attach', '--pid', P, '--ports', '8700-8701', '--name', 'base']);
  await skl.ok(['attach', '--pid', P, '--ports', '8800', '--name', 'taken']);
  const before = await snapshotState(ns.path);

  const invalid: [string[], RegExp][] = [
    [['attach', '--pid', P, '--ports', '0'], /port 0 /],
    [['attach', '--pid', P, '--ports', '65536'], /port 65536 /],
    [['attach', '--pid', P, '--ports=-1'], /invalid port "-1"/],
    [['attach', '--pid', P, '--ports', 'abc'], /invalid port "abc"/],
    [['attach', '--pid', P, '--ports', '10-5'], /invalid range 10-5/],
    [['attach', '--pid', P, '--ports', '1-2-3'], /invalid port "1-2-3"/],
    [['attach', '--pid', P, '--ports', ','], /invalid port/],
    [['attach', '--pid', P, '--ports='], /--ports/],
    [['attach', '--pid', P, '--ports', '80 443'], /invalid port/],
    [['attach', '--pid', P, '--ports', '   '], /--ports is empty/],
    [['attach', '--pid', 'abc', '--ports', '9000'], /--pid/],
    [['attach', '--pid', '0', '--ports', '9000'], /--pid/],
    [['attach', '--ports', '9000'], /give the target: --pid PID, --cgroup PATH or --unit NAME/],
    [['attach', '--pid', P, '--ports', '9000', '--name', '../x'], /invalid name/],
    [['attach', '--pid', P, '--ports', '9000', '--name', 'n'.repeat(65)], /invalid name/],
    [['attach', '--pid', P, '--ports', '9000', '--name', 'café'], /invalid name/],
    [['attach', '--pid', P, '--ports', '9000', '--proto', 'sctp'], /--proto/],
    [['attach', '--pid', P, '--ports', '9000', '--address', '127.0.0.1/33'], /prefix length/],
    [['attach', '--pid', P, '--ports', '9000', '--address', 'localhost'], /--address/],
    [['attach', '--pid', P, '--ports', '9000', '--listener', 'nonsense'], /--listener/],
    [['attach', '--pid', P, '--ports', '9000', '--listener', '127.0.0.1:1'], /matches none/],
    [['attach', '--pid', P, '--ports', '9000', '--fd=-1'], /--fd/],
    [['attach', '--pid', P, '--ports', '9000', '--bogus'], /--bogus/],
    [['attach', '--pid', P, '--name', 'fresh'], /--ports is required/],
    [['ports', 'add', 'base', '0'], /port 0 /],
    [['ports', 'add', 'base'], /ports/i],
    [['ports', 'add', '../x', '9000'], /invalid name/],
    [['ports', 'remove', 'base', '9999'], /does not have TCP port 9999/],
    [['ports', 'remove', 'base', 'x'], /invalid port/],
    [['detach'], /NAME or --all/],
    [['detach', '--all', 'base'], /either a NAME or --all/],
    [['detach', '../x'], /invalid name/],
    [['status', 'a/b'], /invalid name/],
  ];
  const failing: [string[], RegExp][] = [
    [['attach', '--pid', P, '--ports', '8800,9000', '--name', 'x'], /port 8800 already belongs to taken/],
    [['attach', '--pid', P, '--ports', '8800', '--name', 'base'], /belongs to taken/],
    [['attach', '--pid', '4194304', '--ports', '9000'], /process 4194304 does not exist/],
    [['attach', '--pid', P, '--ports', '9000', '--proto', 'udp'], /no unconnected UDP socket .*--proto tcp/],
    [['attach', '--pid', P, '--ports', '9000', '--proto', 'udp', '--name', 'base'], /no unconnected UDP socket/],
    [['ports', 'add', 'nope', '9000'], /no service named nope/],
    [['ports', 'add', 'base', '8800'], /belongs to taken/],
    [['detach', 'nope'], /no service named nope/],
    [['status', 'nope'], /no service named nope/],
  ];
  // after each, the pinned state read raw (the next skl would repair half-made state before it reads)
  for (const [args, message] of invalid) {
    failsCleanly(t, await skl.run(args), 2, message, args.join(' '));
    t.deepEqual(pinnedState(skl.ino), before.pinned, `state unchanged after: ${args.join(' ')}`);
  }
  for (const [args, message] of failing) {
    failsCleanly(t, await skl.run(args), 1, message, args.join(' '));
    t.deepEqual(pinnedState(skl.ino), before.pinned, `state unchanged after: ${args.join(' ')}`);
  }
  await assertStateUnchanged(t, ns.path, before, 'bad input');

  // namespace files that are not usable
  failsCleanly(t, await runSkl(['status'], {netns: '/nonexistent/netns'}), 2, /--netns \/nonexistent\/netns: cannot open it/);
  failsCleanly(t, await runSkl(['status'], {netns: '/etc/hostname'}), 2, /not a network namespace file/);

  // the extra ports still work after all that
  await steered(t, ns, server, 8701);
  await steered(t, ns, server, 8800);
});

privileged.serial('not root: one clear line, exit 1, and nothing changed or misreported', async t => {
  const ns = createNetns(t);
  const skl = useSkl(t, ns);
  const server = await startToyServer(ns, {proto: 'tcp', host: LO4});
  await skl.ok(['attach', ...pidArgs(server), '--ports', '8900', '--name', 'rooted']);
  const before = await snapshotState(ns.path);

  const asNobody = (args: string[]): Promise<SklResult> =>
    new Promise((resolve, reject) => {
      // HOME: oclif reads its data directory there, and root's is not readable by nobody
      const env = sklEnv({HOME: tmpdir()});
      const child = spawn(process.execPath, [SKL_BIN, ...args, '--netns', ns.path], {uid: 65534, gid: 65534, env, stdio: ['ignore', 'pipe', 'pipe']});
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
      child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      child.on('error', reject);
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        resolve({code, signal, stdout, stderr, json: undefined, timedOut: false});
      });
    });

  for (const args of [
    ['status'],
    ['status', '--json'],
    ['attach', ...pidArgs(server), '--ports', '8901', '--name', 'nobody'],
    ['ports', 'add', 'rooted', '8902'],
    ['detach', 'rooted'],
    ['detach', '--all'],
  ]) {
    failsCleanly(t, await asNobody(args), 1, /root/, args.join(' '));
    t.deepEqual(pinnedState(skl.ino), before.pinned, `state unchanged after: ${args.join(' ')} (read raw)`);
  }
  await assertStateUnchanged(t, ns.path, before, 'not root');
  await steered(t, ns, server, 8900);
});

privileged.serial('library API: bindings past the limit (1,000,000 bindings of a local prefix) are refused, changing nothing', async t => {
  t.timeout(300_000);
  const {attach, detach, status, addPorts} = await import('../src/index.js');
  const {parseAddress} = await import('../src/dispatcher/input.js');
  const ns = createNetns(t);
  const skl = useSkl(t, ns);
  const server = await startToyServer(ns, {proto: 'tcp', host: LO4});
  // a lock of its own: writing and reading a million bindings holds it for seconds, which the
  // rest of the suite (other namespaces, the default lock) need not wait for
  const lockFile = `/run/skl-test-${process.pid}-million.lock`;
  t.teardown(() => rmSync(lockFile, {force: true}));
  const netns = ns.path;
  const o = {netns, lockFile};
  // host bindings keys only (link-local addresses: no traffic goes to them), 1,000 ports each
  const hosts = (n: number) => Array.from({length: n}, (_, i) => parseAddress(`169.254.${i >> 8}.${i & 255}`));
  const ports = Array.from({length: 1000}, (_, i) => 30000 + i);

  // 1,001,000 in one attach: refused, and the dispatcher it created is gone again
  await t.throwsAsync(attach({...o, pid: server.pid, ports, name: 'many', addresses: hosts(1001)}), {message: /too many bindings: a namespace holds at most 1,000,000 bindings of a local prefix/});
  t.deepEqual(pinsOf(skl.ino), [], 'the dispatcher the failed attach created is gone again');
  t.deepEqual((await status(o)).attachments, []);

  // exactly 1,000,000: fine; then one more is refused and nothing changes
  await attach({...o, pid: server.pid, ports: [10000], name: 'web'});
  await attach({...o, pid: server.pid, ports, name: 'million', addresses: hosts(1000)});
  const before = await status(o);
  t.is(before.attachments.find(a => a.name === 'million')?.bindings.length, 1000);
  await t.throwsAsync(addPorts('million', [31000], o), {message: /too many bindings/});
  await t.throwsAsync(attach({...o, pid: server.pid, ports: [20001], name: 'one-more', addresses: hosts(1)}), {message: /too many bindings/});
  t.deepEqual(await status(o), before, 'nothing changed');
  await steered(t, ns, server, 10000);
  // any-address bindings are not counted: they still go in
  await attach({...o, pid: server.pid, ports: [20000], name: 'any'});
  await steered(t, ns, server, 20000);
  t.like(await detach({name: 'million'}, o), {detached: ['million'], dispatcherRemoved: false});
  await attach({...o, pid: server.pid, ports: [20001], name: 'one-more', addresses: [parseAddress('127.0.0.1')]});
  await steered(t, ns, server, 20001);
  t.like(await detach({all: true}, o), {dispatcherRemoved: true});
  t.deepEqual(pinsOf(skl.ino), []);
});
