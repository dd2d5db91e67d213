export {
  XdpCounter,
  XdpBusyError,
  XdpModeError,
  XDP_MODE_REQUESTS,
  PROGRAM_NAME,
  MAP_NAME,
  defaultObjectBytes,
  describeForeign,
  modeLabel,
  type ForeignProgram,
  type XdpCounterOptions,
  type XdpModeRequest,
} from './counter.js';
export {CounterSession, perSecond, type Counts, type Sample, type StopReason, type Summary} from './stats.js';
export {linkHolders, type LinkHolder} from './holders.js';
export type {XdpMode} from '../bpf/index.js';
export {formatBitRate, formatBytes, formatClock, formatCount, formatDuration} from './format.js';
export {watch, type CounterSource, type WatchOptions} from './watch.js';
