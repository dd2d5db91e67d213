/** Take a copy of another process's file descriptor: pidfd_open + pidfd_getfd (raw syscalls). */
import {libc} from '../ffi/index.js';
import {NotSupportedError} from '../bpf/errors.js';
import {SklError} from './errors.js';

/** A new fd in this process referring to the same open file as `fd` of process `pid`. Close it. */
export function duplicateFd(pid: number, fd: number): number {
  const pidfd = libc.pidfd_open(pid, 0);
  if (pidfd < 0) {
    const e = libc.errno();
    if (e === 3) throw new SklError(`process ${pid} does not exist`);
    if (e === 38) throw new NotSupportedError('pidfd_open(2)', '5.3');
    throw new SklError(`pidfd_open(${pid}) failed: errno ${e}`);
  }
  try {
    const dup = libc.pidfd_getfd(pidfd, fd, 0);
    if (dup < 0) {
      const e = libc.errno();
      if (e === 1) throw new SklError(`not permitted to take fd ${fd} of process ${pid}: needs ptrace access (CAP_SYS_PTRACE): run as root`);
      if (e === 9) throw new SklError(`process ${pid} has no fd ${fd} (it was closed)`);
      if (e === 3) throw new SklError(`process ${pid} exited`);
      if (e === 38) throw new NotSupportedError('pidfd_getfd(2)', '5.6');
      throw new SklError(`pidfd_getfd(${pid}, ${fd}) failed: errno ${e}`);
    }
    return dup;
  } finally {
    libc.close(pidfd);
  }
}

/** Whether pidfd_getfd exists (probe on ourselves with stdin's fd number). */
export function pidfdGetfdAvailable(): boolean {
  const pidfd = libc.pidfd_open(process.pid, 0);
  if (pidfd < 0) return false;
  try {
    const dup = libc.pidfd_getfd(pidfd, 0, 0);
    if (dup >= 0) {
      libc.close(dup);
      return true;
    }
    return libc.errno() !== 38;
  } finally {
    libc.close(pidfd);
  }
}
