import {Args} from '../../cli/oclif.js';
import {PortsChangeCommand, portsAddressFlag, portsProtoFlag} from '../../cli/ports-change.js';
import {jsonFlag, netnsFlag} from '../../cli/flags.js';

export default class PortsRemove extends PortsChangeCommand {
  static override summary = 'Remove extra ports from a service\'s bindings, live';
  static override examples = [{command: '<%= config.bin %> ports remove web 8443,20000-20999', description: 'stop a port and a range'}];
  static override args = {
    name: Args.string({description: 'service name', required: true, ignoreStdin: true}),
    ports: Args.string({description: 'ports and ranges: 80,443,8000-8999, or all', required: true, ignoreStdin: true}),
  };
  static override flags = {netns: netnsFlag, json: jsonFlag, proto: portsProtoFlag, address: portsAddressFlag};
  protected readonly op = 'remove' as const;
}
