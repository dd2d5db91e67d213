// Server-socket discovery through NETLINK_SOCK_DIAG (src/sys/sockdiag.ts) finds exactly what
// /proc/net/{tcp,tcp6,udp,udp6} lists, in a throwaway namespace with listeners of every kind.
import {readFileSync} from 'node:fs';
import {Netns} from '../src/sys/netns.js';
import {diagServerSockets} from '../src/sys/sockdiag.js';
import {isServerSocket, parseProcNet, serverSocketsHere, serverSocketsOf, type SocketEntry} from '../src/sys/sockets.js';
import {createNetns} from './helpers/netns.js';
import {privileged} from './helpers/privileged.js';
import {startToyServer} from './helpers/servers.js';

function fromProc(): SocketEntry[] {
  const tables = [
    ['tcp', 4, 'tcp'],
    ['tcp', 6, 'tcp6'],
    ['udp', 4, 'udp'],
    ['udp', 6, 'udp6'],
  ] as const;
  return tables.flatMap(([proto, family, file]) => parseProcNet(readFileSync(`/proc/thread-self/net/${file}`, 'utf8'), proto, family)).filter(isServerSocket);
}

const key = (s: SocketEntry): string => JSON.stringify([s.proto, s.family, s.address, s.port, s.remoteAddress, s.remotePort, s.state, s.inode]);

privileged('sock_diag lists the same server sockets as /proc/net/*', async (t) => {
  const ns = createNetns(t);
  const kinds = [
    {proto: 'tcp', host: '127.0.0.1'},
    {proto: 'tcp', host: '0.0.0.0'},
    {proto: 'tcp', host: '::'},
    {proto: 'tcp', host: '::1', ipv6only: true},
    {proto: 'udp', host: '127.0.0.1'},
    {proto: 'udp', host: '::'},
  ] as const;
  const servers = await Promise.all(kinds.map((k) => startToyServer(ns, k)));
  const netns = Netns.open(ns.path);
  try {
    const {diag, proc, here} = netns.run(() => ({diag: diagServerSockets(['tcp', 'udp']), proc: fromProc(), here: serverSocketsHere(['tcp', 'udp'])}));
    t.truthy(diag, 'sock_diag answered');
    t.deepEqual(new Set(diag!.map(key)), new Set(proc.map(key)));
    t.deepEqual(new Set(here.map(key)), new Set(proc.map(key)));
    t.is(proc.length, servers.length);
    // a process in the namespace: its sockets, by fd, as before
    for (const [i, s] of servers.entries()) {
      const mine = serverSocketsOf(s.pid, kinds[i].proto);
      t.is(mine.length, 1);
      t.is(mine[0].port, s.port);
    }
  } finally {
    netns.close();
  }
});
