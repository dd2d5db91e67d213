/**
 * The network interfaces of the calling thread's network namespace: what skl attaches its TC
 * programs to (every interface of a namespace, `lo` included). Call it from code already inside the
 * target namespace (`Netns.run`, which switches the calling thread with setns).
 *
 * Through if_nameindex(3) rather than /sys/class/net (sysfs shows the namespace of whoever mounted
 * it, not the thread's: under `nsenter --net=` it is still the host's) or /proc/net/dev (the
 * process's namespace through /proc/self, the thread's only through /proc/thread-self). glibc
 * answers if_nameindex with an RTM_GETLINK dump over a netlink socket it opens for the call, and a
 * socket belongs to the namespace of the thread that creates it: the kernel's own list, one call,
 * no netlink parsing of ours.
 */
import {libc} from '../ffi/index.js';
import {SklError} from './errors.js';

export interface NetInterface {
  name: string;
  ifindex: number;
}

/** Every interface of the calling thread's network namespace, by ifindex (`lo` is 1 in each namespace). */
export function listInterfaces(): NetInterface[] {
  const list = libc.ifNameIndex();
  if (list === null) throw new SklError(`cannot list the network interfaces (if_nameindex): errno ${libc.errno()}`);
  return list.map(({index, name}) => ({name, ifindex: index})).sort((a, b) => a.ifindex - b.ifindex);
}

/** Link-layer types (include/uapi/linux/if_arp.h) skl names. */
export const ARPHRD_ETHER = 1;
export const ARPHRD_LOOPBACK = 772;
export const ARPHRD_NONE = 0xfffe;
const ARPHRD_NAMES: Record<number, string> = {
  [ARPHRD_ETHER]: 'ether',
  [ARPHRD_LOOPBACK]: 'loopback',
  [ARPHRD_NONE]: 'none',
  768: 'ipip',
  769: 'ip6ip6',
  776: 'sit',
  778: 'gre',
  823: 'ip6gre',
  512: 'ppp',
};
/** "ether", "none", … or the number. */
export const hwTypeName = (type: number): string => ARPHRD_NAMES[type] ?? String(type);

/**
 * The link-layer type (ARPHRD_*) of interfaces of the calling thread's namespace, by name:
 * SIOCGIFHWADDR on a socket of that namespace (ifr_hwaddr.sa_family). An interface that vanished
 * meanwhile is left out.
 */
export function interfaceTypes(names: readonly string[]): Map<string, number> {
  const SIOCGIFHWADDR = 0x8927;
  const AF_INET = 2;
  const SOCK_DGRAM = 2;
  const SOCK_CLOEXEC = 0o2000000;
  const out = new Map<string, number>();
  const fd = libc.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new SklError(`cannot read interface types: socket: errno ${libc.errno()}`);
  try {
    for (const name of names) {
      const ifr = Buffer.alloc(40); // struct ifreq: char ifr_name[16], then the union
      ifr.write(name.slice(0, 15), 0, 'latin1');
      if (libc.ioctlBuf(fd, SIOCGIFHWADDR, ifr) === 0) out.set(name, ifr.readUInt16LE(16));
    }
  } finally {
    libc.close(fd);
  }
  return out;
}

/** The name of an interface of the calling thread's namespace, or undefined when there is none with that index. */
export function interfaceName(ifindex: number): string | undefined {
  const buf = Buffer.alloc(16); // IF_NAMESIZE
  return libc.if_indextoname(ifindex, buf) ?? undefined;
}
