/* The layout shared by bpf/accel.c and user space (src/accel.rs mirrors it with #[repr(C)] and
 * the same field order; a change here is a change there). */
#ifndef NFTMESH_ACCEL_H
#define NFTMESH_ACCEL_H

#include <linux/types.h>

/* Key of map `accel_socks`: one end of an accelerated connection as that socket sees itself.
 * Addresses as IPv6 in network order (an IPv4 address as ::ffff:a.b.c.d, so an IPv4 socket
 * and a dual-stack one reaching it over IPv4 key alike), ports in host order. The peer of a
 * socket is found under the same key with local and remote swapped. */
struct accel_key {
	__u32 local[4];
	__u32 remote[4];
	__u16 local_port;
	__u16 remote_port;
};

#endif
