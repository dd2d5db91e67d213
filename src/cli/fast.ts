/**
 * bin/run.js's fast path: skl's everyday commands run on the light runtime (./light.ts) instead of
 * oclif, which alone costs more than Node.js's own start-up (see BENCHMARKS.md). What oclif would do
 * for these commands, in order: no init/prerun/postrun hooks exist (skl declares none and its one
 * plugin, plugin-autocomplete, only hooks plugin installs); `--help` before `--` shows help (left
 * to oclif); the command's flags are parsed (./light.ts, or oclif's own parser for anything
 * unusual); the command runs and its errors go through SklCommand.catch. Anything else — other
 * commands, help, SKL_FULL_CLI=1, DEBUG set (oclif's debug output) — returns false and bin/run.js
 * runs oclif as before.
 */
import {readFileSync} from 'node:fs';
import {fileURLToPath} from 'node:url';
import {enterLightMode} from './mode.js';

/**
 * Command id → its module. Literal import() specifiers, so that the bundle of the everyday
 * commands (scripts/bundle.ts) contains each of them, initialised only when it runs.
 */
const FAST: Record<string, () => Promise<{default: unknown}>> = {
  attach: () => import('../commands/attach.js'),
  detach: () => import('../commands/detach.js'),
  status: () => import('../commands/status.js'),
  metrics: () => import('../commands/metrics.js'),
  'ports:add': () => import('../commands/ports/add.js'),
  'ports:remove': () => import('../commands/ports/remove.js'),
  'xdp-count': () => import('../commands/xdp-count.js'),
  upgrade: () => import('../commands/upgrade.js'),
};

interface Runnable {
  id?: string;
  new (argv: string[], config: unknown): {_run(): Promise<unknown>};
}

/** Run argv on the light runtime when it applies; false when oclif must run it. */
export async function runFast(argv: readonly string[]): Promise<boolean> {
  if (process.env.SKL_FULL_CLI || process.env.DEBUG) return false;
  let id = argv[0];
  let rest = argv.slice(1);
  // topic separator ' ' (package.json oclif.topicSeparator): "ports add" is ports:add
  if (id === 'ports' && argv.length > 1) {
    id = `ports:${argv[1]}`;
    rest = argv.slice(2);
  }
  if (id === undefined || !Object.hasOwn(FAST, id)) return false;
  for (const a of rest) {
    if (a === '--help') return false;
    if (a === '--') break;
  }
  const root = fileURLToPath(new URL('../../../', import.meta.url));
  const pjson = JSON.parse(readFileSync(`${root}package.json`, 'utf8')) as {name: string; version: string; oclif?: {bin?: string; hooks?: object}};
  if (pjson.oclif?.hooks && Object.keys(pjson.oclif.hooks).length > 0) return false;

  enterLightMode();
  const Cmd = (await FAST[id]()).default as Runnable;
  Cmd.id = id;
  const cmd = new Cmd([...rest], {bin: pjson.oclif?.bin ?? 'skl', name: pjson.name, version: pjson.version, root});
  try {
    await cmd._run();
  } catch (error) {
    // what escapes the command's own catch (oclif's exit()): oclif's handler, as execute() does
    const {oclif} = await import('./light.js');
    await oclif().Errors.handle(error as Error);
  }
  return true;
}
