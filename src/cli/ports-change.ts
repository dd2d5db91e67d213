/** `skl ports add|remove`: one implementation, two commands. */
import {Flags} from './oclif.js';
import {SklCommand} from './base.js';
import {ok} from './render.js';
import {changePorts} from '../dispatcher/api.js';
import {compressPorts, parsePorts} from '../dispatcher/input.js';

export abstract class PortsChangeCommand extends SklCommand {

  protected abstract readonly op: 'add' | 'remove';

  async run(): Promise<void> {
    const {args, flags} = (await this.parse(this.constructor as typeof SklCommand)) as unknown as {args: {name: string; ports: string}; flags: {netns?: string; json: boolean; force?: boolean}};
    const f = flags;
    const r = await changePorts(args.name, this.op, parsePorts(args.ports), {netns: f.netns, force: f.force});
    if (f.json) {
      this.log(JSON.stringify({name: r.name, protocol: r.proto, [this.op === 'add' ? 'added' : 'removed']: r.changed, ports: r.ports}));
      return;
    }
    const verb = this.op === 'add' ? 'added' : 'removed';
    this.log(`${ok('✔')} ${r.name}: ${verb} ${r.changed.length ? compressPorts(r.changed) : 'nothing'}; ${r.proto.toUpperCase()} ports now ${compressPorts(r.ports) || 'none'}`);
  }
}

export const forceFlag = Flags.boolean({description: 'claim ports even if another socket already listens on them', default: false});
