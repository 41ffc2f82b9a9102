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
    assert_eq!(wire::find(&at, 1).and_then(wire::be32), Some(7));
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
