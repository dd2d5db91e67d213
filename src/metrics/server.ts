/**
 * `skl metrics --listen ADDR:PORT`: GET /metrics in the Prometheus text format (0.0.4), read from
 * the pinned state at every scrape; 404 elsewhere. One log line per error; stops on close().
 */
import {createServer, type Server} from 'node:http';

export const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export interface MetricsServer {
  server: Server;
  /** the bound address and port */
  address: string;
  port: number;
  close(): Promise<void>;
}

/** Serve `render()` (the exposition text) at /metrics. `log` gets one line per error. */
export function serveMetrics(host: string, port: number, render: () => Promise<string>, log: (line: string) => void): Promise<MetricsServer> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(req.method !== 'GET' && req.method !== 'HEAD' && path === '/metrics' ? 405 : 404, {'content-type': 'text/plain; charset=utf-8'});
      res.end(path === '/metrics' ? 'method not allowed\n' : 'not found: the metrics are at /metrics\n');
      return;
    }
    render().then(
      (text) => {
        res.writeHead(200, {'content-type': CONTENT_TYPE, 'content-length': Buffer.byteLength(text)});
        res.end(req.method === 'HEAD' ? undefined : text);
      },
      (error: unknown) => {
        const message = (error as Error).message ?? String(error);
        log(`scrape failed: ${message}`);
        res.writeHead(500, {'content-type': 'text/plain; charset=utf-8'});
        res.end(`error: ${message}\n`);
      },
    );
  });
  server.on('clientError', (err, socket) => {
    log(`bad request: ${err.message}`);
    socket.destroy();
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({host, port}, () => {
      server.off('error', reject);
      server.on('error', (e) => log(`server error: ${e.message}`));
      const a = server.address();
      const bound = typeof a === 'object' && a ? a : {address: host, port};
      resolve({
        server,
        address: bound.address,
        port: bound.port,
        close: () => new Promise((r) => server.close(() => r())),
      });
    });
  });
}
