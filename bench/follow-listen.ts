/**
 * Benchmark worker: listen() + close() in a loop on 127.0.0.1:PORT, measuring this process's CPU
 * time (user + system, so the kernel's work, programs included, is counted). Started inside a cgroup
 * by bench/follow.ts; each line on stdin is a number of iterations to run, answered with one JSON
 * line {"n", "cpuUs", "failed"}. Prints {"event":"ready","pid"} first; exits when stdin closes.
 *
 *   node dist/bench/follow-listen.js --port N
 */
import {createInterface} from 'node:readline';
import {parseArgs} from 'node:util';
import {libc} from '../src/ffi/index.js';

const AF_INET = 2;
const SOCK_STREAM = 1;
const {values} = parseArgs({options: {port: {type: 'string'}}});
const port = Number(values.port);

// struct sockaddr_in for 127.0.0.1:port
const addr = Buffer.alloc(16);
addr.writeUInt16LE(AF_INET, 0);
addr.writeUInt16BE(port, 2);
addr.writeUInt32BE(0x7f000001, 4);

/** One socket bound to the port, listening, closed: false when a step failed. */
function once(): boolean {
  const fd = libc.socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  const ok = libc.bind(fd, addr, addr.length) === 0 && libc.listen(fd, 16) === 0;
  libc.close(fd);
  return ok;
}

process.stdout.write(`${JSON.stringify({event: 'ready', pid: process.pid})}\n`);
createInterface({input: process.stdin}).on('line', (line) => {
  const n = Number(line);
  let failed = 0;
  const t0 = process.cpuUsage();
  for (let i = 0; i < n; i++) if (!once()) failed++;
  const d = process.cpuUsage(t0);
  process.stdout.write(`${JSON.stringify({n, cpuUs: d.user + d.system, failed})}\n`);
}).on('close', () => process.exit(0));
