import {Flags} from '../cli/oclif.js';
import {SklCommand} from '../cli/base.js';
import {netnsFlag} from '../cli/flags.js';
import {status} from '../dispatcher/api.js';
import {libbpfVersion} from '../bpf/version.js';
import {formatMetrics} from '../metrics/prometheus.js';
import {writeFileAtomic} from '../metrics/textfile.js';
import {SklError, UsageError} from '../sys/errors.js';
import {parseListener} from '../dispatcher/input.js';
import {serveMetrics} from '../metrics/server.js';
import {SKL_VERSION} from '../version.js';
import {waitForSignal} from '../cli/signals.js';

export default class Metrics extends SklCommand {
  static override summary = 'Print the dispatcher\'s counters in Prometheus text format';
  static override description =
    'Per service: redirected, target-gone misses, ports, bindings, liveness; plus build info. ' +
    'For node_exporter\'s textfile collector, write atomically with --output.';
  static override examples = [
    {command: '<%= config.bin %> metrics', description: 'print to stdout'},
    {
      command: '<%= config.bin %> metrics --output /var/lib/node_exporter/textfile_collector/skl.prom',
      description: 'for node_exporter (e.g. from a systemd timer)',
    },
    {command: '<%= config.bin %> metrics --netns /run/netns/blue', description: 'another namespace'},
    {command: '<%= config.bin %> metrics --listen 127.0.0.1:9323', description: 'a Prometheus scrape endpoint (GET /metrics)'},
  ];
  static override flags = {
    netns: netnsFlag,
    output: Flags.string({char: 'o', description: 'write to FILE atomically instead of stdout (a new file renamed over FILE; a symlink at FILE is replaced, not followed)', helpValue: 'FILE'}),
    listen: Flags.string({description: 'serve GET /metrics over HTTP on ADDR:PORT until SIGTERM/SIGINT (read from the pinned state at every scrape)', helpValue: 'ADDR:PORT'}),
  };

  async run(): Promise<void> {
    const {flags} = await this.parse(Metrics);
    if (flags.output === '') throw new UsageError('invalid --output: an empty file name; name the file to write, e.g. --output /var/lib/node_exporter/textfile_collector/skl.prom');
    if (flags.listen !== undefined && flags.output !== undefined) throw new UsageError('give --listen or --output, not both');
    const render = async (): Promise<string> => formatMetrics([await status({netns: flags.netns})], {version: SKL_VERSION, libbpf: libbpfVersion(), node: process.version});
    if (flags.listen !== undefined) {
      const {address, port} = parseListener(flags.listen, '--listen');
      const host = address ?? '0.0.0.0';
      await render(); // fail now, with one line, if the state cannot be read
      let srv;
      try {
        srv = await serveMetrics(host, port, render, (line) => process.stderr.write(`${new Date().toISOString()} ${line}\n`));
      } catch (error) {
        throw new SklError(`cannot listen on ${flags.listen}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
      }
      process.stderr.write(`serving metrics on http://${srv.address.includes(':') ? `[${srv.address}]` : srv.address}:${srv.port}/metrics\n`);
      await waitForSignal();
      await srv.close();
      return;
    }
    const text = await render();
    if (flags.output !== undefined) {
      writeFileAtomic(flags.output, text);
    } else {
      process.stdout.write(text);
    }
  }
}
