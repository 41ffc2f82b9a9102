//! The per-pod decision: whether this pod is captured, and with what. Without `mesh`, every
//! pod outside `exclude_namespaces` gets the entry's capture; with `mesh`, the pod's own
//! annotations (passed by the runtime in `runtimeConfig`) decide, as the mesh's own CNI plugin
//! (istio-cni, linkerd-cni) decides from the pod it reads from the API server.

use crate::config::{Desired, Mesh, NetConf, WithoutAnnotations, ANNOTATIONS_CAPABILITY};
use crate::env::Env;
use crate::CniError;
use nftmesh::model::pod::{istio_sidecar, linkerd, AnnotationError, PodDecision};

/// What this pod gets.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// This capture.
    Capture(Desired),
    /// Nothing, for this reason (one line for the log).
    Skip(String),
}

/// Decide for the pod `env` and `conf` describe. `exclude_namespaces` matches the pod's
/// `K8S_POD_NAMESPACE` from `CNI_ARGS`; a runtime that passes none (not a Kubernetes pod:
/// podman, cnitool) matches no excluded namespace, and the pod is decided as any other.
pub fn decide(env: &Env, conf: &NetConf) -> Result<Plan, CniError> {
    if let Some(ns) = env.arg("K8S_POD_NAMESPACE")? {
        if conf.exclude_namespaces.contains(&ns) {
            return Ok(Plan::Skip(format!("namespace {ns} is excluded")));
        }
    }
    let desired = conf.desired()?;
    let Some(mesh) = conf.mesh else {
        return Ok(Plan::Capture(desired));
    };
    // The settings the annotations override (NetConf::parse pairs each mesh with its own).
    let defaults = match (mesh, desired.clone()) {
        (Mesh::Istio, Desired::Capture(d)) => Defaults::Istio(d),
        (Mesh::Linkerd, Desired::Linkerd(d)) => Defaults::Linkerd(d),
        (mesh, other) => {
            return Err(CniError::InvalidConfig(format!(
                "mesh {}: the entry has a {} capture, not the mesh's own",
                mesh.name(),
                other.kind()
            )))
        }
    };
    let Some(annotations) = conf.annotations()? else {
        return match conf.without_annotations {
            WithoutAnnotations::Fail => Err(CniError::InvalidConfig(format!(
                "mesh {}: the runtime passed no pod annotations, so this pod cannot be \
                 known to be unmeshed: declare \"capabilities\": {{\"{ANNOTATIONS_CAPABILITY}\": \
                 true}} in the nftmesh-cni entry of the conflist (containerd 1.5 or later, \
                 CRI-O), or set \"without_annotations\" to \"skip\" or \"capture\"",
                mesh.name()
            ))),
            WithoutAnnotations::Skip => Ok(Plan::Skip(
                "no pod annotations passed (without_annotations: skip)".into(),
            )),
            WithoutAnnotations::Capture => Ok(Plan::Capture(desired)),
        };
    };
    match defaults {
        Defaults::Istio(d) => plan(istio_sidecar(&annotations, &d), Desired::Capture),
        Defaults::Linkerd(d) => plan(linkerd(&annotations, &d), Desired::Linkerd),
    }
}

/// The entry's settings that a mesh's decision starts from.
enum Defaults {
    Istio(Box<nftmesh::CaptureConfig>),
    Linkerd(Box<nftmesh::model::linkerd::LinkerdConfig>),
}

/// The plan of a mesh's decision: its capture as `wrap` makes it `Desired`, or its reason to
/// skip; a bad annotation is [`CniError::Annotation`].
fn plan<C>(
    decision: Result<PodDecision<C>, AnnotationError>,
    wrap: fn(Box<C>) -> Desired,
) -> Result<Plan, CniError> {
    match decision {
        Ok(PodDecision::Capture(cfg)) => Ok(Plan::Capture(wrap(cfg))),
        Ok(PodDecision::Skip(why)) => Ok(Plan::Skip(why.to_string())),
        Err(e) => Err(CniError::Annotation(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conf(extra: serde_json::Value) -> NetConf {
        let mut c = json!({"cniVersion": "1.0.0", "name": "n", "type": "nftmesh-cni"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        NetConf::parse(c.to_string().as_bytes()).unwrap()
    }

    fn annotated(a: serde_json::Value) -> serde_json::Value {
        json!({"mesh": "istio", "runtimeConfig": {ANNOTATIONS_CAPABILITY: a}})
    }

    const STATUS: &str =
        r#"{"initContainers":["istio-validation","istio-proxy"],"containers":null}"#;

    #[test]
    fn without_mesh_every_pod_outside_the_excluded_namespaces_is_captured() {
        let c = conf(json!({"capture": {}, "exclude_namespaces": ["kube-system"]}));
        let env = |args: &str| Env {
            args: Some(args.into()),
            ..Env::default()
        };
        assert!(matches!(decide(&env(""), &c), Ok(Plan::Capture(_))));
        let skipped = decide(&env("K8S_POD_NAMESPACE=kube-system"), &c).unwrap();
        assert_eq!(
            skipped,
            Plan::Skip("namespace kube-system is excluded".into())
        );
        // No K8S_POD_NAMESPACE (podman, cnitool): no namespace is excluded.
        assert!(matches!(decide(&Env::default(), &c), Ok(Plan::Capture(_))));
    }

    #[test]
    fn with_mesh_istio_the_annotations_decide() {
        let env = Env::default();
        let injected = conf(annotated(json!({
            "sidecar.istio.io/status": STATUS,
            "sidecar.istio.io/interceptionMode": "TPROXY",
        })));
        let Plan::Capture(Desired::Capture(cfg)) = decide(&env, &injected).unwrap() else {
            panic!()
        };
        assert_eq!(cfg.mode, nftmesh::InterceptionMode::Tproxy);
        let plain = conf(annotated(json!({"app": "web"})));
        assert!(matches!(decide(&env, &plain).unwrap(), Plan::Skip(w) if w.contains("status")));
        let bad = conf(annotated(json!({
            "sidecar.istio.io/status": STATUS,
            "traffic.sidecar.istio.io/excludeOutboundPorts": "http",
        })));
        let e = decide(&env, &bad).unwrap_err();
        assert_eq!(e.code(), 7);
        assert!(e.to_string().contains("excludeOutboundPorts") && e.to_string().contains("http"));
    }

    #[test]
    fn without_annotations_fails_closed_by_default_or_skips_or_captures() {
        let env = Env::default();
        let e = decide(&env, &conf(json!({"mesh": "istio"}))).unwrap_err();
        assert_eq!(e.code(), 7);
        assert!(e.to_string().contains("\"capabilities\""), "{e}");
        let null = conf(json!({"mesh": "istio", "runtimeConfig": {ANNOTATIONS_CAPABILITY: null}}));
        assert!(decide(&env, &null).is_err());
        let skip = conf(json!({"mesh": "istio", "without_annotations": "skip"}));
        assert!(matches!(decide(&env, &skip).unwrap(), Plan::Skip(_)));
        let capture = conf(json!({"mesh": "istio", "without_annotations": "capture"}));
        assert!(matches!(decide(&env, &capture).unwrap(), Plan::Capture(_)));
    }

    /// The annotations Linkerd's injector writes on a pod it adds the proxy to (linkerd/linkerd2
    /// `charts/partials/templates/_metadata.tpl`, `partials.proxy.annotations`, and the
    /// injector's `linkerd.io/created-by`), with `extra` set.
    fn linkerd_injected(extra: &[(&str, &str)]) -> serde_json::Value {
        let mut a = json!({
            "linkerd.io/created-by": "linkerd/proxy-injector edge-25.8.5",
            "linkerd.io/proxy-version": "edge-25.8.5",
            "linkerd.io/trust-root-sha256":
                "8ed6f788dd7a1b21b02b80d69712e94d600b840f4633b50979208e057954e943",
            "cluster-autoscaler.kubernetes.io/safe-to-evict": "true",
        });
        for (k, v) in extra {
            a[*k] = json!(v);
        }
        json!({"mesh": "linkerd", "runtimeConfig": {ANNOTATIONS_CAPABILITY: a}})
    }

    fn linkerd_plan(c: &NetConf) -> nftmesh::model::linkerd::LinkerdConfig {
        match decide(&Env::default(), c) {
            Ok(Plan::Capture(Desired::Linkerd(l))) => *l,
            other => panic!("a Linkerd capture, not {other:?}"),
        }
    }

    #[test]
    fn with_mesh_linkerd_the_annotations_decide() {
        use nftmesh::model::expr::PortRange;
        let env = Env::default();
        // Injected, no overrides: the entry's settings (linkerd-cni's chart defaults).
        let plain_injected = conf(linkerd_injected(&[]));
        assert_eq!(
            linkerd_plan(&plain_injected),
            crate::config::linkerd_cni_defaults()
        );
        // Each override as linkerd-cni applies it.
        let l = linkerd_plan(&conf(linkerd_injected(&[
            ("config.linkerd.io/skip-outbound-ports", "3306"),
            ("config.linkerd.io/skip-inbound-ports", "22,8000-8010"),
            ("config.linkerd.io/skip-subnets", "10.96.0.0/12"),
            ("config.linkerd.io/proxy-uid", "2103"),
            ("config.linkerd.io/proxy-gid", "2104"),
        ])));
        assert_eq!(l.outbound_ports_to_ignore, vec![PortRange::single(3306)]);
        assert_eq!(
            l.inbound_ports_to_ignore,
            vec![
                PortRange::single(4190),
                PortRange::single(4191),
                PortRange::single(22),
                PortRange {
                    first: 8000,
                    last: 8010
                }
            ],
            "added to the entry's"
        );
        assert_eq!(l.subnets_to_ignore, vec!["10.96.0.0/12".parse().unwrap()]);
        assert_eq!((l.proxy_uid, l.proxy_gid), (Some(2103), Some(2104)));
        // The entry's own settings are what the annotations override.
        let mut own = linkerd_injected(&[("config.linkerd.io/skip-inbound-ports", "22")]);
        own["linkerd"] =
            json!({"proxy_uid": 999, "inbound_ports_to_ignore": [{"first": 1, "last": 1}]});
        let l = linkerd_plan(&conf(own));
        assert_eq!(l.proxy_uid, Some(999));
        assert_eq!(
            l.inbound_ports_to_ignore,
            [1, 22].map(PortRange::single).to_vec()
        );
        // No proxy: skipped, saying why; Istio's sidecar annotations mean nothing here.
        let uninjected = conf(
            json!({"mesh": "linkerd", "runtimeConfig": {ANNOTATIONS_CAPABILITY: {
                "sidecar.istio.io/status": STATUS, "linkerd.io/inject": "enabled",
            }}}),
        );
        let Plan::Skip(why) = decide(&env, &uninjected).unwrap() else {
            panic!("skipped")
        };
        assert!(why.contains("linkerd.io/proxy-version"), "{why}");
        // A bad annotation: an annotation error, code 7, naming it and its value.
        for (key, value) in [
            ("config.linkerd.io/skip-outbound-ports", "mysql"),
            ("config.linkerd.io/skip-inbound-ports", "9-3"),
            ("config.linkerd.io/skip-subnets", "fd00::/8"),
            ("config.linkerd.io/proxy-uid", "root"),
        ] {
            let e = decide(&env, &conf(linkerd_injected(&[(key, value)]))).unwrap_err();
            assert!(matches!(e, CniError::Annotation(_)), "{e:?}");
            assert_eq!(e.code(), 7);
            assert!(
                e.to_string().contains(key) && e.to_string().contains(value),
                "{e}"
            );
        }
    }

    #[test]
    fn mesh_linkerd_without_annotations_and_in_an_excluded_namespace() {
        let env = Env::default();
        let e = decide(&env, &conf(json!({"mesh": "linkerd"}))).unwrap_err();
        assert_eq!(e.code(), 7);
        assert!(
            e.to_string()
                .contains("mesh linkerd: the runtime passed no pod annotations"),
            "{e}"
        );
        let skip = conf(json!({"mesh": "linkerd", "without_annotations": "skip"}));
        assert!(matches!(decide(&env, &skip).unwrap(), Plan::Skip(_)));
        let capture = conf(json!({"mesh": "linkerd", "without_annotations": "capture"}));
        assert_eq!(
            linkerd_plan(&capture),
            crate::config::linkerd_cni_defaults()
        );
        let mut excluded = linkerd_injected(&[]);
        excluded["exclude_namespaces"] = json!(["linkerd"]);
        let env = Env {
            args: Some("K8S_POD_NAMESPACE=linkerd".into()),
            ..Env::default()
        };
        assert_eq!(
            decide(&env, &conf(excluded)).unwrap(),
            Plan::Skip("namespace linkerd is excluded".into())
        );
    }

    #[test]
    fn mesh_keys_are_checked_when_the_configuration_is_read() {
        let code = |extra: serde_json::Value| {
            let mut c = json!({"cniVersion": "1.0.0"});
            for (k, v) in extra.as_object().unwrap() {
                c[k] = v.clone();
            }
            NetConf::parse(c.to_string().as_bytes())
                .map(|_| ())
                .map_err(|e| e.code())
        };
        assert_eq!(code(json!({"mesh": "linkerd2"})), Err(7));
        assert_eq!(code(json!({"mesh": "istio", "ambient": {}})), Err(7));
        assert_eq!(
            code(json!({"mesh": "istio", "without_annotations": "maybe"})),
            Err(7)
        );
        assert_eq!(code(json!({"mesh": "istio", "runtimeConfig": []})), Err(7));
        assert_eq!(
            code(json!({"mesh": "istio", "runtimeConfig": {ANNOTATIONS_CAPABILITY: {"a": 1}}})),
            Err(7)
        );
        assert_eq!(code(json!({"mesh": "istio"})), Ok(()));
    }
}
