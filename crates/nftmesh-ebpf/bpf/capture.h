/* The layouts shared by the BPF programs (capture.c) and user space (src/maps.rs mirrors each
 * struct with #[repr(C)] and the same field order; a change here is a change there). */
#ifndef NFTMESH_CAPTURE_H
#define NFTMESH_CAPTURE_H

#include <linux/types.h>

/* What the outbound decision needs that is not a set: one entry, index 0, of map `config`. */
struct capture_config {
	__u32 host_lo_addr;      /* host loopback range (127.0.0.1/32), network order */
	__u32 host_lo_mask;      /* its mask, network order */
	__u16 proxy_port;        /* outbound capture port, host order; 0 = capture nothing */
	__u8 include_all;        /* outbound_cidrs_include is "*" */
	__u8 loopback_included;  /* an included CIDR is a loopback address (Istio's HasLoopBackIP) */
	__u8 owner_groups;       /* OWNER_GROUPS_* */
	__u8 ipv6;               /* capture native IPv6 connects too (CaptureConfig::ipv6) */
	__u8 dns;                /* DNS_* */
	__u8 pad;
	__u16 dns_port;          /* DNS capture port (15053), host order */
	__u16 pad2;
	__u32 pad3;
	__u64 netns_cookie;      /* capture only in this network namespace; 0 = in every one */
};

/* DNS capture (CaptureConfig::dns as in effect): off, to the servers of map `dns_servers`, or
 * to every address. */
#define DNS_OFF 0
#define DNS_SERVERS 1
#define DNS_ALL 2

#define OWNER_GROUPS_ALL 0
#define OWNER_GROUPS_INCLUDE 1
#define OWNER_GROUPS_EXCLUDE 2

/* Key of the CIDR maps (LPM tries): prefix length, then the address in network order. */
struct v4_prefix {
	__u32 prefixlen;
	__u32 addr;
};

/* Where a redirected connection was going: address and port, both in network order. */
struct original_dst {
	__u32 addr;
	__u16 port;
	__u16 pad;
};

/* A redirected connection as the proxy's accepted socket sees it: the app's end (its remote
 * peer) and the proxy's end (its local address); addresses in network order, ports in host
 * order. */
struct v4_tuple {
	__u32 app_addr;
	__u32 proxy_addr;
	__u16 app_port;
	__u16 proxy_port;
};

/* Key of the IPv6 CIDR maps: prefix length, then the address in network order. */
struct v6_prefix {
	__u32 prefixlen;
	__u32 addr[4];
};

/* Where a redirected IPv6 connection was going: address and port, network order. */
struct original_dst6 {
	__u32 addr[4];
	__u16 port;
	__u16 pad;
};

/* A redirected IPv6 connection as the proxy's accepted socket sees it (as struct v4_tuple). */
struct v6_tuple {
	__u32 app_addr[4];
	__u32 proxy_addr[4];
	__u16 app_port;
	__u16 proxy_port;
};

/* What the app's getpeername() shows for a redirected socket (in its socket storage): the
 * original peer, IPv4 (family 4, addr[3]) or IPv6 (family 6); network order. */
struct original_peer {
	__u32 addr[4];
	__u16 port;
	__u8 family;
	__u8 pad;
};

/* Key of `dns_servers6`: an IPv6 address in network order. */
struct v6_addr {
	__u32 addr[4];
};

#endif
