/** A loaded BPF program of a BpfObject. */
import {libbpf} from '../ffi/index.js';
import {allocCopy, allocString, allocZero, close, errno} from '../ffi/libc.js';
import {errorFor, VerifierError} from './errors.js';
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
  /** the packet after the (last) run, for programs that change it (tc) */
  dataOut?: Buffer;
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

  /**
   * The attach type the kernel is told at load (BPF_PROG_LOAD's expected_attach_type), before the
   * object is loaded. Some program types need it (sk_lookup, cgroup sock_addr); SEC() names usually
   * set it. SCHED_CLS programs for TCX do not (see src/bpf/tc.ts).
   */
  setExpectedAttachType(attachType: number): void {
    const rc = libbpf.bpf_program__set_expected_attach_type(this.ptr, attachType);
    if (rc < 0) throw errorFor('set expected attach type', -rc, this.name);
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
    return testRun(this.fd, this.name, input);
  }
}

/** BPF_PROG_TEST_RUN of a loaded program (any type the kernel can test-run). */
function testRun(fd: number, name: string, input: TestRunInput): TestRunResult {
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
    const rc = libbpf.bpf_prog_test_run_opts(fd, opts);
    if (rc < 0) throw errorFor('test run', -rc, name);
    return {
      retval: opts.retval,
      durationNs: opts.duration,
      ctxOut: ctxOut ? Buffer.from(ctxOut.view) : undefined,
      dataOut: dataOut ? Buffer.from(dataOut.view.subarray(0, Math.min(opts.data_size_out, dataOut.view.length))) : undefined,
    };
  } finally {
    ctx?.free();
    ctxOut?.free();
    data?.free();
    dataOut?.free();
  }
}

/** sizeof(struct bpf_prog_load_opts), libbpf 1.1.2: expected_attach_type @12, log_level @88, log_size @92, log_buf @96. */
const PROG_LOAD_OPTS_SIZE = 104;
const RAW_LOG_SIZE = 64 * 1024;

/**
 * A program loaded from raw instructions (bpf_prog_load), without an ELF object: for programs a
 * few instructions long (tests, probes). Owns its fd; `close()` releases it (a link or filter that
 * uses the program keeps it loaded).
 */
export class RawProgram implements Disposable {
  private rawFd: number;

  private constructor(
    fd: number,
    readonly name: string,
    readonly type: number,
  ) {
    this.rawFd = fd;
  }

  /** insns: 8 bytes each (struct bpf_insn). The verifier's log comes with a rejection (VerifierError). */
  static load(type: number, name: string, insns: Uint8Array, opts: {expectedAttachType?: number; license?: string} = {}): RawProgram {
    const log = allocString(RAW_LOG_SIZE);
    try {
      const o = Buffer.alloc(PROG_LOAD_OPTS_SIZE);
      o.writeBigUInt64LE(BigInt(PROG_LOAD_OPTS_SIZE), 0);
      o.writeUInt32LE(opts.expectedAttachType ?? 0, 12);
      // log_level 0 with a buffer: libbpf loads without a log, and on failure again with one
      o.writeUInt32LE(RAW_LOG_SIZE, 92);
      o.writeBigUInt64LE(log.ptr, 96);
      const fd = libbpf.bpf_prog_load(type, name, opts.license ?? 'GPL', Buffer.from(insns), insns.length / 8, o);
      if (fd < 0) {
        const end = log.view.indexOf(0);
        const text = Buffer.from(log.view.subarray(0, end < 0 ? log.view.length : end)).toString();
        if (text.trim()) throw new VerifierError(name, -fd, text);
        throw errorFor('load', -fd, name);
      }
      return new RawProgram(fd, name, type);
    } finally {
      log.free();
    }
  }

  /** `r0 = retval; exit`: every run gives the same verdict (a drop or pass program for tests). */
  static returning(type: number, name: string, retval: number, opts: {expectedAttachType?: number} = {}): RawProgram {
    const BPF_ALU64_MOV_K = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K; dst register 0
    const BPF_JMP_EXIT = 0x95;
    const insn = (code: number, imm = 0): Buffer => {
      const b = Buffer.alloc(8); // struct bpf_insn: code, dst:4 src:4, off (s16), imm (s32)
      b[0] = code;
      b.writeInt32LE(imm, 4);
      return b;
    };
    return RawProgram.load(type, name, Buffer.concat([insn(BPF_ALU64_MOV_K, retval), insn(BPF_JMP_EXIT)]), opts);
  }

  get fd(): number {
    if (this.rawFd < 0) throw new Error(`program ${this.name} is closed`);
    return this.rawFd;
  }

  /** Pin the program in bpffs (keeps it loaded while the pin exists). */
  pin(path: string): void {
    const rc = libbpf.bpf_obj_pin(this.fd, path);
    if (rc < 0) throw errorFor('pin program', -rc, `${this.name} at ${path}`);
  }

  /** BPF_PROG_TEST_RUN (the floor of a benchmark: an empty program of the same type). */
  testRun(input: TestRunInput): TestRunResult {
    return testRun(this.fd, this.name, input);
  }

  close(): void {
    if (this.rawFd >= 0) close(this.rawFd);
    this.rawFd = -1;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
