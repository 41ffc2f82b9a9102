//! The kernel's limits on what one nf_tables object may hold, in one place: the netlink
//! encoder checks every object against them before it writes a byte, and the edges (config
//! validation, the iptables parser and translator) refuse input over them with their own
//! positions, before anything reaches the encoder.

/// The longest table, chain or set name, in bytes without the terminating NUL
/// (`NFT_NAME_MAXLEN` - 1).
pub const NAME_MAX: usize = 255;
/// The most expressions one rule may hold (the kernel's `NFT_RULE_MAXEXPRS`); a match or
/// statement takes one to four.
pub const RULE_EXPRS_MAX: usize = 128;
/// The longest rule comment in bytes (as `nft` takes it; stored in the rule's user data, which
/// the kernel bounds at 256 bytes).
pub const COMMENT_MAX: usize = 128;
/// The longest log prefix in bytes without NUL (`NF_LOG_PREFIXLEN` - 1).
pub const LOG_PREFIX_MAX: usize = 127;
/// The longest interface name in bytes (`IFNAMSIZ` - 1).
pub const IFNAME_MAX: usize = 15;
/// The most single ports an anonymous set holds as an exact (non-interval) set, as `nft` makes
/// it; a larger one is an interval set (the kernel keeps exact sets of 2-byte keys in a bitmap
/// set whose insert scans every element already there: 10 000 ports took a second to load).
/// The canonical form follows the same rule.
pub const PORT_SET_EXACT_MAX: usize = 64;
