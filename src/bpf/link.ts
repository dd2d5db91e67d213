/** A bpf_link: attached program. Closing a link that is not pinned detaches it. */
import {libbpf} from '../ffi/index.js';
import {errno} from '../ffi/libc.js';
import {errorFor} from './errors.js';
import {linkInfoByFd, type LinkInfo} from './info.js';

export class Link {
  private ptr: bigint | null;

  constructor(
    ptr: bigint,
    readonly description: string,
  ) {
    this.ptr = ptr;
  }

  /** Open a pinned link (a new reference; closing it does not detach). */
  static openPinned(path: string): Link {
    const ptr = libbpf.bpf_link__open(path);
    if (ptr === null) throw errorFor('open pinned link', errno(), path);
    return new Link(ptr, path);
  }

  private get handle(): bigint {
    if (this.ptr === null) throw new Error(`link ${this.description} is closed`);
    return this.ptr;
  }

  get fd(): number {
    return libbpf.bpf_link__fd(this.handle);
  }

  info(): LinkInfo {
    return linkInfoByFd(this.fd);
  }

  pin(path: string): void {
    const rc = libbpf.bpf_link__pin(this.handle, path);
    if (rc < 0) throw errorFor('pin link', -rc, `${this.description} at ${path}`);
  }

  unpin(): void {
    const rc = libbpf.bpf_link__unpin(this.handle);
    if (rc < 0) throw errorFor('unpin link', -rc, this.description);
  }

  /** Detach the program now, whoever else holds the link. */
  detach(): void {
    const rc = libbpf.bpf_link__detach(this.handle);
    if (rc < 0) throw errorFor('detach link', -rc, this.description);
  }

  /** Release this reference (detaches only when nothing else — a pin, another fd — holds the link). */
  close(): void {
    if (this.ptr === null) return;
    libbpf.bpf_link__destroy(this.ptr);
    this.ptr = null;
  }
}
