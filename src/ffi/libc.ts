/**
 * koffi declarations of libc: raw syscalls (pidfd), fds, statfs, interfaces, sockets, setns, flock.
 * Raw bindings only; src/sys/ wraps them.
 */
import koffi from 'koffi';

/** The FFI layer could not load a system library (or it is too old). */
export class FfiLoadError extends Error {
  override name = 'FfiLoadError';
}

type Lib = ReturnType<typeof koffi.load>;
let lib: Lib | undefined;
/** libc.so.6, loaded on the first call of any binding (not at import: see `fn`). */
const libc = (): Lib => (lib ??= koffi.load('libc.so.6'));

type F<A extends unknown[], R> = (...args: A) => R;
/**
 * A binding, declared on its first call: importing this module (every skl command does) costs no
 * declaration that the command never calls.
 */
const fn = <A extends unknown[], R>(decl: string): F<A, R> => {
  let f: F<A, R> | undefined;
  return (...args: A): R => (f ??= libc().func(decl) as F<A, R>)(...args);
};

/** errno of the last FFI call on this thread (read it right after the failing call). */
export const errno = (): number => koffi.errno();

const syscall = fn<unknown[], number | bigint>('long syscall(long nr, ...)');
const SYS_pidfd_open = 434;
const SYS_pidfd_getfd = 438;
export const pidfd_open = (pid: number, flags: number): number =>
  Number(syscall(SYS_pidfd_open, 'int', pid, 'unsigned int', flags));
export const pidfd_getfd = (pidfd: number, targetfd: number, flags: number): number =>
  Number(syscall(SYS_pidfd_getfd, 'int', pidfd, 'int', targetfd, 'unsigned int', flags));

export const close = fn<[number], number>('int close(int fd)');
export const open = fn<[string, number, number], number>('int open(const char *path, int flags, uint32_t mode)');
/** struct statfs is 120 bytes on x86_64/aarch64; f_type is the first long. */
export const statfs = fn<[string, Buffer], number>('int statfs(const char *path, _Out_ uint8_t *buf)');
export const if_nametoindex = fn<[string], number>('unsigned int if_nametoindex(const char *ifname)');
export const setns = fn<[number, number], number>('int setns(int fd, int nstype)');
export const flock = fn<[number, number], number>('int flock(int fd, int operation)');
export const getsockopt = fn<[number, number, number, Buffer, [number]], number>(
  'int getsockopt(int fd, int level, int optname, _Out_ void *optval, _Inout_ uint32_t *optlen)',
);
/** addr: a sockaddr_storage-sized buffer (128 bytes). */
export const getsockname = fn<[number, Buffer, [number]], number>('int getsockname(int fd, _Out_ uint8_t *addr, _Inout_ uint32_t *addrlen)');
const ioctlv = fn<unknown[], number>('int ioctl(int fd, unsigned long request, ...)');
/** ioctl without argument (NS_GET_NSTYPE, SIOCGSKNS returns a new fd). */
export const ioctl0 = (fd: number, request: number): number => ioctlv(fd, request);
/** ioctl with a pointer to a struct it reads and fills (struct ifreq for SIOCGIFHWADDR). */
export const ioctlBuf = fn<[number, number, Buffer], number>('int ioctl(int fd, unsigned long request, _Inout_ uint8_t *arg)');
export const socket = fn<[number, number, number], number>('int socket(int domain, int type, int protocol)');
export const send = fn<[number, Buffer, number, number], number>('long send(int fd, const void *buf, size_t len, int flags)');
export const recv = fn<[number, Buffer, number, number], number>('long recv(int fd, _Out_ void *buf, size_t len, int flags)');
export const bind = fn<[number, Buffer, number], number>('int bind(int fd, const void *addr, uint32_t addrlen)');
/** msgvec: native memory (see allocZero) holding `vlen` struct mmsghdr (64 bytes each on LP64). */
export const sendmmsg = fn<[number, bigint, number, number], number>('int sendmmsg(int fd, void *msgvec, unsigned int vlen, int flags)');
export const strerror = fn<[number], string>('const char *strerror(int errnum)');
export const mount = fn<[string, string, string, number, null], number>(
  'int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const void *data)',
);
export const geteuid = fn<[], number>('uint32_t geteuid(void)');
export const mmap = fn<[bigint | null, number, number, number, number, number], bigint>(
  'void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset)',
);
export const munmap = fn<[bigint, number], number>('int munmap(void *addr, size_t length)');
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 1;
export const MAP_FAILED = 0xffffffffffffffffn;

const vsnprintf_ = fn<[Buffer, number, bigint, bigint], number>('int vsnprintf(_Out_ char *buf, size_t size, void *fmt, void *ap)');
/** Format a C format string (native memory) with a va_list (a pointer on x86_64/aarch64 SysV). */
export function vsnprintf(fmt: bigint, ap: bigint): string {
  const buf = Buffer.alloc(2048);
  const n = vsnprintf_(buf, buf.length, fmt, ap);
  return buf.subarray(0, Math.max(0, Math.min(n, buf.length - 1))).toString();
}

/** Memory that outlives a call (libbpf keeps using open_mem's buffer until load). */
export function allocCopy(data: Uint8Array): {ptr: bigint; free: () => void} {
  const ptr = koffi.alloc('uint8_t', Math.max(1, data.length)) as bigint;
  new Uint8Array(koffi.view(ptr, data.length)).set(data);
  let freed = false;
  return {
    ptr,
    free: () => {
      if (!freed) koffi.free(ptr);
      freed = true;
    },
  };
}
export function allocZero(size: number): {ptr: bigint; view: Uint8Array; free: () => void} {
  const m = allocString(size);
  m.view.fill(0);
  return m;
}
/**
 * Native memory for a C string the callee writes (a verifier log): only its first byte is written
 * here, so an empty string until the callee writes one. (koffi allocates with calloc: a large
 * buffer comes as fresh pages the kernel zeroes when first touched; filling a 1 MiB log per
 * program with zeros again touched every page of it, a good part of loading a BPF object.)
 */
export function allocString(size: number): {ptr: bigint; view: Uint8Array; free: () => void} {
  const ptr = koffi.alloc('uint8_t', size) as bigint;
  const view = new Uint8Array(koffi.view(ptr, size));
  view[0] = 0;
  return {ptr, view, free: () => koffi.free(ptr)};
}
/** A view of native memory (e.g. a map's initial value). */
export function viewOf(ptr: bigint, size: number): Uint8Array {
  return new Uint8Array(koffi.view(ptr, size));
}
export const unshare = fn<[number], number>('int unshare(int flags)');
export const listen = fn<[number, number], number>('int listen(int fd, int backlog)');

// --- interfaces (src/sys/interfaces.ts) ---
const if_nameindex_ = fn<[], bigint | null>('void *if_nameindex(void)');
const if_freenameindex_ = fn<[bigint], void>('void if_freenameindex(void *ptr)');
/** sizeof(struct if_nameindex) on LP64: unsigned int if_index @0, char *if_name @8. */
const IF_NAMEINDEX_SIZE = 16;
/**
 * if_nameindex(3): every interface (index, name) of the calling thread's network namespace, or null
 * (errno set). glibc asks the kernel with RTM_GETLINK over a netlink socket it opens for the call,
 * and a socket belongs to the namespace of the thread that creates it. The array ends with
 * {0, NULL}; it is freed here.
 */
export function ifNameIndex(): {index: number; name: string}[] | null {
  const ptr = if_nameindex_();
  if (ptr === null) return null;
  try {
    const out: {index: number; name: string}[] = [];
    for (let off = 0; ; off += IF_NAMEINDEX_SIZE) {
      const index = koffi.decode(ptr, off, 'uint32_t') as number;
      if (index === 0) return out;
      out.push({index, name: koffi.decode(ptr, off + 8, 'const char *') as string});
    }
  } finally {
    if_freenameindex_(ptr);
  }
}
/** if_indextoname(3): ifname (IF_NAMESIZE = 16 bytes) receives the name; null when no such interface. */
export const if_indextoname = fn<[number, Buffer], string | null>('const char *if_indextoname(unsigned int ifindex, _Out_ char *ifname)');
