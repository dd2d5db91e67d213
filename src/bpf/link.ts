/** A bpf_link: attached program. Closing a link that is not pinned detaches it. */
import {unlinkSync} from 'node:fs';
import {libbpf} from '../ffi/index.js';
import {close, errno} from '../ffi/libc.js';
import {errorFor} from './errors.js';
import {linkInfoByFd, type LinkInfo} from './info.js';

export class Link {
  /** A libbpf `struct bpf_link *`, or null for a bare link fd (bpf_link_create, by id) or once closed. */
  private ptr: bigint | null;
  /** A bare link fd this object owns (no libbpf bpf_link around it), or null. */
  private rawFd: number | null = null;
  private pinnedAt: string | null = null;

  /** Wrap a libbpf `struct bpf_link *`, or (`{fd}`) take ownership of a bare link fd. */
  constructor(
    ptr: bigint | {fd: number},
    readonly description: string,
  ) {
    if (typeof ptr === 'bigint') {
      this.ptr = ptr;
    } else {
      this.ptr = null;
      this.rawFd = ptr.fd;
    }
  }

  /** Open a pinned link (a new reference; closing it does not detach). */
  static openPinned(path: string): Link {
    const ptr = libbpf.bpf_link__open(path);
    if (ptr === null) throw errorFor('open pinned link', errno(), path);
    return new Link(ptr, path);
  }

  /**
   * Open a pinned link as a bare fd: a reference that can be pinned again at another path (libbpf
   * refuses to pin a link it opened from a pin a second time).
   */
  static openPinnedFd(path: string): Link {
    const fd = libbpf.bpf_obj_get(path);
    if (fd < 0) throw errorFor('open pinned link', errno(), path);
    return new Link({fd}, path);
  }

  /**
   * Attach a pinned program to a target (a cgroup fd for cgroup attach types) with a new bpf_link
   * (bpf_link_create). The caller pins or closes it.
   */
  static createForPinnedProgram(progPath: string, targetFd: number, attachType: number, what: string): Link {
    const pfd = libbpf.bpf_obj_get(progPath);
    if (pfd < 0) throw errorFor('open pinned program', errno(), progPath);
    try {
      const opts = Buffer.alloc(64); // struct bpf_link_create_opts (libbpf 1.1.2): sz, then zeros
      opts.writeBigUInt64LE(64n, 0);
      const fd = libbpf.bpf_link_create(pfd, targetFd, attachType, opts);
      if (fd < 0) throw errorFor('attach', -fd, what);
      return new Link({fd}, what);
    } finally {
      close(pfd);
    }
  }

  /** Open a link by id (a new reference; closing it does not detach, `detach()` does). */
  static openById(id: number): Link {
    const fd = libbpf.bpf_link_get_fd_by_id(id);
    if (fd < 0) throw errorFor('open link', -fd, `id ${id}`);
    return new Link({fd}, `link id ${id}`);
  }

  private get closed(): boolean {
    return this.ptr === null && this.rawFd === null;
  }

  private check(): void {
    if (this.closed) throw new Error(`link ${this.description} is closed`);
  }

  get fd(): number {
    this.check();
    return this.ptr !== null ? libbpf.bpf_link__fd(this.ptr) : (this.rawFd as number);
  }

  info(): LinkInfo {
    return linkInfoByFd(this.fd);
  }

  pin(path: string): void {
    this.check();
    const rc = this.ptr !== null ? libbpf.bpf_link__pin(this.ptr, path) : libbpf.bpf_obj_pin(this.fd, path);
    if (rc < 0) throw errorFor('pin link', -rc, `${this.description} at ${path}`);
    this.pinnedAt = path;
  }

  unpin(): void {
    this.check();
    if (this.ptr !== null) {
      const rc = libbpf.bpf_link__unpin(this.ptr);
      if (rc < 0) throw errorFor('unpin link', -rc, this.description);
      return;
    }
    if (this.pinnedAt === null) return;
    try {
      unlinkSync(this.pinnedAt);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).errno;
      throw errorFor('unpin link', code === undefined ? 22 : -code, `${this.description} at ${this.pinnedAt}`);
    }
    this.pinnedAt = null;
  }

  /** Replace the link's program atomically (bpf_link_update): at no moment is nothing attached. */
  update(progFd: number, what = 'program'): void {
    this.check();
    const rc = libbpf.bpf_link_update(this.fd, progFd, null);
    if (rc < 0) throw errorFor('update link', -rc, `${this.description} to ${what}`);
  }

  /** Detach the program now, whoever else holds the link. */
  detach(): void {
    this.check();
    const rc = this.ptr !== null ? libbpf.bpf_link__detach(this.ptr) : libbpf.bpf_link_detach(this.fd);
    if (rc < 0) throw errorFor('detach link', -rc, this.description);
  }

  /** Release this reference (detaches only when nothing else — a pin, another fd — holds the link). */
  close(): void {
    if (this.ptr !== null) {
      libbpf.bpf_link__destroy(this.ptr);
      this.ptr = null;
    }
    if (this.rawFd !== null) {
      close(this.rawFd);
      this.rawFd = null;
    }
  }
}
