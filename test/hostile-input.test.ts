// Hostile and mistaken input (issue 6), table-driven, against the real CLI in a throwaway
// namespace that already has an attachment. Every case must: exit with the documented code
// (2 invalid input, 1 the operation failed), print exactly one line on stderr that names the bad
// value, print no stack trace, and leave the pinned state as it was: read raw from bpffs before any
// skl runs again (`skl status` repairs before it reads, so it alone would hide half-made state),
// with nothing for the next skl to repair and `skl status --json` byte-for-byte the same. Every
// value the CLI takes (each option and argument of the commands below, read from oclif's manifest
// of the compiled commands) must have a refused case: a new flag without one fails the suite.
import {existsSync} from 'node:fs';
import {spawnSync} from 'node:child_process';
import {readFileSync, statSync} from 'node:fs';
import test from 'ava';
import {privileged} from './helpers/privileged.js';
import {createNetns, type Netns} from './helpers/netns.js';
import {startToyServer} from './helpers/servers.js';
import {AS_NOBODY, assertStateUnchanged, describeRun, pinEntriesOf, runSkl, snapshotState, startQuietServer, startSleeper, stderrLines, type RunResult} from './helpers/reliability.js';

interface Env {
  ns: Netns;
  ino: number;
  /** pid of the TCP server (127.0.0.1:7000) behind attachment "web" (ports 8001-8010) */
  web: number;
  /** a process with only an unconnected UDP socket */
  udpOnly: number;
  /** a process with no socket at all */
  sleeper: number;
  /** a pid that exited */
  gone: number;
}

let envPromise: Promise<Env> | undefined;

function env(): Promise<Env> {
  envPromise ??= (async () => {
    const ns = createNetns();
    const web = await startQuietServer(ns, '127.0.0.1', 7000);
    const udp = await startToyServer(ns, {proto: 'udp', host: '127.0.0.1', port: 7053});
    const sleeper = startSleeper(ns);
    const r = await runSkl(['attach', '--pid', String(web.pid), '--name', 'web', '--ports', '8001-8010'], {netns: ns.path});
    if (r.code !== 0) throw new Error(`setup attach: ${describeRun(r)}`);
    const gone = spawnSync('true').pid;
    return {ns, ino: statSync(ns.path).ino, web: web.pid, udpOnly: udp.pid, sleeper: sleeper.pid!, gone};
  })();
  return envPromise;
}

test.after.always('clean up the namespace', async () => {
  if (envPromise === undefined) return;
  const e = await envPromise.catch(() => undefined);
  if (e === undefined) return;
  await runSkl(['detach', '--all'], {netns: e.ns.path});
  const left = pinEntriesOf(e.ino);
  await e.ns.destroy();
  if (left.length) throw new Error(`pins left behind: ${left.join(', ')}`);
});

interface Case {
  title: string;
  /** the value under attack: 'COMMAND --FLAG' or 'COMMAND ARG' (command ids as oclif's manifest spells them: 'ports:add') */
  bad: string;
  args: (e: Env) => string[];
  /** exit code: 2 invalid input, 1 failure (0: accepted as harmless, nothing changes) */
  code: 0 | 1 | 2;
  /** what the one stderr line must say (naming the bad value) */
  says?: (e: Env, r: RunResult) => RegExp;
  /** the case passes its own --netns (or none) */
  ownNetns?: boolean;
  wrap?: string[];
  shell?: string;
}

const attachWith = (flags: string[]) => (e: Env): string[] => ['attach', '--pid', String(e.web), '--name', 'x', ...flags];
const attachPorts = (ports: string) => attachWith(['--ports', ports]);
const attachPid = (pid: string) => (): string[] => ['attach', '--pid', pid, '--ports', '9000'];
const attachName = (name: string) => (e: Env): string[] => ['attach', '--pid', String(e.web), '--ports', '9000', '--name', name];
const re = (s: string): RegExp => new RegExp(s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));

const manyPorts = Array.from({length: 20000}, (_, i) => 10000 + i).join(',');

const CASES: Case[] = [
  // --- ports ---
  {title: 'port 0', bad: 'attach --ports', args: attachPorts('0'), code: 2, says: () => re('port 0 in --ports is out of range')},
  {title: 'port 65536', bad: 'attach --ports', args: attachPorts('65536'), code: 2, says: () => re('port 65536 in --ports is out of range')},
  {title: 'port -1', bad: 'attach --ports', args: attachPorts('-1'), code: 2, says: () => re('invalid port "-1"')},
  {title: 'port abc', bad: 'attach --ports', args: attachPorts('abc'), code: 2, says: () => re('invalid port "abc"')},
  {title: 'reversed range 10-5', bad: 'attach --ports', args: attachPorts('10-5'), code: 2, says: () => re('invalid range 10-5')},
  {title: 'range 1-2-3', bad: 'attach --ports', args: attachPorts('1-2-3'), code: 2, says: () => re('invalid port "1-2-3"')},
  {title: 'ports ","', bad: 'attach --ports', args: attachPorts(','), code: 2, says: () => re('in --ports ","')},
  {title: 'ports empty', bad: 'attach --ports', args: attachPorts(''), code: 2, says: () => re('--ports is empty')},
  {title: 'ports with shell syntax "80;id"', bad: 'attach --ports', args: attachPorts('80;id'), code: 2, says: () => re('invalid port "80;id"')},
  {title: 'duplicates, one owned by another attachment', bad: 'attach --ports', args: attachPorts('9500,9500,8001,8001'), code: 1, says: () => re('TCP port 8001 already belongs to web')},
  {title: 'duplicates of ports the attachment has (accepted: a no-op)', bad: 'ports:add PORTS', args: () => ['ports', 'add', 'web', '8001,8001,8002,8001-8002'], code: 0},
  {title: 'huge list (20,001 entries, the last 70000)', bad: 'attach --ports', args: attachPorts(`${manyPorts},70000`), code: 2, says: () => re('port 70000 in --ports is out of range')},
  {title: 'every port 1-65535 (overlaps another attachment)', bad: 'attach --ports', args: attachPorts('1-65535'), code: 1, says: () => /TCP ports 8001-8010 already belong to web/},
  {title: 'ports remove a port the attachment lacks', bad: 'ports:remove PORTS', args: () => ['ports', 'remove', 'web', '9999'], code: 2, says: () => re('web does not have TCP port 9999')},
  {title: 'ports add abc', bad: 'ports:add PORTS', args: () => ['ports', 'add', 'web', 'abc'], code: 2, says: () => re('invalid port "abc"')},
  {title: 'ports add to an unknown name', bad: 'ports:add NAME', args: () => ['ports', 'add', 'nosuch', '9000'], code: 1, says: () => re('no service named nosuch')},
  {title: 'ports add --proto sctp', bad: 'ports:add --proto', args: () => ['ports', 'add', 'web', '9000', '--proto', 'sctp'], code: 2, says: () => re('--proto=sctp')},
  {title: 'ports add --address 300.1.1.1', bad: 'ports:add --address', args: () => ['ports', 'add', 'web', '9000', '--address', '300.1.1.1'], code: 2, says: () => re('invalid --address "300.1.1.1"')},
  {title: 'ports add --netns to a regular file', bad: 'ports:add --netns', args: () => ['ports', 'add', 'web', '9000', '--netns', '/etc/hostname'], ownNetns: true, code: 2, says: () => re('--netns /etc/hostname: not a network namespace file')},
  {title: 'ports remove ../x', bad: 'ports:remove NAME', args: () => ['ports', 'remove', '../x', '8001'], code: 2, says: () => re('invalid name "../x"')},
  {title: 'ports remove --proto sctp', bad: 'ports:remove --proto', args: () => ['ports', 'remove', 'web', '8001', '--proto', 'sctp'], code: 2, says: () => re('--proto=sctp')},
  {title: 'ports remove --address bogus', bad: 'ports:remove --address', args: () => ['ports', 'remove', 'web', '8001', '--address', 'bogus'], code: 2, says: () => re('invalid --address "bogus"')},
  {title: 'ports remove --netns to a missing file', bad: 'ports:remove --netns', args: () => ['ports', 'remove', 'web', '8001', '--netns', '/nonexistent/ns'], ownNetns: true, code: 2, says: () => re('--netns /nonexistent/ns: cannot open it (ENOENT)')},
  // --- pids ---
  {title: 'cgroup that is not a cgroup v2 directory', bad: 'attach --cgroup', args: () => ['attach', '--cgroup', '/no/such/cgroup', '--listener', ':7001', '--ports', '9000'], code: 1, says: () => /is not a cgroup v2 directory/},
  {title: 'unit on a host without systemd', bad: 'attach --unit', args: () => ['attach', '--unit', 'nosuch.service', '--ports', '9000'], code: 1, says: () => (existsSync('/run/systemd/system') ? /nosuch\.service/ : /systemd is not running on this host/)},
  {title: 'pid absent (flag missing)', bad: 'attach --pid', args: () => ['attach', '--ports', '9000'], code: 2, says: () => /give the target: --pid PID, --cgroup PATH or --unit NAME/},
  {title: 'pid empty', bad: 'attach --pid', args: attachPid(''), code: 2, says: () => re('invalid --pid ""')},
  {title: 'pid 0', bad: 'attach --pid', args: attachPid('0'), code: 2, says: () => re('invalid --pid 0')},
  {title: 'pid -5', bad: 'attach --pid', args: attachPid('-5'), code: 2, says: () => re('invalid --pid "-5"')},
  {title: 'pid abc', bad: 'attach --pid', args: attachPid('abc'), code: 2, says: () => re('invalid --pid "abc"')},
  {title: 'pid 1.5', bad: 'attach --pid', args: attachPid('1.5'), code: 2, says: () => re('invalid --pid "1.5"')},
  {title: 'pid 99999999 (above pid_max)', bad: 'attach --pid', args: attachPid('99999999'), code: 2, says: () => re('invalid --pid 99999999')},
  {title: 'pid of a process that exited', bad: 'attach --pid', args: e => attachPid(String(e.gone))(), code: 1, says: e => re(`process ${e.gone} does not exist`)},
  {title: 'pid with no sockets', bad: 'attach --pid', args: e => attachPid(String(e.sleeper))(), code: 1, says: e => re(`process ${e.sleeper} (sleep) has no listening TCP socket`)},
  {title: 'pid of a kernel thread (2, kthreadd)', bad: 'attach --pid', args: attachPid('2'), code: 1, says: () => re('process 2 (kthreadd) is a kernel thread')},
  {title: "the test process's own pid", bad: 'attach --pid', args: attachPid(String(process.pid)), code: 1, says: () => re(`process ${process.pid} (node) has no listening TCP socket`)},
  {
    title: "skl's own pid",
    bad: 'attach --pid',
    args: () => ['attach', '--ports', '9000'],
    shell: 'exec "$@" --pid $$',
    code: 1,
    says: (_e, r) => re(`process ${r.pid} (node) has no listening TCP socket`),
  },
  {title: 'a UDP-only process, TCP asked', bad: 'attach --pid', args: e => attachPid(String(e.udpOnly))(), code: 1, says: e => re(`process ${e.udpOnly} (node) has no listening TCP socket (it has unconnected UDP sockets: use --proto udp)`)},
  // --- names ---
  {title: 'name ../x', bad: 'attach --name', args: attachName('../x'), code: 2, says: () => re('invalid name "../x"')},
  {title: 'name a/b', bad: 'attach --name', args: attachName('a/b'), code: 2, says: () => re('invalid name "a/b"')},
  {title: 'name empty', bad: 'attach --name', args: attachName(''), code: 2, says: () => re('invalid name ""')},
  {title: 'name of 65 characters', bad: 'attach --name', args: attachName('n'.repeat(65)), code: 2, says: () => re(`invalid name "${'n'.repeat(37)}..."`)},
  {title: 'name in unicode', bad: 'attach --name', args: attachName('wéb-✓'), code: 2, says: () => re('invalid name "wéb-✓"')},
  {title: 'name ..', bad: 'attach --name', args: attachName('..'), code: 2, says: () => re('invalid name ".."')},
  {title: 'detach ../x', bad: 'detach NAME', args: () => ['detach', '../x'], code: 2, says: () => re('invalid name "../x"')},
  {title: 'status a/b', bad: 'status NAME', args: () => ['status', 'a/b'], code: 2, says: () => re('invalid name "a/b"')},
  {title: 'detach --netns to a regular file', bad: 'detach --netns', args: () => ['detach', 'web', '--netns', '/etc/hostname'], ownNetns: true, code: 2, says: () => re('--netns /etc/hostname: not a network namespace file')},
  {title: 'upgrade --netns to a regular file', bad: 'upgrade --netns', args: () => ['upgrade', '--netns', '/etc/hostname'], ownNetns: true, code: 2, says: () => re('--netns /etc/hostname: not a network namespace file')},
  {title: 'detach an unknown name', bad: 'detach NAME', args: () => ['detach', 'nosuch'], code: 1, says: () => re('no service named nosuch in network namespace /run/netns/')},
  // --- interfaces (xdp-count) ---
  {title: 'xdp-count: interface absent', bad: 'xdp-count IFACE', args: () => ['xdp-count', 'nosuch0'], code: 2, says: () => re('no interface named "nosuch0"')},
  {title: 'xdp-count: interface name too long', bad: 'xdp-count IFACE', args: () => ['xdp-count', 'e'.repeat(20)], code: 2, says: () => re(`"${'e'.repeat(20)}"`)},
  {title: 'xdp-count: interface name ../..', bad: 'xdp-count IFACE', args: () => ['xdp-count', '../..'], code: 2, says: () => re('no interface named "../.."')},
  {title: 'xdp-count: --interval 0', bad: 'xdp-count --interval', args: () => ['xdp-count', 'lo', '--interval', '0'], code: 2, says: () => re('--interval "0": give a number of seconds')},
  {title: 'xdp-count: --interval abc', bad: 'xdp-count --interval', args: () => ['xdp-count', 'lo', '--interval', 'abc'], code: 2, says: () => re('--interval "abc": give a number of seconds')},
  {title: 'xdp-count: --count 0', bad: 'xdp-count --count', args: () => ['xdp-count', 'lo', '--count', '0'], code: 2, says: () => /--count.*greater than or equal to 1.*0/},
  {title: 'xdp-count: --mode bogus', bad: 'xdp-count --mode', args: () => ['xdp-count', 'lo', '--mode', 'bogus'], code: 2, says: () => re('--mode=bogus')},
  {title: 'xdp-count: --netns to a mount namespace', bad: 'xdp-count --netns', args: () => ['xdp-count', 'lo', '--netns', '/proc/self/ns/mnt'], ownNetns: true, code: 2, says: () => re('--netns /proc/self/ns/mnt: not a network namespace file')},
  {title: 'xdp-count: no interface', bad: 'xdp-count IFACE', args: () => ['xdp-count'], code: 2, says: () => /Missing 1 required arg/},
  // --- network namespaces ---
  {title: '--netns to a regular file', bad: 'attach --netns', args: e => [...attachPorts('9000')(e), '--netns', '/etc/hostname'], ownNetns: true, code: 2, says: () => re('--netns /etc/hostname: not a network namespace file')},
  {title: '--netns to a missing file', bad: 'attach --netns', args: e => [...attachPorts('9000')(e), '--netns', '/nonexistent/ns'], ownNetns: true, code: 2, says: () => re('--netns /nonexistent/ns: cannot open it (ENOENT)')},
  {title: '--netns to a mount namespace', bad: 'status --netns', args: () => ['status', '--netns', '/proc/self/ns/mnt'], ownNetns: true, code: 2, says: () => re('--netns /proc/self/ns/mnt: not a network namespace file')},
  // --- sockets ---
  {title: '--listener that does not match', bad: 'attach --listener', args: attachWith(['--ports', '9000', '--listener', '127.0.0.1:1234']), code: 2, says: () => re('--listener 127.0.0.1:1234 matches none')},
  {title: '--listener of the wrong family', bad: 'attach --listener', args: attachWith(['--ports', '9000', '--listener', '[::1]:7000']), code: 2, says: () => re('--listener ::1:7000 matches none')},
  {title: 'metrics --listen garbage', bad: 'metrics --listen', args: () => ['metrics', '--listen', 'bogus'], code: 2, says: () => re('invalid --listen "bogus"')},
  {title: 'metrics --output into a missing directory', bad: 'metrics --output', args: () => ['metrics', '--output', '/nonexistent/skl.prom'], code: 1, says: () => re('cannot write /nonexistent/skl.prom: no such file or directory (ENOENT)')},
  {title: 'metrics --netns to a missing file', bad: 'metrics --netns', args: () => ['metrics', '--netns', '/nonexistent/ns'], ownNetns: true, code: 2, says: () => re('--netns /nonexistent/ns: cannot open it (ENOENT)')},
  {title: '--listener garbage', bad: 'attach --listener', args: attachWith(['--ports', '9000', '--listener', 'bogus']), code: 2, says: () => re('invalid --listener "bogus"')},
  {title: '--fd that is not a socket of the process', bad: 'attach --fd', args: attachWith(['--ports', '9000', '--fd', '99']), code: 2, says: () => re('--fd 99 matches none')},
  {title: '--fd -1', bad: 'attach --fd', args: attachWith(['--ports', '9000', '--fd', '-1']), code: 2, says: () => /--fd.*-1/},
  {title: '--address 300.1.1.1', bad: 'attach --address', args: attachWith(['--ports', '9000', '--address', '300.1.1.1']), code: 2, says: () => re('invalid --address "300.1.1.1"')},
  // --- flags and commands ---
  {title: 'unknown flag', bad: 'attach (an unknown flag)', args: attachWith(['--ports', '9000', '--bogus']), code: 2, says: () => re('--bogus')},
  {title: 'bad --proto', bad: 'attach --proto', args: attachWith(['--ports', '9000', '--proto', 'sctp']), code: 2, says: () => re('--proto=sctp')},
  {title: 'bad --udp-replies', bad: 'attach --udp-replies', args: attachWith(['--ports', '9000', '--udp-replies', 'maybe']), code: 2, says: () => re('--udp-replies=maybe')},
  {title: 'unknown command', bad: '(an unknown command)', args: () => ['atach'], code: 2, says: () => re('command atach not found')},
  {title: 'detach NAME and --all', bad: 'detach --all', args: () => ['detach', 'web', '--all'], code: 2, says: () => re('either a NAME or --all')},
  // --- not root ---
  {title: 'non-root: attach', bad: '(not root)', args: attachPorts('9000'), wrap: AS_NOBODY, code: 1, says: () => /permission denied.*run as root/},
  {title: 'non-root: status', bad: '(not root)', args: () => ['status'], wrap: AS_NOBODY, code: 1, says: () => re("cannot read skl's state in /sys/fs/bpf/skl (EACCES): it is accessible to root only; run skl as root")},
  {title: 'non-root: status --json', bad: '(not root)', args: () => ['status', '--json'], wrap: AS_NOBODY, code: 1, says: () => /accessible to root only/},
  {title: 'non-root: detach', bad: '(not root)', args: () => ['detach', 'web'], wrap: AS_NOBODY, code: 1, says: () => /root/},
  {title: 'non-root: ports add', bad: '(not root)', args: () => ['ports', 'add', 'web', '9000'], wrap: AS_NOBODY, code: 1, says: () => /root/},
  {title: 'non-root: xdp-count', bad: '(not root)', args: () => ['xdp-count', 'lo'], wrap: AS_NOBODY, code: 1, says: () => /run as root/},
];

/** Commands whose every value the table must attack (metrics --output has test/metrics-output.test.ts). */
const ATTACKED = ['attach', 'detach', 'status', 'ports:add', 'ports:remove', 'upgrade', 'xdp-count', 'metrics'];

test('hostile input: every value skl takes — each option and argument of attach, detach, status, ports add/remove, upgrade, xdp-count and metrics, as the CLI itself declares them — has a case that is refused', t => {
  // oclif's manifest, generated from the compiled commands at build time: the CLI's real surface
  const manifest = JSON.parse(readFileSync(new URL('../../oclif.manifest.json', import.meta.url), 'utf8')) as {
    commands: Record<string, {flags: Record<string, {type: string}>; args: Record<string, unknown>}>;
  };
  const surface: string[] = [];
  for (const id of ATTACKED) {
    const c = manifest.commands[id];
    t.truthy(c, `the CLI has a command ${id}`);
    if (!c) continue;
    for (const [flag, f] of Object.entries(c.flags)) if (f.type === 'option') surface.push(`${id} --${flag}`);
    for (const arg of Object.keys(c.args)) surface.push(`${id} ${arg.toUpperCase()}`);
  }
  const refused = new Set(CASES.filter(c => c.code !== 0).map(c => c.bad));
  t.deepEqual(surface.filter(v => !refused.has(v)), [], 'values of the CLI no refused case attacks');
  t.log(`${surface.length} values, ${CASES.length} cases`);
});

for (const c of CASES) {
  privileged.serial(`hostile input: ${c.title} → exit ${c.code}${c.code ? ', one line, nothing changed' : ', nothing changed'}`, async t => {
    t.timeout(60_000);
    const e = await env();
    const before = await snapshotState(e.ns.path);
    const r = await runSkl(c.args(e), {netns: c.ownNetns ? undefined : e.ns.path, wrap: c.wrap, shell: c.shell, timeoutMs: 30_000});
    await assertStateUnchanged(t, e.ns.path, before, c.title);
    t.false(r.timedOut, describeRun(r));
    t.is(r.code, c.code, describeRun(r));
    t.false(/^\s+at /m.test(r.stderr) || /^\s+at /m.test(r.stdout), `no stack trace: ${describeRun(r)}`);
    const lines = stderrLines(r);
    if (c.code === 0) {
      t.deepEqual(lines, [], 'nothing on stderr');
    } else {
      t.is(lines.length, 1, `exactly one stderr line: ${JSON.stringify(r.stderr)}`);
      t.true(lines[0]?.startsWith('error: ') || lines[0]?.includes('Error:'), lines[0]);
      if (c.says) t.regex(lines[0] ?? '', c.says(e, r));
      t.true((lines[0] ?? '').length < 400, `one readable line (${lines[0]?.length} characters)`);
    }
    t.deepEqual(pinEntriesOf(e.ino), [String(e.ino)], 'no stray pins');
  });
}

