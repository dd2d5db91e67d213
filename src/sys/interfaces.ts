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

/** The name of an interface of the calling thread's namespace, or undefined when there is none with that index. */
export function interfaceName(ifindex: number): string | undefined {
  const buf = Buffer.alloc(16); // IF_NAMESIZE
  return libc.if_indextoname(ifindex, buf) ?? undefined;
}
