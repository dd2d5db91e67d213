// Services as they really listen, with real servers from Debian in their stock layouts (nginx's
// `listen 8081; listen [::]:8081;` and reuseport workers, redis's `bind 127.0.0.1 -::1`, dnsmasq
// on TCP and UDP) and real clients (curl, redis-cli, dig): `skl attach --pid P --ports N` takes
// every socket of the listener, with no extra flags, and serves IPv4 and IPv6 clients.
import type {ExecutionContext} from 'ava';
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs';
import {tmpdir} from 'node:os';
import type {ChildProcess} from 'node:child_process';
import {createNetns, stopChild, type Netns} from './helpers/netns.js';
import {eventually, useSkl, startMultiListener, type SklContext} from './helpers/dispatcher.js';
import {connectOnce} from './helpers/clients.js';
import {startToyServer} from './helpers/servers.js';
import {needing, privileged} from './helpers/privileged.js';
import {stderrLines} from './helpers/reliability.js';

function tempDir(t: ExecutionContext): string {
  const dir = mkdtempSync(`${tmpdir()}/skl-svc-`);
  t.teardown(() => rmSync(dir, {recursive: true, force: true}));
  return dir;
}

/** Start a server in `ns` (stopped at teardown) and wait until `ss` shows every listed socket. */
async function startServer(t: ExecutionContext, ns: Netns, cmd: string, args: string[], sockets: string[]): Promise<ChildProcess> {
  const child = ns.spawn(cmd, args, {stdio: ['ignore', 'ignore', 'pipe']});
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  t.teardown(() => stopChild(child));
  const up = await eventually(() => {
    const out = ns.exec('ss', ['-Hlntu']).stdout;
    return sockets.every(s => out.includes(s));
  }, 20_000, 100);
  if (!up) throw new Error(`${cmd} did not listen on ${sockets.join(', ')}; stderr: ${stderr}; ss: ${ns.exec('ss', ['-Hlntu']).stdout}`);
  return child;
}

function nginxConf(dir: string, servers: string): string {
  const conf = `${dir}/nginx.conf`;
  writeFileSync(
    conf,
    `worker_processes 2;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
${servers}
}
`,
  );
  return conf;
}

const curl = async (ns: Netns, url: string): Promise<string> => (await ns.execAsync('curl', ['-sS', '--max-time', '10', url])).stdout.trim();

async function reaches(t: ExecutionContext, ns: Netns, host: string, port: number, pid: number): Promise<void> {
  const r = await connectOnce(ns, {proto: 'tcp', host, port});
  t.is(r.ok ? r.reply.pid : r.error, pid, `${host}:${port}: ${JSON.stringify(r)}`);
}

async function setup(t: ExecutionContext): Promise<{ns: Netns; sk: SklContext}> {
  const ns = createNetns(t);
  const sk = useSkl(t, ns);
  return {ns, sk};
}

needing(['nginx', 'curl']).privilegedSerial('nginx, stock dual listen (listen 8081; listen [::]:8081;) and reuseport workers: one attach each, no extra flags, IPv4 and IPv6 served, the reuseport group balanced', async t => {
  t.timeout(120_000);
  const {ns, sk} = await setup(t);
  const dir = tempDir(t);
  const conf = nginxConf(
    dir,
    `  server { listen 8081; listen [::]:8081; location / { return 200 "nginx $pid\\n"; } }
  server { listen 127.0.0.1:8082 reuseport; location / { return 200 "worker $pid\\n"; } }`,
  );
  const master = await startServer(t, ns, 'nginx', ['-p', dir, '-c', conf, '-g', 'daemon off;'], ['0.0.0.0:8081', '[::]:8081', '127.0.0.1:8082']);

  // two ports: ambiguous; the refusal lists the listeners and its example command works
  const amb = await sk.run(['attach', '--pid', String(master.pid), '--ports', '9081']);
  t.is(amb.code, 2, amb.stderr);
  t.is(stderrLines(amb).length, 1);
  t.regex(amb.stderr, /listens on 2 ports .*0\.0\.0\.0:8081.*\[::\]:8081.*127\.0\.0\.1:8082/);
  const example = /e\.g\. skl (attach .*)$/.exec(amb.stderr.trim())?.[1];
  t.truthy(example, amb.stderr);
  t.true(example!.includes('--listener :8081'), example);
  t.true(example!.endsWith(`--netns ${ns.path}`), example);
  const viaHint = await sk.run([...example!.replace(` --netns ${ns.path}`, '').split(' '), '--name', 'dual']);
  t.is(viaHint.code, 0, viaHint.stderr);

  const st = await sk.attachment('dual');
  t.deepEqual(st.listeners, ['0.0.0.0:8081', '[::]:8081']);
  t.deepEqual(st.bindings, [
    {protocol: 'tcp', prefix: '0.0.0.0/0', ports: '9081'},
    {protocol: 'tcp', prefix: '::/0', ports: '9081'},
  ]);
  t.regex(await curl(ns, 'http://127.0.0.1:9081/'), /^nginx \d+$/);
  t.regex(await curl(ns, 'http://[::1]:9081/'), /^nginx \d+$/);

  // the reuseport group (two sockets, same address): one attach, one member stored, both workers serve
  await sk.ok(['attach', '--pid', String(master.pid), '--listener', '127.0.0.1:8082', '--ports', '9082', '--name', 'workers']);
  t.is((await sk.attachment('workers')).sockets.length, 1, 'one member of the group stored');
  const pids = new Map<string, number>();
  for (let i = 0; i < 60; i++) {
    const body = await curl(ns, 'http://127.0.0.1:9082/');
    t.regex(body, /^worker \d+$/);
    pids.set(body, (pids.get(body) ?? 0) + 1);
  }
  t.is(pids.size, 2, `the kernel spread connections over both workers: ${JSON.stringify([...pids])}`);
  t.is((await sk.attachment('workers')).redirected, 60);
});

needing(['redis-server', 'redis-cli']).privilegedSerial('redis, stock bind 127.0.0.1 -::1: attach with no extra flags, redis-cli over IPv4 and IPv6 on the extra port', async t => {
  t.timeout(120_000);
  const {ns, sk} = await setup(t);
  const dir = tempDir(t);
  const redis = await startServer(t, ns, 'redis-server', ['--port', '6390', '--bind', '127.0.0.1 -::1', '--save', '', '--appendonly', 'no', '--dir', dir], ['127.0.0.1:6390', '[::1]:6390']);
  await sk.ok(['attach', '--pid', String(redis.pid), '--ports', '16390', '--name', 'redis']);
  const st = await sk.attachment('redis');
  t.deepEqual(st.listeners, ['127.0.0.1:6390', '[::1]:6390']);
  for (const host of ['127.0.0.1', '::1']) {
    const r = await ns.execAsync('redis-cli', ['-h', host, '-p', '16390', 'set', 'k', host]);
    t.is(r.stdout.trim(), 'OK', `${host}: ${r.stderr}`);
    t.is((await ns.execAsync('redis-cli', ['-h', host, '-p', '6390', 'get', 'k'])).stdout.trim(), host, 'the same server answered');
  }
  t.is((await sk.attachment('redis')).redirected, 2);
});

needing(['dnsmasq', 'dig']).privilegedSerial('dnsmasq on TCP and UDP: --proto tcp,udp takes all four sockets; dig +tcp over IPv4 and IPv6, a UDP query answered', async t => {
  t.timeout(120_000);
  const {ns, sk} = await setup(t);
  const dir = tempDir(t);
  const dns = await startServer(
    t,
    ns,
    'dnsmasq',
    ['--keep-in-foreground', '--no-resolv', '--no-hosts', '--port=5354', '--listen-address=127.0.0.1', '--listen-address=::1', '--bind-interfaces', '--address=/skl.test/127.0.0.42', `--pid-file=${dir}/pid`, '--user=root', '--log-facility=-'],
    ['127.0.0.1:5354', '[::1]:5354'],
  );
  // without --proto: TCP only
  const r = await sk.ok(['attach', '--pid', String(dns.pid), '--ports', '15354', '--proto', 'tcp,udp', '--name', 'dns', '--json']);
  const attached = JSON.parse(r.stdout) as {protocols: string[]; bindings: unknown[]};
  t.deepEqual(attached.protocols, ['tcp', 'udp']);
  const st = await sk.attachment('dns');
  t.deepEqual(
    st.sockets.map(s => `${s.protocol}/${s.family} ${s.listener}`),
    ['tcp/4 127.0.0.1:5354', 'tcp/6 [::1]:5354', 'udp/4 127.0.0.1:5354', 'udp/6 [::1]:5354'],
  );
  for (const server of ['127.0.0.1', '::1']) {
    const d = await ns.execAsync('dig', ['+tcp', '+short', '+time=5', '+tries=1', `@${server}`, '-p', '15354', 'skl.test']);
    t.is(d.stdout.trim(), '127.0.0.42', `dig +tcp @${server}: ${d.stdout}${d.stderr}`);
  }
  // UDP: the query reaches dnsmasq through the extra port, and its reply leaves from that port (skl rewrites it)
  const query = `const s = require('node:dgram').createSocket('udp4');
const q = Buffer.concat([Buffer.from('abcd01000001000000000000', 'hex'), Buffer.from('\\x03skl\\x04test\\x00\\x00\\x01\\x00\\x01', 'latin1')]);
s.on('message', (m, r) => { console.log(r.port, m.subarray(-4).toString('hex')); process.exit(0); });
s.send(q, 15354, '127.0.0.1');
setTimeout(() => { console.log('timeout'); process.exit(1); }, 5000);`;
  const u = await ns.execAsync(process.execPath, ['-e', query]);
  t.is(u.stdout.trim(), '15354 7f00002a', `UDP reply: ${u.stdout}${u.stderr}`);
  t.is((await sk.attachment('dns')).redirected, 3);
});

privileged.serial('precedence through the CLI: the longest prefix wins, an explicit port beats all on a tie, v4 and v6, removing a binding hands over to the next', async t => {
  t.timeout(180_000);
  const {ns, sk} = await setup(t);
  const srv = async (host: string, port: number) => (await startToyServer(ns, {proto: 'tcp', host, port})).pid;
  const a = await srv('::', 7001); // dual-stack: serves IPv4 and IPv6
  const b = await srv('127.0.0.1', 7002);
  const c = await srv('127.0.0.1', 7003);
  const d = await srv('127.0.0.1', 7004);
  const e = await srv('::1', 7005);
  await sk.ok(['attach', '--pid', String(a), '--name', 'a', '--ports', '9100']);
  await sk.ok(['attach', '--pid', String(b), '--name', 'b', '--ports', '9100', '--address', '127.0.0.9']);
  // all ports of 127.0.0.8/29 include a's port 7001 there (a listens on [::], dual-stack): forced
  await sk.ok(['attach', '--pid', String(c), '--name', 'c', '--ports', 'all', '--address', '127.0.0.8/29', '--force']);
  await sk.ok(['attach', '--pid', String(d), '--name', 'd', '--ports', '5555', '--address', '127.0.0.8/29']);
  await sk.ok(['attach', '--pid', String(e), '--name', 'e', '--ports', '9100', '--address', '::1/128']);
  const who = async (host: string, port: number): Promise<number | string> => {
    const r = await connectOnce(ns, {proto: 'tcp', host, port});
    return r.ok ? r.reply.pid : r.error;
  };
  const expect = async (cases: [string, number, number | string][]) => {
    for (const [host, port, pid] of cases) t.is(await who(host, port), pid, `${host}:${port}`);
  };
  await expect([
    ['127.0.0.1', 9100, a], // any-address (/0)
    ['127.0.0.9', 9100, b], // /32 beats /29 and /0
    ['127.0.0.10', 9100, c], // all-ports /29 beats an explicit port on /0
    ['127.0.0.10', 5555, d], // /29 tie: the explicit port beats all
    ['127.0.0.10', 5556, c],
    ['127.0.0.20', 5556, 'ECONNREFUSED'], // nothing covers it
    ['::1', 9100, e], // v6 /128 beats ::/0
  ]);
  // the same (protocol, prefix, port) twice: refused, naming the owner
  const dup = await sk.run(['attach', '--pid', String(c), '--name', 'dup', '--ports', '5555', '--address', '127.0.0.8/29']);
  t.is(dup.code, 1);
  t.regex(dup.stderr, /^error: TCP port 5555 for 127\.0\.0\.8\/29 already belongs to d; remove it there first \(skl ports remove d 5555\)\n$/);
  // remove one binding: the next one takes over
  await sk.ok(['ports', 'remove', 'b', '9100']);
  await expect([['127.0.0.9', 9100, c]]);
  await sk.ok(['detach', 'c']);
  await expect([
    ['127.0.0.9', 9100, a],
    ['127.0.0.10', 5556, 'ECONNREFUSED'],
    ['127.0.0.10', 5555, d],
  ]);
  await sk.ok(['ports', 'remove', 'e', '9100']);
  await expect([['::1', 9100, a]]);
  const st = await sk.status();
  t.deepEqual(
    st.attachments.map(x => [x.name, x.bindings.map(g => `${g.prefix}:${g.ports}`).join(' ')]),
    [
      ['a', '0.0.0.0/0:9100 ::/0:9100'],
      ['b', ''],
      ['d', '127.0.0.8/29:5555'],
      ['e', ''],
    ],
  );
});

privileged.serial('precedence through the CLI: a port given its own binding of a prefix all ports already have, and a longer one, in one attach: its own wins the tie, the longer one wins, other ports keep all', async t => {
  t.timeout(120_000);
  const {ns, sk} = await setup(t);
  const srv = async (port: number) => (await startToyServer(ns, {proto: 'tcp', host: '127.0.0.1', port})).pid;
  const c = await srv(7003);
  const f = await srv(7006);
  await sk.ok(['attach', '--pid', String(c), '--name', 'c', '--ports', 'all', '--address', '127.0.0.8/29', '--force']);
  // port 6000's list goes from [/29 all ports] to [/32 own, /29 own + all ports] in one rewrite
  await sk.ok(['attach', '--pid', String(f), '--name', 'f', '--ports', '6000', '--address', '127.0.0.8/29', '--address', '127.0.0.9/32']);
  for (const [host, port, pid] of [
    ['127.0.0.10', 6000, f], // /29 tie: the explicit port beats all
    ['127.0.0.9', 6000, f], // /32
    ['127.0.0.10', 6001, c], // all ports
  ] as const) {
    const r = await connectOnce(ns, {proto: 'tcp', host, port});
    t.is(r.ok ? r.reply.pid : r.error, pid, `${host}:${port}`);
  }
});

privileged.serial('the hijack guard compares addresses: a narrower prefix is no hijack, all ports over a wildcard listener is (unless --force), the other family is not', async t => {
  t.timeout(120_000);
  const {ns, sk} = await setup(t);
  const web = (await startToyServer(ns, {proto: 'tcp', host: '127.0.0.1', port: 7001})).pid;
  const v6only = (await startToyServer(ns, {proto: 'tcp', host: '::', port: 7002, ipv6only: true})).pid;
  const mine = (await startToyServer(ns, {proto: 'tcp', host: '127.0.0.1', port: 7100})).pid;
  // 127.0.0.9/32 port 7001 does not take 127.0.0.1:7001's connections
  await sk.ok(['attach', '--pid', String(mine), '--name', 'narrow', '--ports', '7001', '--address', '127.0.0.9/32']);
  await reaches(t, ns, '127.0.0.1', 7001, web);
  await reaches(t, ns, '127.0.0.9', 7001, mine);
  // any address on 7001 would
  const any = await sk.run(['ports', 'add', 'narrow', '7001', '--address', '0.0.0.0/0']);
  t.is(any.code, 1);
  t.regex(any.stderr, /127\.0\.0\.1:7001 is already served by another socket.*--force/);
  // a v6-only wildcard socket on 7002 does not serve IPv4: an IPv4 binding of 7002 is fine
  await sk.ok(['ports', 'add', 'narrow', '7002', '--address', '0.0.0.0/0']);
  await reaches(t, ns, '127.0.0.1', 7002, mine);
  await reaches(t, ns, '::1', 7002, v6only);
  // all ports of 127.0.0.0/8: refused (127.0.0.1:7001 is served), then forced
  const all = await sk.run(['attach', '--pid', String(mine), '--name', 'all', '--ports', 'all', '--address', '127.0.0.0/8']);
  t.is(all.code, 1);
  t.is(stderrLines(all).length, 1);
  t.false((await sk.status()).attachments.some(x => x.name === 'all'), 'nothing changed');
  await sk.ok(['attach', '--pid', String(mine), '--name', 'all', '--ports', 'all', '--address', '127.0.0.0/8', '--force']);
  await reaches(t, ns, '127.0.0.1', 7001, mine);
});

privileged.serial('1,024 services in one namespace, each served; the 1,025th refused with one line, nothing changed', async t => {
  t.timeout(600_000);
  const {ns, sk} = await setup(t);
  const {attach, status} = await import('../src/index.js');
  const ports = Array.from({length: 1025}, (_, i) => 20000 + i);
  const server = await startMultiListener(ns, '127.0.0.1', ports);
  t.teardown(() => stopChild(server.child));
  for (let i = 0; i < 1024; i++) {
    await attach({pid: server.pid, listener: {port: ports[i]}, ports: [30000 + i], name: `s${i}`, netns: ns.path});
  }
  const st = await status({netns: ns.path});
  t.is(st.attachments.length, 1024);
  // connect to every extra port from one client process; each reaches its own listener
  const client = `const net=require('node:net');(async()=>{let ok=0;const bad=[];for(let i=0;i<1024;i++){const r=await new Promise(res=>{const s=net.connect(30000+i,'127.0.0.1');let d='';s.on('data',x=>d+=x);s.on('end',()=>res(d));s.on('error',e=>res('ERR '+e.code));});try{if(JSON.parse(r).listener===20000+i)ok++;else bad.push(i+':'+r)}catch{bad.push(i+':'+r)}}console.log(JSON.stringify({ok,bad:bad.slice(0,5)}))})()`;
  const out = await ns.execAsync(process.execPath, ['-e', client], {timeoutMs: 300_000});
  t.deepEqual(JSON.parse(out.stdout), {ok: 1024, bad: []});
  const r = await sk.run(['attach', '--pid', String(server.pid), '--listener', `:${ports[1024]}`, '--ports', '31024', '--name', 'one-too-many']);
  t.is(r.code, 1);
  t.deepEqual(stderrLines(r), ['error: this namespace already has the maximum of 1024 services; detach one first']);
  t.is((await status({netns: ns.path})).attachments.length, 1024);
  t.is((await connectOnce(ns, {proto: 'tcp', host: '127.0.0.1', port: 31024})).ok, false);
});

privileged.serial('precedence through the library: attach with addresses and all ports, then ports add/remove per binding', async t => {
  t.timeout(120_000);
  const {ns} = await setup(t);
  const {attach, addPorts, removePorts, status, parseAddress} = await import('../src/index.js');
  const netns = ns.path;
  const srv = async (host: string, port: number) => (await startToyServer(ns, {proto: 'tcp', host, port})).pid;
  const a = await srv('127.0.0.1', 7001);
  const b = await srv('127.0.0.1', 7002);
  await attach({netns, pid: a, name: 'a', ports: [9100, 9101]});
  const r = await attach({netns, pid: b, name: 'b', ports: 'all', addresses: [parseAddress('127.0.0.64/26')]});
  t.deepEqual(r.bindings, [{protocol: 'tcp', prefix: '127.0.0.64/26', ports: 'all'}]);
  await reaches(t, ns, '127.0.0.1', 9100, a);
  await reaches(t, ns, '127.0.0.70', 9100, b);
  // an explicit port on a longer prefix for a
  await addPorts('a', [9100], {netns, addresses: [parseAddress('127.0.0.70/32')]});
  await reaches(t, ns, '127.0.0.70', 9100, a);
  await reaches(t, ns, '127.0.0.71', 9100, b);
  await removePorts('a', [9100], {netns, addresses: [parseAddress('127.0.0.70/32')]});
  await reaches(t, ns, '127.0.0.70', 9100, b);
  await removePorts('b', 'all', {netns});
  await reaches(t, ns, '127.0.0.70', 9100, a);
  const st = await status({netns});
  t.deepEqual(st.attachments.map(x => [x.name, x.bindings]), [
    ['a', [{protocol: 'tcp', prefix: '0.0.0.0/0', ports: '9100-9101'}]],
    ['b', []],
  ]);
});
