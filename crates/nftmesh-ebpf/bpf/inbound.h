/* The layouts shared by the inbound programs (inbound.c) and user space (src/inbound/ mirrors
 * each struct with #[repr(C)] and the same field order; a change here is a change there). */
#ifndef NFTMESH_INBOUND_H
#define NFTMESH_INBOUND_H

#include <linux/types.h>

/* One entry, index 0, of map `inbound_config`. */
struct inbound_config {
	__u16 capture_port;     /* the proxy's inbound capture port (15006), host order */
	__u16 tunnel_port;      /* the inbound tunnel port (15008), host order */
	__u32 host_lo_addr;     /* host loopback range (127.0.0.1/32), network order */
	__u32 host_lo_mask;     /* its mask, network order */
	__u8 owners;            /* entries of map `inbound_owners` in use */
	__u8 ipv6;              /* CaptureConfig::ipv6 (the IPv6 self-call rule, ::6) */
	__u8 dns;               /* DNS capture in effect */
	__u8 loopback_included; /* an included outbound CIDR is a loopback address */
	__u64 netns_cookie;     /* the pod's network namespace: binds and connects of the
				 * cgroup's processes in another one are not the pod's */
};

/* The proxy's owners in `istio-output`'s order (uids, then gids): map `inbound_owners`. */
struct inbound_owner {
	__u32 id;
	__u32 is_uid;
};
#define INBOUND_MAX_OWNERS 16

/* Values of map `inbound_local` (the pod's own connects): let through, or steer to the
 * inbound listener (the proxy calling its own pod, `istio-output`'s `jump istio-in-redirect`). */
#define LOCAL_PASS 1
#define LOCAL_INBOUND 2

/* Which destination ports are steered: bit (port % 64) of entry (port / 64) of map
 * `inbound_ports` (1024 entries). Computed in user space from the inbound port selection, the
 * excluded ports and the tunnel port, as nf_tables' `istio-inbound` chain decides. */
#define INBOUND_PORT_WORDS 1024
/* The same layout for map `inbound_out_excluded`: CaptureConfig::outbound_ports_exclude, which
 * `istio-output` lets through before the self-call rule. */

/* The slots of map `inbound_listeners` (a SOCKMAP): LISTENER_SLOTS for the proxy's IPv4
 * listeners from LISTENER_V4, as many for its IPv6 ones from LISTENER_V6 (which take IPv4 too
 * when they are dual-stack and no IPv4 one is there). A listener takes the slot its socket
 * cookie hashes to, so the listeners of a SO_REUSEPORT group (one per proxy worker) mostly
 * sit in different slots and one closing leaves the others registered; sk_lookup takes the
 * first slot holding one, and the kernel's reuseport selection picks within its group. */
#define LISTENER_SLOTS 8
#define LISTENER_V4 0
#define LISTENER_V6 LISTENER_SLOTS

/* A connection steered to the listener, between sk_lookup and the accept (key of LRU map
 * `inbound_steered`): addresses in network order, IPv4 ones as IPv4-mapped IPv6
 * (::ffff:a.b.c.d), ports in host order. */
struct steered_key {
	__u32 remote[4];
	__u32 local[4];
	__u16 remote_port;
	__u16 local_port;
};

#endif
