/** Which processes hold a bpf_link open (from /proc/PID/fdinfo), to name the owner of a busy interface. */
import {readdirSync, readFileSync, readlinkSync} from 'node:fs';

export interface LinkHolder {
  pid: number;
  /** The command line, shortened (or the comm when it cannot be read). */
  command: string;
}

function commandOf(pid: string): string {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
    // `node /path/bin/run.js xdp-count eth0` → `run.js xdp-count eth0`: the script says more than node.
    const shown = argv.length > 1 && /(^|\/)node$/.test(argv[0]) ? argv.slice(1) : argv;
    const text = shown.map((a, i) => (i === 0 ? a.split('/').pop() : a)).join(' ');
    if (text) return text.length > 60 ? `${text.slice(0, 57)}...` : text;
  } catch {
    // gone or hidden
  }
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '?';
  }
}

/** Processes with an fd on link `linkId` (best effort: unreadable /proc entries are skipped). */
export function linkHolders(linkId: number): LinkHolder[] {
  const out: LinkHolder[] = [];
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return out;
  }
  const want = new RegExp(`^link_id:\\s*${linkId}$`, 'm');
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if (readlinkSync(`/proc/${pid}/fd/${fd}`) !== 'anon_inode:bpf_link') continue;
        if (!want.test(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))) continue;
        out.push({pid: Number(pid), command: commandOf(pid)});
        break;
      } catch {
        // fd closed meanwhile
      }
    }
  }
  return out;
}
