import {Flags} from '../cli/oclif.js';
import {SklCommand} from '../cli/base.js';
import {jsonFlag, netnsFlag} from '../cli/flags.js';
import {dim, note, ok} from '../cli/render.js';
import {upgrade, UpgradeFailed, type UpgradeReport} from '../dispatcher/upgrade.js';
import {chalk} from '../cli/color.js';

export default class Upgrade extends SklCommand {
  static override summary = 'Move pinned state written by an older skl to this skl\'s layout, with no connection dropped';
  static override description =
    'Every service, socket, binding and address filter survives; the new program replaces the old one behind the same pinned link ' +
    '(atomically: at no moment is nothing attached). Sockets are taken again from their processes; a service whose process is gone ' +
    'keeps its bindings and shows dead. Counters restart from 0. Foreground attachments are left alone. Running it again: "already current".';
  static override examples = [
    {command: '<%= config.bin %> upgrade', description: 'this network namespace'},
    {command: '<%= config.bin %> upgrade --all', description: 'every namespace that has skl state'},
    {command: '<%= config.bin %> upgrade --netns /run/netns/blue --dry-run', description: 'what would change, changing nothing'},
  ];
  static override flags = {
    all: Flags.boolean({description: 'every network namespace with skl state (bpffs skl/)', default: false}),
    'dry-run': Flags.boolean({description: 'say what would be done, change nothing', default: false}),
    netns: netnsFlag,
    json: jsonFlag,
  };

  async run(): Promise<void> {
    const {flags} = await this.parse(Upgrade);
    let r;
    try {
      r = await upgrade({netns: flags.netns, all: flags.all, dryRun: flags['dry-run']});
    } catch (error) {
      if (!(error instanceof UpgradeFailed)) throw error;
      this.render({namespaces: error.done}, flags.json);
      for (const p of error.problems) process.stderr.write(`${chalk.red('error:')} ${p}\n`);
      process.exitCode = 1;
      return;
    }
    this.render(r, flags.json);
  }

  private render(r: UpgradeReport, json: boolean): void {
    const flags = {json};
    for (const n of r.namespaces.flatMap((x) => x.notices)) process.stderr.write(`${note('notice:')} ${n}\n`);
    if (flags.json) {
      this.log(JSON.stringify({namespaces: r.namespaces.map(({notices: _n, ...x}) => x)}));
      return;
    }
    if (r.namespaces.length === 0) this.log('no network namespace has skl state');
    for (const x of r.namespaces) {
      const where = `network namespace ${x.netns} (inode ${x.netnsIno})`;
      if (x.result === 'already current' || x.result === 'nothing to upgrade') {
        this.log(`${ok('✔')} ${where}: ${x.result}${x.result === 'already current' ? ` (layout ${x.toLayout})` : ''}`);
        continue;
      }
      const verb = x.result === 'upgraded' ? `${ok('✔')} upgraded` : 'would upgrade';
      this.log(`${verb} ${where}: layout ${x.fromLayout} (skl ${x.fromVersion}) → ${x.toLayout}, link ${x.linkId}, program ${x.oldProgId}${x.newProgId ? ` → ${x.newProgId}` : ''}`);
      for (const s of x.services) this.log(`  ${s.name} (pid ${s.pid}): ${s.bindings} binding${s.bindings === 1 ? '' : 's'}${s.alive ? '' : dim(' — its process or socket is gone: kept, shown dead')}`);
    }
  }
}
