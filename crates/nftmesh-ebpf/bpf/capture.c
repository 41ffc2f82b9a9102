// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* nftmesh's outbound capture at the socket layer, for one pod's cgroup v2 directory.
 *
 * cgroup/connect4    a TCP connect() the nf_tables capture would REDIRECT to the proxy goes to
 *                    127.0.0.1:proxy_port instead; where it was going is kept by socket cookie.
 * cgroup/connect6    the same for IPv6 sockets: to [::1]:proxy_port with IPv6 capture on; an
 *                    IPv4-mapped destination (a dual-stack socket reaching an IPv4 peer, which
 *                    nf_tables sees as IPv4) is decided as IPv4 and goes to ::ffff:127.0.0.1.
 * sockops            when that connection is established, its original destination moves to a
 *                    map keyed by the 4-tuple the proxy's accepted socket sees; the entry is
 *                    deleted when the proxy's socket closes.
 * cgroup/getpeername4, getpeername6
 *                    the app's getpeername() on a redirected socket shows its original peer,
 *                    as it does after nf_tables' REDIRECT (kept in the socket's own storage,
 *                    set at connect, gone with the socket).
 * cgroup/sendmsg4   with DNS capture on, a UDP datagram to port 53 of a DNS server (or of any
 *                    address with capture-all) goes to 127.0.0.1:dns_port (15053); so does a
 *                    connect() of a UDP socket (connect4) and a TCP connect to port 53.
 * cgroup/recvmsg4   a datagram from 127.0.0.1:dns_port to a socket whose DNS was redirected
 *                    shows the server it was sent to as its source.
 * cgroup/sendmsg6, recvmsg6
 *                    the same for IPv6 servers (with IPv6 capture on) to [::1]:dns_port, and
 *                    for a dual-stack socket's IPv4-mapped ones to ::ffff:127.0.0.1:dns_port.
 * cgroup/getsockopt  getsockopt(SOL_IP, SO_ORIGINAL_DST) and getsockopt(SOL_IPV6,
 *                    IP6T_SO_ORIGINAL_DST) on the proxy's accepted socket answer from that map (over whatever the kernel answered: with conntrack on, the
 *                    kernel's answer is the loopback address itself).
 *
 * The decision mirrors the `istio-output` chain nftmesh-model compiles (excluded ports,
 * 127.0.0.6, proxy uids and gids, loopback, owner groups, host loopback, excluded CIDRs, included
 * ports, included CIDRs); what it cannot see at connect() time is listed in ../README.md.
 * Built by build.rs: clang -O2 -g -target bpf. */

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "capture.h"

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#define DNS_PORT 53
#define SOL_IP 0
#define SOL_IPV6 41
#define SO_ORIGINAL_DST 80
#define IP6T_SO_ORIGINAL_DST 80

/* Keep the compiler from merging or reordering the stores around it. */
#define barrier() asm volatile("" ::: "memory")
/* barrier_var(var) (bpf_helpers.h) makes `var` opaque to the compiler where it stands: two
 * context loads, each followed by one, are not merged into one load from a selected address,
 * which the verifier refuses ("dereference of modified ctx ptr"). */

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

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct v6_prefix);
	__type(value, __u8);
} cidrs6_include SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct v6_prefix);
	__type(value, __u8);
} cidrs6_exclude SEC(".maps");

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

/* The IPv6 twins of the two maps above. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct original_dst6);
} orig6_by_cookie SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct v6_tuple);
	__type(value, struct original_dst6);
} orig6_by_tuple SEC(".maps");

/* The app's redirected socket -> its original peer, for getpeername(). */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct original_peer);
} peer_by_socket SEC(".maps");

/* The IPv4 DNS servers whose port 53 is captured (DNS_SERVERS); addresses in network order. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u8);
} dns_servers SEC(".maps");

/* The IPv6 DNS servers (with IPv6 capture on). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, struct v6_addr);
	__type(value, __u8);
} dns_servers6 SEC(".maps");

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

static __always_inline int in_cidrs6(void *map, const __u32 *addr)
{
	struct v6_prefix key = { .prefixlen = 128 };

	key.addr[0] = addr[0];
	key.addr[1] = addr[1];
	key.addr[2] = addr[2];
	key.addr[3] = addr[3];
	return bpf_map_lookup_elem(map, &key) != 0;
}

static __always_inline int is_v6(const __u32 *a, __u32 a0, __u32 a1, __u32 a2, __u32 a3)
{
	return a[0] == a0 && a[1] == a1 && a[2] == a2 && a[3] == a3;
}

/* An IPv4-mapped IPv6 address (::ffff:a.b.c.d): its IPv4 address is a[3]. */
static __always_inline int is_v4_mapped(__u32 a0, __u32 a1, __u32 a2)
{
	return a0 == 0 && a1 == 0 && a2 == bpf_htonl(0xffff);
}

/* The rules of `istio-output` both families share, up to the owner groups: whether one of them
 * lets the connect through ("return"). */
static __always_inline int let_through(const struct capture_config *cfg, __u16 dport,
				       int from_passthrough, int on_lo)
{
	__u64 ids = bpf_get_current_uid_gid();
	__u32 uid = (__u32)ids;
	__u32 gid = (__u32)(ids >> 32);

	if (in_ports(&ports_exclude, dport))
		return 1;
	/* oif lo ip saddr 127.0.0.6 / ip6 saddr ::6 return: the proxy's inbound passthrough. */
	if (from_passthrough)
		return 1;
	/* meta skuid/skgid <proxy> return. */
	if (in_set32(&proxy_uids, uid) || in_set32(&proxy_gids, gid))
		return 1;
	/* oif lo meta skuid != <proxy> return (unless a loopback CIDR is included). */
	if (on_lo && !cfg->loopback_included)
		return 1;
	if (cfg->owner_groups == OWNER_GROUPS_EXCLUDE && in_set32(&owner_gids, gid))
		return 1;
	if (cfg->owner_groups == OWNER_GROUPS_INCLUDE && !in_set32(&owner_gids, gid))
		return 1;
	return 0;
}

/* Where a connect goes: nowhere else, to the proxy port, or to the DNS capture port. */
#define TO_NONE 0
#define TO_PROXY 1
#define TO_DNS 2

/* Whether `istio-output-dns` redirects this IPv4 destination: port 53 of a configured server, or
 * of any address with capture-all. */
static __always_inline int dns_server(const struct capture_config *cfg, __u32 daddr, __u16 dport)
{
	if (dport != DNS_PORT || cfg->dns == DNS_OFF)
		return 0;
	return cfg->dns == DNS_ALL || in_set32(&dns_servers, daddr);
}

/* Where the nf_tables capture sends this IPv4 TCP connect (TO_*): the rules of `istio-output`
 * in their order, each "return" a TO_NONE here, with `istio-output-dns` after the owner groups.
 * With DNS capture on, the "oif lo" rule lets through TCP to lo but to port 53. */
static __always_inline int captured(const struct capture_config *cfg, __u32 daddr, __u16 dport,
				    __u32 saddr)
{
	int on_lo = (bpf_ntohl(daddr) >> 24) == 127;

	if (cfg->dns != DNS_OFF && dport == DNS_PORT)
		on_lo = 0;
	if (let_through(cfg, dport, saddr == bpf_htonl(0x7f000006), on_lo))
		return TO_NONE;
	if (dns_server(cfg, daddr, dport))
		return TO_DNS;
	if ((daddr & cfg->host_lo_mask) == cfg->host_lo_addr)
		return TO_NONE;
	if (in_cidrs(&cidrs_exclude, daddr))
		return TO_NONE;
	if (in_ports(&ports_include, dport))
		return TO_PROXY;
	if (cfg->include_all)
		return TO_PROXY;
	return in_cidrs(&cidrs_include, daddr) ? TO_PROXY : TO_NONE;
}

/* Whether the nf_tables capture redirects this IPv4 UDP datagram (to the DNS capture port): the
 * rules of `istio-output` up to `istio-output-dns` (the "oif lo" rule is TCP-only with DNS on),
 * then `istio-output-dns`; nothing after it redirects UDP. */
static __always_inline int captured_udp(const struct capture_config *cfg, __u32 daddr,
					__u16 dport, __u32 saddr)
{
	if (cfg->dns == DNS_OFF)
		return 0;
	if (let_through(cfg, dport, saddr == bpf_htonl(0x7f000006), 0))
		return 0;
	return dns_server(cfg, daddr, dport);
}

/* Whether `istio-output-dns` redirects this IPv6 destination (IPv6 capture on). */
static __always_inline int dns_server6(const struct capture_config *cfg, const __u32 *daddr,
				       __u16 dport)
{
	struct v6_addr key;

	if (dport != DNS_PORT || cfg->dns == DNS_OFF)
		return 0;
	if (cfg->dns == DNS_ALL)
		return 1;
	key.addr[0] = daddr[0];
	key.addr[1] = daddr[1];
	key.addr[2] = daddr[2];
	key.addr[3] = daddr[3];
	return bpf_map_lookup_elem(&dns_servers6, &key) != 0;
}

/* The same as captured() for an IPv6 TCP connect (with IPv6 capture on): ::6 is the passthrough
 * source, ::1 both "oif lo" and the host loopback the chain lets through. */
static __always_inline int captured6(const struct capture_config *cfg, const __u32 *daddr,
				     __u16 dport, const __u32 *saddr)
{
	__u32 one = bpf_htonl(1), six = bpf_htonl(6);
	int on_lo = is_v6(daddr, 0, 0, 0, one);

	if (let_through(cfg, dport, is_v6(saddr, 0, 0, 0, six),
			on_lo && !(cfg->dns != DNS_OFF && dport == DNS_PORT)))
		return TO_NONE;
	if (dns_server6(cfg, daddr, dport))
		return TO_DNS;
	if (on_lo)
		return TO_NONE;
	if (in_cidrs6(&cidrs6_exclude, daddr))
		return TO_NONE;
	if (in_ports(&ports_include, dport))
		return TO_PROXY;
	if (cfg->include_all)
		return TO_PROXY;
	return in_cidrs6(&cidrs6_include, daddr) ? TO_PROXY : TO_NONE;
}

/* captured_udp() for an IPv6 datagram (with IPv6 capture on). */
static __always_inline int captured_udp6(const struct capture_config *cfg, const __u32 *daddr,
					 __u16 dport, const __u32 *saddr)
{
	if (cfg->dns == DNS_OFF)
		return 0;
	if (let_through(cfg, dport, is_v6(saddr, 0, 0, 0, bpf_htonl(6)), 0))
		return 0;
	return dns_server6(cfg, daddr, dport);
}

/* Remember in the socket's storage that its peer is `addr`:`port` (family 4: addr[3] only);
 * whether it could. */
static __always_inline int remember_peer(struct bpf_sock *sk, const __u32 *addr, __u16 port,
					 __u8 family)
{
	struct original_peer *p;

	if (!sk)
		return 0;
	p = bpf_sk_storage_get(&peer_by_socket, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!p)
		return 0;
	p->addr[0] = addr[0];
	p->addr[1] = addr[1];
	p->addr[2] = addr[2];
	p->addr[3] = addr[3];
	p->port = port;
	p->family = family;
	return 1;
}

/* A connect not redirected: forget a peer remembered by an earlier connect() of the socket
 * (one that failed and is retried elsewhere). */
static __always_inline int forget_peer(struct bpf_sock *sk)
{
	if (sk)
		bpf_sk_storage_delete(&peer_by_socket, sk);
	return 1;
}

/* The settings, if capture is on in the network namespace whose cookie is `netns` (the one the
 * capture was installed for, or any when it names none). */
static __always_inline const struct capture_config *settings(__u64 netns)
{
	__u32 key = 0;
	const struct capture_config *cfg = bpf_map_lookup_elem(&config, &key);

	if (!cfg || !cfg->proxy_port)
		return 0;
	if (cfg->netns_cookie && cfg->netns_cookie != netns)
		return 0;
	return cfg;
}

/* Whether the capture names a network namespace other than the one whose cookie is `netns`. */
static __always_inline int out_of_scope(__u64 netns)
{
	__u32 key = 0;
	const struct capture_config *cfg = bpf_map_lookup_elem(&config, &key);

	return cfg && cfg->netns_cookie && cfg->netns_cookie != netns;
}

static __always_inline int is_tcp(struct bpf_sock_addr *ctx)
{
	return ctx->type == SOCK_STREAM && ctx->protocol == IPPROTO_TCP;
}

static __always_inline int is_udp(struct bpf_sock_addr *ctx)
{
	return ctx->type == SOCK_DGRAM && ctx->protocol == IPPROTO_UDP;
}

/* The settings for a TCP connect, if it is one and capture is on. */
static __always_inline const struct capture_config *capture_config(struct bpf_sock_addr *ctx)
{
	if (!is_tcp(ctx))
		return 0;
	return settings(bpf_get_netns_cookie(ctx));
}

/* The port a connect decided TO_PROXY or TO_DNS goes to, host order. */
static __always_inline __u16 target_port(const struct capture_config *cfg, int to)
{
	return to == TO_DNS ? cfg->dns_port : cfg->proxy_port;
}

/* A UDP datagram (sendmsg4) or a UDP socket's connect (connect4) to `user_ip4`:`user_port`
 * that DNS capture takes goes to 127.0.0.1:dns_port; the server is kept in the socket's
 * storage, for recvmsg4 (the replies' source) and getpeername4. Whether it was redirected. */
static __always_inline int redirect_dns4(struct bpf_sock_addr *ctx,
					 const struct capture_config *cfg)
{
	struct bpf_sock *sk = ctx->sk;
	__u32 server[4] = {};
	__u32 saddr = 0;
	__u16 dport = (__u16)ctx->user_port;

	if (!sk)
		return 0;
	saddr = sk->src_ip4;
	server[3] = ctx->user_ip4;
	if (!captured_udp(cfg, server[3], bpf_ntohs(dport), saddr))
		return 0;
	/* Without the server kept, the reply would come from 127.0.0.1:dns_port, which a
	 * resolver drops: leave the query alone. */
	if (!remember_peer(sk, server, dport, 4))
		return 0;
	ctx->user_ip4 = bpf_htonl(0x7f000001);
	ctx->user_port = bpf_htons(cfg->dns_port);
	return 1;
}

/* redirect_dns4() for an IPv6 socket (sendmsg6, connect6): an IPv4-mapped server (a dual-stack
 * socket) decided as IPv4 and sent to ::ffff:127.0.0.1:dns_port, an IPv6 one (IPv6 capture on)
 * to [::1]:dns_port. Whether it was redirected. */
static __always_inline int redirect_dns6(struct bpf_sock_addr *ctx,
					 const struct capture_config *cfg)
{
	struct bpf_sock *sk = ctx->sk;
	__u32 server[4], saddr[4];
	__u16 dport = (__u16)ctx->user_port;

	if (!sk)
		return 0;
	server[0] = ctx->user_ip6[0];
	server[1] = ctx->user_ip6[1];
	server[2] = ctx->user_ip6[2];
	server[3] = ctx->user_ip6[3];
	saddr[0] = sk->src_ip6[0];
	saddr[1] = sk->src_ip6[1];
	saddr[2] = sk->src_ip6[2];
	saddr[3] = sk->src_ip6[3];
	if (is_v4_mapped(server[0], server[1], server[2])) {
		if (!captured_udp(cfg, server[3], bpf_ntohs(dport),
				  is_v4_mapped(saddr[0], saddr[1], saddr[2]) ? saddr[3] : 0))
			return 0;
		if (!remember_peer(sk, server, dport, 4))
			return 0;
		ctx->user_ip6[3] = bpf_htonl(0x7f000001);
		ctx->user_port = bpf_htons(cfg->dns_port);
		return 1;
	}
	if (!cfg->ipv6 || !captured_udp6(cfg, server, bpf_ntohs(dport), saddr))
		return 0;
	if (!remember_peer(sk, server, dport, 6))
		return 0;
	ctx->user_ip6[0] = 0;
	ctx->user_ip6[1] = 0;
	ctx->user_ip6[2] = 0;
	ctx->user_ip6[3] = bpf_htonl(1);
	ctx->user_port = bpf_htons(cfg->dns_port);
	return 1;
}

SEC("cgroup/connect4")
int nftmesh_connect4(struct bpf_sock_addr *ctx)
{
	const struct capture_config *cfg = capture_config(ctx);
	struct bpf_sock *sk;
	struct original_dst orig = {};
	__u32 peer[4] = {};
	__u64 cookie;
	__u32 saddr = 0;
	int to;

	if (!cfg) {
		/* A UDP socket's connect(): DNS capture, or a peer forgotten. */
		if (!is_udp(ctx))
			return 1;
		cfg = settings(bpf_get_netns_cookie(ctx));
		if (!cfg || !redirect_dns4(ctx, cfg))
			return forget_peer(ctx->sk);
		return 1;
	}
	sk = ctx->sk;
	if (sk)
		saddr = sk->src_ip4;
	orig.addr = ctx->user_ip4;
	orig.port = (__u16)ctx->user_port;
	to = captured(cfg, orig.addr, bpf_ntohs(orig.port), saddr);
	if (to == TO_NONE)
		return forget_peer(sk);
	cookie = bpf_get_socket_cookie(ctx);
	/* No room to remember the destination: leave the connect alone rather than hand the proxy
	 * a connection it cannot route. */
	if (bpf_map_update_elem(&orig_by_cookie, &cookie, &orig, BPF_ANY))
		return forget_peer(sk);
	peer[3] = orig.addr;
	remember_peer(sk, peer, orig.port, 4);
	ctx->user_ip4 = bpf_htonl(0x7f000001);
	ctx->user_port = bpf_htons(target_port(cfg, to));
	return 1;
}

SEC("cgroup/sendmsg4")
int nftmesh_sendmsg4(struct bpf_sock_addr *ctx)
{
	const struct capture_config *cfg;

	if (!is_udp(ctx))
		return 1;
	cfg = settings(bpf_get_netns_cookie(ctx));
	/* A datagram not redirected keeps the socket's storage: a reply to an earlier redirected
	 * query may still come. */
	if (cfg)
		redirect_dns4(ctx, cfg);
	return 1;
}

SEC("cgroup/recvmsg4")
int nftmesh_recvmsg4(struct bpf_sock_addr *ctx)
{
	const struct capture_config *cfg;
	struct original_peer *p;
	struct bpf_sock *sk = ctx->sk;

	if (!sk || ctx->user_ip4 != bpf_htonl(0x7f000001))
		return 1;
	cfg = settings(bpf_get_netns_cookie(ctx));
	if (!cfg || cfg->dns == DNS_OFF || ctx->user_port != bpf_htons(cfg->dns_port))
		return 1;
	p = bpf_sk_storage_get(&peer_by_socket, sk, 0, 0);
	if (!p || p->family != 4)
		return 1;
	ctx->user_ip4 = p->addr[3];
	ctx->user_port = p->port;
	return 1;
}

SEC("cgroup/sendmsg6")
int nftmesh_sendmsg6(struct bpf_sock_addr *ctx)
{
	const struct capture_config *cfg;

	if (!is_udp(ctx))
		return 1;
	cfg = settings(bpf_get_netns_cookie(ctx));
	if (cfg)
		redirect_dns6(ctx, cfg);
	return 1;
}

SEC("cgroup/recvmsg6")
int nftmesh_recvmsg6(struct bpf_sock_addr *ctx)
{
	const struct capture_config *cfg;
	struct original_peer *p;
	struct bpf_sock *sk = ctx->sk;
	__u32 a0, a1, a2, a3;

	if (!sk)
		return 1;
	cfg = settings(bpf_get_netns_cookie(ctx));
	if (!cfg || cfg->dns == DNS_OFF || ctx->user_port != bpf_htons(cfg->dns_port))
		return 1;
	a0 = ctx->user_ip6[0];
	a1 = ctx->user_ip6[1];
	a2 = ctx->user_ip6[2];
	a3 = ctx->user_ip6[3];
	p = bpf_sk_storage_get(&peer_by_socket, sk, 0, 0);
	if (!p)
		return 1;
	if (p->family == 4 && is_v4_mapped(a0, a1, a2) && a3 == bpf_htonl(0x7f000001)) {
		ctx->user_ip6[3] = p->addr[3];
	} else if (p->family == 6 && a0 == 0 && a1 == 0 && a2 == 0 && a3 == bpf_htonl(1)) {
		ctx->user_ip6[0] = p->addr[0];
		ctx->user_ip6[1] = p->addr[1];
		ctx->user_ip6[2] = p->addr[2];
		ctx->user_ip6[3] = p->addr[3];
	} else {
		return 1;
	}
	ctx->user_port = p->port;
	return 1;
}

SEC("cgroup/connect6")
int nftmesh_connect6(struct bpf_sock_addr *ctx)
{
	const struct capture_config *cfg = capture_config(ctx);
	struct bpf_sock *sk;
	struct original_dst orig = {};
	struct original_dst6 orig6 = {};
	__u32 saddr[4] = {};
	__u64 cookie;
	int to;

	if (!cfg) {
		if (!is_udp(ctx))
			return 1;
		cfg = settings(bpf_get_netns_cookie(ctx));
		if (!cfg || !redirect_dns6(ctx, cfg))
			return forget_peer(ctx->sk);
		return 1;
	}
	orig6.addr[0] = ctx->user_ip6[0];
	orig6.addr[1] = ctx->user_ip6[1];
	orig6.addr[2] = ctx->user_ip6[2];
	orig6.addr[3] = ctx->user_ip6[3];
	orig6.port = (__u16)ctx->user_port;
	sk = ctx->sk;
	if (sk) {
		saddr[0] = sk->src_ip6[0];
		saddr[1] = sk->src_ip6[1];
		saddr[2] = sk->src_ip6[2];
		saddr[3] = sk->src_ip6[3];
	}
	if (is_v4_mapped(orig6.addr[0], orig6.addr[1], orig6.addr[2])) {
		/* A dual-stack socket reaching an IPv4 peer: IPv4 on the wire, decided as IPv4 and
		 * remembered in the IPv4 maps (its sockets' addresses are IPv4-mapped too). */
		orig.addr = orig6.addr[3];
		orig.port = orig6.port;
		to = captured(cfg, orig.addr, bpf_ntohs(orig.port),
			      is_v4_mapped(saddr[0], saddr[1], saddr[2]) ? saddr[3] : 0);
		if (to == TO_NONE)
			return forget_peer(sk);
		cookie = bpf_get_socket_cookie(ctx);
		if (bpf_map_update_elem(&orig_by_cookie, &cookie, &orig, BPF_ANY))
			return forget_peer(sk);
		remember_peer(sk, orig6.addr, orig6.port, 4);
		ctx->user_ip6[3] = bpf_htonl(0x7f000001);
		ctx->user_port = bpf_htons(target_port(cfg, to));
		return 1;
	}
	if (!cfg->ipv6)
		return forget_peer(sk);
	to = captured6(cfg, orig6.addr, bpf_ntohs(orig6.port), saddr);
	if (to == TO_NONE)
		return forget_peer(sk);
	cookie = bpf_get_socket_cookie(ctx);
	if (bpf_map_update_elem(&orig6_by_cookie, &cookie, &orig6, BPF_ANY))
		return forget_peer(sk);
	remember_peer(sk, orig6.addr, orig6.port, 6);
	ctx->user_ip6[0] = 0;
	ctx->user_ip6[1] = 0;
	ctx->user_ip6[2] = 0;
	ctx->user_ip6[3] = bpf_htonl(1);
	ctx->user_port = bpf_htons(target_port(cfg, to));
	return 1;
}

SEC("cgroup/getpeername4")
int nftmesh_getpeername4(struct bpf_sock_addr *ctx)
{
	struct original_peer *p;
	struct bpf_sock *sk = ctx->sk;

	if (!sk)
		return 1;
	p = bpf_sk_storage_get(&peer_by_socket, sk, 0, 0);
	if (!p || p->family != 4)
		return 1;
	ctx->user_ip4 = p->addr[3];
	ctx->user_port = p->port;
	return 1;
}

SEC("cgroup/getpeername6")
int nftmesh_getpeername6(struct bpf_sock_addr *ctx)
{
	struct original_peer *p;
	struct bpf_sock *sk = ctx->sk;

	if (!sk)
		return 1;
	p = bpf_sk_storage_get(&peer_by_socket, sk, 0, 0);
	if (!p)
		return 1;
	if (p->family == 4) {
		/* A dual-stack socket's IPv4 peer: ::ffff:a.b.c.d. */
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0xffff);
	} else {
		ctx->user_ip6[0] = p->addr[0];
		ctx->user_ip6[1] = p->addr[1];
		ctx->user_ip6[2] = p->addr[2];
	}
	ctx->user_ip6[3] = p->addr[3];
	ctx->user_port = p->port;
	return 1;
}

/* The 4-tuple key of an IPv4 connection: the app's end is `app`, the proxy's `proxy`. */
static __always_inline void v4_key(struct v4_tuple *t, __u32 app_addr, __u16 app_port,
				   __u32 proxy_addr, __u16 proxy_port)
{
	t->app_addr = app_addr;
	t->app_port = app_port;
	t->proxy_addr = proxy_addr;
	t->proxy_port = proxy_port;
}

static __always_inline void v6_key(struct v6_tuple *t, const __u32 *app_addr, __u16 app_port,
				   const __u32 *proxy_addr, __u16 proxy_port)
{
	t->app_addr[0] = app_addr[0];
	t->app_addr[1] = app_addr[1];
	t->app_addr[2] = app_addr[2];
	t->app_addr[3] = app_addr[3];
	t->proxy_addr[0] = proxy_addr[0];
	t->proxy_addr[1] = proxy_addr[1];
	t->proxy_addr[2] = proxy_addr[2];
	t->proxy_addr[3] = proxy_addr[3];
	t->app_port = app_port;
	t->proxy_port = proxy_port;
}

/* sockops for an IPv6 socket that is not IPv4-mapped: as for IPv4, with the IPv6 maps. */
static __always_inline int sockops6(struct bpf_sock_ops *skops)
{
	struct v6_tuple tuple = {};
	struct original_dst6 *orig;
	__u32 local[4], remote[4];
	__u16 lport = (__u16)skops->local_port;
	__u16 rport = (__u16)bpf_ntohl(skops->remote_port);
	__u64 cookie;

	local[0] = skops->local_ip6[0];
	local[1] = skops->local_ip6[1];
	local[2] = skops->local_ip6[2];
	local[3] = skops->local_ip6[3];
	remote[0] = skops->remote_ip6[0];
	remote[1] = skops->remote_ip6[1];
	remote[2] = skops->remote_ip6[2];
	remote[3] = skops->remote_ip6[3];
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		cookie = bpf_get_socket_cookie(skops);
		orig = bpf_map_lookup_elem(&orig6_by_cookie, &cookie);
		if (!orig)
			return 1;
		v6_key(&tuple, local, lport, remote, rport);
		bpf_map_update_elem(&orig6_by_tuple, &tuple, orig, BPF_ANY);
		bpf_map_delete_elem(&orig6_by_cookie, &cookie);
		return 1;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		v6_key(&tuple, remote, rport, local, lport);
		if (bpf_map_lookup_elem(&orig6_by_tuple, &tuple))
			bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG);
		return 1;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] != BPF_TCP_CLOSE)
			return 1;
		v6_key(&tuple, remote, rport, local, lport);
		bpf_map_delete_elem(&orig6_by_tuple, &tuple);
		return 1;
	}
	return 1;
}

SEC("sockops")
int nftmesh_sockops(struct bpf_sock_ops *skops)
{
	struct v4_tuple tuple = {};
	struct original_dst *orig;
	__u32 local, remote;
	__u16 lport, rport;
	__u64 cookie;

	if (skops->family == AF_INET6) {
		if (!is_v4_mapped(skops->local_ip6[0], skops->local_ip6[1], skops->local_ip6[2]))
			return sockops6(skops);
		/* A dual-stack socket connected over IPv4: its IPv4 addresses. */
		local = skops->local_ip6[3];
		remote = skops->remote_ip6[3];
		barrier_var(local);
		barrier_var(remote);
	} else if (skops->family == AF_INET) {
		local = skops->local_ip4;
		remote = skops->remote_ip4;
		barrier_var(local);
		barrier_var(remote);
	} else {
		return 1;
	}
	lport = (__u16)skops->local_port;
	rport = (__u16)bpf_ntohl(skops->remote_port);
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		/* The app's socket: its local end is the app's, its remote end the proxy's. */
		cookie = bpf_get_socket_cookie(skops);
		orig = bpf_map_lookup_elem(&orig_by_cookie, &cookie);
		if (!orig)
			return 1;
		v4_key(&tuple, local, lport, remote, rport);
		bpf_map_update_elem(&orig_by_tuple, &tuple, orig, BPF_ANY);
		bpf_map_delete_elem(&orig_by_cookie, &cookie);
		return 1;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		/* The proxy's accepted socket: be told when it closes, to forget its entry. */
		v4_key(&tuple, remote, rport, local, lport);
		if (bpf_map_lookup_elem(&orig_by_tuple, &tuple))
			bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG);
		return 1;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] != BPF_TCP_CLOSE)
			return 1;
		v4_key(&tuple, remote, rport, local, lport);
		bpf_map_delete_elem(&orig_by_tuple, &tuple);
		return 1;
	}
	return 1;
}

/* getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST) on the proxy's accepted IPv6 socket. */
static __always_inline int getsockopt6(struct bpf_sockopt *ctx, struct bpf_sock *sk)
{
	struct v6_tuple tuple = {};
	struct original_dst6 *orig;
	struct sockaddr_in6 *sa;
	__u32 app[4], proxy[4];

	app[0] = sk->dst_ip6[0];
	app[1] = sk->dst_ip6[1];
	app[2] = sk->dst_ip6[2];
	app[3] = sk->dst_ip6[3];
	proxy[0] = sk->src_ip6[0];
	proxy[1] = sk->src_ip6[1];
	proxy[2] = sk->src_ip6[2];
	proxy[3] = sk->src_ip6[3];
	v6_key(&tuple, app, bpf_ntohs(sk->dst_port), proxy, (__u16)sk->src_port);
	orig = bpf_map_lookup_elem(&orig6_by_tuple, &tuple);
	if (!orig)
		return 1;
	sa = ctx->optval;
	if ((void *)(sa + 1) > ctx->optval_end)
		return 1;
	sa->sin6_family = AF_INET6;
	sa->sin6_port = orig->port;
	sa->sin6_flowinfo = 0;
	sa->sin6_addr.in6_u.u6_addr32[0] = orig->addr[0];
	sa->sin6_addr.in6_u.u6_addr32[1] = orig->addr[1];
	sa->sin6_addr.in6_u.u6_addr32[2] = orig->addr[2];
	sa->sin6_addr.in6_u.u6_addr32[3] = orig->addr[3];
	sa->sin6_scope_id = 0;
	ctx->optlen = sizeof(*sa);
	/* As below: keep clang from merging the optlen and retval stores. */
	barrier();
	ctx->retval = 0;
	return 1;
}

SEC("cgroup/getsockopt")
int nftmesh_getsockopt(struct bpf_sockopt *ctx)
{
	struct v4_tuple tuple = {};
	struct original_dst *orig;
	struct sockaddr_in *sa;
	struct bpf_sock *sk;

	sk = ctx->sk;
	if (!sk)
		return 1;
	if (!(ctx->level == SOL_IP && ctx->optname == SO_ORIGINAL_DST) &&
	    !(ctx->level == SOL_IPV6 && ctx->optname == IP6T_SO_ORIGINAL_DST))
		return 1;
	/* Another namespace's socket (the cgroup's processes may use several) is the kernel's. */
	if (out_of_scope(bpf_get_netns_cookie(ctx)))
		return 1;
	if (ctx->level == SOL_IPV6 && ctx->optname == IP6T_SO_ORIGINAL_DST &&
	    sk->family == AF_INET6)
		return getsockopt6(ctx, sk);
	if (ctx->level != SOL_IP || ctx->optname != SO_ORIGINAL_DST || sk->family != AF_INET)
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
