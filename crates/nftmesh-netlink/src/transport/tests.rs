//! The conversation with the kernel, without a kernel: a [`FakeKernel`] answers what a
//! [`Connection`] sends, in the kernel's message formats, so reply matching, multi-part and
//! interrupted dumps, refused batches and the commit cache are each checked here.

use super::*;
use crate::codec::nftnl::msg_type;
use crate::codec::sys::*;
use crate::codec::wire;
use crate::error::{NetlinkError, Object};
use crate::Connection;
use nftmesh_model::ruleset::{Family, Rule, Ruleset, Table};

const NLM_F_MULTI: u16 = 0x2;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;

/// One netlink message.
fn nlmsg(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = ((16 + payload.len()) as u32).to_ne_bytes().to_vec();
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(&flags.to_ne_bytes());
    v.extend_from_slice(&seq.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes());
    v.extend_from_slice(payload);
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
    v
}

/// `NLMSG_ERROR` answering `seq` with `errno` (0: an acknowledgement), the request's header
/// echoed as the kernel does with `NETLINK_CAP_ACK`.
fn error(seq: u32, errno: i32) -> Vec<u8> {
    let mut p = errno.wrapping_neg().to_ne_bytes().to_vec();
    p.extend_from_slice(&nlmsg(0, 0, seq, &[])[..16]);
    nlmsg(NLMSG_ERROR, 0, seq, &p)
}

fn attr(ty: u16, v: &[u8]) -> Vec<u8> {
    wire::testing::attr(ty, v)
}

/// A table as a dump lists it.
fn table(seq: u32, flags: u16, name: &str, handle: u64) -> Vec<u8> {
    let mut p = vec![NFPROTO_INET, 0, 0, 0];
    p.extend(attr(NFTA_TABLE_NAME, format!("{name}\0").as_bytes()));
    p.extend(attr(NFTA_TABLE_FLAGS, &0u32.to_be_bytes()));
    p.extend(attr(NFTA_TABLE_HANDLE, &handle.to_be_bytes()));
    nlmsg(msg_type(NFT_MSG_NEWTABLE), NLM_F_MULTI | flags, seq, &p)
}

fn done(seq: u32) -> Vec<u8> {
    nlmsg(NLMSG_DONE, NLM_F_MULTI, seq, &0u32.to_ne_bytes())
}

/// What one sent buffer holds: (message type without the subsystem, flags, seq) of each
/// message.
fn sent_messages(buf: &[u8]) -> Vec<(u16, u16, u32)> {
    wire::messages(buf)
        .expect("the connection sends well-formed messages")
        .iter()
        .map(|m| (nfnl_msg_type(m.ty), m.flags, m.seq))
        .collect()
}

/// The kernel's answer to a request that is not a batch: the generation `gen`, and dumps of
/// no objects (or `tables` for a table dump).
fn answer_request(buf: &[u8], gen: u32, tables: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let (ty, _, seq) = sent_messages(buf)[0];
    match ty {
        NFT_MSG_GETGEN => {
            let mut p = vec![0, 0, 0, 0];
            p.extend(attr(1, &gen.to_be_bytes()));
            let mut d = nlmsg(msg_type(NFT_MSG_NEWGEN), 0, seq, &p);
            d.extend(error(seq, 0));
            vec![d]
        }
        NFT_MSG_GETTABLE => {
            let mut d: Vec<u8> = tables.concat();
            // The request's seq, whatever the canned messages said.
            let mut fixed = Vec::new();
            for m in wire::messages(&d).unwrap() {
                fixed.extend(nlmsg(m.ty, m.flags, seq, m.payload));
            }
            d = fixed;
            d.extend(done(seq));
            vec![d]
        }
        _ => vec![done(seq)],
    }
}

/// Whether `buf` is a batch (begins with `NFNL_MSG_BATCH_BEGIN`), and its messages' seqs.
fn batch(buf: &[u8]) -> Option<Vec<u32>> {
    let m = wire::messages(buf).ok()?;
    (m.first()?.ty == NFNL_MSG_BATCH_BEGIN).then(|| m.iter().map(|m| m.seq).collect())
}

/// A ruleset of one table, one chain and one rule.
fn desired() -> Ruleset {
    let mut t = Table::new(Family::Inet, "nftmesh-fake");
    t.chains.push(nftmesh_model::ruleset::Chain::regular("out"));
    t.chains[0].rules.push(Rule::new(
        vec![],
        vec![nftmesh_model::Statement::Verdict(
            nftmesh_model::Verdict::Accept,
        )],
    ));
    Ruleset { tables: vec![t] }
}

/// The seq of the last message before the batch's end (the one acknowledged).
fn last_before_end(buf: &[u8]) -> u32 {
    let m = wire::messages(buf).unwrap();
    assert_eq!(m.last().unwrap().ty, NFNL_MSG_BATCH_END);
    m[m.len() - 2].seq
}

#[test]
fn a_committed_batch_is_acknowledged_by_its_last_message_and_stale_replies_are_ignored() {
    let fake = FakeKernel::new(7, |buf: &[u8]| {
        if batch(buf).is_some() {
            // A leftover acknowledgement of an earlier request comes first.
            let mut d = error(3, 0);
            d.extend(error(last_before_end(buf), 0));
            vec![d]
        } else {
            answer_request(buf, 41, &[])
        }
    });
    let sent = fake.sent();
    let mut conn = Connection::over(Box::new(fake), 100);
    let report = conn.apply(&desired()).unwrap();
    assert_eq!(report.attempts, 1);
    assert_eq!(conn.port_id(), 7);
    let sent = sent.lock().unwrap();
    // The generation, the tables, then the batch; the batch carries the generation read.
    assert_eq!(sent_messages(&sent[0])[0].0, NFT_MSG_GETGEN);
    assert_eq!(sent_messages(&sent[1])[0].0, NFT_MSG_GETTABLE);
    assert_eq!(
        sent.len(),
        3,
        "no chain or set dump for a table that is not there"
    );
    let begin = &wire::messages(&sent[2]).unwrap()[0];
    let at = wire::attrs(&begin.payload[4..]).unwrap();
    assert_eq!(at.be32(1), Some(41));
}

#[test]
fn an_error_reply_names_the_object_of_the_message_it_answers() {
    let fake = FakeKernel::new(7, |buf: &[u8]| match batch(buf) {
        Some(seqs) => {
            // Begin, table, chain, rule, the acknowledged table message, end: the rule is
            // refused; the kernel goes on through the batch and acknowledges the last.
            let mut d = error(seqs[3], libc::ENOENT);
            d.extend(error(last_before_end(buf), 0));
            vec![d]
        }
        None => answer_request(buf, 1, &[]),
    });
    let mut conn = Connection::over(Box::new(fake), 100);
    match conn.apply(&desired()) {
        Err(NetlinkError::Rejected { object, errno, .. }) => {
            assert_eq!(errno, libc::ENOENT);
            match object {
                Object::Rule {
                    chain, index, text, ..
                } => {
                    assert_eq!((chain.as_str(), index), ("out", 0));
                    assert!(text.contains("accept"), "{text}");
                }
                other => panic!("not the rule: {other:?}"),
            }
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_dump_read_over_several_datagrams_keeps_every_object_in_order() {
    let fake = FakeKernel::new(7, |buf: &[u8]| {
        let (_, _, seq) = sent_messages(buf)[0];
        let mut first = table(seq, 0, "a", 1);
        first.extend(table(seq, 0, "b", 2));
        vec![first, table(seq, 0, "c", 3), done(seq)]
    });
    let mut conn = Connection::over(Box::new(fake), 100);
    let names: Vec<String> = conn.tables().unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["a", "b", "c"]);
}

#[test]
fn an_interrupted_dump_is_read_again_whole() {
    let mut attempt = 0;
    let fake = FakeKernel::new(7, move |buf: &[u8]| {
        let (_, _, seq) = sent_messages(buf)[0];
        attempt += 1;
        match attempt {
            // The ruleset changed during the dump: flagged, and incomplete.
            1 => vec![table(seq, NLM_F_DUMP_INTR, "old", 1), done(seq)],
            // The kernel can also end a dump with EINTR.
            2 => vec![table(seq, 0, "half", 1), error(seq, libc::EINTR)],
            _ => vec![table(seq, 0, "new", 2), done(seq)],
        }
    });
    let sent = fake.sent();
    let mut conn = Connection::over(Box::new(fake), 100);
    let names: Vec<String> = conn.tables().unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["new"]);
    assert_eq!(sent.lock().unwrap().len(), 3, "asked three times");
}

#[test]
fn a_dump_interrupted_every_time_gives_up_contended() {
    let fake = FakeKernel::new(7, |buf: &[u8]| {
        let (_, _, seq) = sent_messages(buf)[0];
        vec![table(seq, NLM_F_DUMP_INTR, "t", 1), done(seq)]
    });
    let sent = fake.sent();
    let mut conn = Connection::over(Box::new(fake), 100);
    assert!(matches!(conn.tables(), Err(NetlinkError::Contended(_))));
    assert_eq!(
        sent.lock().unwrap().len(),
        crate::retry::MAX_ATTEMPTS as usize
    );
}

#[test]
fn a_batch_refused_for_a_stale_generation_is_planned_again_on_fresh_state() {
    let mut batches = 0;
    let mut gen = 10;
    let fake = FakeKernel::new(7, move |buf: &[u8]| match batch(buf) {
        Some(seqs) => {
            batches += 1;
            if batches == 1 {
                // Another writer committed: the batch framing is refused.
                gen += 1;
                vec![error(seqs[0], libc::ERESTART)]
            } else {
                vec![error(last_before_end(buf), 0)]
            }
        }
        None => answer_request(buf, gen, &[]),
    });
    let sent = fake.sent();
    let mut conn = Connection::over(Box::new(fake), 100);
    let report = conn.apply(&desired()).unwrap();
    assert_eq!(report.attempts, 2);
    let sent = sent.lock().unwrap();
    let gens: Vec<u32> = sent
        .iter()
        .filter(|b| batch(b).is_some())
        .map(|b| {
            let begin = &wire::messages(b).unwrap()[0];
            let at = wire::attrs(&begin.payload[4..]).unwrap();
            at.be32(1).unwrap()
        })
        .collect();
    assert_eq!(
        gens,
        [10, 11],
        "the second batch carries the generation read again"
    );
}

#[test]
fn after_its_own_commit_a_connection_sends_the_next_batch_without_reading() {
    let fake = FakeKernel::new(7, |buf: &[u8]| match batch(buf) {
        Some(_) => vec![error(last_before_end(buf), 0)],
        None => answer_request(buf, 5, &[]),
    });
    let sent = fake.sent();
    let mut conn = Connection::over(Box::new(fake), 100);
    conn.apply(&desired()).unwrap();
    let n = sent.lock().unwrap().len();
    conn.apply(&desired()).unwrap();
    assert_eq!(sent.lock().unwrap().len(), n + 1, "only the batch");
    // Told that someone else committed, it reads the generation and the tables again.
    conn.forget_commit();
    conn.apply(&desired()).unwrap();
    let sent = sent.lock().unwrap();
    assert_eq!(sent.len(), n + 1 + 3);
    assert_eq!(sent_messages(&sent[n + 1])[0].0, NFT_MSG_GETGEN);
}

#[test]
fn a_kernel_that_never_answers_is_a_timeout() {
    let fake = FakeKernel::new(7, |_: &[u8]| Vec::new());
    let mut conn = Connection::over(Box::new(fake), 100);
    assert!(matches!(conn.generation(), Err(NetlinkError::Timeout(_))));
}

#[test]
fn a_truncated_reply_is_malformed_not_a_panic() {
    let fake = FakeKernel::new(7, |buf: &[u8]| {
        let (_, _, seq) = sent_messages(buf)[0];
        let d = table(seq, 0, "a", 1);
        vec![d[..d.len() - 6].to_vec()]
    });
    let mut conn = Connection::over(Box::new(fake), 100);
    assert!(matches!(conn.tables(), Err(NetlinkError::Malformed { .. })));
}

#[test]
fn a_replay_sends_the_recorded_bytes_or_says_where_they_differ() {
    // Record a conversation with the fake kernel, then play it back.
    let fake = FakeKernel::new(7, |buf: &[u8]| match batch(buf) {
        Some(_) => vec![error(last_before_end(buf), 0)],
        None => answer_request(buf, 9, &[]),
    });
    let rec = Recording::new(fake);
    let log = rec.exchanges();
    let mut conn = Connection::over(Box::new(rec), 100);
    let report = conn.apply(&desired()).unwrap();
    let script = log.lock().unwrap().clone();
    assert_eq!(script.len(), 6, "three requests, three replies: {script:?}");

    let mut again = Connection::over(Box::new(Replay::new(script.clone(), 7)), 100);
    assert_eq!(again.apply(&desired()).unwrap(), report);

    // Another ruleset is not what was recorded: the replay names the step and the byte.
    let mut other = desired();
    other.tables[0].chains[0].rules.clear();
    let mut wrong = Connection::over(Box::new(Replay::new(script, 7)), 100);
    match wrong.apply(&other) {
        Err(e) => assert!(e.to_string().contains("replay step 4"), "{e}"),
        Ok(r) => panic!("replayed another ruleset: {r:?}"),
    }
}
