//! Every match and statement variant renders to text the real `nft` accepts: one ruleset
//! holding every sample of `nftmesh_model::samples`, loaded with `nft -f` in a fresh network
//! namespace.

use nftmesh_test_support as support;

use nftmesh_model::expr::{IpVersion, L4Proto, Match, Statement};
use nftmesh_model::ruleset::{priority, Chain, ChainType, Family, Hook, Rule, Ruleset, Table};
use nftmesh_model::{render, samples};
use support::netns;

fn tcp() -> Match {
    Match::L4Proto {
        negate: false,
        proto: L4Proto::Tcp,
    }
}

#[test]
fn every_sample_loads_with_nft() {
    if let Some(why) = netns::oracle_unavailable() {
        support::skip(&format!("the nft oracle is unavailable: {why}"));
        return;
    }
    let mut pre = Chain::base("pre", ChainType::Filter, Hook::Prerouting, priority::MANGLE);
    let mut nat = Chain::base("nat-out", ChainType::Nat, Hook::Output, priority::DSTNAT);
    let mut raw = Chain::base("raw-out", ChainType::Filter, Hook::Output, priority::RAW);
    let mut regular = Chain::regular("istio-output");
    let target = Chain::regular("istio-target");
    for (m, _) in samples::matches() {
        pre.rules.push(Rule::new(vec![m], vec![Statement::Counter]));
    }
    for (s, _) in samples::statements() {
        match &s {
            Statement::Redirect { .. } => nat.rules.push(Rule::new(vec![tcp()], vec![s])),
            Statement::Tproxy { version, .. } => {
                let nf = Match::Nfproto {
                    version: version.unwrap_or(IpVersion::V4),
                };
                pre.rules.push(Rule::new(vec![nf, tcp()], vec![s]))
            }
            Statement::CtZoneSet(_) => raw.rules.push(Rule::new(vec![], vec![s])),
            Statement::Verdict(nftmesh_model::Verdict::Jump(_))
            | Statement::Verdict(nftmesh_model::Verdict::Goto(_)) => {
                let v = match s {
                    Statement::Verdict(nftmesh_model::Verdict::Jump(_)) => {
                        nftmesh_model::Verdict::Jump("istio-target".into())
                    }
                    _ => nftmesh_model::Verdict::Goto("istio-target".into()),
                };
                regular
                    .rules
                    .push(Rule::new(vec![], vec![Statement::Verdict(v)]))
            }
            _ => regular.rules.push(Rule::new(vec![], vec![s])),
        }
    }
    let mut table = Table::new(Family::Inet, "nftmesh-samples");
    table.chains = vec![pre, nat, raw, regular, target];
    let rs = Ruleset {
        tables: vec![table],
    };
    let text = render(&rs);
    let listing = netns::load_and_list(&text, None)
        .unwrap_or_else(|e| panic!("nft refused the samples: {e}\n{text}"));
    assert!(listing.contains("table inet nftmesh-samples"));
    assert!(listing.contains("socket transparent 1"), "{listing}");
    assert!(listing.contains("tproxy ip6 to :15006"), "{listing}");
}
