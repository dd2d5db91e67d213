/**
 * `skl apply` as one crash-safe transaction per namespace. Each of apply's steps is safe by itself
 * (a service is written pending and made ready last, a removal stops the service first, a binding
 * that moves is one store), but a plan is many steps: an apply killed half-way would leave some
 * services changed and others not. So before its first change apply records its intent — the
 * namespace's part of the validated desired state and whether it prunes — and removes the record
 * once the namespace matches. The next skl acting on that namespace (Store.repair, under the lock:
 * every write command and `status`) finds the record, finishes the apply, prints one notice, and
 * removes the record.
 *
 * Roll forward, not back. The desired state was validated whole, under the lock, before the first
 * change; apply is idempotent, so finishing is re-planning it against what is there now and making
 * only what still differs. Rolling back would need the state before, and some of it cannot be
 * rebuilt from the pins: a removed service's sockets are gone from the SOCKMAP (a SOCKMAP gives
 * back cookies, not sockets), and a replaced process may have exited. Finishing also ends where
 * the operator asked to be, where configuration management would otherwise re-run apply to get.
 * What changed since (a target that exited, a socket that stopped listening) is re-checked as apply
 * checks it: a service that cannot be applied now is left as it is and named in the notice, and the
 * rest is applied.
 *
 * Where: pinned in bpffs beside the namespace's dispatcher, `<bpffs>/skl/<netns-ino>-apply-<pid>`,
 * an ARRAY map holding the record as JSON (a name older skls of this layout ignore). Not a file in
 * /run: every skl that can act on the namespace's state sees its bpffs — the host's and one in a
 * pod that mounts the host's bpffs (deploy/kubernetes) — while a /run inside a container is that
 * container's own, invisible to the host's skl and gone when the container is replaced. The record
 * lives exactly as long as the pins it is about (both go with a reboot or an unmount; both are kept
 * in memory, so there is nothing to fsync), is root's only like every pin (0600 in skl's 0700
 * directory), and appears atomically: the map is filled completely, then pinned (one bpf_obj_pin),
 * so a record is whole or absent. A namespace inode can be reused once its namespace is gone: the
 * record carries the namespace's cookie (SO_NETNS_COOKIE, never reused while the system runs) and a
 * record of another namespace with the same inode is discarded, never applied.
 */
import {existsSync, readdirSync, unlinkSync} from 'node:fs';
import {BpfMap, u32Key} from '../bpf/map.js';
import {errorFor} from '../bpf/errors.js';
import {libbpf} from '../ffi/index.js';
import {mkdirBpffs} from '../sys/bpffs.js';
import {netnsCookieHere, type Netns} from '../sys/netns.js';
import {SklError} from '../sys/errors.js';
import {compressPorts, parseAddress, parsePortSpec} from './input.js';
import type {DesiredService} from './desired.js';
import {rollForward} from './apply.js';
import type {Store} from './store.js';
import {SKL_VERSION} from '../version.js';

const BPF_MAP_TYPE_ARRAY = 2;
/** Bytes of the record per map entry; entry 0 starts with the JSON's length (u32). */
const CHUNK = 4096;
const FORMAT = 1;

export interface ApplyRecord {
  format: number;
  /** the skl that wrote it */
  version: string;
  pid: number;
  /** the desired-state file, for messages */
  file: string;
  netnsIno: number;
  /** SO_NETNS_COOKIE as a decimal string; null on kernels without it (< 5.14): the inode alone */
  netnsCookie: string | null;
  prune: boolean;
  services: DesiredService[];
}

const RECORD_RE = /^(\d+)-apply-(\d+)$/;

/** The namespace's cookie, or null where the kernel has none (< 5.14). */
function cookieOf(ns: Netns): string | null {
  try {
    return String(ns.run(() => netnsCookieHere()));
  } catch {
    return null;
  }
}

/** A desired service as JSON: ports and addresses as text (a range stays one string). */
function encodeService(d: DesiredService): EncodedService {
  return {
    ...d,
    netns: '',
    bindings: d.bindings.map((b) => ({protos: b.protos, ports: b.ports === 'all' ? 'all' : compressPorts(b.ports), addresses: b.addresses?.map((a) => a.text)})),
  };
}

type EncodedService = Omit<DesiredService, 'bindings'> & {bindings: {protos: DesiredService['protos']; ports: string; addresses?: string[]}[]};

function decodeService(x: unknown): DesiredService {
  const d = x as EncodedService;
  if (typeof d?.name !== 'string' || typeof d.target?.kind !== 'string' || !Array.isArray(d.bindings) || !Array.isArray(d.protos)) throw new SklError('not a service');
  return {
    ...d,
    listeners: d.listeners ?? [],
    fds: d.fds ?? [],
    bindings: d.bindings.map((b) => ({protos: b.protos, ports: parsePortSpec(b.ports), addresses: b.addresses?.map((a) => parseAddress(a))})),
  };
}

/** Where records live: skl's bpffs root (a Store is one). */
export interface RecordPlace {
  readonly bpffsRoot: string;
  readonly netns: Netns;
}

/**
 * Record an apply's intent for one namespace, before its first change: the map filled, then
 * pinned (the record appears whole, or not at all). Returns the record's path.
 */
export function writeApplyRecord(place: RecordPlace, rec: Omit<ApplyRecord, 'format' | 'version' | 'pid' | 'netnsIno' | 'netnsCookie'> & {netnsCookie?: string | null}): string {
  const full = {
    format: FORMAT,
    version: SKL_VERSION,
    pid: process.pid,
    netnsIno: place.netns.ino,
    netnsCookie: rec.netnsCookie === undefined ? cookieOf(place.netns) : rec.netnsCookie,
    file: rec.file,
    prune: rec.prune,
    services: rec.services.map(encodeService),
  };
  const json = Buffer.from(JSON.stringify(full), 'utf8');
  const blob = Buffer.alloc(Math.ceil((4 + json.length) / CHUNK) * CHUNK);
  blob.writeUInt32LE(json.length, 0);
  json.copy(blob, 4);
  const path = `${mkdirBpffs(place.bpffsRoot, 'skl')}/${place.netns.ino}-apply-${process.pid}`;
  const fd = libbpf.bpf_map_create(BPF_MAP_TYPE_ARRAY, 'skl_apply', 4, CHUNK, blob.length / CHUNK, null);
  if (fd < 0) throw errorFor('create map', -fd, 'skl_apply (an apply record)');
  const m = BpfMap.fromFd(fd, 'skl_apply');
  try {
    for (let i = 0; i < blob.length / CHUNK; i++) m.update(u32Key(i), blob.subarray(i * CHUNK, (i + 1) * CHUNK));
    m.pin(path);
  } finally {
    m.close();
  }
  return path;
}

/** Read a pinned record; throws when it is not one this skl can read. */
export function readApplyRecord(path: string): ApplyRecord {
  const m = BpfMap.openPinned(path);
  try {
    if (m.type !== BPF_MAP_TYPE_ARRAY || m.keySize !== 4 || m.valueSize !== CHUNK) throw new SklError('not an apply record');
    const chunks: Buffer[] = [];
    for (let i = 0; i < m.maxEntries; i++) chunks.push(m.lookup(u32Key(i)) ?? Buffer.alloc(CHUNK));
    const blob = Buffer.concat(chunks);
    const len = blob.readUInt32LE(0);
    if (len > blob.length - 4) throw new SklError('a truncated apply record');
    const rec = JSON.parse(blob.subarray(4, 4 + len).toString('utf8')) as ApplyRecord;
    if (rec?.format !== FORMAT || !Array.isArray(rec.services)) throw new SklError(`an apply record of an unknown format (${String(rec?.format)})`);
    return {...rec, services: rec.services.map(decodeService)};
  } finally {
    m.close();
  }
}

export function removeApplyRecord(path: string): void {
  try {
    unlinkSync(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}

/** Records of this namespace's interrupted applies (normally none; one at most under the lock). */
export function applyRecordsOf(root: string, ino: number): string[] {
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .filter((e) => RECORD_RE.exec(e)?.[1] === String(ino))
    .map((e) => `${root}/${e}`);
}

/**
 * Store.repair's hook (under the lock, after its other repairs): finish an apply an interrupted
 * skl had started in this namespace, say so in one notice, and remove its record.
 */
export function finishInterruptedApply(store: Store): void {
  for (const path of applyRecordsOf(store.root, store.netns.ino)) {
    const pid = RECORD_RE.exec(path.slice(path.lastIndexOf('/') + 1))?.[2] ?? '?';
    let rec: ApplyRecord;
    try {
      rec = readApplyRecord(path);
    } catch (error) {
      removeApplyRecord(path);
      store.notices.push(`discarded an apply record an interrupted skl (pid ${pid}) left that this skl cannot read (${(error as Error).message}); run skl apply again`);
      continue;
    }
    if (rec.netnsCookie !== null && cookieOf(store.netns) !== rec.netnsCookie) {
      removeApplyRecord(path);
      store.notices.push(`discarded the record of an apply of ${rec.file} an interrupted skl (pid ${pid}) had started in an earlier network namespace with this inode (${store.netns.ino})`);
      continue;
    }
    store.notices.push(finishApply(store, rec, pid));
    removeApplyRecord(path);
  }
}

/** Roll the recorded apply forward; the notice that says how it went. */
export function finishApply(store: Store, rec: Pick<ApplyRecord, 'file' | 'prune' | 'services'>, pid: number | string): string {
  const what = `an apply of ${rec.file}${rec.prune ? ' --prune' : ''} an interrupted skl had started (pid ${pid})`;
  try {
    const {skipped} = rollForward(store, rec.services, rec.prune);
    return skipped.length ? `finished ${what}, except: ${skipped.join('; ')}; run skl apply again once that is fixed` : `finished ${what}`;
  } catch (error) {
    return `could not finish ${what}: ${(error as Error).message}; run skl apply again`;
  }
}
