/**
 * Desired state files for `skl apply` (YAML; JSON is YAML too): which services a host's network
 * namespaces should have. Parsed and validated whole, every problem reported with its line.
 *
 *   netns: /run/netns/blue            # optional: the default namespace of the file
 *   services:
 *     - name: web
 *       target: {pid: 1234, listener: ":80"}     # or pidfile / unit / cgroup
 *       proto: tcp                               # tcp | udp | tcp,udp
 *       ports: "8000-8099, 9000"                 # or a list, or "all"
 *       addresses: [127.0.0.1/32]                # optional
 *       udp_replies: off                         # optional: rewrite | off (UDP replies from the extra port)
 *   namespaces:                                  # optional: more namespaces in one file
 *     - netns: /proc/4242/ns/net
 *       services: [...]
 */
import {readFileSync, statSync} from 'node:fs';
import {isMap, isScalar, isSeq, LineCounter, parseDocument, type Node, type YAMLMap} from 'yaml';
import {UsageError} from '../sys/errors.js';
import type {Proto} from '../sys/sockets.js';
import {parseAddress, parseListener, parsePortSpec, parseProtos, validateName, type AddressPrefix} from './input.js';

export const MAX_FILE_BYTES = 4 * 1024 * 1024;

export type DesiredTarget =
  | {kind: 'pid'; pid: number}
  | {kind: 'pidfile'; path: string}
  | {kind: 'unit'; unit: string}
  | {kind: 'cgroup'; path: string};

export interface DesiredBinding {
  protos: Proto[];
  ports: number[] | 'all';
  /** undefined: every address of each family the service's sockets serve */
  addresses?: AddressPrefix[];
}

export interface DesiredService {
  name: string;
  /** namespace file ('' = the caller's / --netns) */
  netns: string;
  target: DesiredTarget;
  listeners: {address?: string; port: number}[];
  fds: number[];
  protos: Proto[];
  bindings: DesiredBinding[];
  force: boolean;
  /** udp_replies: rewrite or off (absent: an existing service keeps its mode, a new one rewrites) */
  udpReplies?: 'rewrite' | 'off';
  /** the line of the entry in the file */
  line: number;
}

/** Every problem of a file, one line each, with the file's line number where it has one. */
export class DesiredStateError extends UsageError {
  constructor(readonly problems: string[]) {
    super(problems.join('\n'));
  }
}

const SERVICE_KEYS = new Set(['name', 'target', 'proto', 'ports', 'addresses', 'bindings', 'force', 'netns', 'udp_replies']);
const TARGET_KEYS = new Set(['pid', 'pidfile', 'unit', 'cgroup', 'listener', 'fd']);
const BINDING_KEYS = new Set(['proto', 'ports', 'addresses']);

/** Read and validate a desired-state file. Throws DesiredStateError (exit 2) listing every problem. */
export function readDesired(file: string): DesiredService[] {
  let text: string;
  try {
    const st = statSync(file);
    if (st.isDirectory()) throw new DesiredStateError([`${file}: is a directory; give a YAML or JSON file`]);
    if (st.size > MAX_FILE_BYTES) throw new DesiredStateError([`${file}: ${st.size} bytes is too large for a desired-state file (at most ${MAX_FILE_BYTES})`]);
    text = readFileSync(file, 'utf8');
  } catch (error) {
    if (error instanceof DesiredStateError) throw error;
    const code = (error as NodeJS.ErrnoException).code ?? 'unknown error';
    const why: Record<string, string> = {ENOENT: 'no such file', ELOOP: 'a symbolic link loop', EACCES: 'permission denied', EISDIR: 'is a directory'};
    throw new DesiredStateError([`${file}: cannot read it (${why[code] ?? code})`]);
  }
  return parseDesired(text, file);
}

export function parseDesired(text: string, file = 'FILE'): DesiredService[] {
  const lc = new LineCounter();
  const doc = parseDocument(text, {lineCounter: lc, uniqueKeys: true, prettyErrors: false});
  const problems: string[] = [];
  const at = (node: Node | null | undefined): string => {
    const offset = node?.range?.[0];
    return offset === undefined ? file : `${file}:${lc.linePos(offset).line}`;
  };
  const lineOf = (node: Node | null | undefined): number => (node?.range ? lc.linePos(node.range[0]).line : 0);
  for (const e of doc.errors) problems.push(`${file}:${lc.linePos(e.pos[0]).line}: invalid YAML: ${e.message.split('\n')[0]}`);
  if (problems.length) throw new DesiredStateError(problems);
  const root = doc.contents;
  if (!isMap(root)) throw new DesiredStateError([`${at(root)}: the file must be a mapping with a services: list (e.g. services: [])`]);

  const out: DesiredService[] = [];
  const seen = new Map<string, number>();
  const scalar = (node: unknown): unknown => (isScalar(node) ? node.value : undefined);
  const str = (node: unknown, what: string): string | undefined => {
    const v = scalar(node);
    if (typeof v === 'string' && v.trim() !== '') return v;
    problems.push(`${at(node as Node)}: ${what} must be a non-empty string`);
    return undefined;
  };
  const strings = (node: unknown, what: string): string[] | undefined => {
    if (isSeq(node)) return node.items.map((i) => str(i, what)).filter((s): s is string => s !== undefined);
    const s = str(node, what);
    return s === undefined ? undefined : [s];
  };
  const check = <T>(node: unknown, fn: () => T): T | undefined => {
    try {
      return fn();
    } catch (error) {
      if (!(error instanceof UsageError)) throw error;
      problems.push(`${at(node as Node)}: ${error.message}`);
      return undefined;
    }
  };
  const unknownKeys = (map: YAMLMap, allowed: Set<string>, what: string): void => {
    for (const pair of map.items) {
      const k = scalar(pair.key);
      if (typeof k !== 'string' || !allowed.has(k)) problems.push(`${at(pair.key as Node)}: unknown key ${JSON.stringify(k)} in ${what} (allowed: ${[...allowed].join(', ')})`);
    }
  };
  const ports = (node: unknown): number[] | 'all' | undefined => {
    if (isSeq(node)) {
      const text = node.items.map((i) => String(scalar(i))).join(',');
      return check(node, () => parsePortSpec(text));
    }
    const v = scalar(node);
    if (typeof v !== 'string' && typeof v !== 'number') {
      problems.push(`${at(node as Node)}: ports must be a string ("8000-8099, 9000" or "all") or a list`);
      return undefined;
    }
    return check(node, () => parsePortSpec(String(v)));
  };
  const protos = (node: unknown): Proto[] | undefined => {
    if (node === undefined) return undefined;
    const list = strings(node, 'proto');
    return list && check(node, () => parseProtos(list.join(',')));
  };
  const addresses = (node: unknown): AddressPrefix[] | undefined => {
    if (node === undefined) return undefined;
    const list = strings(node, 'addresses');
    return list?.map((a) => check(node, () => parseAddress(a))).filter((a): a is AddressPrefix => a !== undefined);
  };

  const services = (node: unknown, netns: string): void => {
    if (!isSeq(node)) {
      problems.push(`${at(node as Node)}: services must be a list`);
      return;
    }
    for (const item of node.items) {
      if (!isMap(item)) {
        problems.push(`${at(item as Node)}: each service must be a mapping (name:, target:, ports:, ...)`);
        continue;
      }
      unknownKeys(item, SERVICE_KEYS, 'a service');
      const name = check(item.get('name', true), () => validateName(String(scalar(item.get('name', true)) ?? '')));
      const ns = item.has('netns') ? (str(item.get('netns', true), 'netns') ?? netns) : netns;
      const t = item.get('target', true);
      let target: DesiredTarget | undefined;
      const listeners: {address?: string; port: number}[] = [];
      const fds: number[] = [];
      if (!isMap(t)) {
        problems.push(`${at(t ?? item)}: target must be a mapping with one of pid, pidfile, unit, cgroup`);
      } else {
        unknownKeys(t, TARGET_KEYS, 'a target');
        const kinds = ['pid', 'pidfile', 'unit', 'cgroup'].filter((k) => t.has(k));
        if (kinds.length !== 1) problems.push(`${at(t)}: target needs exactly one of pid, pidfile, unit, cgroup${kinds.length ? ` (has ${kinds.join(', ')})` : ''}`);
        else if (kinds[0] === 'pid') {
          const v = scalar(t.get('pid', true));
          if (typeof v === 'number' && Number.isInteger(v) && v > 0 && v <= 4194304) target = {kind: 'pid', pid: v};
          else problems.push(`${at(t.get('pid', true))}: pid must be a process id (a positive integer)`);
        } else if (kinds[0] === 'pidfile') {
          const p = str(t.get('pidfile', true), 'pidfile');
          if (p) target = {kind: 'pidfile', path: p};
        } else if (kinds[0] === 'unit') {
          const u = str(t.get('unit', true), 'unit');
          if (u && !/^[A-Za-z0-9:_.@\\-]+$/.test(u)) problems.push(`${at(t.get('unit', true))}: invalid unit name ${JSON.stringify(u)}`);
          else if (u) target = {kind: 'unit', unit: u.includes('.') ? u : `${u}.service`};
        } else {
          const c = str(t.get('cgroup', true), 'cgroup');
          if (c) target = {kind: 'cgroup', path: c};
        }
        if (t.has('listener')) for (const l of strings(t.get('listener', true), 'listener') ?? []) {
          const parsed = check(t.get('listener', true), () => parseListener(l));
          if (parsed) listeners.push(parsed);
        }
        if (t.has('fd')) {
          const f = t.get('fd', true);
          const list = isSeq(f) ? f.items.map(scalar) : [scalar(f)];
          for (const v of list) {
            if (typeof v === 'number' && Number.isInteger(v) && v >= 0) fds.push(v);
            else problems.push(`${at(f as Node)}: fd must be a file descriptor number`);
          }
        }
      }
      const svcProtos = protos(item.get('proto', true)) ?? ['tcp'];
      const bindings: DesiredBinding[] = [];
      if (item.has('bindings')) {
        if (item.has('ports') || item.has('addresses')) problems.push(`${at(item.get('bindings', true) as Node)}: give either bindings: or ports:/addresses:, not both`);
        const list = item.get('bindings', true);
        if (!isSeq(list)) problems.push(`${at(list as Node)}: bindings must be a list of {proto, ports, addresses}`);
        else
          for (const b of list.items) {
            if (!isMap(b)) {
              problems.push(`${at(b as Node)}: each binding must be a mapping (proto:, ports:, addresses:)`);
              continue;
            }
            unknownKeys(b, BINDING_KEYS, 'a binding');
            if (!b.has('ports')) problems.push(`${at(b)}: a binding needs ports:`);
            const p = b.has('ports') ? ports(b.get('ports', true)) : undefined;
            if (p) bindings.push({protos: protos(b.get('proto', true)) ?? svcProtos, ports: p, addresses: addresses(b.get('addresses', true))});
          }
      } else if (!item.has('ports')) {
        problems.push(`${at(item)}: service ${name ?? ''} needs ports: (a string like "8000-8099, 9000", a list, or "all")`);
      } else {
        const p = ports(item.get('ports', true));
        if (p) bindings.push({protos: svcProtos, ports: p, addresses: addresses(item.get('addresses', true))});
      }
      const forceNode = item.get('force', true);
      const force = forceNode === undefined ? false : scalar(forceNode);
      if (typeof force !== 'boolean') problems.push(`${at(forceNode as Node)}: force must be true or false`);
      const repliesNode = item.get('udp_replies', true);
      const udpReplies = repliesNode === undefined ? undefined : scalar(repliesNode);
      if (udpReplies !== undefined && udpReplies !== 'rewrite' && udpReplies !== 'off') problems.push(`${at(repliesNode as Node)}: udp_replies must be rewrite or off`);
      if (name !== undefined) {
        const key = `${ns}\u0000${name}`;
        const first = seen.get(key);
        if (first !== undefined) problems.push(`${at(item)}: duplicate service name ${name} (first at line ${first})`);
        else seen.set(key, lineOf(item));
      }
      if (name !== undefined && target) {
        out.push({name, netns: ns, target, listeners, fds, protos: svcProtos, bindings, force: force === true, ...(udpReplies === 'rewrite' || udpReplies === 'off' ? {udpReplies} : {}), line: lineOf(item)});
      }
    }
  };

  unknownKeys(root, new Set(['netns', 'services', 'namespaces']), 'the file');
  const dflt = root.has('netns') ? (str(root.get('netns', true), 'netns') ?? '') : '';
  if (!root.has('services') && !root.has('namespaces')) {
    problems.push(`${at(root)}: no services: list (write services: [] to mean none)`);
  }
  if (root.has('services')) services(root.get('services', true), dflt);
  if (root.has('namespaces')) {
    const list = root.get('namespaces', true);
    if (!isSeq(list)) problems.push(`${at(list as Node)}: namespaces must be a list of {netns, services}`);
    else
      for (const g of list.items) {
        if (!isMap(g)) {
          problems.push(`${at(g as Node)}: each namespace must be a mapping (netns:, services:)`);
          continue;
        }
        unknownKeys(g, new Set(['netns', 'services']), 'a namespace');
        const ns = str(g.get('netns', true), 'netns');
        if (ns !== undefined) services(g.get('services', true) ?? g, ns);
      }
  }
  if (problems.length) throw new DesiredStateError(problems);
  return out;
}
