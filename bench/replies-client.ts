/**
 * Benchmark client for UDP replies: DNS queries (skl.test, type A) as fast as possible with
 * `--parallel` queries in flight, each from a socket CONNECTED to the port it asks — as a stub
 * resolver or dig does, it only takes a reply from that port, so on an extra port only replies
 * whose source port skl rewrote count. Time slices alternate between the given ports: round r runs
 * one slice per port, in an order that rotates between rounds. Prints one JSON line:
 * {"slices": [{"port", "round", "ms", "ok", "lost", "rate"}], "warmup": {port: queries}}.
 *
 *   node dist/bench/replies-client.js --host 127.0.0.1 --ports 5353,5454 --rounds 6 --slice-ms 500 [--parallel 8]
 */
import dgram from 'node:dgram';
import {alternate, sliceClientArgs} from './lib/slices.js';

const {host, ports, rounds, sliceMs, warmupMs, parallel, extra} = sliceClientArgs('500', {'timeout-ms': '500'});
const timeoutMs = Number(extra['timeout-ms']);
const QNAME = Buffer.from('\x03skl\x04test\x00\x00\x01\x00\x01', 'latin1');

/** One connected socket asking `port` in a loop until `end`: answered and lost queries. */
async function loop(port: number, end: number): Promise<{ok: number; lost: number}> {
  const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
  // a refused datagram (ICMP port unreachable) is an error on a connected socket: that query is lost
  s.on('error', () => {});
  await new Promise<void>((resolve) => s.connect(port, host, resolve));
  let ok = 0;
  let lost = 0;
  let id = Math.floor(Math.random() * 0xffff);
  try {
    while (performance.now() < end) {
      id = (id + 1) & 0xffff;
      const q = Buffer.concat([Buffer.from([id >> 8, id & 255, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]), QNAME]);
      const answered = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => {
          s.removeAllListeners('message');
          resolve(false);
        }, timeoutMs);
        s.on('message', (m) => {
          if (m.readUInt16BE(0) !== id) return;
          clearTimeout(timer);
          s.removeAllListeners('message');
          resolve(true);
        });
        s.send(q);
      });
      if (answered) ok++;
      else lost++;
    }
  } finally {
    s.close();
  }
  return {ok, lost};
}

async function slice(port: number, ms: number): Promise<{ok: number; lost: number; ms: number}> {
  const t0 = performance.now();
  const parts = await Promise.all(Array.from({length: parallel}, () => loop(port, t0 + ms)));
  return {ok: parts.reduce((n, p) => n + p.ok, 0), lost: parts.reduce((n, p) => n + p.lost, 0), ms: performance.now() - t0};
}

const {slices, warmup} = await alternate(ports, {rounds, sliceMs, warmupMs, attempts: (w) => w.ok + w.lost}, slice);
process.stdout.write(`${JSON.stringify({slices, warmup})}\n`);
