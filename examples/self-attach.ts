/**
 * A Node.js server that gives *itself* extra ports: it passes its own listening socket to skl's
 * library (in-process mode, no pid needed). The attachment is a foreground one: its kernel objects
 * belong to this process, so the extra ports disappear when the server exits, however it exits.
 *
 *   sudo node dist/examples/self-attach.js --port 8080 --extra 8081,9000-9010
 */
import net from 'node:net';
import {parseArgs} from 'node:util';
import {attachForeground, parsePorts} from 'skl';

const {values} = parseArgs({
  options: {
    port: {type: 'string', default: '8080'},
    host: {type: 'string', default: '127.0.0.1'},
    extra: {type: 'string', default: '8081'},
  },
});

const server = net.createServer((socket) => {
  socket.end(`${JSON.stringify({pid: process.pid, localPort: socket.localPort})}\n`);
});

server.listen(Number(values.port), values.host, async () => {
  // the fd of our own listening socket (Node keeps it on the handle)
  const fd = (server as unknown as {_handle: {fd: number}})._handle.fd;
  try {
    const attachment = await attachForeground({fd, ports: parsePorts(values.extra!), name: `self-${process.pid}`});
    const port = (server.address() as net.AddressInfo).port;
    console.log(JSON.stringify({event: 'ready', pid: process.pid, port, extra: attachment.ports}));
    const stop = () => {
      attachment.close();
      server.close();
      process.exit(0);
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  } catch (error) {
    console.error(`self-attach: ${(error as Error).message}`);
    process.exit(1);
  }
});
