//! Translator cases from `tests/data/translate.txt`: an iptables rule and the nft text of its
//! translation (or the reason it is refused), run by one runner. Plus the one documented
//! semantic difference of the translation, pinned.

use nftmesh_iptables::{interpret, parse, translate};
use nftmesh_model::expr::IpVersion;
use nftmesh_model::render::render_rule;
use nftmesh_model::{eval, Hook, Packet};

#[test]
fn translator_cases_render_as_expected() {
    let data = include_str!("data/translate.txt");
    let lines: Vec<&str> = data
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    let mut failures = Vec::new();
    let mut n = 0;
    for pair in lines.chunks(2) {
        let [input, want] = pair else {
            panic!("odd line count")
        };
        n += 1;
        let (table, rule) = input.split_once(' ').unwrap();
        let chain = rule.split_whitespace().nth(1).unwrap();
        let text = format!("{table}\n{rule}\nCOMMIT\n");
        let rs = parse(&text, IpVersion::V4).unwrap_or_else(|e| panic!("{input}: {e}"));
        let got = match translate(&rs) {
            Ok(nft) => {
                let t = &nft.tables[0];
                let c = t.chain(chain).unwrap();
                format!("=> {}", render_rule(&c.rules[0]))
            }
            Err(e) => format!("! {}", e.reason),
        };
        if got != *want {
            failures.push(format!("{input}\n  want {want}\n  got  {got}"));
        }
    }
    assert!(n >= 10);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn negated_owner_without_socket_is_the_one_known_difference() {
    let text = "*mangle\n-A POSTROUTING -m owner ! --uid-owner 1337 -j MARK --set-mark 7\nCOMMIT\n";
    let rs = parse(text, IpVersion::V4).unwrap();
    let nft = translate(&rs).unwrap();
    let a = "10.0.0.1".parse().unwrap();
    let b = "10.0.0.2".parse().unwrap();
    // A packet a local socket of uid 1000 sends: both mark it.
    let local = Packet::local_tcp(1000, 1000, a, b, 80, "eth0");
    assert_eq!(
        interpret(std::slice::from_ref(&rs), &local, Hook::Postrouting)
            .unwrap()
            .mark,
        7
    );
    assert_eq!(eval(&nft, &local, Hook::Postrouting).unwrap().mark, 7);
    // A forwarded packet has no socket: xt_owner's inverted match holds, `meta skuid !=` not.
    let mut fwd = Packet::incoming_tcp(a, b, 80, "eth1");
    fwd.oif = "eth0".into();
    assert_eq!(
        interpret(std::slice::from_ref(&rs), &fwd, Hook::Postrouting)
            .unwrap()
            .mark,
        7
    );
    assert_eq!(eval(&nft, &fwd, Hook::Postrouting).unwrap().mark, 0);
}
