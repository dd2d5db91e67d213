/**
 * Benchmark client: TCP connect → (server accepts and closes) → close, as fast as possible with
 * `--parallel` connections in flight, in time slices that alternate between the given ports:
 * round r runs one slice per port, in an order that rotates between rounds. Prints one JSON line:
 * {"slices": [{"port", "round", "ms", "ok", "failed", "rate"}], "errors": {...}, "warmup": {port: attempts}}.
 *
 *   node dist/bench/e2e-client.js --host 127.0.0.1 --ports 8080,9090 --rounds 6 --slice-ms 1000 [--parallel 8]
 */
import net from 'node:net';
import {alternate, sliceClientArgs} from './lib/slices.js';

const {host, ports, rounds, sliceMs, warmupMs, parallel} = sliceClientArgs('1000', {});
const errors: Record<string, number> = {};

/** One connection: resolves true when the server's close has been seen, false on an error. */
function once(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({host, port});
    let failed = false;
    s.on('error', (err: NodeJS.ErrnoException) => {
      failed = true;
      errors[err.code ?? err.message] = (errors[err.code ?? err.message] ?? 0) + 1;
    });
    s.on('close', () => resolve(!failed));
    s.resume();
  });
}

/** Run `parallel` loops against `port` for `ms`; counts connections completed within the slice. */
async function slice(port: number, ms: number): Promise<{ok: number; failed: number; ms: number}> {
  let ok = 0;
  let failed = 0;
  const t0 = performance.now();
  const end = t0 + ms;
  const loop = async (): Promise<void> => {
    while (performance.now() < end) {
      if (await once(port)) ok++;
      else failed++;
    }
  };
  await Promise.all(Array.from({length: parallel}, loop));
  return {ok, failed, ms: performance.now() - t0};
}

const {slices, warmup} = await alternate(ports, {rounds, sliceMs, warmupMs, attempts: (w) => w.ok + w.failed}, slice);
process.stdout.write(`${JSON.stringify({slices, errors, warmup})}\n`);
