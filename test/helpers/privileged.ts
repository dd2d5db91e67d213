// Gate for tests that need root, BTF and the iproute2/util-linux tools.
//
// `privileged('title', async t => {...})` registers an ordinary ava test when the machine can run
// it. Otherwise the test is skipped with the reason in its title — except under CI
// (CI=true), where a silently skipped end-to-end suite would hide a broken runner, so the test is
// registered and fails with the reason.
import {accessSync, constants, existsSync} from 'node:fs';
import path from 'node:path';
import test, {type ExecutionContext} from 'ava';

/** Directories searched after $PATH: root's tools live in sbin, which a plain user's PATH may omit. */
const EXTRA_DIRS = ['/usr/local/sbin', '/usr/sbin', '/sbin', '/usr/local/bin', '/usr/bin', '/bin'];

/** Find an executable by name in `pathEnv` (then the sbin/bin fallbacks); undefined if absent. */
export function findExecutable(name: string, pathEnv: string | undefined = process.env.PATH): string | undefined {
  const dirs = [...(pathEnv ?? '').split(':').filter(d => d !== ''), ...EXTRA_DIRS];
  for (const dir of dirs) {
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** What the environment offers, as far as privileged tests are concerned. */
export interface PrivilegeProbe {
  uid: number;
  hasBtf: boolean;
  hasIp: boolean;
  hasNsenter: boolean;
}

/** Pure decision: why privileged tests cannot run, or undefined when they can. */
export function reasonFromProbe(probe: PrivilegeProbe): string | undefined {
  const missing: string[] = [];
  if (probe.uid !== 0) missing.push(`not root (uid ${probe.uid})`);
  if (!probe.hasBtf) missing.push('no /sys/kernel/btf/vmlinux (kernel without BTF)');
  if (!probe.hasIp) missing.push('`ip` (iproute2) not found');
  if (!probe.hasNsenter) missing.push('`nsenter` (util-linux) not found');
  return missing.length === 0 ? undefined : missing.join('; ');
}

let cachedReason: {value: string | undefined} | undefined;

/** Why privileged tests cannot run here, or undefined when they can. Probed once per process. */
export function privilegedReason(): string | undefined {
  cachedReason ??= {
    value: reasonFromProbe({
      uid: typeof process.getuid === 'function' ? process.getuid() : -1,
      hasBtf: existsSync('/sys/kernel/btf/vmlinux'),
      hasIp: findExecutable('ip') !== undefined,
      hasNsenter: findExecutable('nsenter') !== undefined,
    }),
  };
  return cachedReason.value;
}

/** True when running under CI (CI=true), where privileged tests must not be skipped. */
export function isCi(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.CI === 'true';
}

export type PrivilegedImpl = (t: ExecutionContext) => PromiseLike<void> | void;

type Register = (title: string, impl: PrivilegedImpl) => void;

function declare(run: Register, skip: Register, title: string, impl: PrivilegedImpl, reason = privilegedReason()): void {
  if (reason === undefined) {
    run(title, impl);
  } else if (isCi()) {
    run(title, t => {
      t.fail(`test cannot run under CI: ${reason}`);
    });
  } else {
    skip(`${title} [skipped: ${reason}]`, impl);
  }
}

export interface PrivilegedFn {
  (title: string, impl: PrivilegedImpl): void;
  /** Like ava's `test.serial`. */
  serial(title: string, impl: PrivilegedImpl): void;
}

/** ava `test`, gated on {@link privilegedReason}. */
export const privileged: PrivilegedFn = Object.assign(
  (title: string, impl: PrivilegedImpl): void => {
    declare((ti, im) => test(ti, im), (ti, im) => test.skip(ti, im), title, impl);
  },
  {
    serial(title: string, impl: PrivilegedImpl): void {
      declare((ti, im) => test.serial(ti, im), (ti, im) => test.serial.skip(ti, im), title, impl);
    },
  },
);

/**
 * Resolve the external tools a test needs, each given as a name or as alternatives ('cc|gcc|clang'):
 * their paths, in order, or the reason some are missing.
 */
export function resolveTools(specs: readonly string[], find: (name: string) => string | undefined = findExecutable): {paths: string[]} | {reason: string} {
  const paths: string[] = [];
  const missing: string[] = [];
  for (const spec of specs) {
    const found = spec.split('|').map(name => find(name)).find(p => p !== undefined);
    if (found === undefined) missing.push(spec.replaceAll('|', ' or '));
    else paths.push(found);
  }
  return missing.length === 0 ? {paths} : {reason: `${missing.join(', ')} not found (scripts/setup.sh installs it when run as root)`};
}

export type ToolImpl = (t: ExecutionContext, paths: string[]) => PromiseLike<void> | void;

/**
 * Tests that need external tools (setpriv, a C compiler, bpftool): `needing(['setpriv']).test(title,
 * (t, [setpriv]) => …)`, or `.privileged(…)` for a test that also needs root. Registered when every
 * tool is found (the implementation gets their paths); otherwise skipped with the reason in its
 * title — except under CI (CI=true), where it is registered and fails with the reason: a test that
 * cannot check what it is there to check must never pass silently.
 */
export function needing(specs: readonly string[]): {
  test(title: string, impl: ToolImpl): void;
  privileged(title: string, impl: ToolImpl): void;
  /** like `privileged`, run serially (ava's test.serial) */
  privilegedSerial(title: string, impl: ToolImpl): void;
} {
  const tools = resolveTools(specs);
  const register = (reason: string | undefined, title: string, impl: ToolImpl, serial = false): void => {
    const paths = 'paths' in tools ? tools.paths : [];
    if (serial) declare((ti, im) => test.serial(ti, im), (ti, im) => test.serial.skip(ti, im), title, t => impl(t, paths), reason);
    else declare((ti, im) => test(ti, im), (ti, im) => test.skip(ti, im), title, t => impl(t, paths), reason);
  };
  const toolReason = 'reason' in tools ? tools.reason : undefined;
  const rootReason = (): string | undefined => {
    const why = [privilegedReason(), toolReason].filter(r => r !== undefined).join('; ');
    return why === '' ? undefined : why;
  };
  return {
    test: (title, impl) => register(toolReason, title, impl),
    privileged: (title, impl) => register(rootReason(), title, impl),
    privilegedSerial: (title, impl) => register(rootReason(), title, impl, true),
  };
}
