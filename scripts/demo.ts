/**
 * `npm run demo` (as root): a throwaway network namespace, a toy server on 127.0.0.1:8080 in it,
 * extra ports attached with the real skl CLI, connections to them, counters, then a clean-up that
 * leaves nothing behind. Everything happens inside the namespace: the host network is untouched.
 */
import {spawn, spawnSync, type ChildProcess} from 'node:child_process';
import {fileURLToPath} from 'node:url';
import chalk from 'chalk';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const NS = `skl-demo-${process.pid}`;
const NS_PATH = `/run/netns/${NS}`;

const SERVER = `
const net = require('net');
net.createServer((s) => s.end('hello from pid ' + process.pid + ': you reached port ' + s.localPort + '\\n'))
  .listen(8080, '127.0.0.1', () => console.log('listening'));`;

const CLIENT = `
const net = require('net');
const port = Number(process.argv[1]);
const s = net.connect({host: '127.0.0.1', port, timeout: 2000});
let data = '';
s.on('data', (d) => (data += d));
s.on('end', () => { console.log(data.trim()); });
s.on('timeout', () => { console.log('timed out'); s.destroy(); });
s.on('error', (e) => console.log('refused (' + e.code + ')'));`;

function sh(cmd: string, args: string[]): {code: number; out: string} {
  const r = spawnSync(cmd, args, {encoding: 'utf8'});
  return {code: r.status ?? 1, out: `${r.stdout}${r.stderr}`.trimEnd()};
}

function skl(...args: string[]): void {
  console.log(chalk.cyan(`$ skl ${args.join(' ')}`));
  const r = spawnSync(process.execPath, [`${ROOT}/bin/run.js`, ...args, '--netns', NS_PATH], {encoding: 'utf8', env: {...process.env, FORCE_COLOR: chalk.level ? '1' : '0'}});
  process.stdout.write(r.stdout);
  process.stdout.write(r.stderr);
  if (r.status !== 0) throw new Error(`skl ${args[0]} failed (exit ${r.status})`);
}

function connect(port: number): void {
  const r = spawnSync('nsenter', [`--net=${NS_PATH}`, process.execPath, '-e', CLIENT, String(port)], {encoding: 'utf8'});
  console.log(`  connect 127.0.0.1:${String(port).padEnd(5)} → ${r.stdout.trim()}`);
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    console.error('the demo needs root (it creates a network namespace and loads eBPF): run it as root, e.g. sudo npm run demo');
    process.exit(1);
  }
  let server: ChildProcess | undefined;
  const step = (s: string) => console.log(`\n${chalk.bold(s)}`);
  try {
    step(`1. A throwaway network namespace ${NS} and a toy server on 127.0.0.1:8080 in it`);
    if (sh('ip', ['netns', 'add', NS]).code !== 0) throw new Error(`cannot create network namespace ${NS}`);
    sh('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);
    server = spawn('nsenter', [`--net=${NS_PATH}`, process.execPath, '-e', SERVER], {stdio: ['ignore', 'pipe', 'inherit']});
    await new Promise<void>((resolve, reject) => {
      server!.stdout!.once('data', () => resolve());
      server!.once('exit', (c) => reject(new Error(`toy server exited (${c})`)));
    });
    console.log(`  server pid ${server.pid} listening on 127.0.0.1:8080`);
    connect(8080);
    connect(8081);

    step('2. Give it extra ports, without touching the process');
    skl('attach', '--pid', String(server.pid), '--ports', '8081,9000-9002', '--name', 'demo');
    for (const p of [8080, 8081, 9000, 9002, 9003]) connect(p);

    step('3. Change ports live, and look at the counters');
    skl('ports', 'add', 'demo', '7000');
    connect(7000);
    skl('status');

    step('4. Detach: the extra ports stop at once, the server\'s own port keeps working');
    skl('detach', 'demo');
    connect(8081);
    connect(8080);
  } finally {
    if (server?.pid) {
      server.kill('SIGTERM');
      await new Promise((r) => server!.once('exit', r).once('error', r));
    }
    spawnSync(process.execPath, [`${ROOT}/bin/run.js`, 'detach', '--all', '--netns', NS_PATH], {stdio: 'ignore'});
    sh('ip', ['netns', 'del', NS]);
    console.log(`\n${chalk.dim(`cleaned up: namespace ${NS} removed, nothing left attached`)}`);
  }
}

main().catch((error: Error) => {
  console.error(chalk.red(`demo failed: ${error.message}`));
  process.exit(1);
});
