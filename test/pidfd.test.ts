// Taking a socket out of another process with pidfd_getfd, in a throwaway network namespace, and
// proving the copy is the very same socket.
import {spawnSync} from 'node:child_process';
import {closeSync, fstatSync, statSync} from 'node:fs';
import {
  SklError,
  duplicateFd,
  pidfdGetfdAvailable,
  serverSocketsOf,
  socketFdInfo,
  socketLocalAddress,
  socketNetnsIno,
} from '../src/sys/index.js';
import {connectOnce} from './helpers/clients.js';
import {createNetns} from './helpers/netns.js';
import {privileged} from './helpers/privileged.js';
import {startToyServer} from './helpers/servers.js';

const AF_INET = 2;
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;

privileged('duplicateFd takes the listening TCP socket of a process in another namespace', async t => {
  t.true(pidfdGetfdAvailable());
  const ns = createNetns(t);
  const server = await startToyServer(ns, {proto: 'tcp', host: '127.0.0.1'});
  t.true(server.port > 0);

  const sockets = serverSocketsOf(server.pid, 'tcp');
  const listening = sockets.find((s) => s.port === server.port);
  t.truthy(listening, `no listening socket on port ${server.port} among ${JSON.stringify(sockets)}`);
  t.like(listening, {proto: 'tcp', family: 4, address: '127.0.0.1', state: 0x0a});

  const dup = duplicateFd(server.pid, listening!.fd);
  try {
    // The same socket: same inode as /proc/PID/fd/N points at, in the test namespace, listening on
    // the same local address and port.
    t.is(fstatSync(dup).ino, listening!.inode);
    t.is(socketNetnsIno(dup), statSync(ns.path).ino);
    t.deepEqual(socketFdInfo(dup), {domain: AF_INET, protocol: IPPROTO_TCP, listening: true, v6only: false});
    t.deepEqual(socketLocalAddress(dup), {family: 4, address: '127.0.0.1', port: server.port});
  } finally {
    closeSync(dup);
  }
  // Closing our copy leaves the server's socket working.
  const reply = await connectOnce(ns, {proto: 'tcp', host: '127.0.0.1', port: server.port});
  t.true(reply.ok, JSON.stringify(reply));
  if (reply.ok) t.is(reply.reply.pid, server.pid);
});

privileged('duplicateFd takes an unconnected UDP socket', async t => {
  const ns = createNetns(t);
  const server = await startToyServer(ns, {proto: 'udp', host: '127.0.0.1'});
  const s = serverSocketsOf(server.pid, 'udp').find((x) => x.port === server.port);
  t.truthy(s);
  const dup = duplicateFd(server.pid, s!.fd);
  try {
    t.is(fstatSync(dup).ino, s!.inode);
    t.like(socketFdInfo(dup), {domain: AF_INET, protocol: IPPROTO_UDP, listening: false});
    t.deepEqual(socketLocalAddress(dup), {family: 4, address: '127.0.0.1', port: server.port});
  } finally {
    closeSync(dup);
  }
});

privileged('duplicateFd of a process that does not exist is a clear SklError', t => {
  // A child that has exited and been reaped: its pid names no process.
  const gone = spawnSync(process.execPath, ['-e', '']).pid;
  t.truthy(gone);
  const err = t.throws(() => duplicateFd(gone!, 0), {instanceOf: SklError});
  t.is(err!.message, `process ${gone} does not exist`);
  t.throws(() => serverSocketsOf(gone!, 'tcp'));
});

privileged('duplicateFd of an fd the process does not have is a clear SklError', async t => {
  const ns = createNetns(t);
  const server = await startToyServer(ns, {proto: 'tcp', host: '127.0.0.1'});
  const err = t.throws(() => duplicateFd(server.pid, 9999), {instanceOf: SklError});
  t.regex(err!.message, new RegExp(`process ${server.pid} has no fd 9999`));
  t.throws(() => duplicateFd(server.pid, -1), {instanceOf: SklError});
});
