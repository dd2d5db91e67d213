/**
 * `skl doctor`: can this machine run skl? Each check says what it found and, when it fails, how
 * to fix it.
 *
 * Only Node built-ins are imported statically. The FFI (koffi + libbpf) and everything built on it
 * is imported lazily, so a missing or too old libbpf — or a koffi that cannot load — is reported as
 * a failed check instead of crashing the doctor.
 */
import {existsSync, readFileSync, statfsSync} from 'node:fs';
import os from 'node:os';
import {cgroup2Mount, ipNetnsExecName} from '../sys/mounts.js';

export interface Check {
  /**
   * Stable identifier: kernel, btf, bpffs, libbpf, privileges, then one per kernel feature probed
   * (see KERNEL_CHECKS), then endianness.
   */
  id: string;
  ok: boolean;
  /** What was found. */
  detail: string;
  /** How to fix it; null when the check passed. */
  hint: string | null;
  /** The oldest Linux with this kernel feature; null for checks that are not about the kernel's features. */
  minKernel: string | null;
  /** Whether a feature skl ships needs it (false: only features still to come do). */
  required: boolean;
}

export const MIN_KERNEL = '5.9';
export const MIN_LIBBPF = '1.0';
export const BPFFS_PATH = '/sys/fs/bpf';
/** BPF_FS_MAGIC (mirrors src/sys/bpffs.ts, which cannot be imported without the FFI). */
const BPFFS_MAGIC = 0xcafe4a11;

const pass = (id: string, detail: string): Check => ({id, ok: true, detail, hint: null, minKernel: null, required: true});
const fail = (id: string, detail: string, hint: string): Check => ({id, ok: false, detail, hint, minKernel: null, required: true});

const firstLine = (error: unknown): string => String((error as Error)?.message ?? error).split('\n')[0];

// --- versions ---

/** Numeric parts of a version or kernel release: "6.1.0-13-amd64" → [6, 1, 0]; undefined if none. */
export function parseVersion(text: string): number[] | undefined {
  const m = /^\s*v?(\d+)(?:\.(\d+))?(?:\.(\d+))?/.exec(text);
  if (m === null) return undefined;
  return [m[1], m[2], m[3]].map((p) => (p === undefined ? 0 : Number(p)));
}

/** <0, 0, >0 like a sort comparator; missing parts count as 0 ("5.9" == "5.9.0"). */
export function compareVersions(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** Whether `version` (text) is at least `min` (text); false when it cannot be parsed. */
export function versionAtLeast(version: string, min: string): boolean {
  const v = parseVersion(version);
  const m = parseVersion(min);
  return v !== undefined && m !== undefined && compareVersions(v, m) >= 0;
}

export function checkKernel(release: string = os.release()): Check {
  const v = parseVersion(release);
  if (v === undefined) return fail('kernel', `cannot parse the kernel release "${release}"`, `skl needs Linux ≥${MIN_KERNEL}`);
  if (compareVersions(v, parseVersion(MIN_KERNEL)!) < 0) {
    return fail('kernel', `Linux ${release} is older than ${MIN_KERNEL}`, `skl needs Linux ≥${MIN_KERNEL} (BPF sk_lookup) unless the kernel has it backported (see the probes): upgrade the kernel`);
  }
  return pass('kernel', `Linux ${release} (≥${MIN_KERNEL})`);
}

export function checkBtf(path = '/sys/kernel/btf/vmlinux'): Check {
  if (existsSync(path)) return pass('btf', `${path} present`);
  return fail('btf', `${path} not found: the kernel exposes no BTF`, 'use a kernel built with CONFIG_DEBUG_INFO_BTF=y (every major distribution kernel ≥5.9 is)');
}

// --- bpffs ---

const FS_NAMES: Record<number, string> = {
  0x62656572: 'sysfs',
  0x01021994: 'tmpfs',
  0x9fa0: 'proc',
  0xef53: 'ext4',
  0x794c7630: 'overlayfs',
  0x58465342: 'xfs',
  0x9123683e: 'btrfs',
};

function fsType(path: string): number | undefined {
  try {
    return statfsSync(path).type;
  } catch {
    return undefined;
  }
}

const PRIVATE_HINT =
  "run skl outside 'ip netns exec' (it gives commands a private /sys): pass --netns /run/netns/NAME, or enter only the network namespace with nsenter --net=/run/netns/NAME";

/** bpffs mounted at `path` (by statfs magic), and not one private to `ip netns exec`. Never mounts. */
export function checkBpffs(path = BPFFS_PATH, netnsExec: string | undefined = ipNetnsExecName()): Check {
  const type = fsType(path);
  if (netnsExec !== undefined) {
    // Under `ip netns exec` /sys is a fresh sysfs: no host bpffs below it, and a bpffs mounted
    // there (with every pin made in it) vanishes when the command ends.
    const found = type === BPFFS_MAGIC ? 'is a BPF filesystem private to' : 'is not a BPF filesystem in';
    return fail('bpffs', `${path} ${found} the mount namespace of 'ip netns exec ${netnsExec}': pins made here would vanish`, PRIVATE_HINT);
  }
  if (type === BPFFS_MAGIC) return pass('bpffs', `${path} is a BPF filesystem`);
  if (type === undefined) {
    return fail('bpffs', `${path} does not exist (is sysfs mounted at /sys?)`, `mount -t sysfs sysfs /sys && mount -t bpf bpf ${path}`);
  }
  const name = FS_NAMES[type];
  return fail('bpffs', `${path} is not a BPF filesystem (filesystem magic 0x${type.toString(16)}${name ? `, ${name}` : ''})`, `mount -t bpf bpf ${path}`);
}

/** cgroup v2 mounted (where: /sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid host): following needs it. */
export function checkCgroup2(mountinfo?: string): Check {
  const where = cgroup2Mount(mountinfo);
  if (where) return pass('cgroup2', `cgroup v2 is mounted at ${where}`);
  return fail('cgroup2', 'cgroup v2 is not mounted (only following services across restarts needs it)', 'mount -t cgroup2 none /sys/fs/cgroup (or boot with systemd.unified_cgroup_hierarchy=1)');
}

// --- privileges ---

export const CAP_NET_ADMIN = 12;
export const CAP_SYS_PTRACE = 19;
export const CAP_SYS_ADMIN = 21;
export const CAP_BPF = 39;

/** The CapEff bit set of a /proc/PID/status text, or undefined when absent. */
export function parseCapEff(status: string): bigint | undefined {
  const m = /^CapEff:\s*([0-9a-fA-F]+)\s*$/m.exec(status);
  return m === null ? undefined : BigInt(`0x${m[1]}`);
}

const has = (caps: bigint, cap: number): boolean => ((caps >> BigInt(cap)) & 1n) === 1n;

/** Capabilities skl needs that `capEff` lacks (CAP_SYS_ADMIN stands in for CAP_BPF, as the kernel allows). */
export function missingCapabilities(capEff: bigint): string[] {
  const missing: string[] = [];
  if (!has(capEff, CAP_BPF) && !has(capEff, CAP_SYS_ADMIN)) missing.push('CAP_BPF');
  if (!has(capEff, CAP_NET_ADMIN)) missing.push('CAP_NET_ADMIN');
  if (!has(capEff, CAP_SYS_PTRACE)) missing.push('CAP_SYS_PTRACE');
  return missing;
}

/**
 * Root, or CAP_BPF + CAP_NET_ADMIN + CAP_SYS_PTRACE. Judged by the effective capabilities, so root
 * in a container that dropped them fails too (it could not load programs either).
 */
export function checkPrivileges(euid = process.geteuid?.() ?? -1, status?: string): Check {
  let text = status;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/self/status', 'utf8');
    } catch {
      text = '';
    }
  }
  const capEff = parseCapEff(text);
  const who = euid === 0 ? 'root (euid 0)' : `euid ${euid}`;
  const hint = 'run skl as root (sudo skl …), or grant it CAP_BPF, CAP_NET_ADMIN and CAP_SYS_PTRACE';
  if (capEff === undefined) {
    return euid === 0 ? pass('privileges', `${who}; capabilities unknown (no CapEff in /proc/self/status)`) : fail('privileges', `${who}; capabilities unknown`, hint);
  }
  const missing = missingCapabilities(capEff);
  if (missing.length === 0) return pass('privileges', `${who} with CAP_BPF, CAP_NET_ADMIN and CAP_SYS_PTRACE`);
  const where = euid === 0 ? ' (a container that dropped capabilities?)' : '';
  return fail('privileges', `${who} lacks ${missing.join(', ')}${where}`, hint);
}

export function checkEndianness(endianness: string = os.endianness()): Check {
  if (endianness === 'LE') return pass('endianness', 'little-endian host');
  return fail('endianness', 'big-endian host: skl and its BPF objects are little-endian only', 'run skl on a little-endian machine (x86_64, aarch64, …)');
}

// --- checks that need the FFI ---

/** Path of the libbpf shared object this process mapped, from /proc/self/maps. */
function mappedLibbpfPath(): string | undefined {
  try {
    const line = readFileSync('/proc/self/maps', 'utf8')
      .split('\n')
      .find((l) => /\/libbpf\.so[.\d]*$/.test(l));
    return line?.slice(line.indexOf('/'));
  } catch {
    return undefined;
  }
}

async function checkLibbpf(): Promise<Check> {
  let version: string;
  try {
    const {libbpfVersion} = await import('../bpf/version.js');
    version = libbpfVersion();
  } catch (error) {
    // FfiLoadError messages end with the same advice as the hint: say it once.
    return fail('libbpf', firstLine(error).replace(/; install it with: .*$/, ''), 'install it with: apt-get install libbpf1');
  }
  const path = mappedLibbpfPath();
  const where = path ? ` (${path})` : '';
  if (!versionAtLeast(version, MIN_LIBBPF)) {
    return fail('libbpf', `libbpf ${version}${where} is older than ${MIN_LIBBPF}`, 'install libbpf ≥1.0: apt-get install libbpf1');
  }
  return pass('libbpf', `libbpf ${version}${where}`);
}

// --- kernel features: real probes (src/bpf/features.ts), plus skl's own programs loaded ---

type ProbeFeature = import('../bpf/features.js').Feature;

/** The kernel checks, in order: the probed features, and skl's own programs as skl loads them. */
export const KERNEL_CHECKS = [
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
] as const;
export type KernelCheck = (typeof KERNEL_CHECKS)[number];

/**
 * skl's own compiled programs: loading them is the final word on whether this kernel takes them.
 * The dispatcher object is loaded as skl loads it (src/dispatcher/state.ts, loadDispatcher): its
 * sk_lookup program must load; each of the programs beside it is left out on a kernel that refuses
 * it, and is a check of its own here, with the kernel it needs.
 */
const OBJECTS: Partial<Record<KernelCheck, {description: string; minKernel: string}>> = {
  dispatcher: {description: "skl's sk_lookup dispatcher (sk_dispatch in bpf/sk_dispatch.o) loads", minKernel: '5.9'},
  // bpf_get_netns_cookie() in sock_ops (5.15)
  sk_follow: {description: "skl's follow program for TCP (sk_follow, sock_ops: a new listener stored in the SOCKMAP) loads", minKernel: '5.15'},
  // socket storage from cgroup sock programs (5.9)
  sk_follow_sock: {description: "skl's UDP socket tagger for followed cgroups (sk_follow_sock, cgroup sock_create: socket storage) loads", minKernel: '5.9'},
  // a SOCKMAP update from a tc program (5.10)
  sk_follow_udp: {description: "skl's follow program for UDP (sk_follow_udp, tc ingress: a SOCKMAP update from tc) loads", minKernel: '5.10'},
  sk_reply: {description: "skl's UDP reply program (sk_reply, tc egress: the reply's source port rewritten) loads", minKernel: '5.9'},
  xdp_count: {description: "skl's XDP counter (bpf/xdp_count.o) loads", minKernel: '5.9'},
};

/** What a check that nothing skl ships needs is for, when no feature names it. */
const NOTES: Partial<Record<KernelCheck, string>> = {
  tcx: 'without it skl attaches its tc programs as clsact filters',
};

export interface SklFeature {
  id: string;
  /** What it is, for people. */
  name: string;
  /** Not shipped yet: announced so that operators know which kernel it will need. */
  planned: boolean;
  /** The checks it needs (environment and kernel). */
  needs: readonly string[];
  /** Shipped, but skl works without it (its checks fail nothing but it). */
  optional?: boolean;
}

/** What skl does (or is about to do), and the checks each needs. */
export const SKL_FEATURES: readonly SklFeature[] = [
  {
    id: 'ports',
    name: 'extra ports: attach, detach, ports, status, metrics',
    planned: false,
    needs: ['btf', 'bpffs', 'libbpf', 'privileges', 'sk_lookup', 'sk_lookup_link', 'sockmap', 'pidfd_getfd', 'batch_ops', 'mmapable', 'dispatcher', 'endianness'],
  },
  {id: 'prefix-bindings', name: 'bindings of a local prefix or address: attach --address', planned: false, optional: true, needs: ['dispatcher', 'inner_map']},
  {id: 'upgrade', name: 'skl upgrade: a new program behind the pinned link, atomically', planned: false, needs: ['libbpf', 'privileges', 'bpffs', 'link_update', 'dispatcher']},
  {id: 'xdp-count', name: 'skl xdp-count', planned: false, needs: ['libbpf', 'privileges', 'xdp', 'xdp_link', 'xdp_count', 'endianness']},
  {id: 'follow', name: 'following TCP services across restarts: attach --cgroup/--unit/--follow', planned: false, optional: true, needs: ['sockmap', 'netns_cookie', 'sk_follow', 'cgroup2']},
  {id: 'follow-udp', name: 'following UDP services across restarts: attach --proto udp with --cgroup/--unit/--follow', planned: false, optional: true, needs: ['sockmap', 'sk_follow_sock', 'sk_follow_udp', 'cgroup2']},
  {id: 'udp-replies', name: 'UDP replies from the extra port: attach --udp-replies', planned: false, optional: true, needs: ['sk_reply']},
];

/** Whether a shipped feature needs the check (a failure then fails the doctor). */
const isRequired = (id: string): boolean => SKL_FEATURES.some((f) => !f.planned && !f.optional && f.needs.includes(id));

/** Names of the planned features that need a check, for the hint of an optional one. */
const plannedUsers = (id: string): string[] => SKL_FEATURES.filter((f) => (f.planned || f.optional) && f.needs.includes(id)).map((f) => f.name.replace(/ \(coming\)$/, ''));

/** A failed load in one line: the verifier's last words (before its statistics), else the error's first line. */
function loadFailure(error: unknown): string {
  const log = (error as {log?: unknown}).log;
  if (typeof log === 'string') {
    const why = log
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !/^(processed \d+ insns|verification time|stack depth|-- END PROG LOAD LOG --)/.test(l))
      .at(-1);
    if (why) return `${firstLine(error).replace(/:$/, '')}: ${why}`;
  }
  return firstLine(error);
}

interface DispatcherLoad {
  /** sk_dispatch itself did not load */
  error?: unknown;
  /** the programs besides it that loaded, and why the others did not */
  loaded: ReadonlySet<string>;
  refused: ReadonlyMap<string, string>;
}

let dispatcherLoad: Promise<DispatcherLoad> | undefined;

/**
 * Load the dispatcher object as skl does when it creates a dispatcher, once (each program beside
 * sk_dispatch is left out where the kernel refuses it); for each program left out, why: it alone,
 * as skl loads it when a dispatcher first needs it (ensureProgram in src/dispatcher/store.ts).
 */
function loadDispatcherObject(): Promise<DispatcherLoad> {
  dispatcherLoad ??= (async () => {
    const {loadDispatcher, OPTIONAL_PROGRAMS} = await import('../dispatcher/state.js');
    let loaded: Set<string>;
    try {
      const r = loadDispatcher();
      r.obj.close();
      loaded = new Set(r.loaded);
    } catch (error) {
      return {error, loaded: new Set(), refused: new Map()};
    }
    const refused = new Map<string, string>();
    for (const p of OPTIONAL_PROGRAMS.filter((q) => !loaded.has(q))) {
      try {
        loadDispatcher({only: p}).obj.close();
        loaded.add(p); // skl loads it alone where a dispatcher needs it
      } catch (error) {
        refused.set(p, loadFailure(error));
      }
    }
    return {loaded, refused};
  })();
  return dispatcherLoad;
}

const faked = (id: string): boolean => (process.env.SKL_FAKE_MISSING_FEATURES ?? '').split(',').includes(id);

/** Whether one of skl's programs loads: undefined when it does, else why not. */
async function objectLoads(id: KernelCheck): Promise<{failed?: string; notChecked?: string}> {
  if (faked(id)) return {failed: 'SKL_FAKE_MISSING_FEATURES'};
  if (id === 'xdp_count') {
    const {BpfObject} = await import('../bpf/object.js');
    try {
      BpfObject.load(objectBytes('xdp_count.o'), {name: 'xdp_count.o'}).close();
      return {};
    } catch (error) {
      if ((error as Error).name === 'PermissionError') throw error;
      return {failed: loadFailure(error)};
    }
  }
  const d = await loadDispatcherObject();
  if (d.error !== undefined && (d.error as Error).name === 'PermissionError') throw d.error;
  if (id === 'dispatcher') return d.error === undefined ? {} : {failed: loadFailure(d.error)};
  if (d.error !== undefined) return {notChecked: "skl's sk_lookup dispatcher itself does not load"};
  return d.loaded.has(id) ? {} : {failed: d.refused.get(id) ?? 'not loaded'};
}

function objectBytes(file: string): Buffer {
  // dist/src/doctor/ → the package root's bpf/
  return readFileSync(new URL(`../../../bpf/${file}`, import.meta.url));
}

async function checkKernelFeature(id: KernelCheck, prerequisites: {libbpf: boolean; privileges: boolean}): Promise<Check> {
  const features = await import('../bpf/features.js');
  const object = OBJECTS[id];
  const info = object ?? {description: features.FEATURES[id as ProbeFeature].description, minKernel: features.FEATURES[id as ProbeFeature].minKernel};
  const required = isRequired(id);
  const base = {id, minKernel: info.minKernel, required};
  const users = plannedUsers(id);
  const note = NOTES[id];
  const needed = `needs Linux ≥${info.minKernel}${required ? '' : users.length ? ` (only for ${users.join(', ')})` : note ? ` (${note})` : ''}`;
  const notChecked = (why: string, hint: string): Check => ({...base, ok: false, detail: `${info.description}: not checked: ${why}`, hint});
  if (id !== 'pidfd_getfd') {
    if (!prerequisites.libbpf) return notChecked('libbpf could not be loaded', 'fix the libbpf check first');
    if (!prerequisites.privileges) return notChecked('loading test programs needs privileges', 'run skl doctor as root');
  }
  try {
    if (object !== undefined) {
      const r = await objectLoads(id);
      if (r.notChecked) return notChecked(r.notChecked, 'fix the dispatcher check first');
      if (r.failed === undefined) return {...base, ok: true, detail: `${info.description} (Linux ≥${info.minKernel})`, hint: null};
      return {...base, ok: false, detail: `${info.description}: ${r.failed}`, hint: needed};
    }
    const result = features.probe(id as ProbeFeature);
    if (result.available) return {...base, ok: true, detail: `${info.description} (Linux ≥${info.minKernel})`, hint: null};
    return {...base, ok: false, detail: `${info.description}: not supported by this kernel (${result.reason})`, hint: needed};
  } catch (error) {
    if ((error as Error).name === 'PermissionError') {
      // the probes that attach something do it in a throwaway network namespace: that takes CAP_SYS_ADMIN
      if (/unshare/.test((error as {op?: string}).op ?? '')) {
        return notChecked('creating a throwaway network namespace for the probe needs CAP_SYS_ADMIN', 'run skl doctor as root (with CAP_SYS_ADMIN)');
      }
      return notChecked('permission denied', 'run skl doctor as root');
    }
    return {...base, ok: false, detail: `${info.description}: ${firstLine(error)}`, hint: needed};
  }
}

export interface FeatureReport {
  id: string;
  name: string;
  planned: boolean;
  /** shipped, but skl works without it (its failure does not fail the doctor) */
  optional: boolean;
  available: boolean;
  /** The checks it needs (ids of `checks`). */
  needs: string[];
  /** The newest minimum kernel among what it needs. */
  minKernel: string;
  /** "available", or why not (the first failed check it needs). */
  detail: string;
}

function featureReport(feature: SklFeature, checks: readonly Check[]): FeatureReport {
  const needed = checks.filter((c) => feature.needs.includes(c.id));
  const kernels = needed.map((c) => c.minKernel).filter((k): k is string => k !== null);
  const minKernel = kernels.reduce((a, b) => (compareVersions(parseVersion(a)!, parseVersion(b)!) >= 0 ? a : b), MIN_KERNEL);
  const missing = needed.filter((c) => !c.ok);
  const available = missing.length === 0;
  let detail = 'available';
  if (!available) {
    const first = missing[0];
    const kernel = first.minKernel === null || first.detail.includes(': not checked: ') ? '' : `needs Linux ≥${first.minKernel}: `;
    detail = `${kernel}${first.detail}${missing.length > 1 ? ` (and ${missing.length - 1} more failed check${missing.length > 2 ? 's' : ''}: ${missing.slice(1).map((c) => c.id).join(', ')})` : ''}`;
  }
  return {id: feature.id, name: feature.name, planned: feature.planned, optional: feature.optional ?? false, available, needs: [...feature.needs], minKernel, detail};
}

export interface DoctorReport {
  /** Every check a shipped feature needs passed. */
  ok: boolean;
  /** The running kernel's release. */
  kernel: string;
  checks: Check[];
  /** What skl can and cannot do on this kernel, and why. */
  features: FeatureReport[];
}

/** Run every check (never throws: a check that cannot run is a failed check). */
export async function runChecks(): Promise<DoctorReport> {
  const guard = (id: string, f: () => Check): Check => {
    try {
      return f();
    } catch (error) {
      return fail(id, `check failed unexpectedly: ${firstLine(error)}`, 'please report this');
    }
  };
  const checks: Check[] = [
    // the release is informational: the probes below decide (distribution kernels backport)
    {...guard('kernel', () => checkKernel()), required: false},
    guard('btf', () => checkBtf()),
    guard('bpffs', () => checkBpffs()),
    {...guard('cgroup2', () => checkCgroup2()), required: isRequired('cgroup2')},
  ];
  const libbpf = await checkLibbpf();
  const privileges = guard('privileges', () => checkPrivileges());
  checks.push(libbpf, privileges);
  const prerequisites = {libbpf: libbpf.ok, privileges: privileges.ok};
  for (const id of KERNEL_CHECKS) {
    try {
      checks.push(await checkKernelFeature(id, prerequisites));
    } catch (error) {
      checks.push({...fail(id, `check failed unexpectedly: ${firstLine(error)}`, 'please report this'), required: isRequired(id)});
    }
  }
  checks.push(guard('endianness', () => checkEndianness()));
  const features = SKL_FEATURES.map((f) => featureReport(f, checks));
  return {ok: checks.every((c) => c.ok || !c.required), kernel: os.release(), checks, features};
}
