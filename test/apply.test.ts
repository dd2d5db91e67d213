// Desired state and fleet operations: `skl apply` (plan, idempotence, prune, all-or-nothing, a
// change under load, hostile files and flags, --watch, the everyday form inside the namespace),
// `skl export` (round trip), `skl metrics --listen` (parsed by a Prometheus text-format parser,
// moving with real connections), and the Kubernetes manifests and Dockerfile (static checks).
// "Changed nothing" is read from the raw pins, before any skl runs again (skl repairs before it
// reads), with no repair notice after. An apply killed half-way: test/repair.test.ts.
import test, {type ExecutionContext} from 'ava';
import {spawn, spawnSync} from 'node:child_process';
import {mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync} from 'node:fs';
import {request} from 'node:http';
import {tmpdir} from 'node:os';
import {createInterface} from 'node:readline';
import {fileURLToPath} from 'node:url';
import {parse as parseYaml} from 'yaml';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import {parseDesired} from '../src/dispatcher/desired.js';
import {createNetns, stopChild, type Netns} from './helpers/netns.js';
import {eventually, SKL_BIN, sklEnv, useSkl, type SklContext} from './helpers/dispatcher.js';
import {connectOnce} from './helpers/clients.js';
import {privileged} from './helpers/privileged.js';
import {assertStateUnchanged, describeRun, runSkl, snapshotState, startLoad, startQuietServer, stderrLines, type QuietServer} from './helpers/reliability.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const HOST = '127.0.0.1';

function tempDir(t: ExecutionContext): string {
  const dir = mkdtempSync(`${tmpdir()}/skl-apply-`);
  t.teardown(() => rmSync(dir, {recursive: true, force: true}));
  return dir;
}

async function setup(t: ExecutionContext): Promise<{ns: Netns; sk: SklContext; dir: string}> {
  const ns = createNetns(t);
  return {ns, sk: useSkl(t, ns), dir: tempDir(t)};
}

async function server(t: ExecutionContext, ns: Netns, port: number): Promise<QuietServer> {
  const s = await startQuietServer(ns, HOST, port);
  t.teardown(() => s.stop());
  return s;
}

const pid = async (ns: Netns, port: number): Promise<number | string> => {
  const r = await connectOnce(ns, {proto: 'tcp', host: HOST, port});
  return r.ok ? r.reply.pid : r.error;
};

privileged.serial('apply: the plan, then the change, then "no changes"; export round trip; --prune', async t => {
  t.timeout(180_000);
  const {ns, sk, dir} = await setup(t);
  const web = await server(t, ns, 7001);
  const api = await server(t, ns, 7002);
  const stray = await server(t, ns, 7003);
  await sk.ok(['attach', '--pid', String(stray.pid), '--name', 'stray', '--ports', '9300']);
  const file = `${dir}/services.yaml`;
  writeFileSync(
    file,
    `services:
  - name: web
    target: {pid: ${web.pid}}
    ports: "8000-8003, 9000"
  - name: api
    target: {pid: ${api.pid}, listener: ":7002"}
    bindings:
      - {ports: [9100], addresses: [127.0.0.9/32]}
      - {ports: all, addresses: 127.0.0.128/25}
`,
  );
  const beforeDry = await snapshotState(ns.path);
  const dry = await sk.ok(['apply', file, '--dry-run', '--json']);
  await assertStateUnchanged(t, ns.path, beforeDry, 'apply --dry-run');
  const plan = dry.json as {changed: boolean; dryRun: boolean; actions: {op: string; service: string; what: string}[]; unmanaged: {service: string}[]};
  t.deepEqual(plan.actions.map(a => `${a.op}${a.what} ${a.service}`), ['+service web', '+service api']);
  t.false(plan.changed);
  t.deepEqual(plan.unmanaged.map(u => u.service), ['stray']);

  const first = await sk.ok(['apply', file, '--json']);
  t.like(first.json as object, {changed: true});
  t.is(await pid(ns, 8002), web.pid);
  t.is(await pid(ns, 9000), web.pid);
  t.is(await pid(ns, 9100), 'ECONNREFUSED', '9100 is bound for 127.0.0.9 only');
  t.is((await connectOnce(ns, {proto: 'tcp', host: '127.0.0.9', port: 9100})).ok, true);
  t.like(await connectOnce(ns, {proto: 'tcp', host: '127.0.0.200', port: 4444}), {ok: true, reply: {pid: api.pid}}, 'all ports of 127.0.0.128/25');

  const second = await sk.ok(['apply', file, '--json']);
  t.deepEqual(second.json, {changed: false, dryRun: false, actions: [], unmanaged: [{netns: ns.path, service: 'stray'}]});
  const text = await sk.ok(['apply', file]);
  t.regex(text.stdout, /^no changes: the attached services match the file$/m);

  // export → apply --dry-run: no changes
  const exported = await runSkl(['export'], {netns: ns.path});
  t.is(exported.code, 0, describeRun(exported));
  writeFileSync(`${dir}/exported.yaml`, exported.stdout);
  t.deepEqual(parseDesired(exported.stdout).map(d => d.name).sort(), ['api', 'stray', 'web']);
  const beforeRound = await snapshotState(ns.path);
  const round = await sk.ok(['apply', `${dir}/exported.yaml`, '--dry-run', '--json']);
  t.like(round.json as object, {changed: false, actions: []});
  await assertStateUnchanged(t, ns.path, beforeRound, 'apply --dry-run of the exported file');

  // a change: one port replaced, one service dropped with --prune
  writeFileSync(file, readFileSync(file, 'utf8').replace('9000', '9001'));
  const change = await sk.ok(['apply', file, '--prune', '--json']);
  t.deepEqual(
    (change.json as {actions: {op: string; what: string; service: string; detail: string}[]}).actions.map(a => `${a.op}${a.what} ${a.service} ${a.what === 'binding' ? a.detail : ''}`.trim()),
    ['+binding web TCP 9001 @0.0.0.0/0', '-binding web TCP 9000 @0.0.0.0/0', '-service stray'],
  );
  t.is(await pid(ns, 9001), web.pid);
  t.is(await pid(ns, 9000), 'ECONNREFUSED');
  t.is(await pid(ns, 9300), 'ECONNREFUSED');
  t.deepEqual((await sk.status()).attachments.map(a => a.name), ['api', 'web']);
});

privileged.serial('apply in the everyday form (inside the namespace, no --netns): apply, "no changes", export round trip, a change', async t => {
  t.timeout(120_000);
  const ns = createNetns(t);
  const sk = useSkl(t, ns, {inside: true});
  const dir = tempDir(t);
  const web = await server(t, ns, 7001);
  const file = `${dir}/services.yaml`;
  writeFileSync(file, `services:\n  - name: web\n    target: {pid: ${web.pid}}\n    ports: "8001-8002"\n`);
  const first = (await sk.ok(['apply', file, '--json'])).json as {changed: boolean; actions: {op: string; netns: string; service: string; detail: string}[]; unmanaged: unknown[]};
  t.like(first, {changed: true, unmanaged: []});
  t.deepEqual(first.actions.map(a => [a.op, a.netns, a.service]), [['+', 'this namespace', 'web']]);
  t.regex(first.actions[0].detail, new RegExp(`\\[${web.pid}\\] 127\\.0\\.0\\.1:7001: TCP 8001-8002 @0\\.0\\.0\\.0/0$`));
  t.is(await pid(ns, 8002), web.pid);
  t.regex((await sk.ok(['apply', file])).stdout, /^no changes: the attached services match the file$/m);
  const exported = await sk.ok(['export']);
  t.false(/^netns:/m.test(exported.stdout), 'the export of the current namespace names none');
  writeFileSync(`${dir}/exported.yaml`, exported.stdout);
  t.like((await sk.ok(['apply', `${dir}/exported.yaml`, '--dry-run', '--json'])).json as object, {changed: false, actions: []});
  writeFileSync(file, readFileSync(file, 'utf8').replace('8001-8002', '8002-8003'));
  await sk.ok(['apply', file]);
  t.deepEqual([await pid(ns, 8001), await pid(ns, 8002), await pid(ns, 8003)], ['ECONNREFUSED', web.pid, web.pid]);
  t.deepEqual((await sk.attachment('web')).ports, [8002, 8003]);
});

privileged.serial('apply under a connection load: ports that stay never fail while bindings move, services come and go and a socket is replaced', async t => {
  t.timeout(240_000);
  const {ns, sk, dir} = await setup(t);
  const a1 = await server(t, ns, 7001);
  const a2 = await server(t, ns, 7011);
  const b = await server(t, ns, 7002);
  const file = `${dir}/s.yaml`;
  const write = (web: number, extra: string): void => writeFileSync(file, `services:\n  - name: web\n    target: {pid: ${web}}\n    ports: "8001-8010"\n${extra}`);
  write(a1.pid, '');
  await sk.ok(['apply', file]);
  const load = startLoad(ns, {host: HOST, ports: [8001, 8002, 8003, 8004, 8005, 8006, 8007, 8008, 8009, 8010], rate: 800, timeoutMs: 15_000});
  t.teardown(() => load.child.kill('SIGKILL'));
  await load.started;
  const flowing = async (n: number): Promise<void> => {
    const from = (await load.mark()).succeeded;
    t.true(await eventually(async () => (await load.mark()).succeeded >= from + n, 60_000), 'the load flows');
  };
  await flowing(200);
  const changes = [
    () => write(a1.pid, `  - name: other\n    target: {pid: ${b.pid}}\n    ports: "9000-9099"\n`),
    () => write(a1.pid, `  - name: other\n    target: {pid: ${b.pid}}\n    ports: "9000-9049"\n`),
    () => write(a2.pid, `  - name: other\n    target: {pid: ${b.pid}}\n    ports: "9000-9049"\n`), // web's socket replaced in place
    () => write(a2.pid, ''),
  ];
  for (const change of changes) {
    change();
    const before = await load.mark();
    await sk.ok(['apply', file, '--prune']);
    const after = await load.mark();
    t.true(after.attempted > before.attempted, 'connections were made while the apply ran');
    await flowing(200);
  }
  const r = await load.stop();
  t.is(r.failed, 0, `no connection to a port that stayed failed: ${JSON.stringify(r.errors)}`);
  t.is(r.succeeded, r.attempted);
  for (let port = 8001; port <= 8010; port++) t.true((r.perPort[port]?.ok ?? 0) > 0, `port ${port} was answered`);
  t.deepEqual(Object.keys(r.byPid).sort(), [String(a1.pid), String(a2.pid)].sort(), 'only web\'s old and new process answered');
});

const HOSTILE: {title: string; file: (dir: string, pid: number) => string; code: number; says: RegExp}[] = [
  {title: 'invalid YAML', file: d => put(d, 'services: [\n  - name: x\n'), code: 2, says: /:\d+: invalid YAML/},
  {title: 'not a mapping', file: d => put(d, '- name: x\n'), code: 2, says: /:1: the file must be a mapping/},
  {title: 'no services key', file: d => put(d, 'netns: /proc/self/ns/net\n'), code: 2, says: /no services: list/},
  {title: 'services not a list', file: d => put(d, 'services: web\n'), code: 2, says: /:1: services must be a list/},
  {title: 'unknown top-level key', file: d => put(d, 'services: []\nservice: []\n'), code: 2, says: /:2: unknown key "service" in the file/},
  {title: 'unknown service key', file: (d, p) => put(d, `services:\n  - name: x\n    target: {pid: ${p}}\n    ports: "1"\n    prots: tcp\n`), code: 2, says: /:5: unknown key "prots" in a service/},
  {title: 'wrong type: pid a string', file: d => put(d, 'services:\n  - name: x\n    target: {pid: "12"}\n    ports: "1"\n'), code: 2, says: /:3: pid must be a process id/},
  {title: 'wrong type: ports a mapping', file: (d, p) => put(d, `services:\n  - name: x\n    target: {pid: ${p}}\n    ports: {a: 1}\n`), code: 2, says: /:4: ports must be a string/},
  {title: 'port out of range', file: (d, p) => put(d, `services:\n  - name: x\n    target: {pid: ${p}}\n    ports: "80, 70000"\n`), code: 2, says: /:4: port 70000 .*out of range/},
  {title: 'bad proto', file: (d, p) => put(d, `services:\n  - name: x\n    target: {pid: ${p}}\n    proto: sctp\n    ports: "1"\n`), code: 2, says: /:4: invalid --proto/},
  {title: 'bad address', file: (d, p) => put(d, `services:\n  - name: x\n    target: {pid: ${p}}\n    ports: "1"\n    addresses: [10.0.0.0/33]\n`), code: 2, says: /:5: invalid prefix length/},
  {title: 'two target kinds', file: (d, p) => put(d, `services:\n  - name: x\n    target: {pid: ${p}, unit: x.service}\n    ports: "1"\n`), code: 2, says: /:3: target needs exactly one of pid, pidfile, unit, cgroup/},
  {title: 'bad name', file: (d, p) => put(d, `services:\n  - name: "../x"\n    target: {pid: ${p}}\n    ports: "1"\n`), code: 2, says: /invalid name/},
  {title: 'duplicate names', file: (d, p) => put(d, `services:\n  - name: x\n    target: {pid: ${p}}\n    ports: "1"\n  - name: x\n    target: {pid: ${p}}\n    ports: "2"\n`), code: 2, says: /:5: duplicate service name x \(first at line 2\)/},
  {title: 'duplicate keys', file: (d, p) => put(d, `services:\n  - name: x\n    name: y\n    target: {pid: ${p}}\n    ports: "1"\n`), code: 2, says: /invalid YAML: Map keys must be unique/},
  {title: 'conflicting bindings', file: (d, p) => put(d, `services:\n  - name: x\n    target: {pid: ${p}}\n    ports: "9500"\n  - name: y\n    target: {pid: ${p}}\n    ports: "9500"\n`), code: 1, says: /line 5: service y: TCP 0\.0\.0\.0\/0 port 9500 is also claimed by service x \(line 2\)/},
  {title: 'a binding another service holds', file: (d, p) => put(d, `services:\n  - name: x\n    target: {pid: ${p}}\n    ports: "8001"\n`), code: 1, says: /line 2: service x: TCP 0\.0\.0\.0\/0 port 8001 already belongs to keep/},
  {title: 'a process that does not exist', file: () => '', code: 1, says: /process 4194300 does not exist/},
  {title: 'a file that is a directory', file: d => d, code: 2, says: /is a directory/},
  {title: 'a symlink loop', file: d => (symlinkSync(`${d}/loop`, `${d}/loop`), `${d}/loop`), code: 2, says: /a symbolic link loop/},
  {title: 'a missing file', file: d => `${d}/nope.yaml`, code: 2, says: /no such file/},
  {title: 'a huge file', file: d => put(d, `services: []\n# ${'x'.repeat(5 * 1024 * 1024)}\n`), code: 2, says: /too large/},
  {title: 'an empty file', file: d => put(d, ''), code: 2, says: /the file must be a mapping/},
];
let seq = 0;
function put(dir: string, text: string): string {
  const f = `${dir}/f${seq++}.yaml`;
  writeFileSync(f, text);
  return f;
}

/** Every option and argument of `apply` and `export` (FILE: the files above), refused: one line, exit 2, nothing changed. */
const FLAGS: {title: string; bad: string; args: (file: string) => string[]; says: RegExp}[] = [
  {title: 'apply: a FILE that does not exist', bad: 'apply FILE', args: f => ['apply', `${f}.missing`], says: /no such file/},
  {title: 'apply: no FILE', bad: 'apply FILE', args: () => ['apply'], says: /Missing 1 required arg: file/},
  {title: 'apply --netns: a path that does not exist', bad: 'apply --netns', args: f => ['apply', f, '--netns', '/nonexistent/netns'], says: /--netns \/nonexistent\/netns: cannot open it/},
  {title: 'apply --netns: not a namespace file', bad: 'apply --netns', args: f => ['apply', f, '--netns', '/etc/hostname'], says: /--netns \/etc\/hostname: not a network namespace file/},
  {title: 'apply --interval 0', bad: 'apply --interval', args: f => ['apply', f, '--watch', '--interval', '0'], says: /--interval.*greater than or equal to 1/},
  {title: 'apply --interval soon', bad: 'apply --interval', args: f => ['apply', f, '--watch', '--interval', 'soon'], says: /--interval.*integer/},
  {title: 'apply --watch --dry-run', bad: 'apply --watch', args: f => ['apply', f, '--watch', '--dry-run'], says: /--watch and --dry-run do not go together/},
  {title: 'export --netns: a path that does not exist', bad: 'export --netns', args: () => ['export', '--netns', '/nonexistent/netns'], says: /--netns \/nonexistent\/netns: cannot open it/},
];

test('hostile flags: every option and argument of apply and export, as the CLI itself declares them, has a case that is refused', t => {
  const manifest = JSON.parse(readFileSync(`${ROOT}oclif.manifest.json`, 'utf8')) as {commands: Record<string, {flags: Record<string, {type: string}>; args: Record<string, unknown>}>};
  const surface: string[] = [];
  for (const id of ['apply', 'export']) {
    for (const [flag, f] of Object.entries(manifest.commands[id].flags)) if (f.type === 'option') surface.push(`${id} --${flag}`);
    for (const arg of Object.keys(manifest.commands[id].args)) surface.push(`${id} ${arg.toUpperCase()}`);
  }
  t.true(surface.includes('apply --netns') && surface.includes('apply FILE'), surface.join(', '));
  t.deepEqual(surface.filter(v => !FLAGS.some(f => f.bad === v)), [], 'values no refused case attacks');
});

privileged.serial(`hostile desired-state files (${HOSTILE.length}) and flags (${FLAGS.length}): each → its problem on a line, the right exit code, the state untouched`, async t => {
  t.timeout(300_000);
  const {ns, sk, dir} = await setup(t);
  const s = await server(t, ns, 7001);
  await sk.ok(['attach', '--pid', String(s.pid), '--name', 'keep', '--ports', '8001']);
  const before = await snapshotState(ns.path);
  const refused = async (what: string, args: string[], code: number, says: RegExp, ownNetns = false): Promise<void> => {
    const r = await runSkl(args, {netns: ownNetns ? undefined : ns.path});
    // the raw pins first (before any skl runs again), then no repair notice and the same status
    await assertStateUnchanged(t, ns.path, before, what);
    t.is(r.code, code, `${what}: ${describeRun(r)}`);
    const lines = stderrLines(r);
    t.true(lines.length >= 1 && lines.every(l => l.startsWith('error: ')), `${what}: ${r.stderr}`);
    t.true(lines.some(l => says.test(l)), `${what}: ${r.stderr}`);
    t.false(/\n\s+at /.test(r.stderr), `${what}: no stack trace`);
  };
  for (const h of HOSTILE) {
    const sub = mkdtempSync(`${dir}/h-`);
    const file = h.title === 'a process that does not exist' ? put(sub, `services:\n  - name: x\n    target: {pid: 4194300}\n    ports: "1"\n`) : h.file(sub, s.pid);
    // an invalid file never changes anything, not even with --prune (which would detach "keep")
    for (const args of h.code === 2 ? [['apply', file], ['apply', file, '--prune']] : [['apply', file]]) await refused(`${h.title} (${args.slice(2).join(' ')})`, args, h.code, h.says);
  }
  const good = put(dir, `services:\n  - name: web\n    target: {pid: ${s.pid}}\n    ports: "8600"\n`);
  for (const f of FLAGS) {
    const args = f.args(good);
    await refused(f.title, args, 2, f.says, args.includes('--netns'));
  }
  // all or nothing: one good entry and one bad one → the good one is not applied either
  const mixed = put(dir, `services:\n  - name: good\n    target: {pid: ${s.pid}}\n    ports: "8500"\n  - name: bad\n    target: {pid: 4194300}\n    ports: "8501"\n`);
  await refused('one good entry and one bad one', ['apply', mixed], 1, /line 5: service bad: process 4194300 does not exist/);
  t.is(await pid(ns, 8500), 'ECONNREFUSED', 'the good entry was not applied');
});

privileged.serial('apply --watch: an edited file (replaced, as a ConfigMap update does) is applied; SIGTERM exits 0', async t => {
  t.timeout(120_000);
  const {ns, sk, dir} = await setup(t);
  const s = await server(t, ns, 7001);
  const file = `${dir}/s.yaml`;
  writeFileSync(file, `services:\n  - name: web\n    target: {pid: ${s.pid}}\n    ports: "8001"\n`);
  const child = spawn(process.execPath, [SKL_BIN, 'apply', '--watch', '--interval', '3600', file, '--netns', ns.path], {stdio: ['ignore', 'pipe', 'pipe'], env: sklEnv()});
  t.teardown(() => stopChild(child));
  const lines: string[] = [];
  createInterface({input: child.stdout!}).on('line', l => lines.push(l));
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (x: string) => (stderr += x));
  t.true(await eventually(async () => (await pid(ns, 8001)) === s.pid, 30_000), `first apply; ${stderr}`);
  // replace the file the way a ConfigMap update does (write elsewhere, rename over)
  mkdirSync(`${dir}/next`);
  writeFileSync(`${dir}/next/s.yaml`, `services:\n  - name: web\n    target: {pid: ${s.pid}}\n    ports: "8001-8002"\n`);
  const edited = Date.now();
  renameSync(`${dir}/next/s.yaml`, file);
  t.true(await eventually(async () => (await pid(ns, 8002)) === s.pid, 30_000), `the edit was applied; stdout: ${lines.join(' | ')}; stderr: ${stderr}`);
  t.log(`applied ${Date.now() - edited} ms after the edit (not asserted)`);
  t.true(lines.some(l => /file changed: \+ binding web: TCP 8002 @0\.0\.0\.0\/0/.test(l)), lines.join('\n'));
  // a broken edit is logged, not fatal, and changes nothing
  writeFileSync(file, 'services: [\n');
  t.true(await eventually(() => lines.some(l => /not applied: .*invalid YAML/.test(l)), 30_000), lines.join('\n'));
  t.is(await pid(ns, 8002), s.pid);
  const exited = new Promise<number | null>(resolve => child.once('exit', code => resolve(code)));
  child.kill('SIGTERM');
  t.is(await exited, 0, stderr);
  t.deepEqual((await sk.status()).attachments.map(a => a.name), ['web']);
});

function get(port: number, path: string): Promise<{status: number; type: string; body: string}> {
  return new Promise((resolve, reject) => {
    const req = request({host: HOST, port, path, method: 'GET'}, res => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c));
      res.on('end', () => resolve({status: res.statusCode ?? 0, type: String(res.headers['content-type']), body}));
    });
    req.on('error', reject);
    req.end();
  });
}

privileged.serial('metrics --listen: GET /metrics parsed by a Prometheus text-format parser, moving with real connections; 404 elsewhere; concurrent scrapes; SIGTERM exits 0', async t => {
  t.timeout(120_000);
  const {ns, sk} = await setup(t);
  const s = await server(t, ns, 7001);
  await sk.ok(['attach', '--pid', String(s.pid), '--name', 'web', '--ports', '8001-8002']);
  // the endpoint runs inside the test namespace (loopback only)
  const child = ns.spawn(process.execPath, [SKL_BIN, 'metrics', '--listen', '127.0.0.1:9323'], {stdio: ['ignore', 'pipe', 'pipe'], env: sklEnv()});
  t.teardown(() => stopChild(child));
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (x: string) => (stderr += x));
  t.true(await eventually(() => stderr.includes('serving metrics on'), 30_000), stderr);
  const scrape = async (path = '/metrics') => {
    const r = await ns.execAsync(process.execPath, ['-e', `require('http').get('http://127.0.0.1:9323${path}', r => { let b=''; r.on('data', c => b += c); r.on('end', () => console.log(JSON.stringify({status: r.statusCode, type: r.headers['content-type'], body: b}))); })`]);
    return JSON.parse(r.stdout) as {status: number; type: string; body: string};
  };
  const value = (body: string, name: string): number => {
    const fam = (parsePrometheusTextFormat(body) as {name: string; metrics: {labels?: Record<string, string>; value: string}[]}[]).find(f => f.name === name);
    return Number(fam?.metrics.find(m => m.labels?.name === 'web')?.value ?? NaN);
  };
  const first = await scrape();
  t.is(first.status, 200);
  t.is(first.type, 'text/plain; version=0.0.4; charset=utf-8');
  t.is(value(first.body, 'skl_redirected_total'), 0);
  t.is(value(first.body, 'skl_ports'), 2);
  for (let i = 0; i < 3; i++) t.is(await pid(ns, 8001), s.pid);
  t.is(value((await scrape()).body, 'skl_redirected_total'), 3, 'the counter moved with three real connections');
  t.is((await scrape('/')).status, 404);
  t.is((await scrape('/metricsx')).status, 404);
  const many = await Promise.all(Array.from({length: 20}, () => scrape()));
  t.true(many.every(m => m.status === 200 && value(m.body, 'skl_redirected_total') === 3), 'twenty concurrent scrapes');
  const exited = new Promise<number | null>(resolve => child.once('exit', code => resolve(code)));
  child.kill('SIGTERM');
  t.is(await exited, 0, stderr);
  void get; // (a host-side client would need the host network: the test stays in its namespace)
});

test('deploy: the DaemonSet, ConfigMap and Dockerfile pass static checks', t => {
  const docs = ['daemonset.yaml', 'configmap.yaml'].map(f => parseYaml(readFileSync(`${ROOT}deploy/kubernetes/${f}`, 'utf8')) as Record<string, any>); // eslint-disable-line @typescript-eslint/no-explicit-any
  const [ds, cm] = docs;
  t.is(ds.apiVersion, 'apps/v1');
  t.is(ds.kind, 'DaemonSet');
  t.truthy(ds.metadata?.name);
  const labels = ds.spec.template.metadata.labels as Record<string, string>;
  for (const [k, v] of Object.entries(ds.spec.selector.matchLabels as Record<string, string>)) t.is(labels[k], v, `selector ${k} matches the template`);
  const pod = ds.spec.template.spec;
  t.true(pod.hostNetwork);
  t.true(pod.hostPID);
  const volumes = new Set((pod.volumes as {name: string}[]).map(v => v.name));
  for (const c of pod.containers as {name: string; image: string; args: string[]; securityContext: {privileged?: boolean; capabilities: {add: string[]; drop: string[]}}; volumeMounts?: {name: string}[]}[]) {
    t.truthy(c.image, c.name);
    t.true(Array.isArray(c.args), c.name);
    t.not(c.securityContext.privileged, true, `${c.name}: capabilities, not full privilege`);
    t.deepEqual(c.securityContext.capabilities.drop, ['ALL']);
    for (const m of c.volumeMounts ?? []) t.true(volumes.has(m.name), `${c.name}: volume ${m.name} exists`);
  }
  t.deepEqual((pod.containers as {args: string[]}[]).map(c => c.args.slice(0, 2)), [['apply', '--watch'], ['metrics', '--listen']]);
  t.is(ds.spec.template.metadata.annotations['prometheus.io/scrape'], 'true');
  t.is(cm.kind, 'ConfigMap');
  t.is((pod.volumes as {name: string; configMap?: {name: string}}[]).find(v => v.name === 'services')?.configMap?.name, cm.metadata.name);
  t.deepEqual(parseDesired(cm.data['services.yaml']).map(d => d.name), ['ingress'], 'the ConfigMap holds a valid desired-state file');
  const lint = spawnSync(process.execPath, [`${ROOT}node_modules/dockerfilelint/bin/dockerfilelint`, `${ROOT}deploy/Dockerfile`], {encoding: 'utf8'});
  t.is(lint.status, 0, lint.stdout + lint.stderr);
  t.regex(lint.stdout, /Issues: None found/);
});

privileged.serial('apply: several namespaces in one file (netns: per group and per entry), validated together', async t => {
  t.timeout(120_000);
  const a = await setup(t);
  const b = await setup(t);
  const sa = await server(t, a.ns, 7001);
  const sb = await server(t, b.ns, 7001);
  const file = `${a.dir}/multi.yaml`;
  writeFileSync(
    file,
    `namespaces:
  - netns: ${a.ns.path}
    services:
      - {name: web, target: {pid: ${sa.pid}}, ports: "8001"}
services:
  - {name: web, netns: ${b.ns.path}, target: {pid: ${sb.pid}}, ports: "8002"}
`,
  );
  const r = await runSkl(['apply', file, '--json']);
  t.is(r.code, 0, describeRun(r));
  t.deepEqual((r.json as {actions: {netns: string; op: string}[]}).actions.map(x => [x.netns, x.op]), [[b.ns.path, '+'], [a.ns.path, '+']]);
  t.is(await pid(a.ns, 8001), sa.pid);
  t.is(await pid(b.ns, 8002), sb.pid);
  // one namespace's problem stops the whole file: nothing changes in the other either
  writeFileSync(file, readFileSync(file, 'utf8').replace('"8002"', '"8003"').replace(`pid: ${sa.pid}`, 'pid: 4194300'));
  const bad = await runSkl(['apply', file]);
  t.is(bad.code, 1, describeRun(bad));
  t.is(await pid(b.ns, 8002), sb.pid, 'the other namespace was not changed');
  t.is(await pid(b.ns, 8003), 'ECONNREFUSED');
});
