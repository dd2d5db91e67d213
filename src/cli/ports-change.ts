/** `skl ports add|remove`: one implementation, two commands. */
import {Flags} from './oclif.js';
import {SklCommand} from './base.js';
import {ok} from './render.js';
import {changePorts} from '../dispatcher/api.js';
import {compressPorts, parseAddress, parsePortSpec} from '../dispatcher/input.js';

export abstract class PortsChangeCommand extends SklCommand {

  protected abstract readonly op: 'add' | 'remove';

  async run(): Promise<void> {
    const {args, flags} = (await this.parse(this.constructor as typeof SklCommand)) as unknown as {args: {name: string; ports: string}; flags: {netns?: string; json: boolean; force?: boolean; proto?: string; address?: string[]}};
    const f = flags;
    const r = await changePorts(args.name, this.op, parsePortSpec(args.ports), {netns: f.netns, force: f.force, proto: f.proto as 'tcp' | 'udp' | undefined, addresses: f.address?.map(parseAddress)});
    if (f.json) {
      this.log(JSON.stringify({name: r.name, protocols: r.protocols, [this.op === 'add' ? 'added' : 'removed']: r.changed, ports: r.ports, portsText: r.portsText}));
      return;
    }
    const verb = this.op === 'add' ? 'added' : 'removed';
    const changed = r.changed.length ? [...(r.changed.includes(0) ? ['all'] : []), compressPorts(r.changed.filter((p) => p !== 0))].filter(Boolean).join(',') : 'nothing';
    this.log(`${ok('✔')} ${r.name}: ${verb} ${changed}; ${r.protocols.map((p) => p.toUpperCase()).join('+')} ports now ${r.portsText || 'none'}`);
  }
}

export const forceFlag = Flags.boolean({description: 'claim ports even if another socket already serves them', default: false});
export const portsProtoFlag = Flags.string({description: 'only the bindings of this protocol (default: every protocol of the service)', options: ['tcp', 'udp']});
export const portsAddressFlag = Flags.string({description: 'only the bindings of this local prefix (repeatable; add: a new prefix is allowed)', multiple: true, helpValue: 'IP[/PREFIX]'});
