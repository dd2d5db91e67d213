/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* Shared definitions between skl's eBPF programs and its userspace (src/dispatcher/layout.ts
 * mirrors these; a unit test checks both agree with the BTF of the compiled object). */
#ifndef SKL_H
#define SKL_H

/* Version of the pinned state's layout (maps, their keys and values, the program's contract).
 * 0 = skl 0.1.0 (no skl_info map). Bump on any incompatible change; `skl upgrade` migrates. */
#define SKL_LAYOUT 3

/* Services one dispatcher can hold, and their sockets: one per (protocol, family). */
#define SKL_MAX_SERVICES 1024
#define SKL_DESTS_PER_SERVICE 4
#define SKL_MAX_DESTS (SKL_MAX_SERVICES * SKL_DESTS_PER_SERVICE)
/* Bindings of a local prefix (not the any-address ones, which live in add_ports): one hash of
 * (protocol, family, port, prefix) -> service, created when the first one is added. The prefix
 * lengths in use per (protocol, port, family) are listed in add_ports, longest first, so a lookup
 * costs one hash lookup per length in use (usually one) instead of an LPM trie walk. */
#define SKL_MAX_BINDINGS 1000000
#define SKL_MAX_LENS 8 /* distinct prefix lengths per (protocol, port, family) */

#define SKL_PROTO_TCP 0
#define SKL_PROTO_UDP 1
/* add_ports index = (protocol << 16) | port; port 0 = the protocol's "all ports" bindings. */
#define SKL_PORT_ENTRIES (2 * 65536)

/* add_ports value: `services` holds the services of the any-address bindings of (protocol, port),
 * per family, as service + 1 (0 = none), and flags; `lens4`/`lens6` the prefix lengths of the
 * bindings of a local prefix that can match on this port (1..32 / 1..128, longest first, 0 = end
 * of list): the port's own and the "all ports" ones (those of port 0, copied into every port), at
 * most SKL_MAX_LENS in all; bit i of `own4`/`own6` says lens[i] has bindings of this very port,
 * bit i of `all4`/`all6` that it has "all ports" bindings. One pass over the list, longest first,
 * the port's own before "all ports" on a tie, is the precedence.
 * All zero = nothing bound on this port: the common miss costs one array lookup. */
#define SKL_PORT_SVC_BITS 12
#define SKL_PORT_SVC_MASK 0xfff
#define SKL_PORT_V6_SHIFT 12
#define SKL_PORT_F_REPLY (1u << 24) /* UDP: a service's own port whose replies skl rewrites */
struct skl_port {
	__u32 services;
	__u8 lens4[SKL_MAX_LENS];
	__u8 lens6[SKL_MAX_LENS];
	__u8 own4;
	__u8 all4;
	__u8 own6;
	__u8 all6;
};

/* A binding of a local prefix: (protocol, family, port, address prefix) -> service.
 * prefixlen = 32 (protocol, family, port) + the address prefix length; the address bits past the
 * prefix are zero. port 0 = all ports. */
struct skl_binding_key {
	__u32 prefixlen;
	__u8 proto;
	__u8 family; /* 4 or 6 */
	__u16 port;
	__u8 addr[16]; /* IPv4: the first 4 bytes */
};

struct skl_binding {
	__u32 service;
	__u32 prefixlen; /* the address prefix length */
};

/* Service states: only a ready service is steered to. */
#define SKL_SVC_FREE 0
#define SKL_SVC_READY 1
#define SKL_SVC_PENDING 2
/* skl_service.flags */
#define SKL_SVC_F_REMOVING 1 /* a pending service being removed (not added) */
#define SKL_SVC_F_FOLLOW 2   /* new listening sockets of its cgroup are stored as they appear */
#define SKL_SVC_F_UDP_REPLIES 4 /* replies to datagrams steered from an extra port leave from it */

/* Per-CPU counters of a service. */
struct skl_counters {
	__u64 redirected; /* connections/datagrams steered to the service's socket */
	__u64 missed;     /* bound to the service, but its socket for the family is gone or refused */
	__u64 retaken;    /* sockets the follow program stored when the service listened again */
};

/* Following a service across restarts: a listener (family, port, address as bound) -> the
 * service whose destinations a new listening socket of it fills, in the dispatcher's network
 * namespace only. Filled by skl; read by the sock_ops program on the followed cgroups. */
#define SKL_MAX_FOLLOW 4096
struct skl_follow_key {
	__u8 family; /* 4 or 6 */
	__u8 pad;
	__u16 port;
	__u8 addr[16]; /* IPv4: the first 4 bytes */
};

struct skl_follow {
	__u32 service;
	__u32 dests;         /* SKL_FOLLOW_D_*: which traffic families the socket serves */
	__u64 netns_cookie;  /* the dispatcher's network namespace */
};
#define SKL_FOLLOW_D_V4 1
#define SKL_FOLLOW_D_V6 2

/* Spare sockets per destination: other members of a followed service's reuseport group (or its
 * earlier listeners), so that losing the stored member does not darken the service while others
 * still listen. spare_socket index = dest * SKL_SPARES + k. */
#define SKL_SPARES 4

/* UDP replies: a datagram steered from an extra port records its flow; the service's replies to
 * it (from its own port) leave from the extra port. Ports in network byte order. */
#define SKL_MAX_FLOWS 65536
#define SKL_FLOW_IDLE_NS (120ull * 1000000000ull)
struct skl_flow_key {
	__u8 family; /* 4 or 6 */
	__u8 pad;
	__u16 client_port;
	__u16 service_port; /* the service's own (bound) port */
	__u16 pad2;
	__u8 client[16];    /* IPv4: the first 4 bytes */
	__u8 local[16];
};

struct skl_flow {
	__u64 last_ns;   /* bpf_ktime_get_ns() of the last request */
	__u32 service;
	__u16 port;      /* the extra port the client used */
	__u16 pad;
};

struct skl_reply_counters {
	__u64 flows;     /* datagrams from an extra port that recorded (or refreshed) their flow */
	__u64 rewritten; /* replies that left from the extra port */
};

/* One socket of a service (userspace's record; the socket itself is in target_socket). */
struct skl_socket_meta {
	__u64 sock_ino;
	__u32 pid; /* process it was taken from */
	__u16 listen_port;
	__u8 family; /* 4 or 6: the socket's own family (a dual-stack IPv6 socket may serve IPv4) */
	__u8 flags;  /* SKL_SOCK_F_* */
	__u8 listen_addr[16]; /* IPv4 as ::ffff:a.b.c.d */
};
#define SKL_SOCK_F_USED 1
#define SKL_SOCK_F_V6ONLY 2

/* A service: the program reads `state` only; the rest lets `skl status` rebuild everything. */
struct skl_service {
	__u32 state;
	__u32 pid;        /* target process */
	__u64 created_ns; /* CLOCK_REALTIME, ns */
	__u64 netns_ino;
	__u32 owner_pid;  /* skl --foreground process owning it, 0 when persistent */
	__u32 flags;      /* SKL_SVC_F_* */
	char comm[16];
	char name[64];
	__u64 cgroup_ino; /* the followed cgroup v2 directory (SKL_SVC_F_FOLLOW) */
	struct skl_socket_meta sockets[SKL_DESTS_PER_SERVICE]; /* index: protocol * 2 + (family == 6) */
};

/* The dispatcher's own record (one entry): which layout and which skl wrote it. */
struct skl_info {
	__u32 layout;
	__u32 reserved;
	char version[32];
};

#endif
