// DispatcherState's port table (src/dispatcher/state.ts): add_ports is a memory-mapped ARRAY
// (BPF_F_MMAPABLE), written and read as plain memory; a map that cannot be mapped (one pinned by an
// older skl) still goes through BPF_MAP_*_BATCH. Unit tests on fake maps for both paths, and a
// privileged one proving the mapping is the kernel map itself.
import test from 'ava';
import {BpfObject, u32Key, type BpfMap} from '../src/bpf/index.js';
import {BpfError} from '../src/bpf/errors.js';
import {portIndex, PORT_ENTRIES, withPortService} from '../src/dispatcher/layout.js';
import {DispatcherState, dispatcherObjectBytes, MAP_NAMES, type MapName} from '../src/dispatcher/state.js';
import {privileged} from './helpers/privileged.js';

const V = withPortService(0, 4, 2);

function stateWith(addPorts: Partial<BpfMap>): DispatcherState {
  const maps = Object.fromEntries(MAP_NAMES.map((n) => [n, {} as BpfMap])) as Record<MapName, BpfMap>;
  maps.add_ports = {maxEntries: PORT_ENTRIES, valueSize: 4, keySize: 4, elementStride: 8, ...addPorts} as BpfMap;
  return new DispatcherState('foreground', maps, 0);
}

test('memory-mapped add_ports: entries at index × 8, read back as the port table', (t) => {
  const mem = Buffer.alloc(PORT_ENTRIES * 8);
  const d = stateWith({mapped: () => mem});
  d.writePorts([
    [portIndex('tcp', 80), V],
    [portIndex('udp', 53), V],
    [portIndex('tcp', 65535), 0xffffffff],
  ]);
  t.is(mem.readUInt32LE(80 * 8), V);
  t.is(mem.readUInt32LE(((1 << 16) | 53) * 8), V);
  t.is(mem.readUInt32LE(65535 * 8), 0xffffffff);
  t.is(mem.readUInt32LE(80 * 8 + 4), 0, 'the padding of each element is left alone');
  t.deepEqual(d.portTable(), new Map([[80, V], [65535, 0xffffffff], [(1 << 16) | 53, V]]));
  d.writePorts([[portIndex('tcp', 80), 0]]);
  t.false(d.portTable().has(80));
});

test('memory-mapped add_ports: an index out of range is refused before anything is written', (t) => {
  const mem = Buffer.alloc(PORT_ENTRIES * 8);
  const d = stateWith({mapped: () => mem});
  const err = t.throws(() => d.writePorts([[1, V], [PORT_ENTRIES, V]]));
  t.true(err instanceof BpfError);
  t.is(mem.readUInt32LE(8), 0);
});

test('add_ports that cannot be mapped: one batch update with little-endian keys and values, batch lookup for the table', (t) => {
  const calls: {keys: number[]; values: number[]; count: number}[] = [];
  const d = stateWith({
    mapped: () => undefined,
    updateBatch: (keys: Buffer, values: Buffer, count: number) => {
      calls.push({keys: [...Array(count).keys()].map((i) => keys.readUInt32LE(i * 4)), values: [...Array(count).keys()].map((i) => values.readUInt32LE(i * 4)), count});
    },
    lookupAll: (each: (k: Buffer, v: Buffer, n: number) => void) => {
      const k = Buffer.alloc(12);
      const v = Buffer.alloc(12);
      [7, 8, 9].forEach((x, i) => k.writeUInt32LE(x, i * 4));
      [V, 0, V].forEach((x, i) => v.writeUInt32LE(x, i * 4));
      each(k, v, 3);
    },
  });
  d.writePorts([
    [portIndex('tcp', 443), V],
    [portIndex('udp', 443), -1],
  ]);
  t.deepEqual(calls, [{keys: [443, (1 << 16) | 443], values: [V, 0xffffffff], count: 2}]);
  t.deepEqual(d.portTable(), new Map([[7, V], [9, V]]));
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
    maps.add_ports.update(u32Key(portIndex('udp', 9)), Buffer.from([1, 0, 0, 0]));
    const table = d.portTable();
    t.is(table.size, 65536);
    t.is(table.get(portIndex('udp', 9)), 1);
    t.is(d.portValue(portIndex('udp', 9)), 1);
  } finally {
    obj.close();
  }
});
