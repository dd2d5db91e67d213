import {Args} from '../../cli/oclif.js';
import {PortsChangeCommand, forceFlag} from '../../cli/ports-change.js';
import {jsonFlag, netnsFlag} from '../../cli/flags.js';

export default class PortsAdd extends PortsChangeCommand {
  static override summary = 'Add extra ports to an attachment, live';
  static override examples = [
    {command: '<%= config.bin %> ports add web 8443', description: 'one more port'},
    {command: '<%= config.bin %> ports add web 20000-20999', description: 'a range'},
  ];
  static override args = {
    name: Args.string({description: 'attachment name', required: true, ignoreStdin: true}),
    ports: Args.string({description: 'ports and ranges: 80,443,8000-8999', required: true, ignoreStdin: true}),
  };
  static override flags = {netns: netnsFlag, json: jsonFlag, force: forceFlag};
  protected readonly op = 'add' as const;
}
