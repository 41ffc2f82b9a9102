//! Istio's sidecar decision, as istio-cni makes it (istio/istio at commit
//! 86c9f01fd735fb01d8192f5bcaf0d424afb7f14c: `cni/pkg/plugin/plugin.go` `CmdAdd`, which pods are
//! left alone; `cni/pkg/plugin/sidecar_redirect.go` `NewRedirect`, the settings and their
//! defaults; `pkg/kube/inject/inject.go` `SidecarInjectionStatus`, the status annotation).
//!
//! istio-cni reads the pod from the API server and looks at its containers; here the pod's
//! containers are known from the injector's `sidecar.istio.io/status` annotation, which lists
//! the containers and init containers it added. What only the pod spec carries (the
//! `sidecar.istio.io/inject` label, `DISABLE_ENVOY` and the proxy type in the proxy's
//! container, its uid and environment) is not seen: the uid, DNS capture and dual stack come
//! from the caller's defaults instead.

use super::{AnnotationError, PodDecision, SkipReason};
use crate::config::{CaptureConfig, CidrSelection, InterceptionMode, PortSelection};
use ipnet::IpNet;
use std::collections::BTreeMap;

/// The annotation keys Istio's injector writes and istio-cni reads.
pub mod keys {
    /// The injector's record of what it added (JSON).
    pub const STATUS: &str = "sidecar.istio.io/status";
    /// Injection on or off for the pod.
    pub const INJECT: &str = "sidecar.istio.io/inject";
    /// `REDIRECT` or `TPROXY`.
    pub const INTERCEPTION_MODE: &str = "sidecar.istio.io/interceptionMode";
    /// Outbound destinations captured (`*` or CIDRs).
    pub const INCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
    /// Outbound destinations never captured.
    pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
    /// Inbound ports captured (`*` or ports).
    pub const INCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeInboundPorts";
    /// Inbound ports never captured.
    pub const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
    /// Outbound ports always captured.
    pub const INCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeOutboundPorts";
    /// Outbound ports never captured.
    pub const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
    /// Interfaces whose traffic is never captured.
    pub const EXCLUDE_INTERFACES: &str = "traffic.sidecar.istio.io/excludeInterfaces";
    /// Virtual interfaces whose inbound traffic is treated as outbound.
    pub const REROUTE_VIRTUAL_INTERFACES: &str = "istio.io/reroute-virtual-interfaces";
    /// The deprecated name of [`REROUTE_VIRTUAL_INTERFACES`], read only when it is absent.
    pub const KUBEVIRT_INTERFACES: &str = "traffic.sidecar.istio.io/kubevirtInterfaces";
}

/// The proxy's container name in the injection status.
const ISTIO_PROXY: &str = "istio-proxy";
/// The init container that installs the capture itself.
const ISTIO_INIT: &str = "istio-init";
/// Inbound ports istio-cni always excludes: the proxy's status, health and metrics ports.
const ALWAYS_EXCLUDED_INBOUND: [u16; 3] = [15020, 15021, 15090];
/// istio-cni's default inbound and outbound exclusion when the annotation is absent
/// (`defaultRedirectExcludePort`, the proxy's status port).
const DEFAULT_EXCLUDED: u16 = 15020;

/// Decide as istio-cni does for a sidecar pod: captured only when the status annotation names
/// `istio-proxy`, not `istio-init`, and injection is not disabled; the settings from the
/// traffic annotations, each absent one at istio-cni's default (outbound to `*`, inbound `*`,
/// outbound port 15020 excluded), with 15020, 15021 and 15090 always excluded inbound; the
/// rest (ports, proxy uids and gids, TPROXY mark and table, DNS, IPv6, owner groups, loopback)
/// from `defaults`. With IPv6 off, IPv6 prefixes in the ranges are dropped, as Istio's IPv4
/// rules drop them.
pub fn istio_sidecar(
    annotations: &BTreeMap<String, String>,
    defaults: &CaptureConfig,
) -> Result<PodDecision, AnnotationError> {
    let Some(status) = annotations.get(keys::STATUS) else {
        return Ok(PodDecision::Skip(SkipReason::NoSidecarStatus));
    };
    let (init, containers) = parse_status(status)?;
    if init.iter().any(|c| c == ISTIO_INIT) {
        return Ok(PodDecision::Skip(SkipReason::IstioInit));
    }
    if !init.iter().chain(&containers).any(|c| c == ISTIO_PROXY) {
        let listed = init.into_iter().chain(containers).collect();
        return Ok(PodDecision::Skip(SkipReason::NoIstioProxy { listed }));
    }
    if let Some(value) = annotations.get(keys::INJECT) {
        // Go's strconv.ParseBool; an unparsable value is ignored, as istio-cni ignores it.
        if go_parse_bool(value) == Some(false) {
            return Ok(PodDecision::Skip(SkipReason::InjectDisabled {
                value: value.clone(),
            }));
        }
    }
    settings(annotations, defaults).map(|c| PodDecision::Capture(Box::new(c)))
}

/// The injection status's init containers and containers (either may be `null`).
fn parse_status(value: &str) -> Result<(Vec<String>, Vec<String>), AnnotationError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Status {
        #[serde(default)]
        init_containers: Option<Vec<String>>,
        #[serde(default)]
        containers: Option<Vec<String>>,
    }
    let s: Status = serde_json::from_str(value)
        .map_err(|e| invalid(keys::STATUS, value, format!("not the injector's JSON: {e}")))?;
    Ok((
        s.init_containers.unwrap_or_default(),
        s.containers.unwrap_or_default(),
    ))
}

fn settings(
    a: &BTreeMap<String, String>,
    defaults: &CaptureConfig,
) -> Result<CaptureConfig, AnnotationError> {
    let get = |key: &'static str| a.get(key).map(|v| (key, v.as_str()));
    let mut cfg = defaults.clone();
    cfg.mode = match get(keys::INTERCEPTION_MODE) {
        None => InterceptionMode::Redirect,
        Some((_, "REDIRECT")) => InterceptionMode::Redirect,
        Some((_, "TPROXY")) => InterceptionMode::Tproxy,
        Some((k, v)) => return Err(invalid(k, v, "expected REDIRECT or TPROXY".into())),
    };
    cfg.outbound_cidrs_include = match get(keys::INCLUDE_OUTBOUND_IP_RANGES) {
        None | Some((_, "*")) => CidrSelection::All,
        Some((k, v)) => CidrSelection::Cidrs(cidrs(k, v, cfg.ipv6)?),
    };
    cfg.outbound_cidrs_exclude = match get(keys::EXCLUDE_OUTBOUND_IP_RANGES) {
        None => Vec::new(),
        Some((k, v)) => cidrs(k, v, cfg.ipv6)?,
    };
    cfg.inbound_ports = match get(keys::INCLUDE_INBOUND_PORTS) {
        None | Some((_, "*")) => PortSelection::All,
        Some((k, v)) => PortSelection::Ports(ports(k, v)?),
    };
    let mut excluded = match get(keys::EXCLUDE_INBOUND_PORTS) {
        None => vec![DEFAULT_EXCLUDED],
        Some((k, v)) => ports(k, v)?,
    };
    excluded.extend(ALWAYS_EXCLUDED_INBOUND);
    // Istio's rules read the inbound exclusions only when every port is captured; with a list
    // of ports, only the list counts (so a listed 15020 is captured).
    cfg.inbound_ports_exclude = match cfg.inbound_ports {
        PortSelection::All => dedup(excluded),
        PortSelection::Ports(_) => Vec::new(),
    };
    cfg.outbound_ports_exclude = match get(keys::EXCLUDE_OUTBOUND_PORTS) {
        None => vec![DEFAULT_EXCLUDED],
        Some((k, v)) => ports(k, v)?,
    };
    cfg.outbound_ports_include = match get(keys::INCLUDE_OUTBOUND_PORTS) {
        None => Vec::new(),
        Some((k, v)) => ports(k, v)?,
    };
    cfg.exclude_interfaces = match get(keys::EXCLUDE_INTERFACES) {
        None => Vec::new(),
        Some((k, v)) => interfaces(k, v)?,
    };
    cfg.reroute_virtual_interfaces =
        match get(keys::REROUTE_VIRTUAL_INTERFACES).or_else(|| get(keys::KUBEVIRT_INTERFACES)) {
            None => Vec::new(),
            Some((k, v)) => interfaces(k, v)?,
        };
    // What only the combination can violate (an outbound port both always and never
    // captured) is named by the annotations involved.
    cfg.validate().map_err(|e| match &e {
        crate::ConfigError::Contradictory { first, second, .. } => AnnotationError {
            annotation: format!("{} and {}", annotation_of(first), annotation_of(second)),
            value: String::new(),
            reason: e.to_string(),
        },
        _ => AnnotationError {
            annotation: "(none: the plugin's capture defaults)".into(),
            value: String::new(),
            reason: e.to_string(),
        },
    })?;
    Ok(cfg)
}

/// The annotation a configuration field comes from here.
fn annotation_of(field: &str) -> &'static str {
    match field {
        "inbound_ports" => keys::INCLUDE_INBOUND_PORTS,
        "inbound_ports_exclude" => keys::EXCLUDE_INBOUND_PORTS,
        "outbound_ports_include" => keys::INCLUDE_OUTBOUND_PORTS,
        "outbound_ports_exclude" => keys::EXCLUDE_OUTBOUND_PORTS,
        _ => "the plugin's capture defaults",
    }
}

fn invalid(annotation: &str, value: &str, reason: String) -> AnnotationError {
    AnnotationError {
        annotation: annotation.to_string(),
        value: value.to_string(),
        reason,
    }
}

/// Istio's list items: split on commas, each trimmed; an empty value is an empty list, an
/// empty item (`80,,81`) is an error, as Go's parsing of it fails.
fn items<'a>(key: &str, value: &'a str) -> Result<Vec<&'a str>, AnnotationError> {
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    value
        .split(',')
        .map(str::trim)
        .map(|item| match item {
            "" => Err(invalid(key, value, "an empty item in the list".into())),
            item => Ok(item),
        })
        .collect()
}

fn ports(key: &str, value: &str) -> Result<Vec<u16>, AnnotationError> {
    let parsed = items(key, value)?
        .into_iter()
        .map(|p| match p.parse::<u16>() {
            Ok(n) if n != 0 => Ok(n),
            _ => Err(invalid(
                key,
                value,
                format!("{p:?} is not a port from 1 to 65535"),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(dedup(parsed))
}

fn cidrs(key: &str, value: &str, ipv6: bool) -> Result<Vec<IpNet>, AnnotationError> {
    let mut out = Vec::new();
    for c in items(key, value)? {
        let net: IpNet = c.parse().map_err(|_| {
            invalid(
                key,
                value,
                format!("{c:?} is not a CIDR (ADDRESS/PREFIX-LENGTH) or \"*\""),
            )
        })?;
        if ipv6 || matches!(net, IpNet::V4(_)) {
            out.push(net.trunc());
        }
    }
    Ok(out)
}

fn interfaces(key: &str, value: &str) -> Result<Vec<String>, AnnotationError> {
    items(key, value)?
        .into_iter()
        .map(|name| {
            crate::config::check_interface("interface", name)
                .map(|()| name.to_string())
                .map_err(|e| invalid(key, value, e.to_string()))
        })
        .collect()
}

fn dedup(mut v: Vec<u16>) -> Vec<u16> {
    let mut seen = std::collections::BTreeSet::new();
    v.retain(|p| seen.insert(*p));
    v
}

/// Go's `strconv.ParseBool`.
fn go_parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}
