// Unit tests (no root): the light CLI runtime (src/cli/light.ts) that bin/run.js uses for the
// everyday commands must parse exactly as oclif does. For each fast command and many command lines,
// the light parser either declines (oclif's parser then decides, with its own errors) or returns
// the same args, flags and argv as oclif's parser. Also: the commands' output and exit codes are
// the same on both runtimes (bin/run.js vs SKL_FULL_CLI=1).
import {spawnSync} from 'node:child_process';
import {fileURLToPath} from 'node:url';
import test from 'ava';
import {enterLightMode} from '../src/cli/mode.js';

// light mode before any command module is imported: they then get the light Flags/Args
enterLightMode();
const {lightParse, oclifParse} = await import('../src/cli/light.js');
type Input = Parameters<typeof lightParse>[1];
const load = async (m: string): Promise<Input> => (await import(`../src/commands/${m}`)).default as Input;
const commands: Record<string, Input> = {
  attach: await load('attach.js'),
  detach: await load('detach.js'),
  status: await load('status.js'),
  metrics: await load('metrics.js'),
  'ports:add': await load('ports/add.js'),
  'ports:remove': await load('ports/remove.js'),
  'xdp-count': await load('xdp-count.js'),
};

const BIN = fileURLToPath(new URL('../../bin/run.js', import.meta.url));

const samples: Record<string, {handled: string[][]; any: string[][]}> = {
  attach: {
    handled: [
      ['--pid', '1234', '--ports', '8080,9090'],
      ['--pid=1234', '--ports=8080'],
      ['-p', '1234', '--ports', '10000-10100', '--name', 'web'],
      ['--pid', '1', '--ports', '5353', '--proto', 'udp'],
      ['--pid', '1', '--listener', '127.0.0.1:8080', '--ports', '8081', '--address', '127.0.0.1'],
      ['--pid', '1', '--ports', '1', '--address', '10.0.0.0/8', '--address', 'fd00::/8', '--force'],
      ['--pid', '1', '--ports', '8081', '--foreground', '--json'],
      ['--pid', '1', '--fd', '3', '--ports', '8081', '--netns', '/run/netns/blue'],
      ['--pid', '1', '--fd', '007'],
      ['--pid', '1'],
      ['--json', '--pid', '12', '-n', 'x', '--ports', '1-65535'],
    ],
    any: [
      [],
      ['--pid'],
      ['--pid', '1', '--pid', '2'],
      ['--pid', '1', '--ports'],
      ['--pid', '1', '--ports', '--force'],
      ['--pid', '1', '--ports', '-5'],
      ['--pid', '1', '--fd', 'x'],
      ['--pid', '1', '--fd', '-1'],
      ['--pid', '1', '--proto', 'sctp'],
      ['--pid', '1', '--proto=udp', '--proto', 'tcp'],
      ['--pid', '1', '--address', 'a', 'b'],
      ['--pid', '1', '--address', 'a', '--force', 'extra'],
      ['--pid', '1', 'extra'],
      ['--pid', '1', '--force=true'],
      ['--pid', '1', '--no-force'],
      ['--pid', '1', '-f'],
      ['-p1', '--ports', '1'],
      ['-p=1', '--ports', '1'],
      ['--pid', '1', '--', '--ports', '1'],
      ['--pid', '1', '--ports', ''],
      ['--bogus'],
      ['--pid', '1', '--force', '--force'],
    ],
  },
  detach: {
    handled: [['web'], ['--all'], ['web', '--netns', '/run/netns/blue'], ['--json', 'web'], []],
    any: [['a', 'b'], ['--all', 'web', 'x'], ['--all=yes'], ['-'], ['--netns']],
  },
  status: {
    handled: [[], ['web'], ['web', '--json'], ['--netns', '/proc/1/ns/net']],
    any: [['a', 'b'], ['--json', '--json'], ['--netns'], ['--', 'web']],
  },
  metrics: {
    handled: [[], ['-o', '/tmp/x.prom'], ['--output', '/tmp/x.prom', '--netns', '/run/netns/a']],
    any: [['extra'], ['-o'], ['--output=']],
  },
  'ports:add': {
    handled: [['web', '8443'], ['web', '20000-20999', '--force'], ['--json', 'web', '1,2,3']],
    any: [[], ['web'], ['web', '1', '2'], ['web', '-1'], ['web', '1', '--force=1']],
  },
  'ports:remove': {
    handled: [['web', '8443'], ['web', '1-10', '--netns', '/run/netns/a']],
    any: [[], ['web'], ['web', '1', 'x']],
  },
  'xdp-count': {
    handled: [['eth0'], ['eth0', '--interval', '0.5', '--count', '10'], ['veth1', '--netns', '/run/netns/blue', '--json'], ['lo', '--mode', 'skb', '--force']],
    any: [[], ['eth0', '--count', '0'], ['eth0', '--count', 'x'], ['eth0', '--mode', 'fast'], ['eth0', 'eth1'], ['eth0', '--interval']],
  },
};

const pick = (r: {args: unknown; flags: unknown; argv: unknown}) => ({args: r.args, flags: r.flags, argv: r.argv});

for (const [id, cmd] of Object.entries(commands)) {
  test(`light parser = oclif's parser: ${id}`, async (t) => {
    const {handled, any} = samples[id];
    for (const argv of [...handled, ...any]) {
      const light = lightParse(argv, cmd);
      if (handled.includes(argv)) t.truthy(light, `light parser should handle: ${argv.join(' ')}`);
      if (!light) continue;
      const ref = await oclifParse(argv, cmd, {});
      t.deepEqual(pick(light), pick(ref), `${id} ${argv.join(' ')}`);
    }
  });
}

test('bin/run.js: same output and exit code on the light runtime and on oclif', (t) => {
  const lines = [
    ['status', '--netns', '/nonexistent'],
    ['attach', '--pid', 'abc', '--ports', '1'],
    ['attach', '--bogus'],
    ['attach', '--pid', '1', '--ports', '80', '--fd', 'x'],
    ['attach', '--pid', '1', '--ports', '80', '--proto', 'sctp'],
    ['detach'],
    ['detach', 'bad name!'],
    ['ports', 'add'],
    ['ports', 'add', 'x'],
    ['ports', 'remove', 'web', '0'],
    ['status', 'a', 'b'],
    ['xdp-count'],
    ['xdp-count', 'lo', '--count', '0'],
    ['xdp-count', 'lo', '--mode', 'fast'],
    ['xdp-count', 'no-such-interface0', '--count', '1'],
  ];
  for (const argv of lines) {
    const run = (env: NodeJS.ProcessEnv) => {
      const r = spawnSync(process.execPath, [BIN, ...argv], {encoding: 'utf8', env: {...process.env, ...env}, timeout: 30_000});
      return {code: r.status, stdout: r.stdout, stderr: r.stderr.replace(/\(node:\d+\)/g, '(node:PID)')};
    };
    const light = run({SKL_FULL_CLI: ''});
    const full = run({SKL_FULL_CLI: '1'});
    t.deepEqual(light, full, argv.join(' '));
    t.not(light.code, 0, argv.join(' '));
  }
});
