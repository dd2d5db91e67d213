/** A BPF map by fd: from a loaded object, a pin, or an id. */
import {libbpf} from '../ffi/index.js';
import {close, MAP_FAILED, MAP_SHARED, mmap, munmap, PROT_READ, PROT_WRITE, viewOf} from '../ffi/libc.js';
import {errorFor} from './errors.js';
import {mapInfoByFd, type MapInfo} from './info.js';

export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;
export const BPF_EXIST = 2;

const BPF_MAP_TYPE_ARRAY = 2;
const PERCPU_TYPES = new Set([5 /* PERCPU_HASH */, 6 /* PERCPU_ARRAY */, 10 /* LRU_PERCPU_HASH */]);
let possibleCpus: number | undefined;
export function numPossibleCpus(): number {
  possibleCpus ??= libbpf.libbpf_num_possible_cpus();
  return possibleCpus;
}

export class BpfMap {
  readonly perCpu: boolean;
  /** Bytes of one CPU's value in a per-CPU map (value size rounded up to 8). */
  readonly perCpuStride: number;
  private closed = false;
  private mapping: {ptr: bigint; size: number; view: Buffer} | null | undefined;

  constructor(
    readonly fd: number,
    readonly name: string,
    readonly type: number,
    readonly keySize: number,
    readonly valueSize: number,
    readonly maxEntries: number,
    /** false for maps owned by a BpfObject (closed with it). */
    private readonly ownsFd: boolean,
    /** the kernel's id of the map, when known (0: not asked, a map of a BpfObject) */
    readonly id = 0,
  ) {
    this.perCpu = PERCPU_TYPES.has(type);
    this.perCpuStride = Math.ceil(valueSize / 8) * 8;
  }

  /** Open a pinned map. */
  static openPinned(path: string): BpfMap {
    const fd = libbpf.bpf_obj_get(path);
    if (fd < 0) throw errorFor('open pinned map', -fd, path);
    return BpfMap.fromFd(fd, `pinned map ${path}`);
  }

  /** Open a map by id (e.g. to share another process's map; needs CAP_SYS_ADMIN). */
  static openById(id: number): BpfMap {
    const fd = libbpf.bpf_map_get_fd_by_id(id);
    if (fd < 0) throw errorFor('open map', -fd, `id ${id}`);
    return BpfMap.fromFd(fd, `map id ${id}`);
  }

  /** Create a map (not pinned: the returned handle owns it until pinned or stored elsewhere). */
  static create(type: number, name: string, keySize: number, valueSize: number, maxEntries: number, mapFlags = 0): BpfMap {
    // struct bpf_map_create_opts, libbpf 1.1.2: size_t sz @0, map_flags @28, 48 bytes
    const opts = Buffer.alloc(48);
    opts.writeBigUInt64LE(48n, 0);
    opts.writeUInt32LE(mapFlags, 28);
    const fd = libbpf.bpf_map_create(type, name, keySize, valueSize, maxEntries, opts);
    if (fd < 0) throw errorFor('create map', -fd, name);
    return BpfMap.fromFd(fd, `map ${name}`);
  }

  /** Wrap an fd (taking ownership). */
  static fromFd(fd: number, what = 'map'): BpfMap {
    let info: MapInfo;
    try {
      info = mapInfoByFd(fd);
    } catch (error) {
      close(fd);
      throw errorFor('inspect', (error as {errno?: number}).errno ?? 22, what);
    }
    return new BpfMap(fd, info.name, info.type, info.keySize, info.valueSize, info.maxEntries, true, info.id);
  }

  /** Size of the buffer lookup() returns (all CPUs for per-CPU maps). */
  get lookupSize(): number {
    return this.perCpu ? this.perCpuStride * numPossibleCpus() : this.valueSize;
  }

  /** The value of `key`, or undefined when absent. Per-CPU maps return all CPUs' values back to back. */
  lookup(key: Buffer): Buffer | undefined {
    const value = Buffer.alloc(this.lookupSize);
    const rc = libbpf.bpf_map_lookup_elem(this.fd, key, value);
    if (rc < 0) {
      if (-rc === 2) return undefined;
      throw errorFor('map lookup', -rc, this.name);
    }
    return value;
  }

  /** Per-CPU values of `key`, one Buffer per CPU. */
  lookupPerCpu(key: Buffer): Buffer[] | undefined {
    if (!this.perCpu) throw new TypeError(`map ${this.name} is not per-CPU`);
    const all = this.lookup(key);
    if (!all) return undefined;
    const out: Buffer[] = [];
    for (let off = 0; off < all.length; off += this.perCpuStride) out.push(all.subarray(off, off + this.valueSize));
    return out;
  }

  /** Sum of the u64 fields of a per-CPU value across CPUs. */
  sumPerCpuU64(key: Buffer): bigint[] | undefined {
    const cpus = this.lookupPerCpu(key);
    if (!cpus) return undefined;
    const fields = Math.floor(this.valueSize / 8);
    const sums: bigint[] = new Array(fields).fill(0n);
    for (const v of cpus) for (let i = 0; i < fields; i++) sums[i] += v.readBigUInt64LE(i * 8);
    return sums;
  }

  update(key: Buffer, value: Buffer, flags = BPF_ANY): void {
    const rc = libbpf.bpf_map_update_elem(this.fd, key, value, flags);
    if (rc < 0) throw errorFor('map update', -rc, this.name);
  }

  /** Delete `key`; returns false when it was absent. */
  delete(key: Buffer): boolean {
    const rc = libbpf.bpf_map_delete_elem(this.fd, key);
    if (rc < 0) {
      if (-rc === 2) return false;
      throw errorFor('map delete', -rc, this.name);
    }
    return true;
  }

  /** Iterate keys (snapshot semantics of BPF_MAP_GET_NEXT_KEY). */
  *keys(): Generator<Buffer> {
    let prev: Buffer | null = null;
    for (;;) {
      const next = Buffer.alloc(this.keySize);
      const rc = libbpf.bpf_map_get_next_key(this.fd, prev, next);
      if (rc < 0) {
        if (-rc === 2) return;
        throw errorFor('map iterate', -rc, this.name);
      }
      yield next;
      prev = next;
    }
  }

  /** Update `count` entries at once: keys and values packed back to back. */
  updateBatch(keys: Buffer, values: Buffer, count: number, flags = BPF_ANY): void {
    if (count === 0) return;
    const opts = Buffer.alloc(24);
    opts.writeBigUInt64LE(24n, 0);
    opts.writeBigUInt64LE(BigInt(flags), 8);
    const n: [number] = [count];
    const rc = libbpf.bpf_map_update_batch(this.fd, keys, values, n, opts);
    if (rc < 0) throw errorFor('map batch update', -rc, `${this.name} (${n[0]} of ${count} done)`);
  }

  /**
   * Read every entry with BPF_MAP_LOOKUP_BATCH (one syscall per `chunk` entries).
   * Calls `each(keys, values, count)` with packed keys/values.
   */
  lookupAll(each: (keys: Buffer, values: Buffer, count: number) => void, chunk = this.maxEntries): void {
    const n = Math.max(1, Math.min(chunk, this.maxEntries));
    const keys = Buffer.alloc(n * this.keySize);
    const values = Buffer.alloc(n * this.lookupSize);
    const opts = Buffer.alloc(24);
    opts.writeBigUInt64LE(24n, 0);
    let inBatch: Buffer | null = null;
    for (;;) {
      const outBatch = Buffer.alloc(Math.max(4, this.keySize));
      const count: [number] = [n];
      const rc = libbpf.bpf_map_lookup_batch(this.fd, inBatch, outBatch, keys, values, count, opts);
      if (rc < 0 && -rc !== 2) throw errorFor('map batch lookup', -rc, this.name);
      if (count[0] > 0) each(keys, values, count[0]);
      if (rc < 0) return; // ENOENT: that was the last batch
      inBatch = outBatch;
    }
  }

  pin(path: string): void {
    const rc = libbpf.bpf_obj_pin(this.fd, path);
    if (rc < 0) throw errorFor('pin map', -rc, `${this.name} at ${path}`);
  }

  /**
   * The values of an ARRAY created with BPF_F_MMAPABLE, as memory shared with the kernel: element
   * i's value is at byte i * elementStride. Reads and writes are plain memory accesses (aligned
   * 4- and 8-byte ones are atomic, as a single-element update is). undefined when the map cannot be
   * mapped (another type, or created without the flag, e.g. by an older skl). Unmapped by close().
   */
  mapped(): Buffer | undefined {
    if (this.mapping === undefined) {
      this.mapping = null;
      if (this.type === BPF_MAP_TYPE_ARRAY && !this.closed) {
        const size = this.elementStride * this.maxEntries;
        const ptr = mmap(null, size, PROT_READ | PROT_WRITE, MAP_SHARED, this.fd, 0);
        if (ptr !== MAP_FAILED) {
          const view = viewOf(ptr, size);
          this.mapping = {ptr, size, view: Buffer.from(view.buffer, view.byteOffset, view.byteLength)};
        }
      }
    }
    return this.mapping?.view;
  }

  /** Bytes between consecutive values of an ARRAY in memory (the kernel rounds them up to 8). */
  get elementStride(): number {
    return Math.ceil(this.valueSize / 8) * 8;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.mapping) munmap(this.mapping.ptr, this.mapping.size);
    this.mapping = null;
    if (this.ownsFd) close(this.fd);
  }
}

export const u32Key = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
};
