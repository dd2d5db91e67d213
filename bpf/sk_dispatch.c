// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* skl's sk_lookup dispatcher: steers connections (TCP) and datagrams (UDP) to services' own
 * sockets, by bindings (protocol, local prefix, port) -> service. One instance per network
 * namespace, shared by all services. Precedence: the longest prefix wins; on equal prefixes an
 * explicit port beats "all ports".
 *
 * Besides sk_dispatch (sk_lookup), the object holds the programs that keep services reachable
 * and correct around it: sk_follow (sock_ops: a followed TCP service's new listener),
 * sk_follow_udp (tc ingress: a followed UDP service's new socket, on its first datagram) and
 * sk_reply (tc egress: UDP replies leave from the extra port the client used). */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "headers/skl.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define NEXTHDR_FRAGMENT 44
#define TC_NEXT -1 /* TC_ACT_UNSPEC / TCX_NEXT: let the next program or filter decide */
#define MAX_CGROUP_LEVELS 16

/* (protocol, port) -> any-address services, flags and prefix lengths (see skl.h). An ARRAY: one
 * O(1) lookup, inlined by the JIT. Memory-mappable, so userspace reads and writes all 131,072
 * entries as plain memory instead of one syscall per entry. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, SKL_PORT_ENTRIES);
	__type(key, __u32);
	__type(value, struct skl_port);
} add_ports SEC(".maps");

/* Bindings of a local prefix: a hash of SKL_MAX_BINDINGS entries created by skl when the first
 * one is added (creating a million-entry hash costs ≈10 ms, which a dispatcher without prefix
 * bindings need not pay), put at index 0 of binding_tables. */
struct binding_hash {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1); /* the template only (Linux ≥5.10 compares no inner max_entries) */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(key_size, sizeof(struct skl_binding_key));
	__uint(value_size, sizeof(struct skl_binding));
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct binding_hash);
} binding_tables SEC(".maps");

/* service * 4 + protocol * 2 + (family == 6) -> socket. A dual-stack IPv6 socket that serves
 * IPv4 is stored under the IPv4 index too. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, SKL_MAX_DESTS);
	__type(key, __u32);
	__type(value, __u64);
} target_socket SEC(".maps");

/* Spare sockets of a destination (see skl.h), tried when its socket is gone. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, SKL_MAX_DESTS * SKL_SPARES);
	__type(key, __u32);
	__type(value, __u64);
} spare_socket SEC(".maps");

/* Per destination: the next spare the follow program fills (round robin). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SKL_MAX_DESTS);
	__type(key, __u32);
	__type(value, __u32);
} spare_next SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SKL_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct skl_counters);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SKL_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct skl_service);
} services SEC(".maps");

/* Followed listeners (see skl.h). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SKL_MAX_FOLLOW);
	__type(key, struct skl_follow_key);
	__type(value, struct skl_follow);
} follow SEC(".maps");

/* Followed cgroups (id -> 1): a UDP socket created in one of them (or below) is tagged with it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SKL_MAX_SERVICES);
	__type(key, __u64);
	__type(value, __u32);
} follow_cgroups SEC(".maps");

/* A UDP socket's followed cgroup (tc programs cannot ask a socket for its cgroup). */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} sock_cgroup SEC(".maps");

/* UDP flows steered from an extra port (see skl.h): least recently used ones make room. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SKL_MAX_FLOWS);
	__type(key, struct skl_flow_key);
	__type(value, struct skl_flow);
} udp_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SKL_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct skl_reply_counters);
} reply_counters SEC(".maps");

/* Userspace-only (referenced below so it is one of the program's maps: a foreground dispatcher's
 * layout can be found from its link alone). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct skl_info);
} skl_info SEC(".maps");

/* A local address: 4 words in network order (IPv4: the first word, the rest zero). */
struct addr {
	__u32 w[4];
};

/* prefix_masks[len - 1]: the first `len` (1..128) bits of an address set, as 4 words in network
 * order (little-endian hosts: see DESIGN.md). A table rather than shifts: the verifier walks one
 * bounded lookup instead of every branch of a per-word computation (which took it a second). */
static const struct addr prefix_masks[128] = {
	{{0x00000080, 0x00000000, 0x00000000, 0x00000000}},
	{{0x000000c0, 0x00000000, 0x00000000, 0x00000000}},
	{{0x000000e0, 0x00000000, 0x00000000, 0x00000000}},
	{{0x000000f0, 0x00000000, 0x00000000, 0x00000000}},
	{{0x000000f8, 0x00000000, 0x00000000, 0x00000000}},
	{{0x000000fc, 0x00000000, 0x00000000, 0x00000000}},
	{{0x000000fe, 0x00000000, 0x00000000, 0x00000000}},
	{{0x000000ff, 0x00000000, 0x00000000, 0x00000000}},
	{{0x000080ff, 0x00000000, 0x00000000, 0x00000000}},
	{{0x0000c0ff, 0x00000000, 0x00000000, 0x00000000}},
	{{0x0000e0ff, 0x00000000, 0x00000000, 0x00000000}},
	{{0x0000f0ff, 0x00000000, 0x00000000, 0x00000000}},
	{{0x0000f8ff, 0x00000000, 0x00000000, 0x00000000}},
	{{0x0000fcff, 0x00000000, 0x00000000, 0x00000000}},
	{{0x0000feff, 0x00000000, 0x00000000, 0x00000000}},
	{{0x0000ffff, 0x00000000, 0x00000000, 0x00000000}},
	{{0x0080ffff, 0x00000000, 0x00000000, 0x00000000}},
	{{0x00c0ffff, 0x00000000, 0x00000000, 0x00000000}},
	{{0x00e0ffff, 0x00000000, 0x00000000, 0x00000000}},
	{{0x00f0ffff, 0x00000000, 0x00000000, 0x00000000}},
	{{0x00f8ffff, 0x00000000, 0x00000000, 0x00000000}},
	{{0x00fcffff, 0x00000000, 0x00000000, 0x00000000}},
	{{0x00feffff, 0x00000000, 0x00000000, 0x00000000}},
	{{0x00ffffff, 0x00000000, 0x00000000, 0x00000000}},
	{{0x80ffffff, 0x00000000, 0x00000000, 0x00000000}},
	{{0xc0ffffff, 0x00000000, 0x00000000, 0x00000000}},
	{{0xe0ffffff, 0x00000000, 0x00000000, 0x00000000}},
	{{0xf0ffffff, 0x00000000, 0x00000000, 0x00000000}},
	{{0xf8ffffff, 0x00000000, 0x00000000, 0x00000000}},
	{{0xfcffffff, 0x00000000, 0x00000000, 0x00000000}},
	{{0xfeffffff, 0x00000000, 0x00000000, 0x00000000}},
	{{0xffffffff, 0x00000000, 0x00000000, 0x00000000}},
	{{0xffffffff, 0x00000080, 0x00000000, 0x00000000}},
	{{0xffffffff, 0x000000c0, 0x00000000, 0x00000000}},
	{{0xffffffff, 0x000000e0, 0x00000000, 0x00000000}},
	{{0xffffffff, 0x000000f0, 0x00000000, 0x00000000}},
	{{0xffffffff, 0x000000f8, 0x00000000, 0x00000000}},
	{{0xffffffff, 0x000000fc, 0x00000000, 0x00000000}},
	{{0xffffffff, 0x000000fe, 0x00000000, 0x00000000}},
	{{0xffffffff, 0x000000ff, 0x00000000, 0x00000000}},
	{{0xffffffff, 0x000080ff, 0x00000000, 0x00000000}},
	{{0xffffffff, 0x0000c0ff, 0x00000000, 0x00000000}},
	{{0xffffffff, 0x0000e0ff, 0x00000000, 0x00000000}},
	{{0xffffffff, 0x0000f0ff, 0x00000000, 0x00000000}},
	{{0xffffffff, 0x0000f8ff, 0x00000000, 0x00000000}},
	{{0xffffffff, 0x0000fcff, 0x00000000, 0x00000000}},
	{{0xffffffff, 0x0000feff, 0x00000000, 0x00000000}},
	{{0xffffffff, 0x0000ffff, 0x00000000, 0x00000000}},
	{{0xffffffff, 0x0080ffff, 0x00000000, 0x00000000}},
	{{0xffffffff, 0x00c0ffff, 0x00000000, 0x00000000}},
	{{0xffffffff, 0x00e0ffff, 0x00000000, 0x00000000}},
	{{0xffffffff, 0x00f0ffff, 0x00000000, 0x00000000}},
	{{0xffffffff, 0x00f8ffff, 0x00000000, 0x00000000}},
	{{0xffffffff, 0x00fcffff, 0x00000000, 0x00000000}},
	{{0xffffffff, 0x00feffff, 0x00000000, 0x00000000}},
	{{0xffffffff, 0x00ffffff, 0x00000000, 0x00000000}},
	{{0xffffffff, 0x80ffffff, 0x00000000, 0x00000000}},
	{{0xffffffff, 0xc0ffffff, 0x00000000, 0x00000000}},
	{{0xffffffff, 0xe0ffffff, 0x00000000, 0x00000000}},
	{{0xffffffff, 0xf0ffffff, 0x00000000, 0x00000000}},
	{{0xffffffff, 0xf8ffffff, 0x00000000, 0x00000000}},
	{{0xffffffff, 0xfcffffff, 0x00000000, 0x00000000}},
	{{0xffffffff, 0xfeffffff, 0x00000000, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0x00000000, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0x00000080, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0x000000c0, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0x000000e0, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0x000000f0, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0x000000f8, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0x000000fc, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0x000000fe, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0x000000ff, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0x000080ff, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0x0000c0ff, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0x0000e0ff, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0x0000f0ff, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0x0000f8ff, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0x0000fcff, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0x0000feff, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0x0000ffff, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0x0080ffff, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0x00c0ffff, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0x00e0ffff, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0x00f0ffff, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0x00f8ffff, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0x00fcffff, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0x00feffff, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0x00ffffff, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0x80ffffff, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0xc0ffffff, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0xe0ffffff, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0xf0ffffff, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0xf8ffffff, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0xfcffffff, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0xfeffffff, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0x00000000}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0x00000080}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0x000000c0}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0x000000e0}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0x000000f0}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0x000000f8}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0x000000fc}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0x000000fe}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0x000000ff}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0x000080ff}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0x0000c0ff}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0x0000e0ff}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0x0000f0ff}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0x0000f8ff}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0x0000fcff}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0x0000feff}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0x0000ffff}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0x0080ffff}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0x00c0ffff}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0x00e0ffff}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0x00f0ffff}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0x00f8ffff}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0x00fcffff}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0x00feffff}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0x00ffffff}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0x80ffffff}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0xc0ffffff}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0xe0ffffff}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0xf0ffffff}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0xf8ffffff}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0xfcffffff}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0xfeffffff}},
	{{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}},
};

/* Zero the bits of an address past `len` (1..128). The table index is (len - 1) & 127, a bound
 * every verifier tracks: Linux 6.1's loses a clamp `if (len > 128) len = 128` when clang applies it
 * to a copy of the register it compares (and rejects the program). */
static __always_inline void mask_addr(struct skl_binding_key *key, struct skl_binding_key *key_all, const struct addr *a, __u32 len)
{
	const struct addr *m;
	__u32 w[4];

	m = &prefix_masks[(len - 1) & 127];
	w[0] = a->w[0] & m->w[0];
	w[1] = a->w[1] & m->w[1];
	w[2] = a->w[2] & m->w[2];
	w[3] = a->w[3] & m->w[3];
	__builtin_memcpy(key->addr, w, 16);
	__builtin_memcpy(key_all->addr, w, 16);
}

/*
 * The service (+ 1; 0 = none) that (protocol, family, local address, port) is bound to: the
 * dispatcher's precedence, shared by every program that needs to know where a packet goes. `pv`
 * is the port's entry, `av` the "all ports" one (port 0).
 */
static __always_inline __u32 resolve(__u8 proto, __u32 v6, const struct addr *a, __u16 port, struct skl_port *pv,
				     struct skl_port *av)
{
	/* one key for the port's own bindings, one for "all ports" (port 0): the lookups differ in
	 * nothing the loop writes, so every way through an iteration ends in the same state (one key
	 * whose port changed with the way taken made the verifier keep each of them apart) */
	struct skl_binding_key key = {}, key_all = {};
	struct skl_binding *b;
	const __u8 *lens;
	__u32 shift, zero = 0, svc, i, own, all;
	void *table;

	/* the family's fields by arithmetic, not a branch: the verifier walks the loop below once for
	 * both families (a branch made it walk it twice: half the time of loading the program). v6 is
	 * 0 or 1; the IPv6 fields follow the IPv4 ones at fixed distances (struct skl_port). */
	v6 &= 1;
	lens = pv->lens4 + v6 * SKL_MAX_LENS;
	own = (&pv->own4)[v6 * 2];
	all = (&pv->all4)[v6 * 2];
	shift = v6 * SKL_PORT_V6_SHIFT;
	if (lens[0]) {
		table = bpf_map_lookup_elem(&binding_tables, &zero);
		if (table) {
			key.proto = proto;
			key.family = 4 + 2 * v6;
			key.port = port;
			key_all.proto = proto;
			key_all.family = key.family;
			/* longest first; on a tie the port's own binding before "all ports" */
			for (i = 0; i < SKL_MAX_LENS; i++) {
				__u32 len = lens[i];

				if (!len)
					break;
				__u32 o = own >> i, l = all >> i;

				/* copies the verifier learns bits of, not `own`/`all` themselves: what it
				 * learns would make every way through the loop a state of its own */
				asm volatile("" : "+r"(o), "+r"(l));
				key.prefixlen = 32 + len;
				key_all.prefixlen = 32 + len;
				mask_addr(&key, &key_all, a, len);
				if (o & 1) {
					b = bpf_map_lookup_elem(table, &key);
					if (b)
						return b->service + 1;
				}
				if (l & 1) {
					b = bpf_map_lookup_elem(table, &key_all);
					if (b)
						return b->service + 1;
				}
			}
		}
	}
	/* any-address bindings (prefix length 0): explicit port, then all ports */
	svc = (pv->services >> shift) & SKL_PORT_SVC_MASK;
	if (!svc)
		svc = (av->services >> shift) & SKL_PORT_SVC_MASK;
	return svc;
}

/* A destination's socket, or a spare one when it is gone (a reuseport member that closed). */
static __always_inline struct bpf_sock *dest_socket(__u32 dest)
{
	struct bpf_sock *sk;
	__u32 k, i;

	sk = bpf_map_lookup_elem(&target_socket, &dest);
	if (sk)
		return sk;
#pragma unroll
	for (k = 0; k < SKL_SPARES; k++) {
		i = dest * SKL_SPARES + k;
		sk = bpf_map_lookup_elem(&spare_socket, &i);
		if (sk)
			return sk;
	}
	return 0;
}

static __always_inline void flow_key(struct skl_flow_key *k, __u8 family, const struct addr *client, __u32 client_port,
				     const struct addr *local, __u32 service_port)
{
	k->family = family;
	k->client_port = client_port;
	k->service_port = service_port;
	__builtin_memcpy(k->client, client, 16);
	__builtin_memcpy(k->local, local, 16);
}

/* The lookup's addresses (an IPv4 address in w[0], the rest zero), without a branch on the family:
 * the context reads the other family's fields as zero (an IPv4 lookup has no IPv6 addresses, an
 * IPv6 one no IPv4 ones), so both are read and or-ed. One way through for both families: a branch
 * here made the verifier walk everything after it twice. (volatile: each field read at its own
 * constant offset, as the verifier requires of context reads.) */
static __always_inline void lookup_addrs(struct bpf_sk_lookup *ctx, struct addr *local, struct addr *remote)
{
	local->w[0] = *(volatile __u32 *)&ctx->local_ip4 | *(volatile __u32 *)&ctx->local_ip6[0];
	local->w[1] = *(volatile __u32 *)&ctx->local_ip6[1];
	local->w[2] = *(volatile __u32 *)&ctx->local_ip6[2];
	local->w[3] = *(volatile __u32 *)&ctx->local_ip6[3];
	remote->w[0] = *(volatile __u32 *)&ctx->remote_ip4 | *(volatile __u32 *)&ctx->remote_ip6[0];
	remote->w[1] = *(volatile __u32 *)&ctx->remote_ip6[1];
	remote->w[2] = *(volatile __u32 *)&ctx->remote_ip6[2];
	remote->w[3] = *(volatile __u32 *)&ctx->remote_ip6[3];
}

/* resolve() for a lookup. A global function: the verifier checks it once, on its own, instead of
 * walking every way through its loops again for every way through the program after it. */
__noinline int lookup_service(struct bpf_sk_lookup *ctx)
{
	struct addr local = {}, remote = {};
	struct skl_port *pv, *av;
	__u32 idx, all;
	/* TCP (6) or UDP (17), the only protocols sk_dispatch calls this for: bit 4 tells them apart
	 * without a branch (SKL_PROTO_TCP 0, SKL_PROTO_UDP 1), so the verifier walks what follows once */
	__u8 proto = (ctx->protocol >> 4) & 1;

	idx = ((__u32)proto << 16) | (ctx->local_port & 0xffff);
	all = (__u32)proto << 16;
	pv = bpf_map_lookup_elem(&add_ports, &idx);
	av = bpf_map_lookup_elem(&add_ports, &all);
	if (!pv || !av)
		return 0;
	lookup_addrs(ctx, &local, &remote);
	/* AF_INET 2, AF_INET6 10: bit 3 tells them apart without a branch */
	return resolve(proto, (ctx->family >> 3) & 1, &local, ctx->local_port, pv, av);
}

SEC("sk_lookup")
int sk_dispatch(struct bpf_sk_lookup *ctx)
{
	__u32 idx, all, svc, dest, zero = 0, v6;
	__u8 proto, family;
	struct skl_port *pv, *av;
	struct skl_service *s;
	struct skl_counters *cnt;
	struct bpf_sock *sk;
	struct addr local = {}, remote = {};
	struct skl_flow_key fk = {};

	if (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP)
		return SK_PASS;
	/* TCP (6) or UDP (17): bit 4 tells them apart (SKL_PROTO_TCP 0, SKL_PROTO_UDP 1). Read again,
	 * and the family the same way (AF_INET 2, AF_INET6 10: bit 3), so that the verifier walks
	 * what follows once, not once per protocol and family (the comparisons above, and a branch on
	 * the family, would each keep two ways through it apart) */
	proto = (*(volatile __u32 *)&ctx->protocol >> 4) & 1;
	v6 = (*(volatile __u32 *)&ctx->family >> 3) & 1;
	family = 4 + 2 * v6;

	idx = ((__u32)proto << 16) | (ctx->local_port & 0xffff);
	pv = bpf_map_lookup_elem(&add_ports, &idx);
	if (!pv)
		return SK_PASS;
	all = (__u32)proto << 16;
	av = bpf_map_lookup_elem(&add_ports, &all);
	if (!av)
		return SK_PASS;
	if (!(pv->services | pv->lens4[0] | pv->lens6[0] | av->services))
		return SK_PASS;

	/* a datagram straight to a service's own port: its replies are not to be rewritten (the
	 * addresses are read only where they are needed: a TCP connection never reads them here) */
	if (pv->services & SKL_PORT_F_REPLY) {
		lookup_addrs(ctx, &local, &remote);
		flow_key(&fk, family, &remote, ctx->remote_port & 0xffff, &local, bpf_htons(ctx->local_port));
		bpf_map_delete_elem(&udp_flows, &fk);
	}

	svc = lookup_service(ctx);
	if (!svc)
		return SK_PASS;
	svc -= 1;

	/* half-made services (an skl interrupted while writing them) never steer */
	s = bpf_map_lookup_elem(&services, &svc);
	if (!s || s->state != SKL_SVC_READY) {
		/* never true (svc < SKL_MAX_SERVICES): these make the maps only userspace and the
		 * other programs use maps of this program too, so a foreground dispatcher's maps can
		 * all be found from its link */
		if (!s) {
			__u64 id = 0;

			bpf_map_lookup_elem(&skl_info, &zero);
			bpf_map_lookup_elem(&follow, &fk);
			bpf_map_lookup_elem(&follow_cgroups, &id);
			bpf_map_lookup_elem(&spare_next, &zero);
		}
		return SK_PASS;
	}
	cnt = bpf_map_lookup_elem(&counters, &svc);
	if (!cnt)
		return SK_PASS;

	dest = svc * SKL_DESTS_PER_SERVICE + proto * 2 + v6;
	sk = dest_socket(dest);
	if (!sk) {
		cnt->missed++;
		return SK_PASS;
	}
	if (bpf_sk_assign(ctx, sk, 0)) {
		cnt->missed++;
		bpf_sk_release(sk);
		return SK_PASS;
	}
	cnt->redirected++;

	/* UDP from an extra port: remember the flow, so the reply leaves from that port too */
	if (proto == SKL_PROTO_UDP && (s->flags & SKL_SVC_F_UDP_REPLIES) && sk->src_port != ctx->local_port) {
		struct skl_flow f = {};
		struct skl_reply_counters *rc;

		lookup_addrs(ctx, &local, &remote);
		flow_key(&fk, family, &remote, ctx->remote_port & 0xffff, &local, bpf_htons(sk->src_port));
		f.last_ns = bpf_ktime_get_ns();
		f.service = svc;
		f.port = bpf_htons(ctx->local_port);
		bpf_map_update_elem(&udp_flows, &fk, &f, BPF_ANY);
		rc = bpf_map_lookup_elem(&reply_counters, &svc);
		if (rc)
			rc->flows++;
	}
	bpf_sk_release(sk);
	return SK_PASS;
}

/* Store a followed service's new socket in its destination and in its next spare. */
static __always_inline void count_retaken(__u32 service)
{
	struct skl_counters *cnt = bpf_map_lookup_elem(&counters, &service);

	if (cnt)
		cnt->retaken++;
}

/* The spare slot a followed service's new socket replaces when every slot holds a socket. */
static __always_inline __u32 next_spare(__u32 dest)
{
	__u32 n, *next = bpf_map_lookup_elem(&spare_next, &dest);

	if (!next)
		return dest * SKL_SPARES;
	/* not atomic: two CPUs racing only pick the same slot */
	n = *next;
	*next = n + 1;
	return dest * SKL_SPARES + n % SKL_SPARES;
}

/* Also keep the new socket among the destination's spares: in a slot whose socket closed (the
 * kernel empties it), so that the members of a reuseport group that still listen stay there, else
 * in the next slot in turn. BPF_NOEXIST fills only an empty slot (sock_ops cannot look a SOCKMAP
 * entry up: it has no bpf_sk_release). */
static __always_inline void store_spare_ops(struct bpf_sock_ops *skops, __u32 dest)
{
	__u32 k, i;

#pragma unroll
	for (k = 0; k < SKL_SPARES; k++) {
		i = dest * SKL_SPARES + k;
		if (!bpf_sock_map_update(skops, &spare_socket, &i, BPF_NOEXIST))
			return;
	}
	i = next_spare(dest);
	bpf_sock_map_update(skops, &spare_socket, &i, BPF_ANY);
}

/* On a followed cgroup: when a process there starts listening on a followed listener in the
 * dispatcher's network namespace, store the new socket as the service's (no skl process needed).
 * Never a socket of another namespace (the kernel would accept it, and clients would hang). */
SEC("sockops")
int sk_follow(struct bpf_sock_ops *skops)
{
	struct skl_follow_key key = {};
	struct skl_follow *f;
	__u32 dest;

	if (skops->op != BPF_SOCK_OPS_TCP_LISTEN_CB)
		return 1;
	key.port = skops->local_port;
	if (skops->family == AF_INET) {
		__u32 a = skops->local_ip4;
		key.family = 4;
		__builtin_memcpy(&key.addr[0], &a, 4);
	} else if (skops->family == AF_INET6) {
		__u32 a0 = skops->local_ip6[0], a1 = skops->local_ip6[1];
		__u32 a2 = skops->local_ip6[2], a3 = skops->local_ip6[3];
		key.family = 6;
		__builtin_memcpy(&key.addr[0], &a0, 4);
		__builtin_memcpy(&key.addr[4], &a1, 4);
		__builtin_memcpy(&key.addr[8], &a2, 4);
		__builtin_memcpy(&key.addr[12], &a3, 4);
	} else {
		return 1;
	}
	f = bpf_map_lookup_elem(&follow, &key);
	if (!f)
		return 1;
	if (bpf_get_netns_cookie(skops) != f->netns_cookie)
		return 1;
	if (f->service >= SKL_MAX_SERVICES)
		return 1;
	if (f->dests & SKL_FOLLOW_D_V4) {
		dest = f->service * SKL_DESTS_PER_SERVICE + SKL_PROTO_TCP * 2;
		bpf_sock_map_update(skops, &target_socket, &dest, BPF_ANY);
		store_spare_ops(skops, dest);
	}
	if (f->dests & SKL_FOLLOW_D_V6) {
		dest = f->service * SKL_DESTS_PER_SERVICE + SKL_PROTO_TCP * 2 + 1;
		bpf_sock_map_update(skops, &target_socket, &dest, BPF_ANY);
		store_spare_ops(skops, dest);
	}
	count_retaken(f->service);
	return 1;
}

/* A UDP datagram's headers as the tc programs see them (Ethernet-like devices and loopback). */
struct udp_packet {
	__u8 family;
	__u32 l4; /* offset of the UDP header */
	struct addr src, dst;
	__u16 sport, dport; /* network order */
	__u16 check;
};

/* Parse an unfragmented UDP datagram, or the first fragment of one (later fragments carry no
 * UDP header: nothing in them names a port). 0 = not one. */
static __always_inline int parse_udp(struct __sk_buff *skb, struct udp_packet *p)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct udphdr *udp;

	if ((void *)(eth + 1) > end)
		return 0;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_UDP || ip->ihl < 5)
			return 0;
		if (ip->frag_off & bpf_htons(0x1fff))
			return 0;
		p->family = 4;
		p->l4 = sizeof(*eth) + ip->ihl * 4;
		p->src.w[0] = ip->saddr;
		p->dst.w[0] = ip->daddr;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end)
			return 0;
		p->l4 = sizeof(*eth) + sizeof(*ip6);
		if (ip6->nexthdr == NEXTHDR_FRAGMENT) {
			/* the fragment header: next header, reserved, offset + flags, id */
			__u8 *frag = (void *)(ip6 + 1);

			if ((void *)(frag + 8) > end || frag[0] != IPPROTO_UDP)
				return 0;
			if (((frag[2] << 8) | frag[3]) & 0xfff8)
				return 0;
			p->l4 += 8;
		} else if (ip6->nexthdr != IPPROTO_UDP) {
			return 0;
		}
		p->family = 6;
		__builtin_memcpy(&p->src, &ip6->saddr, 16);
		__builtin_memcpy(&p->dst, &ip6->daddr, 16);
	} else {
		return 0;
	}
	if (p->l4 > 128)
		return 0;
	udp = data + p->l4;
	if ((void *)(udp + 1) > end)
		return 0;
	p->sport = udp->source;
	p->dport = udp->dest;
	p->check = udp->check;
	return 1;
}

/* On a followed cgroup: tag each UDP socket created there with the followed cgroup it is in, so
 * that sk_follow_udp can tell the service's new socket from an impostor's. */
SEC("cgroup/sock_create")
int sk_follow_sock(struct bpf_sock *sk)
{
	__u64 id, *tag;
	int level;

	if (sk->protocol != IPPROTO_UDP)
		return 1;
	for (level = MAX_CGROUP_LEVELS - 1; level >= 0; level--) {
		id = bpf_get_current_ancestor_cgroup_id(level);
		if (id && bpf_map_lookup_elem(&follow_cgroups, &id)) {
			tag = bpf_sk_storage_get(&sock_cgroup, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
			if (tag)
				*tag = id;
			return 1;
		}
	}
	return 1;
}

/* resolve() for a UDP datagram's destination (a global function, as lookup_service). */
__noinline int packet_service(struct __sk_buff *skb)
{
	struct udp_packet p = {};
	struct skl_port *pv, *av;
	__u32 idx, all;

	if (!skb || !parse_udp(skb, &p))
		return 0;
	idx = ((__u32)SKL_PROTO_UDP << 16) | bpf_ntohs(p.dport);
	all = (__u32)SKL_PROTO_UDP << 16;
	pv = bpf_map_lookup_elem(&add_ports, &idx);
	av = bpf_map_lookup_elem(&add_ports, &all);
	if (!pv || !av)
		return 0;
	return resolve(SKL_PROTO_UDP, p.family == 6, &p.dst, bpf_ntohs(p.dport), pv, av);
}

/* tc ingress: a datagram for a followed UDP service whose socket is gone (it restarted). No cgroup
 * hook can store a UDP socket; this finds the service's new socket by its listener (in this
 * namespace only: the lookup never leaves it) and stores it before the dispatcher steers the
 * datagram — if it was created in the followed cgroup (sk_follow_sock tagged it): an impostor
 * outside it is never used. */
SEC("tc")
int sk_follow_udp(struct __sk_buff *skb)
{
	struct udp_packet p = {};
	struct skl_port *pv, *av;
	struct skl_service *s;
	struct skl_socket_meta *m;
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	__u32 idx, all, svc, dest, d, spare, k;
	__u64 *tag;

	if (!parse_udp(skb, &p))
		return TC_NEXT;
	idx = ((__u32)SKL_PROTO_UDP << 16) | bpf_ntohs(p.dport);
	pv = bpf_map_lookup_elem(&add_ports, &idx);
	all = (__u32)SKL_PROTO_UDP << 16;
	av = bpf_map_lookup_elem(&add_ports, &all);
	if (!pv || !av)
		return TC_NEXT;
	if (!(pv->services | pv->lens4[0] | pv->lens6[0] | av->services))
		return TC_NEXT;
	svc = packet_service(skb);
	if (!svc)
		return TC_NEXT;
	svc -= 1;
	s = bpf_map_lookup_elem(&services, &svc);
	if (!s || s->state != SKL_SVC_READY || !(s->flags & SKL_SVC_F_FOLLOW))
		return TC_NEXT;
	d = SKL_PROTO_UDP * 2 + (p.family == 6);
	dest = svc * SKL_DESTS_PER_SERVICE + d;
	sk = dest_socket(dest);
	if (sk) {
		bpf_sk_release(sk);
		return TC_NEXT;
	}
	m = &s->sockets[d & 3];
	if (!(m->flags & SKL_SOCK_F_USED))
		return TC_NEXT;
	/* the listener's own address, or the datagram's when it listens on the wildcard address */
	if (p.family == 4) {
		__u32 a;

		__builtin_memcpy(&a, &m->listen_addr[12], 4);
		t.ipv4.saddr = p.src.w[0];
		t.ipv4.daddr = a ? a : p.dst.w[0];
		t.ipv4.sport = p.sport;
		t.ipv4.dport = bpf_htons(m->listen_port);
		sk = bpf_sk_lookup_udp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	} else {
		struct addr a;

		__builtin_memcpy(&a, m->listen_addr, 16);
		__builtin_memcpy(t.ipv6.saddr, &p.src, 16);
		if (a.w[0] | a.w[1] | a.w[2] | a.w[3])
			__builtin_memcpy(t.ipv6.daddr, &a, 16);
		else
			__builtin_memcpy(t.ipv6.daddr, &p.dst, 16);
		t.ipv6.sport = p.sport;
		t.ipv6.dport = bpf_htons(m->listen_port);
		sk = bpf_sk_lookup_udp(skb, &t, sizeof(t.ipv6), BPF_F_CURRENT_NETNS, 0);
	}
	if (!sk)
		return TC_NEXT;
	tag = bpf_sk_storage_get(&sock_cgroup, sk, 0, 0);
	if (sk->src_port == m->listen_port && tag && *tag == s->cgroup_ino) {
		if (!bpf_map_update_elem(&target_socket, &dest, sk, BPF_ANY)) {
			/* among the spares too (as store_spare_ops) */
			for (k = 0; k < SKL_SPARES; k++) {
				spare = dest * SKL_SPARES + k;
				if (!bpf_map_update_elem(&spare_socket, &spare, sk, BPF_NOEXIST))
					break;
			}
			if (k == SKL_SPARES) {
				spare = next_spare(dest);
				bpf_map_update_elem(&spare_socket, &spare, sk, BPF_ANY);
			}
			count_retaken(svc);
		}
	}
	bpf_sk_release(sk);
	return TC_NEXT;
}

/* tc egress: a service's reply to a flow that came in on an extra port leaves from that port.
 * The UDP checksum covers the port: fixed incrementally, a zero IPv4 checksum (none) left zero;
 * a GSO batch (UDP_SEGMENT) carries a partial checksum that does not cover the port, the port
 * alone is rewritten in it. */
SEC("tc")
int sk_reply(struct __sk_buff *skb)
{
	struct udp_packet p = {};
	struct skl_port *pv;
	struct skl_flow_key k = {};
	struct skl_flow *f;
	struct skl_service *s;
	struct skl_reply_counters *rc;
	__u32 idx, svc;
	__u16 port;
	__u64 now;

	if (!parse_udp(skb, &p))
		return TC_NEXT;
	idx = ((__u32)SKL_PROTO_UDP << 16) | bpf_ntohs(p.sport);
	pv = bpf_map_lookup_elem(&add_ports, &idx);
	if (!pv || !(pv->services & SKL_PORT_F_REPLY))
		return TC_NEXT;
	flow_key(&k, p.family, &p.dst, p.dport, &p.src, p.sport);
	f = bpf_map_lookup_elem(&udp_flows, &k);
	if (!f)
		return TC_NEXT;
	now = bpf_ktime_get_ns();
	svc = f->service;
	s = bpf_map_lookup_elem(&services, &svc);
	/* an idle flow, or one of a service since detached or changed, is forgotten */
	if (now - f->last_ns > SKL_FLOW_IDLE_NS || !s || s->state != SKL_SVC_READY || !(s->flags & SKL_SVC_F_UDP_REPLIES)) {
		bpf_map_delete_elem(&udp_flows, &k);
		return TC_NEXT;
	}
	port = f->port;
	f->last_ns = now;
	if (!skb->gso_size && (p.family == 6 || p.check))
		bpf_l4_csum_replace(skb, p.l4 + offsetof(struct udphdr, check), p.sport, port,
				    BPF_F_MARK_MANGLED_0 | sizeof(port));
	bpf_skb_store_bytes(skb, p.l4 + offsetof(struct udphdr, source), &port, sizeof(port), 0);
	rc = bpf_map_lookup_elem(&reply_counters, &svc);
	if (rc)
		rc->rewritten++;
	return TC_NEXT;
}

char _license[] SEC("license") = "Dual BSD/GPL";
