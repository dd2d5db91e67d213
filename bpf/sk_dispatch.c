// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* skl's sk_lookup dispatcher: steers connections (TCP) and datagrams (UDP) to services' own
 * sockets, by bindings (protocol, local prefix, port) -> service. One instance per network
 * namespace, shared by all services. Precedence: the longest prefix wins; on equal prefixes an
 * explicit port beats "all ports". */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "headers/skl.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

/* (protocol, port) -> any-address services and prefix flags (see skl.h). An ARRAY: one O(1)
 * lookup, inlined by the JIT. Memory-mappable, so userspace reads and writes all 131,072 entries
 * as plain memory instead of one syscall per entry. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, SKL_PORT_ENTRIES);
	__type(key, __u32);
	__type(value, __u32);
} add_ports SEC(".maps");

/* Prefix bindings. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, SKL_MAX_BINDINGS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct skl_binding_key);
	__type(value, struct skl_binding);
} bindings SEC(".maps");

/* Host bindings: a whole local address. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SKL_MAX_HOST_BINDINGS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct skl_binding_key);
	__type(value, struct skl_binding);
} host_bindings SEC(".maps");

/* service * 4 + protocol * 2 + (family == 6) -> socket. A dual-stack IPv6 socket that serves
 * IPv4 is stored under the IPv4 index too. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, SKL_MAX_DESTS);
	__type(key, __u32);
	__type(value, __u64);
} target_socket SEC(".maps");

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

/* Userspace-only (referenced below so it is one of the program's maps: a foreground dispatcher's
 * layout can be found from its link alone). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct skl_info);
} skl_info SEC(".maps");

/* The lookup's key: (protocol, family, port, the whole local address). The same key finds host
 * bindings in the hash (stored with this length) and the longest prefix in the trie. */
static __always_inline void lookup_key(struct bpf_sk_lookup *ctx, struct skl_binding_key *key, __u8 proto)
{
	key->proto = proto;
	if (ctx->family == AF_INET) {
		__u32 a = ctx->local_ip4;
		key->prefixlen = 32 + 32;
		key->family = 4;
		__builtin_memcpy(&key->addr[0], &a, 4);
	} else {
		__u32 a0 = ctx->local_ip6[0], a1 = ctx->local_ip6[1];
		__u32 a2 = ctx->local_ip6[2], a3 = ctx->local_ip6[3];
		key->prefixlen = 32 + 128;
		key->family = 6;
		__builtin_memcpy(&key->addr[0], &a0, 4);
		__builtin_memcpy(&key->addr[4], &a1, 4);
		__builtin_memcpy(&key->addr[8], &a2, 4);
		__builtin_memcpy(&key->addr[12], &a3, 4);
	}
}

SEC("sk_lookup")
int sk_dispatch(struct bpf_sk_lookup *ctx)
{
	__u32 idx, all, port_v, all_v, svc = 0, best = 0, shift, pflag, hflag, dest;
	__u32 *value;
	__u8 proto;
	struct skl_binding_key key = {};
	struct skl_binding *b;
	struct skl_service *s;
	struct skl_counters *cnt;
	struct bpf_sock *sk;

	if (ctx->protocol == IPPROTO_TCP)
		proto = SKL_PROTO_TCP;
	else if (ctx->protocol == IPPROTO_UDP)
		proto = SKL_PROTO_UDP;
	else
		return SK_PASS;

	idx = ((__u32)proto << 16) | (ctx->local_port & 0xffff);
	value = bpf_map_lookup_elem(&add_ports, &idx);
	if (!value)
		return SK_PASS;
	port_v = *value;
	all = (__u32)proto << 16;
	value = bpf_map_lookup_elem(&add_ports, &all);
	if (!value)
		return SK_PASS;
	all_v = *value;
	if (!(port_v | all_v))
		return SK_PASS;

	if (ctx->family == AF_INET) {
		shift = 0;
		pflag = SKL_PORT_F_PREFIX_V4;
		hflag = SKL_PORT_F_HOST_V4;
	} else {
		shift = SKL_PORT_V6_SHIFT;
		pflag = SKL_PORT_F_PREFIX_V6;
		hflag = SKL_PORT_F_HOST_V6;
	}

	if ((port_v | all_v) & (pflag | hflag))
		lookup_key(ctx, &key, proto);

	/* host bindings: the longest prefix there is; the explicit port first */
	if (port_v & hflag) {
		key.port = ctx->local_port;
		b = bpf_map_lookup_elem(&host_bindings, &key);
		if (b) {
			svc = b->service + 1;
			goto found;
		}
	}
	if (all_v & hflag) {
		key.port = 0;
		b = bpf_map_lookup_elem(&host_bindings, &key);
		if (b) {
			svc = b->service + 1;
			goto found;
		}
	}

	/* prefix bindings: the longest match, the explicit port on a tie */
	if (port_v & pflag) {
		key.port = ctx->local_port;
		b = bpf_map_lookup_elem(&bindings, &key);
		if (b) {
			svc = b->service + 1;
			best = b->prefixlen;
		}
	}
	if (all_v & pflag) {
		key.port = 0;
		b = bpf_map_lookup_elem(&bindings, &key);
		if (b && (!svc || b->prefixlen > best))
			svc = b->service + 1;
	}
	/* any-address bindings (prefix length 0): explicit port, then all ports */
	if (!svc)
		svc = (port_v >> shift) & SKL_PORT_SVC_MASK;
	if (!svc)
		svc = (all_v >> shift) & SKL_PORT_SVC_MASK;
	if (!svc)
		return SK_PASS;
found:
	svc -= 1;

	/* half-made services (an skl interrupted while writing them) never steer */
	s = bpf_map_lookup_elem(&services, &svc);
	if (!s || s->state != SKL_SVC_READY) {
		/* never true (svc < SKL_MAX_SERVICES): these make skl_info and follow maps of this
		 * program, so a foreground dispatcher's maps can all be found from its link */
		if (!s) {
			bpf_map_lookup_elem(&skl_info, &idx);
			bpf_map_lookup_elem(&follow, &key);
		}
		return SK_PASS;
	}
	cnt = bpf_map_lookup_elem(&counters, &svc);
	if (!cnt)
		return SK_PASS;

	dest = svc * SKL_DESTS_PER_SERVICE + proto * 2 + (ctx->family == AF_INET6);
	sk = bpf_map_lookup_elem(&target_socket, &dest);
	if (!sk) {
		cnt->missed++;
		return SK_PASS;
	}
	if (bpf_sk_assign(ctx, sk, 0))
		cnt->missed++;
	else
		cnt->redirected++;
	bpf_sk_release(sk);
	return SK_PASS;
}

/* On a followed cgroup: when a process there starts listening on a followed listener in the
 * dispatcher's network namespace, store the new socket as the service's (no skl process needed).
 * Never a socket of another namespace (the kernel would accept it, and clients would hang). */
SEC("sockops")
int sk_follow(struct bpf_sock_ops *skops)
{
	struct skl_follow_key key = {};
	struct skl_follow *f;
	struct skl_counters *cnt;
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
	}
	if (f->dests & SKL_FOLLOW_D_V6) {
		dest = f->service * SKL_DESTS_PER_SERVICE + SKL_PROTO_TCP * 2 + 1;
		bpf_sock_map_update(skops, &target_socket, &dest, BPF_ANY);
	}
	cnt = bpf_map_lookup_elem(&counters, &f->service);
	if (cnt)
		cnt->retaken++;
	return 1;
}

char _license[] SEC("license") = "Dual BSD/GPL";
