import {SklCommand} from '../cli/base.js';
import {netnsFlag} from '../cli/flags.js';
import {exportState} from '../dispatcher/apply.js';

export default class Export extends SklCommand {
  static override summary = 'Print the attached services as a desired-state file that skl apply accepts';
  static override description = '`skl apply --dry-run` on the output reports no changes. Foreground services are not exported (they belong to their skl process).';
  static override examples = [
    {command: '<%= config.bin %> export > /etc/skl/services.yaml', description: 'capture what is attached'},
    {command: '<%= config.bin %> export --netns /run/netns/blue', description: 'another namespace'},
  ];
  static override flags = {netns: netnsFlag};

  async run(): Promise<void> {
    const {flags} = await this.parse(Export);
    process.stdout.write(await exportState({netns: flags.netns}));
  }
}
