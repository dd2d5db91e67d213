import {watch} from 'node:fs';
import {basename, dirname} from 'node:path';
import {Args, Flags} from '../cli/oclif.js';
import {SklCommand} from '../cli/base.js';
import {chalk} from '../cli/color.js';
import {netnsFlag, jsonFlag} from '../cli/flags.js';
import {dim, note} from '../cli/render.js';
import {STOP_SIGNALS} from '../cli/signals.js';
import {ApplyRefused, applyFile, type ApplyReport} from '../dispatcher/apply.js';
import {DesiredStateError} from '../dispatcher/desired.js';
import {UsageError} from '../sys/errors.js';

export default class Apply extends SklCommand {
  static override summary = 'Make the attached services match a desired-state file (YAML or JSON), idempotently';
  static override description =
    'The whole file is validated first (schema, ports, prefixes, targets, conflicts between entries and with what is attached); ' +
    'if anything is wrong nothing changes (exit 2 for an invalid file, 1 for a refused change), one line per problem. Then each ' +
    'namespace changes in one locked transaction, only what differs, never dropping a connection to a port that stays; ' +
    'an apply killed half-way is finished by the next skl acting on the namespace (any command). ' +
    'Services the file does not mention are left alone (and listed) unless --prune.';
  static override examples = [
    {command: '<%= config.bin %> apply /etc/skl/services.yaml --dry-run', description: 'the plan (+ add, - remove, ~ change), changing nothing'},
    {command: '<%= config.bin %> apply /etc/skl/services.yaml --json', description: '{"changed": bool, "actions": [...]} for configuration management'},
    {command: '<%= config.bin %> apply /etc/skl/services.yaml --prune', description: 'also detach services the file does not mention'},
    {command: '<%= config.bin %> apply /etc/skl/services.yaml --watch --interval 30', description: 're-apply on every change of the file, and every 30 s'},
  ];
  static override args = {file: Args.string({description: 'desired-state file (YAML; JSON is YAML too)', required: true, ignoreStdin: true})};
  static override flags = {
    'dry-run': Flags.boolean({description: 'print the plan, change nothing', default: false}),
    prune: Flags.boolean({description: 'detach services the file does not mention', default: false}),
    watch: Flags.boolean({description: 're-apply when the file changes and every --interval; exits 0 on SIGTERM', default: false}),
    interval: Flags.integer({description: 'with --watch: seconds between re-applies that repair drift', default: 60, min: 1}),
    netns: netnsFlag,
    json: jsonFlag,
  };

  async run(): Promise<void> {
    const {args, flags} = await this.parse(Apply);
    if (flags.watch && flags['dry-run']) throw new UsageError('--watch and --dry-run do not go together');
    const once = (): Promise<ApplyReport> => applyFile(args.file, {netns: flags.netns, dryRun: flags['dry-run'], prune: flags.prune});
    if (!flags.watch) {
      try {
        this.render(await once(), flags.json);
      } catch (error) {
        if (!this.problems(error)) throw error;
      }
      return;
    }
    await this.watchLoop(args.file, flags.interval, once, flags.json);
  }

  /** Print each problem of a refused apply on its own line; true when it was one. */
  private problems(error: unknown): boolean {
    if (!(error instanceof DesiredStateError) && !(error instanceof ApplyRefused)) return false;
    for (const p of error.problems) process.stderr.write(`${chalk.red('error:')} ${p}\n`);
    process.exitCode = error.exitCode;
    return true;
  }

  private render(r: ApplyReport, json: boolean): void {
    for (const n of r.notices) process.stderr.write(`${note('notice:')} ${n}\n`);
    if (json) {
      this.log(JSON.stringify({changed: r.changed, dryRun: r.dryRun, actions: r.actions, unmanaged: r.unmanaged}));
      return;
    }
    if (r.actions.length === 0) this.log('no changes: the attached services match the file');
    for (const a of r.actions) {
      const color = a.op === '+' ? chalk.green : a.op === '-' ? chalk.red : chalk.yellow;
      this.log(`${color(a.op)} ${a.what} ${a.service}${a.netns === 'this namespace' ? '' : dim(` (${a.netns})`)}: ${a.detail}`);
    }
    if (r.dryRun && r.actions.length) this.log(dim('dry run: nothing changed'));
    for (const u of r.unmanaged) this.log(dim(`  left alone (not in the file; --prune detaches it): ${u.service}${u.netns === '/proc/self/ns/net' ? '' : ` (${u.netns})`}`));
  }

  /** One line per change; errors are logged and retried at the next event. */
  private async watchLoop(file: string, intervalS: number, once: () => Promise<ApplyReport>, json: boolean): Promise<void> {
    const log = (line: string): void => {
      process.stdout.write(`${new Date().toISOString()} ${line}\n`);
    };
    let running = false;
    let again = false;
    const run = async (why: string): Promise<void> => {
      if (running) {
        again = true;
        return;
      }
      running = true;
      try {
        const r = await once();
        if (json && r.changed) log(JSON.stringify({changed: true, actions: r.actions}));
        else for (const a of r.actions) log(`${why}: ${a.op} ${a.what} ${a.service}: ${a.detail}`);
      } catch (error) {
        if (error instanceof DesiredStateError || error instanceof ApplyRefused) for (const p of error.problems) log(`${why}: not applied: ${p}`);
        else log(`${why}: not applied: ${(error as Error).message}`);
      } finally {
        running = false;
        if (again) {
          again = false;
          void run('changed again');
        }
      }
    };
    await run('start');
    // watch the directory: editors and ConfigMap updates replace the file (a rename, a new symlink)
    let debounce: NodeJS.Timeout | undefined;
    const watcher = watch(dirname(file), {persistent: true}, (_event, name) => {
      if (name !== null && name !== basename(file) && !String(name).startsWith('..')) return;
      clearTimeout(debounce);
      debounce = setTimeout(() => void run('file changed'), 200);
    });
    const timer = setInterval(() => void run('interval'), intervalS * 1000);
    await new Promise<void>((resolve) => {
      const stop = (): void => {
        for (const s of STOP_SIGNALS) process.removeListener(s, stop);
        resolve();
      };
      for (const s of STOP_SIGNALS) process.on(s, stop);
    });
    clearInterval(timer);
    clearTimeout(debounce);
    watcher.close();
    while (running) await new Promise((r) => setTimeout(r, 20));
  }
}
