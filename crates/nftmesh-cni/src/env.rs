//! The `CNI_*` environment a runtime gives the plugin, read once and checked per command.

use crate::CniError;
use std::path::PathBuf;

/// A CNI command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Set up the container's network (here: install the capture).
    Add,
    /// Check the container's network is as configured.
    Check,
    /// Tear the container's network down (here: remove the capture).
    Del,
    /// Report the versions the plugin speaks.
    Version,
    /// Report whether the plugin can work (CNI 1.1).
    Status,
    /// Clean up what belongs to no valid attachment (CNI 1.1).
    Gc,
}

impl Command {
    /// The command as `CNI_COMMAND` spells it (`ADD`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Check => "CHECK",
            Command::Del => "DEL",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }
}

/// The runtime's variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: Option<String>,
    /// `CNI_CONTAINERID`.
    pub container_id: Option<String>,
    /// `CNI_NETNS`.
    pub netns: Option<String>,
    /// `CNI_IFNAME`.
    pub ifname: Option<String>,
    /// `CNI_ARGS`: `KEY=VALUE;...`.
    pub args: Option<String>,
    /// `CNI_PATH`.
    pub path: Option<String>,
}

impl Env {
    /// The variables of this process.
    pub fn from_process() -> Self {
        let var = |n| std::env::var(n).ok();
        Env {
            command: var("CNI_COMMAND"),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS"),
            path: var("CNI_PATH"),
        }
    }

    /// The command, or code 7 naming `CNI_COMMAND`.
    pub fn command(&self) -> Result<Command, CniError> {
        let bad = |why: String| CniError::InvalidEnv {
            name: "CNI_COMMAND",
            why,
        };
        match self.command.as_deref() {
            Some("ADD") => Ok(Command::Add),
            Some("CHECK") => Ok(Command::Check),
            Some("DEL") => Ok(Command::Del),
            Some("VERSION") => Ok(Command::Version),
            Some("STATUS") => Ok(Command::Status),
            Some("GC") => Ok(Command::Gc),
            Some(other) => Err(bad(format!(
                "{other:?} is not ADD, CHECK, DEL, VERSION, STATUS or GC"
            ))),
            None => Err(bad("not set".into())),
        }
    }

    fn required(&self, name: &'static str, v: &Option<String>) -> Result<String, CniError> {
        match v.as_deref() {
            Some(s) if !s.is_empty() => Ok(s.to_string()),
            _ => Err(CniError::InvalidEnv {
                name,
                why: "not set".into(),
            }),
        }
    }

    /// `CNI_CONTAINERID` (ADD, CHECK, DEL need it).
    pub fn container_id(&self) -> Result<String, CniError> {
        self.required("CNI_CONTAINERID", &self.container_id)
    }

    /// `CNI_IFNAME` (ADD, CHECK, DEL need it).
    pub fn ifname(&self) -> Result<String, CniError> {
        self.required("CNI_IFNAME", &self.ifname)
    }

    /// `CNI_NETNS` as a path (ADD and CHECK need it; DEL may run without).
    pub fn netns(&self) -> Result<PathBuf, CniError> {
        self.required("CNI_NETNS", &self.netns).map(PathBuf::from)
    }

    /// The value of `key` in `CNI_ARGS` (`K8S_POD_NAMESPACE`, ...), checking its syntax.
    pub fn arg(&self, key: &str) -> Result<Option<String>, CniError> {
        let Some(args) = self.args.as_deref() else {
            return Ok(None);
        };
        for pair in args.split(';').filter(|p| !p.is_empty()) {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(CniError::InvalidEnv {
                    name: "CNI_ARGS",
                    why: format!("{pair:?} is not KEY=VALUE"),
                });
            };
            if k == key {
                return Ok(Some(v.to_string()));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_variables_are_read_or_named_in_the_error() {
        let mut env = Env::default();
        assert!(env
            .command()
            .unwrap_err()
            .to_string()
            .contains("CNI_COMMAND"));
        for name in ["ADD", "CHECK", "DEL", "VERSION", "STATUS", "GC"] {
            env.command = Some(name.into());
            assert_eq!(env.command().unwrap().name(), name);
        }
        env.command = Some("ADD".into());
        assert_eq!(env.command().unwrap(), Command::Add);
        env.command = Some("add".into());
        assert_eq!(env.command().unwrap_err().code(), 4);
        assert!(env.netns().unwrap_err().to_string().contains("CNI_NETNS"));
        env.netns = Some(String::new());
        assert_eq!(env.netns().unwrap_err().code(), 4);
        env.args = Some("IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=p".into());
        assert_eq!(
            env.arg("K8S_POD_NAMESPACE").unwrap().as_deref(),
            Some("kube-system")
        );
        assert_eq!(env.arg("K8S_POD_UID").unwrap(), None);
        env.args = Some("K8S_POD_NAMESPACE".into());
        assert_eq!(env.arg("K8S_POD_NAMESPACE").unwrap_err().code(), 4);
    }
}
