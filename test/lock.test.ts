// skl's lock (README "Guarantees": concurrent invocations take turns on /run/skl.lock; one that
// cannot get it within 15 s gives up with an error), held by another process started here:
// util-linux `flock` on an fd of a shell that then execs `sleep`, so the holder is one process,
// killed by its PID to release the lock.
//
// The 15 s give-up test uses a lock file of its own through SKL_LOCK_FILE (README "Environment
// variables"), so it never stalls other skl processes on this machine (tests run concurrently);
// the default /run/skl.lock is held only for 2 s.
import {spawn, spawnSync, type ChildProcess} from 'node:child_process';
import {randomBytes} from 'node:crypto';
import {existsSync, rmSync, writeFileSync} from 'node:fs';
import {createInterface} from 'node:readline';
import type {ExecutionContext} from 'ava';
import {privileged} from './helpers/privileged.js';
import {createNetns, stopChild} from './helpers/netns.js';
import {useSkl} from './helpers/dispatcher.js';
import {describeRun, pinnedState, runSkl, startQuietServer, stderrLines, type RunResult} from './helpers/reliability.js';

const HOST = '127.0.0.1';
const DEFAULT_LOCK = '/run/skl.lock';
/** README: "one that cannot get the lock within 15 s gives up with an error" */
const GIVE_UP_MS = 15_000;

interface Holder {
  pid: number;
  /** Kill the holder (by its PID) and wait until it is gone: the lock is free then. */
  release(): Promise<void>;
}

/** Hold an exclusive flock on `file` (which must exist) from a child process, until release() or teardown. */
async function holdLock(t: ExecutionContext, file: string): Promise<Holder> {
  // `exec 9<` opens without creating or changing the file; flock(1) locks that open file, which
  // the shell keeps when it execs sleep: the pid below holds the lock until it dies
  const child: ChildProcess = spawn('sh', ['-c', 'exec 9<"$0" && flock -x 9 && echo locked && exec sleep 600', file], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  let released: Promise<void> | undefined;
  const release = (): Promise<void> => (released ??= stopChild(child));
  t.teardown(release);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`flock on ${file} did not report within 20 s; stderr: ${stderr}`)), 20_000);
    createInterface({input: child.stdout!}).once('line', line => {
      clearTimeout(timer);
      if (line === 'locked') resolve();
      else reject(new Error(`lock holder printed ${line}`));
    });
    child.once('exit', code => {
      clearTimeout(timer);
      reject(new Error(`lock holder exited (${code}) before locking; stderr: ${stderr}`));
    });
  });
  return {pid: child.pid!, release};
}

function gaveUp(t: ExecutionContext, r: RunResult, lockFile: string, what: string): void {
  t.false(r.timedOut, `${what}: ${describeRun(r)}`);
  t.is(r.code, 1, `${what}: the documented exit code for a failed operation: ${describeRun(r)}`);
  t.deepEqual(
    stderrLines(r),
    [`error: another skl has held the lock on ${lockFile} for 15s; retry, or find it with: fuser ${lockFile}`],
    `${what}: one line saying what, why and what to do`,
  );
  t.true(r.elapsedMs >= GIVE_UP_MS, `${what}: gave up after ${r.elapsedMs} ms, before the documented 15 s`);
  t.true(r.elapsedMs < 60_000, `${what}: took ${r.elapsedMs} ms to give up`);
}

privileged('lock: held by another process, attach and status give up after 15 s with one line, exit 1, changing nothing (SKL_LOCK_FILE)', async t => {
  const ns = createNetns(t);
  const sk = useSkl(t, ns);
  const server = await startQuietServer(ns, HOST);
  t.teardown(() => server.stop());
  const lockFile = `/run/skl-test-lock-${process.pid}-${randomBytes(4).toString('hex')}.lock`;
  writeFileSync(lockFile, '', {mode: 0o600});
  t.teardown(() => rmSync(lockFile, {force: true}));
  const env = {SKL_LOCK_FILE: lockFile};

  const holder = await holdLock(t, lockFile);
  const [attach, status] = await Promise.all([
    runSkl(['attach', '--pid', String(server.pid), '--name', 'web', '--ports', '8001'], {netns: ns.path, env, timeoutMs: 90_000}),
    runSkl(['status', '--json'], {netns: ns.path, env, timeoutMs: 90_000}),
  ]);
  gaveUp(t, attach, lockFile, 'attach');
  gaveUp(t, status, lockFile, 'status');
  // read raw before any skl runs again (the next one would repair half-made state first)
  t.deepEqual(pinnedState(sk.ino), {entries: [], files: [], maps: {}}, 'the attach that gave up pinned nothing');

  // the hint in the message works: fuser names the holder
  const fuser = spawnSync('fuser', [lockFile], {encoding: 'utf8'});
  t.true(fuser.stdout.trim().split(/\s+/).includes(String(holder.pid)), `fuser ${lockFile}: ${fuser.stdout} ${fuser.stderr}`);

  // once the holder is gone the lock is free at once, and the attach that gave up changed nothing
  await holder.release();
  const after = await runSkl(['status', '--json'], {netns: ns.path, env});
  t.is(after.code, 0, describeRun(after));
  t.deepEqual(stderrLines(after), [], 'nothing to repair');
  t.true(after.elapsedMs < GIVE_UP_MS, `status after release took ${after.elapsedMs} ms`);
  t.deepEqual((after.json as {attachments: unknown[]}).attachments, [], 'no attachment');
  t.false(existsSync(sk.pinDir), 'no dispatcher pinned');
});

privileged('lock: without SKL_LOCK_FILE skl waits on /run/skl.lock, and proceeds once it is released', async t => {
  const ns = createNetns(t);
  useSkl(t, ns);
  // make sure the lock file exists (skl creates it 0600) before the holder opens it
  const first = await runSkl(['status', '--json'], {netns: ns.path});
  t.is(first.code, 0, describeRun(first));
  t.true(existsSync(DEFAULT_LOCK));

  const holder = await holdLock(t, DEFAULT_LOCK);
  let finishedAt: number | undefined;
  const waiting = runSkl(['status', '--json'], {netns: ns.path, timeoutMs: 60_000}).then(r => {
    finishedAt = Date.now();
    return r;
  });
  await new Promise(resolve => setTimeout(resolve, 2_000)); // held briefly: other skl processes wait meanwhile
  t.is(finishedAt, undefined, 'status did not finish while the lock was held');
  const releasedAt = Date.now();
  await holder.release();
  const r = await waiting;
  t.is(r.code, 0, describeRun(r));
  t.true(finishedAt! >= releasedAt, 'status finished only after the lock was released');
});
