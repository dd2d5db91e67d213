// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* skl's XDP packet counter: counts packets and bytes received on an interface, per CPU (no atomic
 * contention; userspace sums), and always passes the packet on. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct xdp_counters {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xdp_counters);
} xdp_stats SEC(".maps");

SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
	__u32 key = 0;
	struct xdp_counters *c = bpf_map_lookup_elem(&xdp_stats, &key);

	if (c) {
		c->packets++;
		c->bytes += ctx->data_end - ctx->data;
	}
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";
