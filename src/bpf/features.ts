/** Kernel feature probes, with a seam for tests (SKL_FAKE_MISSING_FEATURES=sk_lookup,xdp,pidfd_getfd). */
import {libbpf, libc} from '../ffi/index.js';
import {errorFor, NotSupportedError} from './errors.js';
import {BPF_PROG_TYPE_SK_LOOKUP, BPF_PROG_TYPE_XDP} from './program.js';

export type Feature = 'sk_lookup' | 'xdp' | 'pidfd_getfd';

export const MIN_KERNEL: Record<Feature, string> = {sk_lookup: '5.9', xdp: '5.9', pidfd_getfd: '5.6'};
const DESCRIPTION: Record<Feature, string> = {
  sk_lookup: 'BPF sk_lookup programs',
  xdp: 'XDP programs attached through bpf_link',
  pidfd_getfd: 'pidfd_getfd(2)',
};

function faked(feature: Feature): boolean {
  return (process.env.SKL_FAKE_MISSING_FEATURES ?? '').split(',').includes(feature);
}

const cache = new Map<Feature, boolean>();
const EPERM = 1;
const EACCES = 13;

/** Whether the kernel supports a program type (loads a trivial program). Throws PermissionError without privileges. */
export function probeProgType(feature: 'sk_lookup' | 'xdp'): boolean {
  if (faked(feature)) return false;
  let ok = cache.get(feature);
  if (ok === undefined) {
    const type = feature === 'sk_lookup' ? BPF_PROG_TYPE_SK_LOOKUP : BPF_PROG_TYPE_XDP;
    ok = libbpf.libbpf_probe_bpf_prog_type(type, null) === 1;
    if (!ok) {
      // libbpf reports "not supported" for any failed load: tell a missing privilege apart
      const e = libc.errno();
      if (e === EPERM || e === EACCES) throw errorFor(`loading BPF programs (${feature} probe)`, e);
    }
    cache.set(feature, ok);
  }
  return ok;
}

/** Throw NotSupportedError (naming the minimum kernel) unless the feature is there. */
export function requireFeature(feature: Feature, available: () => boolean): void {
  if (faked(feature) || !available()) throw new NotSupportedError(DESCRIPTION[feature], MIN_KERNEL[feature]);
}
