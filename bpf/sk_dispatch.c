// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* skl's sk_lookup dispatcher: steers connections (TCP) and datagrams (UDP) for extra ports to a
 * target process's own socket. One instance per network namespace, shared by all attachments. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "headers/skl.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

/* (protocol, port) -> (flags << 16) | (slot + 1). An ARRAY: one O(1) lookup, inlined by the JIT.
 * Memory-mappable, so that userspace reads and writes all 131,072 entries as plain memory (≈1 ms)
 * instead of one BPF_MAP_*_BATCH syscall that copies them one by one (≈15-50 ms). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, SKL_PORT_ENTRIES);
	__type(key, __u32);
	__type(value, __u32);
} add_ports SEC(".maps");

/* slot -> target socket. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, SKL_MAX_TARGETS);
	__type(key, __u32);
	__type(value, __u64);
} target_socket SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SKL_MAX_TARGETS);
	__type(key, __u32);
	__type(value, struct skl_counters);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct skl_addr_key);
	__type(value, __u8);
} allowed_addrs SEC(".maps");

/* Userspace's record of each slot (only touched by the program on a corrupt slot). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SKL_MAX_TARGETS);
	__type(key, __u32);
	__type(value, struct skl_target_meta);
} target_meta SEC(".maps");

static __always_inline int local_addr_allowed(struct bpf_sk_lookup *ctx, __u32 slot)
{
	struct skl_addr_key key = {};

	key.prefixlen = 32 + 128;
	key.slot = slot;
	if (ctx->family == AF_INET) {
		__u32 a = ctx->local_ip4;
		key.addr[10] = 0xff;
		key.addr[11] = 0xff;
		__builtin_memcpy(&key.addr[12], &a, 4);
	} else {
		__u32 a0 = ctx->local_ip6[0], a1 = ctx->local_ip6[1];
		__u32 a2 = ctx->local_ip6[2], a3 = ctx->local_ip6[3];
		__builtin_memcpy(&key.addr[0], &a0, 4);
		__builtin_memcpy(&key.addr[4], &a1, 4);
		__builtin_memcpy(&key.addr[8], &a2, 4);
		__builtin_memcpy(&key.addr[12], &a3, 4);
	}
	return bpf_map_lookup_elem(&allowed_addrs, &key) != NULL;
}

SEC("sk_lookup")
int sk_dispatch(struct bpf_sk_lookup *ctx)
{
	__u32 idx, entry, slot, want;
	__u32 *value;
	struct skl_counters *cnt;
	struct bpf_sock *sk;

	if (ctx->protocol == IPPROTO_TCP)
		idx = ctx->local_port;
	else if (ctx->protocol == IPPROTO_UDP)
		idx = (SKL_PROTO_UDP << 16) | (ctx->local_port & 0xffff);
	else
		return SK_PASS;

	value = bpf_map_lookup_elem(&add_ports, &idx);
	if (!value || !*value)
		return SK_PASS;
	entry = *value;

	want = ctx->family == AF_INET ? SKL_PORT_F_V4 : SKL_PORT_F_V6;
	if (!(entry & want))
		return SK_PASS;

	slot = (entry & SKL_PORT_SLOT_MASK) - 1;
	cnt = bpf_map_lookup_elem(&counters, &slot);
	if (!cnt) {
		/* Slot out of range (never written by skl). Touching target_meta here also makes it one
		 * of the program's maps, so a foreground dispatcher's metadata can be found from its
		 * link alone. */
		bpf_map_lookup_elem(&target_meta, &slot);
		return SK_PASS;
	}

	if ((entry & SKL_PORT_F_FILTER) && !local_addr_allowed(ctx, slot)) {
		cnt->filtered++;
		return SK_PASS;
	}

	sk = bpf_map_lookup_elem(&target_socket, &slot);
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

char _license[] SEC("license") = "Dual BSD/GPL";
