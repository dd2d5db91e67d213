export {BpfObject, type OpenOptions} from './object.js';
export {BpfMap, BPF_ANY, BPF_EXIST, BPF_NOEXIST, u32Key, numPossibleCpus} from './map.js';
export {Program, RawProgram, BPF_PROG_TYPE_SK_LOOKUP, BPF_PROG_TYPE_XDP, type TestRunInput, type TestRunResult} from './program.js';
export {Link} from './link.js';
export {BpfError, NotFoundError, NotSupportedError, PermissionError, VerifierError, errorFor} from './errors.js';
export {errnoName} from './errno.js';
export {probe, probeProgType, requireFeature, FEATURES, MIN_KERNEL, type Feature, type FeatureInfo, type ProbeResult} from './features.js';
export {linkIds, linkInfoByFd, mapIds, mapInfoByFd, progInfoByFd, progMapIds, BPF_LINK_TYPE_NETNS, BPF_LINK_TYPE_XDP, BPF_LINK_TYPE_TCX, type LinkInfo, type MapInfo} from './info.js';
export {libbpfVersion} from './version.js';
export {
  xdpQuery,
  xdpAttached,
  xdpDetachMode,
  progNameById,
  XDP_FLAGS_SKB_MODE,
  XDP_FLAGS_DRV_MODE,
  XDP_FLAGS_HW_MODE,
  XDP_FLAGS_UPDATE_IF_NOEXIST,
  XDP_MODE_FLAGS,
  type XdpMode,
  type XdpState,
} from './xdp.js';
export {
  attachTc,
  listTcFilters,
  tcxProgramIds,
  clsactInterfaces,
  tcxSupported,
  TcAttachment,
  TcxLink,
  ClsactFilter,
  BPF_PROG_TYPE_SCHED_CLS,
  BPF_TCX_INGRESS,
  BPF_TCX_EGRESS,
  TC_ACT_UNSPEC,
  TC_ACT_OK,
  TC_ACT_SHOT,
  type TcDirection,
  type TcKind,
  type TcProgram,
  type TcAttachOptions,
  type TcRemoval,
  type ClsactFilterRecord,
  type TcFilter,
} from './tc.js';
