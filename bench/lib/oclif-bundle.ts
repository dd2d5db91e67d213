/**
 * What skl's everyday commands would cost on oclif's own path if oclif were bundled too: the
 * question that decides whether the light runtime (src/cli/light.ts) can go. Builds, for the bench
 * only (nothing of it is shipped), one CommonJS file with @oclif/core and every skl command
 * (oclif's "explicit" command discovery, pointing at that file), run exactly as bin/run.js runs
 * oclif: execute() on a root whose package.json is skl's own, user plugins off.
 *
 *   dist/bench/oclif-bundle/package.json         skl's, with oclif.commands → ./skl.cjs (COMMANDS)
 *   dist/bench/oclif-bundle/oclif.manifest.json  skl's
 *   dist/bench/oclif-bundle/skl.cjs              @oclif/core + every command, one file
 *   dist/bench/oclif-bundle/run.cjs              the entry point (as bin/run.js's oclif branch)
 *
 * Inside the repository, so that oclif finds skl's plugin (@oclif/plugin-autocomplete) in
 * node_modules as it does for skl itself.
 */
import {copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync} from 'node:fs';
import path from 'node:path';
import {pathToFileURL} from 'node:url';
import {build} from 'esbuild';
import {ROOT} from './proc.js';

export async function buildOclifBundle(): Promise<string> {
  const dir = path.join(ROOT, 'dist/bench/oclif-bundle');
  rmSync(dir, {recursive: true, force: true});
  mkdirSync(dir, {recursive: true});
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {oclif: Record<string, unknown>};
  pkg.oclif.commands = {strategy: 'explicit', target: './skl.cjs', identifier: 'COMMANDS'};
  writeFileSync(path.join(dir, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`);
  const manifest = JSON.parse(readFileSync(path.join(ROOT, 'oclif.manifest.json'), 'utf8')) as {commands: Record<string, {relativePath?: string[]}>};
  copyFileSync(path.join(ROOT, 'oclif.manifest.json'), path.join(dir, 'oclif.manifest.json'));

  // every command of the manifest, by id, from tsc's output
  const commands = Object.entries(manifest.commands).map(([id, c], i) => ({id, file: path.join(ROOT, ...(c.relativePath ?? [])), name: `C${i}`}));
  const entry = [
    "export {execute} from '@oclif/core';",
    ...commands.map((c) => `import ${c.name} from ${JSON.stringify(c.file)};`),
    `export const COMMANDS = {${commands.map((c) => `${JSON.stringify(c.id)}: ${c.name}`).join(', ')}};`,
  ].join('\n');
  await build({
    stdin: {contents: entry, resolveDir: dir, sourcefile: 'entry.js'},
    outfile: path.join(dir, 'skl.cjs'),
    bundle: true,
    format: 'cjs',
    platform: 'node',
    target: 'node20',
    // koffi: native; chalk: required at run time as skl does; typescript: only oclif's development mode
    external: ['koffi', 'chalk', 'typescript'],
    supported: {'dynamic-import': false},
    logLevel: 'error',
    plugins: [
      {
        name: 'bench-oclif-bundle',
        setup(b) {
          // the commands' oclif facade: oclif itself, from the bundle
          b.onLoad({filter: /[/\\]dist[/\\]src[/\\]cli[/\\]oclif\.js$/}, () => ({
            contents: "export {Args, Command, Errors, Flags} from '@oclif/core';",
            loader: 'js',
            resolveDir: path.join(ROOT, 'dist/src/cli'),
          }));
          // files found relative to a module (bpf/*.o, package.json) are found as without the bundle
          b.onLoad({filter: /[/\\]dist[/\\]src[/\\].*\.js$/}, (args) => {
            const source = readFileSync(args.path, 'utf8');
            if (!source.includes('import.meta.url')) return undefined;
            return {contents: source.replaceAll('import.meta.url', JSON.stringify(pathToFileURL(args.path).href)), loader: 'js'};
          });
        },
      },
    ],
  });
  writeFileSync(
    path.join(dir, 'run.cjs'),
    "require('./skl.cjs').execute({loadOptions: {root: __dirname, userPlugins: false}});\n",
  );
  return path.join(dir, 'run.cjs');
}
