/**
 * Which process a service's target names: a pid, a pid file, a systemd unit's main process, or the
 * process of a cgroup v2 directory that holds the listener.
 */
import {execFileSync} from 'node:child_process';
import {existsSync, readFileSync} from 'node:fs';
import {SklError} from '../sys/errors.js';
import {cgroup2Mount} from '../sys/mounts.js';
import {serverSocketsOf, type Proto} from '../sys/sockets.js';
import type {DesiredTarget} from './desired.js';

/** A process id from a pid file (its first line). */
export function pidFromFile(path: string): number {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new SklError(`pid file ${path}: cannot read it (${(error as NodeJS.ErrnoException).code}); is the service running?`);
  }
  const pid = Number(text.trim().split('\n')[0]);
  if (!Number.isInteger(pid) || pid < 1) throw new SklError(`pid file ${path} does not hold a process id`);
  return pid;
}

/** The main pid of a systemd unit, through systemctl. */
export function pidOfUnit(unit: string): number {
  if (!existsSync('/run/systemd/system')) throw new SklError(`unit ${unit}: systemd is not running on this host (no /run/systemd/system); name the target by pid, pidfile or cgroup`);
  let out: string;
  try {
    out = execFileSync('systemctl', ['show', '--property=MainPID', '--value', unit], {encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000});
  } catch (error) {
    throw new SklError(`unit ${unit}: systemctl failed (${(error as Error).message.split('\n')[0]})`);
  }
  const pid = Number(out.trim());
  if (!Number.isInteger(pid) || pid < 1) throw new SklError(`unit ${unit} is not running (no main process); start it first`);
  return pid;
}

/** A cgroup v2 directory: absolute, or relative to the cgroup2 mount. */
export function cgroupDir(path: string): string {
  const mount = cgroup2Mount();
  if (!mount) throw new SklError('cgroup v2 is not mounted on this host; name the target by pid, pidfile or unit');
  const dir = path.startsWith(`${mount}/`) || path === mount ? path : `${mount}/${path.replace(/^\/+/, '')}`;
  if (!existsSync(`${dir}/cgroup.procs`)) throw new SklError(`cgroup ${path}: ${dir} is not a cgroup v2 directory`);
  return dir;
}

/**
 * The process of a cgroup that holds the listener: the lowest pid among the cgroup's processes with
 * a matching server socket (a master process that shares its sockets with workers, say).
 */
export function pidInCgroup(path: string, protos: readonly Proto[], listeners: readonly {address?: string; port: number}[]): number {
  const dir = cgroupDir(path);
  const pids = readFileSync(`${dir}/cgroup.procs`, 'utf8').split('\n').filter(Boolean).map(Number).sort((a, b) => a - b);
  for (const pid of pids) {
    let socks;
    try {
      socks = serverSocketsOf(pid, protos);
    } catch {
      continue; // gone meanwhile
    }
    if (socks.some((s) => listeners.length === 0 || listeners.some((l) => l.port === s.port))) return pid;
  }
  throw new SklError(`cgroup ${path}: none of its ${pids.length} processes has a ${protos.join('/').toUpperCase()} listener${listeners.length ? ` on port ${listeners.map((l) => l.port).join(', ')}` : ''}`);
}

export function resolveTarget(t: DesiredTarget, protos: readonly Proto[], listeners: readonly {address?: string; port: number}[]): number {
  switch (t.kind) {
    case 'pid':
      return t.pid;
    case 'pidfile':
      return pidFromFile(t.path);
    case 'unit':
      return pidOfUnit(t.unit);
    case 'cgroup':
      return pidInCgroup(t.path, protos, listeners);
  }
}
