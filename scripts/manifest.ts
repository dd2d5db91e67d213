/**
 * Write oclif.manifest.json (command metadata), so `skl <command>` imports only that command
 * instead of every command module at start-up. Run by `npm run build`.
 */
import {writeFileSync} from 'node:fs';
import {fileURLToPath} from 'node:url';
import {Plugin} from '@oclif/core';

const root = fileURLToPath(new URL('../..', import.meta.url));
const plugin = new Plugin({root, type: 'core', ignoreManifest: true, errorOnManifestCreate: true});
await plugin.load();
writeFileSync(`${root}/oclif.manifest.json`, JSON.stringify(plugin.manifest, null, 1) + '\n');
console.log(`oclif.manifest.json: ${Object.keys(plugin.manifest.commands).length} commands`);
