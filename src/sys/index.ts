export {SklError, UsageError} from './errors.js';
export {Netns, socketNetnsIno, interfaceNames, ifindexOf} from './netns.js';
export {BPFFS_MAGIC, DEFAULT_BPFFS, ensureBpffs, fsMagic, isBpffs, mkdirBpffs, type BpffsStatus} from './bpffs.js';
export {duplicateFd, pidfdGetfdAvailable} from './pidfd.js';
export {lock, withLock} from './lock.js';
export * from './sockets.js';
export {processAlive, processInfo, type ProcessInfo} from './proc.js';
export {ipNetnsExecName, parseMountinfo, type MountEntry} from './mounts.js';
export {listInterfaces, interfaceName, type NetInterface} from './interfaces.js';
