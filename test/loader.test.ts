// The typed loader (src/bpf) against the real kernel: load, test-run, maps, pins, and the errors
// of bad use (garbage object, verifier rejection, missing pin).
import {closeSync, existsSync, openSync, readFileSync, rmdirSync, statSync, unlinkSync} from 'node:fs';
import test from 'ava';
import {
  BPF_EXIST,
  BPF_NOEXIST,
  BpfError,
  BpfMap,
  BpfObject,
  Link,
  NotFoundError,
  VerifierError,
  mapInfoByFd,
  numPossibleCpus,
  progInfoByFd,
  u32Key,
} from '../src/bpf/index.js';
import {DEFAULT_BPFFS, ensureBpffs, mkdirBpffs} from '../src/sys/index.js';
import {BPF_LINK_TYPE_NETNS, bpfLinks, fdinfo, netnsLinks} from './helpers/links.js';
import {createNetns} from './helpers/netns.js';
import {privileged} from './helpers/privileged.js';

const root = new URL('../../', import.meta.url);
const readObject = (path: string): Buffer => readFileSync(new URL(path, root));

const XDP_PASS = 2;

const u64 = (n: number | bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
};

/** An Ethernet frame of `size` bytes (contents do not matter to the programs under test). */
const frame = (size: number): Buffer => {
  const b = Buffer.alloc(size);
  b.fill(0xff, 0, 6); // broadcast destination
  b.writeUInt16BE(0x0800, 12); // IPv4
  return b;
};

privileged('xdp_count.o loads and test-runs: XDP_PASS, per-CPU counts sum to the repeat count', t => {
  const obj = BpfObject.load(readObject('bpf/xdp_count.o'), {name: 'xdp_count.o'});
  t.teardown(() => obj.close());
  const prog = obj.program('xdp_count');
  t.true(prog.fd > 0);
  const repeat = 1000;
  const size = 64;
  const res = prog.testRun({data: frame(size), repeat});
  t.is(res.retval, XDP_PASS);
  t.true(Number.isFinite(res.durationNs));

  const stats = obj.map('xdp_stats');
  t.true(stats.perCpu);
  const perCpu = stats.lookupPerCpu(u32Key(0));
  t.is(perCpu?.length, numPossibleCpus());
  const [packets, bytes] = stats.sumPerCpuU64(u32Key(0)) ?? [];
  t.is(packets, BigInt(repeat));
  t.is(bytes, BigInt(repeat * size));
  // The per-CPU values add up to the same totals.
  t.is(
    perCpu!.reduce((sum, v) => sum + v.readBigUInt64LE(0), 0n),
    BigInt(repeat),
  );

  // A second run adds up.
  prog.testRun({data: frame(size), repeat: 10});
  t.is(stats.sumPerCpuU64(u32Key(0))?.[0], BigInt(repeat + 10));
});

test('a garbage object gives BpfError "BPF object format invalid", not a crash', t => {
  const err = t.throws(() => BpfObject.load(Buffer.from('this is not an ELF file, just garbage bytes'), {name: 'garbage.o'}), {
    instanceOf: BpfError,
  });
  t.regex(err!.message, /BPF object format invalid/);
  t.regex(err!.message, /garbage\.o/);
  t.is(err!.errno, 4001);
  t.false(err instanceof VerifierError);

  const empty = t.throws(() => BpfObject.load(new Uint8Array(0), {name: 'empty.o'}), {instanceOf: BpfError});
  t.regex(empty!.message, /empty\.o/);
});

privileged('a program the verifier rejects gives VerifierError with the verifier log\'s last lines', t => {
  const err = t.throws(() => BpfObject.load(readObject('test/fixtures/bad_prog.o'), {name: 'bad_prog.o'}), {
    instanceOf: VerifierError,
  }) as VerifierError;
  t.true(err instanceof BpfError);
  t.is(err.program, 'bad_prog');
  t.regex(err.message, /program bad_prog was rejected by the verifier/);
  // The reason is in the message itself, not only in the attached log.
  t.regex(err.message, /invalid access to packet/);
  t.regex(err.log, /R\d offset is outside of the packet/);
  // Only the tail of the log is shown.
  t.true(err.message.split('\n').length <= 6, err.message);
  t.true(err.log.split('\n').length > err.message.split('\n').length);
});

privileged('opening a missing pin gives NotFoundError naming the path', t => {
  const path = `${DEFAULT_BPFFS}/skl-test-${process.pid}-missing/nothing`;
  const mapErr = t.throws(() => BpfMap.openPinned(path), {instanceOf: NotFoundError});
  t.is(mapErr!.errno, 2);
  t.true(mapErr!.message.includes(path));
  const linkErr = t.throws(() => Link.openPinned(path), {instanceOf: NotFoundError});
  t.true(linkErr!.message.includes(path));
});

privileged('maps: lookup, update flags, delete, iterate keys, batch update', t => {
  const obj = BpfObject.load(readObject('test/fixtures/maps.o'), {name: 'maps.o'});
  t.teardown(() => obj.close());
  const hash = obj.map('hash');
  t.deepEqual([hash.keySize, hash.valueSize, hash.maxEntries, hash.perCpu], [4, 8, 64, false]);

  t.is(hash.lookup(u32Key(1)), undefined);
  t.deepEqual([...hash.keys()], []);

  const keys = Array.from({length: 10}, (_, i) => 100 + i);
  hash.updateBatch(Buffer.concat(keys.map(u32Key)), Buffer.concat(keys.map((k) => u64(k * 3))), keys.length);
  t.deepEqual(
    [...hash.keys()].map((k) => k.readUInt32LE(0)).sort((a, b) => a - b),
    keys,
  );
  for (const k of keys) t.is(hash.lookup(u32Key(k))?.readBigUInt64LE(0), BigInt(k * 3));

  // Update flags.
  const exists = t.throws(() => hash.update(u32Key(100), u64(1), BPF_NOEXIST), {instanceOf: BpfError});
  t.is(exists!.errno, 17);
  t.throws(() => hash.update(u32Key(999), u64(1), BPF_EXIST), {instanceOf: NotFoundError});
  hash.update(u32Key(100), u64(42), BPF_EXIST);
  t.is(hash.lookup(u32Key(100))?.readBigUInt64LE(0), 42n);
  hash.update(u32Key(999), u64(7), BPF_NOEXIST);

  // Delete.
  t.true(hash.delete(u32Key(999)));
  t.false(hash.delete(u32Key(999)));
  t.is(hash.lookup(u32Key(999)), undefined);
  for (const k of keys) t.true(hash.delete(u32Key(k)));
  t.deepEqual([...hash.keys()], []);

  // An empty batch is a no-op; a batch too big for the map fails cleanly.
  hash.updateBatch(Buffer.alloc(0), Buffer.alloc(0), 0);
  const many = Array.from({length: 65}, (_, i) => i);
  const full = t.throws(() => hash.updateBatch(Buffer.concat(many.map(u32Key)), Buffer.concat(many.map(u64)), many.length), {
    instanceOf: BpfError,
  });
  t.is(full!.errno, 7); // E2BIG: the 65th entry does not fit
  t.is([...hash.keys()].length, 64);

  // Arrays: every key exists; deleting is not supported.
  const array = obj.map('array');
  t.is([...array.keys()].length, 8);
  t.is(array.lookup(u32Key(3))?.readBigUInt64LE(0), 0n);
  t.is(array.lookup(u32Key(8)), undefined);
  t.throws(() => array.delete(u32Key(3)), {instanceOf: BpfError});
});

privileged('per-CPU maps: values per CPU from userspace and from the kernel, summed', t => {
  const obj = BpfObject.load(readObject('test/fixtures/maps.o'), {name: 'maps.o'});
  t.teardown(() => obj.close());
  const pcpu = obj.map('pcpu_hash');
  t.true(pcpu.perCpu);
  const ncpu = numPossibleCpus();
  t.true(ncpu >= 1);
  t.is(pcpu.lookupSize, pcpu.perCpuStride * ncpu);

  // CPU i holds {a: i + 1, b: 10 * (i + 1)}.
  const value = Buffer.alloc(pcpu.lookupSize);
  for (let i = 0; i < ncpu; i++) {
    value.writeBigUInt64LE(BigInt(i + 1), i * pcpu.perCpuStride);
    value.writeBigUInt64LE(BigInt(10 * (i + 1)), i * pcpu.perCpuStride + 8);
  }
  pcpu.update(u32Key(7), value);
  const perCpu = pcpu.lookupPerCpu(u32Key(7))!;
  t.is(perCpu.length, ncpu);
  perCpu.forEach((v, i) => t.deepEqual([v.readBigUInt64LE(0), v.readBigUInt64LE(8)], [BigInt(i + 1), BigInt(10 * (i + 1))]));
  const tri = BigInt((ncpu * (ncpu + 1)) / 2);
  t.deepEqual(pcpu.sumPerCpuU64(u32Key(7)), [tri, 10n * tri]);

  // The program adds 1 and the packet size on whichever CPU it runs.
  const repeat = 50;
  const size = 60;
  t.is(obj.program('count_into_maps').testRun({data: frame(size), repeat}).retval, XDP_PASS);
  t.deepEqual(pcpu.sumPerCpuU64(u32Key(7)), [tri + BigInt(repeat), 10n * tri + BigInt(repeat * size)]);
  t.is(obj.map('hash').lookup(u32Key(7))?.readBigUInt64LE(0), BigInt(repeat));

  t.is(pcpu.lookupPerCpu(u32Key(8)), undefined);
  t.is(pcpu.sumPerCpuU64(u32Key(8)), undefined);
  t.throws(() => obj.map('hash').lookupPerCpu(u32Key(7)), {instanceOf: TypeError});
});

privileged('a map pinned in bpffs can be reopened, and is gone once unpinned', t => {
  ensureBpffs();
  const dir = `${DEFAULT_BPFFS}/skl-test-${process.pid}`;
  const pin = `${dir}/hash`;
  const opened: BpfMap[] = [];
  const obj = BpfObject.load(readObject('test/fixtures/maps.o'), {name: 'maps.o'});
  t.teardown(() => {
    for (const m of opened) m.close();
    obj.close();
    if (existsSync(pin)) unlinkSync(pin);
    if (existsSync(dir)) rmdirSync(dir);
  });
  t.is(mkdirBpffs(DEFAULT_BPFFS, `skl-test-${process.pid}`), dir);
  const hash = obj.map('hash');
  hash.pin(pin);
  t.true(existsSync(pin));
  // Pinning twice at the same path fails cleanly.
  t.is(t.throws(() => hash.pin(pin), {instanceOf: BpfError})!.errno, 17);

  const reopened = BpfMap.openPinned(pin);
  opened.push(reopened);
  t.not(reopened.fd, hash.fd);
  t.is(mapInfoByFd(reopened.fd).id, mapInfoByFd(hash.fd).id);
  t.deepEqual(
    [reopened.name, reopened.type, reopened.keySize, reopened.valueSize, reopened.maxEntries],
    ['hash', hash.type, 4, 8, 64],
  );
  // Same map: a write through one handle is seen through the other.
  hash.update(u32Key(5), u64(55));
  t.is(reopened.lookup(u32Key(5))?.readBigUInt64LE(0), 55n);
  reopened.update(u32Key(6), u64(66));
  t.is(hash.lookup(u32Key(6))?.readBigUInt64LE(0), 66n);

  // The pin keeps the map alive after the object is closed.
  obj.close();
  const again = BpfMap.openPinned(pin);
  opened.push(again);
  t.is(again.lookup(u32Key(5))?.readBigUInt64LE(0), 55n);

  unlinkSync(pin);
  rmdirSync(dir);
  t.false(existsSync(dir));
  t.throws(() => BpfMap.openPinned(pin), {instanceOf: NotFoundError});
});

privileged("the tests' link reader (helpers/links.ts) agrees with the kernel's fdinfo, and sees a link go", t => {
  // The end-to-end tests prove "no link left behind" with skl's own link info; check that reader
  // against the kernel's own account of the link (/proc/self/fdinfo), on a link of a test namespace.
  const ns = createNetns(t);
  const ino = statSync(ns.path).ino;
  const obj = BpfObject.load(readObject('bpf/sk_dispatch.o'), {name: 'sk_dispatch.o'});
  t.teardown(() => obj.close());
  const prog = obj.program('sk_dispatch');
  t.deepEqual(netnsLinks(ino), [], 'a new namespace has no link');

  const nsFd = openSync(ns.path, 'r');
  let link: Link;
  try {
    link = prog.attachNetns(nsFd, ns.name);
  } finally {
    closeSync(nsFd);
  }
  t.teardown(() => link.close());
  const progId = progInfoByFd(prog.fd).id;
  const kernel = fdinfo(link.fd);
  t.is(kernel.link_type, 'netns', JSON.stringify(kernel));
  const found = netnsLinks(ino);
  t.is(found.length, 1, 'the reader finds the one link on the namespace');
  t.deepEqual(found[0], {
    type: BPF_LINK_TYPE_NETNS,
    id: Number(kernel.link_id),
    progId: Number(kernel.prog_id),
    netnsIno: Number(kernel.netns_ino),
    attachType: Number(kernel.attach_type),
    ifindex: 0,
  });
  t.is(found[0].progId, progId);
  t.is(found[0].netnsIno, ino);
  t.true(bpfLinks().some(l => l.id === found[0].id), 'and among all links');

  link.close();
  t.deepEqual(netnsLinks(ino), [], 'gone once its only fd is closed');
});
