/** Errors of the loader: each carries the errno and what was being done. */
import {errnoName} from './errno.js';

export class BpfError extends Error {
  override name = 'BpfError';
  constructor(
    message: string,
    readonly errno: number,
    readonly op: string,
  ) {
    super(message);
  }
}

/** The kernel (or libbpf) refused for lack of privilege. */
export class PermissionError extends BpfError {
  override name = 'PermissionError';
}

/** The kernel lacks a feature skl needs. */
export class NotSupportedError extends BpfError {
  override name = 'NotSupportedError';
  constructor(
    readonly feature: string,
    readonly minKernel: string,
    detail = '',
  ) {
    super(`${feature} is not supported by this kernel${detail ? ` (${detail})` : ''}: it needs Linux ≥${minKernel}`, 95, 'probe');
  }
}

/** The verifier (or libbpf) rejected a program; `log` holds the verifier log. */
export class VerifierError extends BpfError {
  override name = 'VerifierError';
  constructor(
    readonly program: string,
    errno: number,
    readonly log: string,
  ) {
    const tail = log.trimEnd().split('\n').filter(Boolean).slice(-5).join('\n  ');
    super(`program ${program} was rejected by the verifier (${errnoName(errno)})${tail ? `:\n  ${tail}` : ''}`, errno, 'load');
  }
}

/** A pinned object does not exist. */
export class NotFoundError extends BpfError {
  override name = 'NotFoundError';
}

const PRIV_HINT = 'run as root (or grant CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN/CAP_PERFMON)';

/** Build the right error class for a failed call. */
export function errorFor(op: string, errno: number, context = ''): BpfError {
  const what = `${op}${context ? ` ${context}` : ''}`;
  if (errno === 1 || errno === 13) {
    return new PermissionError(`${what}: permission denied (${errnoName(errno)}); ${PRIV_HINT}`, errno, op);
  }
  if (errno === 2) return new NotFoundError(`${what}: not found (ENOENT)`, errno, op);
  return new BpfError(`${what}: ${errnoName(errno)}`, errno, op);
}
