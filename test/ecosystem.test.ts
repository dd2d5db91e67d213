// Issue 7: the library's in-process mode (examples/self-attach.ts), Prometheus metrics.
import {createInterface} from 'node:readline';
import {fileURLToPath} from 'node:url';
import test from 'ava';
import {privileged} from './helpers/privileged.js';
import {createNetns} from './helpers/netns.js';
import {startToyServer} from './helpers/servers.js';
import {connectOnce} from './helpers/clients.js';
import {skl} from './helpers/dispatcher.js';
import {formatMetrics} from '../src/metrics/prometheus.js';
import type {StatusReport} from '../src/dispatcher/api.js';

const EXAMPLE = fileURLToPath(new URL('../examples/self-attach.js', import.meta.url));

/** Prometheus text → map of "name{labels}" → value, checking every line is well-formed. */
function parseProm(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.trimEnd().split('\n')) {
    if (line.startsWith('# HELP ') || line.startsWith('# TYPE ')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9.e+]+)$/.exec(line);
    if (!m) throw new Error(`not Prometheus text: ${line}`);
    out.set(`${m[1]}${m[2] ?? ''}`, Number(m[3]));
  }
  return out;
}

test('metrics text: HELP/TYPE per family, escaped labels, one sample per attachment', (t) => {
  const report: StatusReport = {
    netns: '/proc/self/ns/net',
    netnsIno: 42,
    dispatcher: true,
    notices: [],
    attachments: [
      {
        name: 'we"b\\1', pid: 7, command: 'x', protocols: ['tcp'], listeners: ['0.0.0.0:80'],
        sockets: [{protocol: 'tcp', family: 4, listener: '0.0.0.0:80', pid: 7, alive: true}],
        bindings: [{protocol: 'tcp', prefix: '0.0.0.0/0', ports: '1-2'}], ports: [1, 2], portsText: '1-2',
        alive: true, processAlive: true, redirected: 5, missed: 1, retaken: 0, mode: 'persistent',
        createdAt: '', netnsIno: 42, layout: 1,
      },
    ],
  };
  const text = formatMetrics([report], {version: '1.0.0', libbpf: '1.1', node: 'v20'});
  const m = parseProm(text);
  t.is(m.get('skl_redirected_total{netns="42",name="we\\"b\\\\1",protocol="tcp",pid="7",mode="persistent"}'), 5);
  t.is(m.get('skl_ports{netns="42",name="we\\"b\\\\1",protocol="tcp",pid="7",mode="persistent"}'), 2);
  t.is(m.get('skl_bindings{netns="42",name="we\\"b\\\\1",protocol="tcp",pid="7",mode="persistent"}'), 1);
  t.is(m.get('skl_service_layout{netns="42",name="we\\"b\\\\1",protocol="tcp",pid="7",mode="persistent"}'), 1);
  t.is(m.get('skl_upgrade_needed{netns="42"}'), 0);
  t.is(m.get('skl_attachments{netns="42"}'), 1);
  t.regex(text, /^# TYPE skl_redirected_total counter$/m);
  t.true(text.endsWith('\n'));
});

privileged('skl metrics: counts move with real connections', async (t) => {
  const ns = createNetns(t);
  const server = await startToyServer(ns, {proto: 'tcp', host: '127.0.0.1'});
  const a = await skl(['attach', '--pid', String(server.pid), '--ports', '18100-18101', '--name', 'metered'], {netns: ns.path});
  t.teardown(() => skl(['detach', '--all'], {netns: ns.path}).then(() => undefined));
  t.is(a.code, 0, a.stderr);
  for (let i = 0; i < 3; i++) t.true((await connectOnce(ns, {proto: 'tcp', host: '127.0.0.1', port: 18101})).ok);
  const r = await skl(['metrics'], {netns: ns.path});
  t.is(r.code, 0, r.stderr);
  const m = parseProm(r.stdout);
  const sample = [...m].find(([k]) => k.startsWith('skl_redirected_total{') && k.includes('name="metered"'));
  t.truthy(sample, r.stdout);
  t.is(sample![1], 3);
  t.is([...m].find(([k]) => k.startsWith('skl_ports{') && k.includes('name="metered"'))![1], 2);
  t.is([...m].find(([k]) => k.startsWith('skl_target_alive{'))![1], 1);
  t.true([...m.keys()].some((k) => k.startsWith('skl_build_info{version=')));
});

privileged('examples/self-attach: a server gives itself extra ports; they vanish when it exits', async (t) => {
  const ns = createNetns(t);
  const child = ns.spawn(process.execPath, [EXAMPLE, '--port', '0', '--extra', '18201-18203']);
  const ready = await new Promise<{pid: number; port: number; extra: number[]}>((resolve, reject) => {
    const rl = createInterface({input: child.stdout!});
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    rl.once('line', (line) => resolve(JSON.parse(line)));
    child.once('exit', (code) => reject(new Error(`example exited (${code}): ${err}`)));
  });
  t.deepEqual(ready.extra, [18201, 18202, 18203]);
  const own = await connectOnce(ns, {proto: 'tcp', host: '127.0.0.1', port: ready.port});
  const extra = await connectOnce(ns, {proto: 'tcp', host: '127.0.0.1', port: 18202});
  t.true(own.ok && extra.ok);
  if (extra.ok) {
    t.is(extra.reply.pid, ready.pid);
    t.is(extra.reply.localPort, 18202);
  }
  const st = await skl(['status', '--json'], {netns: ns.path});
  const att = (st.json as {attachments: {name: string; mode: string}[]}).attachments;
  t.deepEqual(att.map((x) => [x.name, x.mode]), [[`self-${ready.pid}`, 'foreground']]);
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
  const after = await connectOnce(ns, {proto: 'tcp', host: '127.0.0.1', port: 18202, timeoutMs: 2000});
  t.false(after.ok);
  if (!after.ok) t.is(after.error, 'ECONNREFUSED');
});
