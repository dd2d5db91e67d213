import {Flags} from '../cli/oclif.js';
import {SklCommand} from '../cli/base.js';
import {jsonFlag, netnsFlag} from '../cli/flags.js';
import {dim, note, ok} from '../cli/render.js';
import {attach, attachForeground, type AttachOptions, type AttachResult} from '../dispatcher/api.js';
import {parseAddress, parseListener, parsePid, parsePortSpec, parseProtos} from '../dispatcher/input.js';
import {UsageError} from '../sys/errors.js';
import {waitForSignal} from '../cli/signals.js';

export default class Attach extends SklCommand {
  static override summary = 'Give a running service extra ports (steered to its own listening sockets)';
  static override description =
    'Connections to the extra ports reach the process\'s existing sockets through an eBPF sk_lookup program: ' +
    'every socket of its listener (IPv4 and IPv6, one member of a reuseport group, TCP and UDP with --proto tcp,udp). ' +
    'The process is not restarted or signalled. The service persists after skl exits (use --foreground to tie it to skl).';
  static override examples = [
    {command: '<%= config.bin %> attach --pid 1234 --ports 8080,9090', description: 'two extra ports for process 1234'},
    {command: '<%= config.bin %> attach --pid 1234 --ports 10000-10100 --name web', description: 'a range, under a chosen name'},
    {command: '<%= config.bin %> attach --pid 1234 --ports 5353 --proto tcp,udp', description: 'TCP and UDP of the same port (UDP replies leave from the bound port)'},
    {command: '<%= config.bin %> attach --pid 1234 --listener :8080 --ports 8081', description: 'the process listens on several ports: pick one'},
    {command: '<%= config.bin %> attach --pid 1234 --ports all --address 127.0.0.9/32', description: 'every port of one local address'},
    {command: '<%= config.bin %> attach --pid 1234 --ports 8081 --netns /run/netns/blue', description: 'act on another network namespace'},
    {command: '<%= config.bin %> attach --pid 1234 --ports 8081 --foreground', description: 'stay attached until Ctrl-C'},
  ];

  static override flags = {
    pid: Flags.string({char: 'p', description: 'process whose socket receives the connections', required: true, helpValue: 'PID'}),
    ports: Flags.string({description: 'extra ports: 80,443,8000-8999, or all (required unless replacing an existing --name)', helpValue: 'LIST'}),
    proto: Flags.string({description: 'protocol(s) of the service', options: ['tcp', 'udp', 'tcp,udp', 'udp,tcp'], default: 'tcp'}),
    name: Flags.string({char: 'n', description: 'service name [A-Za-z0-9_.-]{1,64} (default <comm>-<pid>); an existing name has its sockets replaced in place'}),
    listener: Flags.string({description: 'choose the listener when the process has several: ADDR:PORT, [V6]:PORT, or :PORT / PORT for every address of the port (repeatable)', multiple: true, helpValue: 'ADDR:PORT'}),
    fd: Flags.integer({description: 'choose the socket by its fd number in the process (repeatable)', min: 0, multiple: true}),
    address: Flags.string({description: 'bind the ports for this local address or prefix only (repeatable; default: every address of the families the sockets serve)', multiple: true, helpValue: 'IP[/PREFIX]'}),
    force: Flags.boolean({description: 'bind even if another socket already serves those addresses and ports (hijacks it)', default: false}),
    foreground: Flags.boolean({description: 'stay attached until SIGINT/SIGTERM/SIGHUP; leaves nothing behind, even if killed', default: false}),
    netns: netnsFlag,
    json: jsonFlag,
  };

  async run(): Promise<void> {
    const {flags} = await this.parse(Attach);
    const opts: AttachOptions = {
      pid: parsePid(flags.pid),
      ports: flags.ports === undefined ? undefined : parsePortSpec(flags.ports),
      proto: parseProtos(flags.proto),
      name: flags.name,
      listener: flags.listener?.map(parseListener),
      fd: flags.fd,
      addresses: flags.address?.map(parseAddress),
      force: flags.force,
      netns: flags.netns,
    };
    if (flags.foreground) {
      if (opts.ports === undefined) throw new UsageError('--ports is required');
      const fg = await attachForeground(opts);
      this.report(fg, flags.json, true);
      const signal = await waitForSignal();
      fg.close();
      if (flags.json) this.log(JSON.stringify({event: 'detached', name: fg.name, signal}));
      else this.log(`${ok('✔')} detached ${fg.name} (${signal})`);
      return;
    }
    this.report(await attach(opts), flags.json, false);
  }

  private report(r: AttachResult, json: boolean, foreground: boolean): void {
    for (const n of r.notices) process.stderr.write(`${note('notice:')} ${n}\n`);
    if (json) {
      const {notices: _n, ...rest} = r;
      this.log(JSON.stringify({event: 'attached', ...rest, foreground}));
      return;
    }
    const verb = r.replaced ? 'replaced' : 'attached';
    const bindings = r.bindings.map((b) => `${b.protocol.toUpperCase()} ${b.ports}${b.prefix === '0.0.0.0/0' || b.prefix === '::/0' ? '' : ` @${b.prefix}`}`);
    this.log(
      `${ok('✔')} ${verb} ${r.name}: ${[...new Set(bindings)].join(', ')} → ${r.comm}[${r.pid}] ${r.listeners.join(' ')}` +
        (foreground ? dim(' (foreground: Ctrl-C to detach)') : ''),
    );
  }
}
