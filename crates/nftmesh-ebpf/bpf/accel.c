// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* sk_msg acceleration of the connections the capture (capture.c) redirects to the proxy: the
 * bytes one end sends go straight to the other end's receive queue, skipping TCP/IP on
 * loopback. Off unless asked for (src/accel.rs, ../README.md): with it on, a blocking recv()
 * after shutdown(SHUT_WR) can return EAGAIN (a kernel bug, see the README).
 *
 * sockops   when a connection to the proxy port on loopback (127.0.0.1, ::1, or
 *           ::ffff:127.0.0.1 of a dual-stack socket) is established, both of its ends go into
 *           the SOCKHASH `accel_socks`: the app's socket at ACTIVE_ESTABLISHED (its remote end
 *           is the proxy port), the proxy's accepted socket at PASSIVE_ESTABLISHED (its local
 *           end is). The kernel removes a socket from a sockhash when it closes.
 * sk_msg    attached to `accel_socks` (so it runs for the sockets in it, and only those): a
 *           send is redirected to the ingress queue of the socket under the sender's key with
 *           its ends swapped, its peer; when the peer is not there (not established yet, or
 *           outside the cgroup) the bytes go the normal way.
 *
 * The proxy port is the read-only global `proxy_port`, set by the loader. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "accel.h"

#define AF_INET 2
#define AF_INET6 10

/* The outbound capture port (host order); 0 accelerates nothing. Set at load time. */
volatile const __u16 proxy_port = 0;

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, struct accel_key);
	__type(value, __u32);
} accel_socks SEC(".maps");

/* a.b.c.d (network order) as ::ffff:a.b.c.d. */
static __always_inline void mapped(__u32 *out, __u32 v4)
{
	out[0] = 0;
	out[1] = 0;
	out[2] = bpf_htonl(0xffff);
	out[3] = v4;
}

/* Whether `a` is where the capture sends connects: ::ffff:127.0.0.1 or ::1. */
static __always_inline int is_proxy_addr(const __u32 *a)
{
	if (a[0] != 0 || a[1] != 0)
		return 0;
	if (a[2] == bpf_htonl(0xffff) && a[3] == bpf_htonl(0x7f000001))
		return 1;
	return a[2] == 0 && a[3] == bpf_htonl(1);
}

SEC("sockops")
int nftmesh_accel_sockops(struct bpf_sock_ops *skops)
{
	struct accel_key key = {};
	__u32 op = skops->op;
	__u32 v4;

	if (op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	if (skops->family == AF_INET) {
		v4 = skops->local_ip4;
		barrier_var(v4);
		mapped(key.local, v4);
		v4 = skops->remote_ip4;
		barrier_var(v4);
		mapped(key.remote, v4);
	} else if (skops->family == AF_INET6) {
		key.local[0] = skops->local_ip6[0];
		key.local[1] = skops->local_ip6[1];
		key.local[2] = skops->local_ip6[2];
		key.local[3] = skops->local_ip6[3];
		key.remote[0] = skops->remote_ip6[0];
		key.remote[1] = skops->remote_ip6[1];
		key.remote[2] = skops->remote_ip6[2];
		key.remote[3] = skops->remote_ip6[3];
	} else {
		return 1;
	}
	key.local_port = (__u16)skops->local_port;
	key.remote_port = (__u16)bpf_ntohl(skops->remote_port);
	if (proxy_port == 0)
		return 1;
	if (op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB) {
		/* The app's socket: connected to the proxy port. */
		if (key.remote_port != proxy_port || !is_proxy_addr(key.remote))
			return 1;
	} else {
		/* The proxy's accepted socket: the proxy port is its own. */
		if (key.local_port != proxy_port || !is_proxy_addr(key.local))
			return 1;
	}
	bpf_sock_hash_update(skops, &accel_socks, &key, BPF_ANY);
	return 1;
}

SEC("sk_msg")
int nftmesh_accel_msg(struct sk_msg_md *msg)
{
	struct accel_key peer = {};
	__u32 v4;

	/* The peer's key: this socket's ends swapped. */
	if (msg->family == AF_INET) {
		v4 = msg->remote_ip4;
		barrier_var(v4);
		mapped(peer.local, v4);
		v4 = msg->local_ip4;
		barrier_var(v4);
		mapped(peer.remote, v4);
	} else if (msg->family == AF_INET6) {
		peer.local[0] = msg->remote_ip6[0];
		peer.local[1] = msg->remote_ip6[1];
		peer.local[2] = msg->remote_ip6[2];
		peer.local[3] = msg->remote_ip6[3];
		peer.remote[0] = msg->local_ip6[0];
		peer.remote[1] = msg->local_ip6[1];
		peer.remote[2] = msg->local_ip6[2];
		peer.remote[3] = msg->local_ip6[3];
	} else {
		return SK_PASS;
	}
	peer.local_port = (__u16)bpf_ntohl(msg->remote_port);
	peer.remote_port = (__u16)msg->local_port;
	/* SK_PASS with the redirect set when the peer is in the map; otherwise (SK_DROP, nothing
	 * set) the bytes go the normal way. */
	bpf_msg_redirect_hash(msg, &accel_socks, &peer, BPF_F_INGRESS);
	return SK_PASS;
}

char _license[] SEC("license") = "GPL";
