// Unit tests (no root): the dispatcher's input parsing (src/dispatcher/input.ts) and the binary
// layout of its maps (src/dispatcher/layout.ts), checked against bpf/headers/skl.h and the BTF of
// the committed bpf/sk_dispatch.o.
import {spawnSync} from 'node:child_process';
import {readFileSync} from 'node:fs';
import {fileURLToPath} from 'node:url';
import test from 'ava';
import {
  compressPorts,
  defaultName,
  parseAddress,
  parseListener,
  parsePid,
  parsePorts,
  parsePortSpec,
  parseProtos,
  validateName,
} from '../src/dispatcher/input.js';
import {
  anyPrefix,
  BINDING_KEY_SIZE,
  BINDING_SIZE,
  COUNTER_FIELDS,
  decodeBinding,
  decodeBindingKey,
  decodeInfo,
  decodeService,
  DESTS_PER_SERVICE,
  encodeBinding,
  encodeBindingKey,
  encodeInfo,
  encodeService,
  indexProto,
  INFO_SIZE,
  LAYOUT,
  listenerText,
  MAX_BINDINGS,
  MAX_DESTS,
  MAX_LENS,
  MAX_SERVICES,
  PORT_ENTRIES,
  PORT_F_REPLY,
  PORT_LENS_AT,
  PORT_MASKS_AT,
  PORT_SIZE,
  FLOW_KEY_SIZE,
  FLOW_SIZE,
  MAX_FLOWS,
  SPARES,
  SVC_F_UDP_REPLIES,
  REPLY_COUNTER_FIELDS,
  maskedAddr,
  PORT_SVC_MASK,
  PORT_V6_SHIFT,
  portIndex,
  portService,
  prefixText,
  SERVICE_SIZE,
  MAX_FOLLOW,
  FOLLOW_KEY_SIZE,
  FOLLOW_SIZE,
  FOLLOW_D_V4,
  FOLLOW_D_V6,
  SVC_F_FOLLOW,
  encodeFollowKey,
  decodeFollowKey,
  encodeFollow,
  decodeFollow,
  SOCKET_META_SIZE,
  SVC_FREE,
  SVC_PENDING,
  SVC_READY,
  withPortService,
  type ServiceMeta,
} from '../src/dispatcher/layout.js';
import {resolve as resolveBinding, type Binding} from '../src/dispatcher/bindings.js';
import {KERNEL_MAP_NAMES, MAP_NAMES} from '../src/dispatcher/state.js';
import {UsageError} from '../src/sys/errors.js';
import {needing} from './helpers/privileged.js';

const repoFile = (rel: string): string => fileURLToPath(new URL(`../../${rel}`, import.meta.url));

/** Assert that `fn` throws a UsageError (exit code 2) whose message matches `message`. */
function usage(t: import('ava').ExecutionContext, fn: () => unknown, message?: RegExp, label?: string): void {
  const err = t.throws(fn, {instanceOf: UsageError}, label);
  if (err === undefined) return;
  t.is((err as UsageError).exitCode, 2, label);
  t.false(err.message.includes('\n'), `one line: ${label ?? ''}`);
  if (message) t.regex(err.message, message, label);
}

const range = (lo: number, hi: number): number[] => Array.from({length: hi - lo + 1}, (_, i) => lo + i);

// ---- ports ----

test('parsePorts: single ports, lists and ranges, sorted and unique', t => {
  t.deepEqual(parsePorts('8080'), [8080]);
  t.deepEqual(parsePorts('443,80'), [80, 443]);
  t.deepEqual(parsePorts('80,443,8000-8003'), [80, 443, 8000, 8001, 8002, 8003]);
  t.deepEqual(parsePorts('9000-9000'), [9000]);
  t.deepEqual(parsePorts(' 80 , 443 '), [80, 443], 'blanks around items are tolerated');
  t.deepEqual(parsePorts('00080'), [80]);
});

test('parsePorts: duplicates and overlapping ranges collapse', t => {
  t.deepEqual(parsePorts('80,80,80'), [80]);
  t.deepEqual(parsePorts('79-81,80,81-82'), [79, 80, 81, 82]);
  t.deepEqual(parsePorts('10-20,15-25'), range(10, 25));
});

test('parsePorts: the bounds 1 and 65535, and all 65,535 ports', t => {
  t.deepEqual(parsePorts('1'), [1]);
  t.deepEqual(parsePorts('65535'), [65535]);
  t.deepEqual(parsePorts('1,65535'), [1, 65535]);
  const all = parsePorts('1-65535');
  t.is(all.length, 65535);
  t.is(all[0], 1);
  t.is(all[65534], 65535);
  t.true(all.every((p, i) => p === i + 1));
  t.is(parsePorts('1-100,50-65535').length, 65535);
});

test('parsePorts: invalid specs are usage errors naming the bad part', t => {
  usage(t, () => parsePorts('0'), /port 0 .*out of range.*1-65535/);
  usage(t, () => parsePorts('65536'), /port 65536 .*out of range/);
  usage(t, () => parsePorts('0-10'), /port 0 /);
  usage(t, () => parsePorts('65530-65536'), /port 65536 /);
  usage(t, () => parsePorts('-1'), /invalid port "-1"/);
  usage(t, () => parsePorts('abc'), /invalid port "abc"/);
  usage(t, () => parsePorts('80,abc'), /invalid port "abc"/);
  usage(t, () => parsePorts('10-5'), /invalid range 10-5.*did you mean 5-10/);
  usage(t, () => parsePorts('1-2-3'), /invalid port "1-2-3"/);
  usage(t, () => parsePorts(','), /invalid port ""/);
  usage(t, () => parsePorts('80,'), /invalid port ""/);
  usage(t, () => parsePorts('80,,81'), /invalid port ""/);
  usage(t, () => parsePorts(''), /empty/);
  usage(t, () => parsePorts('   '), /empty/);
  usage(t, () => parsePorts('80 443'), /invalid port "80 443"/);
  usage(t, () => parsePorts('80 - 90'), /invalid port/);
  usage(t, () => parsePorts('123456'), /invalid port/);
  for (const bad of ['+80', '0x50', '8e1', '80.0', '٨٠', '80-', '-', '1-']) usage(t, () => parsePorts(bad), /invalid port/, bad);
});

test('parsePorts: the message stays short for a huge spec', t => {
  const huge = `${'1,'.repeat(5000)}x`;
  const err = t.throws(() => parsePorts(huge), {instanceOf: UsageError});
  t.true(err!.message.length < 300, err!.message);
});

test('compressPorts: ranges, singles, order and duplicates', t => {
  t.is(compressPorts([]), '');
  t.is(compressPorts([5]), '5');
  t.is(compressPorts([1, 2, 3, 5, 7, 8]), '1-3,5,7-8');
  t.is(compressPorts([8002, 80, 8000, 443, 8001]), '80,443,8000-8002');
  t.is(compressPorts([3, 3, 4, 4, 6]), '3-4,6');
  t.is(compressPorts(range(1, 65535)), '1-65535');
  t.is(compressPorts([1, 65535]), '1,65535');
});

test('compressPorts and parsePorts round-trip', t => {
  let seed = 12345;
  const rand = (): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed;
  };
  for (let round = 0; round < 50; round++) {
    const set = new Set<number>();
    const n = 1 + (rand() % 200);
    for (let i = 0; i < n; i++) {
      const start = 1 + (rand() % 65535);
      const len = rand() % 4 === 0 ? rand() % 50 : 0;
      for (let p = start; p <= Math.min(65535, start + len); p++) set.add(p);
    }
    const ports = [...set].sort((a, b) => a - b);
    t.deepEqual(parsePorts(compressPorts(ports)), ports);
  }
});

// ---- names ----

test('validateName accepts [A-Za-z0-9_.-]{1,64}', t => {
  for (const ok of ['web', 'a', 'A-z_0.9', 'node-1234', '.hidden', 'x..y', 'n'.repeat(64)]) t.is(validateName(ok), ok);
});

test('validateName refuses paths, empty, too long, unicode and blanks', t => {
  for (const bad of ['../x', 'a/b', '/abs', '', '.', '..', 'n'.repeat(65), 'café', 'α', 'web\u0000', 'a b', 'a\n', 'tab\t', 'x*', 'semi;colon']) {
    usage(t, () => validateName(bad), /invalid name/, JSON.stringify(bad));
  }
});

test('defaultName is "<comm>-<pid>", always a valid name', t => {
  t.is(defaultName('node', 1234), 'node-1234');
  t.is(defaultName('my prog/x', 7), 'my_prog_x-7');
  t.is(defaultName('', 1), 'proc-1');
  t.is(defaultName('ünïcode', 9), '_n_code-9');
  for (const comm of ['kworker/0:1', 'x'.repeat(100), '../..', 'a b c', '\u0000']) {
    t.notThrows(() => validateName(defaultName(comm, 4194304)), comm);
  }
});

// ---- pid ----

test('parsePid accepts process ids', t => {
  t.is(parsePid('1'), 1);
  t.is(parsePid(' 42 '), 42);
  t.is(parsePid('4194304'), 4194304);
});

test('parsePid refuses anything else', t => {
  for (const bad of ['0', '-1', 'abc', '1.5', '', ' ', '0x10', '1e3', '4194305', '12345678901', '12 34']) {
    usage(t, () => parsePid(bad), /--pid/, JSON.stringify(bad));
  }
});

// ---- addresses ----

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

test('parseAddress: an IPv4 address is a /32 of family 4 (bytes v4-mapped)', t => {
  const a = parseAddress('127.0.0.1');
  t.is(hex(a.addr), '00000000000000000000ffff7f000001');
  t.is(a.family, 4);
  t.is(a.len, 32);
  t.is(a.text, '127.0.0.1/32');
  t.is(parseAddress(' 10.1.2.3 ').len, 32);
});

test('parseAddress: IPv4 prefixes zero the host bits', t => {
  const a = parseAddress('10.1.2.3/8');
  t.is(a.len, 8);
  t.is(hex(a.addr), '00000000000000000000ffff0a000000');
  t.is(prefixText(a), '10.0.0.0/8');
  t.is(a.text, '10.0.0.0/8');
  const b = parseAddress('192.0.2.255/31');
  t.is(hex(b.addr), '00000000000000000000ffffc00002fe');
  const any = parseAddress('0.0.0.0/0');
  t.deepEqual([any.family, any.len], [4, 0]);
  t.is(hex(any.addr), '00000000000000000000ffff00000000');
  t.is(parseAddress('127.0.0.1/32').len, 32);
});

test('parseAddress: IPv6 addresses and prefixes', t => {
  t.is(hex(parseAddress('::1').addr), '00000000000000000000000000000001');
  t.deepEqual([parseAddress('::1').family, parseAddress('::1').len], [6, 128]);
  t.is(hex(parseAddress('2001:db8::1').addr), '20010db8000000000000000000000001');
  t.is(hex(parseAddress('2001:db8:0:0:1:2:3:4').addr), '20010db8000000000001000200030004');
  t.is(hex(parseAddress('fe80::').addr), 'fe800000000000000000000000000000');

  const p = parseAddress('2001:db8:ffff::1/32');
  t.is(p.len, 32);
  t.is(hex(p.addr), '20010db8000000000000000000000000');
  t.is(prefixText(p), '2001:db8::/32');
  const odd = parseAddress('fdff::/7');
  t.is(hex(odd.addr), 'fc000000000000000000000000000000');
  const all = parseAddress('::/0');
  t.deepEqual([all.family, all.len], [6, 0]);
  t.is(hex(all.addr), '0'.repeat(32));
});

test('parseAddress: an IPv6 text with an embedded IPv4 address', t => {
  t.is(hex(parseAddress('::ffff:1.2.3.4').addr), '00000000000000000000ffff01020304');
  t.is(hex(parseAddress('64:ff9b::192.0.2.1').addr), '0064ff9b0000000000000000c0000201');
  t.is(hex(parseAddress('1:2:3:4:5:6:1.2.3.4').addr), '00010002000300040005000601020304');
});

test('parseAddress refuses bad addresses and prefixes', t => {
  for (const bad of ['', 'nope', 'localhost', '256.0.0.1', '1.2.3', '1.2.3.4.5', '::1::2', '1.2.3.4/', '1.2.3.4/33', '1.2.3.4/-1', '1.2.3.4/8/9', '::1/129', '::1/1000', '1.2.3.4/x', '[::1]']) {
    usage(t, () => parseAddress(bad), /--address/, JSON.stringify(bad));
  }
});

// ---- listener ----

test('parseListener: ADDR:PORT, [V6]:PORT, *:PORT, :PORT and PORT', t => {
  t.deepEqual(parseListener('8080'), {address: undefined, port: 8080});
  t.deepEqual(parseListener('127.0.0.1:8080'), {address: '127.0.0.1', port: 8080});
  t.deepEqual(parseListener('[::1]:80'), {address: '::1', port: 80});
  t.deepEqual(parseListener('[::]:65535'), {address: '::', port: 65535});
  t.deepEqual(parseListener('*:443'), {address: undefined, port: 443});
  t.deepEqual(parseListener(':1'), {address: undefined, port: 1});
  t.deepEqual(parseListener(' 0.0.0.0:22 '), {address: '0.0.0.0', port: 22});
});

test('parseListener refuses malformed listeners', t => {
  for (const bad of ['', '127.0.0.1', '0', '65536', '127.0.0.1:0', ':65536', '::1:80', '[::1]80', 'host:80', '[zz]:80', '127.0.0.1:', '127.0.0.1:80x', '999.1.1.1:80', '1.2.3:80', '[1.2.3.4]:80', '[:::]:80']) {
    usage(t, () => parseListener(bad), /--listener/, JSON.stringify(bad));
  }
});

// ---- protocols and port specs ----

test('parseProtos: tcp, udp, tcp,udp in a fixed order; anything else refused', t => {
  t.deepEqual(parseProtos('tcp'), ['tcp']);
  t.deepEqual(parseProtos('udp,tcp'), ['tcp', 'udp']);
  t.deepEqual(parseProtos(' TCP , udp '), ['tcp', 'udp']);
  for (const bad of ['', 'sctp', 'tcp,tcp', 'tcp,', ',udp', 'tcp;udp']) usage(t, () => parseProtos(bad), /--proto/, JSON.stringify(bad));
});

test('parsePortSpec: all, or a port list', t => {
  t.is(parsePortSpec('all'), 'all');
  t.is(parsePortSpec(' ALL '), 'all');
  t.deepEqual(parsePortSpec('80,81-82'), [80, 81, 82]);
  usage(t, () => parsePortSpec('all,80'), /--ports/);
});

// ---- layout ----

function sampleService(): ServiceMeta {
  return {
    state: SVC_READY,
    pid: 0x01020304,
    createdNs: 0x1122334455667788n,
    netnsIno: 4026531840,
    ownerPid: 4242,
    flags: 0,
    comm: 'node',
    name: 'web-frontend',
    cgroupIno: 0x77,
    sockets: [
      {proto: 'tcp', family: 4, v6only: false, pid: 0x01020304, listenPort: 8080, listenAddr: parseAddress('127.0.0.1').addr, sockIno: 0x0a0b0c0d0e},
      {proto: 'tcp', family: 6, v6only: true, pid: 77, listenPort: 8080, listenAddr: parseAddress('::1').addr, sockIno: 99},
      undefined,
      {proto: 'udp', family: 6, v6only: false, pid: 78, listenPort: 53, listenAddr: parseAddress('::').addr, sockIno: 100},
    ],
  };
}

test('encodeService: every field at its offset, sockets by destination, and back', t => {
  const m = sampleService();
  const b = encodeService(m);
  t.is(SERVICE_SIZE, 248);
  t.is(b.readBigUInt64LE(112), 0x77n, 'cgroup_ino');
  t.is(b.length, SERVICE_SIZE);
  t.is(b.readUInt32LE(0), SVC_READY, 'state');
  t.is(b.readUInt32LE(4), 0x01020304, 'pid');
  t.is(b.readBigUInt64LE(8), 0x1122334455667788n, 'created_ns');
  t.is(b.readBigUInt64LE(16), 4026531840n, 'netns_ino');
  t.is(b.readUInt32LE(24), 4242, 'owner_pid');
  t.is(b.subarray(32, 48).toString('latin1'), 'node'.padEnd(16, '\0'), 'comm');
  t.is(b.subarray(48, 112).toString('latin1'), 'web-frontend'.padEnd(64, '\0'), 'name');
  const sock = (i: number) => b.subarray(120 + i * SOCKET_META_SIZE, 120 + (i + 1) * SOCKET_META_SIZE);
  t.is(sock(0).readBigUInt64LE(0), 0x0a0b0c0d0en, 'sock_ino');
  t.is(sock(0).readUInt32LE(8), 0x01020304, 'socket pid');
  t.is(sock(0).readUInt16LE(12), 8080, 'listen_port');
  t.is(sock(0)[14], 4, 'family');
  t.is(sock(0)[15], 1, 'flags: used');
  t.is(sock(1)[15], 3, 'flags: used, v6only');
  t.is(sock(2).toString('hex'), '0'.repeat(64), 'an unused destination is all zero');
  t.is(sock(3).subarray(16).toString('hex'), '0'.repeat(32), 'listen_addr ::');
  t.deepEqual(decodeService(b), m);
});

test('encodeService: a 64-character name fills name[64] and reads back whole', t => {
  const longest = 'n'.repeat(63) + 'z';
  t.is(validateName(longest), longest);
  const b = encodeService({...sampleService(), name: longest});
  t.is(b.subarray(48, 112).toString('latin1'), longest, 'no room for a NUL: the field is full');
  t.is(decodeService(b).name, longest);
  t.is(decodeService(encodeService({...sampleService(), comm: 'c'.repeat(40)})).comm, 'c'.repeat(16));
  t.is(decodeService(encodeService({...sampleService(), name: 'x'.repeat(80)})).name, 'x'.repeat(64));
});

test('add_ports index and value encoding: any-address services per family, table flags', t => {
  t.is(portIndex('tcp', 80), 80);
  t.is(portIndex('udp', 80), 0x10050);
  t.is(portIndex('udp', 65535), PORT_ENTRIES - 1);
  t.is(indexProto(portIndex('udp', 1)), 'udp');
  t.is(indexProto(portIndex('tcp', 65535)), 'tcp');
  for (const svc of [0, 1, MAX_SERVICES - 1]) {
    const v = withPortService(withPortService(0, 4, svc), 6, MAX_SERVICES - 1 - svc);
    t.is(portService(v, 4), svc);
    t.is(portService(v, 6), MAX_SERVICES - 1 - svc);
    t.is(v & PORT_SVC_MASK, svc + 1, 'service + 1, so 0 means none');
    t.is(portService(withPortService(v, 4, undefined), 4), undefined);
    t.is(portService(withPortService(v, 4, undefined), 6), MAX_SERVICES - 1 - svc, 'the other family untouched');
  }
  const f = withPortService(0, 4, 3) | PORT_F_REPLY;
  t.is(portService(f, 4), 3, 'the reply flag leaves the services alone');
  t.is(portService(f, 6), undefined);
  t.is(withPortService(f, 4, undefined), PORT_F_REPLY);
});

test('binding keys: prefixlen counts protocol, family and port; IPv4 in the first 4 bytes; the bits past the prefix are zero', t => {
  const p = parseAddress('10.0.0.0/8');
  const key = encodeBindingKey({proto: 'udp', port: 53, prefix: p});
  t.is(key.length, BINDING_KEY_SIZE);
  t.is(key.readUInt32LE(0), 32 + 8);
  t.deepEqual([key[4], key[5], key.readUInt16LE(6)], [1, 4, 53]);
  t.is(key.subarray(8).toString('hex'), '0a000000' + '0'.repeat(24));
  t.deepEqual(decodeBindingKey(key), {proto: 'udp', port: 53, prefix: {family: 4, addr: p.addr, len: 8}});
  const v6 = parseAddress('2001:db8::/32');
  t.deepEqual(decodeBindingKey(encodeBindingKey({proto: 'tcp', port: 0, prefix: v6})), {proto: 'tcp', port: 0, prefix: {family: 6, addr: v6.addr, len: 32}});
  // the program masks the address to each length it tries: the key must be stored masked too
  const loose = {family: 4 as const, addr: parseAddress('10.1.2.3').addr, len: 8};
  t.is(encodeBindingKey({proto: 'tcp', port: 80, prefix: loose}).subarray(8, 12).toString('hex'), '0a000000');
  t.deepEqual([...maskedAddr({family: 6, addr: parseAddress('2001:db8:ffff::1').addr, len: 36})].slice(0, 6), [0x20, 0x01, 0x0d, 0xb8, 0xf0, 0]);
  t.deepEqual(decodeBinding(encodeBinding(1023, 24)), {service: 1023, prefixLen: 24});
});

test('listenerText for IPv4 and IPv6 sockets', t => {
  const v4 = parseAddress('127.0.0.1').addr;
  t.is(listenerText({listenAddr: v4, listenPort: 8080, family: 4}), '127.0.0.1:8080');
  t.is(listenerText({listenAddr: new Uint8Array(16), listenPort: 80, family: 6}), '[::]:80');
  t.is(listenerText({listenAddr: parseAddress('::1').addr, listenPort: 1, family: 6}), '[::1]:1');
});

// ---- precedence: the program's rules, mirrored by resolve() ----

test('resolve: longest prefix, explicit port over all on a tie, families apart, no match', t => {
  const P = (text: string) => parseAddress(text);
  const list: Binding[] = [
    {proto: 'tcp', prefix: anyPrefix(4), port: 9100, service: 1},
    {proto: 'tcp', prefix: anyPrefix(6), port: 9100, service: 1},
    {proto: 'tcp', prefix: P('127.0.0.9/32'), port: 9100, service: 2},
    {proto: 'tcp', prefix: P('127.0.0.8/29'), port: 0, service: 3},
    {proto: 'tcp', prefix: P('127.0.0.8/29'), port: 5555, service: 4},
    {proto: 'tcp', prefix: P('::1/128'), port: 9100, service: 5},
    {proto: 'udp', prefix: anyPrefix(4), port: 0, service: 6},
  ];
  const at = (proto: 'tcp' | 'udp', addr: string, port: number) => {
    const a = P(addr);
    return resolveBinding(list, proto, a.family, a.addr, port);
  };
  t.is(at('tcp', '127.0.0.1', 9100), 1);
  t.is(at('tcp', '127.0.0.9', 9100), 2);
  t.is(at('tcp', '127.0.0.10', 9100), 3, 'all ports on a /29 beats port 9100 on /0');
  t.is(at('tcp', '127.0.0.10', 5555), 4, 'the explicit port wins the /29 tie');
  t.is(at('tcp', '127.0.0.10', 5556), 3);
  t.is(at('tcp', '127.0.0.20', 5556), undefined);
  t.is(at('tcp', '::1', 9100), 5);
  t.is(at('tcp', '::2', 9100), 1);
  t.is(at('udp', '127.0.0.9', 9100), 6, 'UDP bindings are apart from TCP ones');
  t.is(at('udp', '::1', 53), undefined, 'an IPv4 binding never takes IPv6');
  t.is(resolveBinding(list.filter(b => b.service !== 3), 'tcp', 4, P('127.0.0.10').addr, 9100), 1, 'remove one: the next takes over');
});

// ---- layout against bpf/headers/skl.h and the BTF of bpf/sk_dispatch.o ----

/** The numeric #defines of skl.h (values like 256, 0xffff, (1u << 16), (2 * 65536)). */
function headerDefines(): Map<string, number> {
  const out = new Map<string, number>();
  const text = readFileSync(repoFile('bpf/headers/skl.h'), 'utf8');
  for (const m of text.matchAll(/^#define\s+(SKL_\w+)\s+(.+?)\s*(?:\/\*.*)?$/gm)) {
    const expr = m[2].trim().replace(/^\((.*)\)$/, '$1');
    let v: number | undefined;
    let x: RegExpExecArray | null;
    if ((x = /^(0x[0-9a-f]+|\d+)u?$/i.exec(expr))) v = Number(x[1]);
    else if ((x = /^(\d+)u?\s*<<\s*(\d+)$/.exec(expr))) v = Number(x[1]) * 2 ** Number(x[2]);
    else if ((x = /^(\d+)\s*\*\s*(\d+)$/.exec(expr))) v = Number(x[1]) * Number(x[2]);
    if (v !== undefined) out.set(m[1], v);
  }
  return out;
}

test('layout constants match bpf/headers/skl.h', t => {
  const d = headerDefines();
  t.is(d.get('SKL_LAYOUT'), LAYOUT);
  t.is(d.get('SKL_MAX_SERVICES'), MAX_SERVICES);
  t.is(d.get('SKL_DESTS_PER_SERVICE'), DESTS_PER_SERVICE);
  t.is(d.get('SKL_MAX_BINDINGS'), MAX_BINDINGS);
  t.is(d.get('SKL_MAX_LENS'), MAX_LENS);
  t.is(d.get('SKL_SPARES'), SPARES);
  t.is(d.get('SKL_MAX_FLOWS'), MAX_FLOWS);
  t.is(d.get('SKL_SVC_F_UDP_REPLIES'), SVC_F_UDP_REPLIES);
  t.is(d.get('SKL_PORT_F_REPLY'), PORT_F_REPLY);
  t.is(d.get('SKL_PORT_ENTRIES'), PORT_ENTRIES);
  t.is(d.get('SKL_PORT_SVC_MASK'), PORT_SVC_MASK);
  t.is(d.get('SKL_PORT_V6_SHIFT'), PORT_V6_SHIFT);
  t.is(d.get('SKL_SVC_FREE'), SVC_FREE);
  t.is(d.get('SKL_SVC_READY'), SVC_READY);
  t.is(d.get('SKL_SVC_PENDING'), SVC_PENDING);
  t.is(d.get('SKL_SVC_F_FOLLOW'), SVC_F_FOLLOW);
  t.is(d.get('SKL_MAX_FOLLOW'), MAX_FOLLOW);
  t.is(d.get('SKL_FOLLOW_D_V4'), FOLLOW_D_V4);
  t.is(d.get('SKL_FOLLOW_D_V6'), FOLLOW_D_V6);
  t.is(d.get('SKL_PROTO_TCP'), portIndex('tcp', 0) >> 16);
  t.is(d.get('SKL_PROTO_UDP'), portIndex('udp', 0) >> 16);
});

interface BtfType {
  id: number;
  kind: string;
  name: string;
  size?: number;
  type_id?: number;
  nr_elems?: number;
  members?: {name: string; type_id: number; bits_offset: number}[];
  vars?: {type_id: number}[];
}

/**
 * A check of the BTF that clang wrote into bpf/sk_dispatch.o, as bpftool (an independent reader)
 * dumps it. Without bpftool: skipped with the reason, and failing under CI (scripts/setup.sh
 * installs it for `npm test`).
 */
function btfTest(title: string, impl: (t: import('ava').ExecutionContext, types: Map<number, BtfType>) => void, object = 'bpf/sk_dispatch.o'): void {
  needing(['bpftool']).test(title, (t, [bpftool]) => {
    const r = spawnSync(bpftool, ['-j', 'btf', 'dump', 'file', repoFile(object)], {encoding: 'utf8'});
    t.is(r.status, 0, r.stderr);
    const parsed = JSON.parse(r.stdout) as {types: BtfType[]};
    impl(t, new Map(parsed.types.map(ty => [ty.id, ty])));
  });
}

function struct(types: Map<number, BtfType>, name: string): BtfType {
  const s = [...types.values()].find(ty => ty.kind === 'STRUCT' && ty.name === name);
  if (s === undefined) throw new Error(`no struct ${name} in the BTF`);
  return s;
}

function offsets(s: BtfType): Record<string, number> {
  return Object.fromEntries((s.members ?? []).map(m => [m.name, m.bits_offset / 8]));
}

/** Follow typedefs/const/volatile to the underlying type. */
function resolve(types: Map<number, BtfType>, id: number): BtfType {
  let ty = types.get(id)!;
  while (['TYPEDEF', 'CONST', 'VOLATILE', 'RESTRICT'].includes(ty.kind)) ty = types.get(ty.type_id!)!;
  return ty;
}

function sizeOf(types: Map<number, BtfType>, id: number): number {
  const ty = resolve(types, id);
  if (ty.kind === 'ARRAY') return ty.nr_elems! * sizeOf(types, ty.type_id!);
  if (ty.kind === 'PTR') return 8;
  return ty.size!;
}

/** The BTF-defined maps: name → {type, max_entries, key size, value size}. */
function btfMaps(types: Map<number, BtfType>): Map<string, {type: number; maxEntries: number; keySize: number; valueSize: number}> {
  const out = new Map<string, {type: number; maxEntries: number; keySize: number; valueSize: number}>();
  const sec = [...types.values()].find(ty => ty.kind === 'DATASEC' && ty.name === '.maps');
  if (sec === undefined) throw new Error('no .maps section in the BTF');
  // __uint(name, N) is `int (*name)[N]`; __type(name, T) is `T *name`
  const num = (id: number): number => types.get(types.get(id)!.type_id!)!.nr_elems!;
  const pointee = (id: number): number => sizeOf(types, types.get(id)!.type_id!);
  for (const v of sec.vars ?? []) {
    const variable = types.get(v.type_id)!;
    const def = resolve(types, variable.type_id!);
    const m = Object.fromEntries((def.members ?? []).map(x => [x.name, x.type_id]));
    // a map of maps has `values` (its inner maps: an id each, 4 bytes) instead of `value`
    out.set(variable.name, {type: num(m.type), maxEntries: m.max_entries === undefined ? 0 : num(m.max_entries), keySize: pointee(m.key), valueSize: m.value === undefined ? 4 : pointee(m.value)});
  }
  return out;
}

btfTest('layout.ts agrees with the BTF of bpf/sk_dispatch.o: skl_service and skl_socket_meta', (t, types) => {
  const s = struct(types, 'skl_service');
  t.is(s.size, SERVICE_SIZE);
  const off = offsets(s);
  t.deepEqual(off, {state: 0, pid: 4, created_ns: 8, netns_ino: 16, owner_pid: 24, flags: 28, comm: 32, name: 48, cgroup_ino: 112, sockets: 120});
  const sm = struct(types, 'skl_socket_meta');
  t.is(sm.size, SOCKET_META_SIZE);
  t.deepEqual(offsets(sm), {sock_ino: 0, pid: 8, listen_port: 12, family: 14, flags: 15, listen_addr: 16});
  const sizes = Object.fromEntries((s.members ?? []).map(x => [x.name, sizeOf(types, x.type_id)]));
  t.is(sizes.sockets, DESTS_PER_SERVICE * SOCKET_META_SIZE);
  // and encodeService writes each field there
  const m = sampleService();
  const b = encodeService(m);
  t.is(b.readUInt32LE(off.state), m.state);
  t.is(b.readUInt32LE(off.pid), m.pid);
  t.is(b.readBigUInt64LE(off.created_ns), m.createdNs);
  t.is(b.readBigUInt64LE(off.netns_ino), BigInt(m.netnsIno));
  t.is(b.readUInt32LE(off.owner_pid), m.ownerPid);
  t.is(b.subarray(off.name, off.name + sizes.name).toString('latin1').replace(/\0+$/, ''), m.name);
  const so = offsets(sm);
  const sock3 = b.subarray(off.sockets + 3 * SOCKET_META_SIZE);
  t.is(sock3.readBigUInt64LE(so.sock_ino), 100n);
  t.is(sock3.readUInt16LE(so.listen_port), 53);
});

btfTest('layout.ts agrees with the BTF of skl.h (test/fixtures/layout_types.o): binding keys and values', (t, types) => {
  const k = struct(types, 'skl_binding_key');
  t.is(k.size, BINDING_KEY_SIZE);
  t.deepEqual(offsets(k), {prefixlen: 0, proto: 4, family: 5, port: 6, addr: 8});
  const v = struct(types, 'skl_binding');
  t.is(v.size, BINDING_SIZE);
  t.deepEqual(offsets(v), {service: 0, prefixlen: 4});
}, 'test/fixtures/layout_types.o');

btfTest('layout.ts agrees with the BTF of bpf/sk_dispatch.o: counters, the bindings hash, info', (t, types) => {
  const c = struct(types, 'skl_counters');
  t.deepEqual((c.members ?? []).map(m => m.name), [...COUNTER_FIELDS]);
  t.deepEqual((c.members ?? []).map(m => m.bits_offset / 8), COUNTER_FIELDS.map((_, i) => i * 8));
  t.is(c.size, COUNTER_FIELDS.length * 8);
  const rc = struct(types, 'skl_reply_counters');
  t.deepEqual((rc.members ?? []).map(m => m.name), [...REPLY_COUNTER_FIELDS]);

  // the inner map's template: the hash skl creates (state.ts) must match it
  const h = struct(types, 'binding_hash');
  const num = (id: number): number => types.get(types.get(id)!.type_id!)!.nr_elems!;
  const m = Object.fromEntries((h.members ?? []).map(x => [x.name, x.type_id]));
  t.deepEqual([num(m.type), num(m.max_entries), num(m.map_flags), num(m.key_size), num(m.value_size)], [1 /* HASH */, 1, 1 /* NO_PREALLOC */, BINDING_KEY_SIZE, BINDING_SIZE], 'the template: state.ts creates the real hash with MAX_BINDINGS entries');
  const i = struct(types, 'skl_info');
  t.is(i.size, INFO_SIZE);
  t.deepEqual(offsets(i), {layout: 0, reserved: 4, version: 8});
  t.deepEqual(decodeInfo(encodeInfo(LAYOUT, '1.2.3')), {layout: LAYOUT, version: '1.2.3'});
});

btfTest('layout.ts agrees with the BTF of bpf/sk_dispatch.o: follow keys and values', (t, types) => {
  const k = struct(types, 'skl_follow_key');
  t.is(k.size, FOLLOW_KEY_SIZE);
  t.deepEqual(offsets(k), {family: 0, pad: 1, port: 2, addr: 4});
  const v = struct(types, 'skl_follow');
  t.is(v.size, FOLLOW_SIZE);
  t.deepEqual(offsets(v), {service: 0, dests: 4, netns_cookie: 8});
  const key = {family: 4 as const, port: 7001, addr: parseAddress('127.0.0.1').addr};
  const enc = encodeFollowKey(key);
  t.is(enc.subarray(4, 8).toString('hex'), '7f000001');
  t.deepEqual(decodeFollowKey(enc), key);
  t.deepEqual(decodeFollow(encodeFollow(3, FOLLOW_D_V4 | FOLLOW_D_V6, 42n)), {service: 3, dests: 3, netnsCookie: 42n});
});

btfTest('layout.ts agrees with the BTF of bpf/sk_dispatch.o: skl_port, skl_flow_key, skl_flow', (t, types) => {
  const p = struct(types, 'skl_port');
  t.is(p.size, PORT_SIZE);
  t.deepEqual(offsets(p), {services: 0, lens4: PORT_LENS_AT[4], lens6: PORT_LENS_AT[6], own4: PORT_MASKS_AT[4].own, all4: PORT_MASKS_AT[4].all, own6: PORT_MASKS_AT[6].own, all6: PORT_MASKS_AT[6].all});
  const k = struct(types, 'skl_flow_key');
  t.is(k.size, FLOW_KEY_SIZE);
  t.deepEqual(offsets(k), {family: 0, pad: 1, client_port: 2, service_port: 4, pad2: 6, client: 8, local: 24});
  const f = struct(types, 'skl_flow');
  t.is(f.size, FLOW_SIZE);
  t.deepEqual(offsets(f), {last_ns: 0, service: 8, port: 12, pad: 14});
});

btfTest('layout.ts agrees with the BTF of bpf/sk_dispatch.o: the maps', (t, types) => {
  const maps = btfMaps(types);
  t.deepEqual([...maps.keys()].sort(), [...MAP_NAMES, ...KERNEL_MAP_NAMES].sort());
  const BPF_MAP_TYPE_HASH = 1;
  const BPF_MAP_TYPE_ARRAY = 2;
  const BPF_MAP_TYPE_PERCPU_ARRAY = 6;
  const BPF_MAP_TYPE_LRU_HASH = 9;
  const BPF_MAP_TYPE_ARRAY_OF_MAPS = 12;
  const BPF_MAP_TYPE_SOCKMAP = 15;
  const BPF_MAP_TYPE_SK_STORAGE = 24;
  t.deepEqual(maps.get('add_ports'), {type: BPF_MAP_TYPE_ARRAY, maxEntries: PORT_ENTRIES, keySize: 4, valueSize: PORT_SIZE});
  t.deepEqual(maps.get('binding_tables'), {type: BPF_MAP_TYPE_ARRAY_OF_MAPS, maxEntries: 1, keySize: 4, valueSize: 4});
  t.deepEqual(maps.get('target_socket'), {type: BPF_MAP_TYPE_SOCKMAP, maxEntries: MAX_DESTS, keySize: 4, valueSize: 8});
  t.deepEqual(maps.get('spare_socket'), {type: BPF_MAP_TYPE_SOCKMAP, maxEntries: MAX_DESTS * SPARES, keySize: 4, valueSize: 8});
  t.deepEqual(maps.get('spare_next'), {type: BPF_MAP_TYPE_ARRAY, maxEntries: MAX_DESTS, keySize: 4, valueSize: 4});
  t.deepEqual(maps.get('follow_cgroups'), {type: BPF_MAP_TYPE_HASH, maxEntries: MAX_SERVICES, keySize: 8, valueSize: 4});
  t.deepEqual(maps.get('sock_cgroup'), {type: BPF_MAP_TYPE_SK_STORAGE, maxEntries: 0, keySize: 4, valueSize: 8});
  t.deepEqual(maps.get('udp_flows'), {type: BPF_MAP_TYPE_LRU_HASH, maxEntries: MAX_FLOWS, keySize: FLOW_KEY_SIZE, valueSize: FLOW_SIZE});
  t.deepEqual(maps.get('reply_counters'), {type: BPF_MAP_TYPE_PERCPU_ARRAY, maxEntries: MAX_SERVICES, keySize: 4, valueSize: REPLY_COUNTER_FIELDS.length * 8});
  t.deepEqual(maps.get('counters'), {type: BPF_MAP_TYPE_PERCPU_ARRAY, maxEntries: MAX_SERVICES, keySize: 4, valueSize: COUNTER_FIELDS.length * 8});
  t.deepEqual(maps.get('services'), {type: BPF_MAP_TYPE_ARRAY, maxEntries: MAX_SERVICES, keySize: 4, valueSize: SERVICE_SIZE});
  t.deepEqual(maps.get('skl_info'), {type: BPF_MAP_TYPE_ARRAY, maxEntries: 1, keySize: 4, valueSize: INFO_SIZE});
  t.deepEqual(maps.get('follow'), {type: BPF_MAP_TYPE_HASH, maxEntries: MAX_FOLLOW, keySize: FOLLOW_KEY_SIZE, valueSize: FOLLOW_SIZE});
});
