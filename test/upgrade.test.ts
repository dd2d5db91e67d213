// Upgrading pinned state written by skl 0.1.0 (layout 0) with today's `skl upgrade`: skl 0.1.0 is
// built from the repository's own history (a git worktree of the v0.1.0 tag), attaches, and the
// upgrade must keep every connection, the link (same id, new program), every attachment and its
// ports; interrupted at any step, the next skl finishes or rolls back. Also: writes refused on old
// state, state of a "future" layout refused by every command, --dry-run, --all.
import test, {type ExecutionContext} from 'ava';
import {execFileSync} from 'node:child_process';
import {existsSync, mkdtempSync, readdirSync, rmSync, symlinkSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {fileURLToPath} from 'node:url';
import {BpfMap} from '../src/bpf/map.js';
import {Link} from '../src/bpf/link.js';
import {encodeInfo, LAYOUT} from '../src/dispatcher/layout.js';
import {createNetns, type Netns} from './helpers/netns.js';
import {SKL_PIN_ROOT, useSkl, type SklContext, type StatusJson} from './helpers/dispatcher.js';
import {connectOnce} from './helpers/clients.js';
import {startToyServer} from './helpers/servers.js';
import {privileged} from './helpers/privileged.js';
import {describeRun, pinEntriesOf, runSkl, startLoad, startQuietServer, stderrLines, type QuietServer} from './helpers/reliability.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const HOST = '127.0.0.1';

/** Older releases, built once for this file from the repository's history: tag → bin/run.js. */
const builds = new Map<string, string>();
const worktrees: string[] = [];

/** A worktree of a release tag (or, in a clone without tags, the commit it names), compiled. */
function buildRelease(tag: string, commit: string): string {
  const dir = mkdtempSync(`${tmpdir()}/skl-${tag}-`);
  rmSync(dir, {recursive: true});
  const git = (...args: string[]): string => execFileSync('git', ['-C', ROOT, ...args], {encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe']});
  let ref = tag;
  try {
    git('rev-parse', '--verify', '--quiet', `${tag}^{commit}`);
  } catch {
    ref = commit;
  }
  git('worktree', 'add', '--detach', dir, ref);
  worktrees.push(dir);
  symlinkSync(`${ROOT}node_modules`, `${dir}/node_modules`);
  execFileSync(process.execPath, [`${ROOT}node_modules/typescript/bin/tsc`, '-p', `${dir}/tsconfig.json`], {stdio: 'inherit'});
  execFileSync(process.execPath, [`${dir}/dist/scripts/manifest.js`], {cwd: dir, stdio: 'ignore'});
  return `${dir}/bin/run.js`;
}

test.before(() => {
  builds.set('v0.1.0', buildRelease('v0.1.0', 'e4c6f6f'));
  builds.set('v0.2.0', buildRelease('v0.2.0', 'fc56776'));
  oldSkl = builds.get('v0.1.0');
});

let oldSkl: string | undefined;

test.after.always(() => {
  for (const dir of worktrees) {
    try {
      execFileSync('git', ['-C', ROOT, 'worktree', 'remove', '--force', dir], {stdio: 'ignore'});
    } catch {
      rmSync(dir, {recursive: true, force: true});
      execFileSync('git', ['-C', ROOT, 'worktree', 'prune'], {stdio: 'ignore'});
    }
  }
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
