import {Flags} from '@oclif/core';
import chalk, {Chalk} from 'chalk';
import {SklCommand} from '../cli/base.js';
import {runChecks} from '../doctor/checks.js';

export default class Doctor extends SklCommand {
  static override summary = 'Check that this machine can run skl';
  static override description =
    'Checks the kernel version, BTF, the BPF filesystem, libbpf, privileges, that sk_lookup and XDP programs really load, pidfd_getfd and byte order. Exits 0 only when every check passes.';
  static override examples = ['<%= config.bin %> doctor', '<%= config.bin %> doctor --json'];
  static override flags = {
    json: Flags.boolean({description: 'print the checks as one JSON object {ok, checks: [{id, ok, detail, hint}]}'}),
  };

  async run(): Promise<void> {
    const {flags} = await this.parse(Doctor);
    const report = await runChecks();
    if (flags.json) {
      process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    } else {
      // chalk 5 ignores NO_COLOR (https://no-color.org): honour it here.
      const c = process.env.NO_COLOR ? new Chalk({level: 0}) : chalk;
      const width = Math.max(...report.checks.map((x) => x.id.length));
      for (const check of report.checks) {
        const mark = check.ok ? c.green('✔') : c.red('✘');
        const hint = check.ok || check.hint === null ? '' : c.dim(` — fix: ${check.hint}`);
        process.stdout.write(`${mark} ${check.id.padEnd(width)}  ${check.detail}${hint}\n`);
      }
    }
    if (!report.ok) process.exitCode = 1;
  }
}
