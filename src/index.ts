/**
 * skl as a library: everything the CLI does, typed, with the same errors.
 *
 *   import {attach, detach, status} from 'skl';
 *   await attach({pid: 1234, ports: [8081, 8082]});
 *
 * In-process mode: a server gives itself extra ports by passing its own listening socket's fd
 * (`server._handle.fd` in Node.js, see examples/self-attach.ts) without a pid.
 */
export {
  attach,
  attachForeground,
  detach,
  changePorts,
  status,
  type AttachOptions,
  type AttachResult,
  type AttachmentStatus,
  type CommonOptions,
  type DetachResult,
  type ForegroundAttachment,
  type PortsChange,
  type StatusReport,
} from './dispatcher/api.js';
export {parsePorts, compressPorts, parseAddress, parseListener, validateName, type AddressPrefix} from './dispatcher/input.js';
export {SklError, UsageError} from './sys/errors.js';
export {BpfError, NotSupportedError, PermissionError, VerifierError, NotFoundError} from './bpf/errors.js';
export {FfiLoadError} from './ffi/libc.js';
export * as xdp from './xdp/index.js';
export {XdpCounter, CounterSession, type XdpCounterOptions, type Counts, type Sample, type Summary} from './xdp/index.js';

import {changePorts, type CommonOptions, type PortsChange} from './dispatcher/api.js';

/** Add extra ports to an attachment, live. */
export const addPorts = (name: string, ports: number[], opts: CommonOptions & {force?: boolean} = {}): Promise<PortsChange> =>
  changePorts(name, 'add', ports, opts);
/** Remove extra ports from an attachment, live. */
export const removePorts = (name: string, ports: number[], opts: CommonOptions = {}): Promise<PortsChange> =>
  changePorts(name, 'remove', ports, opts);
