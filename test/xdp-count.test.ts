// `skl xdp-count`: unit tests of the counter arithmetic, then the real CLI against the kernel on
// veth pairs between throwaway namespaces (link-local addresses, IPv6 off, static neighbours, so
// that exactly the packets we send arrive).
import test from 'ava';
import {findExecutable, needing, privileged} from './helpers/privileged.js';
import {xdpLinks} from './helpers/links.js';
import {addStaticNeighbours, createNetns, createVethPair, type Netns, type VethPair} from './helpers/netns.js';
import {attachForeignXdp, CLI, dropCounters, runCli, sendUdp, startCli, waitUntil, xdpOn, type CliRun} from './helpers/xdp.js';
import {CounterSession, formatBitRate, formatBytes, formatCount, formatDuration, watch, type Sample} from '../src/xdp/index.js';

// ---------- unit: no root needed ----------

test('CounterSession: deltas, rates and summary from cumulative counts', (t) => {
  const s = new CounterSession('eth0', 'native', 1000);
  const a = s.sample({packets: 100n, bytes: 6000n}, 1500);
  t.like(a, {type: 'sample', interface: 'eth0', mode: 'native', packets: 100, bytes: 6000, delta: 100, bytesDelta: 6000, pps: 200, elapsed: 0.5});
  const b = s.sample({packets: 400n, bytes: 24000n}, 2500);
  t.like(b, {packets: 400, delta: 300, pps: 300, bytesDelta: 18000, bytesPerSecond: 18000, elapsed: 1.5});
  const sum = s.summary({packets: 500n, bytes: 30000n}, 3000, 'signal');
  t.like(sum, {type: 'summary', packets: 500, bytes: 30000, duration: 2, pps: 250, samples: 2, reason: 'signal'});
  t.is(typeof sum.timestamp, 'string');
});

test('CounterSession: base counts are subtracted, a counter going backwards gives 0, empty interval gives rate 0', (t) => {
  const s = new CounterSession('lo', 'skb', 0, {packets: 10n, bytes: 100n});
  t.like(s.sample({packets: 15n, bytes: 150n}, 1000), {packets: 5, delta: 5, bytes: 50});
  t.like(s.sample({packets: 12n, bytes: 120n}, 1000), {delta: 0, pps: 0, bytesDelta: 0});
  t.like(s.summary({packets: 10n, bytes: 100n}, 0, 'count'), {packets: 0, pps: 0, duration: 0});
});

test('formatting of counts, bytes, bit rates and durations', (t) => {
  t.is(formatCount(1234567), '1,234,567');
  t.is(formatBytes(999), '999 B');
  t.is(formatBytes(98_123), '98.1 kB');
  t.is(formatBitRate(12_500), '100 kbit/s');
  t.is(formatBitRate(0), '0 bit/s');
  t.is(formatDuration(3.254), '3.25 s');
  t.is(formatDuration(125.5), '2 min 5.5 s');
});

/** A fake counter: `packets` grows by 10 per read; `detachAfter` reads, attached() turns false. */
function fakeCounter(detachAfter = Infinity) {
  let reads = 0;
  return {
    ifname: 'fake0',
    mode: 'native',
    read() {
      reads += 1;
      return {packets: BigInt(reads * 10), bytes: BigInt(reads * 600)};
    },
    attached: () => reads < detachAfter,
  };
}

/** A clock that moves on by `stepMs` each time it is read, whatever the wall clock does. */
function steppingClock(stepMs: number): () => number {
  let reads = 0;
  return () => stepMs * reads++;
}

test('watch: --count stops after N samples on the interval grid; summary read after the last one', async (t) => {
  const samples: Sample[] = [];
  // watch's own clock is injected: where the samples land depends on the loop, not on how busy the machine is
  const summary = await watch(fakeCounter(), {intervalMs: 20, count: 3, now: steppingClock(7), onSample: (s) => samples.push(s)});
  t.is(samples.length, 3);
  t.deepEqual(samples.map((s) => s.packets), [10, 20, 30]);
  t.like(summary, {reason: 'count', samples: 3, packets: 40, interface: 'fake0'});
  for (const [i, s] of samples.entries()) {
    t.true(s.elapsed >= (i + 1) * 0.02, `sample ${i} not before its grid point (${s.elapsed})`);
    t.true(s.elapsed < (i + 2) * 0.02, `sample ${i} taken for its own grid point, none skipped (${s.elapsed})`);
  }
  t.true(summary.duration >= samples[2].elapsed, 'the summary is read after the last sample');
});

test('watch: an abort stops at once with reason "signal"; an already aborted signal gives no sample', async (t) => {
  const ac = new AbortController();
  const samples: Sample[] = [];
  // the interval is an hour: if the abort did not cut the wait short, the test's timeout would fail it
  t.timeout(60_000);
  setTimeout(() => ac.abort(), 50);
  const summary = await watch(fakeCounter(), {intervalMs: 3_600_000, signal: ac.signal, onSample: (s) => samples.push(s)});
  t.is(samples.length, 0);
  t.like(summary, {reason: 'signal', samples: 0, packets: 10});

  const done = new AbortController();
  done.abort();
  t.like(await watch(fakeCounter(), {intervalMs: 10, signal: done.signal, onSample: () => t.fail()}), {reason: 'signal'});
});

test('watch: a counter that is no longer attached stops with reason "detached"', async (t) => {
  const samples: Sample[] = [];
  const summary = await watch(fakeCounter(2), {intervalMs: 5, onSample: (s) => samples.push(s)});
  t.is(samples.length, 2);
  t.like(summary, {reason: 'detached', samples: 2, packets: 30});
});

// ---------- privileged: the real CLI on a veth pair ----------

const PAYLOAD = 18;
const FRAME = 14 + 20 + 8 + PAYLOAD;

interface Bed {
  a: Netns;
  b: Netns;
  pair: VethPair;
}

/** Two namespaces joined by a veth pair, IPv6 off, static neighbours both ways: no background traffic. */
function bed(t: Parameters<typeof createNetns>[0]): Bed {
  const a = createNetns(t);
  const b = createNetns(t);
  const pair = createVethPair(a, b, t);
  addStaticNeighbours(a, b, pair);
  return {a, b, pair};
}

/** Wait until our counter is attached (ip reports an xdp_count program on the interface). */
async function attached(run: CliRun, ns: Netns, dev: string): Promise<number> {
  return waitUntil(`xdp_count on ${dev} (stderr so far: ${JSON.stringify(run.stderr)})`, () => {
    if (run.child.exitCode !== null) throw new Error(`skl exited early (${run.child.exitCode}): ${run.stderr}`);
    const on = xdpOn(ns, dev);
    return on?.name === 'xdp_count' ? on.id : undefined;
  });
}

function lastRecord(run: CliRun, type: 'sample' | 'summary'): Record<string, unknown> | undefined {
  return run.records().filter((r) => r.type === type).pop();
}

for (const mode of ['auto', 'skb'] as const) {
  privileged(`counts exactly N packets sent by the peer (--json, --mode ${mode})`, async (t) => {
    const {a, b, pair} = bed(t);
    const N = 500;
    const run = startCli(t, ['xdp-count', pair.ifA, '--netns', a.path, '--json', '--interval', '0.2', '--mode', mode]);
    await attached(run, a, pair.ifA);
    t.is(xdpOn(a, pair.ifA)?.mode, mode === 'skb' ? 2 : 1, 'attached in the expected mode (1 native, 2 generic)');

    sendUdp(b, pair.addrA, 9, N, PAYLOAD);
    await waitUntil(`a sample with ${N} packets; got ${JSON.stringify(lastRecord(run, 'sample'))}\n${dropCounters(a, pair.ifA)}`, () =>
      (lastRecord(run, 'sample')?.packets as number) >= N,
    );
    // One more sample after the one that saw all N: nothing else arrives.
    const seen = run.records().filter((r) => r.type === 'sample').length;
    await waitUntil('one more sample', () => run.records().filter((r) => r.type === 'sample').length > seen);
    run.child.kill('SIGTERM');
    const {code} = await run.exited;
    t.is(code, 0, run.stderr);

    const samples = run.records().filter((r) => r.type === 'sample');
    for (const s of samples) {
      t.like(s, {interface: pair.ifA, mode: mode === 'skb' ? 'skb' : 'native'});
      for (const k of ['packets', 'bytes', 'delta', 'pps', 'timestamp']) t.true(k in s, `sample has ${k}`);
    }
    t.is(samples.reduce((n, s) => n + (s.delta as number), 0), N, 'deltas add up to N');
    const summary = run.records().pop();
    t.like(summary, {type: 'summary', interface: pair.ifA, packets: N, bytes: N * FRAME, reason: 'signal'});
    t.is(xdpOn(a, pair.ifA), undefined, 'nothing left attached');
  });
}

privileged('--count N stops by itself after N lines, detached', async (t) => {
  const {a, pair} = bed(t);
  const r = await runCli(t, ['xdp-count', pair.ifA, '--netns', a.path, '--json', '--interval', '0.1', '--count', '3']);
  t.is(r.code, 0, r.stderr);
  const records = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  t.deepEqual(records.map((x) => x.type), ['sample', 'sample', 'sample', 'summary']);
  t.like(records[3], {reason: 'count', samples: 3, packets: 0});
  t.true((records[3].duration as number) >= (records[2].elapsed as number), 'the summary is read after the last sample');
  t.is(xdpOn(a, pair.ifA), undefined);
});

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  privileged(`${signal} detaches and prints a summary (human output)`, async (t) => {
    const {a, pair} = bed(t);
    const run = startCli(t, ['xdp-count', pair.ifA, '--netns', a.path, '--interval', '0.2']);
    await attached(run, a, pair.ifA);
    await waitUntil('a sample line', () => run.stdout.includes('packets'));
    run.child.kill(signal);
    const {code} = await run.exited;
    t.is(code, 0, run.stderr);
    t.regex(run.stderr, /counting on \S+ in native mode/);
    t.regex(run.stdout, /^summary \S+ \(native, stopped\): 0 packets, 0 B in [\d.]+ s; average 0 pps/m);
    t.false((run.stdout + run.stderr).includes('\u001b['), 'NO_COLOR: no escape sequences');
    t.is(xdpOn(a, pair.ifA), undefined, 'nothing left attached');
  });
}

privileged('SIGKILL leaves nothing attached (the link is not pinned); runs inside the namespace without --netns', async (t) => {
  const {a, pair} = bed(t);
  const run = startCli(t, ['xdp-count', pair.ifA], a);
  const progId = await attached(run, a, pair.ifA);
  // control: the link reader sees the counter's one bpf_link on the interface while it runs
  t.deepEqual(xdpLinks(progId).map((l) => l.ifindex), [pair.ifindexA], 'one bpf_link, on the interface');
  run.child.kill('SIGKILL');
  const {signal} = await run.exited;
  t.is(signal, 'SIGKILL');
  await waitUntil('the program to go away', () => xdpOn(a, pair.ifA) === undefined);
  t.deepEqual(xdpLinks(progId), [], 'no bpf_link left');
});

privileged('a foreign XDP program is refused without --force and replaced with it', async (t) => {
  const {a, pair} = bed(t);
  const foreign = attachForeignXdp(a, pair.ifA, t);

  const refused = await runCli(t, ['xdp-count', pair.ifA, '--netns', a.path, '--count', '1', '--interval', '0.1']);
  t.is(refused.code, 1);
  t.regex(refused.stderr, new RegExp(`^error: ${pair.ifA} already has an XDP program: id ${foreign.id} "xdp_count", generic \\(skb\\) mode, attached through netlink.*--force`));
  t.is(refused.stderr.trim().split('\n').length, 1, 'one line');
  t.is(refused.stdout, '');
  t.is(xdpOn(a, pair.ifA)?.id, foreign.id, 'the foreign program is untouched');

  const run = startCli(t, ['xdp-count', pair.ifA, '--netns', a.path, '--force', '--interval', '0.2']);
  const ours = await waitUntil('our program', () => {
    const on = xdpOn(a, pair.ifA);
    return on !== undefined && on.id !== foreign.id ? on : undefined;
  });
  t.is(ours.mode, 1, 'native mode');
  run.child.kill('SIGTERM');
  const {code} = await run.exited;
  t.is(code, 0, run.stderr);
  t.regex(run.stderr, new RegExp(`notice: replaced XDP program id ${foreign.id} "xdp_count", generic \\(skb\\) mode`));
  t.is(xdpOn(a, pair.ifA), undefined, 'nothing left: the foreign program is not restored');
});

privileged('another skl on the interface: refused naming its pid; --force detaches its link and it exits 1', async (t) => {
  const {a, pair} = bed(t);
  const first = startCli(t, ['xdp-count', pair.ifA, '--netns', a.path, '--interval', '0.1', '--json']);
  const firstId = await attached(first, a, pair.ifA);

  const refused = await runCli(t, ['xdp-count', pair.ifA, '--netns', a.path, '--count', '1']);
  t.is(refused.code, 1);
  t.regex(refused.stderr, new RegExp(`id ${firstId} "xdp_count", native mode, bpf_link \\d+ held by pid ${first.pid} \\(run\\.js xdp-count`));

  const second = await runCli(t, ['xdp-count', pair.ifA, '--netns', a.path, '--count', '2', '--interval', '0.1', '--force']);
  t.is(second.code, 0, second.stderr);
  const {code} = await first.exited;
  t.is(code, 1);
  t.regex(first.stderr, /error: the counter was detached from/);
  t.like(first.records().pop(), {type: 'summary', reason: 'detached'});
  t.is(xdpOn(a, pair.ifA), undefined);
});

privileged('the interface going away stops the counter with a summary and exit code 1', async (t) => {
  const {a, pair} = bed(t);
  const run = startCli(t, ['xdp-count', pair.ifA, '--netns', a.path, '--interval', '0.1', '--json']);
  await attached(run, a, pair.ifA);
  a.exec(findExecutable('ip')!, ['link', 'delete', pair.ifA], {check: true});
  const {code} = await run.exited;
  t.is(code, 1);
  t.like(run.records().pop(), {type: 'summary', reason: 'detached'});
});

privileged('unknown interface: one line listing the interfaces that exist, exit 2', async (t) => {
  const {a, pair} = bed(t);
  const r = await runCli(t, ['xdp-count', 'nosuch0', '--netns', a.path]);
  t.is(r.code, 2);
  t.is(r.stderr, `error: no interface named "nosuch0" in network namespace ${a.path}; interfaces: lo, ${pair.ifA}\n`);
  t.is(r.stdout, '');
});

privileged('--mode native on an interface without native XDP (lo): one clear line, exit 1, nothing attached', async (t) => {
  const a = createNetns(t);
  const r = await runCli(t, ['xdp-count', 'lo', '--netns', a.path, '--mode', 'native']);
  t.is(r.code, 1);
  t.is(r.stderr, 'error: lo does not support native XDP (EOPNOTSUPP); use --mode skb (or auto) for generic XDP\n');
  t.is(xdpOn(a, 'lo'), undefined);

  // auto falls back to generic with a notice
  const auto = await runCli(t, ['xdp-count', 'lo', '--netns', a.path, '--count', '1', '--interval', '0.1', '--json']);
  t.is(auto.code, 0, auto.stderr);
  t.regex(auto.stderr, /notice: lo does not support native XDP \(EOPNOTSUPP\); falling back to generic \(skb\) mode/);
  t.like(JSON.parse(auto.stdout.trim().split('\n')[0]), {mode: 'skb'});
  t.is(xdpOn(a, 'lo'), undefined);
});

needing(['setpriv']).privileged('not root: one line saying so, exit 1, nothing attached', (t, [setpriv]) => {
  const a = createNetns(t);
  const r = a.exec(setpriv, ['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', process.execPath, CLI, 'xdp-count', 'lo'], {
    env: {...process.env, HOME: '/tmp', NO_COLOR: '1'},
  });
  t.is(r.code, 1, r.stderr);
  t.regex(r.stderr, /^error: cannot load the XDP counter: permission denied; run as root/m);
  t.is(r.stderr.split('\n').filter((l) => l.startsWith('error:')).length, 1);
  t.is(xdpOn(a, 'lo'), undefined);
});

test('--interval is validated (no root needed: rejected before anything is loaded)', async (t) => {
  const r = await runCli(t, ['xdp-count', 'lo', '--interval', 'soon']);
  t.is(r.code, 2);
  t.is(r.stderr, 'error: --interval "soon": give a number of seconds between 0.01 and 86400\n');
});
