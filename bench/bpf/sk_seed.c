// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The seed's design, for comparison in benchmarks: a HASH `add_ports` of up to 1024 ports
 * (u16 port -> u8) and a 1-entry SOCKMAP `target_socket`; a claimed port is assigned to that one
 * socket. No protocol or family check (as in the seed). */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u16);
	__type(value, __u8);
} add_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} target_socket SEC(".maps");

SEC("sk_lookup")
int redir_port(struct bpf_sk_lookup *ctx)
{
	__u16 port = ctx->local_port;
	__u32 zero = 0;
	struct bpf_sock *sk;
	long err;

	if (!bpf_map_lookup_elem(&add_ports, &port))
		return SK_PASS;

	sk = bpf_map_lookup_elem(&target_socket, &zero);
	if (!sk)
		return SK_PASS;

	err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	return err ? SK_DROP : SK_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";
