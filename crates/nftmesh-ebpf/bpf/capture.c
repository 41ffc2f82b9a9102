// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* nftmesh's outbound capture at the socket layer, for one pod's cgroup v2 directory.
 *
 * cgroup/connect4    a TCP connect() the nf_tables capture would REDIRECT to the proxy goes to
 *                    127.0.0.1:proxy_port instead; where it was going is kept by socket cookie.
 * sockops            when that connection is established, its original destination moves to a
 *                    map keyed by the 4-tuple the proxy's accepted socket sees; the entry is
 *                    deleted when the proxy's socket closes.
 * cgroup/getsockopt  getsockopt(SOL_IP, SO_ORIGINAL_DST) on the proxy's accepted socket answers
 *                    from that map (over whatever the kernel answered: with conntrack on, the
 *                    kernel's answer is the loopback address itself).
 *
 * The decision mirrors the `istio-output` chain nftmesh-model compiles (excluded ports,
 * 127.0.0.6, proxy uids and gids, loopback, owner groups, host loopback, excluded CIDRs, included
 * ports, included CIDRs); what it cannot see at connect() time is listed in ../README.md.
 * IPv4 only. Built by build.rs: clang -O2 -g -target bpf. */

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "capture.h"

#define AF_INET 2
#define SOCK_STREAM 1
#define SOL_IP 0
#define SO_ORIGINAL_DST 80

/* Keep the compiler from merging or reordering the stores around it. */
#define barrier() asm volatile("" ::: "memory")

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct capture_config);
} config SEC(".maps");

/* Sets: the value is unused (1). Ports in host order. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u8);
} proxy_uids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u8);
} proxy_gids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u8);
} owner_gids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u16);
	__type(value, __u8);
} ports_exclude SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u16);
	__type(value, __u8);
} ports_include SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct v4_prefix);
	__type(value, __u8);
} cidrs_include SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct v4_prefix);
	__type(value, __u8);
} cidrs_exclude SEC(".maps");

/* Redirected, not yet established: socket cookie -> original destination. LRU, so connects that
 * never establish cannot fill it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct original_dst);
} orig_by_cookie SEC(".maps");

/* Established: the 4-tuple the proxy sees -> original destination. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct v4_tuple);
	__type(value, struct original_dst);
} orig_by_tuple SEC(".maps");

static __always_inline int in_set32(void *map, __u32 key)
{
	return bpf_map_lookup_elem(map, &key) != 0;
}

static __always_inline int in_ports(void *map, __u16 port)
{
	return bpf_map_lookup_elem(map, &port) != 0;
}

static __always_inline int in_cidrs(void *map, __u32 addr)
{
	struct v4_prefix key = { .prefixlen = 32, .addr = addr };

	return bpf_map_lookup_elem(map, &key) != 0;
}

/* Whether the nf_tables capture would redirect this TCP connect to the proxy: the rules of
 * `istio-output` in their order, each "return" a 0 here. */
static __always_inline int captured(const struct capture_config *cfg, __u32 daddr, __u16 dport,
				    __u32 saddr)
{
	__u64 ids = bpf_get_current_uid_gid();
	__u32 uid = (__u32)ids;
	__u32 gid = (__u32)(ids >> 32);
	int on_lo = (bpf_ntohl(daddr) >> 24) == 127;

	if (in_ports(&ports_exclude, dport))
		return 0;
	/* oif lo ip saddr 127.0.0.6 return: the proxy's inbound passthrough. */
	if (saddr == bpf_htonl(0x7f000006))
		return 0;
	/* meta skuid/skgid <proxy> return. */
	if (in_set32(&proxy_uids, uid) || in_set32(&proxy_gids, gid))
		return 0;
	/* oif lo meta skuid != <proxy> return (unless a loopback CIDR is included). */
	if (on_lo && !cfg->loopback_included)
		return 0;
	if (cfg->owner_groups == OWNER_GROUPS_EXCLUDE && in_set32(&owner_gids, gid))
		return 0;
	if (cfg->owner_groups == OWNER_GROUPS_INCLUDE && !in_set32(&owner_gids, gid))
		return 0;
	if ((daddr & cfg->host_lo_mask) == cfg->host_lo_addr)
		return 0;
	if (in_cidrs(&cidrs_exclude, daddr))
		return 0;
	if (in_ports(&ports_include, dport))
		return 1;
	if (cfg->include_all)
		return 1;
	return in_cidrs(&cidrs_include, daddr);
}

SEC("cgroup/connect4")
int nftmesh_connect4(struct bpf_sock_addr *ctx)
{
	__u32 key = 0;
	const struct capture_config *cfg;
	struct bpf_sock *sk;
	struct original_dst orig = {};
	__u64 cookie;
	__u32 saddr = 0;

	if (ctx->type != SOCK_STREAM || ctx->protocol != IPPROTO_TCP)
		return 1;
	cfg = bpf_map_lookup_elem(&config, &key);
	if (!cfg || !cfg->proxy_port)
		return 1;
	sk = ctx->sk;
	if (sk)
		saddr = sk->src_ip4;
	orig.addr = ctx->user_ip4;
	orig.port = (__u16)ctx->user_port;
	if (!captured(cfg, orig.addr, bpf_ntohs(orig.port), saddr))
		return 1;
	cookie = bpf_get_socket_cookie(ctx);
	/* No room to remember the destination: leave the connect alone rather than hand the proxy
	 * a connection it cannot route. */
	if (bpf_map_update_elem(&orig_by_cookie, &cookie, &orig, BPF_ANY))
		return 1;
	ctx->user_ip4 = bpf_htonl(0x7f000001);
	ctx->user_port = bpf_htons(cfg->proxy_port);
	return 1;
}

SEC("sockops")
int nftmesh_sockops(struct bpf_sock_ops *skops)
{
	struct v4_tuple tuple = {};
	struct original_dst *orig;
	__u64 cookie;

	if (skops->family != AF_INET)
		return 1;
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		/* The app's socket: its local end is the app's, its remote end the proxy's. */
		cookie = bpf_get_socket_cookie(skops);
		orig = bpf_map_lookup_elem(&orig_by_cookie, &cookie);
		if (!orig)
			return 1;
		tuple.app_addr = skops->local_ip4;
		tuple.app_port = (__u16)skops->local_port;
		tuple.proxy_addr = skops->remote_ip4;
		tuple.proxy_port = (__u16)bpf_ntohl(skops->remote_port);
		bpf_map_update_elem(&orig_by_tuple, &tuple, orig, BPF_ANY);
		bpf_map_delete_elem(&orig_by_cookie, &cookie);
		return 1;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		/* The proxy's accepted socket: be told when it closes, to forget its entry. */
		tuple.app_addr = skops->remote_ip4;
		tuple.app_port = (__u16)bpf_ntohl(skops->remote_port);
		tuple.proxy_addr = skops->local_ip4;
		tuple.proxy_port = (__u16)skops->local_port;
		if (bpf_map_lookup_elem(&orig_by_tuple, &tuple))
			bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG);
		return 1;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] != BPF_TCP_CLOSE)
			return 1;
		tuple.app_addr = skops->remote_ip4;
		tuple.app_port = (__u16)bpf_ntohl(skops->remote_port);
		tuple.proxy_addr = skops->local_ip4;
		tuple.proxy_port = (__u16)skops->local_port;
		bpf_map_delete_elem(&orig_by_tuple, &tuple);
		return 1;
	}
	return 1;
}

SEC("cgroup/getsockopt")
int nftmesh_getsockopt(struct bpf_sockopt *ctx)
{
	struct v4_tuple tuple = {};
	struct original_dst *orig;
	struct sockaddr_in *sa;
	struct bpf_sock *sk;

	if (ctx->level != SOL_IP || ctx->optname != SO_ORIGINAL_DST)
		return 1;
	sk = ctx->sk;
	if (!sk || sk->family != AF_INET)
		return 1;
	/* The proxy's accepted socket: its remote end is the app's. */
	tuple.app_addr = sk->dst_ip4;
	tuple.app_port = bpf_ntohs(sk->dst_port);
	tuple.proxy_addr = sk->src_ip4;
	tuple.proxy_port = (__u16)sk->src_port;
	orig = bpf_map_lookup_elem(&orig_by_tuple, &tuple);
	if (!orig)
		return 1;
	sa = ctx->optval;
	if ((void *)(sa + 1) > ctx->optval_end)
		return 1;
	sa->sin_family = AF_INET;
	sa->sin_port = orig->port;
	sa->sin_addr.s_addr = orig->addr;
	__builtin_memset(sa->__pad, 0, sizeof(sa->__pad));
	ctx->optlen = sizeof(*sa);
	/* clang merges the optlen and retval stores into one 8-byte store, which the verifier
	 * rejects (each field is its own 4-byte context access). */
	barrier();
	ctx->retval = 0;
	return 1;
}

char _license[] SEC("license") = "GPL";
