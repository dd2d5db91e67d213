// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* Baseline for benchmarks: the cheapest XDP program, passing every packet. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_empty(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";
