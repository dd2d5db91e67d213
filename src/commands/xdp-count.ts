import type {ChalkInstance} from 'chalk';
import {Args, Flags} from '../cli/oclif.js';
import {chalk, Chalk, chalkStderr} from '../cli/color.js';
import {SklCommand} from '../cli/base.js';
import {SklError, UsageError} from '../sys/errors.js';
import {
  describeForeign,
  formatBitRate,
  formatBytes,
  formatClock,
  formatCount,
  formatDuration,
  modeLabel,
  XdpCounter,
  XDP_MODE_REQUESTS,
  watch,
  type Sample,
  type Summary,
} from '../xdp/index.js';

/** NO_COLOR (https://no-color.org): any non-empty value disables colour. */
const noColor = (process.env.NO_COLOR ?? '') !== '';
const out: ChalkInstance = noColor ? new Chalk({level: 0}) : chalk;
const err: ChalkInstance = noColor ? new Chalk({level: 0}) : chalkStderr;

export default class XdpCount extends SklCommand {
  static override summary = 'Count the packets an interface receives, live (XDP)';
  static override description = [
    'Attaches a small XDP program (bpf/xdp_count.o) to IFACE and prints, every interval, the packets and bytes ' +
      'received since it started and the rate since the previous line. The program counts per CPU (no atomic ' +
      'contention) and always returns XDP_PASS: traffic is never disturbed.',
    'It is attached through a bpf_link that is never pinned: on SIGINT/SIGTERM skl detaches and prints a summary, ' +
      'and even a SIGKILLed skl leaves nothing attached. An XDP program already on the interface is refused unless ' +
      '--force, which detaches it for good (it is not restored afterwards).',
    'Status and notices go to stderr; samples and the summary go to stdout (--json: one object per line, "type" ' +
      'is "sample" or "summary"). Exit codes: 0 stopped by a signal or --count, 1 failure (or the program was ' +
      'detached by someone else), 2 invalid input.',
  ].join('\n\n');

  static override examples = [
    '<%= config.bin %> <%= command.id %> eth0',
    '<%= config.bin %> <%= command.id %> eth0 --interval 0.5 --count 10',
    '<%= config.bin %> <%= command.id %> veth1 --netns /run/netns/blue --json',
    '<%= config.bin %> <%= command.id %> lo --mode skb',
  ];

  static override args = {
    iface: Args.string({description: 'interface to count on', required: true, ignoreStdin: true}),
  };

  static override flags = {
    interval: Flags.string({description: 'seconds between lines (decimals allowed)', default: '1'}),
    count: Flags.integer({description: 'stop after N lines', min: 1}),
    json: Flags.boolean({description: 'one JSON object per line', default: false}),
    netns: Flags.string({description: 'network namespace file of the interface (/run/netns/NAME, /proc/PID/ns/net)'}),
    mode: Flags.option({
      description: 'XDP mode: auto = native, else generic (skb) with a notice',
      options: XDP_MODE_REQUESTS,
      default: 'auto' as const,
    })(),
    force: Flags.boolean({description: 'replace an XDP program already attached to the interface', default: false}),
  };

  async run(): Promise<void> {
    const {args, flags} = await this.parse(XdpCount);
    const intervalMs = parseInterval(flags.interval);

    // Signals stop the loop (then we detach and summarise); installed before attach so that none is lost.
    const stopper = new AbortController();
    const onSignal = (): void => stopper.abort();
    const onStdoutError = (e: NodeJS.ErrnoException): void => {
      if (e.code !== 'EPIPE') throw e;
      stopper.abort(); // the reader went away (e.g. `| head`): stop quietly
    };
    const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
    for (const s of signals) process.on(s, onSignal);
    process.stdout.on('error', onStdoutError);

    try {
      const counter = XdpCounter.attach({ifname: args.iface, netns: flags.netns, mode: flags.mode, force: flags.force});
      const startMs = performance.now();
      try {
        for (const p of counter.replaced) this.status(`${err.yellow('notice:')} replaced XDP program ${describeForeign(p)}`);
        for (const n of counter.notices) this.status(`${err.yellow('notice:')} ${n}`);
        const where = flags.netns ? `, netns ${flags.netns}` : '';
        this.status(
          `counting on ${err.bold(args.iface)} in ${modeLabel(counter.mode)} mode (XDP program id ${counter.progId}${where}); Ctrl-C to stop`,
        );
        const summary = await watch(counter, {
          intervalMs,
          count: flags.count,
          signal: stopper.signal,
          startMs,
          onSample: (sample) => this.emit(sample, flags.json),
        });
        counter.close(); // detach first: nothing after this can leave it attached
        this.emit(summary, flags.json);
        if (summary.reason === 'detached') {
          throw new SklError(`the counter was detached from ${args.iface} (interface removed, or replaced by another program with --force)`);
        }
      } finally {
        counter.close();
      }
    } finally {
      for (const s of signals) process.off(s, onSignal);
      process.stdout.off('error', onStdoutError);
    }
  }

  private status(line: string): void {
    process.stderr.write(`${line}\n`);
  }

  private emit(record: Sample | Summary, json: boolean): void {
    if (!process.stdout.writable) return;
    process.stdout.write(`${json ? JSON.stringify(record) : record.type === 'sample' ? renderSample(record) : renderSummary(record)}\n`);
  }
}

function parseInterval(text: string): number {
  const seconds = Number(text);
  if (text.trim() === '' || !Number.isFinite(seconds) || seconds < 0.01 || seconds > 86_400) {
    throw new UsageError(`--interval ${JSON.stringify(text)}: give a number of seconds between 0.01 and 86400`);
  }
  return seconds * 1000;
}

function renderSample(s: Sample): string {
  return [
    out.dim(formatClock(new Date(s.timestamp))),
    out.cyan(s.interface),
    `${out.bold(formatCount(s.packets))} packets ${out.dim(`(+${formatCount(s.delta)})`)}`,
    out.green(`${formatCount(s.pps)} pps`),
    `${formatBytes(s.bytes)} ${out.dim(`(+${formatBytes(s.bytesDelta)})`)}`,
    out.green(formatBitRate(s.bytesPerSecond)),
  ].join('  ');
}

function renderSummary(s: Summary): string {
  const why = s.reason === 'count' ? 'after --count lines' : s.reason === 'signal' ? 'stopped' : 'detached by someone else';
  return (
    `${out.bold('summary')} ${out.cyan(s.interface)} (${modeLabel(s.mode)}, ${why}): ` +
    `${out.bold(formatCount(s.packets))} packets, ${formatBytes(s.bytes)} in ${formatDuration(s.duration)}; ` +
    `average ${out.green(`${formatCount(s.pps)} pps`)}, ${out.green(formatBitRate(s.bytesPerSecond))}`
  );
}
