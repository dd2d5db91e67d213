/** XDP attachment state of an interface (netlink, through libbpf): query, and detach by mode. */
import {libbpf} from '../ffi/index.js';
import {close} from '../ffi/libc.js';
import {errorFor} from './errors.js';
import {progInfoByFd} from './info.js';

/** XDP_FLAGS_* of linux/if_link.h. */
export const XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0;
export const XDP_FLAGS_SKB_MODE = 1 << 1;
export const XDP_FLAGS_DRV_MODE = 1 << 2;
export const XDP_FLAGS_HW_MODE = 1 << 3;

/** Where an XDP program runs: the driver (native), the generic skb path, or the NIC (offload). */
export type XdpMode = 'native' | 'skb' | 'hw';

export const XDP_MODE_FLAGS: Record<XdpMode, number> = {
  native: XDP_FLAGS_DRV_MODE,
  skb: XDP_FLAGS_SKB_MODE,
  hw: XDP_FLAGS_HW_MODE,
};

/** The XDP programs attached to an interface, by mode (0 = none). */
export interface XdpState {
  native: number;
  skb: number;
  hw: number;
}

/** sizeof(struct bpf_xdp_query_opts), libbpf 1.1.2. */
const QUERY_OPTS_SIZE = 32;

/** Program ids attached to `ifindex` (of the calling thread's network namespace), per mode. */
export function xdpQuery(ifindex: number): XdpState {
  const opts = Buffer.alloc(QUERY_OPTS_SIZE);
  opts.writeBigUInt64LE(BigInt(QUERY_OPTS_SIZE), 0);
  const rc = libbpf.bpf_xdp_query(ifindex, 0, opts);
  if (rc < 0) throw errorFor('query XDP', -rc, `on ifindex ${ifindex}`);
  // prog_id @8 is the single program when only one is attached; the per-mode ids follow.
  return {native: opts.readUInt32LE(12), hw: opts.readUInt32LE(16), skb: opts.readUInt32LE(20)};
}

/** The attached programs as [mode, program id] pairs. */
export function xdpAttached(state: XdpState): [XdpMode, number][] {
  return (['native', 'skb', 'hw'] as const).filter((m) => state[m] !== 0).map((m) => [m, state[m]]);
}

/**
 * Detach whatever program is attached in `mode` through netlink (not through a bpf_link: the
 * kernel refuses that with EBUSY; detach the link itself instead).
 */
export function xdpDetachMode(ifindex: number, mode: XdpMode): void {
  const rc = libbpf.bpf_xdp_detach(ifindex, XDP_MODE_FLAGS[mode], null);
  if (rc < 0) throw errorFor('detach XDP', -rc, `(${mode} mode) from ifindex ${ifindex}`);
}

/** Name of a loaded program by id, or undefined when it is gone or cannot be opened. */
export function progNameById(id: number): string | undefined {
  const fd = libbpf.bpf_prog_get_fd_by_id(id);
  if (fd < 0) return undefined;
  try {
    return progInfoByFd(fd).name;
  } catch {
    return undefined;
  } finally {
    close(fd);
  }
}
