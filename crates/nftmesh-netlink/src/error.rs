//! Typed errors of the kernel I/O.

use std::fmt;

/// The nf_tables object a kernel error is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// The batch framing itself (begin/end messages).
    Batch,
    /// A table, as `family name`.
    Table {
        /// e.g. `inet nftmesh`.
        table: String,
    },
    /// A chain of a table.
    Chain {
        /// e.g. `inet nftmesh`.
        table: String,
        /// The chain's name.
        chain: String,
    },
    /// A set (named, or the anonymous set of a rule) or its elements.
    Set {
        /// e.g. `inet nftmesh`.
        table: String,
        /// The set's name; anonymous sets are named after their rule.
        set: String,
    },
    /// A rule, by its position in its chain and its nft rendering.
    Rule {
        /// e.g. `inet nftmesh`.
        table: String,
        /// The chain's name.
        chain: String,
        /// Zero-based index of the rule within the chain.
        index: usize,
        /// The rule as nft text.
        text: String,
    },
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Object::Batch => write!(f, "the batch framing"),
            Object::Table { table } => write!(f, "table {table}"),
            Object::Chain { table, chain } => write!(f, "chain {chain} of table {table}"),
            Object::Set { table, set } => write!(f, "set {set} of table {table}"),
            Object::Rule {
                table,
                chain,
                index,
                text,
            } => write!(
                f,
                "rule #{index} of chain {chain} in table {table} (`{text}`)"
            ),
        }
    }
}

/// What an errno from nf_tables means for the object it is about.
pub fn errno_meaning(errno: i32) -> &'static str {
    match errno {
        libc::ENOENT => "something it refers to does not exist (table, chain, set or jump target)",
        libc::EEXIST => "it already exists",
        libc::EBUSY => "it is in use (a rule jumps to it, or a set is referenced)",
        libc::EOPNOTSUPP => {
            "the kernel does not support it (a missing nf_tables module or feature)"
        }
        libc::EINVAL => "the kernel rejected its attributes as invalid",
        libc::ERANGE => "a value is out of range",
        libc::E2BIG | libc::EFBIG => "it is too large for the kernel",
        libc::ENOMEM => "the kernel ran out of memory",
        libc::ENOBUFS => "the netlink socket ran out of buffer space",
        libc::ENETDOWN => "the interface is down (a local route on lo needs lo up)",
        libc::ENOSPC => "the kernel ran out of handles or set space",
        libc::ELOOP => "the chains would form a loop",
        libc::EMLINK => "jumps would form a loop or nest too deep",
        libc::ERESTART => "the ruleset changed while this batch was prepared",
        libc::EPERM | libc::EACCES => {
            "permission denied: CAP_NET_ADMIN is needed in the network namespace"
        }
        _ => "the kernel refused it",
    }
}

/// What `EPERM` on one object of a batch means: its table is owned by another socket.
pub(crate) const OWNED_ELSEWHERE: &str = "its table is owned by another netlink socket \
     (nf_tables table flag `owner`): only that socket may change or delete it";

/// An error of the netlink backend. Each names what it is about: a kernel refusal the object
/// of the failing message, a limit the object and the limit.
///
/// ```
/// use nftmesh_model::ruleset::{Chain, Family, Ruleset, Table};
/// use nftmesh_netlink::{LiveState, NetlinkError, Object, Transaction};
///
/// let mut table = Table::new(Family::Inet, "x".repeat(300));
/// table.chains.push(Chain { name: "c".into(), base: None, rules: vec![] });
/// match Transaction::plan(&Ruleset { tables: vec![table] }, &LiveState::default(), None, 1) {
///     Err(NetlinkError::TooLarge { object, size, max, .. }) => {
///         assert!(matches!(*object, Object::Table { .. }));
///         assert_eq!((size, max), (300, 255));
///     }
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The process lacks CAP_NET_ADMIN in the target network namespace.
    #[error("permission denied while {during}: CAP_NET_ADMIN is needed in the network namespace")]
    Permission {
        /// What was being done.
        during: String,
    },
    /// The kernel rejected one object of a batch; nothing of the batch was applied.
    #[error("the kernel rejected {object}: {meaning} (errno {errno}); nothing was applied")]
    Rejected {
        /// The object the failing message created or changed.
        object: Object,
        /// The errno.
        errno: i32,
        /// [`errno_meaning`] of it.
        meaning: &'static str,
    },
    /// An object is over a limit of the kernel or of netlink (a name, a value, a comment,
    /// expressions per rule, ...); found before anything was sent, so nothing was applied.
    #[error("{object} is too large for the kernel: {size} {limit}, the limit is {max}; nothing was applied")]
    TooLarge {
        /// The object, as in [`NetlinkError::Rejected`].
        object: Box<Object>,
        /// Which limit it exceeds.
        limit: crate::codec::bounds::Limit,
        /// Its size.
        size: usize,
        /// The limit's value.
        max: usize,
    },
    /// A match or statement of the object has no kernel encoding (an unresolved owner name,
    /// an interface name the kernel would refuse, ...); nothing was sent.
    #[error("{object}: {source}; nothing was applied")]
    Lower {
        /// The rule or set it belongs to.
        object: Box<Object>,
        /// What cannot be encoded.
        #[source]
        source: crate::codec::lower::LowerError,
    },
    /// A message could not be built for the object (a NUL in a name, an allocation failure,
    /// an expression the encoder does not write); nothing was sent.
    #[error("{object} cannot be encoded: {source}; nothing was applied")]
    Encode {
        /// The object the message is about.
        object: Box<Object>,
        /// Why.
        #[source]
        source: crate::codec::bounds::BuildError,
    },
    /// Something read back from the kernel has no counterpart in the model.
    #[error("{object} holds something nftmesh's model cannot express: {name} ({detail})")]
    Unsupported {
        /// The kernel expression's name (`numgen`, `meta`, ...) or `set`.
        name: String,
        /// Where it was found.
        object: Box<Object>,
        /// What about it.
        detail: String,
    },
    /// A socket call failed.
    #[error("netlink {during} failed: {source}")]
    Io {
        /// What was being done.
        during: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel's reply did not parse.
    #[error("malformed netlink reply while {during}: {what}")]
    Malformed {
        /// What was being done.
        during: &'static str,
        /// What was wrong, and where.
        what: String,
    },
    /// The kernel did not answer in time.
    #[error("no netlink reply within {0:?} while waiting for the batch acknowledgement")]
    Timeout(std::time::Duration),
    /// The ruleset kept changing under concurrent writers; gave up after this many tries.
    #[error("the live ruleset changed during each of {0} attempts to apply")]
    Contended(u32),
    /// A kernel error not tied to one batch object (a dump or a route request).
    #[error("{during} failed: {meaning} (errno {errno})")]
    Kernel {
        /// What was being done.
        during: String,
        /// The errno.
        errno: i32,
        /// [`errno_meaning`] of it.
        meaning: &'static str,
    },
    /// Entering a network namespace failed.
    #[error("cannot enter network namespace {path}: {source}{}", netns_hint(.source))]
    Netns {
        /// The namespace path.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A path given as a network namespace is something else (a regular file, a directory, a
    /// FIFO, another kind of namespace); nothing was entered.
    #[error(
        "cannot enter network namespace {path}: it is not a network namespace but {what}: \
         give /proc/PID/ns/net or /var/run/netns/NAME"
    )]
    NotNetns {
        /// The path given.
        path: String,
        /// What it is instead, in words ("a regular file", "a mnt namespace", ...).
        what: String,
    },
}

/// What to do about an OS error entering a namespace: root (CAP_SYS_ADMIN) for EPERM.
fn netns_hint(source: &std::io::Error) -> &'static str {
    match source.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            " (entering another network namespace needs root: CAP_SYS_ADMIN, and \
             CAP_NET_ADMIN there to change its rules)"
        }
        _ => "",
    }
}

impl NetlinkError {
    /// A kernel errno for a whole operation (not one batch object).
    pub fn kernel(during: impl Into<String>, errno: i32) -> Self {
        let during = during.into();
        if errno == libc::EPERM || errno == libc::EACCES {
            NetlinkError::Permission { during }
        } else {
            NetlinkError::Kernel {
                during,
                errno,
                meaning: errno_meaning(errno),
            }
        }
    }

    /// An OS error, mapped to [`NetlinkError::Permission`] when it is EPERM/EACCES.
    pub fn io(during: &'static str, source: std::io::Error) -> Self {
        match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => NetlinkError::Permission {
                during: during.to_string(),
            },
            _ => NetlinkError::Io { during, source },
        }
    }

    /// A lowering error about `object`.
    pub fn lower(object: Object, source: crate::codec::lower::LowerError) -> Self {
        NetlinkError::Lower {
            object: Box::new(object),
            source,
        }
    }

    /// Whether this is the typed permission error.
    pub fn is_permission(&self) -> bool {
        matches!(self, NetlinkError::Permission { .. })
    }

    /// Whether the kernel refused an object because its table is owned by another netlink
    /// socket (`EPERM` on a table, chain, set or rule of a batch; see
    /// [`crate::TableOwner`]).
    pub fn is_owned_elsewhere(&self) -> bool {
        matches!(
            self,
            NetlinkError::Rejected { object, errno, .. }
                if *errno == libc::EPERM && *object != Object::Batch
        )
    }
}

impl crate::codec::bounds::BuildError {
    /// This error, about `object`: [`NetlinkError::TooLarge`] for a limit, else
    /// [`NetlinkError::Encode`].
    pub fn at(self, object: Object) -> NetlinkError {
        match self {
            crate::codec::bounds::BuildError::TooLarge { limit, size, max } => {
                NetlinkError::TooLarge {
                    object: Box::new(object),
                    limit,
                    size,
                    max,
                }
            }
            source => NetlinkError::Encode {
                object: Box::new(object),
                source,
            },
        }
    }
}
