export * as libbpf from './libbpf.js';
export * as libc from './libc.js';
export {FfiLoadError} from './libc.js';
