/** A BPF ELF object opened from bytes through libbpf, then loaded: typed Program and Map handles. */
import {libbpf} from '../ffi/index.js';
import {allocCopy, allocString, errno, viewOf} from '../ffi/libc.js';
import {BpfError, errorFor, PermissionError, VerifierError} from './errors.js';
import {errnoName} from './errno.js';
import {BpfMap} from './map.js';
import {Program} from './program.js';

const LOG_SIZE = 1 << 20;

/** Collect libbpf's own messages while `fn` runs (they carry context for errors). */
function withLibbpfLog<T>(fn: (log: string[]) => T): T {
  const log: string[] = [];
  libbpf.setLibbpfPrint((_level, msg) => log.push(msg.trimEnd()), 1);
  try {
    return fn(log);
  } finally {
    libbpf.setLibbpfPrint(undefined);
  }
}

export interface OpenOptions {
  /** Shown in errors. */
  name?: string;
  /** max_entries overrides, by map name, applied before load. */
  maxEntries?: Record<string, number>;
  /** Existing maps to use instead of creating new ones, by map name. */
  reuseMaps?: Record<string, BpfMap>;
  /** Programs of the object not to load (e.g. one the kernel cannot verify). */
  skipPrograms?: string[];
  /** expected_attach_type overrides, by program name, applied before load (Program.setExpectedAttachType). */
  expectedAttachTypes?: Record<string, number>;
}

export class BpfObject implements Disposable {
  private ptr: bigint | null;
  private readonly elf: {free: () => void};
  private loaded = false;
  private readonly programsByName = new Map<string, Program>();
  private readonly mapsByName = new Map<string, BpfMap>();

  private constructor(
    ptr: bigint,
    elf: {free: () => void},
    readonly name: string,
  ) {
    this.ptr = ptr;
    this.elf = elf;
  }

  /** Open (parse) an object and load it into the kernel. */
  static load(bytes: Uint8Array, opts: OpenOptions = {}): BpfObject {
    const obj = BpfObject.open(bytes, opts);
    try {
      for (const [name, n] of Object.entries(opts.maxEntries ?? {})) obj.setMaxEntries(name, n);
      for (const [name, map] of Object.entries(opts.reuseMaps ?? {})) obj.reuseMap(name, map);
      for (const name of opts.skipPrograms ?? []) obj.program(name).setAutoload(false);
      for (const [name, type] of Object.entries(opts.expectedAttachTypes ?? {})) obj.program(name).setExpectedAttachType(type);
      obj.loadIntoKernel();
      return obj;
    } catch (error) {
      obj.close();
      throw error;
    }
  }

  static open(bytes: Uint8Array, opts: OpenOptions = {}): BpfObject {
    const name = opts.name ?? 'BPF object';
    // libbpf keeps using the ELF image until load: it must outlive this call.
    const elf = allocCopy(bytes);
    const ptr = withLibbpfLog((log) => {
      const p = libbpf.bpf_object__open_mem(elf.ptr, bytes.length, null);
      if (p === null) {
        const e = errno();
        elf.free();
        const detail = log.length ? ` (${log[log.length - 1]})` : '';
        throw new BpfError(`cannot open ${name}: ${errnoName(e)}${detail}`, e, 'open');
      }
      return p;
    });
    return new BpfObject(ptr, elf, name);
  }

  private get handle(): bigint {
    if (this.ptr === null) throw new Error(`${this.name} is closed`);
    return this.ptr;
  }

  private rawMap(name: string): bigint {
    for (let m = libbpf.bpf_object__next_map(this.handle, null); m !== null; m = libbpf.bpf_object__next_map(this.handle, m)) {
      if (libbpf.bpf_map__name(m) === name) return m;
    }
    throw new BpfError(`${this.name} has no map named ${name}`, 2, 'find map');
  }

  setMaxEntries(mapName: string, n: number): void {
    const rc = libbpf.bpf_map__set_max_entries(this.rawMap(mapName), n);
    if (rc < 0) throw errorFor('resize map', -rc, mapName);
  }

  reuseMap(mapName: string, map: BpfMap): void {
    const rc = libbpf.bpf_map__reuse_fd(this.rawMap(mapName), map.fd);
    if (rc < 0) throw errorFor('reuse map', -rc, mapName);
  }

  /** Write into the initial value of .rodata (read-only globals), at a byte offset, before load. */
  setRodata(bytes: Uint8Array, offset = 0): void {
    const m = this.rawMap(`${this.objectPrefix()}.rodata`);
    const size: [number] = [0];
    const ptr = libbpf.bpf_map__initial_value(m, size);
    if (ptr === null || offset + bytes.length > size[0]) throw new BpfError(`.rodata of ${this.name} is too small`, 22, 'rodata');
    const view = viewOf(ptr, size[0]);
    view.set(bytes, offset);
  }

  private objectPrefix(): string {
    // libbpf names internal maps "<obj prefix>.rodata"; find the actual name.
    for (let m = libbpf.bpf_object__next_map(this.handle, null); m !== null; m = libbpf.bpf_object__next_map(this.handle, m)) {
      const n = libbpf.bpf_map__name(m);
      if (n.endsWith('.rodata')) return n.slice(0, -'.rodata'.length);
    }
    throw new BpfError(`${this.name} has no read-only globals`, 2, 'rodata');
  }

  private loadIntoKernel(): void {
    const logs: {prog: bigint; buf: {ptr: bigint; view: Uint8Array; free: () => void}}[] = [];
    try {
      for (let p = libbpf.bpf_object__next_program(this.handle, null); p !== null; p = libbpf.bpf_object__next_program(this.handle, p)) {
        const buf = allocString(LOG_SIZE);
        logs.push({prog: p, buf});
        libbpf.bpf_program__set_log_buf(p, buf.ptr, LOG_SIZE);
      }
      withLibbpfLog((log) => {
        const rc = libbpf.bpf_object__load(this.handle);
        if (rc >= 0) return;
        const e = -rc;
        // The verifier log first: a rejected program also fails with EACCES (e.g. "invalid access
        // to packet"); only a load that failed without a log is a missing privilege.
        for (const {prog, buf} of logs) {
          const end = buf.view.indexOf(0);
          const text = Buffer.from(buf.view.subarray(0, end < 0 ? buf.view.length : end)).toString();
          if (text.trim()) throw new VerifierError(libbpf.bpf_program__name(prog), e, text);
        }
        if (e === 1 || e === 13) throw new PermissionError(errorFor('load', e, this.name).message, e, 'load');
        const detail = log.filter((l) => !l.startsWith('libbpf: prog') || l.includes('failed')).slice(-3).join('; ');
        throw new BpfError(`cannot load ${this.name}: ${errnoName(e)}${detail ? ` (${detail})` : ''}`, e, 'load');
      });
    } finally {
      // Detach our buffers before freeing them (libbpf keeps only the pointer).
      for (const {prog, buf} of logs) {
        libbpf.bpf_program__set_log_buf(prog, 0n, 0);
        buf.free();
      }
    }
    this.loaded = true;
    this.elf.free();
  }

  program(name: string): Program {
    let prog = this.programsByName.get(name);
    if (prog) return prog;
    for (let p = libbpf.bpf_object__next_program(this.handle, null); p !== null; p = libbpf.bpf_object__next_program(this.handle, p)) {
      if (libbpf.bpf_program__name(p) === name) {
        prog = new Program(p, name);
        this.programsByName.set(name, prog);
        return prog;
      }
    }
    throw new BpfError(`${this.name} has no program named ${name}`, 2, 'find program');
  }

  map(name: string): BpfMap {
    let map = this.mapsByName.get(name);
    if (map) return map;
    if (!this.loaded) throw new BpfError(`${this.name} is not loaded`, 22, 'map');
    const m = this.rawMap(name);
    map = new BpfMap(
      libbpf.bpf_map__fd(m),
      name,
      libbpf.bpf_map__type(m),
      libbpf.bpf_map__key_size(m),
      libbpf.bpf_map__value_size(m),
      libbpf.bpf_map__max_entries(m),
      false,
    );
    this.mapsByName.set(name, map);
    return map;
  }

  /** Close the object (and with it every program and map fd it owns). Close links first. */
  close(): void {
    if (this.ptr === null) return;
    for (const m of this.mapsByName.values()) m.close(); // their memory mappings, if any
    libbpf.bpf_object__close(this.ptr);
    this.ptr = null;
    this.elf.free();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

