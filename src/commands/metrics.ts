import {readFileSync} from 'node:fs';
import {Flags} from '../cli/oclif.js';
import {SklCommand} from '../cli/base.js';
import {netnsFlag} from '../cli/flags.js';
import {status} from '../dispatcher/api.js';
import {libbpfVersion} from '../bpf/version.js';
import {formatMetrics} from '../metrics/prometheus.js';
import {writeFileAtomic} from '../metrics/textfile.js';
import {UsageError} from '../sys/errors.js';

export default class Metrics extends SklCommand {
  static override summary = 'Print the dispatcher\'s counters in Prometheus text format';
  static override description =
    'Per attachment: redirected, target-gone misses, filtered, ports, liveness; plus build info. ' +
    'For node_exporter\'s textfile collector, write atomically with --output.';
  static override examples = [
    {command: '<%= config.bin %> metrics', description: 'print to stdout'},
    {
      command: '<%= config.bin %> metrics --output /var/lib/node_exporter/textfile_collector/skl.prom',
      description: 'for node_exporter (e.g. from a systemd timer)',
    },
    {command: '<%= config.bin %> metrics --netns /run/netns/blue', description: 'another namespace'},
  ];
  static override flags = {
    netns: netnsFlag,
    output: Flags.string({char: 'o', description: 'write to FILE atomically instead of stdout (a new file renamed over FILE; a symlink at FILE is replaced, not followed)', helpValue: 'FILE'}),
  };

  async run(): Promise<void> {
    const {flags} = await this.parse(Metrics);
    if (flags.output === '') throw new UsageError('invalid --output: an empty file name; name the file to write, e.g. --output /var/lib/node_exporter/textfile_collector/skl.prom');
    const report = await status({netns: flags.netns});
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {version: string};
    const text = formatMetrics([report], {version: pkg.version, libbpf: libbpfVersion(), node: process.version});
    if (flags.output !== undefined) {
      writeFileAtomic(flags.output, text);
    } else {
      process.stdout.write(text);
    }
  }
}
