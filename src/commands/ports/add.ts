import {Args} from '../../cli/oclif.js';
import {PortsChangeCommand, forceFlag, portsAddressFlag, portsProtoFlag} from '../../cli/ports-change.js';
import {jsonFlag, netnsFlag} from '../../cli/flags.js';

export default class PortsAdd extends PortsChangeCommand {
  static override summary = 'Add extra ports to a service\'s bindings, live';
  static override examples = [
    {command: '<%= config.bin %> ports add web 8443', description: 'one more port'},
    {command: '<%= config.bin %> ports add web 20000-20999', description: 'a range'},
  ];
  static override args = {
    name: Args.string({description: 'service name', required: true, ignoreStdin: true}),
    ports: Args.string({description: 'ports and ranges: 80,443,8000-8999, or all', required: true, ignoreStdin: true}),
  };
  static override flags = {netns: netnsFlag, json: jsonFlag, force: forceFlag, proto: portsProtoFlag, address: portsAddressFlag};
  protected readonly op = 'add' as const;
}
