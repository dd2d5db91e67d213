/** A loaded BPF program of a BpfObject. */
import {libbpf} from '../ffi/index.js';
import {allocCopy, allocZero, errno} from '../ffi/libc.js';
import {errorFor} from './errors.js';
import {Link} from './link.js';

export const BPF_PROG_TYPE_XDP = 6;
export const BPF_PROG_TYPE_SK_LOOKUP = 30;
/** enum bpf_attach_type BPF_XDP. */
const BPF_XDP = 37;
/** sizeof(struct bpf_link_create_opts), libbpf 1.1.2. */
const LINK_CREATE_OPTS_SIZE = 64;

export interface TestRunInput {
  /** Program context (e.g. struct bpf_sk_lookup, 72 bytes). */
  ctx?: Uint8Array;
  /** Packet data (XDP). */
  data?: Uint8Array;
  repeat?: number;
}

export interface TestRunResult {
  retval: number;
  /** Average run time reported by the kernel, ns per run. */
  durationNs: number;
  ctxOut?: Buffer;
}

export class Program {
  constructor(
    private readonly ptr: bigint,
    readonly name: string,
  ) {}

  get fd(): number {
    return libbpf.bpf_program__fd(this.ptr);
  }

  get type(): number {
    return libbpf.bpf_program__type(this.ptr);
  }

  /** Whether the object's load loads this program (before load only). */
  setAutoload(on: boolean): void {
    const rc = libbpf.bpf_program__set_autoload(this.ptr, on);
    if (rc < 0) throw errorFor('set autoload', -rc, this.name);
  }

  /** Attach to a cgroup v2 directory (given an fd of it) through a bpf_link, for an attach type. */
  attachCgroup(cgroupFd: number, attachType: number, what = 'cgroup'): Link {
    const opts = Buffer.alloc(LINK_CREATE_OPTS_SIZE);
    opts.writeBigUInt64LE(BigInt(LINK_CREATE_OPTS_SIZE), 0);
    const fd = libbpf.bpf_link_create(this.fd, cgroupFd, attachType, opts);
    if (fd < 0) throw errorFor('attach', -fd, `${this.name} to ${what}`);
    return new Link({fd}, `${this.name}@${what}`);
  }

  /** Pin the program in bpffs (keeps it loaded while the pin exists). */
  pin(path: string): void {
    const rc = libbpf.bpf_obj_pin(this.fd, path);
    if (rc < 0) throw errorFor('pin program', -rc, `${this.name} at ${path}`);
  }

  /** Attach to a network namespace (sk_lookup, flow dissector) given an fd of its nsfs file. */
  attachNetns(netnsFd: number, what = 'netns'): Link {
    const link = libbpf.bpf_program__attach_netns(this.ptr, netnsFd);
    if (link === null) throw errorFor('attach', errno(), `${this.name} to ${what}`);
    return new Link(link, `${this.name}@${what}`);
  }

  /**
   * Attach an XDP program through a bpf_link (not pinned: it detaches when the last reference —
   * this process's fd — goes away, even on SIGKILL). Without `flags` libbpf's attach_xdp is used
   * (the kernel picks native, else generic); with `flags` (one XDP_FLAGS_*_MODE bit, see xdp.ts)
   * the link is created in that mode with bpf_link_create. The ifindex is resolved in the calling
   * thread's network namespace.
   */
  attachXdp(ifindex: number, what = `ifindex ${ifindex}`, flags?: number): Link {
    if (flags === undefined) {
      const link = libbpf.bpf_program__attach_xdp(this.ptr, ifindex);
      if (link === null) throw errorFor('attach', errno(), `${this.name} to ${what}`);
      return new Link(link, `${this.name}@${what}`);
    }
    const opts = Buffer.alloc(LINK_CREATE_OPTS_SIZE);
    opts.writeBigUInt64LE(BigInt(LINK_CREATE_OPTS_SIZE), 0);
    opts.writeUInt32LE(flags >>> 0, 8);
    const fd = libbpf.bpf_link_create(this.fd, ifindex, BPF_XDP, opts);
    if (fd < 0) throw errorFor('attach', -fd, `${this.name} to ${what}`);
    return new Link({fd}, `${this.name}@${what}`);
  }

  /** BPF_PROG_TEST_RUN. */
  testRun(input: TestRunInput): TestRunResult {
    const ctx = input.ctx ? allocCopy(input.ctx) : undefined;
    const ctxOut = input.ctx ? allocZero(input.ctx.length) : undefined;
    const data = input.data ? allocCopy(input.data) : undefined;
    const dataOut = input.data ? allocZero(input.data.length + 256) : undefined;
    try {
      const opts = {
        sz: 80,
        data_in: data?.ptr ?? 0n,
        data_out: dataOut?.ptr ?? 0n,
        data_size_in: input.data?.length ?? 0,
        data_size_out: dataOut ? input.data!.length + 256 : 0,
        ctx_in: ctx?.ptr ?? 0n,
        ctx_out: ctxOut?.ptr ?? 0n,
        ctx_size_in: input.ctx?.length ?? 0,
        ctx_size_out: input.ctx?.length ?? 0,
        retval: 0,
        repeat: input.repeat ?? 1,
        duration: 0,
        flags: 0,
        cpu: 0,
        batch_size: 0,
      };
      const rc = libbpf.bpf_prog_test_run_opts(this.fd, opts);
      if (rc < 0) throw errorFor('test run', -rc, this.name);
      return {
        retval: opts.retval,
        durationNs: opts.duration,
        ctxOut: ctxOut ? Buffer.from(ctxOut.view) : undefined,
      };
    } finally {
      ctx?.free();
      ctxOut?.free();
      data?.free();
      dataOut?.free();
    }
  }
}
