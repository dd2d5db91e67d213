// Unit tests (no root): parsing of /proc/net/{tcp,tcp6,udp,udp6} and IPv6 formatting.
import test from 'ava';
import {formatV6, isServerSocket, parseProcNet} from '../src/sys/sockets.js';

const row = (sl: number, local: string, remote: string, state: string, inode: number): string =>
  `  ${sl}: ${local} ${remote} ${state} 00000000:00000000 00:00000000 00000000     0        0 ${inode} 1 0000000000000000 100 0 0 10 0`;

const TCP_HEADER = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode';
const TCP6_HEADER =
  '  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode';

const TCP = [
  TCP_HEADER,
  row(0, '0100007F:1F90', '00000000:0000', '0A', 12345), // 127.0.0.1:8080 LISTEN
  row(1, '00000000:0035', '00000000:0000', '0A', 12346), // 0.0.0.0:53 LISTEN
  row(2, '0100007F:1F90', '0100007F:D431', '01', 12347), // established from 127.0.0.1:54321
  row(3, '0201FEA9:0050', '0101FEA9:C350', '06', 0), // 169.254.1.2:80 TIME_WAIT, no inode
  '',
].join('\n');

const TCP6 = [
  TCP6_HEADER,
  row(0, '00000000000000000000000000000000:1F90', '00000000000000000000000000000000:0000', '0A', 2001), // [::]:8080
  row(1, '00000000000000000000000001000000:0016', '00000000000000000000000000000000:0000', '0A', 2002), // [::1]:22
  row(2, '0000000000000000FFFF00000100007F:01BB', '00000000000000000000000000000000:0000', '0A', 2003), // [::ffff:127.0.0.1]:443
  row(3, '000080FE000000000000000001000000:0016', '000080FE000000000000000002000000:E000', '01', 2004), // fe80::1 ← fe80::2
  row(4, 'B80D0120000000000000000001000000:0050', '00000000000000000000000000000000:0000', '0A', 2005), // [2001:db8::1]:80
].join('\n');

const UDP = [
  '   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops',
  row(0, '00000000:0035', '00000000:0000', '07', 3001), // 0.0.0.0:53 unconnected
  row(1, '0100007F:9C40', '0100007F:0035', '01', 3002), // connected to 127.0.0.1:53
].join('\n');

test('parseProcNet: IPv4 TCP rows, addresses and ports in host order', t => {
  const entries = parseProcNet(TCP, 'tcp', 4);
  t.is(entries.length, 4);
  t.deepEqual(entries[0], {
    proto: 'tcp',
    family: 4,
    address: '127.0.0.1',
    port: 8080,
    remoteAddress: '0.0.0.0',
    remotePort: 0,
    state: 0x0a,
    inode: 12345,
  });
  t.like(entries[1], {address: '0.0.0.0', port: 53, state: 0x0a, inode: 12346});
  t.like(entries[2], {address: '127.0.0.1', port: 8080, remoteAddress: '127.0.0.1', remotePort: 54321, state: 1, inode: 12347});
  t.like(entries[3], {address: '169.254.1.2', port: 80, remoteAddress: '169.254.1.1', remotePort: 50000, state: 6, inode: 0});
  t.deepEqual(
    entries.filter(isServerSocket).map((e) => e.inode),
    [12345, 12346],
  );
});

test('parseProcNet: IPv6 TCP rows (any, loopback, v4-mapped, link-local, global)', t => {
  const entries = parseProcNet(TCP6, 'tcp', 6);
  t.deepEqual(
    entries.map((e) => [e.address, e.port, e.family, e.inode]),
    [
      ['::', 8080, 6, 2001],
      ['::1', 22, 6, 2002],
      ['::ffff:127.0.0.1', 443, 6, 2003],
      ['fe80::1', 22, 6, 2004],
      ['2001:db8::1', 80, 6, 2005],
    ],
  );
  t.like(entries[3], {remoteAddress: 'fe80::2', remotePort: 0xe000, state: 1});
  t.deepEqual(
    entries.filter(isServerSocket).map((e) => e.inode),
    [2001, 2002, 2003, 2005],
  );
});

test('parseProcNet: UDP rows; only unconnected sockets are server sockets', t => {
  const entries = parseProcNet(UDP, 'udp', 4);
  t.like(entries[0], {proto: 'udp', address: '0.0.0.0', port: 53, state: 7, remotePort: 0, inode: 3001});
  t.like(entries[1], {port: 40000, remoteAddress: '127.0.0.1', remotePort: 53, state: 1, inode: 3002});
  t.deepEqual(
    entries.filter(isServerSocket).map((e) => e.inode),
    [3001],
  );
});

test('parseProcNet: header only, empty text and short lines give no entries', t => {
  t.deepEqual(parseProcNet(TCP_HEADER, 'tcp', 4), []);
  t.deepEqual(parseProcNet('', 'tcp', 4), []);
  t.deepEqual(parseProcNet(`${TCP_HEADER}\n  0: garbage\n\n`, 'tcp', 4), []);
});

const v6 = (hex: string): Uint8Array => Buffer.from(hex.replace(/[^0-9a-f]/gi, ''), 'hex');

test('formatV6 follows RFC 5952', t => {
  t.is(formatV6(new Uint8Array(16)), '::');
  t.is(formatV6(v6('0000 0000 0000 0000 0000 0000 0000 0001')), '::1');
  t.is(formatV6(v6('0000 0000 0000 0000 0000 ffff 7f00 0001')), '::ffff:127.0.0.1');
  t.is(formatV6(v6('fe80 0000 0000 0000 0000 0000 0000 0001')), 'fe80::1');
  t.is(formatV6(v6('2001 0db8 0000 0000 0000 0000 0000 0001')), '2001:db8::1');
  t.is(formatV6(v6('2001 0db8 0000 0000 0000 0000 0000 0000')), '2001:db8::');
  // Lower case, no leading zeros.
  t.is(formatV6(v6('2001 0DB8 00AB 0CDE 0000 0001 0002 0003')), '2001:db8:ab:cde:0:1:2:3');
  // A single zero group is not compressed.
  t.is(formatV6(v6('2001 0db8 0000 0001 0001 0001 0001 0001')), '2001:db8:0:1:1:1:1:1');
  // The longest run is compressed; on a tie, the first.
  t.is(formatV6(v6('2001 0000 0000 0001 0000 0000 0000 0001')), '2001:0:0:1::1');
  t.is(formatV6(v6('2001 0db8 0000 0000 0001 0000 0000 0001')), '2001:db8::1:0:0:1');
  t.is(formatV6(v6('0000 0000 0001 0000 0000 0000 0000 0000')), '0:0:1::');
  t.is(formatV6(v6('0001 0002 0003 0004 0005 0006 0007 0008')), '1:2:3:4:5:6:7:8');
});
