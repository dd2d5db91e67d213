import {Args} from '../cli/oclif.js';
import {chalk} from '../cli/color.js';
import {SklCommand} from '../cli/base.js';
import {jsonFlag, netnsFlag} from '../cli/flags.js';
import {bad, dim, ellipsize, note, ok, table} from '../cli/render.js';
import {status} from '../dispatcher/api.js';

export default class Status extends SklCommand {
  static override summary = 'Show services: bindings, sockets, counters, liveness';
  static override examples = [
    {command: '<%= config.bin %> status', description: 'every service in this network namespace'},
    {command: '<%= config.bin %> status web --json', description: 'one service, as JSON'},
    {command: '<%= config.bin %> status --netns /run/netns/blue', description: 'in another namespace'},
  ];
  static override args = {name: Args.string({description: 'only this service', ignoreStdin: true})};
  static override flags = {netns: netnsFlag, json: jsonFlag};

  async run(): Promise<void> {
    const {args, flags} = await this.parse(Status);
    const r = await status({netns: flags.netns, name: args.name});
    for (const n of r.notices) process.stderr.write(`${note('notice:')} ${n}\n`);
    if (flags.json) {
      const {notices: _n, attachments, ...rest} = r;
      this.log(JSON.stringify({...rest, attachments: attachments.map(({portsText: _p, ...a}) => a)}));
      return;
    }
    this.log(chalk.bold(`network namespace ${r.netns} (inode ${r.netnsIno})`));
    if (r.damaged) this.log(`${bad('✘ damaged:')} ${r.damaged}`);
    if (r.upgrade) this.log(`${note('older layout:')} ${r.upgrade}`);
    if (r.attachments.length === 0) {
      this.log(dim('  no services'));
      return;
    }
    const udp = (a: (typeof r.attachments)[number]): string =>
      a.udpReplies === undefined ? '' : a.udpReplies === 'rewrite' ? ` udp replies: rewrite (${a.flows} flows, ${a.rewritten} rewritten)` : ' udp replies: off';
    const rows = r.attachments.map((a) => [
      a.name,
      String(a.pid),
      a.command,
      a.protocols.join('+'),
      a.listeners.join(' '),
      ellipsize(bindingsText(a.bindings)),
      String(a.redirected),
      a.missed ? bad(String(a.missed)) : '0',
      a.alive ? ok('yes') : a.follow ? bad(a.follow.currentPid ? 'not listening' : 'waiting') : bad(a.processAlive ? 'socket closed' : 'process gone'),
      (a.mode === 'foreground' ? `foreground (owner ${a.ownerPid})` : 'persistent') + (a.layout === 0 ? ' (skl 0.1.0)' : '') + (a.follow ? ` follows ${a.follow.cgroup} (${a.retaken} re-taken)` : '') + udp(a),
    ]);
    this.log(table(['NAME', 'PID', 'COMMAND', 'PROTO', 'LISTENER', 'PORTS', 'REDIRECTED', 'MISSED', 'ALIVE', 'MODE'], rows));
    for (const u of r.uncovered ?? []) this.log(`${note('uncovered interface:')} ${u.name} (ifindex ${u.ifindex}): ${u.reason}`);
  }
}

/** One cell: "8001-8003" for any-address bindings, "9000@127.0.0.0/8" for prefixes; protocols when they differ. */
function bindingsText(list: {protocol: string; prefix: string; ports: string}[]): string {
  const protos = new Set(list.map((b) => b.protocol));
  const parts = list.map((b) => `${protos.size > 1 ? `${b.protocol}:` : ''}${b.ports}${b.prefix === '0.0.0.0/0' || b.prefix === '::/0' ? '' : `@${b.prefix}`}`);
  return [...new Set(parts)].join(' ') || '-';
}
