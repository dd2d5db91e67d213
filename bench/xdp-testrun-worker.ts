/**
 * Child of the contended XDP bench: loads one of the bench programs, sharing its counter map with
 * the parent (by map id) so that several CPUs update the same map at once, waits for "go" on
 * stdin, then runs BPF_PROG_TEST_RUN rounds and prints {"ns": [per-round CPU ns/packet]}.
 *
 *   node dist/bench/xdp-testrun-worker.js OBJECT_PATH PROGRAM MAP_NAME MAP_ID REPEAT ROUNDS
 */
import {readFileSync} from 'node:fs';
import {BpfMap, BpfObject} from '../src/bpf/index.js';
import {udpFrame} from './xdp-flood.js';

const [objPath, program, mapName, mapId, repeatText, roundsText] = process.argv.slice(2);
const repeat = Number(repeatText);
const rounds = Number(roundsText);
const shared = mapName && mapName !== '-' ? {[mapName]: BpfMap.openById(Number(mapId))} : {};
const obj = BpfObject.load(readFileSync(objPath), {name: objPath, reuseMaps: shared});
const prog = obj.program(program);
const frame = udpFrame('02:00:00:00:00:01', '02:00:00:00:00:02', '169.254.1.2', '169.254.1.1', 18);
prog.testRun({data: frame, repeat: Math.min(repeat, 10_000)});
process.stdout.write('ready\n');

process.stdin.once('data', () => {
  const ns: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const c0 = process.cpuUsage();
    prog.testRun({data: frame, repeat});
    const c = process.cpuUsage(c0);
    ns.push(((c.user + c.system) * 1000) / repeat);
  }
  process.stdout.write(`${JSON.stringify({ns, runs: Math.min(repeat, 10_000) + rounds * repeat})}\n`);
  obj.close();
  for (const m of Object.values(shared)) m.close();
  process.stdin.pause();
});
