// `skl metrics --output FILE` runs as root, often into a directory other users can write to
// (node_exporter's textfile collector): the write must be atomic, never follow a symlink planted
// in that directory, and leave nothing behind (and the previous file intact) when it fails.
//
// The unit tests need no root; the CLI tests run `skl metrics --netns` against a throwaway
// namespace (metrics reads skl's state under its lock, which needs root).
import {spawnSync} from 'node:child_process';
import {
  closeSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import {tmpdir} from 'node:os';
import path from 'node:path';
import test, {type ExecutionContext} from 'ava';
import {createExclusive, tempNameFor, writeFileAtomic} from '../src/metrics/textfile.js';
import {SklError} from '../src/sys/errors.js';
import {privileged} from './helpers/privileged.js';
import {createNetns} from './helpers/netns.js';
import {useSkl} from './helpers/dispatcher.js';
import {describeRun, runSkl, stderrLines, type RunResult} from './helpers/reliability.js';

const VICTIM_TEXT = 'a file root must never write through a planted link\n';

/** A fresh directory under the system's temp directory, removed at teardown. */
function tempDir(t: ExecutionContext, prefix = 'skl-metrics-'): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, {recursive: true, force: true}));
  return dir;
}

/** `dir` as a tmpfs of one 4 KiB page, unmounted (and removed) at teardown. */
function tinyTmpfs(t: ExecutionContext): string {
  const dir = tempDir(t, 'skl-metrics-tmpfs-');
  const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4k,mode=0755', 'tmpfs', dir], {encoding: 'utf8'});
  if (m.status !== 0) throw new Error(`mount -t tmpfs on ${dir}: ${m.stderr}`);
  // registered after tempDir's teardown, so it runs first (ava runs teardowns last-in first-out)
  t.teardown(() => {
    const u = spawnSync('umount', [dir], {encoding: 'utf8'});
    if (u.status !== 0) throw new Error(`umount ${dir}: ${u.stderr}`);
  });
  return dir;
}

function oneErrorLine(t: ExecutionContext, r: RunResult, pattern: RegExp): void {
  t.is(r.code, 1, describeRun(r));
  t.false(r.timedOut);
  const lines = stderrLines(r);
  t.is(lines.length, 1, `exactly one stderr line: ${describeRun(r)}`);
  t.regex(lines[0] ?? '', pattern);
  t.notRegex(r.stderr, /^\s+at /m, 'no stack trace');
  t.notRegex(r.stderr, /unexpected error/, 'a user-caused error, not a bug report');
}

// ---- unit: the pieces (no root needed) ----

test('tempNameFor: a fresh unpredictable hidden name next to the target, never *.prom', t => {
  const names = new Set(Array.from({length: 50}, () => tempNameFor('/var/lib/node_exporter/skl.prom')));
  t.is(names.size, 50, 'every call gives another name');
  for (const n of names) {
    t.is(path.dirname(n), '/var/lib/node_exporter', 'same directory, so the rename never crosses filesystems');
    t.regex(path.basename(n), /^\.skl\.prom\.[0-9a-f]{24}\.tmp$/);
  }
});

test('createExclusive: refuses whatever is planted at the name (symlink to a file, dangling symlink, file)', t => {
  const dir = tempDir(t);
  const victim = path.join(dir, 'victim');
  writeFileSync(victim, VICTIM_TEXT);
  const link = path.join(dir, 'link');
  symlinkSync(victim, link);
  const dangling = path.join(dir, 'dangling');
  const wouldCreate = path.join(dir, 'created-through-link');
  symlinkSync(wouldCreate, dangling);
  const file = path.join(dir, 'file');
  writeFileSync(file, 'planted\n');

  for (const planted of [link, dangling, file]) {
    const err = t.throws(() => createExclusive(planted, 0o644));
    t.true(['EEXIST', 'ELOOP'].includes((err as NodeJS.ErrnoException).code ?? ''), `${planted}: ${err?.message}`);
  }
  t.is(readFileSync(victim, 'utf8'), VICTIM_TEXT, 'the link target is untouched');
  t.false(existsSync(wouldCreate), 'nothing created through the dangling link');
  t.is(readFileSync(file, 'utf8'), 'planted\n');

  const fresh = path.join(dir, 'fresh');
  closeSync(createExclusive(fresh, 0o600));
  t.true(lstatSync(fresh).isFile());
});

test('writeFileAtomic: a failed rename (target is a directory) leaves no temp file and says what to do', t => {
  const dir = tempDir(t);
  const target = path.join(dir, 'skl.prom');
  mkdirSync(target);
  writeFileSync(path.join(target, 'keep'), 'x');
  const err = t.throws(() => writeFileAtomic(target, 'metrics\n'));
  t.true(err instanceof SklError, String(err));
  t.regex(err?.message ?? '', /^cannot write .*skl\.prom: .*\(EISDIR\); .*skl\.prom is unchanged; .*is a directory: name a file$/);
  t.deepEqual(readdirSync(dir), ['skl.prom'], 'no temp file left');
  t.deepEqual(readdirSync(target), ['keep']);
});

// ---- end to end: the real CLI ----

test('metrics --output \'\': invalid input, exit 2, before doing anything', async t => {
  const r = await runSkl(['metrics', '--output', '']);
  t.is(r.code, 2, describeRun(r));
  t.deepEqual(stderrLines(r), [
    'error: invalid --output: an empty file name; name the file to write, e.g. --output /var/lib/node_exporter/textfile_collector/skl.prom',
  ]);
});

privileged('metrics --output: symlinks planted at predictable temp names are never written through', async t => {
  const ns = createNetns(t);
  useSkl(t, ns);
  const dir = tempDir(t);
  const elsewhere = tempDir(t);
  const victim = path.join(elsewhere, 'victim');
  writeFileSync(victim, VICTIM_TEXT);
  const wouldCreate = path.join(elsewhere, 'created-through-link');
  const target = path.join(dir, 'skl.prom');

  // plausible temp names, and the one the old code used (FILE.<pid>.tmp: the shell execs skl, so $$ is its pid)
  const planted = [`${target}.tmp`, path.join(dir, '.skl.prom.tmp'), `${target}~`, path.join(dir, '.skl.prom')];
  for (const p of planted) symlinkSync(victim, p);
  symlinkSync(wouldCreate, `${target}.new`);
  const r = await runSkl(['metrics', '--output', target], {
    netns: ns.path,
    shell: 'umask 022 && ln -s "$VICTIM" "$TARGET.$$.tmp" && exec "$@"',
    env: {VICTIM: victim, TARGET: target},
  });
  t.is(r.code, 0, describeRun(r));
  t.is(r.stdout, '', 'nothing on stdout with --output');

  t.is(readFileSync(victim, 'utf8'), VICTIM_TEXT, 'the victim of the planted links is untouched');
  t.false(existsSync(wouldCreate), 'nothing created through a dangling planted link');
  t.true(lstatSync(target).isFile(), 'the target is a regular file');
  t.is(statSync(target).mode & 0o777, 0o644, 'readable by node_exporter');
  const text = readFileSync(target, 'utf8');
  t.regex(text, /^# HELP /);
  t.regex(text, /^skl_build_info\{/m);

  // every planted link is still there, untouched; besides them only the target: no temp file left
  const entries = readdirSync(dir).sort();
  const links = entries.filter(e => lstatSync(path.join(dir, e)).isSymbolicLink());
  for (const l of links) t.true([victim, wouldCreate].includes(readlinkSync(path.join(dir, l))), l);
  t.is(links.length, planted.length + 2, `planted links: ${entries.join(', ')}`);
  t.deepEqual(
    entries.filter(e => !links.includes(e)),
    ['skl.prom'],
    'no temp file left',
  );
});

privileged('metrics --output: a symlink at the target itself is replaced, never written through', async t => {
  const ns = createNetns(t);
  useSkl(t, ns);
  const dir = tempDir(t);
  const victim = path.join(tempDir(t), 'victim');
  writeFileSync(victim, VICTIM_TEXT);
  const target = path.join(dir, 'skl.prom');
  symlinkSync(victim, target);

  const r = await runSkl(['metrics', '--output', target], {netns: ns.path});
  t.is(r.code, 0, describeRun(r));
  t.is(readFileSync(victim, 'utf8'), VICTIM_TEXT, 'the file the link pointed to is untouched');
  t.true(lstatSync(target).isFile(), 'the link was replaced by a regular file');
  t.regex(readFileSync(target, 'utf8'), /^skl_build_info\{/m);
  t.deepEqual(readdirSync(dir), ['skl.prom'], 'no temp file left');
});

privileged('metrics --output on a full filesystem: one error line, exit 1, no temp file, the previous file intact', async t => {
  const ns = createNetns(t);
  useSkl(t, ns);
  const dir = tinyTmpfs(t);
  const target = path.join(dir, 'skl.prom');
  // the previous scrape file takes the tmpfs's only page: the new one cannot be written
  writeFileSync(target, 'skl_previous 1\n');

  const r = await runSkl(['metrics', '--output', target], {netns: ns.path});
  oneErrorLine(t, r, /^error: cannot write .*skl\.prom: no space left on device \(ENOSPC\); .*skl\.prom is unchanged; free space on the filesystem of /);
  t.deepEqual(readdirSync(dir), ['skl.prom'], 'no temp file left');
  t.is(readFileSync(target, 'utf8'), 'skl_previous 1\n', 'the previous file is intact');

  // and once there is room, the same command works and leaves only the target
  rmSync(target);
  const ok = await runSkl(['metrics', '--output', target], {netns: ns.path});
  t.is(ok.code, 0, describeRun(ok));
  t.deepEqual(readdirSync(dir), ['skl.prom']);
  t.regex(readFileSync(target, 'utf8'), /^skl_build_info\{/m);
});

privileged('metrics --output into a missing directory: one error line naming the directory, exit 1', async t => {
  const ns = createNetns(t);
  useSkl(t, ns);
  const missing = path.join(tempDir(t), 'no-such-dir');
  const r = await runSkl(['metrics', '--output', path.join(missing, 'skl.prom')], {netns: ns.path});
  oneErrorLine(t, r, /^error: cannot write .*no-such-dir\/skl\.prom: no such file or directory \(ENOENT\); .*; create the directory .*no-such-dir first$/);
  t.false(existsSync(missing));
});
