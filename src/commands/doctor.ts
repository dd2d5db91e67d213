import {Flags} from '@oclif/core';
import chalk, {Chalk} from 'chalk';
import {SklCommand} from '../cli/base.js';
import {runChecks} from '../doctor/checks.js';

export default class Doctor extends SklCommand {
  static override summary = 'Check that this machine can run skl, and what skl can do on this kernel';
  static override description =
    'Checks BTF, the BPF filesystem, libbpf and privileges, then probes the running kernel for every feature skl uses ' +
    '(loads tiny programs, creates tiny maps, makes links in a throwaway network namespace, loads skl\'s own programs), ' +
    'each with the oldest Linux that has it, and lists which skl features are available here and which are not, and why. ' +
    'Exits 0 when everything the shipped features need passed (features still to come may be missing).';
  static override examples = ['<%= config.bin %> doctor', '<%= config.bin %> doctor --json'];
  static override flags = {
    json: Flags.boolean({
      description: 'print one JSON object {ok, kernel, checks: [{id, ok, detail, hint, minKernel, required}], features: [{id, name, planned, optional, available, needs, minKernel, detail}]}',
    }),
  };

  async run(): Promise<void> {
    const {flags} = await this.parse(Doctor);
    const report = await runChecks();
    if (flags.json) {
      process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    } else {
      // chalk 5 ignores NO_COLOR (https://no-color.org): honour it here.
      const c = process.env.NO_COLOR ? new Chalk({level: 0}) : chalk;
      const width = Math.max(...report.checks.map((x) => x.id.length), ...report.features.map((f) => f.id.length));
      for (const check of report.checks) {
        // ✘ fails the doctor; – is missing but needed by nothing skl ships yet
        const mark = check.ok ? c.green('✔') : check.required ? c.red('✘') : c.yellow('–');
        const hint = check.ok || check.hint === null ? '' : c.dim(` — fix: ${check.hint}`);
        process.stdout.write(`${mark} ${check.id.padEnd(width)}  ${check.detail}${hint}\n`);
      }
      process.stdout.write(`\nskl on this kernel (Linux ${report.kernel}):\n`);
      for (const f of report.features) {
        // ✘ fails the doctor; – is a coming feature, or an optional one, missing
        const mark = f.available ? c.green('✔') : f.planned || f.optional ? c.yellow('–') : c.red('✘');
        const why = f.available ? '' : c.dim(` — not available: ${f.detail}`);
        process.stdout.write(`${mark} ${f.id.padEnd(width)}  ${f.name}${why}\n`);
      }
    }
    if (!report.ok) process.exitCode = 1;
  }
}
