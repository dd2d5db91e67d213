// Following a service across restarts, in the kernel, with no daemon: real processes in a real
// cgroup v2 directory (created under the cgroup2 mount found in /proc/self/mountinfo), restarted
// while skl is not running. The follow program must store every new listener of the service, and
// never a socket of a process outside the cgroup or of another network namespace.
import type {ExecutionContext} from 'ava';
import type {ChildProcess} from 'node:child_process';
import {existsSync, mkdirSync, readFileSync, rmdirSync, statSync} from 'node:fs';
import {createInterface} from 'node:readline';
import {cgroup2Mount} from '../src/sys/mounts.js';
import {createNetns, stopChild, type Netns} from './helpers/netns.js';
import {useSkl, type SklContext} from './helpers/dispatcher.js';
import {connectOnce} from './helpers/clients.js';
import {TOY_SERVER_SCRIPT} from './helpers/servers.js';
import {privileged} from './helpers/privileged.js';
import {bpfLinks} from './helpers/links.js';
import {describeRun, pinFilesOf, runSkl, stderrLines} from './helpers/reliability.js';

const HOST = '127.0.0.1';
const BPF_LINK_TYPE_CGROUP = 3;
let cgSeq = 0;

interface Cg {
  dir: string;
  /** below the cgroup2 mount */
  path: string;
  ino: number;
}

/** A cgroup v2 directory of the test's own; its processes are killed and it is removed at teardown. */
function makeCgroup(t: ExecutionContext): Cg {
  const mount = cgroup2Mount();
  if (!mount) throw new Error('cgroup v2 is not mounted');
  const path = `/skl-test-${process.pid}-${cgSeq++}`;
  const dir = `${mount}${path}`;
  mkdirSync(dir);
  t.teardown(async () => {
    for (let i = 0; i < 50 && existsSync(dir); i++) {
      const pids = readFileSync(`${dir}/cgroup.procs`, 'utf8').split('\n').filter(Boolean).map(Number);
      for (const p of pids) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          // gone
        }
      }
      try {
        rmdirSync(dir);
      } catch {
        await new Promise(r => setTimeout(r, 100));
      }
    }
  });
  return {dir, path, ino: statSync(dir).ino};
}

interface Srv {
  pid: number;
  child: ChildProcess;
  stop(): Promise<void>;
}

/** The toy TCP server, started inside cgroup `cg` (or none) and namespace `ns`; resolves once it listens. */
async function serve(t: ExecutionContext, ns: Netns, cg: Cg | undefined, port: number, host = HOST): Promise<Srv> {
  const script = cg ? `echo $$ > ${cg.dir}/cgroup.procs && exec "$0" "$@"` : 'exec "$0" "$@"';
  const child = ns.spawn('sh', ['-c', script, process.execPath, TOY_SERVER_SCRIPT, '--proto', 'tcp', '--host', host, '--port', String(port), '--exit-on-stdin-eof'], {stdio: ['pipe', 'pipe', 'pipe']});
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const pid = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not listen; stderr: ${stderr}`)), 30_000);
    createInterface({input: child.stdout!}).on('line', line => {
      try {
        const e = JSON.parse(line) as {event?: string; pid?: number};
        if (e.event === 'listening' && e.pid) {
          clearTimeout(timer);
          resolve(e.pid);
        }
      } catch {
        // not an event
      }
    });
    child.once('exit', code => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code}); stderr: ${stderr}`));
    });
  });
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise(r => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
  };
  t.teardown(stop);
  return {pid, child, stop};
}

const who = async (ns: Netns, port: number, host = HOST): Promise<number | string> => {
  const r = await connectOnce(ns, {proto: 'tcp', host, port, timeoutMs: 10_000});
  return r.ok ? r.reply.pid : r.error;
};

const cgroupLinks = (cg: Cg): number => bpfLinks().filter(l => l.type === BPF_LINK_TYPE_CGROUP && l.cgroupId === cg.ino).length;

async function setup(t: ExecutionContext): Promise<{ns: Netns; sk: SklContext; cg: Cg}> {
  const ns = createNetns(t);
  const sk = useSkl(t, ns);
  return {ns, sk, cg: makeCgroup(t)};
}

privileged.serial('follow: attached before it starts; 20 restarts with no skl running: the first connection to the extra port after each start reaches the new process, every time', async t => {
  t.timeout(300_000);
  const {ns, sk, cg} = await setup(t);
  const r = await sk.ok(['attach', '--cgroup', cg.path, '--listener', `${HOST}:7001`, '--ports', '8001', '--name', 'app']);
  t.regex(r.stdout, new RegExp(`attached app: TCP 8001 → the first listener on 127\\.0\\.0\\.1:7001 \\(follows cgroup ${cg.path} across restarts\\)`));
  t.like(await sk.attachment('app'), {alive: false, retaken: 0, follow: {cgroup: cg.path, currentPid: 0, listeners: ['127.0.0.1:7001']}});
  t.is(cgroupLinks(cg), 1, 'one sock_ops link on the cgroup');
  let late = 0;
  let wrong = 0;
  let stale = 0;
  for (let i = 0; i < 20; i++) {
    const s = await serve(t, ns, cg, 7001);
    t.is(await who(ns, 7001), s.pid, 'the new process accepts on its own port');
    const extra = await who(ns, 8001);
    if (typeof extra === 'string') late++;
    else if (extra !== s.pid) wrong++;
    await s.stop();
    if ((await who(ns, 8001)) !== 'ECONNREFUSED') stale++;
  }
  t.deepEqual({late, wrong, stale}, {late: 0, wrong: 0, stale: 0}, 'each start: the extra port at once; each stop: refused at once');
  const st = await sk.attachment('app');
  t.is(st.retaken, 20);
  t.is(st.redirected, 20);
});

privileged.serial('follow: never a black hole — an impostor outside the cgroup and a listener of another namespace in the cgroup are never steered to', async t => {
  t.timeout(180_000);
  const {ns, sk, cg} = await setup(t);
  await sk.ok(['attach', '--cgroup', cg.path, '--listener', `${HOST}:7001`, '--ports', '8001', '--name', 'app']);
  // a process outside the cgroup takes the address while the service is down
  const impostor = await serve(t, ns, undefined, 7001);
  t.is(await who(ns, 7001), impostor.pid, 'it owns its own port');
  t.is(await who(ns, 8001), 'ECONNREFUSED', 'but never the extra ports');
  await impostor.stop();
  // a process in the cgroup but in another network namespace, same address and port
  const other = createNetns(t);
  const foreign = await serve(t, other, cg, 7001);
  t.is(await who(other, 7001), foreign.pid);
  t.is(await who(ns, 8001), 'ECONNREFUSED', 'refused, not hanging: the foreign socket was not stored');
  t.is((await sk.attachment('app')).retaken, 0);
  // the real one
  const real = await serve(t, ns, cg, 7001);
  t.is(await who(ns, 8001), real.pid);
  t.is((await sk.attachment('app')).retaken, 1);
});

privileged.serial('follow --pid P --follow: restarts followed; a shared cgroup is refused with the reason (unless --force); detach leaves nothing on the cgroup', async t => {
  t.timeout(180_000);
  const {ns, sk, cg} = await setup(t);
  const first = await serve(t, ns, cg, 7001);
  await sk.ok(['attach', '--pid', String(first.pid), '--follow', '--ports', '8001', '--name', 'app']);
  t.is(await who(ns, 8001), first.pid);
  await first.stop();
  const second = await serve(t, ns, cg, 7001);
  t.is(await who(ns, 8001), second.pid, 'the restart was followed');
  t.like(await sk.attachment('app'), {pid: second.pid, alive: true, retaken: 1, follow: {currentPid: second.pid}});

  // a cgroup shared with an unrelated process
  const shared = makeCgroup(t);
  const s = await serve(t, ns, shared, 7002);
  const stranger = ns.spawn('sh', ['-c', `echo $$ > ${shared.dir}/cgroup.procs && exec sleep 600`], {stdio: 'ignore'});
  t.teardown(() => stopChild(stranger));
  await new Promise(r => setTimeout(r, 200));
  const refused = await sk.run(['attach', '--pid', String(s.pid), '--follow', '--ports', '8002', '--name', 'shared']);
  t.is(refused.code, 1, refused.stderr);
  t.regex(refused.stderr, new RegExp(`^error: the cgroup of process ${s.pid} \\(${shared.path}\\) is shared with 1 unrelated process \\(sleep\\[\\d+\\]\\): .*--force\\n$`));
  t.false((await sk.status()).attachments.some(a => a.name === 'shared'), 'nothing changed');
  await sk.ok(['attach', '--pid', String(s.pid), '--follow', '--force', '--ports', '8002', '--name', 'shared']);
  t.is(await who(ns, 8002), s.pid);

  t.is(cgroupLinks(cg), 1);
  t.is(cgroupLinks(shared), 1);
  await sk.ok(['detach', 'app']);
  t.is(cgroupLinks(cg), 0, 'the cgroup no service follows any more has no link');
  t.is(cgroupLinks(shared), 1);
  t.false(pinFilesOf(sk.ino).includes(`follow-${cg.ino}`));
  await sk.ok(['detach', 'shared']);
  t.is(cgroupLinks(shared), 0);
  t.deepEqual(pinFilesOf(sk.ino), []);
});

privileged.serial('follow: refused with one line where it cannot work (UDP, --foreground, nothing to follow yet, not a cgroup)', async t => {
  t.timeout(60_000);
  const {ns, sk, cg} = await setup(t);
  const cases: [string[], number, RegExp][] = [
    [['attach', '--cgroup', cg.path, '--listener', ':53', '--proto', 'udp', '--ports', '5353'], 1, /following a UDP service is not available/],
    [['attach', '--cgroup', cg.path, '--listener', ':7001', '--ports', '8001', '--foreground'], 2, /--foreground does not follow restarts/],
    [['attach', '--cgroup', cg.path, '--ports', '8001'], 2, /nothing in cgroup .* listens yet: say which listener to follow with --listener/],
    [['attach', '--cgroup', '/no/such/cgroup', '--listener', ':7001', '--ports', '8001'], 1, /is not a cgroup v2 directory/],
    [['attach', '--ports', '8001'], 2, /give the target: --pid PID, --cgroup PATH or --unit NAME/],
  ];
  for (const [args, code, says] of cases) {
    const r = await runSkl(args, {netns: ns.path});
    t.is(r.code, code, `${args.join(' ')}: ${describeRun(r)}`);
    t.is(stderrLines(r).length, 1, r.stderr);
    t.regex(r.stderr, says);
  }
  t.deepEqual(pinFilesOf(sk.ino), [], 'nothing was created');
  t.is(cgroupLinks(cg), 0);
});

privileged.serial('follow: skl SIGKILLed with the follow entries written → the pending service steers nothing; the next skl rolls it back and removes the cgroup link', async t => {
  t.timeout(120_000);
  const {ns, sk, cg} = await setup(t);
  const keep = await serve(t, ns, undefined, 7100);
  await sk.ok(['attach', '--pid', String(keep.pid), '--name', 'keep', '--ports', '8100']);
  const crashed = await runSkl(['attach', '--cgroup', cg.path, '--listener', `${HOST}:7001`, '--ports', '8001', '--name', 'app'], {netns: ns.path, env: {SKL_TEST_CRASH_AT: 'follow:entries'}});
  t.is(crashed.signal, 'SIGKILL', describeRun(crashed));
  const s = await serve(t, ns, cg, 7001);
  t.is(await who(ns, 8001), 'ECONNREFUSED', 'a pending service never steers, even with its socket stored');
  const next = await runSkl(['status', '--json'], {netns: ns.path});
  t.true(stderrLines(next).includes('notice: rolled back app, left half-made by an interrupted skl'), next.stderr);
  t.is(cgroupLinks(cg), 0, 'the link of a cgroup nothing follows is removed');
  t.is(await who(ns, 8100), keep.pid);
  await sk.ok(['attach', '--cgroup', cg.path, '--listener', `${HOST}:7001`, '--ports', '8001', '--name', 'app']);
  t.is(await who(ns, 8001), s.pid, 'attached while it runs: its socket is taken now');
});
