#!/usr/bin/env node
// Run the ava suite with the TAP reporter, stream it, and finish with one plain summary line:
//
//   N skipped            (only when some were skipped)
//   N todo               (only when some are todo)
//   N passed, N failed
//
// Exits non-zero when a test failed, ava itself exited non-zero, or no test ran at all.
// Extra arguments are passed to ava (e.g. a file glob or --match).
//
// ava 7's TAP output, as observed: `ok N - file › title`, `ok N - … # SKIP`, `not ok N - … # TODO`,
// `not ok N - …` for failures, uncaught exceptions (`not ok N - Error: …`), unhandled rejections
// and crashed workers (`not ok N - FILE exited with a non-zero exit code: 1`), each failure
// followed by an indented YAML block. On a global inactivity timeout, or a process.exit() in a
// test file, ava 7's TAP reporter crashes (TypeError in dumpError) instead of listing the pending
// tests, so those cases are recognised from ava's stderr and counted as a failure here.
import {spawn, spawnSync} from 'node:child_process';
import {readdirSync, readFileSync} from 'node:fs';
import path from 'node:path';
import {fileURLToPath} from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function avaCli() {
  // ava's "exports" hide its package.json from require.resolve; read it from node_modules.
  const pkgPath = path.join(root, 'node_modules', 'ava', 'package.json');
  const pkg = JSON.parse(readFileSync(pkgPath, 'utf8'));
  const bin = typeof pkg.bin === 'string' ? pkg.bin : pkg.bin.ava;
  return path.join(path.dirname(pkgPath), bin);
}

const TEST_LINE = /^(not ok|ok)\b(?:\s+\d+)?(?:\s+-)?\s*(.*)$/;
const DIRECTIVE = /\s#\s*(SKIP|TODO)\b[^#]*$/i;

const counts = {passed: 0, failed: 0, skipped: 0, todo: 0};

/** Classify one line of TAP output. YAML blocks and comments are indented or start with '#'. */
function countLine(line) {
  const m = TEST_LINE.exec(line);
  if (m === null) return;
  const directive = DIRECTIVE.exec(m[2])?.[1]?.toUpperCase();
  if (directive === 'SKIP') counts.skipped += 1;
  else if (directive === 'TODO') counts.todo += 1;
  else if (m[1] === 'ok') counts.passed += 1;
  else counts.failed += 1;
}

/**
 * Delete test namespaces (`skl-test-<pid>-…`, see test/helpers/netns.ts) whose creating process is
 * gone: a test worker killed with SIGKILL cannot clean up after itself. Returns the names removed.
 */
function sweepStaleNamespaces() {
  let names;
  try {
    names = readdirSync('/run/netns');
  } catch {
    return [];
  }
  const removed = [];
  for (const name of names) {
    const m = /^skl-test-(\d+)-\d+-[0-9a-f]+$/.exec(name);
    if (m === null) continue;
    try {
      process.kill(Number(m[1]), 0);
      continue; // its creator is still alive: not ours to judge
    } catch (err) {
      if (err.code !== 'ESRCH') continue;
    }
    const r = spawnSync('ip', ['netns', 'delete', name], {stdio: 'ignore', timeout: 10_000});
    if (r.status === 0) removed.push(name);
  }
  return removed;
}

const child = spawn(process.execPath, [avaCli(), '--tap', ...process.argv.slice(2)], {
  cwd: root,
  stdio: ['inherit', 'pipe', 'pipe'],
});

let pending = '';
child.stdout.setEncoding('utf8');
child.stdout.on('data', chunk => {
  process.stdout.write(chunk);
  pending += chunk;
  const lines = pending.split('\n');
  pending = lines.pop() ?? '';
  for (const line of lines) countLine(line.replace(/\r$/, ''));
});

let stderrTail = '';
child.stderr.setEncoding('utf8');
child.stderr.on('data', chunk => {
  process.stderr.write(chunk);
  stderrTail = (stderrTail + chunk).slice(-65536);
});

// Pass interruptions on to ava (by its pid) rather than dying and leaving it running.
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  });
}

child.on('error', err => {
  console.error(`run-tests: cannot start ava: ${err.message}`);
  process.exit(2);
});

child.on('close', (code, signal) => {
  if (pending !== '') countLine(pending);
  const notes = [];
  // ava 7's TAP reporter crashes (TypeError in dumpError) when it reports a global timeout or a
  // process.exit() in a test file: the pending tests are never listed and later results are lost.
  if (/TapReporter\.writeTimeout|no new tests completed|Timed out while running tests/.test(stderrTail)) {
    counts.failed += 1;
    notes.push('ava timed out waiting for tests; its TAP reporter crashed, so pending tests are not listed');
  } else if (/TapReporter\.writeProcessExit/.test(stderrTail)) {
    counts.failed += 1;
    notes.push('a test file called process.exit() with tests pending; ava\'s TAP reporter crashed, later results are lost');
  } else if (/at TapReporter\./.test(stderrTail)) {
    counts.failed += 1;
    notes.push('ava\'s TAP reporter crashed; later results are lost');
  }
  const avaFailed = code !== 0;
  if (avaFailed) {
    notes.push(`ava exited with ${signal === null ? `code ${code}` : `signal ${signal}`}`);
    if (counts.failed === 0) counts.failed = 1;
  }
  const stale = sweepStaleNamespaces();
  if (stale.length > 0) notes.push(`removed ${stale.length} test namespace(s) left by dead test processes: ${stale.join(', ')}`);
  const ran = counts.passed + counts.failed;
  if (ran === 0) notes.push('no tests ran');

  process.stdout.write('\n');
  for (const note of notes) process.stdout.write(`# ${note}\n`);
  if (counts.skipped > 0) process.stdout.write(`${counts.skipped} skipped\n`);
  if (counts.todo > 0) process.stdout.write(`${counts.todo} todo\n`);
  process.stdout.write(`${counts.passed} passed, ${counts.failed} failed\n`);
  process.exitCode = counts.failed > 0 || avaFailed || ran === 0 ? 1 : 0;
});
