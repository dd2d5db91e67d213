// Crash repair beyond create/attach/detach (those are in reliability.test.ts, upgrade's in
// upgrade.test.ts): `ports add`, `ports remove` and an in-place replacement SIGKILLed at each of
// their steps (SKL_TEST_CRASH_AT, src/dispatcher/faults.ts), and a foreground attach killed
// half-way. For every crash point: traffic in the window before any repair goes only where the
// state before or the state after the change would send it (never anywhere else); the next skl
// rolls the change back or finishes it, says so on stderr, and leaves exactly the state before or
// after; nothing is left to repair after that.
//
// Every skl invocation acts on a test namespace through --netns; traffic is loopback inside it.
// Serial: each test starts several skl processes and servers.
import type {ExecutionContext} from 'ava';
import {privileged} from './helpers/privileged.js';
import {createNetns, type Netns} from './helpers/netns.js';
import {eventually, useSkl, type SklContext, type StatusJson} from './helpers/dispatcher.js';
import {connectOnce} from './helpers/clients.js';
import {netnsLinks} from './helpers/links.js';
import {describeRun, pinEntriesOf, pinFilesOf, PIN_FILES, runSkl, slotsOf, startQuietServer, stderrLines, type QuietServer} from './helpers/reliability.js';
import {SVC_READY} from '../src/dispatcher/layout.js';

const V4 = '127.0.0.1';
const V6 = '::1';

async function setup(t: ExecutionContext): Promise<{ns: Netns; sk: SklContext}> {
  const ns = createNetns(t);
  return {ns, sk: useSkl(t, ns)};
}

/** A quiet server with a socket on 127.0.0.1:port and one on [::1]:port (a service of two sockets). */
async function server(t: ExecutionContext, ns: Netns, port: number, hosts = `${V4},${V6}`): Promise<QuietServer> {
  const s = await startQuietServer(ns, hosts, port);
  t.teardown(() => s.stop());
  return s;
}

/** Who answers a connection to host:port right now (before any skl runs, which would repair first): a pid or the error. */
async function answer(ns: Netns, port: number, host = V4): Promise<number | string> {
  const r = await connectOnce(ns, {proto: 'tcp', host, port});
  return r.ok ? r.reply.pid : r.error;
}

async function answers(ns: Netns, ports: number[], host = V4): Promise<(number | string)[]> {
  const out: (number | string)[] = [];
  for (const p of ports) out.push(await answer(ns, p, host));
  return out;
}

/** After the repair: only the namespace's own, complete pin directory; no slot that is not ready. */
function assertConsistent(t: ExecutionContext, ino: number): void {
  t.deepEqual(pinEntriesOf(ino), [String(ino)], 'no scratch directory or change journal left');
  t.deepEqual(pinFilesOf(ino), PIN_FILES, 'the dispatcher has all its pins');
  t.deepEqual(slotsOf(ino).filter(s => s.state !== SVC_READY), [], 'no slot left pending');
}

/** The next skl (status) repairs: exactly this notice, and then nothing is left to repair. */
async function repairedWith(t: ExecutionContext, ns: Netns, notice: string): Promise<StatusJson> {
  const next = await runSkl(['status', '--json'], {netns: ns.path});
  t.is(next.code, 0, describeRun(next));
  t.deepEqual(stderrLines(next), [`notice: ${notice}`], 'the repair says what it did');
  const again = await runSkl(['status', '--json'], {netns: ns.path});
  t.deepEqual(stderrLines(again), [], 'nothing left to repair');
  t.is(again.stdout, next.stdout, 'the repaired state is stable');
  return next.json as StatusJson;
}

const R = 'ECONNREFUSED';

/** An attachment without its counters (the window's connections count). */
const uncounted = ({redirected: _r, missed: _m, ...rest}: StatusJson['attachments'][number]): object => rest;

// ---------------------------------------------------------------------------------------------
// ports add: journaled, then written in two halves; an interruption is rolled back
// ---------------------------------------------------------------------------------------------

const ADD_POINTS: {point: string; window: (s: number) => (number | string)[]; notice: (pid: number) => string}[] = [
  // the journal was being written: nothing live touched
  {point: 'journal:incomplete', window: () => [R, R, R, R], notice: pid => `removed an unfinished change record of an interrupted skl (pid ${pid}); it had changed nothing`},
  {point: 'ports:journaled', window: () => [R, R, R, R], notice: pid => `rolled back a ports add of web (8003-8006) an interrupted skl had started (pid ${pid})`},
  {point: 'ports:half-written', window: s => [s, s, R, R], notice: pid => `rolled back a ports add of web (8003-8006) an interrupted skl had started (pid ${pid})`},
  {point: 'ports:written', window: s => [s, s, s, s], notice: pid => `rolled back a ports add of web (8003-8006) an interrupted skl had started (pid ${pid})`},
];

for (const {point, window, notice} of ADD_POINTS) {
  privileged.serial(`repair: skl ports add SIGKILLed at ${point} → the ports written steer to their service only; the next skl rolls the add back and says so`, async t => {
    t.timeout(120_000);
    const {ns, sk} = await setup(t);
    const web = await server(t, ns, 7000, V4);
    const keep = await server(t, ns, 7100, V4);
    await sk.ok(['attach', '--pid', String(web.pid), '--name', 'web', '--ports', '8001-8002']);
    await sk.ok(['attach', '--pid', String(keep.pid), '--name', 'keep', '--ports', '8100']);
    const before = await sk.status();

    const crashed = await runSkl(['ports', 'add', 'web', '8003-8006'], {netns: ns.path, env: {SKL_TEST_CRASH_AT: point}});
    t.is(crashed.signal, 'SIGKILL', `skl killed itself at ${point}: ${describeRun(crashed)}`);
    t.deepEqual(pinEntriesOf(sk.ino), [String(sk.ino), `${sk.ino}-change-${crashed.pid}`], 'a change journal beside the dispatcher');
    // the window: the ports it had, and the other service, as before; of the new ones, those written go to web, the rest refuse
    t.deepEqual(await answers(ns, [8001, 8002, 8100]), [web.pid, web.pid, keep.pid], 'what was attached still is');
    t.deepEqual(await answers(ns, [8003, 8004, 8005, 8006]), window(web.pid), 'a port being added goes to its service or nowhere');

    const st = await repairedWith(t, ns, notice(crashed.pid));
    t.deepEqual(st.attachments.map(uncounted), before.attachments.map(uncounted), 'exactly the state before the add');
    t.deepEqual(await answers(ns, [8001, 8002, 8003, 8004, 8005, 8006, 8100]), [web.pid, web.pid, R, R, R, R, keep.pid]);
    assertConsistent(t, sk.ino);

    // and the add, run again, works
    await sk.ok(['ports', 'add', 'web', '8003-8006']);
    t.deepEqual(await answers(ns, [8003, 8006]), [web.pid, web.pid]);
    t.deepEqual((await sk.attachment('web')).ports, [8001, 8002, 8003, 8004, 8005, 8006]);
  });
}

// ---------------------------------------------------------------------------------------------
// ports remove: journaled, then removed in two halves; an interruption is finished
// ---------------------------------------------------------------------------------------------

const REMOVE_POINTS: {point: string; window: (s: number) => (number | string)[]}[] = [
  {point: 'ports:journaled', window: s => [s, s, s, s]},
  {point: 'ports:half-written', window: s => [R, R, s, s]},
  {point: 'ports:written', window: () => [R, R, R, R]},
];

for (const {point, window} of REMOVE_POINTS) {
  privileged.serial(`repair: skl ports remove SIGKILLed at ${point} → a port being removed goes to its service or nowhere; the next skl finishes the remove and says so`, async t => {
    t.timeout(120_000);
    const {ns, sk} = await setup(t);
    const web = await server(t, ns, 7000, V4);
    await sk.ok(['attach', '--pid', String(web.pid), '--name', 'web', '--ports', '8001-8006']);

    const crashed = await runSkl(['ports', 'remove', 'web', '8003-8006'], {netns: ns.path, env: {SKL_TEST_CRASH_AT: point}});
    t.is(crashed.signal, 'SIGKILL', `skl killed itself at ${point}: ${describeRun(crashed)}`);
    t.deepEqual(await answers(ns, [8001, 8002]), [web.pid, web.pid], 'the ports that stay still answer');
    t.deepEqual(await answers(ns, [8003, 8004, 8005, 8006]), window(web.pid));

    const st = await repairedWith(t, ns, `finished a ports remove of web (8003-8006) an interrupted skl had started (pid ${crashed.pid})`);
    t.deepEqual(st.attachments.map(a => [a.name, a.ports]), [['web', [8001, 8002]]], 'exactly the state after the remove');
    t.deepEqual(await answers(ns, [8001, 8002, 8003, 8004, 8005, 8006]), [web.pid, web.pid, R, R, R, R]);
    assertConsistent(t, sk.ino);
  });
}

// ---------------------------------------------------------------------------------------------
// In-place replacement (attach of an existing name with a new pid): rolled back before the first
// socket is swapped, finished after (the new sockets are taken again from the new process)
// ---------------------------------------------------------------------------------------------

interface ReplacePoint {
  point: string;
  finished: boolean;
  /** who answers on [8001, 8002, 8003] over IPv4 and over IPv6 in the window: old, new, refused */
  v4: ('old' | 'new' | 'R')[];
  v6: ('old' | 'new' | 'R')[];
}

const REPLACE_POINTS: ReplacePoint[] = [
  {point: 'replace:journaled', finished: false, v4: ['old', 'old', 'R'], v6: ['old', 'old', 'R']},
  {point: 'replace:bindings-added', finished: false, v4: ['old', 'old', 'old'], v6: ['old', 'old', 'old']},
  // the IPv4 socket swapped, the IPv6 one not yet: each family still goes to a socket of the service
  {point: 'replace:socket-swapped', finished: true, v4: ['new', 'new', 'new'], v6: ['old', 'old', 'old']},
  {point: 'replace:record-written', finished: true, v4: ['new', 'new', 'new'], v6: ['new', 'new', 'new']},
  {point: 'replace:bindings-removed', finished: true, v4: ['R', 'new', 'new'], v6: ['R', 'new', 'new']},
];

for (const {point, finished, v4, v6} of REPLACE_POINTS) {
  privileged.serial(`repair: skl attach replacing a process in place SIGKILLed at ${point} → every port goes to the old or the new process; the next skl ${finished ? 'finishes' : 'rolls back'} the replacement and says so`, async t => {
    t.timeout(120_000);
    const {ns, sk} = await setup(t);
    const oldS = await server(t, ns, 7000);
    const newS = await server(t, ns, 7001);
    await sk.ok(['attach', '--pid', String(oldS.pid), '--name', 'web', '--ports', '8001-8002']);
    const before = await sk.attachment('web');
    t.deepEqual(before.sockets.map(s => s.family), [4, 6], 'a service of two sockets, one per family');

    const crashed = await runSkl(['attach', '--pid', String(newS.pid), '--name', 'web', '--ports', '8002-8003'], {netns: ns.path, env: {SKL_TEST_CRASH_AT: point}});
    t.is(crashed.signal, 'SIGKILL', `skl killed itself at ${point}: ${describeRun(crashed)}`);
    const who = {old: oldS.pid, new: newS.pid, R} as const;
    t.deepEqual(await answers(ns, [8001, 8002, 8003], V4), v4.map(w => who[w]), 'IPv4 in the window');
    t.deepEqual(await answers(ns, [8001, 8002, 8003], V6), v6.map(w => who[w]), 'IPv6 in the window');

    const notice = finished
      ? `finished replacing web's process by pid ${newS.pid}, which an interrupted skl had started (pid ${crashed.pid})`
      : `rolled back replacing web's process by pid ${newS.pid}, which an interrupted skl had started (pid ${crashed.pid})`;
    const st = await repairedWith(t, ns, notice);
    const web = st.attachments.find(a => a.name === 'web');
    if (finished) {
      t.like(web, {pid: newS.pid, ports: [8002, 8003], alive: true, listeners: ['127.0.0.1:7001', '[::1]:7001']});
      for (const host of [V4, V6]) t.deepEqual(await answers(ns, [8001, 8002, 8003], host), [R, newS.pid, newS.pid], `${host} after the repair`);
    } else {
      t.like(web, {pid: oldS.pid, ports: [8001, 8002], alive: true, listeners: ['127.0.0.1:7000', '[::1]:7000'], createdAt: before.createdAt});
      for (const host of [V4, V6]) t.deepEqual(await answers(ns, [8001, 8002, 8003], host), [oldS.pid, oldS.pid, R], `${host} after the repair`);
    }
    t.is(st.attachments.length, 1);
    assertConsistent(t, sk.ino);
  });
}

privileged.serial('repair: a replacement killed after its switch, whose new process then exits, is finished with the service shown dead', async t => {
  t.timeout(120_000);
  const {ns, sk} = await setup(t);
  const oldS = await server(t, ns, 7000);
  const newS = await server(t, ns, 7001);
  await sk.ok(['attach', '--pid', String(oldS.pid), '--name', 'web', '--ports', '8001-8002']);
  const crashed = await runSkl(['attach', '--pid', String(newS.pid), '--name', 'web'], {netns: ns.path, env: {SKL_TEST_CRASH_AT: 'replace:socket-swapped'}});
  t.is(crashed.signal, 'SIGKILL', describeRun(crashed));
  t.deepEqual(await answers(ns, [8001], V6), [oldS.pid], 'IPv6 still on the old socket');
  await newS.stop();
  // the new process is gone: the old IPv6 socket must not be left steering for a service now recorded as the new one
  const st = await repairedWith(t, ns, `finished replacing web's process by pid ${newS.pid}, which an interrupted skl had started (pid ${crashed.pid})`);
  t.like(st.attachments[0], {name: 'web', pid: newS.pid, alive: false, ports: [8001, 8002]});
  for (const host of [V4, V6]) t.deepEqual(await answers(ns, [8001, 8002], host), [R, R], `${host}: the service's process is gone`);
  assertConsistent(t, sk.ino);
});

// ---------------------------------------------------------------------------------------------
// Foreground: its kernel objects belong to the skl process; killed at any step, nothing remains
// ---------------------------------------------------------------------------------------------

for (const point of ['attach:pending', 'attach:socket-stored', 'attach:ports-written', 'foreground:attached']) {
  privileged.serial(`repair: skl attach --foreground SIGKILLed at ${point} → nothing remains (no link, no pins), its ports refuse, nothing to repair`, async t => {
    t.timeout(120_000);
    const {ns, sk} = await setup(t);
    const s = await server(t, ns, 7000, V4);
    const other = await server(t, ns, 7100, V4);
    await sk.ok(['attach', '--pid', String(other.pid), '--name', 'keep', '--ports', '8100']);
    t.is(netnsLinks(sk.ino).length, 1, 'the reader sees the pinned dispatcher link (control)');

    const crashed = await runSkl(['attach', '--pid', String(s.pid), '--name', 'fg', '--ports', '8001-8002', '--foreground'], {netns: ns.path, env: {SKL_TEST_CRASH_AT: point}});
    t.is(crashed.signal, 'SIGKILL', `skl killed itself at ${point}: ${describeRun(crashed)}`);
    // its link (if it got one) dies with its process's last fd
    t.true(await eventually(() => netnsLinks(sk.ino).length === 1, 30_000), 'only the pinned dispatcher link is left');
    t.deepEqual(await answers(ns, [8001, 8002, 8100]), [R, R, other.pid]);
    t.deepEqual(pinEntriesOf(sk.ino), [String(sk.ino)], 'no pins of its own');

    const next = await runSkl(['status', '--json'], {netns: ns.path});
    t.is(next.code, 0, describeRun(next));
    t.deepEqual(stderrLines(next), [], 'nothing to repair');
    t.deepEqual((next.json as StatusJson).attachments.map(a => a.name), ['keep']);
    assertConsistent(t, sk.ino);
    // its ports are free
    await sk.ok(['attach', '--pid', String(s.pid), '--name', 'fg', '--ports', '8001-8002']);
    t.deepEqual(await answers(ns, [8001, 8002]), [s.pid, s.pid]);
  });
}
