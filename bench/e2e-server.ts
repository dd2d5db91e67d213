/**
 * Benchmark server: listens on 127.0.0.1:PORT, accepts every connection and closes it at once.
 * Prints one JSON line {"event":"listening","pid":..,"port":..} when ready; exits on SIGTERM/SIGINT
 * or when its stdin closes (so it never outlives the bench).
 *
 *   node dist/bench/e2e-server.js --port N
 */
import net from 'node:net';
import {parseArgs} from 'node:util';

const {values} = parseArgs({options: {port: {type: 'string', default: '0'}}});
let accepted = 0;
const server = net.createServer({allowHalfOpen: false}, (socket) => {
  accepted++;
  socket.on('error', () => undefined);
  socket.destroy();
});
server.on('error', (err) => {
  process.stderr.write(`e2e-server: ${err.message}\n`);
  process.exit(1);
});
server.listen({host: '127.0.0.1', port: Number(values.port), backlog: 4096}, () => {
  const addr = server.address() as net.AddressInfo;
  process.stdout.write(`${JSON.stringify({event: 'listening', pid: process.pid, port: addr.port})}\n`);
});
const quit = (): void => {
  process.stdout.write(`${JSON.stringify({event: 'exit', accepted})}\n`, () => process.exit(0));
  setTimeout(() => process.exit(0), 500).unref();
};
process.once('SIGTERM', quit);
process.once('SIGINT', quit);
process.stdin.on('end', quit).on('error', quit).resume();
