// Security properties (issue 6), on the real kernel, in throwaway namespaces: skl's state is
// root's only, names never become paths, taking another process's socket needs ptrace-level
// permission (and failing leaves nothing half done), the hijack guard holds for ranges, and skl
// never runs code named by the invoking user's environment.
import {spawnSync} from 'node:child_process';
import {mkdirSync, mkdtempSync, readdirSync, readlinkSync, rmSync, writeFileSync} from 'node:fs';
import {createRequire} from 'node:module';
import {dirname} from 'node:path';
import {fileURLToPath} from 'node:url';
import type {ExecutionContext} from 'ava';
import {privileged} from './helpers/privileged.js';
import {createNetns, type Netns} from './helpers/netns.js';
import {SKL_BIN, SKL_PIN_ROOT, sklEnv, useSkl, type SklContext} from './helpers/dispatcher.js';
import {connectOnce} from './helpers/clients.js';
import {startToyServer} from './helpers/servers.js';
import {
  AS_NOBODY,
  assertStateUnchanged,
  describeRun,
  modeOf,
  pinEntriesOf,
  pinFilesOf,
  pinnedState,
  PIN_FILES,
  runSkl,
  snapshotState,
  startQuietServer,
  stderrLines,
  treeOf,
  type QuietServer,
} from './helpers/reliability.js';

const HOST = '127.0.0.1';

async function setup(t: ExecutionContext): Promise<{ns: Netns; sk: SklContext}> {
  const ns = createNetns(t);
  return {ns, sk: useSkl(t, ns)};
}

async function server(t: ExecutionContext, ns: Netns, host = HOST, port = 0): Promise<QuietServer> {
  const s = await startQuietServer(ns, host, port);
  t.teardown(() => s.stop());
  return s;
}

privileged('state: skl directories are 0700 and pins 0600, root-owned, whatever the umask; the lock file is root-only', async t => {
  const {ns, sk} = await setup(t);
  const s = await server(t, ns, HOST, 7000);
  const r = await runSkl(['attach', '--pid', String(s.pid), '--name', 'web', '--ports', '8001'], {netns: ns.path, shell: 'umask 000; exec "$@"'});
  t.is(r.code, 0, describeRun(r));

  const root = modeOf(SKL_PIN_ROOT);
  t.is(root.uid, 0);
  t.is(root.mode & 0o077, 0, `${SKL_PIN_ROOT} is mode ${root.mode.toString(8)}: no access for group or others`);
  t.deepEqual(modeOf(sk.pinDir), {mode: 0o700, uid: 0, gid: 0}, `${sk.pinDir}`);
  t.deepEqual(pinFilesOf(sk.ino), PIN_FILES);
  for (const pin of PIN_FILES) t.deepEqual(modeOf(`${sk.pinDir}/${pin}`), {mode: 0o600, uid: 0, gid: 0}, pin);
  const lock = modeOf('/run/skl.lock');
  t.is(lock.uid, 0);
  t.is(lock.mode & 0o077, 0, `/run/skl.lock is mode ${lock.mode.toString(8)}`);

  // and another user really cannot get in
  const ls = spawnSync(AS_NOBODY[0], [...AS_NOBODY.slice(1), 'ls', sk.pinDir], {encoding: 'utf8'});
  t.not(ls.status, 0);
  t.regex(ls.stderr, /Permission denied/);
});

privileged('state: a name can never address a path (hostile names refused, nothing created; odd but valid names create no file)', async t => {
  const {ns, sk} = await setup(t);
  const s = await server(t, ns, HOST, 7000);
  await sk.ok(['attach', '--pid', String(s.pid), '--name', 'web', '--ports', '8001']);
  const marker = `skl-evil-${process.pid}`;
  const before = await snapshotState(ns.path);
  const hostile = [
    `../../../../tmp/${marker}`,
    `../${marker}`,
    `${marker}/x`,
    `/tmp/${marker}`,
    `..\\${marker}`,
    `${marker}%00x`,
    `${marker}\nx`,
    `./${marker}`,
  ];
  for (const name of hostile) {
    const r = await runSkl(['attach', '--pid', String(s.pid), '--name', name, '--ports', '8002'], {netns: ns.path});
    t.is(r.code, 2, `${JSON.stringify(name)}: ${describeRun(r)}`);
    t.is(stderrLines(r).length, 1);
    t.regex(r.stderr, /invalid name/);
    t.deepEqual(pinnedState(sk.ino), before.pinned, `${JSON.stringify(name)}: state unchanged (read raw)`);
  }
  await assertStateUnchanged(t, ns.path, before, 'hostile names');
  const found = [...treeOf('/sys/fs/bpf').filter(p => p.includes(marker)), ...readdirSync('/tmp').filter(p => p.includes(marker))];
  t.deepEqual(found, [], 'no file or directory named after a hostile name');

  // names made of dots and dashes are just names: stored in a map, never used as paths
  for (const [i, name] of ['.hidden', '..x', 'x..y', '...', '-', `${sk.ino}`].entries()) {
    await sk.ok(['attach', '--pid', String(s.pid), '--name', name, '--ports', String(8100 + i)]);
  }
  t.deepEqual(
    (await sk.status()).attachments.map(a => a.name).sort(),
    ['-', '...', '..x', '.hidden', String(sk.ino), 'web', 'x..y'].sort(),
  );
  t.deepEqual(pinEntriesOf(sk.ino), [String(sk.ino)]);
  t.deepEqual(pinFilesOf(sk.ino), PIN_FILES, 'the pin directory holds its fixed pins and nothing else');
});

privileged("permission: taking another process's socket needs ptrace-level permission; a refusal is clear and leaves nothing half done", async t => {
  const {ns, sk} = await setup(t);
  const s = await server(t, ns, HOST, 7000);
  await sk.ok(['attach', '--pid', String(s.pid), '--name', 'web', '--ports', '8001']);
  const before = await snapshotState(ns.path);
  const pinsBefore = pinFilesOf(sk.ino);
  const attachOther = ['attach', '--pid', String(s.pid), '--name', 'other', '--ports', '8002'];

  // an unprivileged user
  const nobody = await runSkl(attachOther, {netns: ns.path, wrap: AS_NOBODY});
  t.is(nobody.code, 1, describeRun(nobody));
  t.deepEqual(stderrLines(nobody).length, 1);
  t.regex(nobody.stderr, /permission denied.*run as root/);
  t.deepEqual(pinnedState(sk.ino), before.pinned, 'nothing changed by the unprivileged attach (read raw)');

  // root without CAP_SYS_PTRACE: BPF works, but the target's sockets are not ours to take
  const noPtrace = await runSkl(attachOther, {netns: ns.path, wrap: ['setpriv', '--bounding-set=-sys_ptrace', '--inh-caps=-sys_ptrace']});
  t.is(noPtrace.code, 1, describeRun(noPtrace));
  t.deepEqual(stderrLines(noPtrace), [`error: not permitted to inspect process ${s.pid}'s sockets: needs ptrace access to it (CAP_SYS_PTRACE): run as root`]);
  t.deepEqual(pinnedState(sk.ino), before.pinned, 'nothing changed by the attach without CAP_SYS_PTRACE (read raw)');

  // the kernel's own gate, pidfd_getfd, as an unprivileged user (the fd is the listening socket)
  const fd = readdirSync(`/proc/${s.pid}/fd`).find(f => {
    try {
      return readlinkSync(`/proc/${s.pid}/fd/${f}`).startsWith('socket:');
    } catch {
      return false;
    }
  });
  t.truthy(fd);
  const pidfdModule = fileURLToPath(new URL('../src/sys/pidfd.js', import.meta.url));
  const code = `import {duplicateFd} from ${JSON.stringify(pidfdModule)};
try { duplicateFd(${s.pid}, ${fd}); console.log('DUPLICATED'); } catch (e) { console.log(e.name + ': ' + e.message); }`;
  const dup = spawnSync(AS_NOBODY[0], [...AS_NOBODY.slice(1), process.execPath, '--input-type=module', '-e', code], {encoding: 'utf8'});
  t.is(dup.stdout.trim(), `SklError: not permitted to take fd ${fd} of process ${s.pid}: needs ptrace access (CAP_SYS_PTRACE): run as root`, dup.stderr);

  await assertStateUnchanged(t, ns.path, before, 'no partial attach');
  t.deepEqual(pinFilesOf(sk.ino), pinsBefore);
  t.deepEqual(await connectOnce(ns, {proto: 'tcp', host: HOST, port: 8002}), {ok: false, error: 'ECONNREFUSED'}, 'port 8002 was never steered');
});

privileged('hijack guard: a range that merely contains a port another socket serves is refused, for every way of asking', async t => {
  t.timeout(120_000);
  const {ns, sk} = await setup(t);
  const target = await server(t, ns, HOST, 7000);
  const v4 = await server(t, ns, HOST, 9050);
  const dual = await server(t, ns, '::', 9051);
  const other = await server(t, ns, '127.0.0.2', 9052);
  const v6only = await server(t, ns, '::1', 9054);
  const udpTarget = await startToyServer(ns, {proto: 'udp', host: HOST, port: 7053});
  t.teardown(() => udpTarget.stop());
  const udpVictim = await startToyServer(ns, {proto: 'udp', host: HOST, port: 9053});
  t.teardown(() => udpVictim.stop());
  const tcp = String(target.pid);
  // a range holding several served ports may name any of them first. The target serves IPv4 only
  // (127.0.0.1), so its bindings are IPv4 ones: [::1]:9054 (IPv6) is no victim, [::]:9051
  // (dual-stack) is
  const anyVictim = /TCP (127\.0\.0\.1:9050|\[::\]:9051|127\.0\.0\.2:9052) is already served by another socket/;

  const refusals: {args: string[]; says: RegExp}[] = [
    {args: ['attach', '--pid', tcp, '--name', 'x', '--ports', '9000-9100'], says: anyVictim},
    {args: ['attach', '--pid', tcp, '--name', 'x', '--ports', '9050-9060'], says: anyVictim},
    {args: ['attach', '--pid', tcp, '--name', 'x', '--ports', '9040-9050'], says: /TCP 127\.0\.0\.1:9050 is already served/},
    {args: ['attach', '--pid', tcp, '--name', 'x', '--ports', '1-65535'], says: anyVictim},
    {args: ['attach', '--pid', tcp, '--name', 'x', '--ports', '8000,9000-9100,10000'], says: anyVictim},
    {args: ['attach', '--pid', tcp, '--name', 'x', '--ports', '9051'], says: /TCP \[::\]:9051 is already served .*binding TCP 0\.0\.0\.0\/0 port 9051/},
    {args: ['attach', '--pid', tcp, '--name', 'x', '--ports', '9052-9052'], says: /TCP 127\.0\.0\.2:9052 is already served/},
    {args: ['attach', '--pid', tcp, '--name', 'x', '--ports', 'all', '--address', '127.0.0.2/32'], says: /TCP 127\.0\.0\.2:9052 is already served .*binding TCP 127\.0\.0\.2\/32 port all/},
    {args: ['attach', '--pid', String(udpTarget.pid), '--proto', 'udp', '--name', 'u', '--ports', '9000-9100'], says: /UDP 127\.0\.0\.1:9053 is already served/},
    {args: ['attach', '--pid', tcp, '--name', 'x', '--ports', '9050', '--foreground'], says: /TCP 127\.0\.0\.1:9050 is already served/},
  ];
  const withWeb: {args: string[]; says: RegExp}[] = [
    {args: ['ports', 'add', 'web', '9000-9100'], says: anyVictim},
    {args: ['ports', 'add', 'web', '1-65535'], says: anyVictim},
    {args: ['ports', 'add', 'web', '8002,9049-9051'], says: /TCP (127\.0\.0\.1:9050|\[::\]:9051) is already served/},
    {args: ['attach', '--pid', tcp, '--name', 'web', '--ports', '8001,9040-9060'], says: anyVictim},
  ];
  const check = async (list: {args: string[]; says: RegExp}[]): Promise<void> => {
    for (const {args, says} of list) {
      const before = await snapshotState(ns.path);
      const r = await runSkl(args, {netns: ns.path});
      t.is(r.code, 1, `${args.join(' ')}: ${describeRun(r)}`);
      t.is(stderrLines(r).length, 1, r.stderr);
      t.regex(r.stderr, says);
      t.regex(r.stderr, /would take its connections \(hijacking that service\); leave it out \(a narrower --address, other ports\) or use --force/);
      await assertStateUnchanged(t, ns.path, before, args.join(' '));
    }
  };
  await check(refusals);
  t.deepEqual(pinEntriesOf(sk.ino), [], 'no dispatcher was even created');
  await sk.ok(['attach', '--pid', tcp, '--name', 'web', '--ports', '8001']);
  await check(withWeb);

  // the guard is per port, not per range: the same range minus the served ports is fine, and so
  // is the IPv6-only listener's port for this IPv4-only service
  await sk.ok(['ports', 'add', 'web', '9000-9049,9054-9100']);
  t.like(await connectOnce(ns, {proto: 'tcp', host: HOST, port: 9054}), {ok: true, reply: {pid: target.pid}});
  t.like(await connectOnce(ns, {proto: 'tcp', host: HOST, port: 9060}), {ok: true, reply: {pid: target.pid}});
  // and every victim still answers on its own port
  t.like(await connectOnce(ns, {proto: 'tcp', host: HOST, port: 9050}), {ok: true, reply: {pid: v4.pid}});
  t.like(await connectOnce(ns, {proto: 'tcp', host: HOST, port: 9051}), {ok: true, reply: {pid: dual.pid}});
  t.like(await connectOnce(ns, {proto: 'tcp', host: '127.0.0.2', port: 9052}), {ok: true, reply: {pid: other.pid}});
  t.like(await connectOnce(ns, {proto: 'tcp', host: '::1', port: 9054}), {ok: true, reply: {pid: v6only.pid}});
  t.like(await connectOnce(ns, {proto: 'udp', host: HOST, port: 9053}), {ok: true, reply: {pid: udpVictim.pid}});
});

/**
 * Plant oclif plugins where oclif would pick them up from a user's environment: the user-plugin
 * manifest (`<data dir>/package.json`, oclif.plugins) naming a "user" plugin installed in
 * `<data dir>/node_modules` and a "linked" plugin elsewhere on disk, each with an init hook that
 * leaves a marker file `RAN-<name>` in `dir` when it runs (with skl's privileges: root). The data
 * dir is $SKL_DATA_DIR, else $XDG_DATA_HOME/skl, else $HOME/.local/share/skl (oclif's
 * Config.dataDir): one plant for each, and the environment that selects it.
 */
function plantPlugins(dir: string): Record<string, string>[] {
  const plugin = (root: string, name: string): void => {
    mkdirSync(root, {recursive: true});
    writeFileSync(`${root}/package.json`, JSON.stringify({name, version: '1.0.0', type: 'module', main: 'hook.js', oclif: {hooks: {init: './hook.js'}}}));
    writeFileSync(`${root}/hook.js`, `import {writeFileSync} from 'node:fs'; export default async function () { writeFileSync(${JSON.stringify(`${dir}/RAN-${name}`)}, 'ran'); }\n`);
  };
  const linked = `${dir}/evil-link`;
  plugin(linked, 'evil-link');
  const dataDirs = {data: `${dir}/data`, xdg: `${dir}/xdg/skl`, home: `${dir}/home/.local/share/skl`};
  for (const d of Object.values(dataDirs)) {
    plugin(`${d}/node_modules/evil-user`, 'evil-user');
    writeFileSync(
      `${d}/package.json`,
      JSON.stringify({
        private: true,
        oclif: {schema: 1, plugins: [{type: 'user', name: 'evil-user'}, {type: 'link', name: 'evil-link', root: linked}]},
        dependencies: {'evil-user': '1.0.0'},
      }),
    );
  }
  // each environment selects one data dir (the others are emptied, as unset)
  return [
    {SKL_DATA_DIR: dataDirs.data},
    {SKL_DATA_DIR: '', XDG_DATA_HOME: `${dir}/xdg`},
    {SKL_DATA_DIR: '', XDG_DATA_HOME: '', HOME: `${dir}/home`},
  ];
}

const ranMarkers = (dir: string): string[] => readdirSync(dir).filter(f => f.startsWith('RAN-')).sort();

/** A scratch directory with the plants, and the environments that select each (removed after the test). */
function planted(t: ExecutionContext): {dir: string; envs: Record<string, string>[]} {
  const dir = mkdtempSync('/tmp/skl-plugin-test-');
  t.teardown(() => rmSync(dir, {recursive: true, force: true}));
  // autocomplete writes its cache under the cache dir: keep it in the scratch directory
  return {dir, envs: plantPlugins(dir).map(env => ({...env, SKL_CACHE_DIR: `${dir}/cache`}))};
}

privileged.serial('environment: the planted plugins are ones oclif itself would load (control for the tests below)', t => {
  // The same oclif, on skl's own root, without skl's protection (userPlugins: false), runs both
  // plants: so a clean run below means skl refused them, not that the plants were inert.
  const {dir, envs} = planted(t);
  const oclifCore = createRequire(SKL_BIN).resolve('@oclif/core');
  // skl's root as bin/run.js gives it to oclif: the package directory (bin/ has a package.json of its own)
  const sklRoot = dirname(dirname(SKL_BIN));
  const unprotected = 'const [core, root, ...args] = process.argv.slice(1); const {execute} = await import(core); await execute({args, loadOptions: {root}});';
  for (const env of envs) {
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', unprotected, oclifCore, sklRoot, '--help'], {encoding: 'utf8', env: sklEnv(env), timeout: 30_000});
    t.is(r.status, 0, `${JSON.stringify(env)}: ${r.stderr}`);
    t.deepEqual(ranMarkers(dir), ['RAN-evil-link', 'RAN-evil-user'], `${JSON.stringify(env)}: oclif loads the planted plugins`);
    for (const m of ranMarkers(dir)) rmSync(`${dir}/${m}`);
  }
});

/** Every way into skl: the fast path (no oclif), then each path that loads oclif. */
const ENTRY_PATHS: {title: string; args: string[]; env?: Record<string, string>; netns?: boolean; code?: number}[] = [
  {title: 'skl status (fast path, no oclif)', args: ['status'], netns: true},
  {title: 'SKL_FULL_CLI=1 skl status', args: ['status'], netns: true, env: {SKL_FULL_CLI: '1'}},
  {title: 'DEBUG=… skl status', args: ['status'], netns: true, env: {DEBUG: 'skl-test-nothing'}},
  {title: 'skl --help', args: ['--help']},
  {title: 'skl status --help', args: ['status', '--help']},
  {title: 'skl ports --help', args: ['ports', '--help']},
  {title: 'skl doctor', args: ['doctor', '--json']},
  {title: 'skl autocomplete bash (completion)', args: ['autocomplete', 'bash']},
  {title: 'an unknown command', args: ['no-such-command'], code: 2},
];

for (const run of ENTRY_PATHS) {
  // serial: each starts a few oclif processes, load enough on a 2-core runner next to the other tests
  privileged.serial(`environment: skl never loads code named by the invoking user's environment (oclif user or linked plugins): ${run.title}`, async t => {
    const ns = run.netns ? createNetns(t) : undefined;
    const {dir, envs} = planted(t);
    for (const env of envs) {
      const what = `skl ${run.args.join(' ')} with ${JSON.stringify({...env, ...run.env})}`;
      const r = await runSkl(run.args, {netns: ns?.path, env: {...env, ...run.env}});
      t.is(r.code, run.code ?? 0, `${what}: ${describeRun(r)}`);
      t.deepEqual(ranMarkers(dir), [], `${what}: a planted plugin's code ran`);
      t.notRegex(r.stdout + r.stderr, /evil/, `${what}: no trace of the planted plugins (warnings, commands)`);
    }
  });
}
