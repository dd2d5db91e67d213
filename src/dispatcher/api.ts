/**
 * The dispatcher as a library: attach, detach, ports add/remove, status. The CLI is a thin layer
 * over these; every function validates everything before it changes anything.
 */
export {attach, attachForeground, type AttachOptions, type AttachResult, type BindingStatus, type CommonOptions, type ForegroundAttachment} from './attach.js';
export {detach, changePorts, type DetachResult, type PortsChange, type PortsOptions} from './manage.js';
export {status, type AttachmentStatus, type ServiceStatus, type SocketStatus, type StatusReport} from './status.js';
export {resolve as resolveBinding, type Binding, type BindingSpec} from './bindings.js';
export {parseUdpReplies, type UdpRepliesMode} from './replies.js';
export type {UncoveredInterface} from './interfaces.js';
