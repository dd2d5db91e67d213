/**
 * Which CLI runtime this process uses: oclif's (the default), or the light one of ./light.ts that
 * bin/run.js selects for skl's everyday commands (./fast.ts). Set once, before any command module
 * is imported.
 */
const LIGHT = Symbol.for('skl.cli.light');

export const lightMode = (): boolean => (globalThis as Record<symbol, unknown>)[LIGHT] === true;
export const enterLightMode = (): void => {
  (globalThis as Record<symbol, unknown>)[LIGHT] = true;
};
