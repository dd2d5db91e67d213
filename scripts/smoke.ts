/**
 * A privileged smoke test of skl on the running kernel and Node: short, self-contained (no ava),
 * with generous hang-catching timeouts and no timed assertion, so it also runs under QEMU TCG
 * (scripts/test-kernel.sh) and under each Node major (scripts/test-node.sh).
 *
 *   node dist/scripts/smoke.js [--old-skl DIR/bin/run.js] [--old-skl-0.3.0 DIR/bin/run.js] [--only NAME,…]
 *
 * Steps: doctor (its answers agree with the running kernel), TCP over IPv4 and IPv6 (attach, serve,
 * status, detach), UDP (the reply from the extra port: a connected client takes it), a prefix binding (--address 127.0.0.9/32), xdp-count counting exactly N
 * packets over a veth pair, following a service in a cgroup across restarts, and (with --old-skl,
 * --old-skl-0.3.0: builds of those releases, scripts/old-skl.sh) upgrading skl 0.1.0's and skl
 * 0.3.0's state. Everything happens in throwaway network namespaces (loopback and link-local
 * addresses only) and cgroups of its own, removed at the end.
 * Prints `ok N - step` / `not ok N - step: why` and ends with "N passed, N failed"; exit 1 on a failure.
 */
import {spawn, spawnSync, type ChildProcess} from 'node:child_process';
import {existsSync, mkdirSync, readFileSync, rmdirSync} from 'node:fs';
import os from 'node:os';
import {fileURLToPath} from 'node:url';
import {cgroup2Mount} from '../src/sys/mounts.js';

const SKL = fileURLToPath(new URL('../../bin/run.js', import.meta.url));
const NODE = process.execPath;
/** Hang-catchers only: nothing asserts on time. Under TCG a node start alone can take seconds. */
const CMD_TIMEOUT_MS = 180_000;
const WAIT_MS = 180_000;

const args = process.argv.slice(2);
const argValue = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const oldSkl = argValue('--old-skl');
const oldSkl030 = argValue('--old-skl-0.3.0');
const only = argValue('--only')?.split(',');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, argv: string[], opts: {timeoutMs?: number; env?: NodeJS.ProcessEnv} = {}): Run {
  const r = spawnSync(cmd, argv, {encoding: 'utf8', timeout: opts.timeoutMs ?? CMD_TIMEOUT_MS, env: {...process.env, NO_COLOR: '1', ...opts.env}});
  if (r.error && (r.error as NodeJS.ErrnoException).code !== 'ETIMEDOUT') throw r.error;
  return {code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? ''};
}

const describe = (r: Run): string => `exit ${r.code}; stdout: ${r.stdout.trim().slice(-800)}; stderr: ${r.stderr.trim().slice(-800)}`;

function must(cmd: string, argv: string[], opts: {timeoutMs?: number} = {}): Run {
  const r = run(cmd, argv, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${argv.join(' ')}: ${describe(r)}`);
  return r;
}

/** Run skl (this checkout's, or `bin`) and require exit 0. */
function skl(argv: string[], bin = SKL): Run {
  return must(NODE, [bin, ...argv]);
}

function sklJson<T>(argv: string[], bin = SKL): T {
  const r = skl([...argv, '--json'], bin);
  return JSON.parse(r.stdout) as T;
}

// --- namespaces and processes we create (removed / killed by pid at the end) ---

const namespaces: string[] = [];
const children: ChildProcess[] = [];
let nsCounter = 0;

function netns(): {name: string; path: string} {
  nsCounter += 1;
  const name = `skl-smoke-${process.pid}-${nsCounter}`;
  must('ip', ['netns', 'add', name]);
  namespaces.push(name);
  must('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  return {name, path: `/run/netns/${name}`};
}

function cleanup(): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const name of namespaces) {
    run(NODE, [SKL, 'detach', '--all', '--netns', `/run/netns/${name}`], {timeoutMs: 60_000});
    run('ip', ['netns', 'delete', name], {timeoutMs: 30_000});
  }
}

/** Start `node -e script ...argv` inside a namespace; resolves once it printed "ready". */
async function startInNetns(ns: {path: string}, script: string, argv: string[], cgroupDir?: string): Promise<ChildProcess> {
  // in a cgroup: the shell moves itself there, then becomes the server (same pid)
  const cmd = cgroupDir === undefined ? [NODE, '-e', script, ...argv] : ['sh', '-c', `echo $$ > ${cgroupDir}/cgroup.procs && exec "$0" "$@"`, NODE, '-e', script, ...argv];
  const child = spawn('nsenter', [`--net=${ns.path}`, ...cmd], {stdio: ['ignore', 'pipe', 'pipe']});
  children.push(child);
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (err += s));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server not ready within ${WAIT_MS} ms: ${err}`)), WAIT_MS);
    const check = (): void => {
      if (out.includes('ready')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on('data', check);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code}) before it was ready: ${err}`));
    });
  });
  return child;
}

/** A TCP server answering "hello PID\n" on every connection, on each HOST:PORT given. */
const TCP_SERVER = `
const net = require('node:net');
const listen = process.argv.slice(1);
let left = listen.length;
for (const hp of listen) {
  const i = hp.lastIndexOf(':');
  const s = net.createServer((c) => c.end('hello ' + process.pid + '\\n'));
  s.listen({host: hp.slice(0, i), port: Number(hp.slice(i + 1)), ipv6Only: true}, () => { if (--left === 0) console.log('ready'); });
}`;

/** A UDP echo server on HOST PORT (replies "echo PID: <datagram>"). */
const UDP_SERVER = `
const dgram = require('node:dgram');
const [host, port] = process.argv.slice(1);
const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
s.on('message', (m, r) => s.send('echo ' + process.pid + ': ' + m, r.port, r.address));
s.bind(Number(port), host, () => console.log('ready'));`;

/**
 * Client: for each "tcp|udp|udpc HOST PORT" argument, connect (TCP: read to the end) or send one
 * datagram from an unconnected (udp) or connected (udpc) socket and wait for the reply; prints one
 * JSON array of {ok, data} / {ok: false, error} (refusal = ECONNREFUSED; no UDP answer within 20 s
 * = ETIMEDOUT).
 */
const CLIENT = `
const net = require('node:net');
const dgram = require('node:dgram');
const one = (proto, host, port) => new Promise((resolve) => {
  if (proto === 'tcp') {
    let data = '';
    const c = net.connect({host, port: Number(port)});
    c.setTimeout(60000, () => { c.destroy(); resolve({ok: false, error: 'ETIMEDOUT'}); });
    c.on('data', (d) => (data += d));
    c.on('end', () => resolve({ok: true, data}));
    c.on('error', (e) => resolve({ok: false, error: e.code}));
  } else {
    const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
    const t = setTimeout(() => { s.close(); resolve({ok: false, error: 'ETIMEDOUT'}); }, 20000);
    s.on('message', (m) => { clearTimeout(t); s.close(); resolve({ok: true, data: String(m)}); });
    s.on('error', (e) => { clearTimeout(t); s.close(); resolve({ok: false, error: e.code}); });
    // 'udpc': a connected socket, which hears the ICMP refusal (and would reject a reply from another port)
    if (proto === 'udpc') s.connect(Number(port), host, () => s.send('ping'));
    else s.send('ping', Number(port), host);
  }
});
(async () => {
  const out = [];
  const a = process.argv.slice(1);
  for (let i = 0; i < a.length; i += 3) out.push(await one(a[i], a[i + 1], a[i + 2]));
  console.log(JSON.stringify(out));
})();`;

interface Reply {
  ok: boolean;
  data?: string;
  error?: string;
}

function client(ns: {path: string}, ...targets: [string, string, number][]): Reply[] {
  const r = must('nsenter', [`--net=${ns.path}`, NODE, '-e', CLIENT, ...targets.flatMap(([p, h, n]) => [p, h, String(n)])]);
  return JSON.parse(r.stdout) as Reply[];
}

function expectServed(replies: Reply[], pid: number | undefined, what: string[]): void {
  replies.forEach((r, i) => {
    if (!r.ok || !r.data?.includes(String(pid))) throw new Error(`${what[i]}: expected an answer from pid ${pid}, got ${JSON.stringify(r)}`);
  });
}

function expectRefused(replies: Reply[], what: string[]): void {
  replies.forEach((r, i) => {
    if (r.ok || r.error !== 'ECONNREFUSED') throw new Error(`${what[i]}: expected ECONNREFUSED, got ${JSON.stringify(r)}`);
  });
}

interface StatusJson {
  attachments: {name: string; pid: number; ports: number[]; alive: boolean; layout?: number; retaken?: number; bindings: {protocol: string; prefix: string; ports: string}[]}[];
  upgrade?: string;
}

// --- the steps ---

interface DoctorJson {
  ok: boolean;
  kernel: string;
  checks: {id: string; ok: boolean; detail: string; minKernel: string | null; required: boolean}[];
  features: {id: string; available: boolean; planned: boolean; detail: string}[];
}

function parseVersion(v: string): number[] {
  return (/^(\d+)\.(\d+)/.exec(v) ?? ['', '0', '0']).slice(1).map(Number);
}
const atLeast = (a: number[], b: number[]): boolean => a[0] > b[0] || (a[0] === b[0] && a[1] >= b[1]);

async function doctor(): Promise<void> {
  const r = run(NODE, [SKL, 'doctor']);
  process.stdout.write(`${r.stdout.trimEnd().replace(/^/gm, '# ')}\n`);
  const report = sklJson<DoctorJson>(['doctor']);
  if (!report.ok) throw new Error(`doctor failed: ${report.checks.filter((c) => !c.ok && c.required).map((c) => `${c.id}: ${c.detail}`).join('; ')}`);
  // On a mainline-based kernel (no backports of these features), each probe's answer must agree
  // with the kernel's version: present from its minimum kernel on, absent before.
  const kernel = parseVersion(os.release());
  const wrong = report.checks
    .filter((c) => c.minKernel !== null && c.id !== 'kernel')
    .filter((c) => c.ok !== atLeast(kernel, parseVersion(c.minKernel!)))
    .map((c) => `${c.id} (Linux ≥${c.minKernel}) is ${c.ok ? 'available' : 'missing'} on ${os.release()}: ${c.detail}`);
  if (wrong.length > 0) throw new Error(`doctor's answers disagree with the kernel version: ${wrong.join('; ')}`);
  const shipped = report.features.filter((f) => !f.planned && !f.available);
  if (shipped.length > 0) throw new Error(`features unavailable: ${shipped.map((f) => `${f.id}: ${f.detail}`).join('; ')}`);
}

async function tcpBothFamilies(): Promise<void> {
  const ns = netns();
  const server = await startInNetns(ns, TCP_SERVER, ['127.0.0.1:7000', '::1:7000']);
  skl(['attach', '--netns', ns.path, '--pid', String(server.pid), '--name', 'web', '--ports', '8001,8002']);
  const targets: [string, string, number][] = [
    ['tcp', '127.0.0.1', 8001],
    ['tcp', '::1', 8002],
    ['tcp', '127.0.0.1', 7000],
  ];
  expectServed(client(ns, ...targets), server.pid, ['127.0.0.1:8001', '[::1]:8002', '127.0.0.1:7000']);
  const status = sklJson<StatusJson>(['status', '--netns', ns.path]);
  const web = status.attachments.find((a) => a.name === 'web');
  if (web === undefined || web.pid !== server.pid || web.ports.join(',') !== '8001,8002' || !web.alive) {
    throw new Error(`status does not show web with ports 8001,8002: ${JSON.stringify(status)}`);
  }
  skl(['detach', 'web', '--netns', ns.path]);
  expectRefused(client(ns, ['tcp', '127.0.0.1', 8001], ['tcp', '::1', 8002]), ['127.0.0.1:8001 after detach', '[::1]:8002 after detach']);
  expectServed(client(ns, ['tcp', '127.0.0.1', 7000]), server.pid, ['the service port after detach']);
}

async function udp(): Promise<void> {
  const ns = netns();
  const server = await startInNetns(ns, UDP_SERVER, ['127.0.0.1', '7002']);
  skl(['attach', '--netns', ns.path, '--pid', String(server.pid), '--proto', 'udp', '--name', 'dns', '--ports', '8004']);
  // a connected socket takes the reply only from the port it asked: skl rewrote its source port
  expectServed(client(ns, ['udpc', '127.0.0.1', 8004]), server.pid, ['udp 127.0.0.1:8004 (connected)']);
  skl(['detach', 'dns', '--netns', ns.path]);
  expectRefused(client(ns, ['udpc', '127.0.0.1', 8004]), ['udp 127.0.0.1:8004 after detach']);
}

async function prefixBinding(): Promise<void> {
  const ns = netns();
  const server = await startInNetns(ns, TCP_SERVER, ['127.0.0.1:7003']);
  // no --name: the default is <program>-<pid>, "node-PID" under every Node major (Node ≥24 renames
  // its main thread, the process's comm, to "MainThread")
  skl(['attach', '--netns', ns.path, '--pid', String(server.pid), '--ports', '9100', '--address', '127.0.0.9/32']);
  const pfx = `node-${server.pid}`;
  expectServed(client(ns, ['tcp', '127.0.0.9', 9100]), server.pid, ['127.0.0.9:9100']);
  expectRefused(client(ns, ['tcp', '127.0.0.1', 9100]), ['127.0.0.1:9100 (outside the prefix)']);
  const status = sklJson<StatusJson>(['status', '--netns', ns.path]);
  const binding = status.attachments.find((a) => a.name === pfx)?.bindings.find((b) => b.prefix === '127.0.0.9/32');
  if (binding?.ports !== '9100') throw new Error(`status does not show ${pfx} with 9100@127.0.0.9/32: ${JSON.stringify(status)}`);
  skl(['detach', pfx, '--netns', ns.path]);
  expectRefused(client(ns, ['tcp', '127.0.0.9', 9100]), ['127.0.0.9:9100 after detach']);
}

async function xdpCountVeth(): Promise<void> {
  const a = netns();
  const b = netns();
  const ifA = `sks${process.pid % 100000}a`;
  const ifB = `sks${process.pid % 100000}b`;
  must('ip', ['-n', a.name, 'link', 'add', ifA, 'type', 'veth', 'peer', 'name', ifB, 'netns', b.name]);
  // no IPv6 (router solicitations, MLD), static neighbours (no ARP): only our datagrams arrive
  must('ip', ['netns', 'exec', a.name, 'sysctl', '-qw', `net.ipv6.conf.${ifA}.disable_ipv6=1`]);
  must('ip', ['netns', 'exec', b.name, 'sysctl', '-qw', `net.ipv6.conf.${ifB}.disable_ipv6=1`]);
  must('ip', ['-n', a.name, 'addr', 'add', '169.254.77.1/30', 'dev', ifA]);
  must('ip', ['-n', b.name, 'addr', 'add', '169.254.77.2/30', 'dev', ifB]);
  must('ip', ['-n', a.name, 'link', 'set', ifA, 'up']);
  must('ip', ['-n', b.name, 'link', 'set', ifB, 'up']);
  const mac = (ns: string, dev: string): string => (JSON.parse(must('ip', ['-j', '-n', ns, 'link', 'show', dev]).stdout) as {address: string}[])[0].address;
  must('ip', ['-n', a.name, 'neigh', 'replace', '169.254.77.2', 'lladdr', mac(b.name, ifB), 'dev', ifA, 'nud', 'permanent']);
  must('ip', ['-n', b.name, 'neigh', 'replace', '169.254.77.1', 'lladdr', mac(a.name, ifA), 'dev', ifB, 'nud', 'permanent']);

  const counter = spawn(NODE, [SKL, 'xdp-count', ifA, '--netns', a.path, '--json', '--interval', '0.5'], {stdio: ['ignore', 'pipe', 'pipe'], env: {...process.env, NO_COLOR: '1'}});
  children.push(counter);
  let out = '';
  let err = '';
  counter.stdout!.setEncoding('utf8').on('data', (s: string) => (out += s));
  counter.stderr!.setEncoding('utf8').on('data', (s: string) => (err += s));
  const exited = new Promise<number | null>((resolve) => counter.on('close', (code) => resolve(code)));
  const records = (): Record<string, number | string>[] =>
    out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, number | string>);
  const samples = (): Record<string, number | string>[] => records().filter((r) => r.type === 'sample');
  const waitFor = async (what: string, ok: () => boolean): Promise<void> => {
    const deadline = Date.now() + WAIT_MS;
    while (!ok()) {
      if (counter.exitCode !== null) throw new Error(`xdp-count exited (${counter.exitCode}) while waiting for ${what}: ${err}`);
      if (Date.now() > deadline) throw new Error(`hang: no ${what} within ${WAIT_MS} ms; stderr: ${err}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  await waitFor('first sample', () => samples().length > 0);
  const N = 200;
  const SEND = `
    const s = require('node:dgram').createSocket('udp4');
    const buf = Buffer.alloc(18, 0x5a);
    let sent = 0;
    const next = (e) => { if (e) { console.error(e.message); process.exit(1); } if (sent === ${N}) return s.close(); sent++; s.send(buf, 9, '169.254.77.1', next); };
    next();`;
  must('nsenter', [`--net=${b.path}`, NODE, '-e', SEND]);
  await waitFor(`a sample with ${N} packets`, () => Number(samples().at(-1)?.packets ?? 0) >= N);
  const seen = samples().length;
  await waitFor('one more sample', () => samples().length > seen);
  counter.kill('SIGTERM');
  const code = await exited;
  if (code !== 0) throw new Error(`xdp-count exited ${code}: ${err}`);
  const summary = records().at(-1);
  const frame = 14 + 20 + 8 + 18;
  if (summary?.type !== 'summary' || summary.packets !== N || summary.bytes !== N * frame) {
    throw new Error(`expected a summary of exactly ${N} packets, ${N * frame} bytes; got ${JSON.stringify(summary)}`);
  }
  const left = must('ip', ['-j', '-n', a.name, 'link', 'show', ifA]).stdout;
  if (left.includes('"xdp"')) throw new Error(`an XDP program is still attached to ${ifA}: ${left}`);
}

async function upgradeFromV010(): Promise<void> {
  if (oldSkl === undefined || !existsSync(oldSkl)) throw new Error(`skl 0.1.0 not found (--old-skl ${oldSkl})`);
  const ns = netns();
  const server = await startInNetns(ns, TCP_SERVER, ['127.0.0.1:7000']);
  const udpServer = await startInNetns(ns, UDP_SERVER, ['127.0.0.1', '7002']);
  skl(['attach', '--netns', ns.path, '--pid', String(server.pid), '--name', 'web', '--ports', '8001-8002'], oldSkl);
  skl(['attach', '--netns', ns.path, '--pid', String(udpServer.pid), '--proto', 'udp', '--name', 'dns', '--ports', '8004'], oldSkl);
  expectServed(client(ns, ['tcp', '127.0.0.1', 8001]), server.pid, ['127.0.0.1:8001 (skl 0.1.0)']);
  const before = sklJson<StatusJson>(['status', '--netns', ns.path]);
  if (before.attachments.length !== 2 || before.attachments.some((a) => a.layout !== 0)) {
    throw new Error(`status of skl 0.1.0's state: expected two layout-0 attachments: ${JSON.stringify(before)}`);
  }
  const up = sklJson<{namespaces: {result: string}[]}>(['upgrade', '--netns', ns.path]);
  if (up.namespaces[0]?.result !== 'upgraded') throw new Error(`skl upgrade: ${JSON.stringify(up)}`);
  expectServed(client(ns, ['tcp', '127.0.0.1', 8001], ['tcp', '127.0.0.1', 8002]), server.pid, ['127.0.0.1:8001 (upgraded)', '127.0.0.1:8002 (upgraded)']);
  expectServed(client(ns, ['udpc', '127.0.0.1', 8004]), udpServer.pid, ['udp 127.0.0.1:8004 (upgraded; replies from the extra port)']);
  const after = sklJson<StatusJson>(['status', '--netns', ns.path]);
  const names = after.attachments.map((a) => `${a.name}:${a.ports.join(',')}`).sort();
  if (names.join(' ') !== 'dns:8004 web:8001,8002' || after.upgrade !== undefined) {
    throw new Error(`status after the upgrade: ${JSON.stringify(after)}`);
  }
  skl(['ports', 'add', 'web', '8003', '--netns', ns.path]);
  expectServed(client(ns, ['tcp', '127.0.0.1', 8003]), server.pid, ['127.0.0.1:8003 (added after the upgrade)']);
  skl(['detach', '--all', '--netns', ns.path]);
}

/** Run `fn` with a cgroup v2 directory of the smoke's own; its processes are killed and it is removed afterwards. */
async function withCgroup(name: string, fn: (dir: string) => Promise<void>): Promise<void> {
  const mount = cgroup2Mount();
  if (mount === undefined) throw new Error('cgroup v2 is not mounted');
  const dir = `${mount}/skl-smoke-${process.pid}-${name}`;
  mkdirSync(dir);
  try {
    await fn(dir);
  } finally {
    for (const pid of readFileSync(`${dir}/cgroup.procs`, 'utf8').split('\n').filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // gone
      }
    }
    for (let i = 0; i < 50; i++) {
      try {
        rmdirSync(dir);
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
}

/** Stop a server (SIGKILL) and wait until it is gone. */
async function kill(server: ChildProcess): Promise<void> {
  const gone = new Promise((resolve) => server.once('exit', resolve));
  server.kill('SIGKILL');
  await gone;
}

/** A service in a cgroup of its own, attached before it starts, restarted three times with no skl running. */
async function followRestarts(): Promise<void> {
  await withCgroup('follow', async (dir) => {
    const ns = netns();
    skl(['attach', '--netns', ns.path, '--cgroup', dir, '--listener', '127.0.0.1:7005', '--ports', '8005', '--name', 'followed']);
    for (let i = 1; i <= 3; i++) {
      const server = await startInNetns(ns, TCP_SERVER, ['127.0.0.1:7005'], dir);
      expectServed(client(ns, ['tcp', '127.0.0.1', 8005]), server.pid, [`127.0.0.1:8005 after start ${i}`]);
      await kill(server);
      expectRefused(client(ns, ['tcp', '127.0.0.1', 8005]), [`127.0.0.1:8005 after stop ${i}`]);
    }
    const status = sklJson<StatusJson>(['status', '--netns', ns.path]);
    const followed = status.attachments.find((a) => a.name === 'followed');
    if (followed?.retaken !== 3) throw new Error(`status does not count 3 sockets re-taken: ${JSON.stringify(status)}`);
    skl(['detach', 'followed', '--netns', ns.path]);
  });
}

/**
 * skl 0.3.0's state (layout 2): TCP over IPv4 and IPv6, UDP, a prefix binding, and a service
 * followed in a cgroup, restarted once under 0.3.0 (its socket is the one the follow program
 * stored). After `skl upgrade`: every port served by the same processes, the followed service
 * still followed (restarted again: the new process answers), `skl upgrade` again "already current".
 */
async function upgradeFromV030(): Promise<void> {
  if (oldSkl030 === undefined || !existsSync(oldSkl030)) throw new Error(`skl 0.3.0 not found (--old-skl-0.3.0 ${oldSkl030})`);
  await withCgroup('upgrade', async (dir) => {
    const ns = netns();
    const web = await startInNetns(ns, TCP_SERVER, ['127.0.0.1:7000', '::1:7000']);
    const dns = await startInNetns(ns, UDP_SERVER, ['127.0.0.1', '7002']);
    const pfx = await startInNetns(ns, TCP_SERVER, ['127.0.0.1:7010']);
    let fol = await startInNetns(ns, TCP_SERVER, ['127.0.0.1:7005'], dir);
    skl(['attach', '--netns', ns.path, '--pid', String(web.pid), '--name', 'web', '--ports', '8001-8002'], oldSkl030);
    skl(['attach', '--netns', ns.path, '--pid', String(dns.pid), '--proto', 'udp', '--name', 'dns', '--ports', '8004'], oldSkl030);
    skl(['attach', '--netns', ns.path, '--pid', String(pfx.pid), '--name', 'pfx', '--ports', '8010', '--address', '127.0.0.0/24'], oldSkl030);
    skl(['attach', '--netns', ns.path, '--cgroup', dir, '--listener', '127.0.0.1:7005', '--name', 'fol', '--ports', '8005'], oldSkl030);
    await kill(fol);
    fol = await startInNetns(ns, TCP_SERVER, ['127.0.0.1:7005'], dir);
    expectServed(client(ns, ['tcp', '127.0.0.1', 8005]), fol.pid, ['127.0.0.1:8005 after a restart (skl 0.3.0)']);
    const before = sklJson<StatusJson>(['status', '--netns', ns.path]);
    if (before.attachments.length !== 4 || before.attachments.some((a) => a.layout !== 2)) {
      throw new Error(`status of skl 0.3.0's state: expected four layout-2 services: ${JSON.stringify(before)}`);
    }
    const up = sklJson<{namespaces: {result: string; fromLayout: number}[]}>(['upgrade', '--netns', ns.path]);
    if (up.namespaces[0]?.result !== 'upgraded' || up.namespaces[0]?.fromLayout !== 2) throw new Error(`skl upgrade: ${JSON.stringify(up)}`);
    const served: [string, string, number, ChildProcess][] = [
      ['tcp', '127.0.0.1', 8001, web],
      ['tcp', '::1', 8002, web],
      ['udpc', '127.0.0.1', 8004, dns], // connected: the reply from the extra port (UDP replies, the upgrade's default)
      ['tcp', '127.0.0.5', 8010, pfx],
      ['tcp', '127.0.0.1', 8005, fol],
    ];
    for (const [proto, host, port, server] of served) expectServed(client(ns, [proto, host, port]), server.pid, [`${proto} ${host}:${port} (upgraded)`]);
    expectRefused(client(ns, ['tcp', '127.0.1.1', 8010]), ['127.0.1.1:8010 (outside the prefix, upgraded)']);
    const after = sklJson<StatusJson>(['status', '--netns', ns.path]);
    const view = (st: StatusJson): string => JSON.stringify(st.attachments.map((a) => [a.name, a.pid, a.alive, a.bindings]));
    if (view(after) !== view(before) || after.upgrade !== undefined) throw new Error(`status after the upgrade: ${view(after)}; before: ${view(before)}`);
    // still followed, by the new follow program
    await kill(fol);
    fol = await startInNetns(ns, TCP_SERVER, ['127.0.0.1:7005'], dir);
    expectServed(client(ns, ['tcp', '127.0.0.1', 8005]), fol.pid, ['127.0.0.1:8005 after a restart (upgraded)']);
    const again = skl(['upgrade', '--netns', ns.path]);
    if (!/already current/.test(again.stdout)) throw new Error(`skl upgrade again: ${describe(again)}`);
    skl(['detach', '--all', '--netns', ns.path]);
  });
}

const STEPS: [string, string, () => Promise<void>][] = [
  ['doctor', 'skl doctor passes and its answers agree with the kernel', doctor],
  ['tcp', 'TCP over IPv4 and IPv6: attach, serve, status, detach', tcpBothFamilies],
  ['udp', 'UDP: attach --proto udp, serve, detach', udp],
  ['prefix', 'a prefix binding (--address 127.0.0.9/32): that address only; the default name node-PID', prefixBinding],
  ['xdp', 'xdp-count counts exactly N packets over a veth pair, then detaches', xdpCountVeth],
  ['follow', 'following a service in a cgroup across 3 restarts, with no skl running', followRestarts],
  ['upgrade', "skl upgrade from skl 0.1.0's state: every port still served", upgradeFromV010],
  ['upgrade-0.3.0', "skl upgrade from skl 0.3.0's state (a prefix binding, a followed service restarted before and after): every port still served, still followed", upgradeFromV030],
];

async function main(): Promise<number> {
  if (process.geteuid?.() !== 0) {
    console.error('smoke: run as root (it creates network namespaces and loads BPF programs)');
    return 2;
  }
  console.log(`# smoke: Linux ${os.release()}, Node ${process.version}`);
  let passed = 0;
  let failed = 0;
  let n = 0;
  const steps = STEPS.filter(([id]) => (only ? only.includes(id) : (id !== 'upgrade' || oldSkl !== undefined) && (id !== 'upgrade-0.3.0' || oldSkl030 !== undefined)));
  try {
    for (const [, title, fn] of steps) {
      n += 1;
      const started = Date.now();
      try {
        await fn();
        passed += 1;
        console.log(`ok ${n} - ${title} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
      } catch (error) {
        failed += 1;
        console.log(`not ok ${n} - ${title}: ${String((error as Error).message ?? error).replace(/\n/g, ' | ')}`);
      }
    }
  } finally {
    cleanup();
  }
  console.log(`${passed} passed, ${failed} failed`);
  return failed > 0 ? 1 : 0;
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    cleanup();
    process.exit(130);
  });
}

process.exitCode = await main();
