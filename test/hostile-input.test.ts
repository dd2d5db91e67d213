// Hostile and mistaken input (issue 6), table-driven, against the real CLI in a throwaway
// namespace that already has an attachment. Every case must: exit with the documented code
// (2 invalid input, 1 the operation failed), print exactly one line on stderr that names the bad
// value, print no stack trace, and leave the pinned state as it was: read raw from bpffs before any
// skl runs again (`skl status` repairs before it reads, so it alone would hide half-made state),
// with nothing for the next skl to repair and `skl status --json` byte-for-byte the same.
import {spawnSync} from 'node:child_process';
import test from 'ava';
import {privileged} from './helpers/privileged.js';
import {createNetns, type Netns} from './helpers/netns.js';
import {startToyServer} from './helpers/servers.js';
import {AS_NOBODY, assertStateUnchanged, describeRun, pinEntriesOf, runSkl, snapshotState, startQuietServer, startSleeper, stderrLines, type RunResult} from './helpers/reliability.js';
import {statSync} from 'node:fs';

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
  {title: 'port 0', args: attachPorts('0'), code: 2, says: () => re('port 0 in --ports is out of range')},
  {title: 'port 65536', args: attachPorts('65536'), code: 2, says: () => re('port 65536 in --ports is out of range')},
  {title: 'port -1', args: attachPorts('-1'), code: 2, says: () => re('invalid port "-1"')},
  {title: 'port abc', args: attachPorts('abc'), code: 2, says: () => re('invalid port "abc"')},
  {title: 'reversed range 10-5', args: attachPorts('10-5'), code: 2, says: () => re('invalid range 10-5')},
  {title: 'range 1-2-3', args: attachPorts('1-2-3'), code: 2, says: () => re('invalid port "1-2-3"')},
  {title: 'ports ","', args: attachPorts(','), code: 2, says: () => re('in --ports ","')},
  {title: 'ports empty', args: attachPorts(''), code: 2, says: () => re('--ports is empty')},
  {title: 'ports with shell syntax "80;id"', args: attachPorts('80;id'), code: 2, says: () => re('invalid port "80;id"')},
  {title: 'duplicates, one owned by another attachment', args: attachPorts('9500,9500,8001,8001'), code: 1, says: () => re('TCP port 8001 already belongs to web')},
  {title: 'duplicates of ports the attachment has (accepted: a no-op)', args: () => ['ports', 'add', 'web', '8001,8001,8002,8001-8002'], code: 0},
  {title: 'huge list (20,001 entries, the last 70000)', args: attachPorts(`${manyPorts},70000`), code: 2, says: () => re('port 70000 in --ports is out of range')},
  {title: 'every port 1-65535 (overlaps another attachment)', args: attachPorts('1-65535'), code: 1, says: () => /TCP ports 8001-8010 already belong to web/},
  {title: 'ports remove a port the attachment lacks', args: () => ['ports', 'remove', 'web', '9999'], code: 2, says: () => re('web does not have TCP port 9999')},
  {title: 'ports add abc', args: () => ['ports', 'add', 'web', 'abc'], code: 2, says: () => re('invalid port "abc"')},
  {title: 'ports add to an unknown name', args: () => ['ports', 'add', 'nosuch', '9000'], code: 1, says: () => re('no service named nosuch')},
  // --- pids ---
  {title: 'pid absent (flag missing)', args: () => ['attach', '--ports', '9000'], code: 2, says: () => /Missing required flag.*pid/},
  {title: 'pid empty', args: attachPid(''), code: 2, says: () => re('invalid --pid ""')},
  {title: 'pid 0', args: attachPid('0'), code: 2, says: () => re('invalid --pid 0')},
  {title: 'pid -5', args: attachPid('-5'), code: 2, says: () => re('invalid --pid "-5"')},
  {title: 'pid abc', args: attachPid('abc'), code: 2, says: () => re('invalid --pid "abc"')},
  {title: 'pid 1.5', args: attachPid('1.5'), code: 2, says: () => re('invalid --pid "1.5"')},
  {title: 'pid 99999999 (above pid_max)', args: attachPid('99999999'), code: 2, says: () => re('invalid --pid 99999999')},
  {title: 'pid of a process that exited', args: e => attachPid(String(e.gone))(), code: 1, says: e => re(`process ${e.gone} does not exist`)},
  {title: 'pid with no sockets', args: e => attachPid(String(e.sleeper))(), code: 1, says: e => re(`process ${e.sleeper} (sleep) has no listening TCP socket`)},
  {title: 'pid of a kernel thread (2, kthreadd)', args: attachPid('2'), code: 1, says: () => re('process 2 (kthreadd) is a kernel thread')},
  {title: "the test process's own pid", args: attachPid(String(process.pid)), code: 1, says: () => re(`process ${process.pid} (node) has no listening TCP socket`)},
  {
    title: "skl's own pid",
    args: () => ['attach', '--ports', '9000'],
    shell: 'exec "$@" --pid $$',
    code: 1,
    says: (_e, r) => re(`process ${r.pid} (node) has no listening TCP socket`),
  },
  {title: 'a UDP-only process, TCP asked', args: e => attachPid(String(e.udpOnly))(), code: 1, says: e => re(`process ${e.udpOnly} (node) has no listening TCP socket (it has unconnected UDP sockets: use --proto udp)`)},
  // --- names ---
  {title: 'name ../x', args: attachName('../x'), code: 2, says: () => re('invalid name "../x"')},
  {title: 'name a/b', args: attachName('a/b'), code: 2, says: () => re('invalid name "a/b"')},
  {title: 'name empty', args: attachName(''), code: 2, says: () => re('invalid name ""')},
  {title: 'name of 65 characters', args: attachName('n'.repeat(65)), code: 2, says: () => re(`invalid name "${'n'.repeat(37)}..."`)},
  {title: 'name in unicode', args: attachName('wéb-✓'), code: 2, says: () => re('invalid name "wéb-✓"')},
  {title: 'name ..', args: attachName('..'), code: 2, says: () => re('invalid name ".."')},
  {title: 'detach ../x', args: () => ['detach', '../x'], code: 2, says: () => re('invalid name "../x"')},
  {title: 'status a/b', args: () => ['status', 'a/b'], code: 2, says: () => re('invalid name "a/b"')},
  {title: 'detach an unknown name', args: () => ['detach', 'nosuch'], code: 1, says: () => re('no service named nosuch in network namespace /run/netns/')},
  // --- interfaces (xdp-count) ---
  {title: 'xdp-count: interface absent', args: () => ['xdp-count', 'nosuch0'], code: 2, says: () => re('no interface named "nosuch0"')},
  {title: 'xdp-count: interface name too long', args: () => ['xdp-count', 'e'.repeat(20)], code: 2, says: () => re(`"${'e'.repeat(20)}"`)},
  {title: 'xdp-count: interface name ../..', args: () => ['xdp-count', '../..'], code: 2, says: () => re('no interface named "../.."')},
  {title: 'xdp-count: no interface', args: () => ['xdp-count'], code: 2, says: () => /Missing 1 required arg/},
  // --- network namespaces ---
  {title: '--netns to a regular file', args: e => [...attachPorts('9000')(e), '--netns', '/etc/hostname'], ownNetns: true, code: 2, says: () => re('--netns /etc/hostname: not a network namespace file')},
  {title: '--netns to a missing file', args: e => [...attachPorts('9000')(e), '--netns', '/nonexistent/ns'], ownNetns: true, code: 2, says: () => re('--netns /nonexistent/ns: cannot open it (ENOENT)')},
  {title: '--netns to a mount namespace', args: () => ['status', '--netns', '/proc/self/ns/mnt'], ownNetns: true, code: 2, says: () => re('--netns /proc/self/ns/mnt: not a network namespace file')},
  // --- sockets ---
  {title: '--listener that does not match', args: attachWith(['--ports', '9000', '--listener', '127.0.0.1:1234']), code: 2, says: () => re('--listener 127.0.0.1:1234 matches none')},
  {title: '--listener of the wrong family', args: attachWith(['--ports', '9000', '--listener', '[::1]:7000']), code: 2, says: () => re('--listener ::1:7000 matches none')},
  {title: '--listener garbage', args: attachWith(['--ports', '9000', '--listener', 'bogus']), code: 2, says: () => re('invalid --listener "bogus"')},
  {title: '--fd that is not a socket of the process', args: attachWith(['--ports', '9000', '--fd', '99']), code: 2, says: () => re('--fd 99 matches none')},
  {title: '--fd -1', args: attachWith(['--ports', '9000', '--fd', '-1']), code: 2, says: () => /--fd.*-1/},
  {title: '--address 300.1.1.1', args: attachWith(['--ports', '9000', '--address', '300.1.1.1']), code: 2, says: () => re('invalid --address "300.1.1.1"')},
  // --- flags and commands ---
  {title: 'unknown flag', args: attachWith(['--ports', '9000', '--bogus']), code: 2, says: () => re('--bogus')},
  {title: 'bad --proto', args: attachWith(['--ports', '9000', '--proto', 'sctp']), code: 2, says: () => re('--proto=sctp')},
  {title: 'unknown command', args: () => ['atach'], code: 2, says: () => re('command atach not found')},
  {title: 'detach NAME and --all', args: () => ['detach', 'web', '--all'], code: 2, says: () => re('either a NAME or --all')},
  // --- not root ---
  {title: 'non-root: attach', args: attachPorts('9000'), wrap: AS_NOBODY, code: 1, says: () => /permission denied.*run as root/},
  {title: 'non-root: status', args: () => ['status'], wrap: AS_NOBODY, code: 1, says: () => re("cannot read skl's state in /sys/fs/bpf/skl (EACCES): it is accessible to root only; run skl as root")},
  {title: 'non-root: status --json', args: () => ['status', '--json'], wrap: AS_NOBODY, code: 1, says: () => /accessible to root only/},
  {title: 'non-root: detach', args: () => ['detach', 'web'], wrap: AS_NOBODY, code: 1, says: () => /root/},
  {title: 'non-root: ports add', args: () => ['ports', 'add', 'web', '9000'], wrap: AS_NOBODY, code: 1, says: () => /root/},
  {title: 'non-root: xdp-count', args: () => ['xdp-count', 'lo'], wrap: AS_NOBODY, code: 1, says: () => /run as root/},
];

privileged.serial('hostile input: the table has at least 30 cases', t => {
  t.true(CASES.length >= 30, `${CASES.length} cases`);
  t.log(`${CASES.length} cases: ${CASES.map(c => c.title).join('; ')}`);
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

