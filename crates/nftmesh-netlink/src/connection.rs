//! [`Connection`]: one netfilter netlink socket, kept open and reused for applies, listings and
//! cleanups in one network namespace.
//!
//! Closing a netfilter netlink socket costs milliseconds (the kernel waits out an RCU grace
//! period), so callers keep a `Connection` for as long as they manage the namespace.
//!
//! `impl Connection` is split by concern, one file each: writing (this file: applies, table
//! deletion, the commit cache), listing objects (`listing.rs`: tables, chains, sets, set
//! elements) and reading rules back into the model (`dump.rs`). All three talk through the
//! one `socket::Socket` a connection holds.

use crate::codec::numbers::hook_number;
use crate::codec::objects::{LiveChain, LiveSet, LiveTable};
use crate::codec::sys::*;
use crate::error::NetlinkError;
use crate::retry::until_not_refused;
use crate::socket::Socket;
use crate::transaction::{LiveState, Removal, TableOwner, Transaction};
use crate::transport::Transport;
use nftmesh_model::ruleset::{Family, Policy, Ruleset};

/// What an apply did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApplyReport {
    /// Netlink messages in the one transaction (begin and end included).
    pub messages: usize,
    /// Bytes sent.
    pub bytes: usize,
    /// Chains deleted because the new ruleset no longer has them.
    pub deleted_chains: Vec<String>,
    /// Tables deleted in the same transaction (as `family name`).
    pub deleted_tables: Vec<String>,
    /// Attempts made (more than one when another writer changed the ruleset meanwhile).
    pub attempts: u32,
}

/// One netfilter netlink socket in the namespace it was opened in: applies rulesets as one
/// transaction each, lists and dumps tables, deletes them. Keep it for as long as you manage
/// the namespace; it can move to another thread.
///
/// ```no_run
/// use nftmesh_model::{compile, CaptureConfig};
/// use nftmesh_netlink::{netns, Connection};
///
/// let report = netns::run_in_new(|| {
///     let mut conn = Connection::open()?;
///     let report = conn.apply(&compile(&CaptureConfig::sidecar()))?;
///     let live = conn.dump_ruleset(&[(nftmesh_model::Family::Inet, "istio-proxy-nat".into())])?;
///     assert_eq!(live.tables.len(), 1);
///     Ok::<_, nftmesh_netlink::NetlinkError>(report)
/// })??;
/// println!("one transaction of {} messages", report.messages);
/// # Ok::<(), nftmesh_netlink::NetlinkError>(())
/// ```
pub struct Connection {
    pub(crate) socket: Socket,
    /// What this connection's last apply committed: the generation after it and the live state
    /// of its tables. Valid while nobody else commits; the generation in the next batch makes
    /// the kernel refuse it otherwise (ERESTART), and the state is then read again.
    committed: Option<Committed>,
}

/// The state of the tables a committed apply wrote, as the kernel holds it right after.
struct Committed {
    genid: u32,
    tables: Vec<(Family, String)>,
    live: LiveState,
}

impl Committed {
    /// The state `ruleset` leaves once committed at generation `genid - 1` over `before`,
    /// its tables declared with `owner` by the socket with port id `port` (with
    /// [`TableOwner::None`] a table keeps the flags and owner it had).
    fn after(
        ruleset: &Ruleset,
        genid: u32,
        before: &LiveState,
        owner: TableOwner,
        port: u32,
    ) -> Self {
        let mut live = LiveState::default();
        for t in &ruleset.tables {
            let was = before
                .tables
                .iter()
                .find(|l| l.family == t.family && l.name == t.name);
            let (flags, owned_by) = match (owner, was) {
                (TableOwner::None, Some(l)) => (l.flags, l.owner),
                (TableOwner::None, None) => (0, None),
                (o, _) => (o.flags(), Some(port)),
            };
            live.tables.push(LiveTable {
                family: t.family,
                name: t.name.clone(),
                handle: 0,
                flags,
                owner: owned_by,
            });
            for c in &t.chains {
                live.chains.push((
                    t.family,
                    LiveChain {
                        table: t.name.clone(),
                        name: c.name.clone(),
                        handle: 0,
                        hook: c.base.map(|b| (hook_number(b.hook), b.priority)),
                        kind: c
                            .base
                            .map(|b| b.kind.keyword().to_string())
                            .unwrap_or_default(),
                        policy: match c.base.map(|b| b.policy) {
                            Some(Policy::Drop) => NF_DROP as u32,
                            _ => NF_ACCEPT as u32,
                        },
                    },
                ));
            }
            for set in &t.sets {
                live.sets.push((
                    t.family,
                    LiveSet {
                        table: t.name.clone(),
                        name: set.name.clone(),
                        flags: 0,
                        key_type: 0,
                        key_len: 0,
                    },
                ));
            }
        }
        Committed {
            genid,
            tables: ruleset
                .tables
                .iter()
                .map(|t| (t.family, t.name.clone()))
                .collect(),
            live,
        }
    }

    /// Whether this state can stand for the live one when applying `ruleset`: every table
    /// `ruleset` writes is one this knows.
    fn covers(&self, ruleset: &Ruleset) -> bool {
        ruleset.tables.iter().all(|t| {
            self.tables
                .iter()
                .any(|(f, n)| *f == t.family && *n == t.name)
        })
    }
}

impl Connection {
    /// Close the socket only after this process has exited (see
    /// `os::release_after_exit`): for a command that is about to exit, so that the
    /// kernel's deferred cleanup of a committed transaction is not waited for. The transaction
    /// itself is complete (acknowledged) before this is called.
    pub fn close_after_exit(self) {
        let Some(fd) = self.socket.transport.raw_fd() else {
            return;
        };
        let fd = crate::os::dup_owned(fd);
        drop(self);
        if let Ok(fd) = fd {
            crate::os::release_after_exit(fd);
        }
    }

    /// The netlink port id of this connection's socket: the kernel reports it as the owner of
    /// the tables this connection declared owned ([`crate::LiveTable::owner`]) and as the
    /// sender of the notifications of its commits.
    pub fn port_id(&self) -> u32 {
        self.socket.transport.port_id()
    }

    /// The strongest [`TableOwner`] the running kernel accepts: [`TableOwner::OwnerPersist`]
    /// from 6.9, [`TableOwner::Owner`] from 5.12, else [`TableOwner::None`]. Found once per
    /// process by declaring a table with those flags in a throwaway network namespace (needs
    /// CAP_SYS_ADMIN), where `EOPNOTSUPP` can only mean that the kernel lacks the flag: in a
    /// namespace holding the table it would also be the answer to a flag change it refuses.
    pub fn table_owner_support() -> Result<TableOwner, NetlinkError> {
        static SUPPORT: std::sync::OnceLock<TableOwner> = std::sync::OnceLock::new();
        if let Some(s) = SUPPORT.get() {
            return Ok(*s);
        }
        let found = crate::netns::run_in_new(probe_table_owner)??;
        Ok(*SUPPORT.get_or_init(|| found))
    }

    /// Open a socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        Ok(Connection {
            socket: Socket::open()?,
            committed: None,
        })
    }

    /// A connection over another [`Transport`]: a [`Recording`](crate::transport::Recording)
    /// of a real socket, a [`Replay`](crate::transport::Replay) of one, or a
    /// [`FakeKernel`](crate::transport::FakeKernel). Its first sequence number is `first_seq`
    /// (a socket opened by [`Connection::open`] starts from the clock), so that a replay sends
    /// the bytes recorded.
    pub fn over(transport: Box<dyn Transport>, first_seq: u32) -> Self {
        Connection {
            socket: Socket::over(transport, first_seq),
            committed: None,
        }
    }

    /// The ruleset generation id (changes with every committed transaction).
    pub fn generation(&mut self) -> Result<u32, NetlinkError> {
        self.socket.generation()
    }

    fn live_state(&mut self, ruleset: &Ruleset) -> Result<LiveState, NetlinkError> {
        let tables = self.tables()?;
        let mut live = LiveState {
            tables,
            ..LiveState::default()
        };
        for t in &ruleset.tables {
            if !live
                .tables
                .iter()
                .any(|l| l.family == t.family && l.name == t.name)
            {
                continue;
            }
            for c in self.chains(t.family, &t.name)? {
                live.chains.push((t.family, c));
            }
            for s in self.sets(t.family, &t.name)? {
                live.sets.push((t.family, s));
            }
        }
        Ok(live)
    }

    /// Make the tables of `ruleset` exactly as given, in ONE transaction (see
    /// [`Transaction::plan`]). Tables not in `ruleset` are not touched. If another writer
    /// commits between the read of the live state and the batch, the kernel refuses the batch
    /// and it is rebuilt and resent.
    pub fn apply(&mut self, ruleset: &Ruleset) -> Result<ApplyReport, NetlinkError> {
        self.apply_removing(ruleset, |_, _| Ok(Vec::new()))
    }

    /// [`Connection::apply`], but named sets the ruleset declares keep the elements they have
    /// live (see [`Transaction::plan_keeping_sets`]).
    pub fn apply_keeping_sets(&mut self, ruleset: &Ruleset) -> Result<ApplyReport, NetlinkError> {
        if ruleset.tables.is_empty() {
            return Ok(ApplyReport::default());
        }
        self.committed = None;
        until_not_refused(|attempt| {
            let (gen, live) = (self.generation()?, self.live_state(ruleset)?);
            let first = self.socket.next_seq(0);
            let tx = Transaction::plan_keeping_sets(ruleset, &live, Some(gen), first)?;
            self.send(&tx)?;
            Ok(ApplyReport {
                messages: tx.messages,
                bytes: tx.bytes.len(),
                deleted_chains: tx.deleted_chains,
                deleted_tables: tx.deleted_tables,
                attempts: attempt,
            })
        })
    }

    /// Add (`add`) or delete the elements of `set` to or from the named set of that name in
    /// table `family table`, in one small transaction that touches no rule.
    pub fn update_set(
        &mut self,
        family: Family,
        table: &str,
        set: &nftmesh_model::ruleset::Set,
        add: bool,
    ) -> Result<ApplyReport, NetlinkError> {
        self.committed = None;
        until_not_refused(|attempt| {
            let gen = self.generation()?;
            let first = self.socket.next_seq(0);
            let tx = Transaction::set_elements(family, table, set, add, Some(gen), first)?;
            self.send(&tx)?;
            Ok(ApplyReport {
                messages: tx.messages,
                bytes: tx.bytes.len(),
                attempts: attempt,
                ..ApplyReport::default()
            })
        })
    }

    /// [`Connection::apply`], deleting in the same transaction what `removals` finds (called
    /// on every attempt with the live state the batch is built on, so every table present is
    /// in it, against the same generation as the batch).
    pub fn apply_removing(
        &mut self,
        ruleset: &Ruleset,
        removals: impl FnMut(&mut Self, &LiveState) -> Result<Vec<Removal>, NetlinkError>,
    ) -> Result<ApplyReport, NetlinkError> {
        self.apply_owned(ruleset, TableOwner::None, removals)
    }

    /// [`Connection::apply_removing`], declaring the ruleset's tables with `owner`'s flags
    /// (see [`Transaction::plan_owned`]): with [`TableOwner::Owner`] or
    /// [`TableOwner::OwnerPersist`] this connection's socket becomes their owner, and only it
    /// can change or delete them until it closes. Another socket's owned table is refused
    /// ([`NetlinkError::is_owned_elsewhere`]); an orphaned persistent one is claimed. The
    /// caller picks a flag the kernel has ([`Connection::table_owner_support`]); one it lacks
    /// is refused (`EOPNOTSUPP`) and nothing is applied.
    pub fn apply_owned(
        &mut self,
        ruleset: &Ruleset,
        owner: TableOwner,
        mut removals: impl FnMut(&mut Self, &LiveState) -> Result<Vec<Removal>, NetlinkError>,
    ) -> Result<ApplyReport, NetlinkError> {
        if ruleset.tables.is_empty() {
            return Ok(ApplyReport::default());
        }
        until_not_refused(|attempt| {
            // After our own commit nothing needs reading: the batch carries the generation it
            // assumes, and the kernel refuses it if anyone committed since.
            let (gen, live) = match self.committed.take() {
                Some(c) if c.covers(ruleset) => (c.genid, c.live),
                _ => (self.generation()?, self.live_state(ruleset)?),
            };
            let extra = removals(self, &live)?;
            let first = self.socket.next_seq(0);
            let tx = Transaction::plan_owned(ruleset, &live, &extra, owner, Some(gen), first)?;
            self.send(&tx)?;
            let port = self.port_id();
            self.committed = Some(Committed::after(
                ruleset,
                gen.wrapping_add(1),
                &live,
                owner,
                port,
            ));
            Ok(ApplyReport {
                messages: tx.messages,
                bytes: tx.bytes.len(),
                deleted_chains: tx.deleted_chains,
                deleted_tables: tx.deleted_tables,
                attempts: attempt,
            })
        })
    }

    /// Forget what this connection's last apply committed, so that the next apply reads the
    /// generation and the live state instead of assuming them (for a caller that knows
    /// another process committed since: its batch would be refused once and sent again).
    pub fn forget_commit(&mut self) {
        self.committed = None;
    }

    /// Delete the given tables (those that exist) in one transaction; returns how many.
    /// Every other table is left alone.
    pub fn delete_tables(&mut self, tables: &[(Family, String)]) -> Result<usize, NetlinkError> {
        self.committed = None;
        until_not_refused(|_| {
            let gen = self.generation()?;
            let live = self.tables()?;
            let mut doomed: Vec<(Family, String)> = Vec::new();
            for t in tables {
                if live.iter().any(|l| l.family == t.0 && l.name == t.1) && !doomed.contains(t) {
                    doomed.push(t.clone());
                }
            }
            if doomed.is_empty() {
                return Ok(0);
            }
            let first = self.socket.next_seq(doomed.len() + 2);
            let tx = Transaction::delete_tables(&doomed, Some(gen), first)?;
            self.send(&tx)?;
            Ok(doomed.len())
        })
    }

    /// Send `tx` and wait for the kernel's answer; the socket's next sequence number follows
    /// the transaction's last.
    pub(crate) fn send(&mut self, tx: &Transaction) -> Result<(), NetlinkError> {
        let next = tx
            .objects
            .last()
            .map(|(s, _)| s + 1)
            .unwrap_or(self.socket.seq);
        self.socket.seq = next;
        self.socket.send_batch(&tx.bytes, &tx.objects, tx.last_seq)
    }
}

/// The name of the table [`Connection::table_owner_support`] declares in its throwaway
/// namespace.
const OWNER_PROBE_TABLE: &str = "nftmesh-owner-probe";

/// In a fresh network namespace: the strongest [`TableOwner`] a table can be created with.
fn probe_table_owner() -> Result<TableOwner, NetlinkError> {
    let mut conn = Connection::open()?;
    let probe = Ruleset {
        tables: vec![nftmesh_model::ruleset::Table::new(
            Family::Inet,
            OWNER_PROBE_TABLE,
        )],
    };
    for owner in [TableOwner::OwnerPersist, TableOwner::Owner] {
        match conn.apply_owned(&probe, owner, |_, _| Ok(Vec::new())) {
            Ok(_) => return Ok(owner),
            Err(NetlinkError::Rejected { errno, .. }) if errno == libc::EOPNOTSUPP => {}
            Err(e) => return Err(e),
        }
    }
    Ok(TableOwner::None)
}
