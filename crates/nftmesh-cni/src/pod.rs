//! The per-pod decision: whether this pod is captured, and with what. Without `mesh`, every
//! pod outside `exclude_namespaces` gets the entry's capture; with `mesh`, the pod's own
//! annotations (passed by the runtime in `runtimeConfig`) decide, as the mesh's own CNI plugin
//! decides from the pod it reads from the API server.

use crate::config::{Desired, Mesh, NetConf, WithoutAnnotations, ANNOTATIONS_CAPABILITY};
use crate::env::Env;
use crate::CniError;
use nftmesh::model::pod::{istio_sidecar, PodDecision};

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
    let Desired::Capture(defaults) = &desired else {
        return Err(CniError::InvalidConfig(
            "mesh decides sidecar capture; the entry has an ambient capture".into(),
        ));
    };
    let Some(annotations) = conf.annotations()? else {
        return match conf.without_annotations {
            WithoutAnnotations::Fail => Err(CniError::InvalidConfig(format!(
                "mesh {mesh:?}: the runtime passed no pod annotations, so this pod cannot be \
                 known to be unmeshed: declare \"capabilities\": {{\"{ANNOTATIONS_CAPABILITY}\": \
                 true}} in the nftmesh-cni entry of the conflist (containerd 1.5 or later, \
                 CRI-O), or set \"without_annotations\" to \"skip\" or \"capture\""
            ))),
            WithoutAnnotations::Skip => Ok(Plan::Skip(
                "no pod annotations passed (without_annotations: skip)".into(),
            )),
            WithoutAnnotations::Capture => Ok(Plan::Capture(desired)),
        };
    };
    match mesh {
        Mesh::Istio => match istio_sidecar(&annotations, defaults) {
            Ok(PodDecision::Capture(cfg)) => Ok(Plan::Capture(Desired::Capture(cfg))),
            Ok(PodDecision::Skip(why)) => Ok(Plan::Skip(why.to_string())),
            Err(e) => Err(CniError::Annotation(e.to_string())),
        },
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
