//! The node agent's test harness: a private node, the agent as a process of the built
//! `nftmesh` (killed by its PID when dropped), its CLI, pod namespaces and bounded waits.
#![allow(dead_code)]

use super::node;
use serde_json::Value;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_nftmesh");

pub fn in_node(test: &str) -> bool {
    node::in_private_node(test) == Some(true)
}

pub struct Dirs {
    pub root: PathBuf,
}

impl Dirs {
    pub fn new() -> Self {
        let root = std::env::temp_dir().join(format!("nftmesh-agent-test-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        Dirs { root }
    }
    pub fn socket(&self) -> PathBuf {
        self.root.join("agent.sock")
    }
    pub fn state(&self) -> PathBuf {
        self.root.join("state")
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The agent, started; killed (by its PID) when dropped.
pub struct Agent(pub Child);

impl Agent {
    pub fn start(d: &Dirs, resync: &str) -> Agent {
        Self::start_with(d, resync, &[])
    }

    pub fn start_with(d: &Dirs, resync: &str, extra: &[&str]) -> Agent {
        Self::start_logging(d, resync, extra, Stdio::null())
    }

    /// The agent with its stderr (its log) to `log`. Its tables are not owned (the repair
    /// path, as on kernels without `persist`: the tests tamper with them) unless `extra` says
    /// `--own-tables true`.
    pub fn start_logging(d: &Dirs, resync: &str, extra: &[&str], log: Stdio) -> Agent {
        Self::start_under(d, &[], resync, extra, log)
    }

    /// [`Agent::start_logging`] run by `wrapper` (e.g. `unshare --pid --fork`, `prlimit
    /// --nofile=N:N`): `WRAPPER... nftmesh agent run ...`. Returns once the socket accepts
    /// connections (the agent listens only after adopting its registry).
    pub fn start_under(
        d: &Dirs,
        wrapper: &[&str],
        resync: &str,
        extra: &[&str],
        log: Stdio,
    ) -> Agent {
        let owned: &[&str] = if extra.contains(&"--own-tables") {
            &[]
        } else {
            &["--own-tables", "false"]
        };
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let child = cmd
            .args(["agent", "run", "--resync", resync])
            .args(owned)
            .args(extra)
            .arg("--socket")
            .arg(d.socket())
            .arg("--state-dir")
            .arg(d.state())
            .env_clear()
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the agent");
        let end = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(d.socket()).is_err() {
            assert!(Instant::now() < end, "the agent listens within 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        Agent(child)
    }

    pub fn kill(mut self, signal: &str) -> Option<i32> {
        let o = Command::new("kill")
            .args([&format!("-{signal}"), &self.0.id().to_string()])
            .output()
            .unwrap();
        assert!(o.status.success());
        let status = self.0.wait().unwrap();
        std::mem::forget(self);
        status.code()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn pod(name: &str) -> String {
    let o = Command::new("ip")
        .args(["netns", "add", name])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = Command::new("ip")
        .args(["-n", name, "link", "set", "lo", "up"])
        .output();
    format!("/run/netns/{name}")
}

/// `nftmesh agent ARGS --socket S`; (success, stdout, stderr).
pub fn cli(d: &Dirs, args: &[&str]) -> (bool, String, String) {
    let o = Command::new(BIN)
        .arg("agent")
        .args(args)
        .arg("--socket")
        .arg(d.socket())
        .env_clear()
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

pub fn add(d: &Dirs, netns: &str, flags: &[&str]) {
    let (ok, _, err) = cli(
        d,
        &[&["add", "--network-namespace", netns][..], flags].concat(),
    );
    assert!(ok, "agent add {netns}: {err}");
}

pub fn status(d: &Dirs, netns: &str) -> Value {
    let (ok, out, err) = cli(d, &["status", "--network-namespace", netns]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

pub fn in_pod(netns: &str, cmd: &str, args: &[&str]) -> String {
    let name = Path::new(netns).file_name().unwrap().to_str().unwrap();
    let o = Command::new("ip")
        .args(["netns", "exec", name, cmd])
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The pod's ruleset without counter values (`nft -s`).
pub fn ruleset(netns: &str) -> String {
    in_pod(netns, "nft", &["-s", "list", "ruleset"])
}

/// Wait (at most 5 s) until `f` holds.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < end, "{what} within 5 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}
