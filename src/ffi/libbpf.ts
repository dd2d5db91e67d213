/**
 * koffi declarations of the system libbpf (libbpf.so.1, ≥1.0; no symbol newer than 1.1).
 * Raw bindings only: pointers are bigint, errors are -errno / NULL + errno. The typed loader in
 * src/bpf/ is the only consumer.
 */
import koffi from 'koffi';
import {FfiLoadError, vsnprintf} from './libc.js';

export type Ptr = bigint;

type Lib = ReturnType<typeof koffi.load>;
let lib: Lib | undefined;
let loadError: FfiLoadError | undefined;

/**
 * libbpf.so.1, loaded on the first call of any binding rather than at import, so that importing
 * the loader never throws: a missing or too old libbpf surfaces as FfiLoadError from the first
 * call (one line from a command, a failed check in `skl doctor`), and oclif can still list and
 * load every command.
 */
function libbpfLib(): Lib {
  if (lib !== undefined) return lib;
  if (loadError !== undefined) throw loadError;
  let l: Lib;
  try {
    l = koffi.load('libbpf.so.1');
  } catch (error) {
    loadError = new FfiLoadError(
      `libbpf.so.1 not found (${(error as Error).message.split('\n')[0]}); install it with: apt-get install libbpf1`,
    );
    throw loadError;
  }
  let major: number;
  let minor: number;
  try {
    major = (l.func('uint32_t libbpf_major_version(void)') as () => number)();
    minor = (l.func('uint32_t libbpf_minor_version(void)') as () => number)();
  } catch (error) {
    loadError = new FfiLoadError(
      `libbpf.so.1 is not a usable libbpf (${(error as Error).message.split('\n')[0]}); install it with: apt-get install libbpf1`,
    );
    throw loadError;
  }
  if (major < 1) {
    loadError = new FfiLoadError(`libbpf ${major}.${minor} is too old: skl needs libbpf ≥1.0; install it with: apt-get install libbpf1`);
    throw loadError;
  }
  // libbpf's messages are captured, never written to stderr (see setLibbpfPrint)
  // The format stays a pointer: libbpf prints dozens of debug lines per object, and only the levels
  // a sink asked for are made into strings (formatting them all cost attach ≈9 ms).
  const printFn = koffi.proto('int skl_libbpf_print_fn(int level, void *fmt, void *args)');
  const printCb = koffi.register((level: number, fmt: bigint, args: bigint) => {
    if (printSink && level <= printLevel) printSink(level, vsnprintf(fmt, args));
    return 0;
  }, koffi.pointer(printFn));
  (l.func('void *libbpf_set_print(skl_libbpf_print_fn *fn)') as (cb: unknown) => unknown)(printCb);
  lib = l;
  return l;
}

type F<A extends unknown[], R> = (...args: A) => R;
/** A binding, resolved (and libbpf loaded) on its first call. */
const fn = <A extends unknown[], R>(decl: string): F<A, R> => {
  let f: F<A, R> | undefined;
  return (...args: A): R => (f ??= libbpfLib().func(decl) as F<A, R>)(...args);
};

// --- print callback (registered with libbpf when it is loaded) ---
let printSink: ((level: number, msg: string) => void) | undefined;
let printLevel = 0;

export const libbpf_major_version = fn<[], number>('uint32_t libbpf_major_version(void)');
export const libbpf_minor_version = fn<[], number>('uint32_t libbpf_minor_version(void)');
export const libbpf_strerror = fn<[number, Buffer, number], number>('int libbpf_strerror(int err, _Out_ char *buf, size_t size)');

/** Route libbpf's log lines up to `maxLevel` to `sink` (levels: 0 warn, 1 info, 2 debug); the others are dropped unformatted. */
export function setLibbpfPrint(sink: ((level: number, msg: string) => void) | undefined, maxLevel = 2): void {
  printSink = sink;
  printLevel = maxLevel;
}

// --- bpf_object ---
export const bpf_object__open_mem = fn<[Ptr, number, null], Ptr | null>(
  'void *bpf_object__open_mem(void *obj_buf, size_t obj_buf_sz, void *opts)',
);
export const bpf_object__load = fn<[Ptr], number>('int bpf_object__load(void *obj)');
export const bpf_object__close = fn<[Ptr], void>('void bpf_object__close(void *obj)');
export const bpf_object__next_program = fn<[Ptr, Ptr | null], Ptr | null>('void *bpf_object__next_program(void *obj, void *prog)');
export const bpf_object__next_map = fn<[Ptr, Ptr | null], Ptr | null>('void *bpf_object__next_map(void *obj, void *map)');

// --- bpf_program ---
export const bpf_program__name = fn<[Ptr], string>('const char *bpf_program__name(void *prog)');
export const bpf_program__fd = fn<[Ptr], number>('int bpf_program__fd(void *prog)');
export const bpf_program__type = fn<[Ptr], number>('int bpf_program__type(void *prog)');
export const bpf_program__set_log_buf = fn<[Ptr, Ptr, number], number>(
  'int bpf_program__set_log_buf(void *prog, void *log_buf, size_t log_size)',
);
export const bpf_program__set_log_level = fn<[Ptr, number], number>('int bpf_program__set_log_level(void *prog, uint32_t level)');
export const bpf_program__set_autoload = fn<[Ptr, boolean], number>('int bpf_program__set_autoload(void *prog, bool autoload)');
export const bpf_program__attach_netns = fn<[Ptr, number], Ptr | null>('void *bpf_program__attach_netns(void *prog, int netns_fd)');
export const bpf_program__attach_xdp = fn<[Ptr, number], Ptr | null>('void *bpf_program__attach_xdp(void *prog, int ifindex)');

// --- bpf_map (object level) ---
export const bpf_map__name = fn<[Ptr], string>('const char *bpf_map__name(void *map)');
export const bpf_map__fd = fn<[Ptr], number>('int bpf_map__fd(void *map)');
export const bpf_map__type = fn<[Ptr], number>('int bpf_map__type(void *map)');
export const bpf_map__key_size = fn<[Ptr], number>('uint32_t bpf_map__key_size(void *map)');
export const bpf_map__value_size = fn<[Ptr], number>('uint32_t bpf_map__value_size(void *map)');
export const bpf_map__max_entries = fn<[Ptr], number>('uint32_t bpf_map__max_entries(void *map)');
export const bpf_map__set_max_entries = fn<[Ptr, number], number>('int bpf_map__set_max_entries(void *map, uint32_t max_entries)');
export const bpf_map__reuse_fd = fn<[Ptr, number], number>('int bpf_map__reuse_fd(void *map, int fd)');
export const bpf_map__initial_value = fn<[Ptr, [number]], Ptr | null>('void *bpf_map__initial_value(void *map, _Out_ size_t *psize)');

// --- bpf_link ---
export const bpf_link__fd = fn<[Ptr], number>('int bpf_link__fd(void *link)');
export const bpf_link__pin = fn<[Ptr, string], number>('int bpf_link__pin(void *link, const char *path)');
export const bpf_link__unpin = fn<[Ptr], number>('int bpf_link__unpin(void *link)');
export const bpf_link__open = fn<[string], Ptr | null>('void *bpf_link__open(const char *path)');
export const bpf_link__detach = fn<[Ptr], number>('int bpf_link__detach(void *link)');
export const bpf_link__destroy = fn<[Ptr], number>('int bpf_link__destroy(void *link)');
export const bpf_link__disconnect = fn<[Ptr], void>('void bpf_link__disconnect(void *link)');

// --- low-level bpf(2) wrappers (fd based; return -errno or -1 with errno) ---
export const bpf_map_update_elem = fn<[number, Buffer, Buffer, bigint | number], number>(
  'int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)',
);
export const bpf_map_lookup_elem = fn<[number, Buffer, Buffer], number>(
  'int bpf_map_lookup_elem(int fd, const void *key, _Out_ void *value)',
);
export const bpf_map_delete_elem = fn<[number, Buffer], number>('int bpf_map_delete_elem(int fd, const void *key)');
export const bpf_map_get_next_key = fn<[number, Buffer | null, Buffer], number>(
  'int bpf_map_get_next_key(int fd, const void *key, _Out_ void *next_key)',
);
/** opts: struct bpf_map_batch_opts { size_t sz; __u64 elem_flags; __u64 flags; } (24 bytes). */
export const bpf_map_update_batch = fn<[number, Buffer, Buffer, [number], Buffer], number>(
  'int bpf_map_update_batch(int fd, const void *keys, const void *values, _Inout_ uint32_t *count, const void *opts)',
);
export const bpf_map_delete_batch = fn<[number, Buffer, [number], Buffer], number>(
  'int bpf_map_delete_batch(int fd, const void *keys, _Inout_ uint32_t *count, const void *opts)',
);
export const bpf_obj_pin = fn<[number, string], number>('int bpf_obj_pin(int fd, const char *pathname)');
export const bpf_obj_get = fn<[string], number>('int bpf_obj_get(const char *pathname)');
export const bpf_obj_get_info_by_fd = fn<[number, Buffer, [number]], number>(
  'int bpf_obj_get_info_by_fd(int fd, _Out_ void *info, _Inout_ uint32_t *info_len)',
);
export const bpf_map_get_next_id = fn<[number, [number]], number>('int bpf_map_get_next_id(uint32_t start_id, _Out_ uint32_t *next_id)');
export const bpf_map_get_fd_by_id = fn<[number], number>('int bpf_map_get_fd_by_id(uint32_t id)');
export const bpf_link_get_next_id = fn<[number, [number]], number>('int bpf_link_get_next_id(uint32_t start_id, _Out_ uint32_t *next_id)');
export const bpf_link_get_fd_by_id = fn<[number], number>('int bpf_link_get_fd_by_id(uint32_t id)');
export const bpf_prog_get_fd_by_id = fn<[number], number>('int bpf_prog_get_fd_by_id(uint32_t id)');
/** BPF_ENABLE_STATS: the kernel keeps per-program run time and count while the returned fd is open (type 0: BPF_STATS_RUN_TIME). */
export const bpf_enable_stats = fn<[number], number>('int bpf_enable_stats(int type)');
export const bpf_xdp_query_id = fn<[number, number, [number]], number>('int bpf_xdp_query_id(int ifindex, int flags, _Out_ uint32_t *prog_id)');
export const bpf_xdp_detach = fn<[number, number, null], number>('int bpf_xdp_detach(int ifindex, uint32_t flags, const void *opts)');
export const bpf_xdp_attach = fn<[number, number, number, null], number>('int bpf_xdp_attach(int ifindex, int prog_fd, uint32_t flags, const void *opts)');
/** opts: struct bpf_xdp_query_opts, libbpf 1.1.2 layout (32 bytes: sz, prog_id, drv_prog_id, hw_prog_id, skb_prog_id, attach_mode u8 @24). */
export const bpf_xdp_query = fn<[number, number, Buffer], number>('int bpf_xdp_query(int ifindex, int flags, _Inout_ uint8_t *opts)');
/**
 * opts: struct bpf_link_create_opts, libbpf 1.1.2 layout (64 bytes: size_t sz @0, __u32 flags @8, …).
 * Returns a link fd (not a libbpf `struct bpf_link`), or -errno. For XDP, target_fd is the ifindex
 * and flags may carry one XDP_FLAGS_*_MODE bit.
 */
export const bpf_link_create = fn<[number, number, number, Buffer], number>(
  'int bpf_link_create(int prog_fd, int target_fd, int attach_type, const uint8_t *opts)',
);
/** Programs on an attach point (TCX, Linux ≥6.6: target_fd is the ifindex, in the calling thread's namespace). */
export const bpf_prog_query = fn<[number, number, number, [number], Buffer, [number]], number>(
  'int bpf_prog_query(int target_fd, int type, uint32_t query_flags, _Out_ uint32_t *attach_flags, _Out_ uint8_t *prog_ids, _Inout_ uint32_t *prog_cnt)',
);
export const bpf_link_detach = fn<[number], number>('int bpf_link_detach(int link_fd)');
/** Swap the program behind a link atomically (opts NULL: no expected old program). */
export const bpf_link_update = fn<[number, number, null], number>('int bpf_link_update(int link_fd, int new_prog_fd, const void *opts)');
export const libbpf_probe_bpf_prog_type = fn<[number, null], number>('int libbpf_probe_bpf_prog_type(int prog_type, const void *opts)');

/** struct bpf_test_run_opts, libbpf 1.1.2 layout (80 bytes). */
export const BpfTestRunOpts = koffi.struct('skl_bpf_test_run_opts', {
  sz: 'size_t',
  data_in: 'uint64_t',
  data_out: 'uint64_t',
  data_size_in: 'uint32_t',
  data_size_out: 'uint32_t',
  ctx_in: 'uint64_t',
  ctx_out: 'uint64_t',
  ctx_size_in: 'uint32_t',
  ctx_size_out: 'uint32_t',
  retval: 'uint32_t',
  repeat: 'int',
  duration: 'uint32_t',
  flags: 'uint32_t',
  cpu: 'uint32_t',
  batch_size: 'uint32_t',
});
if (koffi.sizeof(BpfTestRunOpts) !== 80) throw new FfiLoadError('bpf_test_run_opts layout mismatch');
export interface TestRunOpts {
  sz: number;
  data_in: bigint;
  data_out: bigint;
  data_size_in: number;
  data_size_out: number;
  ctx_in: bigint;
  ctx_out: bigint;
  ctx_size_in: number;
  ctx_size_out: number;
  retval: number;
  repeat: number;
  duration: number;
  flags: number;
  cpu: number;
  batch_size: number;
}
export const bpf_prog_test_run_opts = fn<[number, TestRunOpts], number>(
  'int bpf_prog_test_run_opts(int prog_fd, _Inout_ skl_bpf_test_run_opts *opts)',
);

/** Text of a libbpf error code (positive errno or libbpf's own 4000+ codes). */
export function libbpfErrorText(err: number): string {
  const buf = Buffer.alloc(256);
  libbpf_strerror(err, buf, buf.length);
  const end = buf.indexOf(0);
  return buf.subarray(0, end < 0 ? buf.length : end).toString();
}

export const libbpf_num_possible_cpus = fn<[], number>('int libbpf_num_possible_cpus(void)');
export const bpf_map_lookup_batch = fn<[number, Buffer | null, Buffer, Buffer, Buffer, [number], Buffer], number>(
  'int bpf_map_lookup_batch(int fd, void *in_batch, _Out_ void *out_batch, _Out_ void *keys, _Out_ void *values, _Inout_ uint32_t *count, const void *opts)',
);

// --- kernel feature probes (src/bpf/features.ts) ---
/** opts: struct bpf_map_create_opts, libbpf 1.1.2 layout (48 bytes: size_t sz @0, map_flags @28), or null. */
export const bpf_map_create = fn<[number, string | null, number, number, number, Buffer | null], number>(
  'int bpf_map_create(int map_type, const char *map_name, uint32_t key_size, uint32_t value_size, uint32_t max_entries, const uint8_t *opts)',
);
/** insns: 8 bytes each; opts: struct bpf_prog_load_opts (a prefix: size_t sz @0, expected_attach_type @12), or null. */
export const bpf_prog_load = fn<[number, string | null, string, Buffer, number, Buffer | null], number>(
  'int bpf_prog_load(int prog_type, const char *prog_name, const char *license, const uint8_t *insns, size_t insn_cnt, const uint8_t *opts)',
);
/** 1: the helper can be called from this program type, 0: not, <0: -errno (the probe itself failed). */
export const libbpf_probe_bpf_helper = fn<[number, number, null], number>('int libbpf_probe_bpf_helper(int prog_type, int helper_id, const void *opts)');

// --- TC: TCX links (bpf_link_create above) and clsact filters (src/bpf/tc.ts) ---
/** Before load only (-EBUSY after). The kernel does not need it for TCX (see src/bpf/tc.ts). */
export const bpf_program__set_expected_attach_type = fn<[Ptr, number], number>(
  'int bpf_program__set_expected_attach_type(void *prog, int type)',
);
/**
 * hook: struct bpf_tc_hook, libbpf 1.1.2 layout (24 bytes: size_t sz @0, int ifindex @8,
 * enum bpf_tc_attach_point attach_point @12, __u32 parent @16, then `size_t :0` padding).
 * hook_create adds the clsact qdisc (NLM_F_EXCL: -EEXIST when one is there). hook_destroy with
 * attach_point INGRESS|EGRESS deletes the qdisc and every filter on it; with INGRESS or EGRESS
 * alone it flushes every filter of that side: whose ever they are.
 */
export const bpf_tc_hook_create = fn<[Buffer], number>('int bpf_tc_hook_create(uint8_t *hook)');
export const bpf_tc_hook_destroy = fn<[Buffer], number>('int bpf_tc_hook_destroy(uint8_t *hook)');
/**
 * opts: struct bpf_tc_opts, libbpf 1.1.2 layout (32 bytes: size_t sz @0, int prog_fd @8, __u32 flags
 * @12, prog_id @16, handle @20, priority @24, then `size_t :0` padding). attach (always a
 * direct-action cls_bpf filter, protocol ETH_P_ALL) and query fill prog_id, handle and priority;
 * detach and query need handle and priority, and prog_fd, prog_id and flags zero.
 */
export const bpf_tc_attach = fn<[Buffer, Buffer], number>('int bpf_tc_attach(const uint8_t *hook, _Inout_ uint8_t *opts)');
export const bpf_tc_detach = fn<[Buffer, Buffer], number>('int bpf_tc_detach(const uint8_t *hook, const uint8_t *opts)');
export const bpf_tc_query = fn<[Buffer, Buffer], number>('int bpf_tc_query(const uint8_t *hook, _Inout_ uint8_t *opts)');
