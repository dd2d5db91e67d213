/** skl's own version (package.json), recorded in the state it pins. */
import {readFileSync} from 'node:fs';

export const SKL_VERSION: string = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {version: string}).version;
