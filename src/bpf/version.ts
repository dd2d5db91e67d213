import {libbpf} from '../ffi/index.js';

/** "1.1" — the version of the system libbpf skl loaded. */
export function libbpfVersion(): string {
  return `${libbpf.libbpf_major_version()}.${libbpf.libbpf_minor_version()}`;
}
