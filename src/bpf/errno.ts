import {libbpfErrorText} from '../ffi/libbpf.js';
import {strerror} from '../ffi/libc.js';

const NAMES: Record<number, string> = {
  1: 'EPERM', 2: 'ENOENT', 3: 'ESRCH', 4: 'EINTR', 7: 'E2BIG', 9: 'EBADF', 11: 'EAGAIN', 12: 'ENOMEM',
  13: 'EACCES', 14: 'EFAULT', 16: 'EBUSY', 17: 'EEXIST', 19: 'ENODEV', 20: 'ENOTDIR', 22: 'EINVAL',
  24: 'EMFILE', 28: 'ENOSPC', 38: 'ENOSYS', 39: 'ENOTEMPTY', 88: 'ENOTSOCK', 91: 'EPROTOTYPE',
  94: 'ESOCKTNOSUPPORT', 95: 'EOPNOTSUPP', 97: 'EAFNOSUPPORT', 98: 'EADDRINUSE', 524: 'ENOTSUPP',
};

/** "EINVAL: Invalid argument" (or libbpf's own text for its 4000+ codes). */
export function errnoName(errno: number): string {
  if (errno >= 4000) return `${libbpfErrorText(errno)} (libbpf error ${errno})`;
  const name = NAMES[errno] ?? `errno ${errno}`;
  return `${name}: ${strerror(errno)}`;
}
