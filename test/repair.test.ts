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
import {describeRun, pinEntriesOf, pinKindsOf, PIN_FILES, runSkl, slotsOf, startQuietServer, stderrLines, type QuietServer} from './helpers/reliability.js';
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
  t.deepEqual(pinKindsOf(ino).fixed, PIN_FILES, 'the dispatcher has all its pins');
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

// ---------------------------------------------------------------------------------------------
// skl apply: its intent is recorded before its first change (a pinned record beside the
// dispatcher, <ino>-apply-<pid>); killed at any step, the next skl finishes it from the record
// (rolls it forward: src/dispatcher/apply-journal.ts says why) and says so in one notice
// ---------------------------------------------------------------------------------------------

// (the imports of this section; ES imports are hoisted)
import {mkdtempSync, readdirSync, rmSync, writeFileSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {parse as parseYaml} from 'yaml';
import {modeOf, pinnedState} from './helpers/reliability.js';
import {enter, SKL_PIN_ROOT} from './helpers/dispatcher.js';
import {BpfMap} from '../src/bpf/map.js';
import {Netns as SklNetns} from '../src/sys/netns.js';
import {writeApplyRecord} from '../src/dispatcher/apply-journal.js';

/** The apply records of a namespace in skl's bpffs root, read raw. */
const applyRecordsOf = (ino: number): string[] => readdirSync(SKL_PIN_ROOT).filter(e => e.startsWith(`${ino}-apply-`)).sort();

/** Ports probed in the window, in this order. */
const PROBED = [8001, 8002, 8003, 8004, 8005, 8101, 8102, 8200, 8400, 8301, 8302];
/** Ports bound before and after the apply: answered at every moment, by the old or the new owner. */
const STAYING = [8001, 8002, 8003, 8101, 8200];

type Who = 'a1' | 'a2' | 'b' | 'f' | 'c' | 'e' | 'R';

interface ApplyScene {
  ns: Netns;
  sk: SklContext;
  file: string;
  pids: Record<Exclude<Who, 'R'>, number>;
  servers: Record<Exclude<Who, 'R'>, QuietServer>;
  who: (w: Who) => number | string;
}

/**
 * Before: web (process a1) on 8001-8004, api (b) on 8101 and 8200, stray1 (c) on 8301, stray2 (e)
 * on 8302. The file: web moves to process a2 (its socket replaced in place) and gives up 8004 for
 * 8005; api adds 8102 and hands 8200 to a new service, new (f), which also gets 8400; the strays
 * are not mentioned (pruned with --prune). Every step of apply has something to do, most of them
 * twice, so a crash "after the first" leaves it truly half done.
 */
async function applyScene(t: ExecutionContext): Promise<ApplyScene> {
  const {ns, sk} = await setup(t);
  const dir = mkdtempSync(`${tmpdir()}/skl-apply-crash-`);
  t.teardown(() => rmSync(dir, {recursive: true, force: true}));
  const servers = {
    a1: await server(t, ns, 7001, V4),
    a2: await server(t, ns, 7011, V4),
    b: await server(t, ns, 7002, V4),
    f: await server(t, ns, 7005, V4),
    c: await server(t, ns, 7003, V4),
    e: await server(t, ns, 7004, V4),
  };
  const pids = Object.fromEntries(Object.entries(servers).map(([k, s]) => [k, s.pid])) as ApplyScene['pids'];
  await sk.ok(['attach', '--pid', String(pids.a1), '--name', 'web', '--ports', '8001-8004']);
  await sk.ok(['attach', '--pid', String(pids.b), '--name', 'api', '--ports', '8101,8200']);
  await sk.ok(['attach', '--pid', String(pids.c), '--name', 'stray1', '--ports', '8301']);
  await sk.ok(['attach', '--pid', String(pids.e), '--name', 'stray2', '--ports', '8302']);
  const file = `${dir}/services.yaml`;
  writeFileSync(
    file,
    `services:
  - name: web
    target: {pid: ${pids.a2}}
    ports: "8001-8003, 8005"
  - name: api
    target: {pid: ${pids.b}}
    ports: "8101-8102"
  - name: new
    target: {pid: ${pids.f}}
    ports: "8200, 8400"
`,
  );
  return {ns, sk, file, pids, servers, who: w => (w === 'R' ? R : pids[w])};
}

/** What `skl export` says is attached: name, pid, ports. */
async function exported(ns: Netns): Promise<[string, number, string][]> {
  const r = await runSkl(['export'], {netns: ns.path});
  if (r.code !== 0) throw new Error(describeRun(r));
  return (parseYaml(r.stdout) as {services: {name: string; target: {pid: number}; ports: string}[]}).services.map(s => [s.name, s.target.pid, s.ports]);
}

/** The state the file asks for (with --prune): what the next skl must leave after any crash. */
async function assertAsFile(t: ExecutionContext, s: ApplyScene, prune: boolean): Promise<void> {
  const {pids} = s;
  t.deepEqual(await answers(s.ns, PROBED), (['a2', 'a2', 'a2', 'R', 'a2', 'b', 'b', 'f', 'f', prune ? 'R' : 'c', prune ? 'R' : 'e'] as Who[]).map(s.who), 'traffic goes where the file says');
  t.deepEqual(await exported(s.ns), [
    ['api', pids.b, '8101-8102'],
    ['new', pids.f, '8200,8400'],
    ...(prune ? [] : [['stray1', pids.c, '8301'], ['stray2', pids.e, '8302']] as [string, number, string][]),
    ['web', pids.a2, '8001-8003,8005'],
  ], 'skl export: exactly the services of the file');
  const dry = await runSkl(['apply', s.file, '--dry-run', '--json', ...(prune ? ['--prune'] : [])], {netns: s.ns.path});
  t.is(dry.code, 0, describeRun(dry));
  t.deepEqual(stderrLines(dry), [], 'nothing left to repair');
  t.like(dry.json as object, {changed: false, actions: []}, 'apply --dry-run: no changes');
  t.deepEqual(applyRecordsOf(s.sk.ino), [], 'no apply record left');
  assertConsistent(t, s.sk.ino);
}

const APPLY_POINTS: {point: string; window: Who[]; alsoRepaired?: string}[] = [
  //                                 8001  8002  8003  8004  8005  8101 8102 8200 8400 8301 8302
  {point: 'apply:recorded', window: ['a1', 'a1', 'a1', 'a1', 'R', 'b', 'R', 'b', 'R', 'c', 'e']},
  {point: 'apply:sockets-replaced', window: ['a2', 'a2', 'a2', 'a2', 'R', 'b', 'R', 'b', 'R', 'c', 'e']},
  // web's bindings added, api's not yet
  {point: 'apply:bindings-added', window: ['a2', 'a2', 'a2', 'a2', 'a2', 'b', 'R', 'b', 'R', 'c', 'e']},
  // api's too; new half written (pending, so its 8400 steers nowhere yet): 8200 is still api's, never unbound
  {point: 'attach:ports-written', window: ['a2', 'a2', 'a2', 'a2', 'a2', 'b', 'b', 'b', 'R', 'c', 'e'], alsoRepaired: 'rolled back new, left half-made by an interrupted skl'},
  // new written, and 8200 taken over from api in one store
  {point: 'apply:service-added', window: ['a2', 'a2', 'a2', 'a2', 'a2', 'b', 'b', 'f', 'f', 'c', 'e']},
  // web's 8004 removed
  {point: 'apply:bindings-removed', window: ['a2', 'a2', 'a2', 'R', 'a2', 'b', 'b', 'f', 'f', 'c', 'e']},
  // stray1 detached, stray2 not yet
  {point: 'apply:service-removed', window: ['a2', 'a2', 'a2', 'R', 'a2', 'b', 'b', 'f', 'f', 'R', 'e']},
  // everything done, the record not yet removed
  {point: 'apply:applied', window: ['a2', 'a2', 'a2', 'R', 'a2', 'b', 'b', 'f', 'f', 'R', 'R']},
];

for (const {point, window, alsoRepaired} of APPLY_POINTS) {
  privileged.serial(`repair: skl apply --prune SIGKILLed at ${point} → ports that stay are served in the window; the next skl finishes the apply, says so, and the state is the file's`, async t => {
    t.timeout(180_000);
    const s = await applyScene(t);
    const crashed = await runSkl(['apply', s.file, '--prune'], {netns: s.ns.path, env: {SKL_TEST_CRASH_AT: point}});
    t.is(crashed.signal, 'SIGKILL', `skl killed itself at ${point}: ${describeRun(crashed)}`);
    // the record, read raw: written before the first change, root's only
    const records = applyRecordsOf(s.sk.ino);
    t.deepEqual(records, [`${s.sk.ino}-apply-${crashed.pid}`], 'the apply record beside the dispatcher');
    t.like(modeOf(`${SKL_PIN_ROOT}/${records[0]}`), {mode: 0o600, uid: 0});
    // the window, before any skl runs: ports that stay are answered, the others go where the state before or after sends them
    const seen = await answers(s.ns, PROBED);
    for (const port of STAYING) t.not(seen[PROBED.indexOf(port)], R, `port ${port} stays bound: served at every moment`);
    t.deepEqual(seen, window.map(s.who), `who answers each port in the window after ${point}`);

    const notice = `finished an apply of ${s.file} --prune an interrupted skl had started (pid ${crashed.pid})`;
    if (alsoRepaired === undefined) await repairedWith(t, s.ns, notice);
    else {
      // a step's own repair first (the half-written service), then the apply finished
      const next = await runSkl(['status', '--json'], {netns: s.ns.path});
      t.deepEqual(stderrLines(next), [`notice: ${alsoRepaired}`, `notice: ${notice}`], describeRun(next));
    }
    await assertAsFile(t, s, true);
  });
}

privileged.serial('repair: skl apply without --prune SIGKILLed half-way → the next skl finishes it and leaves the services the file does not mention', async t => {
  t.timeout(180_000);
  const s = await applyScene(t);
  const crashed = await runSkl(['apply', s.file], {netns: s.ns.path, env: {SKL_TEST_CRASH_AT: 'apply:service-added'}});
  t.is(crashed.signal, 'SIGKILL', describeRun(crashed));
  await repairedWith(t, s.ns, `finished an apply of ${s.file} an interrupted skl had started (pid ${crashed.pid})`);
  await assertAsFile(t, s, false);
});

privileged.serial('repair: skl apply --prune in the everyday form (inside the namespace, no --netns) SIGKILLed half-way → skl status there finishes it and says so', async t => {
  t.timeout(180_000);
  const s = await applyScene(t);
  const crashed = await runSkl(['apply', s.file, '--prune'], {wrap: enter(s.ns.path), env: {SKL_TEST_CRASH_AT: 'apply:bindings-removed'}});
  t.is(crashed.signal, 'SIGKILL', describeRun(crashed));
  t.deepEqual(applyRecordsOf(s.sk.ino), [`${s.sk.ino}-apply-${crashed.pid}`]);
  const next = await runSkl(['status', '--json'], {wrap: enter(s.ns.path)});
  t.is(next.code, 0, describeRun(next));
  t.deepEqual(stderrLines(next), [`notice: finished an apply of ${s.file} --prune an interrupted skl had started (pid ${crashed.pid})`]);
  await assertAsFile(t, s, true);
});

privileged.serial('repair: an apply killed before its first change whose new target then exits → the next skl applies the rest and names what it could not', async t => {
  t.timeout(180_000);
  const s = await applyScene(t);
  const crashed = await runSkl(['apply', s.file, '--prune'], {netns: s.ns.path, env: {SKL_TEST_CRASH_AT: 'apply:recorded'}});
  t.is(crashed.signal, 'SIGKILL', describeRun(crashed));
  await s.servers.f.stop();
  const next = await runSkl(['status', '--json'], {netns: s.ns.path});
  t.is(next.code, 0, describeRun(next));
  t.deepEqual(stderrLines(next), [
    `notice: finished an apply of ${s.file} --prune an interrupted skl had started (pid ${crashed.pid}), except: line 8: service new: process ${s.pids.f} does not exist; run skl apply again once that is fixed`,
  ]);
  // the rest of the file: web and api as it says (api has given 8200 up), the strays pruned; no new
  t.deepEqual(await answers(s.ns, PROBED), (['a2', 'a2', 'a2', 'R', 'a2', 'b', 'b', 'R', 'R', 'R', 'R'] as Who[]).map(s.who));
  t.deepEqual((await exported(s.ns)).map(([name]) => name), ['api', 'web']);
  t.deepEqual(applyRecordsOf(s.sk.ino), []);
  assertConsistent(t, s.sk.ino);
});

privileged.serial('repair: an apply of two namespaces killed before its first change → each namespace is finished by the next skl acting on it', async t => {
  t.timeout(180_000);
  const a = await setup(t);
  const b = await setup(t);
  const sa = await server(t, a.ns, 7001, V4);
  const sb = await server(t, b.ns, 7001, V4);
  const dir = mkdtempSync(`${tmpdir()}/skl-apply-crash-`);
  t.teardown(() => rmSync(dir, {recursive: true, force: true}));
  const file = `${dir}/two.yaml`;
  writeFileSync(file, `namespaces:\n  - netns: ${a.ns.path}\n    services: [{name: web, target: {pid: ${sa.pid}}, ports: "8001"}]\n  - netns: ${b.ns.path}\n    services: [{name: web, target: {pid: ${sb.pid}}, ports: "8002"}]\n`);
  const crashed = await runSkl(['apply', file], {env: {SKL_TEST_CRASH_AT: 'apply:recorded'}});
  t.is(crashed.signal, 'SIGKILL', describeRun(crashed));
  t.deepEqual(applyRecordsOf(a.sk.ino), [`${a.sk.ino}-apply-${crashed.pid}`], 'a record for each namespace before any change');
  t.deepEqual(applyRecordsOf(b.sk.ino), [`${b.sk.ino}-apply-${crashed.pid}`]);
  t.deepEqual([await answer(a.ns, 8001), await answer(b.ns, 8002)], [R, R], 'nothing changed yet');
  for (const [x, port, pid] of [[a, 8001, sa.pid], [b, 8002, sb.pid]] as const) {
    const next = await runSkl(['status', '--json'], {netns: x.ns.path});
    t.deepEqual(stderrLines(next), [`notice: finished an apply of ${file} an interrupted skl had started (pid ${crashed.pid})`], describeRun(next));
    t.is(await answer(x.ns, port), pid);
    t.deepEqual(applyRecordsOf(x.sk.ino), []);
  }
});

privileged.serial('repair: an apply record of an earlier namespace with the same inode, or one skl cannot read, is discarded with a notice and never applied', async t => {
  t.timeout(120_000);
  const {ns, sk} = await setup(t);
  const web = await server(t, ns, 7001, V4);
  await sk.ok(['attach', '--pid', String(web.pid), '--name', 'web', '--ports', '8001']);
  const before = pinnedState(sk.ino);
  // a record that would detach everything (--prune, no services), written for another namespace's cookie
  const own = SklNetns.open(ns.path);
  try {
    writeApplyRecord({bpffsRoot: '/sys/fs/bpf', netns: own}, {file: '/elsewhere.yaml', prune: true, services: [], netnsCookie: '1'});
  } finally {
    own.close();
  }
  const stale = await runSkl(['status', '--json'], {netns: ns.path});
  t.deepEqual(stderrLines(stale), [`notice: discarded the record of an apply of /elsewhere.yaml an interrupted skl (pid ${process.pid}) had started in an earlier network namespace with this inode (${sk.ino})`], describeRun(stale));
  t.deepEqual(pinnedState(sk.ino), before, 'nothing applied');
  // a pin under a record's name that is no record (another map)
  const m = BpfMap.openPinned(`${SKL_PIN_ROOT}/${sk.ino}/skl_info`);
  try {
    m.pin(`${SKL_PIN_ROOT}/${sk.ino}-apply-1`);
  } finally {
    m.close();
  }
  const odd = await runSkl(['status', '--json'], {netns: ns.path});
  t.deepEqual(stderrLines(odd), ['notice: discarded an apply record an interrupted skl (pid 1) left that this skl cannot read (not an apply record); run skl apply again'], describeRun(odd));
  t.deepEqual(pinnedState(sk.ino), before, 'nothing applied');
  t.deepEqual(applyRecordsOf(sk.ino), []);
  t.is(await answer(ns, 8001), web.pid, 'web still served');
});
