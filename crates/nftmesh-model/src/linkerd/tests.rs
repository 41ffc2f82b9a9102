use super::*;
use crate::config::ConfigError;
use crate::render;

fn injector() -> LinkerdConfig {
    LinkerdConfig {
        proxy_uid: Some(2102),
        inbound_ports_to_ignore: [4190, 4191, 4567, 4568].map(PortRange::single).to_vec(),
        outbound_ports_to_ignore: [4567, 4568].map(PortRange::single).to_vec(),
        ..LinkerdConfig::default()
    }
}

#[test]
fn the_injectors_flags_compile_to_proxy_inits_two_chains_in_its_order() {
    let cfg = injector();
    cfg.validate().unwrap();
    let text = render(&compile_linkerd(&cfg));
    let want = "\
add table ip linkerd-proxy-init
flush table ip linkerd-proxy-init
add chain ip linkerd-proxy-init prerouting { type nat hook prerouting priority -100 ; policy accept ; }
add chain ip linkerd-proxy-init output { type nat hook output priority -100 ; policy accept ; }
add chain ip linkerd-proxy-init proxy-init-redirect
add chain ip linkerd-proxy-init proxy-init-output
add rule ip linkerd-proxy-init prerouting counter jump proxy-init-redirect
add rule ip linkerd-proxy-init output counter jump proxy-init-output
add rule ip linkerd-proxy-init proxy-init-redirect tcp dport { 4190, 4191, 4567, 4568 } counter return
add rule ip linkerd-proxy-init proxy-init-redirect meta l4proto tcp counter redirect to :4143
add rule ip linkerd-proxy-init proxy-init-output meta skuid 2102 counter return
add rule ip linkerd-proxy-init proxy-init-output oifname \"lo\" counter return
add rule ip linkerd-proxy-init proxy-init-output tcp dport { 4567, 4568 } counter return
add rule ip linkerd-proxy-init proxy-init-output meta l4proto tcp counter redirect to :4140
";
    assert_eq!(text, want, "{text}");
}

#[test]
fn listed_ports_gids_subnets_and_ipv6_each_add_what_proxy_init_adds() {
    let cfg = LinkerdConfig {
        proxy_uid: Some(2102),
        proxy_gid: Some(2103),
        ports_to_redirect: vec![8080, 9090],
        subnets_to_ignore: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
        ipv6: true,
        ..LinkerdConfig::default()
    };
    cfg.validate().unwrap();
    let rs = compile_linkerd(&cfg);
    assert_eq!(rs.tables[0].family, crate::Family::Inet);
    let text = render(&rs);
    for line in [
        "ip saddr 10.0.0.0/8 counter return",
        "ip6 saddr fd00::/8 counter return",
        "tcp dport { 8080, 9090 } counter redirect to :4143",
        "meta skgid 2103 counter return",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    assert!(
        !text.contains("meta l4proto tcp counter redirect to :4143"),
        "{text}"
    );
}

#[test]
fn bad_settings_are_refused_naming_the_field() {
    let zero = LinkerdConfig {
        outgoing_proxy_port: 0,
        ..LinkerdConfig::default()
    };
    assert!(matches!(
        zero.validate(),
        Err(ConfigError::InvalidPort {
            field: "outgoing_proxy_port",
            ..
        })
    ));
    let backwards = LinkerdConfig {
        inbound_ports_to_ignore: vec![PortRange { first: 9, last: 3 }],
        ..LinkerdConfig::default()
    };
    assert!(matches!(
        backwards.validate(),
        Err(ConfigError::InvalidPort {
            field: "inbound_ports_to_ignore",
            ..
        })
    ));
    let v6 = LinkerdConfig {
        subnets_to_ignore: vec!["fd00::/8".parse().unwrap()],
        ..LinkerdConfig::default()
    };
    assert!(matches!(
        v6.validate(),
        Err(ConfigError::Ipv6Disabled {
            field: "subnets_to_ignore",
            ..
        })
    ));
    let redirect0 = LinkerdConfig {
        ports_to_redirect: vec![0],
        ..LinkerdConfig::default()
    };
    assert!(redirect0.validate().is_err());
}

#[test]
fn the_json_form_takes_proxy_inits_defaults_and_refuses_unknown_keys() {
    let cfg: LinkerdConfig = serde_json::from_str(r#"{"proxy_uid": 2102}"#).unwrap();
    assert_eq!(cfg.incoming_proxy_port, 4143);
    assert_eq!(cfg.proxy_uid, Some(2102));
    assert!(serde_json::from_str::<LinkerdConfig>(r#"{"proxy_user": 1}"#).is_err());
}
