import {Args, Flags} from '../cli/oclif.js';
import {SklCommand} from '../cli/base.js';
import {jsonFlag, netnsFlag} from '../cli/flags.js';
import {note, ok} from '../cli/render.js';
import {detach} from '../dispatcher/api.js';
import {UsageError} from '../sys/errors.js';

export default class Detach extends SklCommand {
  static override summary = 'Remove an attachment (its extra ports stop at once; the process\'s own port is unaffected)';
  static override examples = [
    {command: '<%= config.bin %> detach web', description: 'remove the attachment named web'},
    {command: '<%= config.bin %> detach --all', description: 'remove every attachment and the dispatcher of this namespace'},
    {command: '<%= config.bin %> detach web --netns /run/netns/blue', description: 'in another namespace'},
  ];
  static override args = {name: Args.string({description: 'attachment name (see skl status)', ignoreStdin: true})};
  static override flags = {
    all: Flags.boolean({description: 'remove every attachment in the namespace', default: false}),
    netns: netnsFlag,
    json: jsonFlag,
  };

  async run(): Promise<void> {
    const {args, flags} = await this.parse(Detach);
    if (!flags.all && args.name === undefined) throw new UsageError('give an attachment NAME or --all');
    if (flags.all && args.name !== undefined) throw new UsageError('give either a NAME or --all, not both');
    const r = await detach(flags.all ? {all: true} : {name: args.name!}, {netns: flags.netns});
    for (const n of r.notices) process.stderr.write(`${note('notice:')} ${n}\n`);
    if (flags.json) {
      this.log(JSON.stringify({detached: r.detached, dispatcherRemoved: r.dispatcherRemoved}));
      return;
    }
    if (r.detached.length === 0) this.log('nothing attached');
    for (const name of r.detached) this.log(`${ok('✔')} detached ${name}`);
    if (r.dispatcherRemoved && r.detached.length) this.log('  no attachments left: dispatcher and pins removed');
  }
}
