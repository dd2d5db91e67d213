// DispatcherState's port table (src/dispatcher/state.ts): add_ports is a memory-mapped ARRAY
// (BPF_F_MMAPABLE) of struct skl_port (24 bytes, padded to 24), written and read as plain memory; a
// map that cannot be mapped still works, one entry at a time. Unit tests on fake maps for both paths, and a
// privileged one proving the mapping is the kernel map itself.
import test from 'ava';
import {BpfObject, u32Key, type BpfMap} from '../src/bpf/index.js';
import {BpfError} from '../src/bpf/errors.js';
import {MAX_LENS, portIndex, PORT_ENTRIES, PORT_LENS_AT, PORT_MASKS_AT, PORT_SIZE, withPortService, type PortLen} from '../src/dispatcher/layout.js';
import {DispatcherState, dispatcherObjectBytes, MAP_NAMES, rewritePortLens, type MapName} from '../src/dispatcher/state.js';
import {privileged} from './helpers/privileged.js';

const V = withPortService(0, 4, 2);

function stateWith(addPorts: Partial<BpfMap>): DispatcherState {
  const maps = Object.fromEntries(MAP_NAMES.map((n) => [n, {} as BpfMap])) as Record<MapName, BpfMap>;
  maps.add_ports = {maxEntries: PORT_ENTRIES, valueSize: PORT_SIZE, keySize: 4, elementStride: PORT_SIZE, ...addPorts} as BpfMap;
  return new DispatcherState('foreground', maps, 0);
}

test('memory-mapped add_ports: entries at index × 24, read back as the port table', (t) => {
  const mem = Buffer.alloc(PORT_ENTRIES * PORT_SIZE);
  const d = stateWith({mapped: () => mem});
  d.writePorts([
    [portIndex('tcp', 80), V],
    [portIndex('udp', 53), V],
    [portIndex('tcp', 65535), 0xffffffff],
  ]);
  t.is(mem.readUInt32LE(80 * PORT_SIZE), V);
  t.is(mem.readUInt32LE(((1 << 16) | 53) * PORT_SIZE), V);
  t.is(mem.readUInt32LE(65535 * PORT_SIZE), 0xffffffff);
  t.is(mem.readUInt32LE(80 * PORT_SIZE + 4), 0, 'the prefix lengths of each element are left alone');
  t.deepEqual(d.portTable(), new Map([[80, V], [65535, 0xffffffff], [(1 << 16) | 53, V]]));
  d.writePorts([[portIndex('tcp', 80), 0]]);
  t.false(d.portTable().has(80));
  // a port with prefix lengths only is in the table too (with no any-address service)
  d.writePortLens(portIndex('tcp', 81), 4, [{len: 24, own: true, all: false}]);
  t.is(mem[81 * PORT_SIZE + PORT_LENS_AT[4]], 24);
  t.is(d.portTable().get(81), 0);
  t.deepEqual(d.portLens(portIndex('tcp', 81), 4), [{len: 24, own: true, all: false}]);
});

test('memory-mapped add_ports: an index out of range is refused before anything is written', (t) => {
  const mem = Buffer.alloc(PORT_ENTRIES * PORT_SIZE);
  const d = stateWith({mapped: () => mem});
  const err = t.throws(() => d.writePorts([[1, V], [PORT_ENTRIES, V]]));
  t.true(err instanceof BpfError);
  t.is(mem.readUInt32LE(PORT_SIZE), 0);
});

test('add_ports that cannot be mapped: whole entries through map lookups and updates, little-endian', (t) => {
  const store = new Map<number, Buffer>();
  const d = stateWith({
    mapped: () => undefined,
    lookup: (k: Buffer) => store.get(k.readUInt32LE(0)),
    update: (k: Buffer, v: Buffer) => void store.set(k.readUInt32LE(0), Buffer.from(v)),
    lookupAll: (each: (k: Buffer, v: Buffer, n: number) => void) => {
      const keys = [...store.keys()];
      const k = Buffer.alloc(keys.length * 4);
      const v = Buffer.alloc(keys.length * PORT_SIZE);
      keys.forEach((x, i) => {
        k.writeUInt32LE(x, i * 4);
        store.get(x)!.copy(v, i * PORT_SIZE);
      });
      each(k, v, keys.length);
    },
  });
  d.writePorts([
    [portIndex('tcp', 443), V],
    [portIndex('udp', 443), -1],
  ]);
  t.is(store.get(443)!.readUInt32LE(0), V);
  t.is(store.get((1 << 16) | 443)!.readUInt32LE(0), 0xffffffff);
  t.is(store.get(443)!.length, PORT_SIZE);
  d.writePortLens(portIndex('tcp', 443), 6, [{len: 64, own: false, all: true}]);
  t.deepEqual(d.portLens(portIndex('tcp', 443), 6), [{len: 64, own: false, all: true}]);
  t.is(store.get(443)!.readUInt32LE(0), V, 'the services word is kept');
  t.deepEqual(d.portTable(), new Map([[443, V], [(1 << 16) | 443, 0xffffffff]]));
});

test('prefix length lists: kept longest first while lengths come, go and change kind', (t) => {
  const mem = Buffer.alloc(PORT_ENTRIES * PORT_SIZE);
  const d = stateWith({mapped: () => mem});
  const i = portIndex('tcp', 9000);
  d.writePortLens(i, 4, [{len: 24, own: true, all: false}]);
  d.writePortLens(i, 4, [{len: 24, own: true, all: false}, {len: 32, own: true, all: false}, {len: 16, own: false, all: true}]);
  t.deepEqual(d.portLens(i, 4).map((e) => e.len), [32, 24, 16]);
  d.writePortLens(i, 4, [{len: 32, own: true, all: true}, {len: 16, own: false, all: true}]);
  t.deepEqual(d.portLens(i, 4), [{len: 32, own: true, all: true}, {len: 16, own: false, all: true}]);
  d.writePortLens(i, 4, []);
  t.deepEqual(d.portLens(i, 4), []);
  t.is(mem.subarray(i * PORT_SIZE, (i + 1) * PORT_SIZE).every((b) => b === 0), true, 'nothing left behind');
  const eight = [128, 120, 112, 64, 56, 48, 32, 8].map((len) => ({len, own: true, all: false}));
  d.writePortLens(i, 6, eight);
  t.deepEqual(d.portLens(i, 6).map((e) => e.len), [128, 120, 112, 64, 56, 48, 32, 8]);
  t.throws(() => d.writePortLens(i, 6, [...eight, {len: 1, own: true, all: false}]));
});

/** A small deterministic PRNG (mulberry32): the same cases on every run. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** A list the dispatcher could hold: up to MAX_LENS distinct lengths, longest first, each own, all or both. */
function randomLens(rand: () => number, maxLen: number): PortLen[] {
  const n = Math.floor(rand() * (MAX_LENS + 1));
  const lens = new Set<number>();
  while (lens.size < n) lens.add(1 + Math.floor(rand() * maxLen));
  return [...lens].sort((a, b) => b - a).map((len) => {
    const k = Math.floor(rand() * 3);
    return {len, own: k !== 1, all: k !== 0};
  });
}

/** What the program sees in a state: the lengths before the first 0, with their kinds (bit p of own/all). */
function seen(bytes: Uint8Array, family: 4 | 6): PortLen[] {
  const at = PORT_LENS_AT[family];
  const {own, all} = PORT_MASKS_AT[family];
  const out: PortLen[] = [];
  for (let p = 0; p < MAX_LENS && bytes[at + p] !== 0; p++) out.push({len: bytes[at + p], own: (bytes[own] >> p) & 1 ? true : false, all: (bytes[all] >> p) & 1 ? true : false});
  return out;
}

test('prefix length lists: every state in between, byte by byte, keeps each length that stays findable with the kinds it keeps, and shows no other length', (t) => {
  const rand = prng(0x5eed);
  let cases = 0;
  let states = 0;
  const problems: string[] = [];
  for (const family of [4, 6] as const) {
    for (let c = 0; c < 1500; c++) {
      const before = randomLens(rand, family === 4 ? 32 : 128);
      const after = randomLens(rand, family === 4 ? 32 : 128);
      const entry = new Uint8Array(PORT_SIZE);
      rewritePortLens(entry, family, before);
      t.deepEqual(seen(entry, family), before);
      const stays = before.filter((b) => after.some((a) => a.len === b.len)).map((b) => {
        const a = after.find((x) => x.len === b.len)!;
        return {len: b.len, own: b.own && a.own, all: b.all && a.all};
      });
      const known = new Set([...before, ...after].map((e) => e.len));
      const check = (bytes: Uint8Array): void => {
        states++;
        const now = seen(bytes, family);
        for (const s of stays) {
          const at = now.filter((e) => e.len === s.len);
          const ok = at.some((e) => e.own || e.all) && (!s.own || at.some((e) => e.own)) && (!s.all || at.some((e) => e.all));
          if (!ok && problems.length < 5) problems.push(`IPv${family} ${JSON.stringify(before)} → ${JSON.stringify(after)}: ${s.len} lost in ${JSON.stringify(now)}`);
        }
        for (const e of now) if (!known.has(e.len) && (e.own || e.all) && problems.length < 5) problems.push(`IPv${family}: ${e.len} appeared from nowhere in ${JSON.stringify(now)}`);
      };
      check(entry);
      // each byte store on its own, as the program may see it between two of them
      const live = new Proxy(entry, {
        set: (target, key, value) => {
          const ok = Reflect.set(target, key, value);
          check(target);
          return ok;
        },
      });
      rewritePortLens(live, family, after);
      t.deepEqual(seen(entry, family), after, 'the list as asked');
      const at = PORT_LENS_AT[family];
      t.true(entry.subarray(at + after.length, at + MAX_LENS).every((b) => b === 0), 'nothing past the list');
      const {own, all} = PORT_MASKS_AT[family];
      t.is((entry[own] | entry[all]) >> after.length, 0, 'no kind past the list');
      cases++;
    }
  }
  t.deepEqual(problems, []);
  t.is(cases, 3000);
  t.true(states > 3000, `${states} states in between checked`);
});

privileged('the mapping is the kernel map: written as memory, seen by a map lookup (and back)', (t) => {
  const obj = BpfObject.load(dispatcherObjectBytes(), {name: 'sk_dispatch.o'});
  try {
    const maps = {} as Record<MapName, BpfMap>;
    for (const n of MAP_NAMES) maps[n] = obj.map(n);
    t.truthy(maps.add_ports.mapped(), 'add_ports is memory-mappable');
    const d = new DispatcherState('foreground', maps, 0);
    const all = Array.from({length: 65535}, (_, i): [number, number] => [portIndex('tcp', i + 1), V]);
    d.writePorts(all);
    t.is(maps.add_ports.lookup(u32Key(portIndex('tcp', 1)))!.readUInt32LE(0), V);
    t.is(maps.add_ports.lookup(u32Key(portIndex('tcp', 65535)))!.readUInt32LE(0), V);
    t.is(maps.add_ports.lookup(u32Key(portIndex('udp', 1)))!.readUInt32LE(0), 0);
    const entry = Buffer.alloc(PORT_SIZE);
    entry.writeUInt32LE(1, 0);
    entry[PORT_LENS_AT[6]] = 48;
    maps.add_ports.update(u32Key(portIndex('udp', 9)), entry);
    const table = d.portTable();
    t.is(table.size, 65536);
    t.is(table.get(portIndex('udp', 9)), 1);
    t.is(d.portValue(portIndex('udp', 9)), 1);
    t.deepEqual(d.portLens(portIndex('udp', 9), 6), [{len: 48, own: false, all: false}]);
  } finally {
    obj.close();
  }
});
