/**
 * Peak resident memory (VmHWM, read from /proc/PID/status just before stopping the process) of the
 * long-running commands: `skl attach --foreground` (after it attached and steered a few
 * connections) and `skl xdp-count` (after a few seconds of samples), against an idle `node` (the
 * floor of any Node.js process). Each inside a namespace of the bench's own; xdp-count counts on
 * a veth pair whose both ends live in that namespace (no traffic leaves it).
 */
import {BenchNetns, check, stop, tool} from './lib/netns.js';
import {dist, SKL, startAndWait, vmHwmKiB} from './lib/proc.js';

export interface MemoryResult {
  /** KiB */
  nodeIdle: number;
  attachForeground: number;
  xdpCount: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function benchMemory(): Promise<MemoryResult> {
  const ns = BenchNetns.create();
  try {
    const node = process.execPath;

    const idle = ns.spawn(node, ['-e', 'process.stdout.write(JSON.stringify({event: "ready"}) + "\\n"); setTimeout(() => {}, 60000)'], {stdio: ['ignore', 'pipe', 'pipe']});
    await startAndWait(idle, (e) => (e.event === 'ready' ? true : undefined), 'idle node');
    await sleep(500);
    const nodeIdle = vmHwmKiB(idle.pid!);
    await stop(idle);

    const server = ns.spawn(node, [dist('e2e-server.js'), '--port', '8080'], {stdio: ['pipe', 'pipe', 'pipe']});
    const pid = await startAndWait(server, (e) => (e.event === 'listening' ? (e.pid as number) : undefined), 'e2e-server');
    const fg = ns.spawn(node, [SKL, 'attach', '--pid', String(pid), '--ports', '9090-9099', '--name', 'mem', '--foreground', '--json'], {stdio: ['ignore', 'pipe', 'pipe']});
    await startAndWait(fg, (e) => (e.event === 'attached' ? true : undefined), 'skl attach --foreground');
    // some traffic through it, and a status from another skl (reads the foreground dispatcher)
    check('client', ns.exec(node, [dist('e2e-client.js'), '--ports', '9090', '--rounds', '1', '--slice-ms', '500', '--warmup-ms', '0', '--parallel', '4']));
    check('skl status', ns.exec(node, [SKL, 'status']));
    const attachForeground = vmHwmKiB(fg.pid!);
    await stop(fg, 5000, 'SIGINT');
    await stop(server);

    const ip = tool('ip');
    check('veth', ns.exec(ip, ['link', 'add', 'sklbm0', 'type', 'veth', 'peer', 'name', 'sklbm1']));
    for (const dev of ['sklbm0', 'sklbm1']) {
      ns.sysctl(`net.ipv6.conf.${dev}.disable_ipv6`, '1');
      check('link up', ns.exec(ip, ['link', 'set', 'dev', dev, 'up']));
    }
    const xc = ns.spawn(node, [SKL, 'xdp-count', 'sklbm0', '--interval', '0.5', '--json'], {stdio: ['ignore', 'pipe', 'pipe']});
    await startAndWait(xc, (e) => (e.type === 'sample' ? true : undefined), 'skl xdp-count');
    await sleep(2500);
    const xdpCount = vmHwmKiB(xc.pid!);
    await stop(xc, 5000, 'SIGINT');
    return {nodeIdle, attachForeground, xdpCount};
  } finally {
    await ns.destroy();
  }
}
