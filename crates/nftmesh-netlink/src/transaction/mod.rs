//! [`Transaction`]: one nf_tables transaction as a value. It is planned from a desired
//! ruleset and the live state without a kernel, can be inspected (messages, objects, deleted
//! chains and tables) and read back into the model, and is only then sent
//! ([`crate::Connection`]).

use crate::codec::bounds;
use crate::codec::expr::encode_all;
use crate::codec::ir::WireSet;
use crate::codec::lower::{lower_rule, lower_set};
use crate::codec::nftnl::{BuildError, MsgWriter};
use crate::codec::numbers::{family_number, hook_number};
use crate::codec::objects::{LiveChain, LiveSet, LiveTable};
use crate::codec::sys::*;
use crate::error::{NetlinkError, Object};
use nftmesh_model::render::render_rule;
use nftmesh_model::ruleset::{Family, Policy, Ruleset, Table};

/// One nf_tables transaction, built and inspectable without a kernel: its messages (begin to
/// end, sequence numbers assigned) and, per sequence number, the object each message is
/// about, so that a kernel error maps back to a table, chain, set or rule. [`Transaction::plan`]
/// builds one from a desired ruleset and the live state; [`crate::Connection::apply`] plans and
/// sends one, and [`Transaction::read_back`] decodes one into the model without a kernel.
///
/// ```
/// use nftmesh_model::{compile, CaptureConfig};
/// use nftmesh_netlink::transaction::{LiveState, Transaction};
///
/// let desired = compile(&CaptureConfig::sidecar());
/// let tx = Transaction::plan(&desired, &LiveState::default(), None, 1).unwrap();
/// assert!(tx.messages > 2);
/// let back = tx.read_back().unwrap();
/// assert_eq!(back, nftmesh_model::canonical::canonical_ruleset(&desired));
/// ```
#[derive(Debug, Clone)]
pub struct Transaction {
    /// The messages, begin to end.
    pub bytes: Vec<u8>,
    /// (sequence number, object) of every message.
    pub objects: Vec<(u32, Object)>,
    /// Number of messages.
    pub messages: usize,
    /// The sequence number of the last message before the end (the one acknowledged).
    pub last_seq: u32,
    /// Chains the transaction deletes.
    pub deleted_chains: Vec<String>,
    /// Tables the batch deletes (as `family name`).
    pub deleted_tables: Vec<String>,
}

/// Who may change the tables an apply declares: nf_tables' table flags `owner`
/// (`NFT_TABLE_F_OWNER`, kernel 5.12) and `persist` (`NFT_TABLE_F_PERSIST`, kernel 6.9).
/// Also what the running kernel supports ([`crate::Connection::table_owner_support`]), ordered
/// from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum TableOwner {
    /// No flags: any process with CAP_NET_ADMIN in the namespace may change the tables.
    #[default]
    None,
    /// `owner`: only the applying socket may change or delete the tables (others get
    /// `EPERM`), and the kernel deletes them when that socket closes.
    Owner,
    /// `owner` + `persist`: only the applying socket may change or delete the tables; when it
    /// closes they stay, ownerless ([`crate::LiveTable::is_orphan`]), until a socket declares
    /// them owned again and so becomes their owner.
    OwnerPersist,
}

impl TableOwner {
    /// The `NFT_TABLE_F_*` flags a table is declared with.
    pub fn flags(self) -> u32 {
        match self {
            TableOwner::None => 0,
            TableOwner::Owner => NFT_TABLE_F_OWNER,
            TableOwner::OwnerPersist => NFT_TABLE_F_OWNER | NFT_TABLE_F_PERSIST,
        }
    }

    /// Whether the kernel accepts declaring `live` with these flags in place (in
    /// `nf_tables_updtable`, it never adds or drops `owner` or `persist` on a table, except
    /// that an orphan may be claimed with `owner` + `persist`). A table it does not accept
    /// that for is deleted and re-created in the same transaction. Another socket's table is
    /// refused (`EPERM`) whatever is sent.
    fn declares_in_place(self, live: &LiveTable) -> bool {
        let kept = live.flags & (NFT_TABLE_F_OWNER | NFT_TABLE_F_PERSIST);
        match self {
            TableOwner::None => true,
            _ if live.is_orphan() => self == TableOwner::OwnerPersist,
            _ => kept == self.flags(),
        }
    }
}

impl Transaction {
    /// The transaction that makes `ruleset`'s tables exactly as given, in place, over `live`
    /// (what the kernel holds of them; [`LiveState::default`] for a namespace without them):
    /// tables created or flushed, chains (re)declared (base chains keep their hook and handle),
    /// named sets replaced, every rule added with its anonymous sets, and chains and named sets
    /// the live tables have but `ruleset` does not deleted. `genid`, when given, makes the
    /// kernel refuse it (`ERESTART`) if the ruleset changed since it was read. Message
    /// sequence numbers start at `first_seq`. Every object is checked against the kernel's
    /// limits first ([`crate::bounds`]).
    pub fn plan(
        ruleset: &Ruleset,
        live: &LiveState,
        genid: Option<u32>,
        first_seq: u32,
    ) -> Result<Self, NetlinkError> {
        plan(
            ruleset,
            live,
            &[],
            false,
            TableOwner::None,
            genid,
            first_seq,
        )
    }

    /// [`Transaction::plan`], deleting `removals` too (objects outside the ruleset's tables:
    /// nftmesh tables a capture no longer has, Istio's iptables-nft chains), after the
    /// ruleset's messages.
    pub fn plan_removing(
        ruleset: &Ruleset,
        live: &LiveState,
        removals: &[Removal],
        genid: Option<u32>,
        first_seq: u32,
    ) -> Result<Self, NetlinkError> {
        plan(
            ruleset,
            live,
            removals,
            false,
            TableOwner::None,
            genid,
            first_seq,
        )
    }

    /// [`Transaction::plan_removing`], declaring the ruleset's tables with `owner`'s flags: a
    /// table that is new, already so owned or an orphan (claimed) is declared in place; a live
    /// table the kernel cannot give those flags in place (one anyone may change, or one with
    /// the other `persist` flag) is deleted and re-created in the same transaction, so nothing
    /// in between is ever observable. [`TableOwner::None`] is [`Transaction::plan_removing`]:
    /// tables keep whatever flags they have.
    pub fn plan_owned(
        ruleset: &Ruleset,
        live: &LiveState,
        removals: &[Removal],
        owner: TableOwner,
        genid: Option<u32>,
        first_seq: u32,
    ) -> Result<Self, NetlinkError> {
        plan(ruleset, live, removals, false, owner, genid, first_seq)
    }

    /// [`Transaction::plan`], except that a named set the ruleset declares and the live table
    /// has keeps its elements (it is not deleted and re-created; the ruleset's elements are
    /// added to it): for sets maintained element by element, like Istio ambient's probe sets.
    pub fn plan_keeping_sets(
        ruleset: &Ruleset,
        live: &LiveState,
        genid: Option<u32>,
        first_seq: u32,
    ) -> Result<Self, NetlinkError> {
        plan(ruleset, live, &[], true, TableOwner::None, genid, first_seq)
    }

    /// The transaction that adds (`add`) or deletes `elements` of the named set `set` of
    /// table `family table` and touches nothing else; `key_type` is the set's.
    pub fn set_elements(
        family: Family,
        table: &str,
        set: &nftmesh_model::ruleset::Set,
        add: bool,
        genid: Option<u32>,
        first_seq: u32,
    ) -> Result<Self, NetlinkError> {
        let label = format!("{} {table}", family.keyword());
        let obj = Object::Set {
            table: label,
            set: set.name.clone(),
        };
        let ws = lower_set(set, 1).map_err(|e| NetlinkError::lower(obj.clone(), e))?;
        let mut b = Writer::new(first_seq, genid);
        let fam = family_number(family);
        let msg = if add {
            NFT_MSG_NEWSETELEM
        } else {
            NFT_MSG_DELSETELEM
        };
        match b.w.elements(msg, fam, table, &ws, &mut b.seq) {
            Ok(seqs) => {
                for sq in seqs {
                    b.objects.push((sq, obj.clone()));
                }
            }
            Err(e) => return Err(e.at(obj)),
        }
        // A no-op re-declaration of the table is acknowledged after the elements.
        let last_seq = b.seq;
        let table_obj = Object::Table {
            table: format!("{} {table}", family.keyword()),
        };
        b.emit(table_obj, |w, seq| {
            w.table(NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_ACK, fam, table, seq)
        })?;
        Ok(b.finish(last_seq, Vec::new()))
    }

    /// The transaction that deletes `tables` (which must exist) and nothing else; the last
    /// deletion is acknowledged.
    pub fn delete_tables(
        tables: &[(Family, String)],
        genid: Option<u32>,
        first_seq: u32,
    ) -> Result<Self, NetlinkError> {
        let mut b = Writer::new(first_seq, genid);
        for (i, (f, n)) in tables.iter().enumerate() {
            let flags = if i + 1 == tables.len() { NLM_F_ACK } else { 0 };
            let obj = Object::Table {
                table: format!("{} {n}", f.keyword()),
            };
            b.emit(obj, |w, seq| {
                w.table(NFT_MSG_DELTABLE, flags, family_number(*f), n, seq)
            })?;
        }
        let last_seq = b.seq - 1;
        let mut tx = b.finish(last_seq, Vec::new());
        tx.deleted_tables = tables
            .iter()
            .map(|(f, n)| format!("{} {n}", f.keyword()))
            .collect();
        Ok(tx)
    }

    /// The ruleset this transaction creates, decoded from its messages by the same code a
    /// kernel dump goes through, in canonical form (see [`crate::readback`]).
    pub fn read_back(&self) -> Result<Ruleset, NetlinkError> {
        crate::codec::readback::decode_transaction(&self.bytes)
    }
}

/// The live state a [`Transaction::plan`] replaces: chains and named sets of the tables it writes.
#[derive(Debug, Clone, Default)]
pub struct LiveState {
    /// Tables present (any family and name).
    pub tables: Vec<LiveTable>,
    /// Chains of the tables being written.
    pub chains: Vec<(Family, LiveChain)>,
    /// Named sets of the tables being written.
    pub sets: Vec<(Family, LiveSet)>,
}

/// One deletion added to an apply batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// Delete one rule by handle.
    Rule {
        /// Table family.
        family: Family,
        /// Table name.
        table: String,
        /// Chain holding the rule.
        chain: String,
        /// The rule's handle.
        handle: u64,
    },
    /// Delete every rule of a chain.
    FlushChain {
        /// Table family.
        family: Family,
        /// Table name.
        table: String,
        /// The chain.
        chain: String,
    },
    /// Delete a (flushed, unreferenced) chain.
    Chain {
        /// Table family.
        family: Family,
        /// Table name.
        table: String,
        /// The chain.
        chain: String,
    },
    /// Delete a whole table with everything in it (a table of nftmesh's that the capture being
    /// installed no longer has).
    Table {
        /// Table family.
        family: Family,
        /// Table name.
        table: String,
    },
}

impl Removal {
    /// Family, table and chain (none for a whole table) the removal is about.
    pub fn place(&self) -> (Family, &str, Option<&str>) {
        match self {
            Removal::Rule {
                family,
                table,
                chain,
                ..
            }
            | Removal::FlushChain {
                family,
                table,
                chain,
            }
            | Removal::Chain {
                family,
                table,
                chain,
            } => (*family, table, Some(chain)),
            Removal::Table { family, table } => (*family, table, None),
        }
    }
}

/// The longest rule text an error carries; longer ones are cut and end in `…`.
const MAX_RULE_TEXT: usize = 512;

fn short_text(mut text: String) -> String {
    if text.len() > MAX_RULE_TEXT {
        let mut cut = MAX_RULE_TEXT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn table_label(t: &Table) -> String {
    format!("{} {}", t.family.keyword(), t.name)
}

/// A batch being written: the messages, and per sequence number the object each is about.
/// Every error building a message names that object.
struct Writer {
    w: MsgWriter,
    seq: u32,
    objects: Vec<(u32, Object)>,
}

impl Writer {
    fn new(first_seq: u32, genid: Option<u32>) -> Self {
        let mut w = MsgWriter::new();
        w.batch_begin_genid(first_seq, genid);
        Writer {
            w,
            seq: first_seq + 1,
            objects: vec![(first_seq, Object::Batch)],
        }
    }

    /// Write one message about `object` with the next sequence number.
    fn emit(
        &mut self,
        object: Object,
        f: impl FnOnce(&mut MsgWriter, u32) -> Result<(), BuildError>,
    ) -> Result<(), NetlinkError> {
        if let Err(e) = f(&mut self.w, self.seq) {
            return Err(e.at(object));
        }
        self.objects.push((self.seq, object));
        self.seq += 1;
        Ok(())
    }

    /// A set's declaration and its elements (as many messages as they need), all about
    /// `object`.
    fn set(
        &mut self,
        object: Object,
        fam: u8,
        table: &str,
        ws: &WireSet,
    ) -> Result<(), NetlinkError> {
        self.emit(object.clone(), |w, seq| {
            w.set(NFT_MSG_NEWSET, NLM_F_CREATE, fam, table, ws, seq)
        })?;
        match self.w.set_elements(fam, table, ws, &mut self.seq) {
            Ok(seqs) => {
                for sq in seqs {
                    self.objects.push((sq, object.clone()));
                }
                Ok(())
            }
            Err(e) => Err(e.at(object)),
        }
    }

    /// End the batch: `last_seq` is the acknowledged message's number.
    fn finish(mut self, last_seq: u32, deleted_chains: Vec<String>) -> Transaction {
        self.w.batch_end(self.seq);
        self.objects.push((self.seq, Object::Batch));
        Transaction {
            bytes: self.w.out,
            messages: self.objects.len(),
            objects: self.objects,
            last_seq,
            deleted_chains,
            deleted_tables: Vec::new(),
        }
    }
}

/// [`Transaction::plan`], plus deleting `removals` (objects outside the ruleset's tables, e.g. Istio's
/// iptables-nft rules, which the `nftmesh` crate finds) in the same transaction, after the ruleset's
/// messages.
fn plan(
    ruleset: &Ruleset,
    live: &LiveState,
    removals: &[Removal],
    keep_set_elements: bool,
    owner: TableOwner,
    genid: Option<u32>,
    first_seq: u32,
) -> Result<Transaction, NetlinkError> {
    let mut b = Writer::new(first_seq, genid);
    let mut deleted_chains = Vec::new();
    let mut set_id = 1u32;
    for (i, t) in ruleset.tables.iter().enumerate() {
        let fam = family_number(t.family);
        let label = table_label(t);
        let object = || Object::Table {
            table: label.clone(),
        };
        let same_family = ruleset.tables[..=i].iter().filter(|o| o.family == t.family);
        bounds::unique("table", same_family.map(|o| o.name.as_str()))
            .and_then(|()| bounds::unique("chain", t.chains.iter().map(|c| c.name.as_str())))
            .and_then(|()| bounds::unique("set", t.sets.iter().map(|s| s.name.as_str())))
            .map_err(|e| e.at(object()))?;
        let table_obj = || Object::Table {
            table: label.clone(),
        };
        let chain_obj = |chain: &str| Object::Chain {
            table: label.clone(),
            chain: chain.to_string(),
        };
        let live_table = live
            .tables
            .iter()
            .find(|l| l.family == t.family && l.name == t.name);
        // A table the kernel cannot give `owner`'s flags in place is deleted first and
        // re-created below as a new one, in this same transaction.
        let recreate = live_table.is_some_and(|l| !owner.declares_in_place(l));
        if recreate {
            b.emit(table_obj(), |w, seq| {
                w.table(NFT_MSG_DELTABLE, 0, fam, &t.name, seq)
            })?;
        }
        let exists = live_table.is_some() && !recreate;
        b.emit(table_obj(), |w, seq| match owner {
            TableOwner::None => w.table(NFT_MSG_NEWTABLE, NLM_F_CREATE, fam, &t.name, seq),
            _ => w.table_flagged(NLM_F_CREATE, fam, &t.name, owner.flags(), seq),
        })?;
        let live_chains: Vec<&LiveChain> = live
            .chains
            .iter()
            .filter(|(f, c)| exists && *f == t.family && c.table == t.name)
            .map(|(_, c)| c)
            .collect();
        let live_sets: Vec<&LiveSet> = live
            .sets
            .iter()
            .filter(|(f, s)| exists && *f == t.family && s.table == t.name)
            .map(|(_, s)| s)
            .collect();
        if exists {
            b.emit(table_obj(), |w, seq| w.flush_rules(fam, &t.name, None, seq))?;
            // Named sets are replaced whole: the flush above released their references. With
            // `keep_set_elements`, a set the ruleset declares again keeps its live elements.
            for s in live_sets.iter().filter(|s| {
                s.flags & NFT_SET_ANONYMOUS == 0
                    && !(keep_set_elements && t.sets.iter().any(|d| d.name == s.name))
            }) {
                let obj = Object::Set {
                    table: label.clone(),
                    set: s.name.clone(),
                };
                b.emit(obj, |w, seq| {
                    w.set_by_name(NFT_MSG_DELSET, fam, &t.name, &s.name, seq)
                })?;
            }
        }
        for c in &t.chains {
            let base = c.base.as_ref().map(|b| {
                let policy = match b.policy {
                    Policy::Accept => NF_ACCEPT as u32,
                    Policy::Drop => NF_DROP as u32,
                };
                (hook_number(b.hook), b.priority, b.kind.keyword(), policy)
            });
            // The kernel cannot re-hook a chain in place: a chain whose hook, priority, type or
            // base-ness changes is deleted and re-created in the same transaction (its rules
            // were flushed above; the new rules are added below).
            let rehook = live_chains.iter().any(|lc| {
                lc.name == c.name
                    && (lc.hook != base.map(|(h, p, _, _)| (h, p))
                        || base.is_some_and(|(_, _, k, _)| lc.kind != k))
            });
            if rehook {
                b.emit(chain_obj(&c.name), |w, seq| {
                    w.chain(NFT_MSG_DELCHAIN, 0, fam, &t.name, &c.name, None, seq)
                })?;
            }
            b.emit(chain_obj(&c.name), |w, seq| {
                w.chain(
                    NFT_MSG_NEWCHAIN,
                    NLM_F_CREATE,
                    fam,
                    &t.name,
                    &c.name,
                    base,
                    seq,
                )
            })?;
        }
        for s in &t.sets {
            let obj = Object::Set {
                table: label.clone(),
                set: s.name.clone(),
            };
            let ws = lower_set(s, set_id).map_err(|e| NetlinkError::lower(obj.clone(), e))?;
            set_id += 1;
            b.set(obj, fam, &t.name, &ws)?;
        }
        for c in &t.chains {
            for (index, rule) in c.rules.iter().enumerate() {
                // Rendered once per rule (a rule's sets may take many messages), and cut short:
                // an error names the rule, it need not list 10 000 set elements.
                let rule_obj = Object::Rule {
                    table: label.clone(),
                    chain: c.name.clone(),
                    index,
                    text: short_text(render_rule(rule)),
                };
                let lowered = lower_rule(t.family, rule, &mut set_id)
                    .map_err(|e| NetlinkError::lower(rule_obj.clone(), e))?;
                for ws in &lowered.sets {
                    b.set(rule_obj.clone(), fam, &t.name, ws)?;
                }
                b.emit(rule_obj, |w, seq| {
                    w.rule(
                        NLM_F_CREATE | NLM_F_APPEND,
                        fam,
                        &t.name,
                        &c.name,
                        encode_all(&lowered.exprs)?,
                        rule.comment.as_deref(),
                        seq,
                    )
                })?;
            }
        }
        for lc in &live_chains {
            if !t.chains.iter().any(|c| c.name == lc.name) {
                b.emit(chain_obj(&lc.name), |w, seq| {
                    w.chain(NFT_MSG_DELCHAIN, 0, fam, &t.name, &lc.name, None, seq)
                })?;
                deleted_chains.push(format!("{label} {}", lc.name));
            }
        }
    }
    let mut deleted_tables = Vec::new();
    for r in removals {
        let (family, table, chain) = r.place();
        let fam = family_number(family);
        let label = format!("{} {table}", family.keyword());
        let Some(chain) = chain else {
            let obj = Object::Table {
                table: label.clone(),
            };
            b.emit(obj, |w, seq| w.table(NFT_MSG_DELTABLE, 0, fam, table, seq))?;
            deleted_tables.push(label);
            continue;
        };
        let obj = Object::Chain {
            table: label.clone(),
            chain: chain.to_string(),
        };
        b.emit(obj, |w, seq| match r {
            Removal::Rule { handle, .. } => w.delete_rule(fam, table, chain, *handle, seq),
            Removal::FlushChain { .. } => w.flush_rules(fam, table, Some(chain), seq),
            _ => w.chain(NFT_MSG_DELCHAIN, 0, fam, table, chain, None, seq),
        })?;
        if matches!(r, Removal::Chain { .. }) {
            deleted_chains.push(format!("{label} {chain}"));
        }
    }
    // The last message asks for an acknowledgement: a no-op re-declaration of the first table
    // (or of the batch when there are no tables), so success is confirmed after everything.
    // It carries no flags attribute, so the kernel leaves an owned table's flags as they are.
    let last_seq = b.seq;
    // An empty ruleset has nothing to acknowledge; `Connection::apply` sends no batch then.
    if let Some(t) = ruleset.tables.first() {
        let obj = Object::Table {
            table: table_label(t),
        };
        b.emit(obj, |w, seq| {
            w.table(
                NFT_MSG_NEWTABLE,
                NLM_F_CREATE | NLM_F_ACK,
                family_number(t.family),
                &t.name,
                seq,
            )
        })?;
    } else {
        b.seq += 1;
    }
    let mut batch = b.finish(last_seq, deleted_chains);
    batch.deleted_tables = deleted_tables;
    Ok(batch)
}

mod trace;
pub use trace::TRACE_PRIORITY;

#[cfg(test)]
mod tests;
