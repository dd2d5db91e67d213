/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* Shared definitions between skl's eBPF programs and its userspace (src/dispatcher/layout.ts
 * mirrors these; a unit test checks both agree with the BTF of the compiled object). */
#ifndef SKL_H
#define SKL_H

/* Number of target slots (sockets) one dispatcher can hold. */
#define SKL_MAX_TARGETS 256
/* add_ports index = (protocol index << 16) | port. */
#define SKL_PROTO_TCP 0
#define SKL_PROTO_UDP 1
#define SKL_PORT_ENTRIES (2 * 65536)

/* add_ports value: 0 = port not claimed, else (flags << 16) | (slot + 1). */
#define SKL_PORT_SLOT_MASK 0xffff
#define SKL_PORT_F_V4 (1u << 16)     /* target socket accepts IPv4 (AF_INET or dual-stack AF_INET6) */
#define SKL_PORT_F_V6 (1u << 17)     /* target socket accepts IPv6 */
#define SKL_PORT_F_FILTER (1u << 18) /* only local addresses in allowed_addrs */

/* Per-CPU counters of a slot. */
struct skl_counters {
	__u64 redirected; /* connections/datagrams steered to the target socket */
	__u64 missed;     /* port claimed but the target socket is gone or refused */
	__u64 filtered;   /* port claimed but local address not in the filter */
};

/* allowed_addrs key: slot, then an IPv6 address (IPv4 as ::ffff:a.b.c.d).
 * prefixlen counts the slot's 32 bits too. */
struct skl_addr_key {
	__u32 prefixlen;
	__u32 slot;
	__u8 addr[16];
};

/* Userspace-only metadata of a slot, so `skl status` can rebuild everything from the pins. */
struct skl_target_meta {
	__u32 in_use;     /* 1 when the slot holds an attachment */
	__u32 pid;        /* target process */
	__u32 proto;      /* SKL_PROTO_* */
	__u32 family;     /* AF_INET / AF_INET6 of the target socket */
	__u32 v6only;
	__u32 listen_port;
	__u8 listen_addr[16];
	__u64 sock_ino;   /* inode of the target socket (to tell whether it is alive) */
	__u64 created_ns; /* CLOCK_REALTIME, ns */
	__u64 netns_ino;
	__u32 owner_pid;  /* skl --foreground process owning this slot, 0 when persistent */
	__u32 nfilters;
	char comm[16];
	char name[64];
};

#endif
