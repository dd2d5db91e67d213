// Helpers of the UDP replies tests (test/replies.test.ts): a real DNS server (dnsmasq) and a toy
// UDP server in Python (the one that can send a UDP_SEGMENT batch), a Node client that asks
// several ports from one socket and records which port each reply came from, the tc programs on a
// namespace's interfaces as the kernel lists them, and the kernel's UDP counters of a namespace.
//
// Every process started here runs inside a test namespace and is stopped by its own PID.
import type {ChildProcess} from 'node:child_process';
import {existsSync, mkdtempSync, rmSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {createInterface} from 'node:readline';
import type {ExecutionContext} from 'ava';
import {listTcFilters, progInfoByFd, tcxProgramIds, type TcDirection} from '../../src/bpf/index.js';
import {libbpf, libc} from '../../src/ffi/index.js';
import {listInterfaces, Netns as SysNetns} from '../../src/sys/index.js';
import {eventually} from './dispatcher.js';
import {findExecutable} from './privileged.js';
import {stopChild, type Netns} from './netns.js';

export const DNS_NAME = 'skl.test';
export const DNS_ANSWER = '127.0.0.7';

export function tempDir(t: ExecutionContext): string {
  const dir = mkdtempSync(`${tmpdir()}/skl-replies-`);
  t.teardown(() => rmSync(dir, {recursive: true, force: true}));
  return dir;
}

/** `ss -Hlntu` inside the namespace. */
const listening = (ns: Netns): string => ns.exec('ss', ['-Hlntu']).stdout;

/**
 * dnsmasq in the foreground inside `ns`, answering skl.test with 127.0.0.7 and nothing else (no
 * resolv.conf, no hosts file, no upstream), stopped at teardown. Waits until `ss` shows every
 * listed socket (e.g. "127.0.0.1:5353").
 */
export async function startDnsmasq(t: ExecutionContext, ns: Netns, args: readonly string[], sockets: readonly string[]): Promise<ChildProcess> {
  const dir = tempDir(t);
  const child = ns.spawn(
    'dnsmasq',
    ['--keep-in-foreground', '--no-resolv', '--no-hosts', '--conf-file=/dev/null', '--bind-interfaces', `--address=/${DNS_NAME}/${DNS_ANSWER}`, `--pid-file=${dir}/pid`, '--user=root', '--log-facility=-', ...args],
    {stdio: ['ignore', 'ignore', 'pipe']},
  );
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  t.teardown(() => stopChild(child));
  const up = await eventually(() => sockets.every((s) => listening(ns).includes(s)), 20_000, 100);
  if (!up) throw new Error(`dnsmasq did not listen on ${sockets.join(', ')}; stderr: ${stderr}; ss: ${listening(ns)}`);
  return child;
}

/** `dig` inside `ns`: one try, so that counts are exact. */
export async function dig(ns: Netns, server: string, port: number, extra: readonly string[] = []): Promise<{answer: string; output: string; code: number | null}> {
  const r = await ns.execAsync('dig', [`@${server}`, '-p', String(port), '+short', '+tries=1', '+time=3', ...extra, DNS_NAME], {timeoutMs: 20_000});
  return {answer: r.stdout.trim(), output: `${r.stdout}${r.stderr}`.trim(), code: r.code};
}

/**
 * A toy UDP server in Python: each datagram ({"size": N, "gso": G, "nocheck": B} as JSON) is
 * answered with N bytes of a fixed pattern (byte i = (i * 7 + 3) & 255), in one sendmsg; with G > 0
 * as a GSO batch of G-byte segments (UDP_SEGMENT, which Node cannot set); with B, IPv4 without a
 * UDP checksum (SO_NO_CHECK: the checksum field is 0). It prints {"event":"listening",...},
 * then {"event":"sent","bytes":N,"gso":G} per reply: a sendmsg that succeeded with UDP_SEGMENT
 * proves the reply left as one GSO batch.
 */
const PY_SERVER = `
import json, os, socket, struct, sys
host, port = sys.argv[1], int(sys.argv[2])
info = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0]
s = socket.socket(info[0], socket.SOCK_DGRAM)
s.bind(info[4])
print(json.dumps({"event": "listening", "pid": os.getpid(), "port": s.getsockname()[1]}), flush=True)
SOL_UDP, UDP_SEGMENT, SO_NO_CHECK = 17, 103, 11
while True:
    data, addr = s.recvfrom(65535)
    req = json.loads(data)
    size, gso, nocheck = int(req.get("size", 16)), int(req.get("gso", 0)), bool(req.get("nocheck"))
    payload = bytes((i * 7 + 3) & 255 for i in range(size))
    cmsg = [(SOL_UDP, UDP_SEGMENT, struct.pack("H", gso))] if gso else []
    s.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1 if nocheck else 0)
    s.sendmsg([payload], cmsg, 0, addr)
    print(json.dumps({"event": "sent", "bytes": size, "gso": gso, "nocheck": nocheck}), flush=True)
`;

export interface PyServer {
  pid: number;
  port: number;
  events: Record<string, unknown>[];
  stop(): Promise<void>;
}

export async function startPyServer(t: ExecutionContext, ns: Netns, host: string, port: number): Promise<PyServer> {
  const python = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : (findExecutable('python3') ?? 'python3');
  const child = ns.spawn(python, ['-c', PY_SERVER, host, String(port)], {stdio: ['ignore', 'pipe', 'pipe']});
  t.teardown(() => stopChild(child));
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const events: Record<string, unknown>[] = [];
  const first = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`python server did not start; stderr: ${stderr}`)), 15_000);
    createInterface({input: child.stdout!}).on('line', (line) => {
      const e = JSON.parse(line) as Record<string, unknown>;
      events.push(e);
      if (e.event === 'listening') {
        clearTimeout(timer);
        resolve(e);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`python server exited (${code}); stderr: ${stderr}`));
    });
  });
  return {pid: first.pid as number, port: first.port as number, events, stop: () => stopChild(child)};
}

/**
 * The client: from ONE UDP socket (unconnected, or connected per ask with `connect`), asks each
 * port in turn and waits for its whole answer, recording the source port of every datagram that
 * arrives. A DNS ask sends a query for skl.test (a new id each time) and is answered by one
 * datagram whose id matches and whose answer is 127.0.0.7; a toy ask sends {"size","gso"} and is
 * answered when `size` bytes of the toy pattern have arrived. Prints {"asks":[{"asked":PORT,
 * "from":[PORTS],"bytes":N,"datagrams":N,"ok":BOOL}]}.
 */
const CLIENT = `
const dgram = require('node:dgram');
const o = JSON.parse(process.argv[1]);
const family = o.host.includes(':') ? 'udp6' : 'udp4';
const pattern = (n) => Buffer.from(Array.from({length: n}, (_, i) => (i * 7 + 3) & 255));
const dnsQuery = (id) => Buffer.concat([Buffer.from([id >> 8, id & 255, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]), Buffer.from('\\x03skl\\x04test\\x00\\x00\\x01\\x00\\x01', 'latin1')]);
const out = [];
let sock;
const open = () => new Promise((resolve) => { sock = dgram.createSocket(family); sock.bind(0, resolve); });
async function ask(port, i) {
  if (o.connect) { if (sock) sock.close(); await open(); await new Promise((r) => sock.connect(port, o.host, r)); }
  const rec = {asked: port, from: [], bytes: 0, datagrams: 0, ok: false};
  const chunks = [];
  const id = 0x1000 + i;
  const done = new Promise((resolve) => {
    const timer = setTimeout(resolve, o.timeoutMs || 3000);
    sock.removeAllListeners('message');
    sock.on('message', (m, r) => {
      rec.from.push(r.port); rec.datagrams++; rec.bytes += m.length; chunks.push(m);
      if (o.kind === 'dns') {
        rec.ok = m.readUInt16BE(0) === id && m.subarray(-4).equals(Buffer.from([127, 0, 0, 7]));
        clearTimeout(timer); resolve();
      } else if (rec.bytes >= o.size) {
        rec.ok = Buffer.concat(chunks).equals(pattern(o.size));
        clearTimeout(timer); resolve();
      }
    });
  });
  const msg = o.kind === 'dns' ? dnsQuery(id) : Buffer.from(JSON.stringify({size: o.size, gso: o.gso || 0, nocheck: !!o.nocheck}));
  if (o.connect) sock.send(msg); else sock.send(msg, port, o.host);
  await done;
  out.push(rec);
}
(async () => {
  if (!o.connect) await open();
  for (let i = 0; i < o.ports.length; i++) await ask(o.ports[i], i);
  console.log(JSON.stringify({asks: out}));
  process.exit(0);
})();
`;

export interface Ask {
  asked: number;
  /** the source port of each datagram that arrived */
  from: number[];
  bytes: number;
  datagrams: number;
  /** the whole answer arrived, and it was the right one */
  ok: boolean;
}

export interface AskOptions {
  host: string;
  /** asked in this order, from one socket */
  ports: number[];
  kind: 'dns' | 'toy';
  /** toy: reply size, and GSO segment size (0: none) */
  size?: number;
  gso?: number;
  /** toy, IPv4: the reply without a UDP checksum (0) */
  nocheck?: boolean;
  /** a socket connected to each port in turn (it only takes replies from that port) */
  connect?: boolean;
  timeoutMs?: number;
}

export async function ask(ns: Netns, o: AskOptions): Promise<Ask[]> {
  const r = await ns.execAsync(process.execPath, ['-e', CLIENT, JSON.stringify(o)], {timeoutMs: 60_000, check: true});
  return (JSON.parse(r.stdout) as {asks: Ask[]}).asks;
}

/** The kernel's UDP counters of the namespace (/proc/net/snmp and snmp6, read from inside it). */
export function udpCounters(ns: Netns): {in4: number; csum4: number; in6: number; csum6: number; reasm4: number; reasm6: number} {
  const snmp = ns.exec('cat', ['/proc/net/snmp'], {check: true}).stdout.split('\n');
  const row = (prefix: string, field: string): number => {
    const lines = snmp.filter((l) => l.startsWith(`${prefix}:`));
    const names = lines[0].split(/\s+/).slice(1);
    return Number(lines[1].split(/\s+/).slice(1)[names.indexOf(field)]);
  };
  const six = new Map(
    ns
      .exec('cat', ['/proc/net/snmp6'], {check: true})
      .stdout.split('\n')
      .map((l) => l.trim().split(/\s+/))
      .filter((p) => p.length === 2)
      .map(([k, v]) => [k, Number(v)]),
  );
  return {
    in4: row('Udp', 'InDatagrams'),
    csum4: row('Udp', 'InCsumErrors'),
    reasm4: row('Ip', 'ReasmOKs'),
    in6: six.get('Udp6InDatagrams') ?? 0,
    csum6: six.get('Udp6InCsumErrors') ?? 0,
    reasm6: six.get('Ip6ReasmOKs') ?? 0,
  };
}

export interface TcProgramSeen {
  ifname: string;
  ifindex: number;
  direction: TcDirection;
  kind: 'tcx' | 'clsact';
  progId: number;
  name: string;
}

/** The name of a program by id ('' when it is gone). */
function progName(id: number): string {
  const fd = libbpf.bpf_prog_get_fd_by_id(id);
  if (fd < 0) return '';
  try {
    return progInfoByFd(fd).name;
  } finally {
    libc.close(fd);
  }
}

/**
 * Every tc program on every interface of the namespace, as the kernel lists them: TCX programs
 * (BPF_PROG_QUERY) and clsact cls_bpf filters (an RTM_GETTFILTER dump), whoever attached them.
 */
export function tcProgramsOf(nsPath: string): TcProgramSeen[] {
  const ns = SysNetns.open(nsPath);
  try {
    return ns.run(() => {
      const out: TcProgramSeen[] = [];
      for (const i of listInterfaces()) {
        for (const direction of ['ingress', 'egress'] as const) {
          for (const progId of tcxProgramIds(i.ifindex, direction)) out.push({ifname: i.name, ifindex: i.ifindex, direction, kind: 'tcx', progId, name: progName(progId)});
          for (const f of listTcFilters(i.ifindex, direction)) {
            if (f.kind === 'bpf' && f.progId !== undefined) out.push({ifname: i.name, ifindex: i.ifindex, direction, kind: 'clsact', progId: f.progId, name: progName(f.progId)});
          }
        }
      }
      return out;
    });
  } finally {
    ns.close();
  }
}

/** "lo egress sk_reply (tcx)" lines, sorted: what a test compares. */
export const describeTc = (list: readonly TcProgramSeen[]): string[] => list.map((p) => `${p.ifname} ${p.direction} ${p.name} (${p.kind})`).sort();
