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
import {ipNetnsExecName} from '../sys/mounts.js';

export interface Check {
  /** Stable identifier: kernel, btf, bpffs, libbpf, privileges, sk_lookup, xdp, pidfd_getfd, endianness. */
  id: string;
  ok: boolean;
  /** What was found. */
  detail: string;
  /** How to fix it; null when the check passed. */
  hint: string | null;
}

export const MIN_KERNEL = '5.9';
export const MIN_LIBBPF = '1.0';
export const BPFFS_PATH = '/sys/fs/bpf';
/** BPF_FS_MAGIC (mirrors src/sys/bpffs.ts, which cannot be imported without the FFI). */
const BPFFS_MAGIC = 0xcafe4a11;

const pass = (id: string, detail: string): Check => ({id, ok: true, detail, hint: null});
const fail = (id: string, detail: string, hint: string): Check => ({id, ok: false, detail, hint});

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
    return fail('kernel', `Linux ${release} is older than ${MIN_KERNEL}`, `skl needs Linux ≥${MIN_KERNEL} (BPF sk_lookup): upgrade the kernel`);
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

type Feature = 'sk_lookup' | 'xdp' | 'pidfd_getfd';

async function checkFeature(feature: Feature, prerequisites: {libbpf: boolean; privileges: boolean}): Promise<Check> {
  if (!prerequisites.libbpf && feature !== 'pidfd_getfd') {
    return fail(feature, 'not checked: libbpf could not be loaded', 'fix the libbpf check first');
  }
  let features: typeof import('../bpf/features.js');
  let available: () => boolean;
  try {
    features = await import('../bpf/features.js');
    if (feature === 'pidfd_getfd') {
      const {pidfdGetfdAvailable} = await import('../sys/pidfd.js');
      available = pidfdGetfdAvailable;
    } else {
      available = () => features.probeProgType(feature);
    }
  } catch (error) {
    return fail(feature, `not checked: ${firstLine(error)}`, 'fix the libbpf check first');
  }
  const what = feature === 'pidfd_getfd' ? 'pidfd_getfd(2)' : `${feature} programs`;
  try {
    features.requireFeature(feature, available);
  } catch (error) {
    if (feature !== 'pidfd_getfd' && !prerequisites.privileges) {
      return fail(feature, `cannot load a test ${feature} program without privileges`, 'run skl doctor as root');
    }
    const min = features.MIN_KERNEL[feature];
    const config = feature === 'pidfd_getfd' ? '' : ' built with CONFIG_BPF_SYSCALL=y';
    return fail(feature, firstLine(error), `skl needs Linux ≥${min}${config}`);
  }
  return pass(feature, feature === 'pidfd_getfd' ? `${what} available` : `${what} load (test program accepted by the kernel)`);
}

export interface DoctorReport {
  ok: boolean;
  checks: Check[];
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
    guard('kernel', () => checkKernel()),
    guard('btf', () => checkBtf()),
    guard('bpffs', () => checkBpffs()),
  ];
  const libbpf = await checkLibbpf();
  const privileges = guard('privileges', () => checkPrivileges());
  checks.push(libbpf, privileges);
  const prerequisites = {libbpf: libbpf.ok, privileges: privileges.ok};
  for (const feature of ['sk_lookup', 'xdp', 'pidfd_getfd'] as const) {
    try {
      checks.push(await checkFeature(feature, prerequisites));
    } catch (error) {
      checks.push(fail(feature, `check failed unexpectedly: ${firstLine(error)}`, 'please report this'));
    }
  }
  checks.push(guard('endianness', () => checkEndianness()));
  return {ok: checks.every((c) => c.ok), checks};
}
