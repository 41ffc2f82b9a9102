//! The commands: ADD, CHECK, DEL, VERSION, STATUS and GC of a chained plugin whose one job is
//! the pod's traffic capture (nftmesh's tables and TPROXY routing in `CNI_NETNS`).

use crate::config::{log_settings, Backend, Desired, LogSettings, NetConf, SUPPORTED_VERSIONS};
use crate::env::{Command, Env};
use crate::log::Log;
use crate::pod::{self, Plan};
use crate::{agent, ebpf, CniError};
use nftmesh::log::Level;
use nftmesh::Namespace;
use nftmesh_protocol::Request;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// What a command prints on success: a result object, or nothing.
pub type Reply = Option<Value>;

/// Run the command `env` names with `stdin` as the network configuration. `Err` carries the
/// error and the `cniVersion` to print it in. Every error is logged to the configuration's
/// `log_file`, an invalid configuration's too when it names one ([`log_settings`]); one that
/// cannot (not a JSON object, no string `log_file`) is reported by the error object alone.
pub fn run(env: &Env, stdin: &[u8]) -> Result<Reply, (CniError, String)> {
    // The version of an error object when the configuration cannot give one: the
    // configuration's own if it names one this plugin speaks, else the newest.
    let fallback = || {
        crate::config::version_of(stdin)
            .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
            .unwrap_or_else(|| SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1].to_string())
    };
    // An error before the configuration is read, logged where the configuration says.
    let early = |e: CniError, command: &str| {
        if let Some(settings) = log_settings(stdin) {
            Log::new(&settings, command, env.container_id.as_deref())
                .at(Level::Error, &e.to_string());
        }
        (e, fallback())
    };
    let command = env
        .command()
        .map_err(|e| early(e, env.command.as_deref().unwrap_or("-")))?;
    if command == Command::Version {
        return Ok(Some(version(&fallback())));
    }
    let conf = match NetConf::parse(stdin) {
        Ok(conf) => conf,
        // DEL never strands a pod on a configuration that no longer parses.
        Err(e) if command == Command::Del => {
            let settings = log_settings(stdin).unwrap_or_default();
            let log = Log::new(&settings, command.name(), env.container_id.as_deref());
            let result = del_unreadable(env, stdin, &e, &log);
            if let Err(e) = &result {
                log.at(Level::Error, &e.to_string());
            }
            return result.map(|()| None).map_err(|e| (e, fallback()));
        }
        Err(e) => return Err(early(e, command.name())),
    };
    let version = conf.cni_version.clone();
    let settings = LogSettings {
        file: conf.log_file.clone(),
        level: conf.log_level,
        format: conf.log_format,
    };
    let log = Log::new(&settings, command.name(), env.container_id.as_deref());
    if log.enabled(Level::Debug) {
        log.event(
            Level::Debug,
            "configuration read",
            &[("config", &String::from_utf8_lossy(stdin))],
        );
    }
    let result = match command {
        Command::Add => add(env, &conf, &log),
        Command::Check => check(env, &conf, &log).map(|()| None),
        Command::Del => del(env, &conf, &log).map(|()| None),
        Command::Status => status(&conf).map(|()| None),
        Command::Gc => gc(&conf, &log).map(|()| None),
        Command::Version => Ok(Some(self::version(&version))),
    };
    if let Err(e) = &result {
        log.at(Level::Error, &e.to_string());
    }
    result.map_err(|e| (e, version))
}

/// The VERSION result.
pub fn version(cni_version: &str) -> Value {
    json!({ "cniVersion": cni_version, "supportedVersions": SUPPORTED_VERSIONS })
}

fn prev_result(conf: &NetConf) -> Result<Value, CniError> {
    conf.prev_result.clone().ok_or_else(|| {
        CniError::InvalidConfig(
            "prevResult is missing: nftmesh-cni is a chained plugin; put it after the plugin \
             that sets up the pod's interface"
                .into(),
        )
    })
}

/// `req` as this pod's request: with the runtime's container id (the agent keeps it, and the
/// capture the plugin decided, in its status).
fn agent_request(req: Request, env: &Env) -> Request {
    req.with_container_id(env.container_id.clone())
}

fn open(netns: &Path) -> Result<Namespace, CniError> {
    Namespace::open(netns).map_err(|e| CniError::Capture(format!("CNI_NETNS: {e}")))
}

/// ADD: the pod's capture, as decided for it ([`pod::decide`]), installed (routing first,
/// then one transaction), optionally validated; `prevResult` printed unchanged in the
/// configuration's version. A pod whose live capture already equals the decided one (a
/// runtime's retry, a network reload) is left as it is, unvalidated. On a failure, nothing of
/// ours is left, unless a capture was in place before this ADD: that one is never removed.
fn add(env: &Env, conf: &NetConf, log: &Log) -> Result<Reply, CniError> {
    env.container_id()?;
    env.ifname()?;
    let netns = env.netns()?;
    let mut result = prev_result(conf)?;
    result["cniVersion"] = json!(conf.cni_version);
    let desired = match pod::decide(env, conf)? {
        Plan::Skip(why) => {
            log.info(&format!("not captured: {why}"));
            return Ok(Some(result));
        }
        Plan::Capture(d) => d,
    };
    if let Some(socket) = &conf.agent_socket {
        let req = Request::add(&netns, desired.clone());
        agent::call(socket, &agent_request(req, env))?;
        log.info(&format!(
            "node agent at {} installed the capture",
            socket.display()
        ));
        return Ok(Some(result));
    }
    if conf.backend == Backend::Ebpf {
        // The cgroup is resolved before anything changes: a bad cgroupPath changes nothing.
        let cfg = ebpf::sidecar(&desired)?;
        let backend = ebpf::backend(conf)?;
        let ns = open(&netns)?;
        ebpf::add(&backend, &ns, cfg, log)?;
        ns.close_after_exit();
        return Ok(Some(result));
    }
    let capture = desired.capture().map_err(CniError::from)?;
    let ns = open(&netns)?;
    // With validation, what is there decides: the same capture is not validated again (its
    // proxy may hold the probe ports), and one in place before this ADD is never removed.
    let mut had_ours = false;
    if conf.validate {
        if ns.check(&capture)?.is_empty() {
            log.info(&format!(
                "{}: the capture is already in place: unchanged, not validated again",
                netns.display()
            ));
            ns.close_after_exit();
            return Ok(Some(result));
        }
        had_ours = !ns.live_tables()?.is_empty();
    }
    let installed = ns
        .install(&capture)
        .map_err(CniError::from)
        .and_then(|report| {
            if conf.validate {
                validate(&netns, &desired, conf)?;
            }
            Ok(report)
        });
    match installed {
        Ok(report) => {
            log.info(&format!("{}: {report}", netns.display()));
            // The plugin exits next: the kernel's deferred release of the socket that
            // committed is left to a short-lived child instead of delaying the runtime.
            ns.close_after_exit();
            Ok(Some(result))
        }
        Err(e) if had_ours => {
            log.at(
                Level::Warn,
                "a capture was in place before this ADD: left in place",
            );
            Err(e)
        }
        Err(e) => {
            // A failed ADD leaves nothing of ours: the routing went in before the transaction.
            if let Err(r) = ns.remove(&capture) {
                log.at(Level::Error, &format!("removing after the failure: {r}"));
            }
            Err(e)
        }
    }
}

/// Istio's validation in the pod's namespace, as the proxy's uid: a connection from
/// `127.0.0.1` to `127.0.0.6:15002` must be redirected to a capture port. Istio's sidecar
/// captures only: `validate` with Linkerd's capture is refused when the configuration is read
/// ([`NetConf::parse`]; Linkerd validates with its own init container).
fn validate(netns: &Path, desired: &Desired, conf: &NetConf) -> Result<(), CniError> {
    let Desired::Capture(cfg) = desired else {
        return Err(CniError::InvalidConfig(format!(
            "validate applies to Istio's sidecar captures, not to a {} capture",
            desired.kind()
        )));
    };
    let uid = cfg.proxy_uids.first().copied().unwrap_or(1337);
    let v = nftmesh::verify::IstioValidation {
        proxy_port: cfg.proxy_port,
        inbound_capture_port: cfg.inbound_capture_port,
        probe_port: 15002,
        timeout: Duration::from_secs_f64(conf.validation_timeout.unwrap_or(5.0)),
        ipv6: false,
    };
    nftmesh_netlink::netns::run_in(netns, move || {
        nftmesh_netlink::probe::become_user(uid, uid)
            .map_err(|e| CniError::Validation(format!("becoming uid {uid}: {e}")))?;
        nftmesh::verify::istio_validation(&v).map_err(CniError::from)
    })
    .map_err(|e| CniError::Capture(format!("CNI_NETNS: {e}")))??;
    Ok(())
}

/// CHECK: the live capture compared with the desired one; each difference named.
fn check(env: &Env, conf: &NetConf, log: &Log) -> Result<(), CniError> {
    if !conf.at_least((0, 4, 0)) {
        return Err(CniError::IncompatibleVersion {
            version: conf.cni_version.clone(),
            why: "CHECK needs cniVersion 0.4.0 or later".into(),
        });
    }
    env.container_id()?;
    env.ifname()?;
    let netns = env.netns()?;
    prev_result(conf)?;
    let desired = match pod::decide(env, conf)? {
        Plan::Skip(_) => return Ok(()),
        Plan::Capture(d) => d,
    };
    if let Some(socket) = &conf.agent_socket {
        let req = Request::check(&netns).with_desired(desired.clone());
        agent::call(socket, &agent_request(req, env))?;
        return Ok(());
    }
    if conf.backend == Backend::Ebpf {
        let cfg = ebpf::sidecar(&desired)?;
        let backend = ebpf::backend(conf)?;
        ebpf::check(&backend, &open(&netns)?, cfg)?;
        log.info(&format!(
            "{} and {}: capture as configured",
            backend.cgroup().display(),
            netns.display()
        ));
        return Ok(());
    }
    let capture = desired.capture().map_err(CniError::from)?;
    let drift = open(&netns)?.check(&capture)?;
    if drift.is_empty() {
        log.info(&format!("{}: capture as configured", netns.display()));
        Ok(())
    } else {
        Err(CniError::Drift(
            drift.iter().map(|d| d.to_string()).collect(),
        ))
    }
}

/// DEL: whatever nftmesh owns in the pod removed (its tables, Istio's and Linkerd's alike:
/// [`nftmesh::owned_tables`]; the entry's routing and the default ones, `::6`), whatever the
/// pod's annotations, the mesh or the entry now say; nothing else touched. Succeeds when the
/// namespace is gone or holds nothing of ours.
///
/// With `backend: ebpf`, the programs on the pod's cgroup go first; a cgroup that no longer
/// resolves (no `cgroupPath`, the directory gone) is logged, the pins of cgroups that are gone
/// removed, and DEL goes on.
fn del(env: &Env, conf: &NetConf, log: &Log) -> Result<(), CniError> {
    if conf.backend == Backend::Ebpf {
        match ebpf::backend(conf) {
            Ok(backend) => {
                let removed = ebpf::remove_programs(&backend)?;
                log.info(&format!(
                    "{}: {}",
                    backend.cgroup().display(),
                    if removed {
                        "eBPF programs removed"
                    } else {
                        "no eBPF program attached"
                    }
                ));
            }
            // The cgroup is gone (or unnamed): its pins, and any other cgroup's that is
            // gone, are found by their links' cgroups.
            Err(e) => match ebpf::remove_stale(conf) {
                Ok(n) => log.at(
                    Level::Warn,
                    &format!("{e}: removed the pins of {n} cgroup(s) that are gone"),
                ),
                Err(r) => log.at(Level::Warn, &format!("{e}: no eBPF program removed ({r})")),
            },
        }
    }
    let entry = conf.desired().ok();
    remove(env, conf.agent_socket.as_deref(), entry.as_ref(), log)
}

/// DEL of a configuration that does not parse (a typo, a key of a newer or older version):
/// what removal needs is read leniently (`agent_socket`; the sidecar capture's TPROXY mark
/// and table, else the defaults), the rest ignored and logged, so that the runtime's DEL
/// chain goes on (the address plugin frees the pod's lease).
fn del_unreadable(env: &Env, stdin: &[u8], error: &CniError, log: &Log) -> Result<(), CniError> {
    let raw: Value = serde_json::from_slice(stdin).unwrap_or(Value::Null);
    log.at(
        Level::Warn,
        &format!("{error}: ignored by DEL, which removes what nftmesh owns in the pod"),
    );
    let socket = raw
        .get("agent_socket")
        .and_then(Value::as_str)
        .map(std::path::PathBuf::from);
    let number = |k: &str| {
        raw.get("capture")
            .and_then(|c| c.get(k))
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    let entry = match (number("tproxy_mark"), number("tproxy_route_table")) {
        (None, None) => None,
        (mark, table) => {
            let cfg = nftmesh::CaptureConfig {
                tproxy_mark: mark.unwrap_or(1337),
                tproxy_route_table: table.unwrap_or(133),
                ..Default::default()
            };
            Some(Desired::Capture(Box::new(cfg)))
        }
    };
    remove(env, socket.as_deref(), entry.as_ref(), log)
}

/// Remove what nftmesh owns in `CNI_NETNS` (through the agent when there is one), with
/// `entry`'s routing besides the defaults.
fn remove(
    env: &Env,
    socket: Option<&Path>,
    entry: Option<&Desired>,
    log: &Log,
) -> Result<(), CniError> {
    env.container_id()?;
    env.ifname()?;
    let netns = match env.netns.as_deref() {
        Some(p) if !p.is_empty() => std::path::PathBuf::from(p),
        _ => {
            log.info("no CNI_NETNS: nothing to remove");
            return Ok(());
        }
    };
    if let Some(socket) = socket {
        agent::call(socket, &agent_request(Request::remove(&netns), env))?;
        return Ok(());
    }
    if !netns.exists() {
        log.info(&format!("{} is gone: nothing to remove", netns.display()));
        return Ok(());
    }
    let capture = entry.and_then(|d| d.capture().ok());
    let ns = match Namespace::open(&netns) {
        Ok(ns) => ns,
        // Gone between the check and the open (or no longer a namespace): nothing of ours.
        Err(e) if !netns.exists() => {
            log.info(&format!("{}: {e}", netns.display()));
            return Ok(());
        }
        Err(e) => return Err(CniError::Capture(format!("CNI_NETNS: {e}"))),
    };
    let removed = ns.remove_owned(capture.as_ref())?;
    log.info(&format!(
        "{}: removed {} table(s)",
        netns.display(),
        removed.tables
    ));
    Ok(())
}

/// STATUS (CNI 1.1): ready when nf_tables answers here, or the node agent is reachable.
fn status(conf: &NetConf) -> Result<(), CniError> {
    needs_1_1(conf, "STATUS")?;
    if let Some(socket) = &conf.agent_socket {
        return std::os::unix::net::UnixStream::connect(socket)
            .map(drop)
            .map_err(|e| {
                CniError::NotAvailable(format!("node agent at {}: {e}", socket.display()))
            });
    }
    let mut conn = nftmesh_netlink::Connection::open()
        .map_err(|e| CniError::NotAvailable(format!("nf_tables: {e}")))?;
    conn.generation()
        .map(drop)
        .map_err(|e| CniError::NotAvailable(format!("nf_tables: {e}")))
}

/// GC (CNI 1.1): nothing to collect. The plugin keeps no state outside the pods' namespaces,
/// and a pod's tables and routes go with its namespace.
fn gc(conf: &NetConf, log: &Log) -> Result<(), CniError> {
    needs_1_1(conf, "GC")?;
    log.info("nothing to collect: the capture lives in the pods' namespaces");
    Ok(())
}

fn needs_1_1(conf: &NetConf, what: &str) -> Result<(), CniError> {
    if conf.at_least((1, 1, 0)) {
        Ok(())
    } else {
        Err(CniError::IncompatibleVersion {
            version: conf.cni_version.clone(),
            why: format!("{what} needs cniVersion 1.1.0"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log file of this test process; its lines as JSON, and removed.
    struct LogFile(std::path::PathBuf);

    impl LogFile {
        fn new(name: &str) -> Self {
            let p =
                std::env::temp_dir().join(format!("nftmesh-cni-{name}-{}.log", std::process::id()));
            let _ = std::fs::remove_file(&p);
            LogFile(p)
        }

        fn text(&self) -> String {
            std::fs::read_to_string(&self.0).unwrap_or_default()
        }

        fn lines(&self) -> Vec<Value> {
            self.text()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect()
        }
    }

    impl Drop for LogFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn env(command: &str) -> Env {
        Env {
            command: Some(command.into()),
            container_id: Some("c1".into()),
            ifname: Some("eth0".into()),
            ..Env::default()
        }
    }

    #[test]
    fn configuration_errors_reach_the_log_file_it_names() {
        let log = LogFile::new("config-errors");
        let with = |extra: Value| {
            let mut c = json!({"cniVersion": "1.0.0", "log_file": log.0, "log_format": "json"});
            for (k, v) in extra.as_object().unwrap() {
                c[k] = v.clone();
            }
            c.to_string()
        };
        let cases = [
            (
                "ADD",
                with(json!({"capture": {"proxy_port": 0}})),
                7,
                "proxy_port",
            ),
            (
                "CHECK",
                with(json!({"cniVersion": "0.2.0", "capture": {}})),
                1,
                "0.2.0",
            ),
            // An invalid log_level is an error of its own, logged at the default level.
            (
                "ADD",
                with(json!({"capture": {}, "log_level": "loud"})),
                7,
                "loud",
            ),
            ("LIST", with(json!({"capture": {}})), 4, "CNI_COMMAND"),
        ];
        for (i, (command, stdin, code, word)) in cases.iter().enumerate() {
            let (e, _) = run(&env(command), stdin.as_bytes()).unwrap_err();
            assert_eq!(e.code(), *code, "{command}: {e}");
            let lines = log.lines();
            assert_eq!(lines.len(), i + 1, "{}", log.text());
            let l = &lines[i];
            assert_eq!(
                (&l["level"], &l["command"], &l["container_id"]),
                (&json!("error"), &json!(command), &json!("c1")),
                "{l}"
            );
            assert!(l["msg"].as_str().unwrap().contains(word), "{l}");
            let t = l["time"].as_str().unwrap();
            assert!(
                t.len() == 24 && t.ends_with('Z') && &t[19..20] == ".",
                "{t}"
            );
        }
        // DEL goes on with a configuration that does not parse (no CNI_NETNS here: nothing
        // to remove), saying what it ignored.
        let bad = with(json!({"capture": {"proxy_port": 0, "no_such_key": 1}}));
        assert_eq!(run(&env("DEL"), bad.as_bytes()).unwrap(), None);
        let lines = log.lines();
        let warn = &lines[cases.len()];
        assert_eq!(
            (&warn["level"], &warn["command"]),
            (&json!("warn"), &json!("DEL"))
        );
        let msg = warn["msg"].as_str().unwrap();
        assert!(
            msg.contains("no_such_key") && msg.contains("ignored by DEL"),
            "{msg}"
        );
        let n = log.lines().len();
        // A configuration that names no file (or is not JSON) logs nothing; VERSION neither.
        for stdin in [
            &b"{"[..],
            br#"{"cniVersion":"1.0.0","log_file":7,"capture":7}"#,
        ] {
            assert!(run(&env("ADD"), stdin).is_err());
        }
        let v = with(json!({"capture": {}}));
        assert!(run(&env("VERSION"), v.as_bytes()).is_ok());
        assert_eq!(log.lines().len(), n, "{}", log.text());
    }

    #[test]
    fn text_lines_and_the_configuration_at_debug() {
        let log = LogFile::new("debug");
        let conf = json!({
            "cniVersion": "1.0.0", "capture": {}, "prevResult": {},
            "log_file": log.0, "log_level": "debug",
        });
        // No CNI_NETNS: ADD fails after the configuration was read.
        let (e, _) = run(&env("ADD"), conf.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.code(), 4);
        let text = log.text();
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0][1..3], ["debug", "configuration read"], "{text}");
        assert!(
            lines[0][3].starts_with("command=ADD container_id=c1 config=\"{"),
            "{text}"
        );
        assert_eq!(lines[1][1], "error", "{text}");
        assert!(lines[1][2].contains("CNI_NETNS"), "{text}");
        assert_eq!(lines[1][3], "command=ADD container_id=c1", "{text}");
    }
}
