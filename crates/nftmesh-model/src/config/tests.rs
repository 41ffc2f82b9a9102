use super::*;

fn settings(f: impl FnOnce(&mut IstioSettings)) -> IstioSettings {
    let mut s = IstioSettings::default();
    f(&mut s);
    s
}

fn err(f: impl FnOnce(&mut IstioSettings)) -> String {
    match settings(f).to_config() {
        Ok(cfg) => panic!("accepted: {cfg:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn istio_defaults_parse_to_the_default_config() {
    assert_eq!(
        IstioSettings::default().to_config(),
        Ok(CaptureConfig::default())
    );
}

#[test]
fn lists_ignore_blanks_and_trailing_commas() {
    let cfg = settings(|s| {
        s.inbound_ports = " 4000, 5000,".into();
        s.inbound_ports_exclude = "6000,7000,".into();
        s.proxy_uid = "1,2".into();
    })
    .to_config()
    .unwrap();
    assert_eq!(cfg.inbound_ports, PortSelection::Ports(vec![4000, 5000]));
    assert_eq!(cfg.inbound_ports_exclude, vec![6000, 7000]);
    assert_eq!(cfg.proxy_uids, vec![1, 2]);
    assert_eq!(cfg.proxy_gids, vec![1, 2], "gids default to the uids");
}

#[test]
fn wildcards_select_everything() {
    let cfg = settings(|s| {
        s.inbound_ports = "*".into();
        s.outbound_ip_ranges_include = "*".into();
    })
    .to_config()
    .unwrap();
    assert_eq!(cfg.inbound_ports, PortSelection::All);
    assert_eq!(cfg.outbound_cidrs_include, CidrSelection::All);
}

#[test]
fn cidrs_are_truncated_to_their_network() {
    let cfg = settings(|s| s.outbound_ip_ranges_exclude = "10.1.2.3/8".into())
        .to_config()
        .unwrap();
    assert_eq!(
        cfg.outbound_cidrs_exclude,
        vec!["10.0.0.0/8".parse().unwrap()]
    );
}

#[test]
fn owner_groups_follow_istios_include_exclude_rules() {
    let inc = settings(|s| s.owner_groups_include = "java,202".into())
        .to_config()
        .unwrap();
    assert_eq!(
        inc.owner_groups,
        OwnerGroups::Include(vec![GroupRef::Name("java".into()), GroupRef::Id(202)])
    );
    let exc = settings(|s| s.owner_groups_exclude = "888,ftp".into())
        .to_config()
        .unwrap();
    assert_eq!(
        exc.owner_groups,
        OwnerGroups::Exclude(vec![GroupRef::Id(888), GroupRef::Name("ftp".into())])
    );
}

#[test]
fn group_names_resolve_or_pass_through_when_asked() {
    let db = |n: &str| (n == "java").then_some(5000);
    let mut cfg = settings(|s| s.owner_groups_include = "java,nobody-here".into())
        .to_config()
        .unwrap();
    let mut strict = cfg.clone();
    assert_eq!(
        strict.resolve_groups(&db, GroupNames::Strict).unwrap_err().to_string(),
        "owner_groups.include: group \"nobody-here\" does not resolve to a gid (unknown groups can be passed through by name explicitly)"
    );
    cfg.resolve_groups(&db, GroupNames::PassThrough).unwrap();
    assert_eq!(
        cfg.owner_groups,
        OwnerGroups::Include(vec![
            GroupRef::Id(5000),
            GroupRef::Name("nobody-here".into())
        ])
    );
}

#[test]
fn json_config_round_trips_and_defaults_missing_fields() {
    let cfg = CaptureConfig {
        mode: InterceptionMode::Tproxy,
        inbound_ports: PortSelection::All,
        owner_groups: OwnerGroups::Exclude(vec![GroupRef::Id(7), GroupRef::Name("ftp".into())]),
        ipv6: true,
        outbound_cidrs_exclude: vec!["2001:db8::/32".parse().unwrap()],
        ..CaptureConfig::sidecar()
    };
    let text = serde_json::to_string_pretty(&cfg).unwrap();
    assert_eq!(CaptureConfig::from_json(&text), Ok(cfg));
    let partial = CaptureConfig::from_json(r#"{ "proxy_port": 16001 }"#).unwrap();
    assert_eq!(partial.proxy_port, 16001);
    assert_eq!(partial.inbound_capture_port, 15006);
}

// ---- one test per ConfigError variant, with its exact message ------------------------------

#[test]
fn error_invalid_port() {
    assert_eq!(
        err(|s| s.proxy_port = "0".into()),
        "proxy_port: invalid port \"0\": expected an integer from 1 to 65535"
    );
    assert_eq!(
        err(|s| s.inbound_ports = "80,65536".into()),
        "inbound_ports: invalid port \"65536\": expected an integer from 1 to 65535"
    );
    let cfg = CaptureConfig {
        outbound_ports_exclude: vec![0],
        ..CaptureConfig::default()
    };
    assert_eq!(
        cfg.validate().unwrap_err().to_string(),
        "outbound_ports_exclude: invalid port \"0\": expected an integer from 1 to 65535"
    );
}

#[test]
fn error_invalid_cidr() {
    assert_eq!(
        err(|s| s.outbound_ip_ranges_exclude = "10.0.0.0/33".into()),
        "outbound_cidrs_exclude: invalid CIDR \"10.0.0.0/33\": expected ADDRESS/PREFIX-LENGTH"
    );
    assert_eq!(
        err(|s| s.host_ipv4_loopback_cidr = "::1/128".into()),
        "host_ipv4_loopback_cidr: invalid CIDR \"::1/128\": expected ADDRESS/PREFIX-LENGTH"
    );
}

#[test]
fn error_ipv6_disabled() {
    assert_eq!(
        err(|s| s.outbound_ip_ranges_include = "2001:db8::/32".into()),
        "outbound_cidrs_include: IPv6 value \"2001:db8::/32\" given but IPv6 is off"
    );
    assert_eq!(
        err(|s| {
            s.redirect_dns = true;
            s.dns_servers = "::1".into();
        }),
        "dns.servers: IPv6 value \"::1\" given but IPv6 is off"
    );
}

#[test]
fn error_invalid_mark() {
    assert_eq!(
        err(|s| s.inbound_tproxy_mark = "0".into()),
        "tproxy_mark: invalid mark \"0\": expected an integer from 1 to 4294967295"
    );
    assert_eq!(
        err(|s| s.inbound_tproxy_mark = "0x10".into()),
        "tproxy_mark: invalid mark \"0x10\": expected an integer from 1 to 4294967295"
    );
}

#[test]
fn error_invalid_route_table() {
    assert_eq!(
        err(|s| s.inbound_tproxy_route_table = "254".into()),
        "tproxy_route_table: invalid route table \"254\": expected an integer from 1 to 4294967295 other than 253, 254 and 255"
    );
    assert_eq!(
        err(|s| s.inbound_tproxy_route_table = "main".into()),
        "tproxy_route_table: invalid route table \"main\": expected an integer from 1 to 4294967295 other than 253, 254 and 255"
    );
}

#[test]
fn error_empty_id_list() {
    assert_eq!(
        err(|s| s.proxy_uid = " , ".into()),
        "proxy_uids: the list is empty; at least one id is required"
    );
    let cfg = CaptureConfig {
        proxy_gids: vec![],
        ..CaptureConfig::default()
    };
    assert_eq!(
        cfg.validate().unwrap_err().to_string(),
        "proxy_gids: the list is empty; at least one id is required"
    );
}

#[test]
fn error_invalid_id() {
    assert_eq!(
        err(|s| s.proxy_gid = "1,-2".into()),
        "proxy_gids: invalid id \"-2\": expected an integer from 0 to 4294967295"
    );
}

#[test]
fn error_unknown_mode() {
    assert_eq!(
        err(|s| s.inbound_interception_mode = "TPROXYY".into()),
        "mode: unknown interception mode \"TPROXYY\": expected REDIRECT or TPROXY"
    );
}

#[test]
fn error_unknown_group() {
    let mut cfg = settings(|s| s.owner_groups_exclude = "no-such-group".into())
        .to_config()
        .unwrap();
    assert_eq!(
        cfg.resolve_groups(&|_: &str| None, GroupNames::Strict)
            .unwrap_err()
            .to_string(),
        "owner_groups.exclude: group \"no-such-group\" does not resolve to a gid (unknown groups can be passed through by name explicitly)"
    );
}

#[test]
fn error_contradictory() {
    assert_eq!(
        err(|s| {
            s.owner_groups_include = "java".into();
            s.owner_groups_exclude = "ftp".into();
        }),
        "owner_groups.include and owner_groups.exclude contradict each other: only one of them may be set"
    );
    assert_eq!(
        err(|s| {
            s.outbound_ports_include = "80,443".into();
            s.outbound_ports_exclude = "443".into();
        }),
        "outbound_ports_include and outbound_ports_exclude contradict each other: port 443 is in both"
    );
    assert_eq!(
        err(|s| {
            s.inbound_ports = "8080".into();
            s.inbound_ports_exclude = "8080".into();
        }),
        "inbound_ports and inbound_ports_exclude contradict each other: port 8080 is in both"
    );
    assert_eq!(
        err(|s| s.inbound_capture_port = "15001".into()),
        "proxy_port and inbound_capture_port contradict each other: both are 15001"
    );
    assert_eq!(
        err(|s| s.inbound_tproxy_mark = "1338".into()),
        "tproxy_mark and outbound mark contradict each other: 1338 marks the proxy's own connections to the pod"
    );
}

#[test]
fn error_wildcard_not_allowed() {
    assert_eq!(
        err(|s| s.outbound_ip_ranges_exclude = "10.0.0.0/8,*".into()),
        "outbound_cidrs_exclude: the wildcard \"*\" is not allowed here"
    );
}

#[test]
fn error_invalid_interface() {
    assert_eq!(
        err(|s| s.exclude_interfaces = "a-very-long-interface".into()),
        "exclude_interfaces: invalid interface name \"a-very-long-interface\": longer than 15 bytes"
    );
    assert_eq!(
        err(|s| s.kube_virt_interfaces = "eth\"0".into()),
        "reroute_virtual_interfaces: invalid interface name \"eth\\\"0\": contains whitespace, a control character, '/', '\"' or '\\'"
    );
    let cfg = CaptureConfig {
        exclude_interfaces: vec![String::new()],
        ..CaptureConfig::default()
    };
    assert_eq!(
        cfg.validate().unwrap_err().to_string(),
        "exclude_interfaces: invalid interface name \"\": empty"
    );
}

#[test]
fn error_invalid_address() {
    assert_eq!(
        err(|s| {
            s.redirect_dns = true;
            s.dns_servers = "10.0.0.300".into();
        }),
        "dns.servers: invalid IP address \"10.0.0.300\""
    );
}

#[test]
fn error_invalid_bool() {
    assert_eq!(parse_bool("INVALID_DROP", "TRUE"), Ok(true));
    assert_eq!(parse_bool("INVALID_DROP", "0"), Ok(false));
    assert_eq!(
        parse_bool("INVALID_DROP", "yes please")
            .unwrap_err()
            .to_string(),
        "INVALID_DROP: invalid boolean \"yes please\": expected true or false"
    );
}

#[test]
fn error_file() {
    assert_eq!(
        CaptureConfig::from_json("{\n  \"proxy_port\": 70000\n}").unwrap_err().to_string(),
        "config file, line 2, column 21: invalid value: integer `70000`, expected u16 at line 2 column 21"
    );
    assert_eq!(
        CaptureConfig::from_json(r#"{"proxy_prot": 1}"#)
            .unwrap_err()
            .to_string()
            .split(':')
            .next(),
        Some("config file, line 1, column 13")
    );
}
