/** Prometheus text exposition (format 0.0.4) of the dispatcher's state. Pure: unit-tested. */
import type {StatusReport} from '../dispatcher/api.js';

export interface BuildInfo {
  version: string;
  libbpf: string;
  node: string;
}

const escapeLabel = (v: string): string => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');

function labels(l: Record<string, string | number>): string {
  return `{${Object.entries(l)
    .map(([k, v]) => `${k}="${escapeLabel(String(v))}"`)
    .join(',')}}`;
}

interface Family {
  name: string;
  help: string;
  type: 'counter' | 'gauge';
  samples: [Record<string, string | number>, number][];
}

export function formatMetrics(reports: StatusReport[], build: BuildInfo): string {
  const fam = (name: string, type: Family['type'], help: string): Family => ({name, type, help, samples: []});
  const info = fam('skl_build_info', 'gauge', 'skl build information.');
  info.samples.push([{version: build.version, libbpf: build.libbpf, node: build.node}, 1]);
  const dispatchers = fam('skl_dispatcher_present', 'gauge', 'Whether the network namespace has a pinned skl dispatcher.');
  const stale = fam('skl_upgrade_needed', 'gauge', 'Whether the pinned state was written by an older skl (changes are refused until skl upgrade).');
  const layouts = fam('skl_service_layout', 'gauge', 'Layout of the state holding the service (0: skl 0.1.0).');
  const attachments = fam('skl_attachments', 'gauge', 'Services attached in the network namespace.');
  const redirected = fam('skl_redirected_total', 'counter', 'Connections (TCP) or datagrams (UDP) steered to the service\'s sockets.');
  const missed = fam('skl_target_gone_total', 'counter', 'Arrivals bound to the service while its socket for the protocol and family was gone.');
  const ports = fam('skl_ports', 'gauge', 'Explicit extra ports bound to the service (all-ports bindings count in skl_bindings).');
  const retaken = fam('skl_retaken_total', 'counter', 'New listening sockets of a followed service stored by the follow program (restarts followed in the kernel).');
  const bindings = fam('skl_bindings', 'gauge', 'Bindings of the service: (protocol, prefix) groups of ports.');
  const alive = fam('skl_target_alive', 'gauge', 'Whether every socket of the service is still open.');
  const flows = fam('skl_udp_flows_total', 'counter', 'UDP datagrams from an extra port that recorded (or refreshed) their flow, for replies from that port (services with --udp-replies rewrite).');
  const rewritten = fam('skl_udp_replies_rewritten_total', 'counter', 'UDP replies of the service that left from the extra port the client used.');
  const uncovered = fam('skl_uncovered_interfaces', 'gauge', 'Interfaces of the network namespace where a tc program some service needs (UDP replies, UDP following) is not running.');
  for (const r of reports) {
    const ns = String(r.netnsIno);
    dispatchers.samples.push([{netns: ns}, r.dispatcher ? 1 : 0]);
    stale.samples.push([{netns: ns}, r.upgrade ? 1 : 0]);
    attachments.samples.push([{netns: ns}, r.attachments.length]);
    uncovered.samples.push([{netns: ns}, r.uncovered?.length ?? 0]);
    for (const a of r.attachments) {
      const l = {netns: ns, name: a.name, protocol: a.protocols.join(','), pid: a.pid, mode: a.mode};
      redirected.samples.push([l, a.redirected]);
      missed.samples.push([l, a.missed]);
      ports.samples.push([l, a.ports.length]);
      bindings.samples.push([l, a.bindings.length]);
      retaken.samples.push([l, a.retaken]);
      layouts.samples.push([l, a.layout]);
      alive.samples.push([l, a.alive ? 1 : 0]);
      if (a.udpReplies !== undefined) {
        flows.samples.push([l, a.flows ?? 0]);
        rewritten.samples.push([l, a.rewritten ?? 0]);
      }
    }
  }
  return [info, dispatchers, stale, attachments, redirected, missed, retaken, ports, bindings, alive, layouts, flows, rewritten, uncovered]
    .map((f) => [`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`, ...f.samples.map(([l, v]) => `${f.name}${labels(l)} ${v}`)].join('\n'))
    .join('\n')
    .concat('\n');
}
