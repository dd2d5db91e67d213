// Tests of the test harness itself: namespaces, veth pairs, toy server and client.
import {existsSync} from 'node:fs';
import test from 'ava';
import {clientArgs, clientDeadlineMs, connectOnce, netCounters, parseSnmpPairs, runClient} from './helpers/clients.js';
import {eventually} from './helpers/dispatcher.js';
import {
  addStaticNeighbours,
  createNetns,
  createVethPair,
  linkLocalPair,
  listNetns,
  parseNetnsList,
  uniqueNetnsName,
} from './helpers/netns.js';
import {findExecutable, isCi, privileged, reasonFromProbe} from './helpers/privileged.js';
import {startToyServer} from './helpers/servers.js';
import {parseClientArgs, Tally} from './helpers/toy-client.js';
import {parseServerArgs} from './helpers/toy-server.js';

// ---- pure functions (no privileges needed) ----

test('reasonFromProbe lists every missing prerequisite', t => {
  t.is(reasonFromProbe({uid: 0, hasBtf: true, hasIp: true, hasNsenter: true}), undefined);
  const reason = reasonFromProbe({uid: 1000, hasBtf: false, hasIp: false, hasNsenter: true});
  t.truthy(reason);
  t.regex(reason!, /not root \(uid 1000\)/);
  t.regex(reason!, /BTF/);
  t.regex(reason!, /`ip`/);
  t.notRegex(reason!, /nsenter/);
});

test('isCi only for CI=true', t => {
  t.true(isCi({CI: 'true'}));
  t.false(isCi({CI: '1'}));
  t.false(isCi({}));
});

test('findExecutable finds node and not nonsense', t => {
  t.truthy(findExecutable('sh'));
  t.is(findExecutable('definitely-not-a-command-skl', '/nonexistent'), undefined);
});

test('uniqueNetnsName has the documented shape and is unique', t => {
  const a = uniqueNetnsName(4242);
  const b = uniqueNetnsName(4242);
  t.regex(a, /^skl-test-4242-\d+-[0-9a-f]{6}$/);
  t.not(a, b);
});

test('parseNetnsList handles id suffixes and blank lines', t => {
  t.deepEqual(parseNetnsList('skl-test-1-1-aa (id: 0)\nother\n\n'), ['skl-test-1-1-aa', 'other']);
  t.deepEqual(parseNetnsList(''), []);
});

test('linkLocalPair stays inside 169.254.1-254.0/30', t => {
  for (const n of [0, 1, 253, 254, 255, 100_000, -3]) {
    const p = linkLocalPair(n);
    t.true(p.subnet >= 1 && p.subnet <= 254, `n=${n} subnet=${p.subnet}`);
    t.is(p.addrA, `169.254.${p.subnet}.1`);
    t.is(p.addrB, `169.254.${p.subnet}.2`);
  }
  t.not(linkLocalPair(1).subnet, linkLocalPair(2).subnet);
});

test('toy server and client argument parsing', t => {
  t.deepEqual(parseServerArgs(['--proto', 'udp', '--host', '::1', '--port', '0', '--ipv6only']), {
    proto: 'udp',
    host: '::1',
    port: 0,
    ipv6only: true,
    exitOnStdinEof: false,
  });
  t.throws(() => parseServerArgs(['--proto', 'sctp', '--host', '127.0.0.1']), {message: /--proto/});
  t.throws(() => parseServerArgs(['--proto', 'tcp', '--host', 'localhost']), {message: /--host/});

  const opts = {proto: 'tcp' as const, host: '127.0.0.1', port: 80, count: 3, timeoutMs: 500, rate: 20};
  t.deepEqual(parseClientArgs(clientArgs(opts)), {...opts, durationS: undefined});
  t.throws(() => parseClientArgs(['--proto', 'tcp', '--host', '127.0.0.1', '--port', '0']), {message: /--port/});
  t.throws(() => parseClientArgs(['--proto', 'tcp', '--host', '127.0.0.1', '--port', '1', '--count', '1.5']));
  t.true(clientDeadlineMs({proto: 'udp', host: '::1', port: 1, durationS: 2}) >= 2_000);
});

test('parseSnmpPairs reads the name/value line pairs of /proc/net/snmp and netstat', t => {
  const text = 'Udp: InDatagrams NoPorts InErrors\nUdp: 53 7 0\nTcpExt: SyncookiesSent TCPSynRetrans\nTcpExt: 0 12\n';
  t.deepEqual(parseSnmpPairs(text), {UdpInDatagrams: 53, UdpNoPorts: 7, UdpInErrors: 0, TcpExtSyncookiesSent: 0, TcpExtTCPSynRetrans: 12});
});

test('Tally counts outcomes and keeps only the first replies', t => {
  const tally = new Tally();
  for (let i = 0; i < 8; i++) {
    tally.attempt();
    tally.record({ok: true, reply: {pid: 1, localPort: 1000 + (i % 2), localAddress: '127.0.0.1'}});
  }
  tally.attempt();
  tally.record({ok: false, error: 'ECONNREFUSED'});
  const r = tally.finish();
  t.is(r.attempted, 9);
  t.is(r.ok, 8);
  t.is(r.failed, 1);
  t.deepEqual(r.errors, {ECONNREFUSED: 1});
  t.is(r.replies.length, 5);
  t.deepEqual(r.localPorts, {'1000': 4, '1001': 4});
});

// ---- privileged: real namespaces ----

privileged('TCP over IPv4 and IPv6 loopback inside a namespace', async t => {
  const ns = createNetns(t);
  t.true(existsSync(ns.path));

  const v4 = await startToyServer(ns, {proto: 'tcp', host: '127.0.0.1'});
  t.true(v4.port > 0);
  const r4 = await connectOnce(ns, {proto: 'tcp', host: '127.0.0.1', port: v4.port, timeoutMs: 2_000});
  t.true(r4.ok, JSON.stringify(r4));
  if (r4.ok) {
    t.is(r4.reply.pid, v4.pid);
    t.is(r4.reply.localPort, v4.port);
  }
  const accepted = await v4.waitFor(e => e.event === 'accepted');
  t.is(accepted.localPort, v4.port);

  const v6 = await startToyServer(ns, {proto: 'tcp', host: '::1', ipv6only: true});
  const r6 = await connectOnce(ns, {proto: 'tcp', host: '::1', port: v6.port});
  t.true(r6.ok, JSON.stringify(r6));
  if (r6.ok) t.is(r6.reply.localAddress, '::1');
  await v6.waitFor(e => e.event === 'accepted' && e.localPort === v6.port);

  // Nothing listens on the v4 port over v6: refused, promptly.
  const refused = await connectOnce(ns, {proto: 'tcp', host: '::1', port: v4.port, timeoutMs: 2_000});
  t.deepEqual(refused, {ok: false, error: 'ECONNREFUSED'});

  await v4.stop();
  await v6.stop();
  const after = await connectOnce(ns, {proto: 'tcp', host: '127.0.0.1', port: v4.port, timeoutMs: 1_000});
  t.false(after.ok);
});

privileged('the server pid is the node process, not nsenter', async t => {
  const ns = createNetns(t);
  const server = await startToyServer(ns, {proto: 'tcp', host: '127.0.0.1'});
  const {readFileSync, readlinkSync} = await import('node:fs');
  const cmdline = readFileSync(`/proc/${server.pid}/cmdline`, 'utf8').split('\0');
  t.is(cmdline[0], process.execPath);
  t.true(cmdline.some(a => a.endsWith('toy-server.js')));
  // And it really lives in the test namespace.
  const ino = (p: string): string => readlinkSync(p);
  t.is(ino(`/proc/${server.pid}/ns/net`), ns.exec('readlink', ['/proc/self/ns/net'], {check: true}).stdout.trim());
  t.not(ino(`/proc/${server.pid}/ns/net`), ino('/proc/self/ns/net'));
});

privileged('UDP round trip, and a paced TCP run', async t => {
  const ns = createNetns(t);
  const udp = await startToyServer(ns, {proto: 'udp', host: '127.0.0.1'});
  const r = await connectOnce(ns, {proto: 'udp', host: '127.0.0.1', port: udp.port});
  t.true(r.ok, JSON.stringify(r));
  if (r.ok) {
    t.is(r.reply.pid, udp.pid);
    t.deepEqual(r.reply.from, {address: '127.0.0.1', port: udp.port});
  }
  await udp.waitFor(e => e.event === 'datagram');

  const tcp = await startToyServer(ns, {proto: 'tcp', host: '127.0.0.1'});
  const result = await runClient(ns, {proto: 'tcp', host: '127.0.0.1', port: tcp.port, count: 20, rate: 20});
  t.like(result, {attempted: 20, ok: 20, failed: 0}, JSON.stringify(result));
  t.deepEqual(result.localPorts, {[String(tcp.port)]: 20});
  // what the client counted, the server saw: 20 connections accepted
  const accepted = (): number => tcp.events.filter(e => e.event === 'accepted').length;
  await eventually(() => accepted() >= 20, 30_000);
  t.is(accepted(), 20);

  // UDP to a closed port with an unconnected socket: no ICMP error is reported, so it times out;
  // the kernel counts the datagram as one that reached no socket.
  await udp.stop();
  const noPorts = netCounters(ns).udpNoPorts;
  const gone = await connectOnce(ns, {proto: 'udp', host: '127.0.0.1', port: udp.port, timeoutMs: 300});
  t.deepEqual(gone, {ok: false, error: 'ETIMEDOUT'});
  t.true(await eventually(() => netCounters(ns).udpNoPorts === noPorts + 1, 30_000), `Udp NoPorts ${noPorts} → ${netCounters(ns).udpNoPorts}`);
});

privileged('veth pair between two namespaces over link-local IPv4', async t => {
  const a = createNetns(t);
  const b = createNetns(t);
  const pair = createVethPair(a, b, t);
  t.regex(pair.addrA, /^169\.254\.\d+\.1$/);
  t.regex(pair.macA, /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
  t.not(pair.macA, pair.macB);
  t.true(pair.ifindexA > 0 && pair.ifindexB > 0);

  // IPv6 is off on both ends.
  for (const [ns, dev] of [[a, pair.ifA], [b, pair.ifB]] as const) {
    const v = ns.exec('cat', [`/proc/sys/net/ipv6/conf/${dev}/disable_ipv6`], {check: true}).stdout.trim();
    t.is(v, '1');
  }
  addStaticNeighbours(a, b, pair);
  const neigh = a.exec('ip', ['neigh', 'show', 'dev', pair.ifA], {check: true}).stdout;
  t.regex(neigh, new RegExp(`${pair.addrB.replaceAll('.', '\\.')} lladdr ${pair.macB} PERMANENT`));

  if (findExecutable('ping') !== undefined) {
    const ping = a.exec('ping', ['-c', '3', '-i', '0.2', '-W', '2', pair.addrB], {timeoutMs: 10_000});
    t.is(ping.code, 0, ping.stdout + ping.stderr);
  }
  const server = await startToyServer(b, {proto: 'udp', host: pair.addrB});
  const result = await runClient(a, {proto: 'udp', host: pair.addrB, port: server.port, count: 3, timeoutMs: 2_000});
  t.is(result.ok, 3, JSON.stringify(result));
  t.is(result.replies[0]?.from?.address, pair.addrB);
  const datagram = await server.waitFor(e => e.event === 'datagram');
  t.is(datagram.remoteAddress, pair.addrA);

  const tcp = await startToyServer(b, {proto: 'tcp', host: '0.0.0.0'});
  const r = await connectOnce(a, {proto: 'tcp', host: pair.addrB, port: tcp.port});
  t.true(r.ok, JSON.stringify(r));
  if (r.ok) t.is(r.reply.localAddress, pair.addrB);
});

privileged('destroy kills children, removes the namespace, and is idempotent', async t => {
  const ns = createNetns();
  t.teardown(() => ns.destroy());
  t.true(listNetns().includes(ns.name));
  const server = await startToyServer(ns, {proto: 'tcp', host: '127.0.0.1'});
  const sleeper = ns.spawn('sleep', ['600']);
  t.truthy(sleeper.pid);

  await Promise.all([ns.destroy(), ns.destroy()]);
  await ns.destroy();
  t.true(ns.destroyed);
  t.false(listNetns().includes(ns.name));
  t.false(existsSync(ns.path));
  t.false(existsSync(`/proc/${server.pid}`));
  t.not(sleeper.exitCode === null && sleeper.signalCode === null, true);
  t.throws(() => ns.exec('true'), {message: /destroyed/});
});
