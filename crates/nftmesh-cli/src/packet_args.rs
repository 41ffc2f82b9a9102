//! A packet's description on the command line, shared by `explain` (one packet) and `trace`
//! (the packets to follow): its transport protocol, and its meta keys (the sending socket's
//! uid and gid, the interfaces, the mark), named and parsed the same way in both.

use nftmesh_model::expr::L4Proto;

/// The transport protocol: `tcp` or `udp`. Crate-private, as `explain`'s other value enums:
/// a doc comment on a value would be printed by `--help` as that value's help.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum ProtoArg {
    Tcp,
    Udp,
}

impl From<ProtoArg> for L4Proto {
    fn from(p: ProtoArg) -> Self {
        match p {
            ProtoArg::Tcp => L4Proto::Tcp,
            ProtoArg::Udp => L4Proto::Udp,
        }
    }
}

/// A packet's meta keys (nf_tables `meta skuid`, `skgid`, `iifname`, `oifname`, `mark`), with
/// the words of a packet `explain` describes; `trace` says them as a filter (its own help).
#[derive(clap::Args)]
pub struct MetaArgs {
    /// The uid of the sending socket (a local socket); none for a packet from the network.
    #[arg(long)]
    pub uid: Option<u32>,
    /// The gid of the sending socket (default: the uid).
    #[arg(long)]
    pub gid: Option<u32>,
    /// Input interface (default: eth0 for inbound packets).
    #[arg(long)]
    pub iif: Option<String>,
    /// Output interface (default: eth0 for outbound packets).
    #[arg(long)]
    pub oif: Option<String>,
    /// The packet mark (decimal or 0x hex).
    #[arg(long, value_parser = parse_mark)]
    pub mark: Option<u32>,
}

/// A packet mark on the command line: decimal or `0x` hex.
pub fn parse_mark(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("not a 32-bit mark: {s}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_decimal_or_hex() {
        assert_eq!(parse_mark("4096"), Ok(4096));
        assert_eq!(parse_mark("0x1000"), Ok(4096));
        assert_eq!(parse_mark("0XfFfF"), Ok(0xffff));
        assert!(parse_mark("0xzz").is_err());
        assert!(parse_mark("4294967296").is_err());
    }
}
