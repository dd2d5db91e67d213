/**
 * Flooder for the XDP bench: run inside the peer namespace (nsenter --net=…), it sends the same
 * UDP frame out of an interface through an AF_PACKET socket with sendmmsg, as fast as it can, for a
 * while, then prints {"sent": N, "seconds": S} (frames the kernel accepted).
 *
 *   node dist/bench/xdp-flood.js IFACE DST_MAC SRC_MAC SRC_IP DST_IP SECONDS [PAYLOAD]
 */
import {fileURLToPath} from 'node:url';
import {libc} from '../src/ffi/index.js';

const AF_PACKET = 17;
const SOCK_RAW = 3;
const BATCH = 64;
const MMSGHDR = 64;
const IOVEC = 16;
const ENOBUFS = 105;
const EAGAIN = 11;

function mac(text: string): Buffer {
  const b = Buffer.from(text.split(':').map((x) => parseInt(x, 16)));
  if (b.length !== 6) throw new Error(`bad MAC ${text}`);
  return b;
}

function ipv4(text: string): Buffer {
  const b = Buffer.from(text.split('.').map(Number));
  if (b.length !== 4) throw new Error(`bad IPv4 address ${text}`);
  return b;
}

/** Ethernet + IPv4 + UDP (to port 9, discard) + payload. */
export function udpFrame(dstMac: string, srcMac: string, srcIp: string, dstIp: string, payload: number): Buffer {
  const f = Buffer.alloc(14 + 20 + 8 + payload, 0x5a);
  mac(dstMac).copy(f, 0);
  mac(srcMac).copy(f, 6);
  f.writeUInt16BE(0x0800, 12);
  const ip = f.subarray(14, 34);
  ip.fill(0);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + 8 + payload, 2);
  ip.writeUInt16BE(0x4000, 6); // DF
  ip[8] = 64;
  ip[9] = 17;
  ipv4(srcIp).copy(ip, 12);
  ipv4(dstIp).copy(ip, 16);
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += ip.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  ip.writeUInt16BE(~sum & 0xffff, 10);
  const udp = f.subarray(34, 42);
  udp.writeUInt16BE(9999, 0);
  udp.writeUInt16BE(9, 2);
  udp.writeUInt16BE(8 + payload, 4);
  udp.writeUInt16BE(0, 6); // no checksum (allowed for IPv4)
  return f;
}

function main(): void {
  const [iface, dstMac, srcMac, srcIp, dstIp, secondsText, payloadText] = process.argv.slice(2);
  if (!secondsText) throw new Error('usage: xdp-flood IFACE DST_MAC SRC_MAC SRC_IP DST_IP SECONDS [PAYLOAD]');
  const ifindex = libc.if_nametoindex(iface);
  if (ifindex === 0) throw new Error(`no interface ${iface}`);
  const frame = udpFrame(dstMac, srcMac, srcIp, dstIp, Number(payloadText ?? 18));

  // protocol 0: a send-only packet socket (receives nothing).
  const fd = libc.socket(AF_PACKET, SOCK_RAW, 0);
  if (fd < 0) throw new Error(`socket(AF_PACKET): errno ${libc.errno()}`);
  const sll = Buffer.alloc(20);
  sll.writeUInt16LE(AF_PACKET, 0);
  sll.writeInt32LE(ifindex, 4);
  if (libc.bind(fd, sll, sll.length) !== 0) throw new Error(`bind(AF_PACKET, ${iface}): errno ${libc.errno()}`);

  // Native memory: [frame][iovec][BATCH × mmsghdr], all pointing at the one frame.
  const frameOff = 0;
  const iovOff = 2048;
  const msgOff = iovOff + IOVEC;
  const mem = libc.allocZero(msgOff + BATCH * MMSGHDR);
  const view = Buffer.from(mem.view.buffer, mem.view.byteOffset, mem.view.byteLength);
  frame.copy(view, frameOff);
  view.writeBigUInt64LE(mem.ptr + BigInt(frameOff), iovOff);
  view.writeBigUInt64LE(BigInt(frame.length), iovOff + 8);
  for (let i = 0; i < BATCH; i++) {
    const m = msgOff + i * MMSGHDR;
    view.writeBigUInt64LE(mem.ptr + BigInt(iovOff), m + 16); // msg_iov
    view.writeBigUInt64LE(1n, m + 24); // msg_iovlen
  }

  const seconds = Number(secondsText);
  const start = process.hrtime.bigint();
  const end = start + BigInt(Math.round(seconds * 1e9));
  let sent = 0;
  let now = start;
  while (now < end) {
    for (let k = 0; k < 32; k++) {
      const n = libc.sendmmsg(fd, mem.ptr + BigInt(msgOff), BATCH, 0);
      if (n > 0) sent += n;
      else {
        const e = libc.errno();
        if (e !== ENOBUFS && e !== EAGAIN) throw new Error(`sendmmsg: errno ${e}`);
      }
    }
    now = process.hrtime.bigint();
  }
  libc.close(fd);
  mem.free();
  process.stdout.write(`${JSON.stringify({sent, seconds: Number(now - start) / 1e9, frameBytes: frame.length})}\n`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main();
