// The kernel's bpf_links, as skl's own loader sees them (bpf_link_get_next_id, then the link's info
// by fd): what the end-to-end tests use to check that no link is left behind. No external tool
// (bpftool), so these checks run — and can fail — wherever the privileged tests run.
//
// A check that finds nothing proves nothing if the reader is wrong, so every use that expects zero
// links should have a positive control (the same reader seeing the link while it exists), and
// test/loader.test.ts checks the reader against the kernel's own /proc/PID/fdinfo of a link fd.
import {readFileSync} from 'node:fs';
import {BPF_LINK_TYPE_NETNS, BPF_LINK_TYPE_XDP, BpfError, Link, linkIds, NotFoundError, type LinkInfo} from '../../src/bpf/index.js';

export {BPF_LINK_TYPE_NETNS, BPF_LINK_TYPE_XDP, type LinkInfo};

/**
 * Every bpf_link in the kernel (all namespaces). A link that goes away between listing and opening
 * is left out; any other error (EPERM without CAP_SYS_ADMIN, …) throws: never "no links".
 */
export function bpfLinks(): LinkInfo[] {
  const out: LinkInfo[] = [];
  for (const id of linkIds()) {
    let link: Link;
    try {
      link = Link.openById(id);
    } catch (error) {
      if (error instanceof NotFoundError) continue; // released meanwhile
      if (error instanceof BpfError && error.errno === 11) continue; // EAGAIN: being released right now
      throw error;
    }
    try {
      out.push(link.info());
    } finally {
      link.close();
    }
  }
  return out;
}

/** netns links (sk_lookup, flow dissector) on the network namespace with inode `ino`. */
export function netnsLinks(ino: number): LinkInfo[] {
  return bpfLinks().filter(l => l.type === BPF_LINK_TYPE_NETNS && l.netnsIno === ino);
}

/** XDP links of program `progId` (optionally only those on `ifindex`, of whichever namespace). */
export function xdpLinks(progId: number, ifindex?: number): LinkInfo[] {
  return bpfLinks().filter(l => l.type === BPF_LINK_TYPE_XDP && l.progId === progId && (ifindex === undefined || l.ifindex === ifindex));
}

/** The kernel's own description of an fd of `pid` (/proc/PID/fdinfo/FD): `key: value` pairs. */
export function fdinfo(fd: number, pid: number | 'self' = 'self'): Record<string, string> {
  const text = readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
  return Object.fromEntries(
    text
      .split('\n')
      .map(l => /^([^:]+):\s*(.*)$/.exec(l))
      .filter((m): m is RegExpExecArray => m !== null)
      .map(m => [m[1], m[2].trim()]),
  );
}
