// `skl doctor`: the checks library (unit) and the command's output and exit code (end to end).
import {execFile, spawnSync} from 'node:child_process';
import {existsSync, mkdtempSync, rmSync, statfsSync, statSync, writeFileSync} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {fileURLToPath} from 'node:url';
import test, {type ExecutionContext} from 'ava';
import {
  CAP_BPF,
  CAP_NET_ADMIN,
  CAP_SYS_ADMIN,
  CAP_SYS_PTRACE,
  checkBpffs,
  checkEndianness,
  checkKernel,
  checkPrivileges,
  compareVersions,
  missingCapabilities,
  parseCapEff,
  parseVersion,
  versionAtLeast,
  type Check,
} from '../src/doctor/checks.js';
import {ipNetnsExecName, parseMountinfo} from '../src/sys/mounts.js';
import {findExecutable, needing, privileged} from './helpers/privileged.js';

const BIN = fileURLToPath(new URL('../../bin/run.js', import.meta.url));
const IDS = [
  'kernel',
  'btf',
  'bpffs',
  'cgroup2',
  'libbpf',
  'privileges',
  'sk_lookup',
  'sk_lookup_link',
  'link_update',
  'sockmap',
  'pidfd_getfd',
  'batch_ops',
  'mmapable',
  'inner_map',
  'dispatcher',
  'sk_follow',
  'sk_follow_sock',
  'sk_follow_udp',
  'sk_reply',
  'xdp',
  'xdp_link',
  'xdp_count',
  'netns_cookie',
  'tcx',
  'endianness',
];
const FEATURE_IDS = ['ports', 'prefix-bindings', 'upgrade', 'xdp-count', 'follow', 'follow-udp', 'udp-replies'];
/** The programs loaded beside skl's dispatcher, each a check of its own (src/dispatcher/state.ts: OPTIONAL_PROGRAMS). */
const DISPATCHER_PROGRAMS = ['sk_follow', 'sk_follow_sock', 'sk_follow_udp', 'sk_reply'];

interface Feature {
  id: string;
  name: string;
  planned: boolean;
  optional: boolean;
  available: boolean;
  needs: string[];
  minKernel: string;
  detail: string;
}
interface Report {
  ok: boolean;
  kernel: string;
  checks: Check[];
  features: Feature[];
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Run bin/run.js (without blocking the event loop); `env` is added to ours, undefined values removed.
 * The time limit only catches a hang: under QEMU TCG (the kernel matrix) one doctor takes ≈12 s, and
 * this file runs several at once on two CPUs.
 */
function skl(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  const merged = Object.fromEntries(Object.entries({...process.env, ...env}).filter(([, v]) => v !== undefined));
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [BIN, ...args], {encoding: 'utf8', timeout: 600_000, env: merged}, (error, stdout, stderr) => {
      // a command stopped by the time limit may exit 0 on its SIGTERM: never a result
      if (child.killed) return resolve({code: null, stdout, stderr: `${stderr}\n(killed: no answer within 600 s)`});
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : null;
      resolve({code, stdout, stderr});
    });
  });
}

/** Run `skl doctor --json` and check the report's shape and the exit code. */
async function doctorJson(t: ExecutionContext, env: NodeJS.ProcessEnv = {}): Promise<Report> {
  const r = await skl(['doctor', '--json'], env);
  let report: Report;
  try {
    report = JSON.parse(r.stdout) as Report;
  } catch {
    t.fail(`doctor --json printed no JSON (exit ${r.code}): ${r.stdout}\n${r.stderr}`);
    throw new Error('no JSON');
  }
  t.deepEqual(Object.keys(report).sort(), ['checks', 'features', 'kernel', 'ok']);
  t.is(report.kernel, os.release());
  t.deepEqual(
    report.checks.map((c) => c.id),
    IDS,
  );
  for (const c of report.checks) {
    t.deepEqual(Object.keys(c).sort(), ['detail', 'hint', 'id', 'minKernel', 'ok', 'required'], c.id);
    t.is(typeof c.ok, 'boolean');
    t.true(typeof c.detail === 'string' && c.detail.length > 0, c.id);
    // A hint exactly when the check failed.
    if (c.ok) t.is(c.hint, null, c.id);
    else t.true(typeof c.hint === 'string' && c.hint.length > 0, c.id);
    // Every kernel feature names the oldest Linux that has it; a missing one says so in its hint.
    if (IDS.indexOf(c.id) >= IDS.indexOf('sk_lookup') && c.id !== 'endianness') {
      t.regex(c.minKernel ?? '', /^\d+\.\d+$/, c.id);
      if (!c.ok && !c.detail.includes('not checked')) t.regex(c.hint!, new RegExp(`Linux ≥${c.minKernel!.replace('.', '\\.')}`), c.id);
    }
  }
  // Only what the coming and the optional features need is optional.
  t.deepEqual(
    report.checks.filter((c) => !c.required).map((c) => c.id),
    ['kernel', 'cgroup2', 'inner_map', ...DISPATCHER_PROGRAMS, 'netns_cookie', 'tcx'],
  );
  t.deepEqual(
    report.features.map((f) => f.id),
    FEATURE_IDS,
  );
  for (const f of report.features) {
    t.deepEqual(Object.keys(f).sort(), ['available', 'detail', 'id', 'minKernel', 'name', 'needs', 'optional', 'planned'], f.id);
    t.true(f.needs.length > 0 && f.needs.every((id) => IDS.includes(id)), f.id);
    const missing = report.checks.filter((c) => f.needs.includes(c.id) && !c.ok);
    t.is(f.available, missing.length === 0, f.id);
    t.is(f.available, f.detail === 'available', f.id);
    // why not: the first failed check it needs, with the kernel that has it
    if (missing.length > 0) {
      const kernel = missing[0].minKernel && !missing[0].detail.includes('not checked') ? `needs Linux ≥${missing[0].minKernel}: ` : '';
      t.true(f.detail.startsWith(`${kernel}${missing[0].detail}`), f.id);
    }
  }
  t.deepEqual(
    report.features.filter((f) => f.planned).map((f) => f.id),
    [],
  );
  t.deepEqual(
    report.features.filter((f) => f.optional).map((f) => f.id),
    ['prefix-bindings', 'follow', 'follow-udp', 'udp-replies'],
  );
  t.is(report.ok, report.checks.every((c) => c.ok || !c.required));
  t.is(report.ok, report.features.every((f) => f.available || f.planned || f.optional), 'ok exactly when every shipped, required feature is available');
  t.is(r.code, report.ok ? 0 : 1, `exit code ${r.code} with ok=${report.ok}; stderr: ${r.stderr}`);
  t.notRegex(r.stderr, /^\s+at /m, 'no stack trace');
  return report;
}

const byId = (report: {checks: Check[]}, id: string): Check => report.checks.find((c) => c.id === id)!;

// --- unit: versions ---

test('parseVersion reads kernel releases and versions', t => {
  t.deepEqual(parseVersion('6.1.0-13-amd64'), [6, 1, 0]);
  t.deepEqual(parseVersion('6.18.44-fc-v669'), [6, 18, 44]);
  t.deepEqual(parseVersion('5.10.0'), [5, 10, 0]);
  t.deepEqual(parseVersion('5.9'), [5, 9, 0]);
  t.deepEqual(parseVersion('6'), [6, 0, 0]);
  t.deepEqual(parseVersion('1.1'), [1, 1, 0]);
  t.is(parseVersion('garbage'), undefined);
  t.is(parseVersion(''), undefined);
});

test('compareVersions compares numerically, not as text', t => {
  t.true(compareVersions([5, 10], [5, 9]) > 0);
  t.true(compareVersions([5, 8, 99], [5, 9]) < 0);
  t.is(compareVersions([5, 9], [5, 9, 0]), 0);
  t.true(compareVersions([6], [5, 99, 99]) > 0);
  t.true(versionAtLeast('5.10.0-28-amd64', '5.9'));
  t.true(versionAtLeast('5.9.0', '5.9'));
  t.false(versionAtLeast('5.8.18', '5.9'));
  t.false(versionAtLeast('4.19.0-26-amd64', '5.9'));
  t.true(versionAtLeast('1.0', '1.0'));
  t.false(versionAtLeast('0.8', '1.0'));
  t.false(versionAtLeast('nonsense', '1.0'));
});

test('checkKernel: ≥5.9 passes, older fails with a hint naming 5.9', t => {
  t.like(checkKernel('5.9.0'), {id: 'kernel', ok: true, hint: null});
  t.like(checkKernel('6.1.0-13-amd64'), {ok: true});
  const old = checkKernel('5.4.0-150-generic');
  t.false(old.ok);
  t.regex(old.hint!, /5\.9/);
  t.false(checkKernel('weird').ok);
});

// --- unit: privileges ---

const status = (capEff: bigint): string => `Name:\tnode\nUid:\t0\t0\t0\t0\nCapInh:\t0000000000000000\nCapEff:\t${capEff.toString(16).padStart(16, '0')}\n`;
const bit = (n: number): bigint => 1n << BigInt(n);

test('privileges: capabilities from CapEff', t => {
  t.is(parseCapEff(status(0x1fffeffffffn)), 0x1fffeffffffn);
  t.is(parseCapEff('Name: x\n'), undefined);
  t.deepEqual(missingCapabilities(0n), ['CAP_BPF', 'CAP_NET_ADMIN', 'CAP_SYS_PTRACE']);
  t.deepEqual(missingCapabilities(bit(CAP_BPF) | bit(CAP_NET_ADMIN) | bit(CAP_SYS_PTRACE)), []);
  // CAP_SYS_ADMIN stands in for CAP_BPF.
  t.deepEqual(missingCapabilities(bit(CAP_SYS_ADMIN) | bit(CAP_NET_ADMIN) | bit(CAP_SYS_PTRACE)), []);
  t.deepEqual(missingCapabilities(bit(CAP_BPF) | bit(CAP_NET_ADMIN)), ['CAP_SYS_PTRACE']);

  t.like(checkPrivileges(0, status(0x1ffffffffffn)), {id: 'privileges', ok: true, hint: null});
  t.like(checkPrivileges(1000, status(bit(CAP_BPF) | bit(CAP_NET_ADMIN) | bit(CAP_SYS_PTRACE))), {ok: true});
  const user = checkPrivileges(1000, status(0n));
  t.false(user.ok);
  t.regex(user.detail, /CAP_BPF, CAP_NET_ADMIN, CAP_SYS_PTRACE/);
  t.regex(user.hint!, /root/);
  // Root in a container without the capabilities cannot load programs either.
  const boxed = checkPrivileges(0, status(bit(CAP_NET_ADMIN)));
  t.false(boxed.ok);
  t.regex(boxed.detail, /CAP_BPF/);
});

test('endianness', t => {
  t.true(checkEndianness('LE').ok);
  t.false(checkEndianness('BE').ok);
});

// --- unit: bpffs and `ip netns exec` ---

const HOST_MOUNTINFO = [
  '22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw',
  '23 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw',
  '24 23 0:30 / /sys/fs/bpf rw,nosuid,nodev,noexec,relatime shared:8 - bpf bpf rw,mode=700',
  '25 22 0:50 / /mnt/with\\040space rw - tmpfs tmpfs rw',
].join('\n');
// What `ip netns exec NAME` leaves: a private mount namespace where /sys is a fresh sysfs named NAME.
const NETNS_EXEC_MOUNTINFO = `${HOST_MOUNTINFO}\n49 22 0:40 / /sys rw,relatime - sysfs skl-doctor-test rw\n`;

test('parseMountinfo and the `ip netns exec` signature', t => {
  const mounts = parseMountinfo(HOST_MOUNTINFO);
  t.deepEqual(mounts[1], {mountPoint: '/sys', fsType: 'sysfs', source: 'sysfs'});
  t.deepEqual(mounts[2], {mountPoint: '/sys/fs/bpf', fsType: 'bpf', source: 'bpf'});
  t.is(mounts[3].mountPoint, '/mnt/with space');

  const dir = mkdtempSync(path.join(os.tmpdir(), 'skl-doctor-'));
  t.teardown(() => rmSync(dir, {recursive: true, force: true}));
  writeFileSync(path.join(dir, 'skl-doctor-test'), '');
  t.is(ipNetnsExecName(HOST_MOUNTINFO, [dir]), undefined);
  t.is(ipNetnsExecName(NETNS_EXEC_MOUNTINFO, [dir]), 'skl-doctor-test');
  // A sysfs source that names no network namespace is not `ip netns exec`.
  t.is(ipNetnsExecName(NETNS_EXEC_MOUNTINFO, [path.join(dir, 'nowhere')]), undefined);
  t.is(ipNetnsExecName('', [dir]), undefined);
});

test('checkBpffs: not bpffs, missing, and under `ip netns exec`', t => {
  const proc = checkBpffs('/proc', undefined);
  t.false(proc.ok);
  t.regex(proc.detail, /not a BPF filesystem/);
  t.is(proc.hint, 'mount -t bpf bpf /proc');

  const missing = checkBpffs('/nonexistent/skl-doctor', undefined);
  t.false(missing.ok);
  t.regex(missing.detail, /does not exist/);

  const netnsExec = checkBpffs('/proc', 'blue');
  t.false(netnsExec.ok);
  t.regex(netnsExec.detail, /ip netns exec blue/);
  t.regex(netnsExec.hint!, /nsenter --net=/);
});

// --- the command ---

test('skl doctor --json: the checks that can be told without skl agree with the machine, and the exit code follows them', async t => {
  const report = await doctorJson(t);
  // independent of skl's code: what the machine is (not what the doctor's report says of itself)
  let bpffs = false;
  try {
    bpffs = statfsSync('/sys/fs/bpf').type === 0xcafe4a11;
  } catch {
    // absent: not a BPF filesystem
  }
  const truth: Record<string, boolean> = {
    kernel: versionAtLeast(os.release(), '5.9'),
    btf: existsSync('/sys/kernel/btf/vmlinux'),
    bpffs,
    endianness: os.endianness() === 'LE',
  };
  const ldconfig = findExecutable('ldconfig');
  if (ldconfig !== undefined) truth.libbpf = /\blibbpf\.so\.1\b/.test(spawnSync(ldconfig, ['-p'], {encoding: 'utf8'}).stdout);
  for (const [id, ok] of Object.entries(truth)) t.is(byId(report, id).ok, ok, `${id}: the doctor says ${byId(report, id).ok} (${byId(report, id).detail})`);
  if (Object.entries(truth).some(([id, ok]) => !ok && byId(report, id).required)) t.is(report.ok, false, 'a required check the machine fails fails the doctor');
});

test('skl doctor prints one line per check with ✔/✘, and honours NO_COLOR', async t => {
  const plain = await skl(['doctor'], {NO_COLOR: '1', FORCE_COLOR: '1'});
  t.false(plain.stdout.includes('\u001b['), 'no ANSI escapes with NO_COLOR');
  const all = plain.stdout.trimEnd().split('\n');
  // the checks, a blank line, a heading naming the kernel, the features
  const lines = all.slice(0, IDS.length);
  t.is(all.length, IDS.length + 2 + FEATURE_IDS.length);
  lines.forEach((line, i) => t.regex(line, new RegExp(`^[✔✘–] ${IDS[i]}\\s`)));
  for (const line of lines.filter((l) => !l.startsWith('✔'))) t.regex(line, / — fix: \S/);
  t.is(all[IDS.length], '');
  t.is(all[IDS.length + 1], `skl on this kernel (Linux ${os.release()}):`);
  all.slice(IDS.length + 2).forEach((line, i) => t.regex(line, new RegExp(`^[✔✘–] ${FEATURE_IDS[i]}\\s`)));
  for (const line of all.slice(IDS.length + 2).filter((l) => !l.startsWith('✔'))) t.regex(line, / — not available: \S/);
  // ✘ only for what fails the doctor
  t.is(plain.code, all.some((l) => l.startsWith('✘')) ? 1 : 0);

  const coloured = await skl(['doctor'], {NO_COLOR: undefined, FORCE_COLOR: '1'});
  t.true(coloured.stdout.includes('\u001b['), 'colours when forced and NO_COLOR is unset');
});

test('skl doctor reports a missing kernel feature as a failed check (exit 1)', async t => {
  const report = await doctorJson(t, {SKL_FAKE_MISSING_FEATURES: 'sk_lookup,pidfd_getfd'});
  t.false(report.ok);
  t.false(byId(report, 'sk_lookup').ok);
  t.false(byId(report, 'pidfd_getfd').ok);
  t.regex(byId(report, 'pidfd_getfd').hint!, /Linux ≥5\.6/);
  const ports = report.features.find((f) => f.id === 'ports')!;
  t.false(ports.available);
  t.regex(ports.detail, /^needs Linux ≥5\.9: BPF sk_lookup programs/);
});

test('skl doctor: the UDP reply program missing is reported, and fails only UDP replies (optional)', async t => {
  const report = await doctorJson(t, {SKL_FAKE_MISSING_FEATURES: 'sk_reply'});
  t.false(byId(report, 'sk_reply').ok);
  t.false(byId(report, 'sk_reply').required);
  t.regex(byId(report, 'sk_reply').hint!, /needs Linux ≥5\.9 \(only for UDP replies/);
  const replies = report.features.find((f) => f.id === 'udp-replies')!;
  t.like(replies, {available: false, planned: false, optional: true, minKernel: '5.9'});
  t.regex(replies.detail, /^needs Linux ≥5\.9: skl's UDP reply program \(sk_reply/);
});

test('skl doctor: TCX links missing (Linux < 6.6) fail nothing: skl attaches its tc programs as clsact filters', async t => {
  const report = await doctorJson(t, {SKL_FAKE_MISSING_FEATURES: 'tcx'});
  t.false(byId(report, 'tcx').ok);
  t.false(byId(report, 'tcx').required);
  t.regex(byId(report, 'tcx').hint!, /needs Linux ≥6\.6 \(without it skl attaches its tc programs as clsact filters\)/);
  t.deepEqual(
    report.features.filter((f) => f.needs.includes('tcx')).map((f) => f.id),
    [],
  );
});

// The dispatcher object is loaded as skl loads it: the programs beside sk_dispatch are each a check
// of their own, a missing one fails only the feature that needs it (an optional or coming one).
test('skl doctor: a program beside the dispatcher that does not load fails its own check and feature only', async t => {
  const report = await doctorJson(t, {SKL_FAKE_MISSING_FEATURES: 'sk_follow,inner_map'});
  const follow = byId(report, 'sk_follow');
  t.false(follow.ok);
  t.false(follow.required);
  t.is(follow.minKernel, '5.15');
  t.regex(follow.hint!, /needs Linux ≥5\.15 \(only for following TCP services/);
  t.like(report.features.find((f) => f.id === 'follow'), {available: false, optional: true, minKernel: '5.15'});
  t.like(report.features.find((f) => f.id === 'prefix-bindings'), {available: false, optional: true, minKernel: '5.10'});
  const plain = await doctorJson(t);
  t.is(report.ok, plain.ok, 'the doctor passes or fails as without them');
  t.is(report.features.find((f) => f.id === 'ports')!.available, plain.features.find((f) => f.id === 'ports')!.available);
  // each program names the kernel it needs
  t.deepEqual(
    DISPATCHER_PROGRAMS.map((id) => [id, byId(report, id).minKernel]),
    [
      ['sk_follow', '5.15'],
      ['sk_follow_sock', '5.9'],
      ['sk_follow_udp', '5.10'],
      ['sk_reply', '5.9'],
    ],
  );
});

// A libbpf.so.1 too old for skl, found first through LD_LIBRARY_PATH: doctor must report it as a
// failed check (not crash), and every command must still load.
// The C compiler builds that library (scripts/setup.sh installs one for `npm test`).
needing(['cc|gcc|clang']).test('an unusable libbpf is a failed check, not a crash', async (t, [cc]) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'skl-fake-libbpf-'));
  t.teardown(() => rmSync(dir, {recursive: true, force: true}));
  const src = path.join(dir, 'fake.c');
  writeFileSync(src, 'unsigned int libbpf_major_version(void) { return 0; }\nunsigned int libbpf_minor_version(void) { return 8; }\n');
  const built = spawnSync(cc, ['-shared', '-fPIC', '-o', path.join(dir, 'libbpf.so.1'), src], {encoding: 'utf8'});
  t.is(built.status, 0, built.stderr);
  const env = {LD_LIBRARY_PATH: dir};

  const report = await doctorJson(t, env);
  t.false(report.ok);
  const libbpf = byId(report, 'libbpf');
  t.false(libbpf.ok);
  t.regex(libbpf.detail, /libbpf 0\.8 is too old/);
  t.regex(libbpf.hint!, /apt-get install libbpf1/);
  t.regex(byId(report, 'sk_lookup').detail, /libbpf could not be loaded/);
  t.regex(byId(report, 'xdp').detail, /libbpf could not be loaded/);
  t.regex(byId(report, 'dispatcher').detail, /libbpf could not be loaded/);
  // Checks that do not need libbpf still ran.
  t.true(byId(report, 'kernel').ok);
  t.true(byId(report, 'endianness').ok);

  const help = await skl(['--help'], env);
  t.is(help.code, 0);
  t.regex(help.stdout, /doctor/);
});

privileged('skl doctor passes on a machine that runs the privileged tests', async t => {
  const {ensureBpffs} = await import('../src/sys/index.js');
  ensureBpffs();
  const report = await doctorJson(t);
  t.deepEqual(
    report.checks.filter((c) => !c.ok && c.required),
    [],
  );
  t.true(report.ok);
  t.deepEqual(
    report.features.filter((f) => !f.planned && !f.available),
    [],
  );
});

// Following's checks load skl's own programs (sk_follow for TCP; sk_follow_sock and sk_follow_udp
// for UDP): their answers agree with the kernels that added what those programs use (this
// machine's 6.18, the matrix's 6.1).
privileged('doctor: following TCP (≥5.15) and UDP (≥5.10) are available exactly on the kernels that have what they use', async t => {
  const report = await doctorJson(t);
  const kernel = parseVersion(os.release())!;
  for (const [check, feature, min] of [['sk_follow', 'follow', '5.15'], ['sk_follow_udp', 'follow-udp', '5.10']] as const) {
    const expected = compareVersions(kernel, parseVersion(min)!) >= 0;
    t.like(byId(report, check), {ok: expected, minKernel: min, required: false}, `${check} on ${os.release()}`);
    t.like(report.features.find((f) => f.id === feature), {available: expected, optional: true, minKernel: min}, feature);
  }
  // a kernel without it: the feature says which kernel it needs, and doctor still passes
  const without = await doctorJson(t, {SKL_FAKE_MISSING_FEATURES: 'sk_follow_udp'});
  t.like(byId(without, 'sk_follow_udp'), {ok: false, required: false});
  t.regex(byId(without, 'sk_follow_udp').hint!, /needs Linux ≥5\.10 \(only for following UDP services across restarts/);
  t.regex(without.features.find((f) => f.id === 'follow-udp')!.detail, /^needs Linux ≥5\.10: skl's follow program for UDP \(sk_follow_udp/);
  t.true(without.ok);
});

// The probes are real: on a mainline-based kernel (this machine's, the kernel matrix's Debian 6.1)
// each answer agrees with the feature's minimum kernel. They run in a throwaway network namespace
// and leave the calling thread where it was, with nothing attached to the host's loopback.
privileged('kernel probes agree with the running kernel, and leave the thread in its own namespace', async t => {
  const {FEATURES, probe} = await import('../src/bpf/features.js');
  const nsBefore = statSync('/proc/thread-self/ns/net').ino;
  const kernel = parseVersion(os.release())!;
  for (const [feature, info] of Object.entries(FEATURES)) {
    const result = probe(feature as keyof typeof FEATURES);
    const expected = compareVersions(kernel, parseVersion(info.minKernel)!) >= 0;
    t.is(result.available, expected, `${feature} (Linux ≥${info.minKernel}) on ${os.release()}: ${result.reason ?? 'available'}`);
  }
  t.is(statSync('/proc/thread-self/ns/net').ino, nsBefore, 'back in the namespace it started in');
  const lo = spawnSync('ip', ['-j', 'link', 'show', 'dev', 'lo'], {encoding: 'utf8'});
  t.false(lo.stdout.includes('"xdp"'), 'nothing attached to the host loopback');
});

privileged('a command whose kernel feature is missing fails with one line naming the kernel it needs (exit 1)', async t => {
  const r = await skl(['xdp-count', 'lo', '--count', '1', '--interval', '0.1'], {SKL_FAKE_MISSING_FEATURES: 'xdp_link', NO_COLOR: '1'});
  t.is(r.code, 1, r.stderr);
  t.deepEqual(r.stderr.trimEnd().split('\n'), ['error: XDP programs attached through a bpf_link is not supported by this kernel: it needs Linux ≥5.9']);
  t.is(r.stdout, '');
});

// Root without CAP_SYS_ADMIN (a container, say) cannot make the throwaway namespace the attaching
// probes need: doctor says they were not checked and why, and a command is not vetoed by a probe
// that could not run (xdp-count works: it needs only CAP_BPF and CAP_NET_ADMIN).
needing(['setpriv']).privileged('without CAP_SYS_ADMIN: the attaching probes are "not checked" (named), and xdp-count still runs', async (t, [setpriv]) => {
  const {createNetns} = await import('./helpers/netns.js');
  const ns = createNetns(t);
  const drop = ['--bounding-set', '-sys_admin', '--inh-caps', '-sys_admin', process.execPath, BIN];
  const r = ns.exec(setpriv, [...drop, 'doctor', '--json'], {timeoutMs: 600_000});
  const report = JSON.parse(r.stdout) as Report;
  for (const id of ['sk_lookup_link', 'link_update', 'sockmap', 'xdp_link', 'tcx']) {
    const c = byId(report, id);
    t.false(c.ok, id);
    t.regex(c.detail, /not checked: creating a throwaway network namespace for the probe needs CAP_SYS_ADMIN/, id);
    t.regex(c.hint!, /CAP_SYS_ADMIN/, id);
  }
  t.true(byId(report, 'sk_lookup').ok, 'probes that need no namespace still ran');
  t.true(byId(report, 'dispatcher').ok);
  t.false(report.ok);
  t.is(r.code, 1);
  const xdp = report.features.find((f) => f.id === 'xdp-count')!;
  t.false(xdp.available);
  t.notRegex(xdp.detail, /needs Linux/, 'not blamed on the kernel');

  const count = ns.exec(setpriv, [...drop, 'xdp-count', 'lo', '--count', '1', '--interval', '0.1', '--json'], {timeoutMs: 600_000, env: {...process.env, NO_COLOR: '1'}});
  t.is(count.code, 0, count.stderr);
  t.regex(count.stdout, /"type":"summary"/);
});
