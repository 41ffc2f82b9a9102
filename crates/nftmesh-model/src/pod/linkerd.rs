//! Linkerd's per-pod decision, as linkerd-cni makes it (linkerd/linkerd2-proxy-init at
//! 183e791d99dcc6d4fa765b7331cbaec7ce40c2de, `cni-plugin/main.go` `cmdAdd`): a pod with the
//! `linkerd-proxy` container and without the `linkerd-init` init container is captured with the
//! plugin's settings, which the pod's `config.linkerd.io/*` annotations override.
//!
//! linkerd-cni reads the pod from the API server. Here the pod is known from its annotations
//! only: it is injected when it carries `linkerd.io/proxy-version`, which Linkerd's injector
//! writes on every pod it adds the proxy to. What only the API carries is not seen: whether the
//! pod also has a `linkerd-init` init container (with Linkerd's CNI mode on, the injector adds
//! none), the namespace's annotations (linkerd-cni's fallback when the pod has none), and the
//! `linkerd.io/control-plane-component` label (linkerd-cni then skips the API server's ports
//! outbound).

use super::{AnnotationError, PodDecision, SkipReason};
use crate::expr::PortRange;
use crate::linkerd::LinkerdConfig;
use ipnet::IpNet;
use std::collections::BTreeMap;

/// The annotation keys Linkerd's injector writes and linkerd-cni reads.
pub mod linkerd_keys {
    /// The proxy's version, written on every injected pod.
    pub const PROXY_VERSION: &str = "linkerd.io/proxy-version";
    /// Outbound ports and ranges not redirected; replaces the plugin's list.
    pub const SKIP_OUTBOUND_PORTS: &str = "config.linkerd.io/skip-outbound-ports";
    /// Inbound ports and ranges not redirected; added to the plugin's list.
    pub const SKIP_INBOUND_PORTS: &str = "config.linkerd.io/skip-inbound-ports";
    /// Source subnets not redirected inbound; replaces the plugin's list.
    pub const SKIP_SUBNETS: &str = "config.linkerd.io/skip-subnets";
    /// The proxy's uid.
    pub const PROXY_UID: &str = "config.linkerd.io/proxy-uid";
    /// The proxy's gid.
    pub const PROXY_GID: &str = "config.linkerd.io/proxy-gid";
}

use linkerd_keys as keys;

fn bad(key: &str, value: &str, reason: impl Into<String>) -> AnnotationError {
    AnnotationError {
        annotation: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// A comma-separated list of ports and `A-B` ranges, as linkerd's `ParsePortRange` reads them
/// (an invalid entry is an error here; linkerd-cni logs and skips it).
fn ports(key: &str, value: &str) -> Result<Vec<PortRange>, AnnotationError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (a, b) = p.split_once('-').unwrap_or((p, p));
            let n = |s: &str| {
                s.trim().parse::<u16>().map_err(|_| {
                    bad(
                        key,
                        value,
                        format!("{p:?} is not a port or a range of ports"),
                    )
                })
            };
            let (first, last) = (n(a)?, n(b)?);
            if first > last {
                return Err(bad(
                    key,
                    value,
                    format!("{p:?}: the range ends before it starts"),
                ));
            }
            Ok(PortRange { first, last })
        })
        .collect()
}

/// An id as linkerd-cni reads it (`strconv.Atoi`); below 1 means none, as proxy-init treats it.
fn id(key: &str, value: &str) -> Result<Option<u32>, AnnotationError> {
    let v: i64 = value
        .trim()
        .parse()
        .map_err(|_| bad(key, value, "not an integer"))?;
    if v > i64::from(u32::MAX) {
        return Err(bad(key, value, "larger than a 32-bit id"));
    }
    Ok((v > 0).then_some(v as u32))
}

/// Decide as linkerd-cni does: captured only when injected (`linkerd.io/proxy-version`), with
/// `defaults` (the plugin entry's settings) overridden by the pod's annotations, each as
/// linkerd-cni applies it: skipped outbound ports and subnets replace the defaults' lists,
/// skipped inbound ports are added to them, the proxy's uid and gid replace them. An empty
/// annotation is absent, as linkerd-cni treats it. The result is validated: a subnet of a
/// family the capture is off for is an error.
pub fn linkerd(
    annotations: &BTreeMap<String, String>,
    defaults: &LinkerdConfig,
) -> Result<PodDecision<LinkerdConfig>, AnnotationError> {
    if annotations.get(keys::PROXY_VERSION).is_none() {
        return Ok(PodDecision::Skip(SkipReason::NoLinkerdProxy));
    }
    let get = |k: &str| annotations.get(k).filter(|v| !v.trim().is_empty());
    let mut cfg = defaults.clone();
    if let Some(v) = get(keys::SKIP_OUTBOUND_PORTS) {
        cfg.outbound_ports_to_ignore = ports(keys::SKIP_OUTBOUND_PORTS, v)?;
    }
    if let Some(v) = get(keys::SKIP_INBOUND_PORTS) {
        cfg.inbound_ports_to_ignore
            .extend(ports(keys::SKIP_INBOUND_PORTS, v)?);
    }
    if let Some(v) = get(keys::SKIP_SUBNETS) {
        cfg.subnets_to_ignore = v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .map_err(|_| bad(keys::SKIP_SUBNETS, v, format!("{s:?} is not a CIDR")))
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(v) = get(keys::PROXY_UID) {
        cfg.proxy_uid = id(keys::PROXY_UID, v)?;
    }
    if let Some(v) = get(keys::PROXY_GID) {
        cfg.proxy_gid = id(keys::PROXY_GID, v)?;
    }
    if let Err(e) = cfg.validate() {
        let v = get(keys::SKIP_SUBNETS).cloned().unwrap_or_default();
        return Err(bad(keys::SKIP_SUBNETS, &v, e.to_string()));
    }
    Ok(PodDecision::Capture(Box::new(cfg)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn plugin() -> LinkerdConfig {
        LinkerdConfig {
            proxy_uid: Some(2102),
            inbound_ports_to_ignore: vec![PortRange::single(4190), PortRange::single(4191)],
            outbound_ports_to_ignore: vec![PortRange::single(443)],
            ..LinkerdConfig::default()
        }
    }

    #[test]
    fn only_injected_pods_are_captured() {
        assert_eq!(
            linkerd(&pod(&[]), &plugin()).unwrap(),
            PodDecision::Skip(SkipReason::NoLinkerdProxy)
        );
        let d = linkerd(&pod(&[(keys::PROXY_VERSION, "edge-26.11.1")]), &plugin()).unwrap();
        assert_eq!(d, PodDecision::Capture(Box::new(plugin())));
    }

    #[test]
    fn annotations_override_as_linkerd_cni_applies_them() {
        let a = pod(&[
            (keys::PROXY_VERSION, "stable-2.14.10"),
            (keys::SKIP_OUTBOUND_PORTS, "3306,5432-5433"),
            (keys::SKIP_INBOUND_PORTS, "22"),
            (keys::SKIP_SUBNETS, "10.0.0.0/8, 192.168.0.0/16"),
            (keys::PROXY_UID, "2103"),
            (keys::PROXY_GID, "0"),
        ]);
        let PodDecision::Capture(cfg) = linkerd(&a, &plugin()).unwrap() else {
            panic!("captured")
        };
        // Replaced.
        assert_eq!(
            cfg.outbound_ports_to_ignore,
            vec![
                PortRange::single(3306),
                PortRange {
                    first: 5432,
                    last: 5433
                }
            ]
        );
        // Added to.
        assert_eq!(
            cfg.inbound_ports_to_ignore,
            [4190, 4191, 22].map(PortRange::single).to_vec()
        );
        assert_eq!(cfg.subnets_to_ignore.len(), 2);
        assert_eq!((cfg.proxy_uid, cfg.proxy_gid), (Some(2103), None));
    }

    #[test]
    fn a_bad_annotation_is_an_error_naming_it() {
        for (key, value) in [
            (keys::SKIP_OUTBOUND_PORTS, "http"),
            (keys::SKIP_INBOUND_PORTS, "9-3"),
            (keys::SKIP_SUBNETS, "10.0.0.0/33"),
            (keys::SKIP_SUBNETS, "fd00::/8"),
            (keys::PROXY_UID, "root"),
            (keys::PROXY_GID, "99999999999"),
        ] {
            let a = pod(&[(keys::PROXY_VERSION, "v"), (key, value)]);
            let e = linkerd(&a, &plugin()).unwrap_err();
            assert_eq!(e.annotation, key, "{e}");
            assert_eq!(e.value, value, "{e}");
        }
    }
}
