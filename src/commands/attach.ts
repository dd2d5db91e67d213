import {Flags} from '../cli/oclif.js';
import {SklCommand} from '../cli/base.js';
import {jsonFlag, netnsFlag} from '../cli/flags.js';
import {dim, note, ok} from '../cli/render.js';
import {attach, attachForeground, parseUdpReplies, type AttachOptions, type AttachResult} from '../dispatcher/api.js';
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
    {command: '<%= config.bin %> attach --pid 1234 --ports 5353 --proto tcp,udp', description: 'TCP and UDP of the same port (UDP replies leave from the extra port the client used)'},
    {command: '<%= config.bin %> attach --pid 1234 --ports 5353 --proto udp --udp-replies off', description: 'UDP replies leave from the service\'s own port'},
    {command: '<%= config.bin %> attach --pid 1234 --listener :8080 --ports 8081', description: 'the process listens on several ports: pick one'},
    {command: '<%= config.bin %> attach --pid 1234 --ports all --address 127.0.0.9/32', description: 'every port of one local address'},
    {command: '<%= config.bin %> attach --pid 1234 --ports 8081 --netns /run/netns/blue', description: 'act on another network namespace'},
    {command: '<%= config.bin %> attach --pid 1234 --ports 8081 --foreground', description: 'stay attached until Ctrl-C'},
    {command: '<%= config.bin %> attach --unit nginx.service --ports 8080', description: 'keep the extra ports through restarts of the unit'},
    {command: '<%= config.bin %> attach --cgroup system.slice/app.service --listener :8000 --ports 8001', description: 'attach before the service starts: its ports work when it listens'},
  ];

  static override flags = {
    pid: Flags.string({char: 'p', description: 'process whose sockets receive the connections', helpValue: 'PID'}),
    cgroup: Flags.string({description: 'follow the service in this cgroup v2 directory across restarts (its new listening sockets are steered to as they appear, in the kernel)', helpValue: 'PATH'}),
    unit: Flags.string({description: 'follow a systemd unit across restarts (its cgroup; its main process\'s sockets now)', helpValue: 'NAME'}),
    follow: Flags.boolean({description: 'with --pid: follow the process\'s cgroup across restarts (refused for the root or a shared cgroup unless --force)', default: false}),
    ports: Flags.string({description: 'extra ports: 80,443,8000-8999, or all (required unless replacing an existing --name)', helpValue: 'LIST'}),
    proto: Flags.string({description: 'protocol(s) of the service', options: ['tcp', 'udp', 'tcp,udp', 'udp,tcp'], default: 'tcp'}),
    name: Flags.string({char: 'n', description: 'service name [A-Za-z0-9_.-]{1,64} (default <comm>-<pid>); an existing name has its sockets replaced in place'}),
    listener: Flags.string({description: 'choose the listener when the process has several: ADDR:PORT, [V6]:PORT, or :PORT / PORT for every address of the port (repeatable)', multiple: true, helpValue: 'ADDR:PORT'}),
    fd: Flags.integer({description: 'choose the socket by its fd number in the process (repeatable)', min: 0, multiple: true}),
    address: Flags.string({description: 'bind the ports for this local address or prefix only (repeatable; default: every address of the families the sockets serve)', multiple: true, helpValue: 'IP[/PREFIX]'}),
    force: Flags.boolean({description: 'bind even if another socket already serves those addresses and ports (hijacks it)', default: false}),
    'udp-replies': Flags.string({
      description: 'UDP: replies to a datagram that came in on an extra port leave from that port (rewrite; default for a new service), or from the service\'s own port (off)',
      options: ['rewrite', 'off'],
    }),
    foreground: Flags.boolean({description: 'stay attached until SIGINT/SIGTERM/SIGHUP; leaves nothing behind, even if killed', default: false}),
    netns: netnsFlag,
    json: jsonFlag,
  };

  async run(): Promise<void> {
    const {flags} = await this.parse(Attach);
    if (flags.pid === undefined && flags.cgroup === undefined && flags.unit === undefined) throw new UsageError('give the target: --pid PID, --cgroup PATH or --unit NAME');
    const opts: AttachOptions = {
      pid: flags.pid === undefined ? undefined : parsePid(flags.pid),
      cgroup: flags.cgroup,
      unit: flags.unit,
      follow: flags.follow,
      ports: flags.ports === undefined ? undefined : parsePortSpec(flags.ports),
      proto: parseProtos(flags.proto),
      name: flags.name,
      listener: flags.listener?.map((l) => parseListener(l)),
      fd: flags.fd,
      addresses: flags.address?.map(parseAddress),
      force: flags.force,
      netns: flags.netns,
      udpReplies: flags['udp-replies'] === undefined ? undefined : parseUdpReplies(flags['udp-replies']),
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
    const target = r.pid ? `${r.comm}[${r.pid}] ${r.listeners.join(' ')}` : `the first listener on ${r.follow?.listeners.join(' ')}`;
    const follows = r.follow ? dim(` (follows cgroup ${r.follow.cgroup} across restarts)`) : '';
    this.log(
      `${ok('✔')} ${verb} ${r.name}: ${[...new Set(bindings)].join(', ')} → ${target}${follows}` +
        (foreground ? dim(' (foreground: Ctrl-C to detach)') : ''),
    );
  }
}
