// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* nftmesh's inbound capture without NAT: sk_lookup steers the TCP connections nf_tables'
 * `istio-inbound` chain would REDIRECT to the proxy's inbound listener, for one pod.
 *
 * cgroup/post_bind4, post_bind6  (on the pod's cgroup)
 *                    a TCP socket bound to the inbound capture port (15006) by a proxy uid or
 *                    gid is remembered by socket cookie (the only hook that knows who binds).
 * sockops            (on the pod's cgroup)
 *                    TCP_LISTEN_CB: such a socket starting to listen goes into the SOCKMAP
 *                    `inbound_listeners` (slots by family and cookie); the kernel takes it out when it
 *                    closes. TCP_CONNECT_CB: the pod's own connect, before its SYN, is
 *                    remembered by 4-tuple (`inbound_local`) with `istio-output`'s decision
 *                    for it if it reaches the pod itself: through, or (the proxy calling its
 *                    own pod) to the inbound listener. PASSIVE_ESTABLISHED_CB: an
 *                    accepted socket whose 4-tuple was steered is marked in its own storage
 *                    (`inbound_marked`).
 * sk_lookup          (on the pod's network namespace)
 *                    a TCP packet looking for a listener, not from this namespace (not on lo,
 *                    not a connect of the pod's cgroup, which TCP_CONNECT_CB decided as
 *                    `istio-output` does), not from the passthrough source 127.0.0.6 / ::6,
 *                    to a steered port (map
 *                    `inbound_ports`), IPv4 or IPv6 (nf_tables' inet table redirects IPv6 even
 *                    with CaptureConfig::ipv6 off), is given to the listener
 *                    of `inbound_listeners`, whatever its local address and port; the packet
 *                    keeps its addresses, so the accepted socket's local address is the
 *                    original destination, as with TPROXY. No listener: SK_DROP, which the
 *                    kernel answers with a reset (connection refused), as REDIRECT to a closed
 *                    port does: fail closed, never to the app.
 * cgroup/getsockopt  (on the pod's cgroup)
 *                    getsockopt(SOL_IP, SO_ORIGINAL_DST) / (SOL_IPV6, IP6T_SO_ORIGINAL_DST) on
 *                    a marked socket answer its local address when the kernel has no answer
 *                    (no conntrack entry).
 *
 * Built by build.rs: clang -O2 -g -target bpf. */

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "inbound.h"

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define SOL_IP 0
#define SOL_IPV6 41
#define SO_ORIGINAL_DST 80
#define IP6T_SO_ORIGINAL_DST 80
/* The loopback device's index, the same in every network namespace. */
#define LOOPBACK_IFINDEX 1

#define barrier() asm volatile("" ::: "memory")

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct inbound_config);
} inbound_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, INBOUND_PORT_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} inbound_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, INBOUND_PORT_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} inbound_out_excluded SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, INBOUND_MAX_OWNERS);
	__type(key, __u32);
	__type(value, struct inbound_owner);
} inbound_owners SEC(".maps");

/* Proxy uids and gids (the value is unused, 1). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u8);
} inbound_proxy_uids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u8);
} inbound_proxy_gids SEC(".maps");

/* Sockets bound to the capture port by the proxy, not listening yet, by socket cookie. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u8);
} inbound_bound SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 2 * LISTENER_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} inbound_listeners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct steered_key);
	__type(value, __u8);
} inbound_steered SEC(".maps");

/* The pod's own connects, by the 4-tuple the listener side sees (kept until evicted: a
 * retransmitted SYN is looked up again): LOCAL_PASS or LOCAL_INBOUND. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct steered_key);
	__type(value, __u8);
} inbound_local SEC(".maps");

/* An accepted socket that was steered (the value is unused, 1). */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u8);
} inbound_marked SEC(".maps");

static __always_inline int is_proxy(void)
{
	__u64 ids = bpf_get_current_uid_gid();
	__u32 uid = (__u32)ids, gid = (__u32)(ids >> 32);

	return bpf_map_lookup_elem(&inbound_proxy_uids, &uid) ||
	       bpf_map_lookup_elem(&inbound_proxy_gids, &gid);
}

static __always_inline int post_bind(struct bpf_sock *sk)
{
	struct inbound_config *cfg;
	__u32 zero = 0;
	__u64 cookie;
	__u8 one = 1;

	if (sk->type != SOCK_STREAM || sk->protocol != IPPROTO_TCP)
		return 1;
	cfg = bpf_map_lookup_elem(&inbound_config, &zero);
	if (!cfg || sk->src_port != cfg->capture_port || !is_proxy())
		return 1;
	/* A listener of another namespace is not the pod's proxy's. */
	if (cfg->netns_cookie && bpf_get_netns_cookie(sk) != cfg->netns_cookie)
		return 1;
	cookie = bpf_get_socket_cookie(sk);
	bpf_map_update_elem(&inbound_bound, &cookie, &one, BPF_ANY);
	return 1;
}

/* Whether `netns` is the pod's network namespace (or the capture names none). */
static __always_inline int in_pod_netns(__u64 netns)
{
	__u32 zero = 0;
	struct inbound_config *cfg = bpf_map_lookup_elem(&inbound_config, &zero);

	return cfg && (!cfg->netns_cookie || cfg->netns_cookie == netns);
}

SEC("cgroup/post_bind4")
int nftmesh_in_post_bind4(struct bpf_sock *sk)
{
	return post_bind(sk);
}

SEC("cgroup/post_bind6")
int nftmesh_in_post_bind6(struct bpf_sock *sk)
{
	return post_bind(sk);
}

static __always_inline void mapped(__u32 out[4], __u32 v4)
{
	out[0] = 0;
	out[1] = 0;
	out[2] = bpf_htonl(0xffff);
	out[3] = v4;
}

/* Whether nf_tables' inbound chain would capture TCP to `port`. */
static __always_inline int in_bitmap(void *map, __u32 port)
{
	__u32 word = (port >> 6) & (INBOUND_PORT_WORDS - 1);
	__u64 *bits = bpf_map_lookup_elem(map, &word);

	return bits && ((*bits >> (port & 63)) & 1);
}

static __always_inline int port_steered(__u32 port)
{
	return in_bitmap(&inbound_ports, port);
}

/* `istio-output` for a TCP connect of the pod to one of its own addresses (its packets leave
 * over lo), as far as the inbound port is concerned: LOCAL_INBOUND when the chain jumps to
 * `istio-in-redirect` (the proxy calling its own pod: a proxy owner, a destination outside the
 * host loopback range / ::1, not the tunnel port, nor 53 for a uid with DNS capture), else
 * LOCAL_PASS. `key` is the connect's tuple as the listener side sees it; uid and gid are the
 * connecting thread's (sock_ops runs TCP_CONNECT_CB in connect()). */
static __always_inline __u8 self_call(struct steered_key *key)
{
	struct inbound_config *cfg;
	struct inbound_owner *o;
	__u32 zero = 0, i, dport, v4, mapped_v4, loop_dst;
	__u64 ids;
	__u32 uid, gid;
	int match, others_on_lo;

	cfg = bpf_map_lookup_elem(&inbound_config, &zero);
	if (!cfg)
		return LOCAL_PASS;
	dport = key->local_port;
	if (in_bitmap(&inbound_out_excluded, dport))
		return LOCAL_PASS;
	mapped_v4 = !key->local[0] && !key->local[1] && key->local[2] == bpf_htonl(0xffff);
	v4 = key->local[3];
	/* The passthrough source. */
	if (mapped_v4 && key->remote[3] == bpf_htonl(0x7f000006) && !key->remote[0] &&
	    !key->remote[1] && key->remote[2] == bpf_htonl(0xffff))
		return LOCAL_PASS;
	if (!mapped_v4 && cfg->ipv6 && !key->remote[0] && !key->remote[1] && !key->remote[2] &&
	    key->remote[3] == bpf_htonl(6))
		return LOCAL_PASS;
	if (mapped_v4)
		loop_dst = (v4 & cfg->host_lo_mask) == cfg->host_lo_addr;
	else
		loop_dst = !key->local[0] && !key->local[1] && !key->local[2] &&
			   key->local[3] == bpf_htonl(1);
	ids = bpf_get_current_uid_gid();
	uid = (__u32)ids;
	gid = (__u32)(ids >> 32);
	for (i = 0; i < INBOUND_MAX_OWNERS; i++) {
		if (i >= cfg->owners)
			break;
		o = bpf_map_lookup_elem(&inbound_owners, &i);
		if (!o)
			break;
		match = o->is_uid ? uid == o->id : gid == o->id;
		if (match && (mapped_v4 || cfg->ipv6) && !loop_dst &&
		    dport != cfg->tunnel_port &&
		    !(cfg->dns && o->is_uid && cfg->tunnel_port != 53 && dport == 53))
			return LOCAL_INBOUND;
		/* `istio-output`'s "other owners on lo" return (absent when an included CIDR is a
		 * loopback address; not for port 53 with DNS capture). */
		others_on_lo = !(cfg->loopback_included || (cfg->dns && dport == 53));
		if (others_on_lo && !match)
			return LOCAL_PASS;
		if (match)
			return LOCAL_PASS;
	}
	return LOCAL_PASS;
}

/* The steered_key of a sock_ops socket: its remote end as `remote`, or with `reversed` (a
 * connecting socket, as the listener side will see it) its local end. */
static __always_inline int skops_key(struct bpf_sock_ops *skops, struct steered_key *key,
				     int reversed)
{
	__u32 family, l4, r4, l[4], r[4];
	__u16 lport, rport;

	/* Every field loaded once, unconditionally, each made opaque (barrier_var): clang would
	 * otherwise load through a selected context address, which the verifier refuses. */
	family = skops->family;
	l4 = skops->local_ip4;
	barrier_var(l4);
	r4 = skops->remote_ip4;
	barrier_var(r4);
	l[0] = skops->local_ip6[0];
	barrier_var(l[0]);
	l[1] = skops->local_ip6[1];
	barrier_var(l[1]);
	l[2] = skops->local_ip6[2];
	barrier_var(l[2]);
	l[3] = skops->local_ip6[3];
	barrier_var(l[3]);
	r[0] = skops->remote_ip6[0];
	barrier_var(r[0]);
	r[1] = skops->remote_ip6[1];
	barrier_var(r[1]);
	r[2] = skops->remote_ip6[2];
	barrier_var(r[2]);
	r[3] = skops->remote_ip6[3];
	barrier_var(r[3]);
	if (family == AF_INET) {
		mapped(l, l4);
		mapped(r, r4);
	} else if (family != AF_INET6) {
		return 0;
	}
	lport = (__u16)skops->local_port;
	rport = (__u16)bpf_ntohl(skops->remote_port);
	if (reversed) {
		__builtin_memcpy(key->remote, l, sizeof(l));
		__builtin_memcpy(key->local, r, sizeof(r));
		key->remote_port = lport;
		key->local_port = rport;
	} else {
		__builtin_memcpy(key->remote, r, sizeof(r));
		__builtin_memcpy(key->local, l, sizeof(l));
		key->remote_port = rport;
		key->local_port = lport;
	}
	return 1;
}

SEC("sockops")
int nftmesh_in_sockops(struct bpf_sock_ops *skops)
{
	struct steered_key key = {};
	struct bpf_sock *sk;
	__u64 cookie;
	__u32 slot;
	__u8 *mark, local;

	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_LISTEN_CB:
		cookie = bpf_get_socket_cookie(skops);
		if (!bpf_map_lookup_elem(&inbound_bound, &cookie))
			return 1;
		bpf_map_delete_elem(&inbound_bound, &cookie);
		slot = (skops->family == AF_INET ? LISTENER_V4 : LISTENER_V6) +
		       (__u32)(cookie % LISTENER_SLOTS);
		bpf_sock_map_update(skops, &inbound_listeners, &slot, BPF_ANY);
		return 1;
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		/* A connect from the pod, its SYN not sent yet: if it is to the pod itself, sk_lookup
		 * lets it through, as nf_tables' inbound chain never sees the pod's own connections.
		 * A connect of the cgroup's processes from another namespace is not the pod's. */
		if (!in_pod_netns(bpf_get_netns_cookie(skops)))
			return 1;
		if (skops_key(skops, &key, 1)) {
			local = self_call(&key);
			bpf_map_update_elem(&inbound_local, &key, &local, BPF_ANY);
		}
		return 1;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		if (!skops_key(skops, &key, 0) || !bpf_map_lookup_elem(&inbound_steered, &key))
			return 1;
		bpf_map_delete_elem(&inbound_steered, &key);
		sk = skops->sk;
		if (!sk)
			return 1;
		mark = bpf_sk_storage_get(&inbound_marked, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (mark)
			*mark = 1;
		return 1;
	}
	return 1;
}

/* The listener in the first occupied slot from `first` (LISTENER_V4 or LISTENER_V6), held (the
 * caller releases it), or NULL. */
static __always_inline struct bpf_sock *listener(__u32 first)
{
	struct bpf_sock *sk;
	__u32 i, slot;

	for (i = 0; i < LISTENER_SLOTS; i++) {
		slot = first + i;
		sk = bpf_map_lookup_elem(&inbound_listeners, &slot);
		if (sk)
			return sk;
	}
	return NULL;
}

SEC("sk_lookup")
int nftmesh_in_sk_lookup(struct bpf_sk_lookup *ctx)
{
	struct steered_key key = {};
	struct bpf_sock *sk;
	__u32 slot, family, port;
	__u8 one = 1, *local;
	long err;

	if (ctx->protocol != IPPROTO_TCP)
		return SK_PASS;
	family = ctx->family;
	port = ctx->local_port;
	if (family == AF_INET) {
		mapped(key.remote, ctx->remote_ip4);
		mapped(key.local, ctx->local_ip4);
		slot = LISTENER_V4;
	} else if (family == AF_INET6) {
		key.remote[0] = ctx->remote_ip6[0];
		key.remote[1] = ctx->remote_ip6[1];
		key.remote[2] = ctx->remote_ip6[2];
		key.remote[3] = ctx->remote_ip6[3];
		key.local[0] = ctx->local_ip6[0];
		key.local[1] = ctx->local_ip6[1];
		key.local[2] = ctx->local_ip6[2];
		key.local[3] = ctx->local_ip6[3];
		slot = LISTENER_V6;
	} else {
		return SK_PASS;
	}
	key.remote_port = bpf_ntohs(ctx->remote_port);
	key.local_port = (__u16)port;
	/* Connections from this namespace are not inbound for nf_tables: its nat prerouting never
	 * sees them (conntrack bound them in output, where `istio-output` decides). A connect of
	 * the pod's cgroup was decided at TCP_CONNECT_CB (map `inbound_local`): through, or to the
	 * inbound listener when `istio-output` would send it there (the proxy calling its pod). */
	local = bpf_map_lookup_elem(&inbound_local, &key);
	if (local && *local == LOCAL_PASS)
		return SK_PASS;
	if (!local) {
		/* Other local connections: those to a loopback address arrive on lo (those to
		 * another address of the pod report the device holding it: inet_iif gives the
		 * route's fib device). */
		if (ctx->ingress_ifindex == LOOPBACK_IFINDEX)
			return SK_PASS;
		/* The passthrough source (the proxy's connects to the app). */
		if (family == AF_INET && key.remote[3] == bpf_htonl(0x7f000006))
			return SK_PASS;
		if (family == AF_INET6 && !key.remote[0] && !key.remote[1] && !key.remote[2] &&
		    key.remote[3] == bpf_htonl(6))
			return SK_PASS;
		if (!port_steered(port))
			return SK_PASS;
	}
	sk = listener(slot);
	if (!sk && family == AF_INET)
		/* A dual-stack IPv6 listener takes IPv4 too (bpf_sk_assign refuses a v6-only one). */
		sk = listener(LISTENER_V6);
	/* Fail closed: no listener, no connection (the kernel answers with a reset). */
	if (!sk)
		return SK_DROP;
	err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	if (err)
		return SK_DROP;
	bpf_map_update_elem(&inbound_steered, &key, &one, BPF_ANY);
	return SK_PASS;
}

/* The local address of a marked IPv6 socket, as IP6T_SO_ORIGINAL_DST answers. */
static __always_inline int getsockopt6(struct bpf_sockopt *ctx, struct bpf_sock *sk)
{
	struct sockaddr_in6 *sa = ctx->optval;

	if ((void *)(sa + 1) > ctx->optval_end)
		return 1;
	sa->sin6_family = AF_INET6;
	sa->sin6_port = bpf_htons((__u16)sk->src_port);
	sa->sin6_flowinfo = 0;
	sa->sin6_addr.in6_u.u6_addr32[0] = sk->src_ip6[0];
	sa->sin6_addr.in6_u.u6_addr32[1] = sk->src_ip6[1];
	sa->sin6_addr.in6_u.u6_addr32[2] = sk->src_ip6[2];
	sa->sin6_addr.in6_u.u6_addr32[3] = sk->src_ip6[3];
	sa->sin6_scope_id = 0;
	ctx->optlen = sizeof(*sa);
	/* clang would merge the optlen and retval stores into one 8-byte store, which the
	 * verifier rejects. */
	barrier();
	ctx->retval = 0;
	return 1;
}

SEC("cgroup/getsockopt")
int nftmesh_in_getsockopt(struct bpf_sockopt *ctx)
{
	struct sockaddr_in *sa;
	struct bpf_sock *sk;
	__u32 family, addr, m0, m1, m2, m3;

	sk = ctx->sk;
	/* The kernel's own answer stands: conntrack's, if something (a nat table) tracks the
	 * connection, is right, and after a REDIRECT the local address is not. */
	if (!sk || ctx->retval == 0)
		return 1;
	family = sk->family;
	if (ctx->level == SOL_IPV6 && ctx->optname == IP6T_SO_ORIGINAL_DST) {
		if (family != AF_INET6)
			return 1;
		if (!bpf_sk_storage_get(&inbound_marked, sk, 0, 0))
			return 1;
		return getsockopt6(ctx, sk);
	}
	if (ctx->level != SOL_IP || ctx->optname != SO_ORIGINAL_DST)
		return 1;
	/* Each field loaded once, unconditionally: clang would otherwise select a field's
	 * address and load through it, which the verifier refuses (no pointer arithmetic on a
	 * socket). */
	addr = sk->src_ip4;
	m0 = sk->src_ip6[0];
	m1 = sk->src_ip6[1];
	m2 = sk->src_ip6[2];
	m3 = sk->src_ip6[3];
	barrier_var(addr);
	barrier_var(m3);
	if (family == AF_INET6 && !m0 && !m1 && m2 == bpf_htonl(0xffff))
		/* A dual-stack listener's IPv4 connection. */
		addr = m3;
	else if (family != AF_INET)
		return 1;
	if (!bpf_sk_storage_get(&inbound_marked, sk, 0, 0))
		return 1;
	sa = ctx->optval;
	if ((void *)(sa + 1) > ctx->optval_end)
		return 1;
	sa->sin_family = AF_INET;
	sa->sin_port = bpf_htons((__u16)sk->src_port);
	sa->sin_addr.s_addr = addr;
	__builtin_memset(sa->__pad, 0, sizeof(sa->__pad));
	ctx->optlen = sizeof(*sa);
	barrier();
	ctx->retval = 0;
	return 1;
}

char _license[] SEC("license") = "GPL";
