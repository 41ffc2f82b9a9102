//! The plugin's entry of the network configuration list, as the runtime passes it on stdin:
//! the spec's fields (`cniVersion`, `name`, `type`, `prevResult`) and nftmesh's own keys
//! (`capture`, `ambient`, `linkerd`, `mesh`, `without_annotations`, `exclude_namespaces`,
//! `validate`, `validation_timeout`, `agent_socket`, `backend`, `bpffs`, `log_file`,
//! `log_level`, `log_format`), the pod's annotations and its cgroup (`cgroupPath`) in
//! `runtimeConfig`. Other keys (capabilities, other runtime config) are ignored, as the spec
//! asks of plugins.

use crate::CniError;
use nftmesh::log::{Format, Level};
use nftmesh::model::expr::PortRange;
use nftmesh::model::linkerd::LinkerdConfig;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

/// Every version this plugin speaks, oldest first (the `supportedVersions` of VERSION).
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// The most stdin this plugin reads (a network configuration with its `prevResult`).
pub const MAX_STDIN: usize = 1 << 20;

/// A string key read with `T`'s [`FromStr`] (`log_level`, `log_format`).
fn parsed<'de, D: Deserializer<'de>, T: FromStr<Err = String>>(d: D) -> Result<T, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

/// Where and how the plugin logs, as far as a configuration says: read from any JSON object,
/// even one that is otherwise invalid, so that its error can be logged.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogSettings {
    /// `log_file`.
    pub file: Option<PathBuf>,
    /// `log_level` (`info` when absent or invalid).
    pub level: Level,
    /// `log_format` (`text` when absent or invalid).
    pub format: Format,
}

/// The log settings of raw stdin, if it is a JSON object with a string `log_file`: the file
/// an invalid configuration's error is logged to. `None` when the configuration cannot name
/// one (not JSON, not an object, no `log_file` or not a string).
pub fn log_settings(raw: &[u8]) -> Option<LogSettings> {
    if raw.len() > MAX_STDIN {
        return None;
    }
    let v: Value = serde_json::from_slice(raw).ok()?;
    let file = PathBuf::from(v.get("log_file")?.as_str()?);
    let key = |k: &str| v.get(k).and_then(Value::as_str);
    Some(LogSettings {
        file: Some(file),
        level: key("log_level")
            .and_then(|l| l.parse().ok())
            .unwrap_or_default(),
        format: key("log_format")
            .and_then(|f| f.parse().ok())
            .unwrap_or_default(),
    })
}

/// The plugin's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct NetConf {
    /// The spec version of the configuration (and of the result printed).
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// The network's name.
    #[serde(default)]
    pub name: Option<String>,
    /// The plugin type (`nftmesh-cni`).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// The result of the plugins before this one (ADD and CHECK of a chained plugin).
    #[serde(default, rename = "prevResult")]
    pub prev_result: Option<Value>,
    /// A sidecar capture, as `nftmesh apply --config` reads it.
    #[serde(default)]
    pub capture: Option<Value>,
    /// An ambient (ztunnel) in-pod capture, as `nftmesh ambient apply --config` reads it.
    #[serde(default)]
    pub ambient: Option<Value>,
    /// Linkerd's capture (linkerd2-proxy-init's rules), in [`LinkerdConfig`]'s JSON schema
    /// (snake_case keys; keys it omits take [`LinkerdConfig`]'s defaults). With
    /// `"mesh": "linkerd"` and no `linkerd`, [`linkerd_cni_defaults`].
    #[serde(default)]
    pub linkerd: Option<Value>,
    /// Kubernetes namespaces (`K8S_POD_NAMESPACE` in `CNI_ARGS`) whose pods get no capture.
    #[serde(default)]
    pub exclude_namespaces: Vec<String>,
    /// After ADD, check the capture with a real connection (Istio's validation) and fail the
    /// ADD, removing the capture, if it does not hold. Refused with Linkerd's capture, which
    /// Linkerd validates with an init container of its own (`linkerd-network-validator`).
    #[serde(default)]
    pub validate: bool,
    /// How long the validation may take, in seconds (default 5, Istio's probe timeout).
    #[serde(default)]
    pub validation_timeout: Option<f64>,
    /// Delegate ADD, CHECK and DEL to the node agent listening on this unix socket; fail
    /// (code 11) when it cannot be reached.
    #[serde(default)]
    pub agent_socket: Option<PathBuf>,
    /// Append a line per event to this file (each command's outcome, and its errors,
    /// configuration errors included).
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    /// The lowest level logged: `error`, `warn`, `info` (the default) or `debug` (also the
    /// configuration read).
    #[serde(default, deserialize_with = "parsed")]
    pub log_level: Level,
    /// `text` (the default: `TIME\tLEVEL\tMESSAGE\tkey=value ...`) or `json` (one object per
    /// line), as every nftmesh binary logs ([`nftmesh::log`]).
    #[serde(default, deserialize_with = "parsed")]
    pub log_format: Format,
    /// Decide per pod from the pod's annotations, as this mesh does (`"istio"`, `"linkerd"`):
    /// only meshed pods are captured, each with its own settings, `capture` (Istio) or
    /// `linkerd` (Linkerd) holding what annotations do not say. Without it every pod outside
    /// `exclude_namespaces` gets `capture`, `ambient` or `linkerd`.
    #[serde(default)]
    pub mesh: Option<Mesh>,
    /// With `mesh`: what a pod gets when the runtime passed no annotations (the entry lacks
    /// the capability, or the runtime has none to pass).
    #[serde(default)]
    pub without_annotations: WithoutAnnotations,
    /// How a sidecar capture is installed: `nftables` (the default: every rule in the pod's
    /// namespace) or `ebpf` (outbound by BPF programs on the pod's cgroup, from the runtime's
    /// `cgroupPath`; inbound by nf_tables: [`nftmesh::ebpf`]).
    #[serde(default)]
    pub backend: Backend,
    /// With `backend: ebpf`: the BPF file system the programs are pinned in (default: the
    /// one `/proc/mounts` lists, `/sys/fs/bpf` first).
    #[serde(default)]
    pub bpffs: Option<PathBuf>,
    /// With `backend: ebpf`: how inbound is captured, `nftables` (the default: a table in the
    /// pod's namespace) or `sk_lookup` (BPF steering to the proxy's listener: no table, no
    /// conntrack; the plugin installs before the proxy starts, as it must be).
    #[serde(default)]
    pub ebpf_inbound: EbpfInboundConf,
    /// The runtime's values for the capabilities the entry declares; the pod's annotations
    /// are its `io.kubernetes.cri.pod-annotations` ([`ANNOTATIONS_CAPABILITY`]), its cgroup
    /// its `cgroupPath` ([`CGROUP_PATH_CAPABILITY`]).
    #[serde(default, rename = "runtimeConfig")]
    pub runtime_config: Option<Value>,
    /// `capture`, `ambient` or `linkerd`, parsed and validated once by [`NetConf::parse`].
    #[serde(skip)]
    parsed: Option<Desired>,
}

/// The capability through which containerd (1.5 and later) and CRI-O pass a pod's
/// annotations in `runtimeConfig`, when the plugin's entry declares it in `capabilities`.
pub const ANNOTATIONS_CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";

/// The capability through which containerd's CRI plugin passes the pod's cgroup parent in
/// `runtimeConfig` (a cgroupfs path or a systemd slice name; [`crate::cgroup`]), when the
/// entry declares it in `capabilities`.
pub const CGROUP_PATH_CAPABILITY: &str = "cgroupPath";

/// How the plugin installs a sidecar capture (`backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Every rule in nf_tables in the pod's namespace. The default.
    #[default]
    Nftables,
    /// Outbound capture by eBPF programs on the pod's cgroup, inbound by nf_tables.
    Ebpf,
}

/// How the eBPF backend captures inbound (`ebpf_inbound`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EbpfInboundConf {
    /// An nf_tables table in the pod's namespace. The default.
    #[default]
    Nftables,
    /// `sk_lookup` steering ([`nftmesh::ebpf::EbpfInbound::SkLookup`]).
    SkLookup,
}

/// The mesh whose per-pod decision the plugin makes (`mesh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mesh {
    /// Istio's sidecar injection ([`nftmesh::model::pod::istio_sidecar`]), with the entry's
    /// `capture` as the defaults.
    Istio,
    /// Linkerd's proxy injection ([`nftmesh::model::pod::linkerd`], as linkerd-cni decides),
    /// with the entry's `linkerd` as the defaults.
    Linkerd,
}

impl Mesh {
    /// The name in the configuration (`istio`, `linkerd`).
    pub fn name(self) -> &'static str {
        match self {
            Mesh::Istio => "istio",
            Mesh::Linkerd => "linkerd",
        }
    }
}

/// What `"mesh": "linkerd"` captures with when the entry has no `linkerd`: the settings
/// Linkerd's `linkerd2-cni` chart writes into linkerd-cni's configuration with its default
/// values (`charts/linkerd2-cni/templates/cni-plugin.yaml` and `values.yaml` of
/// linkerd/linkerd2): proxy ports 4143 in and 4140 out (`inboundProxyPort`,
/// `outboundProxyPort`), proxy uid 2102 (`proxyUID`), no proxy gid (`proxyGID: -1` omits it),
/// inbound ports 4190 and 4191 not redirected (the proxy's control and admin ports,
/// `proxyControlPort`, `proxyAdminPort`), nothing else ignored, every port redirected, IPv4
/// only (`disableIPv6: true`).
pub fn linkerd_cni_defaults() -> LinkerdConfig {
    LinkerdConfig {
        incoming_proxy_port: 4143,
        outgoing_proxy_port: 4140,
        proxy_uid: Some(2102),
        proxy_gid: None,
        ports_to_redirect: Vec::new(),
        inbound_ports_to_ignore: vec![PortRange::single(4190), PortRange::single(4191)],
        outbound_ports_to_ignore: Vec::new(),
        subnets_to_ignore: Vec::new(),
        ipv6: false,
    }
}

/// What a pod gets under `mesh` when no annotations were passed (`without_annotations`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WithoutAnnotations {
    /// Fail the ADD: the pod cannot be known to be unmeshed (fail closed). The default.
    #[default]
    Fail,
    /// No capture.
    Skip,
    /// The entry's settings as they are (`capture`, or `linkerd` with `"mesh": "linkerd"`),
    /// as without `mesh`.
    Capture,
}

/// The capture a configuration asks for (the agent protocol's type, so the two agree).
pub use nftmesh_protocol::Desired;

/// The `cniVersion` of raw stdin, if it has one (for the error object of a configuration
/// that is otherwise unreadable).
pub fn version_of(raw: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(raw).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_string)
}

impl NetConf {
    /// Parse stdin: JSON, a `cniVersion` this plugin speaks, nftmesh's keys well-typed.
    pub fn parse(raw: &[u8]) -> Result<Self, CniError> {
        if raw.len() > MAX_STDIN {
            return Err(CniError::InvalidConfig(format!(
                "{} bytes on stdin, more than {MAX_STDIN}",
                raw.len()
            )));
        }
        let value: Value = serde_json::from_slice(raw).map_err(|e| {
            CniError::Decode(format!("line {}, column {}: {e}", e.line(), e.column()))
        })?;
        let version = match value.get("cniVersion") {
            Some(Value::String(v)) => v.clone(),
            Some(_) => return Err(CniError::InvalidConfig("cniVersion is not a string".into())),
            None => return Err(CniError::InvalidConfig("cniVersion is missing".into())),
        };
        if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
            return Err(CniError::IncompatibleVersion {
                version,
                why: format!("this plugin speaks {}", SUPPORTED_VERSIONS.join(", ")),
            });
        }
        let mut conf: NetConf =
            serde_json::from_value(value).map_err(|e| CniError::InvalidConfig(e.to_string()))?;
        conf.settle_mesh()?;
        if conf.runtime_config.as_ref().is_some_and(|r| !r.is_object()) {
            return Err(CniError::InvalidConfig(
                "runtimeConfig is not an object".into(),
            ));
        }
        conf.annotations()?;
        conf.cgroup_path()?;
        if conf
            .validation_timeout
            .is_some_and(|t| !(t > 0.0 && t <= 60.0))
        {
            return Err(CniError::InvalidConfig(
                "validation_timeout: expected seconds, more than 0 and at most 60".into(),
            ));
        }
        if conf.prev_result.as_ref().is_some_and(|p| !p.is_object()) {
            return Err(CniError::InvalidConfig(
                "prevResult is not an object".into(),
            ));
        }
        let desired = conf.read_desired()?;
        if conf.validate {
            if let Desired::Linkerd(_) = desired {
                return Err(CniError::InvalidConfig(
                    "validate is Istio's validation (a connection redirected to Istio's capture \
                     ports) and does not apply to Linkerd's capture, which Linkerd validates \
                     with its own linkerd-network-validator init container: remove \"validate\" \
                     from an entry with a linkerd capture (or \"mesh\": \"linkerd\")"
                        .into(),
                ));
            }
        }
        conf.check_backend(&desired)?;
        conf.parsed = Some(desired);
        Ok(conf)
    }

    /// `backend: ebpf` is for a sidecar capture installed by the plugin itself; what it cannot
    /// do yet is refused here, before any pod.
    fn check_backend(&self, desired: &Desired) -> Result<(), CniError> {
        if self.backend == Backend::Nftables {
            if self.bpffs.is_some() {
                return Err(CniError::InvalidConfig(
                    "bpffs is where backend ebpf pins its programs: it needs \"backend\": \"ebpf\""
                        .into(),
                ));
            }
            if self.ebpf_inbound != EbpfInboundConf::Nftables {
                return Err(CniError::InvalidConfig(
                    "ebpf_inbound says how backend ebpf captures inbound: it needs \"backend\": \"ebpf\""
                        .into(),
                ));
            }
            return Ok(());
        }
        let refuse = |what: &str| {
            Err(CniError::InvalidConfig(format!(
                "backend ebpf with {what} is not supported yet: backend ebpf installs Istio's \
                 sidecar capture (capture, or mesh istio) from the plugin itself; use \
                 \"backend\": \"nftables\" (the default) for it"
            )))
        };
        if let Desired::Ambient(_) = desired {
            return refuse("an ambient capture");
        }
        if let Desired::Linkerd(_) = desired {
            return refuse("Linkerd's capture (linkerd, or mesh linkerd)");
        }
        if self.agent_socket.is_some() {
            return refuse("agent_socket (the node agent installs with nf_tables)");
        }
        if self.validate {
            return refuse(
                "validate (Istio's validation connects from the plugin, which is not in the \
                 pod's cgroup)",
            );
        }
        Ok(())
    }

    /// The pod's cgroup the runtime passed (`runtimeConfig`'s [`CGROUP_PATH_CAPABILITY`]);
    /// `None` when it passed none (`null` and `""` count as none).
    pub fn cgroup_path(&self) -> Result<Option<String>, CniError> {
        match self
            .runtime_config
            .as_ref()
            .and_then(|r| r.get(CGROUP_PATH_CAPABILITY))
        {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(CniError::InvalidConfig(format!(
                "runtimeConfig.{CGROUP_PATH_CAPABILITY}: expected a string, not {other}"
            ))),
        }
    }

    /// With `mesh`: refuse the keys of another mesh's capture, and fill in the settings the
    /// annotations do not carry when the entry gives none (Istio's defaults for `capture`,
    /// [`linkerd_cni_defaults`] for `linkerd`).
    fn settle_mesh(&mut self) -> Result<(), CniError> {
        let refuse = |mesh: Mesh, key: &str, why: &str| {
            Err(CniError::InvalidConfig(format!(
                "mesh {}: {key} is refused: {why}",
                mesh.name()
            )))
        };
        match self.mesh {
            None => Ok(()),
            Some(Mesh::Istio) => {
                if self.ambient.is_some() {
                    return Err(CniError::InvalidConfig(
                        "mesh decides sidecar capture per pod from annotations; ambient pods are \
                         enrolled by labels, which runtimes do not pass: use one of mesh and \
                         ambient"
                            .into(),
                    ));
                }
                if self.linkerd.is_some() {
                    return refuse(
                        Mesh::Istio,
                        "linkerd",
                        "it is Linkerd's capture, and Istio's sidecar pods are captured with \
                         capture: use \"mesh\": \"linkerd\" for Linkerd's pods",
                    );
                }
                // The settings annotations do not carry: Istio's defaults unless given.
                self.capture
                    .get_or_insert_with(|| Value::Object(Default::default()));
                Ok(())
            }
            Some(Mesh::Linkerd) => {
                if self.capture.is_some() {
                    return refuse(
                        Mesh::Linkerd,
                        "capture",
                        "it is Istio's sidecar capture; Linkerd's pods are captured with the \
                         settings in linkerd (absent: linkerd-cni's chart defaults)",
                    );
                }
                if self.ambient.is_some() {
                    return refuse(
                        Mesh::Linkerd,
                        "ambient",
                        "it is Istio ambient's in-pod capture; Linkerd's pods are captured \
                         with the settings in linkerd (absent: linkerd-cni's chart defaults)",
                    );
                }
                if self.linkerd.is_none() {
                    let defaults = serde_json::to_value(linkerd_cni_defaults())
                        .map_err(|e| CniError::InvalidConfig(format!("linkerd: {e}")))?;
                    self.linkerd = Some(defaults);
                }
                Ok(())
            }
        }
    }

    /// `capture`, `ambient` or `linkerd` as [`Desired::from_parts`] reads them.
    fn read_desired(&self) -> Result<Desired, CniError> {
        Desired::from_parts(
            self.capture.as_ref(),
            self.ambient.as_ref(),
            self.linkerd.as_ref(),
        )
        .map_err(CniError::InvalidConfig)
    }

    /// The capture asked for: exactly one of `capture`, `ambient` and `linkerd`, validated.
    pub fn desired(&self) -> Result<Desired, CniError> {
        match &self.parsed {
            Some(d) => Ok(d.clone()),
            None => self.read_desired(),
        }
    }

    /// The pod's annotations the runtime passed (`runtimeConfig`'s [`ANNOTATIONS_CAPABILITY`]);
    /// `None` when it passed none (`null` counts as none).
    pub fn annotations(&self) -> Result<Option<BTreeMap<String, String>>, CniError> {
        match self
            .runtime_config
            .as_ref()
            .and_then(|r| r.get(ANNOTATIONS_CAPABILITY))
        {
            None | Some(Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| {
                CniError::InvalidConfig(format!(
                    "runtimeConfig.{ANNOTATIONS_CAPABILITY}: expected an object of strings: {e}"
                ))
            }),
        }
    }

    /// Whether the spec version is at least `major.minor.patch`.
    pub fn at_least(&self, want: (u32, u32, u32)) -> bool {
        parse_version(&self.cni_version).is_some_and(|v| v >= want)
    }
}

fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(extra: &str) -> String {
        format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"nftmesh-cni"{extra}}}"#)
    }

    #[test]
    fn a_sidecar_or_ambient_capture_is_read_and_validated() {
        let c = NetConf::parse(conf(r#","capture":{"proxy_port":15001}"#).as_bytes()).unwrap();
        assert!(matches!(c.desired().unwrap(), Desired::Capture(_)));
        let a = NetConf::parse(conf(r#","ambient":{}"#).as_bytes()).unwrap();
        assert!(matches!(a.desired().unwrap(), Desired::Ambient(_)));
        assert!(c.at_least((0, 4, 0)) && !c.at_least((1, 1, 0)));
    }

    #[test]
    fn bad_configurations_have_the_specs_codes() {
        let code = |s: &str| NetConf::parse(s.as_bytes()).unwrap_err().code();
        assert_eq!(code("{"), 6);
        assert_eq!(code("[]"), 7);
        assert_eq!(code(r#"{"name":"n"}"#), 7);
        assert_eq!(code(r#"{"cniVersion":1}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"0.2.0","capture":{}}"#), 1);
        assert_eq!(code(r#"{"cniVersion":"9.9.9","capture":{}}"#), 1);
        assert_eq!(code(&conf("")), 7);
        assert_eq!(code(&conf(r#","capture":{},"ambient":{}"#)), 7);
        assert_eq!(code(&conf(r#","capture":{"no_such_key":1}"#)), 7);
        assert_eq!(code(&conf(r#","capture":{"proxy_port":0}"#)), 7);
        assert_eq!(code(&conf(r#","capture":{},"validation_timeout":0"#)), 7);
        assert_eq!(code(&conf(r#","capture":{},"prevResult":[]"#)), 7);
        assert_eq!(code(&conf(r#","capture":{},"log_level":"loud""#)), 7);
        assert_eq!(code(&conf(r#","capture":{},"log_format":"xml""#)), 7);
        assert_eq!(code(&conf(r#","capture":{},"log_format":1"#)), 7);
        let big = conf(&format!(
            r#","capture":{{}},"x":"{}""#,
            "a".repeat(MAX_STDIN)
        ));
        assert_eq!(code(&big), 7);
        let e = NetConf::parse(conf(r#","capture":{"proxy_port":0}"#).as_bytes()).unwrap_err();
        assert!(e.to_string().contains("proxy_port"), "{e}");
    }

    #[test]
    fn the_readmes_conflist_example_is_valid() {
        let readme = include_str!("../../../README.md");
        let section = &readme[readme.find("## CNI plugin").unwrap()..];
        let start = section.find("```json\n").unwrap() + 8;
        let end = start + section[start..].find("```").unwrap();
        let list: Value = serde_json::from_str(&section[start..end]).unwrap();
        let mut entry = list["plugins"][1].clone();
        entry["cniVersion"] = list["cniVersion"].clone();
        let conf = NetConf::parse(entry.to_string().as_bytes()).unwrap();
        assert!(conf.validate && matches!(conf.desired().unwrap(), Desired::Capture(_)));
        assert_eq!(conf.exclude_namespaces, ["kube-system"]);
    }

    #[test]
    fn the_readmes_per_pod_entry_is_valid() {
        let readme = include_str!("../../../README.md");
        let section = &readme[readme.find("### Per-pod capture").unwrap()..];
        let start = section.find("```json\n").unwrap() + 8;
        let end = start + section[start..].find("```").unwrap();
        let mut entry: Value = serde_json::from_str(&section[start..end]).unwrap();
        entry["cniVersion"] = "1.0.0".into();
        let conf = NetConf::parse(entry.to_string().as_bytes()).unwrap();
        assert_eq!(conf.mesh, Some(Mesh::Istio));
        assert_eq!(conf.without_annotations, WithoutAnnotations::Fail);
        let Desired::Capture(c) = conf.desired().unwrap() else {
            panic!("a sidecar capture")
        };
        assert!(c.dns.enabled && c.dns.capture_all);
    }

    #[test]
    fn the_readmes_linkerd_entry_is_valid() {
        let readme = include_str!("../../../README.md");
        let section = &readme[readme
            .find("### Per-pod capture: `\"mesh\": \"linkerd\"`")
            .unwrap()..];
        let start = section.find("```json\n").unwrap() + 8;
        let end = start + section[start..].find("```").unwrap();
        let mut entry: Value = serde_json::from_str(&section[start..end]).unwrap();
        entry["cniVersion"] = "1.0.0".into();
        let conf = NetConf::parse(entry.to_string().as_bytes()).unwrap();
        assert_eq!(conf.mesh, Some(Mesh::Linkerd));
        let Desired::Linkerd(l) = conf.desired().unwrap() else {
            panic!("a Linkerd capture")
        };
        assert_eq!(l.proxy_uid, Some(2102));
    }

    #[test]
    fn the_readmes_ebpf_entry_is_valid() {
        let readme = include_str!("../../../README.md");
        let section = &readme[readme.find("### The eBPF backend").unwrap()..];
        let start = section.find("```json\n").unwrap() + 8;
        let end = start + section[start..].find("```").unwrap();
        let mut entry: Value = serde_json::from_str(&section[start..end]).unwrap();
        entry["cniVersion"] = "1.0.0".into();
        assert_eq!(entry["capabilities"][CGROUP_PATH_CAPABILITY], true);
        let conf = NetConf::parse(entry.to_string().as_bytes()).unwrap();
        assert_eq!(conf.backend, Backend::Ebpf);
        assert!(matches!(conf.desired().unwrap(), Desired::Capture(_)));
    }

    fn linkerd_of(extra: &str) -> LinkerdConfig {
        match NetConf::parse(conf(extra).as_bytes())
            .unwrap()
            .desired()
            .unwrap()
        {
            Desired::Linkerd(l) => *l,
            other => panic!("a Linkerd capture, not {other:?}"),
        }
    }

    #[test]
    fn mesh_linkerd_without_linkerd_has_the_linkerd_cni_charts_settings() {
        let l = linkerd_of(r#","mesh":"linkerd""#);
        assert_eq!(l, linkerd_cni_defaults());
        assert_eq!((l.incoming_proxy_port, l.outgoing_proxy_port), (4143, 4140));
        assert_eq!((l.proxy_uid, l.proxy_gid), (Some(2102), None));
        assert_eq!(
            l.inbound_ports_to_ignore,
            [4190, 4191].map(PortRange::single).to_vec()
        );
        assert!(l.outbound_ports_to_ignore.is_empty() && l.subnets_to_ignore.is_empty());
        assert!(l.ports_to_redirect.is_empty() && !l.ipv6);
        let text = nftmesh::Capture::linkerd(&l).unwrap().render();
        assert!(text.contains("meta skuid 2102 counter return"), "{text}");
        assert!(
            text.contains("tcp dport { 4190, 4191 } counter return"),
            "{text}"
        );
    }

    #[test]
    fn a_linkerd_entry_is_taken_as_written_with_or_without_mesh() {
        // Keys it omits take LinkerdConfig's defaults, not the chart's.
        let l = linkerd_of(r#","mesh":"linkerd","linkerd":{"proxy_uid":2103}"#);
        assert_eq!(
            l,
            LinkerdConfig {
                proxy_uid: Some(2103),
                ..LinkerdConfig::default()
            }
        );
        // Without mesh: every pod gets it, as with capture.
        let l = linkerd_of(
            r#","linkerd":{"proxy_uid":2102,"outbound_ports_to_ignore":[{"first":3306,"last":3306}]}"#,
        );
        assert_eq!(l.outbound_ports_to_ignore, vec![PortRange::single(3306)]);
        let c = NetConf::parse(conf(r#","linkerd":{}"#).as_bytes()).unwrap();
        assert_eq!(c.mesh, None);
    }

    #[test]
    fn other_meshes_keys_and_validate_are_refused_with_linkerd() {
        let refused = |extra: &str, words: &[&str]| {
            let e = NetConf::parse(conf(extra).as_bytes()).unwrap_err();
            assert_eq!(e.code(), 7, "{extra}: {e}");
            for w in words {
                assert!(e.to_string().contains(w), "{extra}: {w} in {e}");
            }
        };
        refused(
            r#","mesh":"linkerd","capture":{}"#,
            &["mesh linkerd: capture is refused", "Istio's sidecar"],
        );
        refused(
            r#","mesh":"linkerd","ambient":{}"#,
            &["mesh linkerd: ambient is refused", "ambient"],
        );
        refused(
            r#","mesh":"istio","linkerd":{}"#,
            &["mesh istio: linkerd is refused", "\"mesh\": \"linkerd\""],
        );
        refused(
            r#","mesh":"linkerd","validate":true"#,
            &["validate", "linkerd-network-validator"],
        );
        refused(r#","linkerd":{},"validate":true"#, &["validate"]);
        refused(r#","capture":{},"linkerd":{}"#, &["exclusive"]);
        // linkerd-cni's own (kebab-case) keys are not this schema's.
        refused(
            r#","mesh":"linkerd","linkerd":{"incoming-proxy-port":4143}"#,
            &["linkerd: ", "incoming-proxy-port"],
        );
        refused(
            r#","mesh":"linkerd","linkerd":{"incoming_proxy_port":0}"#,
            &["incoming_proxy_port"],
        );
        // validate: false is fine.
        assert!(NetConf::parse(conf(r#","mesh":"linkerd","validate":false"#).as_bytes()).is_ok());
    }

    #[test]
    fn log_settings_are_read_and_found_even_in_an_invalid_configuration() {
        let c = NetConf::parse(
            conf(r#","capture":{},"log_file":"/l","log_level":"debug","log_format":"json""#)
                .as_bytes(),
        )
        .unwrap();
        assert_eq!((c.log_level, c.log_format), (Level::Debug, Format::Json));
        let c = NetConf::parse(conf(r#","capture":{}"#).as_bytes()).unwrap();
        assert_eq!((c.log_level, c.log_format), (Level::Info, Format::Text));
        // Invalid: the settings are still found, bad values replaced by the defaults.
        let bad = br#"{"capture":7,"log_file":"/l","log_level":"loud","log_format":"json"}"#;
        assert!(NetConf::parse(bad).is_err());
        assert_eq!(
            log_settings(bad),
            Some(LogSettings {
                file: Some("/l".into()),
                level: Level::Info,
                format: Format::Json
            })
        );
        for none in [&b"{"[..], b"[]", br#"{"log_file":7}"#, br#"{"capture":{}}"#] {
            assert_eq!(log_settings(none), None);
        }
    }

    #[test]
    fn backend_ebpf_is_read_and_refused_where_not_supported_yet() {
        let c = NetConf::parse(conf(r#","capture":{}"#).as_bytes()).unwrap();
        assert_eq!((c.backend, c.bpffs.as_ref()), (Backend::Nftables, None));
        let c = NetConf::parse(
            conf(r#","capture":{},"backend":"ebpf","bpffs":"/b","runtimeConfig":{"cgroupPath":"/kubepods/pod1"}"#)
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(c.backend, Backend::Ebpf);
        assert_eq!(c.bpffs, Some(PathBuf::from("/b")));
        assert_eq!(c.cgroup_path().unwrap().as_deref(), Some("/kubepods/pod1"));
        let c = NetConf::parse(conf(r#","mesh":"istio","backend":"ebpf""#).as_bytes()).unwrap();
        assert_eq!(c.cgroup_path().unwrap(), None);
        let refused = |extra: &str, words: &[&str]| {
            let e = NetConf::parse(conf(extra).as_bytes()).unwrap_err();
            assert_eq!(e.code(), 7, "{extra}: {e}");
            for w in words {
                assert!(e.to_string().contains(w), "{extra}: {w} in {e}");
            }
        };
        refused(
            r#","ambient":{},"backend":"ebpf""#,
            &["backend ebpf with an ambient capture is not supported yet"],
        );
        refused(
            r#","linkerd":{},"backend":"ebpf""#,
            &["Linkerd", "not supported yet"],
        );
        refused(
            r#","mesh":"linkerd","backend":"ebpf""#,
            &["Linkerd", "not supported yet"],
        );
        refused(
            r#","capture":{},"backend":"ebpf","agent_socket":"/s""#,
            &["agent_socket", "not supported yet"],
        );
        refused(
            r#","capture":{},"backend":"ebpf","validate":true"#,
            &["validate", "not supported yet"],
        );
        refused(
            r#","capture":{},"bpffs":"/b""#,
            &["bpffs", "\"backend\": \"ebpf\""],
        );
        refused(r#","capture":{},"backend":"bpf""#, &["`bpf`", "ebpf"]);
        refused(
            r#","capture":{},"ebpf_inbound":"sk_lookup""#,
            &["ebpf_inbound", "\"backend\": \"ebpf\""],
        );
        refused(
            r#","capture":{},"backend":"ebpf","ebpf_inbound":"sklookup""#,
            &["`sklookup`", "sk_lookup"],
        );
        let c = NetConf::parse(
            conf(r#","capture":{},"backend":"ebpf","ebpf_inbound":"sk_lookup""#).as_bytes(),
        )
        .unwrap();
        assert_eq!(c.ebpf_inbound, EbpfInboundConf::SkLookup);
        refused(
            r#","capture":{},"backend":"ebpf","runtimeConfig":{"cgroupPath":7}"#,
            &["runtimeConfig.cgroupPath: expected a string"],
        );
    }

    #[test]
    fn the_version_is_found_even_in_an_invalid_configuration() {
        assert_eq!(
            version_of(br#"{"cniVersion":"0.4.0","capture":7}"#).as_deref(),
            Some("0.4.0")
        );
        assert_eq!(version_of(b"{"), None);
    }
}
