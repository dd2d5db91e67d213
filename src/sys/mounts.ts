/**
 * Mount table facts from /proc/self/mountinfo. No FFI here: `skl doctor` uses it before it knows
 * whether libbpf/koffi can load.
 */
import {existsSync, readFileSync} from 'node:fs';

export interface MountEntry {
  mountPoint: string;
  fsType: string;
  source: string;
}

/** Undo mountinfo's octal escapes (\040 for a space, …). */
const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

/** This process's mount table, or undefined when /proc cannot tell. */
function ownMountinfo(): string | undefined {
  try {
    return readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return undefined;
  }
}

/** Parse /proc/PID/mountinfo text (mount order: a later entry at the same point hides an earlier one). */
export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const before = line.slice(0, sep).split(' ');
    const after = line.slice(sep + 3).split(' ');
    if (before.length < 5 || after.length < 2) continue;
    out.push({mountPoint: unescape(before[4]), fsType: after[0], source: unescape(after[1])});
  }
  return out;
}

/**
 * The network namespace name when this process runs under `ip netns exec NAME`, else undefined.
 * `ip netns exec` gives the command a private mount namespace and remounts /sys as a sysfs whose
 * source is the namespace's name, so a bpffs at /sys/fs/bpf there is not the host's and dies with
 * the command (see DESIGN.md).
 */
export function ipNetnsExecName(mountinfo?: string, netnsDirs: readonly string[] = ['/run/netns', '/var/run/netns']): string | undefined {
  const text = mountinfo ?? ownMountinfo();
  if (text === undefined) return undefined;
  const sys = parseMountinfo(text)
    .filter((m) => m.mountPoint === '/sys')
    .at(-1);
  if (sys === undefined || sys.fsType !== 'sysfs') return undefined;
  if (['sysfs', 'sys', 'none', ''].includes(sys.source) || sys.source.includes('/')) return undefined;
  return netnsDirs.some((d) => existsSync(`${d}/${sys.source}`)) ? sys.source : undefined;
}

/** Where cgroup v2 is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid systems), or undefined. */
export function cgroup2Mount(mountinfo?: string): string | undefined {
  const text = mountinfo ?? ownMountinfo();
  if (text === undefined) return undefined;
  return parseMountinfo(text).filter((m) => m.fsType === 'cgroup2').at(-1)?.mountPoint;
}
