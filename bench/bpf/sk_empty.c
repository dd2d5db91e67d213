// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* Baseline for benchmarks: the cheapest sk_lookup program (the floor), passing every lookup on to
 * the kernel's normal socket lookup. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("sk_lookup")
int sk_empty(struct bpf_sk_lookup *ctx)
{
	return SK_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";
