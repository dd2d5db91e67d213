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
  type ServiceStatus,
  type SocketStatus,
  type BindingStatus,
  type PortsOptions,
  resolveBinding,
  type Binding,
  type BindingSpec,
  type CommonOptions,
  type DetachResult,
  type ForegroundAttachment,
  type PortsChange,
  type StatusReport,
  parseUdpReplies,
  type UdpRepliesMode,
  type UncoveredInterface,
} from './dispatcher/api.js';
export {parsePorts, parsePortSpec, parseProtos, compressPorts, parseAddress, parseListener, validateName, type AddressPrefix, type PortSpec} from './dispatcher/input.js';
export {SklError, UsageError} from './sys/errors.js';
export {BpfError, NotSupportedError, PermissionError, VerifierError, NotFoundError} from './bpf/errors.js';
export {FfiLoadError} from './ffi/libc.js';
export * as xdp from './xdp/index.js';
export {XdpCounter, CounterSession, type XdpCounterOptions, type Counts, type Sample, type Summary} from './xdp/index.js';

import {changePorts, type PortsChange, type PortsOptions} from './dispatcher/api.js';

/** Add extra ports to a service's bindings (every prefix it binds, or opts.addresses), live. */
export const addPorts = (name: string, ports: number[] | 'all', opts: PortsOptions = {}): Promise<PortsChange> => changePorts(name, 'add', ports, opts);
/** Remove extra ports from a service's bindings, live. */
export const removePorts = (name: string, ports: number[] | 'all', opts: PortsOptions = {}): Promise<PortsChange> => changePorts(name, 'remove', ports, opts);
