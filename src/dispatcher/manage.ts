/** Changing what is attached: detach services, add or remove ports of their bindings. */
import {SklError, UsageError} from '../sys/errors.js';
import type {Proto} from '../sys/sockets.js';
import {addBindings, bindingId, bindingsOf, groupBindings, portsText, readBindings, removeBindings, type BindingSpec} from './bindings.js';
import {validateName, type AddressPrefix} from './input.js';
import {anyPrefix, LAYOUT, prefixText, type Prefix} from './layout.js';
import {pruneFollow} from './follow.js';
import {coverInterfaces} from './interfaces.js';
import {checkClaims, checkHijack, closeAll, legacyClaims, openAll, ownSockets, servicesByName, socketId, where, withNetns} from './namespace.js';
import {familiesOf, removeService, stopService} from './services.js';
import {crashPoint} from './faults.js';
import {inHalves, journaled, PHASE} from './journal.js';
import type {DispatcherState} from './state.js';
import {LayoutError, Store} from './store.js';
import type {CommonOptions} from './attach.js';

export interface DetachResult {
  detached: string[];
  /** the namespace's dispatcher (and all its pins) was removed */
  dispatcherRemoved: boolean;
  notices: string[];
}

/** Remove services by name (or all of them); removing the last removes the dispatcher. */
export function detach(target: {name: string} | {all: true}, opts: CommonOptions = {}): Promise<DetachResult> {
  if ('name' in target) validateName(target.name);
  return withNetns(opts.netns, async (ns) => {
    const store = new Store(ns, opts);
    return store.locked(() => {
      let pinned: DispatcherState | undefined;
      try {
        pinned = store.openPinned();
      } catch (error) {
        // damaged state, or an older skl's: `--all` removes whatever is left (a newer skl's state is
        // never touched)
        if ('all' in target && !(error instanceof LayoutError && error.layout > LAYOUT)) {
          store.destroyPinned();
          return {detached: [], dispatcherRemoved: true, notices: [...store.notices, `removed ${(error as Error).message.includes('layout') || (error as Error).message.includes('created by') ? 'the state of another skl version' : 'damaged state'} in ${store.dir}`]};
        }
        throw error;
      }
      const fg = store.foreground(pinned?.linkId ?? 0);
      try {
        const services = pinned ? pinned.services() : [];
        let victims = services;
        if ('name' in target) {
          victims = services.filter((s) => s.name === target.name);
          if (victims.length === 0) {
            const f = fg.flatMap((d) => d.services()).find((s) => s.name === target.name);
            if (f) throw new SklError(`${target.name} is a foreground service: stop its skl process (pid ${f.ownerPid}) to detach it`);
            const known = services.map((s) => s.name);
            throw new SklError(`no service named ${target.name} in ${where(ns)}${known.length ? ` (there are: ${known.join(', ')})` : ''}`);
          }
        }
        if (!pinned) return {detached: [], dispatcherRemoved: false, notices: [...store.notices]};
        const removeAll = victims.length === services.length;
        if (removeAll) {
          // the last ones: stop them steering first, then remove the whole dispatcher
          for (const v of victims) stopService(pinned, v.id);
          crashPoint('detach:all-pending');
        } else {
          for (const v of victims) removeService(pinned, v.id);
        }
        // the cgroups no remaining service follows lose their follow link
        if (!removeAll) pruneFollow(store.dir, pinned);
        pinned.close();
        pinned = undefined;
        // the last service: its tc programs go with the dispatcher; else only those no service needs any more
        let notices: string[] = [];
        if (removeAll) store.destroyPinned();
        else notices = coverInterfaces(store);
        return {detached: victims.map((v) => v.name), dispatcherRemoved: removeAll, notices: [...store.notices, ...notices]};
      } finally {
        pinned?.close();
        closeAll(fg);
      }
    });
  });
}

export interface PortsOptions extends CommonOptions {
  force?: boolean;
  /** only the bindings of this protocol (default: every protocol of the service) */
  proto?: Proto;
  /** only the bindings of these prefixes (add: new prefixes allowed) */
  addresses?: AddressPrefix[];
}

export interface PortsChange {
  name: string;
  protocols: Proto[];
  /** the ports added or removed (0 = all ports) */
  changed: number[];
  /** the service's explicit ports afterwards, over all its bindings */
  ports: number[];
  portsText: string;
}

/** Add or remove extra ports of a service's bindings, live. */
export function changePorts(name: string, op: 'add' | 'remove', ports: number[] | 'all', opts: PortsOptions = {}): Promise<PortsChange> {
  validateName(name);
  const list = ports === 'all' ? [0] : ports;
  if (list.length === 0) return Promise.reject(new UsageError('no ports given'));
  return withNetns(opts.netns, async (ns) => {
    const store = new Store(ns, opts);
    return store.locked(() => {
      const all = openAll(store);
      try {
        const entry = servicesByName(all).get(name);
        if (!entry) throw new SklError(`no service named ${name} in ${where(ns)} (see skl status)`);
        if (entry.state.kind === 'foreground') throw new SklError(`${name} is a foreground service; its ports are fixed while it runs`);
        if (op === 'add' && entry.state.damage) throw new SklError(`cannot add ports: skl's pinned state in ${store.dir} is damaged: ${entry.state.damage}`);
        const {state: d, record} = entry;
        const current = bindingsOf(d, record.id);
        const held = new Set(current.map(bindingId));
        const protos = (['tcp', 'udp'] as const).filter((p) => record.sockets.some((s) => s?.proto === p) && (opts.proto === undefined || opts.proto === p));
        if (protos.length === 0) throw new UsageError(`${name} has no ${opts.proto!.toUpperCase()} socket`);
        const specs: BindingSpec[] = [];
        for (const proto of protos) {
          const families = familiesOf(record.sockets, proto);
          let prefixes: Prefix[];
          if (opts.addresses?.length) prefixes = opts.addresses;
          else {
            const mine = groupBindings(current.filter((b) => b.proto === proto)).map((g) => g.prefix);
            prefixes = mine.length ? mine : families.map(anyPrefix);
          }
          for (const p of prefixes) {
            if (!families.includes(p.family)) throw new SklError(`--address ${prefixText(p)}: ${name} has no socket that takes ${proto.toUpperCase()} over IPv${p.family}`);
            for (const port of list) specs.push({proto, prefix: p, port});
          }
        }
        if (op === 'add') {
          const fresh = specs.filter((b) => !held.has(bindingId(b)));
          checkClaims(all, entry, fresh, legacyClaims(store));
          checkHijack(ns, fresh, ownSockets(record.sockets.filter((s) => s).map((s) => socketId(s!))), opts.force ?? false);
          // journaled: an interruption is rolled back by the next skl, never left half added
          if (fresh.length) {
            const change = {phase: PHASE.portsAdd, id: record.id, meta: record, add: fresh, remove: []};
            journaled(store, d, change, () => writeInHalves(fresh, (part) => addBindings(d, record.id, part)), 'ports:journaled');
          }
          coverInterfaces(store);
          return result(name, protos, fresh, bindingsOf(d, record.id));
        }
        const missing = specs.filter((b) => !held.has(bindingId(b)));
        if (missing.length) {
          const g = groupBindings(missing)[0];
          const plural = g.ports.length > 1 || g.ports[0] === 0;
          throw new UsageError(`${name} does not have ${g.proto.toUpperCase()} port${plural ? 's' : ''} ${portsText(g.ports)}${g.prefix.len ? ` for ${prefixText(g.prefix)}` : ''}`);
        }
        // journaled: an interruption is finished by the next skl, never left half removed
        const change = {phase: PHASE.portsRemove, id: record.id, meta: record, add: [], remove: specs};
        journaled(store, d, change, () => writeInHalves(specs, (part) => removeBindings(d, record.id, part)), 'ports:journaled');
        coverInterfaces(store);
        return result(name, protos, specs, bindingsOf(d, record.id));
      } finally {
        closeAll(all);
      }
    });
  });
}

function result(name: string, protocols: Proto[], changed: readonly BindingSpec[], after: readonly BindingSpec[]): PortsChange {
  const ports = [...new Set(after.map((b) => b.port))].sort((a, b) => a - b);
  return {name, protocols, changed: [...new Set(changed.map((b) => b.port))].sort((a, b) => a - b), ports: ports.filter((p) => p !== 0), portsText: portsText(ports)};
}

/** A ports change in two halves (a crash point between them, for the tests), then its last crash point. */
function writeInHalves(list: readonly BindingSpec[], write: (part: readonly BindingSpec[]) => void): void {
  inHalves(list, write, 'ports:half-written');
  crashPoint('ports:written');
}

export {readBindings};
