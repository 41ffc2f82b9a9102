//! The typed error of configuration parsing and validation.

use thiserror::Error;

/// Why a capture configuration was refused. Every variant names the field and the value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A port that is not an integer from 1 to 65535.
    #[error("{field}: invalid port {value:?}: expected an integer from 1 to 65535")]
    InvalidPort {
        /// The configuration field.
        field: &'static str,
        /// The offending text.
        value: String,
    },
    /// A CIDR that does not parse.
    #[error("{field}: invalid CIDR {value:?}: expected ADDRESS/PREFIX-LENGTH")]
    InvalidCidr {
        /// The configuration field.
        field: &'static str,
        /// The offending text.
        value: String,
    },
    /// An IPv6 value while IPv6 capture is off.
    #[error("{field}: IPv6 value {value:?} given but IPv6 is off")]
    Ipv6Disabled {
        /// The configuration field.
        field: &'static str,
        /// The offending value.
        value: String,
    },
    /// A packet mark that is zero or not a 32-bit integer.
    #[error("{field}: invalid mark {value:?}: expected an integer from 1 to 4294967295")]
    InvalidMark {
        /// The configuration field.
        field: &'static str,
        /// The offending text.
        value: String,
    },
    /// A routing table id that is zero, reserved or not a 32-bit integer.
    #[error("{field}: invalid route table {value:?}: expected an integer from 1 to 4294967295 other than 253, 254 and 255")]
    InvalidRouteTable {
        /// The configuration field.
        field: &'static str,
        /// The offending text.
        value: String,
    },
    /// A uid or gid list with no entry.
    #[error("{field}: the list is empty; at least one id is required")]
    EmptyIdList {
        /// The configuration field.
        field: &'static str,
    },
    /// A uid or gid that is not a 32-bit integer.
    #[error("{field}: invalid id {value:?}: expected an integer from 0 to 4294967295")]
    InvalidId {
        /// The configuration field.
        field: &'static str,
        /// The offending text.
        value: String,
    },
    /// An inbound interception mode other than REDIRECT or TPROXY.
    #[error("{field}: unknown interception mode {value:?}: expected REDIRECT or TPROXY")]
    UnknownMode {
        /// The configuration field.
        field: &'static str,
        /// The offending text.
        value: String,
    },
    /// An owner group name that the group database does not know.
    #[error("{field}: group {name:?} does not resolve to a gid (unknown groups can be passed through by name explicitly)")]
    UnknownGroup {
        /// The configuration field.
        field: &'static str,
        /// The unknown name.
        name: String,
    },
    /// Two settings that cannot hold together.
    #[error("{first} and {second} contradict each other: {reason}")]
    Contradictory {
        /// The first field.
        first: &'static str,
        /// The second field.
        second: &'static str,
        /// What clashes.
        reason: String,
    },
    /// A wildcard `*` where it has no meaning.
    #[error("{field}: the wildcard \"*\" is not allowed here")]
    WildcardNotAllowed {
        /// The configuration field.
        field: &'static str,
    },
    /// An interface name the kernel would refuse.
    #[error("{field}: invalid interface name {value:?}: {reason}")]
    InvalidInterface {
        /// The configuration field.
        field: &'static str,
        /// The offending name.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An IP address that does not parse.
    #[error("{field}: invalid IP address {value:?}")]
    InvalidAddress {
        /// The configuration field.
        field: &'static str,
        /// The offending text.
        value: String,
    },
    /// A boolean setting that is neither true nor false.
    #[error("{field}: invalid boolean {value:?}: expected true or false")]
    InvalidBool {
        /// The configuration field (or environment variable).
        field: &'static str,
        /// The offending text.
        value: String,
    },
    /// A configuration file that is not valid JSON for a capture configuration.
    #[error("config file, line {line}, column {column}: {message}")]
    File {
        /// Line of the error (1-based).
        line: usize,
        /// Column of the error (1-based).
        column: usize,
        /// What the parser expected.
        message: String,
    },
}
