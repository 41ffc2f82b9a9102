//! The transaction's messages, without a kernel: what is created, flushed, deleted and
//! acknowledged, and which object each message is about.

use super::*;
use crate::codec::nftnl::msg_type;
use crate::codec::wire;
use nftmesh_model::config::CaptureConfig;

const NFNL_MSG_BATCH_END: u16 = 17;

fn types(b: &Transaction) -> Vec<u16> {
    wire::messages(&b.bytes)
        .unwrap()
        .iter()
        .map(|m| m.ty)
        .collect()
}

#[test]
fn a_new_table_is_created_without_flush_and_only_the_last_message_asks_for_an_ack() {
    let rs = nftmesh_model::compile(&CaptureConfig::sidecar());
    let b = Transaction::plan(&rs, &LiveState::default(), Some(7), 100).unwrap();
    let msgs = wire::messages(&b.bytes).unwrap();
    assert_eq!(msgs.len(), b.messages);
    assert_eq!(msgs.first().unwrap().ty, NFNL_MSG_BATCH_BEGIN);
    assert_eq!(msgs.last().unwrap().ty, NFNL_MSG_BATCH_END);
    assert!(!types(&b).contains(&msg_type(NFT_MSG_DELRULE)));
    let acked: Vec<u32> = msgs
        .iter()
        .filter(|m| m.flags & NLM_F_ACK != 0)
        .map(|m| m.seq)
        .collect();
    assert_eq!(acked, vec![b.last_seq]);
    let seqs: Vec<u32> = msgs.iter().map(|m| m.seq).collect();
    let want: Vec<u32> = (100..100 + msgs.len() as u32).collect();
    assert_eq!(seqs, want, "consecutive sequence numbers");
    let rules = types(&b)
        .iter()
        .filter(|t| **t == msg_type(NFT_MSG_NEWRULE))
        .count();
    assert_eq!(rules, rs.rule_count());
    // The generation id rides on the batch begin.
    let begin = msgs[0].payload;
    let at = wire::attrs(&begin[4..]).unwrap();
    assert_eq!(at.be32(1), Some(7));
}

#[test]
fn an_existing_table_is_flushed_and_chains_it_no_longer_has_are_deleted() {
    let rs = nftmesh_model::compile(&CaptureConfig::sidecar());
    let t = &rs.tables[0];
    let live = LiveState {
        tables: vec![LiveTable {
            family: t.family,
            name: t.name.clone(),
            handle: 1,
            flags: 0,
            owner: None,
        }],
        chains: vec![(
            t.family,
            LiveChain {
                table: t.name.clone(),
                name: "OLD".into(),
                handle: 9,
                hook: None,
                kind: String::new(),
                policy: NF_ACCEPT as u32,
            },
        )],
        sets: vec![(
            t.family,
            LiveSet {
                table: t.name.clone(),
                name: "old_set".into(),
                flags: 0,
                key_type: TYPE_IPADDR,
                key_len: 4,
            },
        )],
    };
    let b = Transaction::plan(&rs, &live, None, 1).unwrap();
    let ty = types(&b);
    let flush = ty
        .iter()
        .position(|t| *t == msg_type(NFT_MSG_DELRULE))
        .expect("flush");
    let first_rule = ty
        .iter()
        .position(|t| *t == msg_type(NFT_MSG_NEWRULE))
        .unwrap();
    let del_chain = ty
        .iter()
        .position(|t| *t == msg_type(NFT_MSG_DELCHAIN))
        .expect("delete OLD");
    let del_set = ty
        .iter()
        .position(|t| *t == msg_type(NFT_MSG_DELSET))
        .expect("delete old_set");
    assert!(flush < del_set && del_set < first_rule && first_rule < del_chain);
    assert_eq!(
        b.deleted_chains,
        vec![format!("{} {} OLD", t.family.keyword(), t.name)]
    );
}

#[test]
fn every_message_maps_to_the_object_it_is_about() {
    let rs = nftmesh_model::compile(&CaptureConfig::sidecar());
    let b = Transaction::plan(&rs, &LiveState::default(), None, 1).unwrap();
    let msgs = wire::messages(&b.bytes).unwrap();
    for m in &msgs {
        let obj = b
            .objects
            .iter()
            .find(|(s, _)| *s == m.seq)
            .map(|(_, o)| o)
            .expect("mapped");
        if m.ty == msg_type(NFT_MSG_NEWRULE) {
            assert!(matches!(obj, Object::Rule { .. }), "{obj}");
        }
    }
    let rule_texts: Vec<String> = b
        .objects
        .iter()
        .filter_map(|(_, o)| match o {
            Object::Rule { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect();
    assert!(
        rule_texts.iter().any(|t| t.contains("redirect to :15001")),
        "{rule_texts:?}"
    );
}

/// The `NEWTABLE` and `DELTABLE` messages in order: (message type, its `NFTA_TABLE_FLAGS`,
/// `None` when it has none).
fn table_messages(b: &Transaction) -> Vec<(u16, Option<u32>)> {
    wire::messages(&b.bytes)
        .unwrap()
        .iter()
        .filter(|m| m.ty == msg_type(NFT_MSG_NEWTABLE) || m.ty == msg_type(NFT_MSG_DELTABLE))
        .map(|m| {
            let at = wire::attrs(&m.payload[4..]).unwrap();
            (nfnl_msg_type(m.ty), at.be32(NFTA_TABLE_FLAGS))
        })
        .collect()
}

/// A live state holding the (one-table) sidecar ruleset's table with `flags` and `owner`, a
/// chain and a named set of it.
fn live_nat(rs: &Ruleset, flags: u32, owner: Option<u32>) -> LiveState {
    let t = &rs.tables[0];
    LiveState {
        tables: vec![LiveTable {
            family: t.family,
            name: t.name.clone(),
            handle: 1,
            flags,
            owner,
        }],
        chains: vec![(
            t.family,
            LiveChain {
                table: t.name.clone(),
                name: "OLD".into(),
                handle: 9,
                hook: None,
                kind: String::new(),
                policy: NF_ACCEPT as u32,
            },
        )],
        sets: vec![(
            t.family,
            LiveSet {
                table: t.name.clone(),
                name: "old_set".into(),
                flags: 0,
                key_type: TYPE_IPADDR,
                key_len: 4,
            },
        )],
    }
}

const OWNED: u32 = NFT_TABLE_F_OWNER | NFT_TABLE_F_PERSIST;

#[test]
fn an_owned_plan_declares_new_tables_with_owner_and_persist_and_acknowledges_without_flags() {
    let rs = nftmesh_model::compile(&CaptureConfig::sidecar());
    let none: &[Removal] = &[];
    let b = Transaction::plan_owned(
        &rs,
        &LiveState::default(),
        none,
        TableOwner::OwnerPersist,
        None,
        1,
    )
    .unwrap();
    // Declared owned once; the acknowledged re-declaration carries no flags (a no-op for the
    // kernel, which refuses dropping `owner`).
    assert_eq!(
        table_messages(&b),
        vec![(NFT_MSG_NEWTABLE, Some(OWNED)), (NFT_MSG_NEWTABLE, None)]
    );
    let owner_only =
        Transaction::plan_owned(&rs, &LiveState::default(), none, TableOwner::Owner, None, 1)
            .unwrap();
    assert_eq!(
        table_messages(&owner_only)[0],
        (NFT_MSG_NEWTABLE, Some(NFT_TABLE_F_OWNER))
    );
    // Without an owner nothing changes: no flags attribute at all.
    let plain = Transaction::plan(&rs, &LiveState::default(), None, 1).unwrap();
    assert_eq!(
        table_messages(&plain),
        vec![(NFT_MSG_NEWTABLE, None), (NFT_MSG_NEWTABLE, None)]
    );
    assert_eq!(b.read_back().unwrap(), plain.read_back().unwrap());
}

#[test]
fn a_table_already_so_owned_or_orphaned_is_replaced_in_place() {
    let rs = nftmesh_model::compile(&CaptureConfig::sidecar());
    let none: &[Removal] = &[];
    for (flags, owner) in [(OWNED, Some(77)), (NFT_TABLE_F_PERSIST, None)] {
        let live = live_nat(&rs, flags, owner);
        let b =
            Transaction::plan_owned(&rs, &live, none, TableOwner::OwnerPersist, None, 1).unwrap();
        let ty = types(&b);
        assert!(
            !ty.contains(&msg_type(NFT_MSG_DELTABLE)),
            "flags {flags:#x}: kept in place"
        );
        assert!(ty.contains(&msg_type(NFT_MSG_DELRULE)), "flushed in place");
        assert!(ty.contains(&msg_type(NFT_MSG_DELSET)), "old set deleted");
        assert_eq!(table_messages(&b)[0], (NFT_MSG_NEWTABLE, Some(OWNED)));
    }
}

#[test]
fn a_table_the_kernel_cannot_give_the_flags_in_place_is_deleted_and_recreated_in_the_same_batch() {
    let rs = nftmesh_model::compile(&CaptureConfig::sidecar());
    let none: &[Removal] = &[];
    let t = &rs.tables[0];
    // (live flags, wanted): unowned → owned; owned without persist → with; an orphan → owner
    // only (the kernel would claim it only with persist).
    for (flags, owner, want) in [
        (0, None, TableOwner::OwnerPersist),
        (0, None, TableOwner::Owner),
        (NFT_TABLE_F_OWNER, Some(5), TableOwner::OwnerPersist),
        (OWNED, Some(5), TableOwner::Owner),
        (NFT_TABLE_F_PERSIST, None, TableOwner::Owner),
    ] {
        let live = live_nat(&rs, flags, owner);
        let b = Transaction::plan_owned(&rs, &live, none, want, None, 1).unwrap();
        assert_eq!(
            table_messages(&b),
            vec![
                (NFT_MSG_DELTABLE, None),
                (NFT_MSG_NEWTABLE, Some(want.flags())),
                (NFT_MSG_NEWTABLE, None)
            ],
            "{flags:#x} → {want:?}"
        );
        // The re-created table is new: nothing of the deleted one is flushed or deleted.
        let ty = types(&b);
        for gone in [NFT_MSG_DELRULE, NFT_MSG_DELSET, NFT_MSG_DELCHAIN] {
            assert!(!ty.contains(&msg_type(gone)), "{flags:#x} → {want:?}");
        }
        assert!(b.deleted_chains.is_empty());
        // The deletion is about the table, and the batch reads back as the ruleset.
        let del = b.objects[1].1.clone();
        assert_eq!(
            del,
            Object::Table {
                table: format!("{} {}", t.family.keyword(), t.name)
            }
        );
        assert_eq!(
            b.read_back().unwrap(),
            nftmesh_model::canonical::canonical_ruleset(&rs)
        );
    }
}

#[test]
fn without_an_owner_a_live_owned_table_keeps_its_flags() {
    let rs = nftmesh_model::compile(&CaptureConfig::sidecar());
    let live = live_nat(&rs, OWNED, Some(5));
    let b = Transaction::plan(&rs, &live, None, 1).unwrap();
    assert_eq!(
        table_messages(&b),
        vec![(NFT_MSG_NEWTABLE, None), (NFT_MSG_NEWTABLE, None)]
    );
    assert!(types(&b).contains(&msg_type(NFT_MSG_DELRULE)));
}

#[test]
fn a_live_table_reports_owned_persistent_and_orphaned() {
    let rs = nftmesh_model::compile(&CaptureConfig::sidecar());
    let t = |flags, owner| live_nat(&rs, flags, owner).tables.remove(0);
    let owned = t(OWNED, Some(3));
    assert!(owned.is_owned() && owned.is_persistent() && !owned.is_orphan());
    let orphan = t(NFT_TABLE_F_PERSIST, None);
    assert!(!orphan.is_owned() && orphan.is_orphan());
    let plain = t(0, None);
    assert!(!plain.is_owned() && !plain.is_persistent() && !plain.is_orphan());
    assert!(TableOwner::None < TableOwner::Owner && TableOwner::Owner < TableOwner::OwnerPersist);
}
