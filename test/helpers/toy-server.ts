// A toy TCP/UDP server for end-to-end tests, run as a standalone process:
//
//   node dist/test/helpers/toy-server.js --proto tcp|udp --host ADDR --port N [--ipv6only]
//        [--exit-on-stdin-eof]
//
// stdout carries one JSON object per line: first {"event":"listening",...}, then one
// {"event":"accepted",...} per TCP connection or {"event":"datagram",...} per UDP datagram.
// Each peer gets back JSON {pid, localPort, localAddress} + "\n"; for TCP the connection is then
// ended. `localPort` is the accepted socket's own local port, which is how tests see which port a
// connection really arrived on (with sk_lookup, it is the port the client dialled).
// With --exit-on-stdin-eof the server exits when its stdin closes, i.e. when the test process
// that holds the other end of the pipe dies, even by SIGKILL.
import dgram from 'node:dgram';
import net from 'node:net';
import {pathToFileURL} from 'node:url';
import {parseArgs} from 'node:util';

export interface ToyServerArgs {
  proto: 'tcp' | 'udp';
  host: string;
  port: number;
  ipv6only: boolean;
  exitOnStdinEof: boolean;
}

/** Parse and validate the command line. */
export function parseServerArgs(argv: readonly string[]): ToyServerArgs {
  const {values} = parseArgs({
    args: [...argv],
    options: {
      proto: {type: 'string'},
      host: {type: 'string'},
      port: {type: 'string', default: '0'},
      ipv6only: {type: 'boolean', default: false},
      'exit-on-stdin-eof': {type: 'boolean', default: false},
    },
    strict: true,
  });
  const proto = values.proto;
  if (proto !== 'tcp' && proto !== 'udp') throw new Error('--proto must be tcp or udp');
  const host = values.host;
  if (host === undefined || net.isIP(host) === 0) throw new Error('--host must be an IP address');
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error('--port must be 0..65535');
  return {proto, host, port, ipv6only: values.ipv6only === true, exitOnStdinEof: values['exit-on-stdin-eof'] === true};
}

function emit(event: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

function reply(localPort: number | undefined, localAddress: string | undefined): string {
  return JSON.stringify({pid: process.pid, localPort, localAddress});
}

function startTcp(args: ToyServerArgs): () => void {
  const sockets = new Set<net.Socket>();
  const server = net.createServer(socket => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    const {localPort, localAddress, remotePort, remoteAddress} = socket;
    emit({event: 'accepted', localPort, localAddress, remotePort, remoteAddress});
    socket.end(`${reply(localPort, localAddress)}\n`);
  });
  server.on('error', err => {
    process.stderr.write(`toy-server: ${err.message}\n`);
    process.exit(1);
  });
  server.listen({host: args.host, port: args.port, ipv6Only: args.ipv6only}, () => {
    const addr = server.address() as net.AddressInfo;
    emit({event: 'listening', proto: 'tcp', pid: process.pid, port: addr.port, address: addr.address});
  });
  return () => {
    server.close();
    for (const s of sockets) s.destroy();
  };
}

function startUdp(args: ToyServerArgs): () => void {
  const family = net.isIPv6(args.host) ? 'udp6' : 'udp4';
  const sock = dgram.createSocket({type: family, ipv6Only: args.ipv6only});
  sock.on('error', err => {
    process.stderr.write(`toy-server: ${err.message}\n`);
    process.exit(1);
  });
  sock.on('message', (msg, rinfo) => {
    const {port: localPort, address: localAddress} = sock.address();
    emit({
      event: 'datagram',
      localPort,
      localAddress,
      remotePort: rinfo.port,
      remoteAddress: rinfo.address,
      size: msg.length,
    });
    sock.send(`${reply(localPort, localAddress)}\n`, rinfo.port, rinfo.address);
  });
  sock.bind({address: args.host, port: args.port}, () => {
    const addr = sock.address();
    emit({event: 'listening', proto: 'udp', pid: process.pid, port: addr.port, address: addr.address});
  });
  return () => sock.close();
}

function main(): void {
  let args: ToyServerArgs;
  try {
    args = parseServerArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`toy-server: ${(err as Error).message}\n`);
    process.exit(2);
  }
  const stop = args.proto === 'tcp' ? startTcp(args) : startUdp(args);
  let shuttingDown = false;
  const shutdown = (): void => {
    if (shuttingDown) return;
    shuttingDown = true;
    stop();
    // Exit once stdout has drained, so the last events are not lost (but never hang on it).
    setTimeout(() => process.exit(0), 1_000).unref();
    process.stdout.write('', () => process.exit(0));
  };
  process.once('SIGTERM', shutdown);
  process.once('SIGINT', shutdown);
  if (args.exitOnStdinEof) {
    process.stdin.on('end', shutdown).on('error', shutdown).resume();
  }
}

// Run only as a script, so the argument parser can be unit-tested by importing this module.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) main();
