// A member of a reuseport group for end-to-end tests: a tiny C server (Node 20 cannot set
// SO_REUSEPORT), compiled once per test process with the C compiler scripts/setup.sh installs.
//
//   reuseport-server tcp|udp ADDR PORT
//
// It binds ADDR:PORT with SO_REUSEPORT, prints {"event":"listening","pid":N} and then answers each
// TCP connection or UDP datagram like the toy server ({"pid","localPort","localAddress"} + "\n"),
// printing {"event":"accepted"} / {"event":"datagram"} for each. It exits when its stdin closes (the
// test process died), so it never outlives the test.
import {spawnSync, type ChildProcess} from 'node:child_process';
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {createInterface} from 'node:readline';
import type {Netns} from './netns.js';
import {inCgroup} from './cgroups.js';

const SOURCE = String.raw`
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int reply(char *out, size_t size, struct sockaddr_storage *local)
{
	char host[INET6_ADDRSTRLEN] = "";
	int port;

	if (local->ss_family == AF_INET6) {
		struct sockaddr_in6 *a = (void *)local;
		inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
		port = ntohs(a->sin6_port);
	} else {
		struct sockaddr_in *a = (void *)local;
		inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
		port = ntohs(a->sin_port);
	}
	return snprintf(out, size, "{\"pid\":%d,\"localPort\":%d,\"localAddress\":\"%s\"}\n", getpid(), port, host);
}

int main(int argc, char **argv)
{
	struct sockaddr_storage ss = {0}, peer, local;
	socklen_t len, plen, llen;
	int udp, v6, fd, one = 1;
	char buf[512], out[256];

	if (argc != 4)
		return 2;
	udp = strcmp(argv[1], "udp") == 0;
	v6 = strchr(argv[2], ':') != NULL;
	fd = socket(v6 ? AF_INET6 : AF_INET, udp ? SOCK_DGRAM : SOCK_STREAM, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
		perror("socket");
		return 1;
	}
	if (v6) {
		struct sockaddr_in6 *a = (void *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons(atoi(argv[3]));
		inet_pton(AF_INET6, argv[2], &a->sin6_addr);
		len = sizeof(*a);
	} else {
		struct sockaddr_in *a = (void *)&ss;
		a->sin_family = AF_INET;
		a->sin_port = htons(atoi(argv[3]));
		inet_pton(AF_INET, argv[2], &a->sin_addr);
		len = sizeof(*a);
	}
	if (bind(fd, (void *)&ss, len) < 0 || (!udp && listen(fd, 128) < 0)) {
		perror("bind/listen");
		return 1;
	}
	printf("{\"event\":\"listening\",\"pid\":%d}\n", getpid());
	fflush(stdout);
	for (;;) {
		struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = 0, .events = POLLIN}};

		if (poll(p, 2, -1) < 0)
			continue;
		if (p[1].revents) {
			ssize_t n = read(0, buf, sizeof(buf));
			if (n <= 0)
				return 0;
		}
		if (!(p[0].revents & POLLIN))
			continue;
		plen = sizeof(peer);
		llen = sizeof(local);
		if (udp) {
			ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, (void *)&peer, &plen);
			if (n < 0)
				continue;
			getsockname(fd, (void *)&local, &llen);
			sendto(fd, out, reply(out, sizeof(out), &local), 0, (void *)&peer, plen);
			printf("{\"event\":\"datagram\"}\n");
		} else {
			int c = accept(fd, (void *)&peer, &plen);
			if (c < 0)
				continue;
			getsockname(c, (void *)&local, &llen);
			if (write(c, out, reply(out, sizeof(out), &local)) < 0)
				perror("write");
			close(c);
			printf("{\"event\":\"accepted\"}\n");
		}
		fflush(stdout);
	}
}
`;

let built: string | undefined;

/** The compiled server (built on first use with `cc`; removed when the test process exits). */
export function reuseportServerBinary(cc: string): string {
  if (built) return built;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'skl-reuseport-'));
  process.once('exit', () => rmSync(dir, {recursive: true, force: true}));
  writeFileSync(path.join(dir, 'server.c'), SOURCE);
  const r = spawnSync(cc, ['-O2', '-Wall', '-o', path.join(dir, 'reuseport-server'), path.join(dir, 'server.c')], {encoding: 'utf8'});
  if (r.status !== 0) throw new Error(`building the reuseport server failed: ${r.stderr}`);
  built = path.join(dir, 'reuseport-server');
  return built;
}

/** A server process of a test: its pid, the connections or datagrams it answered so far, and a way to stop it. */
export interface ServerProcess {
  pid: number;
  child: ChildProcess;
  /** connections (TCP) or datagrams (UDP) it answered so far */
  served(): number;
  /** SIGKILL; resolves once it has exited */
  stop(): Promise<void>;
}

/**
 * Start `argv` in `ns` (through a shell that first moves itself into the cgroup directory
 * `cgroupDir`, when given) and wait for its {"event":"listening","pid"} line; its later
 * {"event":"accepted"} / {"event":"datagram"} lines are counted (the toy server and the reuseport
 * server both print them).
 */
export async function startServerIn(ns: Netns, argv: readonly string[], cgroupDir: string | undefined, what: string): Promise<ServerProcess> {
  const [cmd, ...args] = cgroupDir ? inCgroup(cgroupDir, argv) : argv;
  const child = ns.spawn(cmd, args, {stdio: ['pipe', 'pipe', 'pipe']});
  let stderr = '';
  let served = 0;
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const pid = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not start; stderr: ${stderr}`)), 30_000);
    createInterface({input: child.stdout!}).on('line', line => {
      let e: {event?: string; pid?: number};
      try {
        e = JSON.parse(line) as {event?: string; pid?: number};
      } catch {
        return; // not an event
      }
      if (e.event === 'listening' && e.pid) {
        clearTimeout(timer);
        resolve(e.pid);
      } else if (e.event === 'accepted' || e.event === 'datagram') {
        served++;
      }
    });
    child.once('exit', code => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${code}); stderr: ${stderr}`));
    });
  });
  return {
    pid,
    child,
    served: () => served,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise(r => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** Start a member of a reuseport group in `ns` (in cgroup directory `cgroupDir`, when given); resolves once it is bound (and listening). */
export function startReuseportMember(binary: string, ns: Netns, proto: 'tcp' | 'udp', host: string, port: number, cgroupDir?: string): Promise<ServerProcess> {
  return startServerIn(ns, [binary, proto, host, String(port)], cgroupDir, 'reuseport member');
}
