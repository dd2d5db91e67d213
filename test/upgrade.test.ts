// Upgrading pinned state written by earlier skl releases with today's `skl upgrade`: skl 0.1.0
// (layout 0), 0.2.0 (layout 1) and 0.3.0 (layout 2) are built from the repository's own history
// (scripts/old-skl.sh: the release's tag, or the commit it names), attach, and the upgrade must keep
// every connection, the link (same id, new program), every service, binding and port (from 0.3.0:
// its sockets, counters and followed services, reused as they are); interrupted at any step, the
// next skl finishes or rolls back. Also: writes refused on old state, state of a "future" layout
// refused by every command, --dry-run, --all.
import test, {type ExecutionContext} from 'ava';
import {execFile} from 'node:child_process';
import {promisify} from 'node:util';
import {existsSync, mkdtempSync, readdirSync, rmSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {fileURLToPath} from 'node:url';
import {BpfMap} from '../src/bpf/map.js';
import {Link} from '../src/bpf/link.js';
import {encodeInfo, LAYOUT} from '../src/dispatcher/layout.js';
import {createNetns, type Netns} from './helpers/netns.js';
import {SKL_PIN_ROOT, useSkl, type SklContext, type StatusJson} from './helpers/dispatcher.js';
import {connectOnce} from './helpers/clients.js';
import {startToyServer, type ToyServer} from './helpers/servers.js';
import {privileged} from './helpers/privileged.js';
import {describeRun, pinEntriesOf, runSkl, startLoad, startQuietServer, stderrLines, type LoadResult, type QuietServer} from './helpers/reliability.js';
import {makeCgroup, type TestCgroup} from './helpers/cgroups.js';
import {bpfLinks, type LinkInfo} from './helpers/links.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const HOST = '127.0.0.1';
const BPF_LINK_TYPE_CGROUP = 3;
const execFileAsync = promisify(execFile);

/** Older releases, built once for this file from the repository's history: tag → bin/run.js. */
const builds = new Map<string, string>();
const buildDirs: string[] = [];

/** A release (its tag, or in a clone without tags the commit it names: scripts/old-skl.sh), compiled. */
async function buildRelease(tag: string): Promise<string> {
  const dir = mkdtempSync(`${tmpdir()}/skl-${tag}-`);
  buildDirs.push(dir);
  const {stdout} = await execFileAsync('bash', [`${ROOT}scripts/old-skl.sh`, `${dir}/skl`, tag], {encoding: 'utf8'});
  return stdout.trim();
}

test.before(async t => {
  t.timeout(600_000);
  const tags = ['v0.1.0', 'v0.2.0', 'v0.3.0'];
  const bins = await Promise.all(tags.map(buildRelease));
  tags.forEach((tag, i) => builds.set(tag, bins[i]));
  oldSkl = builds.get('v0.1.0');
});

let oldSkl: string | undefined;

test.after.always(() => {
  for (const dir of buildDirs) rmSync(dir, {recursive: true, force: true});
});

/** Run skl 0.1.0 on the test namespace; throws unless it succeeds. */
async function old(ns: Netns, args: string[]): Promise<void> {
  const r = await runSkl(args, {netns: ns.path, bin: oldSkl});
  if (r.code !== 0) throw new Error(`skl 0.1.0 ${args.join(' ')}: ${describeRun(r)}`);
}

async function server(t: ExecutionContext, ns: Netns, host: string, port: number): Promise<QuietServer> {
  const s = await startQuietServer(ns, host, port);
  t.teardown(() => s.stop());
  return s;
}

async function setup(t: ExecutionContext): Promise<{ns: Netns; sk: SklContext}> {
  const ns = createNetns(t);
  return {ns, sk: useSkl(t, ns)};
}

const linkOf = (ino: number): {id: number; progId: number} => {
  const l = Link.openPinned(`${SKL_PIN_ROOT}/${ino}/link`);
  try {
    const i = l.info();
    return {id: i.id, progId: i.progId};
  } finally {
    l.close();
  }
};
const isLegacy = (ino: number): boolean => existsSync(`${SKL_PIN_ROOT}/${ino}/target_meta`) && !existsSync(`${SKL_PIN_ROOT}/${ino}/skl_info`);
const pinsOf = (ino: number): string[] => readdirSync(`${SKL_PIN_ROOT}/${ino}`).sort();

/** Three 0.1.0 attachments: TCP with two ports, TCP with an --address filter, UDP. */
async function oldState(t: ExecutionContext, ns: Netns): Promise<{web: QuietServer; six: QuietServer}> {
  const web = await server(t, ns, HOST, 7000);
  const six = await server(t, ns, '::', 7001);
  const udp = await startToyServer(ns, {proto: 'udp', host: HOST, port: 7002});
  t.teardown(() => udp.stop());
  await old(ns, ['attach', '--pid', String(web.pid), '--name', 'web', '--ports', '8001-8002']);
  await old(ns, ['attach', '--pid', String(six.pid), '--name', 'six', '--ports', '8003', '--address', '::1']);
  await old(ns, ['attach', '--pid', String(udp.pid), '--proto', 'udp', '--name', 'dns', '--ports', '8004']);
  return {web, six};
}

privileged.serial('upgrade from skl 0.1.0 under a connection load: 0 failed connections, the same link with a new program, every attachment and port, then new-model commands work', async t => {
  t.timeout(300_000);
  const {ns, sk} = await setup(t);
  const {web, six} = await oldState(t, ns);
  t.true(isLegacy(sk.ino));
  const before = linkOf(sk.ino);

  const load = startLoad(ns, {host: HOST, ports: [8001, 8002], rate: 1000, timeoutMs: 15_000});
  t.teardown(() => load.child.kill('SIGKILL'));
  await load.started;
  const flowing = async (n: number): Promise<void> => {
    const start = (await load.mark()).succeeded;
    while ((await load.mark()).succeeded < start + n) await new Promise(r => setTimeout(r, 50));
  };
  await flowing(500);
  const up = await sk.ok(['upgrade', '--json']);
  await flowing(500);
  const result = await load.stop();

  t.is(result.failed, 0, `no connection failed across the upgrade: ${JSON.stringify(result.errors)}`);
  t.true(result.attempted >= 1000, `${result.attempted} connections ran`);
  t.deepEqual(Object.keys(result.byPid), [String(web.pid)]);
  const report = (up.json as {namespaces: {result: string; linkId: number; oldProgId: number; newProgId: number; services: {name: string; alive: boolean}[]}[]}).namespaces[0];
  t.is(report.result, 'upgraded');
  const after = linkOf(sk.ino);
  t.is(after.id, before.id, 'the same link');
  t.not(after.progId, before.progId, 'a new program behind it');
  t.deepEqual([report.linkId, report.oldProgId, report.newProgId], [before.id, before.progId, after.progId]);
  t.deepEqual(report.services.map(s => [s.name, s.alive]).sort(), [['dns', true], ['six', true], ['web', true]]);
  t.false(isLegacy(sk.ino));
  t.deepEqual(pinEntriesOf(sk.ino), [String(sk.ino)], 'no scratch directory left');

  const st = await sk.status();
  t.is((st as StatusJson & {upgrade?: string}).upgrade, undefined);
  t.deepEqual(
    st.attachments.map(a => [a.name, a.protocols.join(), a.bindings.map(b => `${b.prefix}:${b.ports}`).join(' '), a.alive, a.layout]),
    [
      ['dns', 'udp', '0.0.0.0/0:8004', true, LAYOUT],
      ['six', 'tcp', '::1/128:8003', true, LAYOUT],
      ['web', 'tcp', '0.0.0.0/0:8001-8002', true, LAYOUT],
    ],
  );
  const v6 = await connectOnce(ns, {proto: 'tcp', host: '::1', port: 8003});
  t.like(v6, {ok: true, reply: {pid: six.pid}}, JSON.stringify(v6));
  t.like(await connectOnce(ns, {proto: 'tcp', host: HOST, port: 8003}), {ok: false}, 'the address filter survived');
  const udp = await connectOnce(ns, {proto: 'udp', host: HOST, port: 8004});
  t.like(udp, {ok: true}, JSON.stringify(udp));
  // new-model commands work
  await sk.ok(['ports', 'add', 'web', '8010', '--address', '127.0.0.0/8']);
  t.like(await connectOnce(ns, {proto: 'tcp', host: HOST, port: 8010}), {ok: true, reply: {pid: web.pid}});
  const again = await sk.ok(['upgrade']);
  t.regex(again.stdout, /already current/);
});

privileged.serial('before an upgrade: status reads skl 0.1.0 state, writes are refused with one line naming the fix, and --dry-run changes nothing', async t => {
  t.timeout(300_000);
  const {ns, sk} = await setup(t);
  const {web} = await oldState(t, ns);
  // a process gone since: upgrade keeps its bindings and reports it dead
  const gone = await server(t, ns, HOST, 7100);
  await old(ns, ['attach', '--pid', String(gone.pid), '--name', 'gone', '--ports', '8100']);
  await gone.stop();

  const st = (await sk.status()) as StatusJson & {upgrade?: string};
  t.regex(st.upgrade ?? '', new RegExp(`created by skl 0\\.1\\.0 \\(layout 0\\); run: skl upgrade --netns ${ns.path}$`));
  t.deepEqual(st.attachments.map(a => [a.name, a.ports.join(), a.layout, a.alive]), [
    ['dns', '8004', 0, true],
    ['gone', '8100', 0, false],
    ['six', '8003', 0, true],
    ['web', '8001,8002', 0, true],
  ]);
  const pins = pinsOf(sk.ino);
  const link = linkOf(sk.ino);
  for (const args of [
    ['attach', '--pid', String(web.pid), '--ports', '9000', '--name', 'x'],
    ['ports', 'add', 'web', '9001'],
    ['ports', 'remove', 'web', '8001'],
    ['detach', 'web'],
  ]) {
    const r = await runSkl(args, {netns: ns.path});
    t.is(r.code, 1, `${args.join(' ')}: ${describeRun(r)}`);
    t.deepEqual(stderrLines(r), [`error: skl's state in ${SKL_PIN_ROOT}/${sk.ino} was created by skl 0.1.0 (layout 0); run: skl upgrade --netns ${ns.path}`]);
  }
  const dry = await sk.ok(['upgrade', '--dry-run']);
  t.regex(dry.stdout, new RegExp(`would upgrade .*layout 0 \\(skl 0\\.1\\.0\\) → ${LAYOUT}`));
  t.regex(dry.stdout, /gone \(pid \d+\): 1 binding — its process or socket is gone/);
  t.deepEqual(pinsOf(sk.ino), pins, 'nothing changed');
  t.deepEqual(linkOf(sk.ino), link);
  t.true(isLegacy(sk.ino));
  t.like(await connectOnce(ns, {proto: 'tcp', host: HOST, port: 8001}), {ok: true, reply: {pid: web.pid}});

  await sk.ok(['upgrade']);
  const after = await sk.attachment('gone');
  t.like(after, {alive: false, ports: [8100]});
  t.like(await connectOnce(ns, {proto: 'tcp', host: HOST, port: 8100}), {ok: false, error: 'ECONNREFUSED'});
});

privileged.serial('a "future" layout is refused by every command, never misread or removed', async t => {
  t.timeout(120_000);
  const {ns, sk} = await setup(t);
  const s = await server(t, ns, HOST, 7000);
  await sk.ok(['attach', '--pid', String(s.pid), '--name', 'web', '--ports', '8001']);
  const info = BpfMap.openPinned(`${SKL_PIN_ROOT}/${sk.ino}/skl_info`);
  const restore = (): void => info.update(Buffer.alloc(4), encodeInfo(LAYOUT, 'restored'));
  t.teardown(() => {
    restore();
    info.close();
  });
  info.update(Buffer.alloc(4), encodeInfo(LAYOUT + 1, '9.9.9'));
  const pins = pinsOf(sk.ino);
  for (const args of [
    ['status'],
    ['status', '--json'],
    ['metrics'],
    ['attach', '--pid', String(s.pid), '--ports', '9000', '--name', 'x'],
    ['ports', 'add', 'web', '9001'],
    ['detach', 'web'],
    ['detach', '--all'],
    ['upgrade'],
  ]) {
    const r = await runSkl(args, {netns: ns.path});
    t.is(r.code, 1, `${args.join(' ')}: ${describeRun(r)}`);
    t.is(stderrLines(r).length, 1, r.stderr);
    t.regex(r.stderr, /newer skl \(9\.9\.9/, args.join(' '));
  }
  t.deepEqual(pinsOf(sk.ino), pins, 'nothing removed');
  t.like(await connectOnce(ns, {proto: 'tcp', host: HOST, port: 8001}), {ok: true, reply: {pid: s.pid}});
  restore();
});

const UPGRADE_CRASH_POINTS = [
  {point: 'upgrade:built', finished: false},
  {point: 'upgrade:swapped', finished: true},
  {point: 'upgrade:link-moved', finished: true},
  {point: 'upgrade:old-renamed', finished: true},
  {point: 'upgrade:published', finished: true},
];

for (const {point, finished} of UPGRADE_CRASH_POINTS) {
  privileged.serial(`fault: skl upgrade SIGKILLed at ${point} → traffic never stops; the next skl ${finished ? 'finishes' : 'rolls back'} the upgrade, says so`, async t => {
    t.timeout(300_000);
    const {ns, sk} = await setup(t);
    const {web} = await oldState(t, ns);
    const before = linkOf(sk.ino);
    const crashed = await runSkl(['upgrade'], {netns: ns.path, env: {SKL_TEST_CRASH_AT: point}});
    t.is(crashed.signal, 'SIGKILL', describeRun(crashed));
    t.like(await connectOnce(ns, {proto: 'tcp', host: HOST, port: 8002}), {ok: true, reply: {pid: web.pid}}, 'still steered right after the crash');
    const next = await runSkl(['status', '--json'], {netns: ns.path});
    t.is(next.code, 0, describeRun(next));
    const notice = finished ? `notice: finished an upgrade an interrupted skl had started (pid ${crashed.pid})` : `notice: rolled back an upgrade an interrupted skl had started (pid ${crashed.pid}); run skl upgrade --netns ${ns.path} again`;
    t.true(stderrLines(next).includes(notice), next.stderr);
    t.deepEqual(pinEntriesOf(sk.ino), [String(sk.ino)], 'no scratch directory left');
    t.is(isLegacy(sk.ino), !finished);
    t.is(linkOf(sk.ino).id, before.id, 'the same link throughout');
    t.like(await connectOnce(ns, {proto: 'tcp', host: HOST, port: 8002}), {ok: true, reply: {pid: web.pid}});
    if (!finished) await sk.ok(['upgrade']);
    t.deepEqual((await sk.status()).attachments.map(a => [a.name, a.layout]), [['dns', LAYOUT], ['six', LAYOUT], ['web', LAYOUT]]);
  });
}

privileged.serial('upgrade --all: every namespace with skl 0.1.0 state', async t => {
  t.timeout(300_000);
  const a = await setup(t);
  const b = await setup(t);
  await oldState(t, a.ns);
  const s = await server(t, b.ns, HOST, 7000);
  await old(b.ns, ['attach', '--pid', String(s.pid), '--name', 'other', '--ports', '8001']);
  const r = await runSkl(['upgrade', '--all', '--json']);
  // --all acts on every namespace of the machine: another test's namespace vanishing meanwhile may
  // fail (reported, exit 1) without stopping ours
  if (r.code !== 0) t.false([a.ns.path, b.ns.path].some(p => r.stderr.includes(p)), describeRun(r));
  const mine = (r.json as {namespaces: {netnsIno: number; result: string}[]}).namespaces.filter(x => x.netnsIno === a.sk.ino || x.netnsIno === b.sk.ino);
  t.deepEqual(mine.map(x => x.result), ['upgraded', 'upgraded']);
  t.false(isLegacy(a.sk.ino));
  t.false(isLegacy(b.sk.ino));
  t.like(await connectOnce(b.ns, {proto: 'tcp', host: HOST, port: 8001}), {ok: true, reply: {pid: s.pid}});
});

privileged.serial('upgrade from skl 0.2.0 (layout 1): read before, refused writes, then every service, socket and binding on the same link', async t => {
  t.timeout(300_000);
  const {ns, sk} = await setup(t);
  const bin = builds.get('v0.2.0');
  const v020 = async (args: string[]): Promise<void> => {
    const r = await runSkl(args, {netns: ns.path, bin});
    if (r.code !== 0) throw new Error(`skl 0.2.0 ${args.join(' ')}: ${describeRun(r)}`);
  };
  const dual = await server(t, ns, '::', 7001);
  const web = await server(t, ns, HOST, 7002);
  await v020(['attach', '--pid', String(dual.pid), '--name', 'dual', '--ports', '8001-8002']);
  await v020(['attach', '--pid', String(web.pid), '--name', 'web', '--ports', 'all', '--address', '127.0.0.128/25', '--force']);
  const before = linkOf(sk.ino);
  const st = (await sk.status()) as StatusJson & {upgrade?: string};
  t.regex(st.upgrade ?? '', /created by skl 0\.2\.0 \(layout 1\); run: skl upgrade/);
  t.deepEqual(st.attachments.map(a => [a.name, a.layout, a.bindings.map(b => `${b.prefix}:${b.ports}`).join(' ')]), [
    ['dual', 1, '0.0.0.0/0:8001-8002 ::/0:8001-8002'],
    ['web', 1, '127.0.0.128/25:all'],
  ]);
  const refused = await runSkl(['ports', 'add', 'web', '9000'], {netns: ns.path});
  t.is(refused.code, 1);
  t.regex(refused.stderr, /created by skl 0\.2\.0 \(layout 1\); run: skl upgrade/);
  const up = await sk.ok(['upgrade', '--json']);
  t.like((up.json as {namespaces: object[]}).namespaces[0], {result: 'upgraded', fromLayout: 1, toLayout: LAYOUT});
  t.is(linkOf(sk.ino).id, before.id);
  t.not(linkOf(sk.ino).progId, before.progId);
  t.like(await connectOnce(ns, {proto: 'tcp', host: '::1', port: 8002}), {ok: true, reply: {pid: dual.pid}});
  t.like(await connectOnce(ns, {proto: 'tcp', host: HOST, port: 8001}), {ok: true, reply: {pid: dual.pid}});
  t.like(await connectOnce(ns, {proto: 'tcp', host: '127.0.0.200', port: 5555}), {ok: true, reply: {pid: web.pid}});
  t.deepEqual((await sk.status()).attachments.map(a => [a.name, a.layout, a.alive]), [['dual', LAYOUT, true], ['web', LAYOUT, true]]);
  await sk.ok(['ports', 'add', 'web', '9000', '--address', '127.0.0.1/32']);
});

// ---- skl 0.3.0 (layout 2): its maps of sockets, services, counters and followed listeners are
// reused as they are, so that sockets the follow program stored after restarts carry over ----

/** Run skl 0.3.0 on the test namespace; throws unless it succeeds. */
async function v030(ns: Netns, args: string[]): Promise<void> {
  const r = await runSkl(args, {netns: ns.path, bin: builds.get('v0.3.0')});
  if (r.code !== 0) throw new Error(`skl 0.3.0 ${args.join(' ')}: ${describeRun(r)}`);
}

interface V030State {
  web: QuietServer;
  dns: ToyServer;
  pfx: QuietServer;
  host: QuietServer;
  all: QuietServer;
  cg: TestCgroup;
  /** the followed service's current process (a restart of the one attached) */
  fol: QuietServer;
}

/** The followed service's listener, and its process in the cgroup (restarted: the previous one is stopped first). */
const FOL_PORT = 7005;
async function restartFollowed(t: ExecutionContext, ns: Netns, s: V030State): Promise<QuietServer> {
  await s.fol.stop();
  s.fol = await startQuietServer(ns, HOST, FOL_PORT, s.cg.dir);
  t.teardown(() => s.fol.stop());
  return s.fol;
}

/** The extra ports of V030State and who serves them: (host, port) → the service's server. */
const v030Targets = (s: V030State): {host: string; port: number; server: QuietServer}[] => [
  {host: HOST, port: 8001, server: s.web},
  {host: '::1', port: 8002, server: s.web},
  {host: '127.0.0.5', port: 8010, server: s.pfx},
  {host: '127.0.0.9', port: 8011, server: s.host},
  {host: '127.0.0.77', port: 5555, server: s.all},
  {host: HOST, port: 8005, server: s.fol},
];

/**
 * skl 0.3.0's state: TCP on both families (web), UDP (dns), a prefix binding (127.0.0.0/24), a
 * host binding (127.0.0.9), every port of an address (127.0.0.77), and a service followed in a
 * cgroup of the test's own, restarted once, so that its socket in the SOCKMAP is the one the
 * follow program stored, not the one attach took.
 */
async function v030State(t: ExecutionContext, ns: Netns): Promise<V030State> {
  const cg = makeCgroup(t);
  const s: V030State = {
    web: await server(t, ns, `${HOST},::1`, 7000),
    dns: await startToyServer(ns, {proto: 'udp', host: HOST, port: 7002}),
    pfx: await server(t, ns, HOST, 7010),
    host: await server(t, ns, HOST, 7011),
    all: await server(t, ns, '::', 7003),
    cg,
    fol: await startQuietServer(ns, HOST, FOL_PORT, cg.dir),
  };
  t.teardown(() => s.dns.stop());
  t.teardown(() => s.fol.stop());
  await v030(ns, ['attach', '--pid', String(s.web.pid), '--name', 'web', '--ports', '8001-8002']);
  await v030(ns, ['attach', '--pid', String(s.dns.pid), '--proto', 'udp', '--name', 'dns', '--ports', '8004']);
  await v030(ns, ['attach', '--pid', String(s.pfx.pid), '--name', 'pfx', '--ports', '8010', '--address', '127.0.0.0/24']);
  await v030(ns, ['attach', '--pid', String(s.host.pid), '--name', 'host', '--ports', '8011', '--address', '127.0.0.9']);
  await v030(ns, ['attach', '--pid', String(s.all.pid), '--name', 'all', '--ports', 'all', '--address', '127.0.0.77', '--force']);
  await v030(ns, ['attach', '--cgroup', cg.path, '--listener', `${HOST}:${FOL_PORT}`, '--name', 'fol', '--ports', '8005']);
  const first = s.fol.pid;
  await restartFollowed(t, ns, s);
  const r = await connectOnce(ns, {proto: 'tcp', host: HOST, port: 8005});
  if (!r.ok || r.reply.pid === first || r.reply.pid !== s.fol.pid) throw new Error(`skl 0.3.0 did not follow the restart: ${JSON.stringify(r)}`);
  return s;
}

/** `skl status --json` without what an upgrade changes (the layout, the note asking for it, UDP replies, which older layouts did not have) or traffic moves (counters). */
function comparable(st: StatusJson): unknown {
  const {upgrade: _u, ...rest} = st as StatusJson & {upgrade?: string};
  return {
    ...rest,
    attachments: st.attachments.map(a => {
      const {layout: _l, redirected: _r, missed: _m, retaken: _t, udpReplies: _ur, flows: _f, rewritten: _w, ...keep} = a as typeof a & {retaken?: number};
      return keep;
    }),
  };
}

/** One load client per address of V030State's extra ports (the client takes one address). */
function startLoads(ns: Netns, s: V030State, rate: number): {stop(): Promise<LoadResult[]>; flowing(n: number): Promise<void>} {
  const byHost = new Map<string, number[]>();
  for (const x of v030Targets(s)) byHost.set(x.host, [...(byHost.get(x.host) ?? []), x.port]);
  const loads = [...byHost].map(([host, ports]) => startLoad(ns, {host, ports, rate, timeoutMs: 15_000}));
  return {
    async flowing(n) {
      await Promise.all(loads.map(l => l.started));
      const start = await Promise.all(loads.map(l => l.mark()));
      for (;;) {
        const now = await Promise.all(loads.map(l => l.mark()));
        if (now.every((m, i) => m.succeeded >= start[i].succeeded + n)) return;
        await new Promise(r => setTimeout(r, 50));
      }
    },
    stop: () => Promise.all(loads.map(l => l.stop())),
  };
}

const cgroupLinksOf = (cg: TestCgroup): LinkInfo[] => bpfLinks().filter(l => l.type === BPF_LINK_TYPE_CGROUP && l.cgroupId === cg.ino);

privileged.serial('upgrade from skl 0.3.0 (layout 2) under a connection load on every port: 0 failed connections, the same link with a new program, every service and binding as it was, its sockets (one stored by the follow program) and counters carried over, and the followed service still followed', async t => {
  t.timeout(420_000);
  const {ns, sk} = await setup(t);
  const s = await v030State(t, ns);
  const before = linkOf(sk.ino);
  const followLinks = cgroupLinksOf(s.cg);
  t.is(followLinks.length, 1, 'skl 0.3.0 follows the cgroup with one sock_ops link');
  const st0 = (await sk.status()) as StatusJson & {upgrade?: string};
  t.regex(st0.upgrade ?? '', /created by skl 0\.3\.0 \(layout 2\); run: skl upgrade/);
  t.like(st0.attachments.find(a => a.name === 'fol'), {pid: s.fol.pid, alive: true, retaken: 1, layout: 2, follow: {cgroup: s.cg.path, currentPid: s.fol.pid}});
  const said = await runSkl(['status', '--json'], {netns: ns.path, bin: builds.get('v0.3.0')});
  t.deepEqual(comparable(said.json as StatusJson), comparable(st0), "today's skl reads skl 0.3.0's state as skl 0.3.0 does");

  const load = startLoads(ns, s, 150);
  t.teardown(() => load.stop().then(() => undefined, () => undefined));
  await load.flowing(100);
  const up = await sk.ok(['upgrade', '--json']);
  await load.flowing(100);
  const results = await load.stop();

  for (const r of results) {
    t.is(r.failed, 0, `no connection failed across the upgrade: ${JSON.stringify({errors: r.errors, perPort: r.perPort, failures: r.failures.slice(0, 5)})}`);
    for (const [port, c] of Object.entries(r.perPort)) t.true(c.ok >= 100, `port ${port}: ${c.ok} connections`);
  }
  const expected = new Map(v030Targets(s).map(x => [String(x.server.pid), true]));
  for (const r of results) for (const pid of Object.keys(r.byPid)) t.true(expected.has(pid), `answered by ${pid}, one of the services`);
  const report = (up.json as {namespaces: {result: string; fromLayout: number; linkId: number; oldProgId: number; newProgId: number; services: {name: string; alive: boolean}[]}[]}).namespaces[0];
  t.like(report, {result: 'upgraded', fromLayout: 2});
  t.false(/counters restart/.test(up.stderr), `counters carry over from layout 2: ${up.stderr}`);
  const after = linkOf(sk.ino);
  t.is(after.id, before.id, 'the same link');
  t.not(after.progId, before.progId, 'a new program behind it');
  t.deepEqual([report.linkId, report.oldProgId, report.newProgId], [before.id, before.progId, after.progId]);
  t.deepEqual(report.services.map(x => [x.name, x.alive]).sort(), [['all', true], ['dns', true], ['fol', true], ['host', true], ['pfx', true], ['web', true]]);
  t.deepEqual(pinEntriesOf(sk.ino), [String(sk.ino)], 'no scratch directory left');
  // the cgroup's sock_ops link: the same link, running the new follow program, pinned in the new state
  const followAfter = cgroupLinksOf(s.cg);
  t.deepEqual(followAfter.map(l => l.id), followLinks.map(l => l.id), 'the same cgroup link');
  t.not(followAfter[0].progId, followLinks[0].progId, 'running the new follow program');
  t.true(existsSync(`${SKL_PIN_ROOT}/${sk.ino}/follow-${s.cg.ino}`));

  const st1 = (await sk.status()) as StatusJson & {upgrade?: string};
  t.deepEqual(comparable(st1), comparable(st0), 'every service, socket, binding and port as it was');
  t.true(st1.attachments.every(a => a.layout === LAYOUT));
  for (const a of st1.attachments) {
    const was = st0.attachments.find(x => x.name === a.name)!;
    t.true(a.redirected >= was.redirected, `${a.name}: counters carried over (${was.redirected} → ${a.redirected})`);
  }
  t.like(st1.attachments.find(a => a.name === 'fol'), {pid: s.fol.pid, retaken: 1});
  for (const x of v030Targets(s)) t.like(await connectOnce(ns, {proto: 'tcp', host: x.host, port: x.port}), {ok: true, reply: {pid: x.server.pid}}, `${x.host}:${x.port}`);
  t.like(await connectOnce(ns, {proto: 'tcp', host: '127.0.0.1', port: 8010}), {ok: true, reply: {pid: s.pfx.pid}}, 'the /24 covers 127.0.0.1 too');
  t.like(await connectOnce(ns, {proto: 'tcp', host: '127.0.1.1', port: 8010}), {ok: false}, 'but not 127.0.1.1');
  t.like(await connectOnce(ns, {proto: 'tcp', host: HOST, port: 8011}), {ok: false}, 'the host binding is 127.0.0.9 only');
  t.like(await connectOnce(ns, {proto: 'udp', host: HOST, port: 8004}), {ok: true, reply: {pid: s.dns.pid}});
  // a UDP service gets this layout's default: its replies leave from the extra port
  t.like(await sk.attachment('dns'), {udpReplies: 'rewrite', flows: 1, rewritten: 1});

  // still followed: a restart after the upgrade reaches the new process, stored by the new follow program
  const was = s.fol.pid;
  await restartFollowed(t, ns, s);
  t.like(await connectOnce(ns, {proto: 'tcp', host: HOST, port: 8005}), {ok: true, reply: {pid: s.fol.pid}}, `the restarted service (was ${was})`);
  t.like(await sk.attachment('fol'), {pid: s.fol.pid, alive: true, retaken: 2});

  t.regex((await sk.ok(['upgrade'])).stdout, /already current/);
  await sk.ok(['ports', 'add', 'pfx', '8012', '--address', '127.0.0.0/24']);
  t.like(await connectOnce(ns, {proto: 'tcp', host: '127.0.0.6', port: 8012}), {ok: true, reply: {pid: s.pfx.pid}});
});

for (const {point, finished} of UPGRADE_CRASH_POINTS) {
  privileged.serial(`fault: skl upgrade from skl 0.3.0 (layout 2) SIGKILLed at ${point} under a connection load → no connection fails; the next skl ${finished ? 'finishes' : 'rolls back'} the upgrade; the followed service stays followed`, async t => {
    t.timeout(420_000);
    const {ns, sk} = await setup(t);
    const s = await v030State(t, ns);
    const before = linkOf(sk.ino);
    const st0 = await sk.status();
    const load = startLoads(ns, s, 100);
    t.teardown(() => load.stop().then(() => undefined, () => undefined));
    await load.flowing(50);
    const crashed = await runSkl(['upgrade'], {netns: ns.path, env: {SKL_TEST_CRASH_AT: point}});
    t.is(crashed.signal, 'SIGKILL', describeRun(crashed));
    await load.flowing(50);
    const next = await runSkl(['status', '--json'], {netns: ns.path});
    t.is(next.code, 0, describeRun(next));
    const notice = finished ? `notice: finished an upgrade an interrupted skl had started (pid ${crashed.pid})` : `notice: rolled back an upgrade an interrupted skl had started (pid ${crashed.pid}); run skl upgrade --netns ${ns.path} again`;
    t.true(stderrLines(next).includes(notice), next.stderr);
    await load.flowing(50);
    if (!finished) await sk.ok(['upgrade']);
    await load.flowing(50);
    for (const r of await load.stop()) t.is(r.failed, 0, `no connection failed: ${JSON.stringify({errors: r.errors, perPort: r.perPort, failures: r.failures.slice(0, 5)})}`);
    t.deepEqual(pinEntriesOf(sk.ino), [String(sk.ino)], 'no scratch directory left');
    t.is(linkOf(sk.ino).id, before.id, 'the same link throughout');
    const st1 = await sk.status();
    t.deepEqual(comparable(st1), comparable(st0), 'every service, socket, binding and port as it was');
    t.true(st1.attachments.every(a => a.layout === LAYOUT));
    t.is(cgroupLinksOf(s.cg).length, 1, 'one sock_ops link on the cgroup');
    t.true(existsSync(`${SKL_PIN_ROOT}/${sk.ino}/follow-${s.cg.ino}`));
    await restartFollowed(t, ns, s);
    t.like(await connectOnce(ns, {proto: 'tcp', host: HOST, port: 8005}), {ok: true, reply: {pid: s.fol.pid}}, 'a restart after the upgrade is followed');
  });
}
