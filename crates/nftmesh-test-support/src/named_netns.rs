//! A named network namespace a test creates (`ip netns add`, so that it has a path under
//! `/var/run/netns/` a handle or a command can open) and deletes when dropped; shared by the
//! workspace tests and the CLI's tests (each includes this file).
#![allow(dead_code)]

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A named network namespace, deleted on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new() -> Result<Self, String> {
        let name = format!(
            "nftmesh-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let o = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).into_owned());
        }
        Ok(Netns(name))
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }

    /// Run `cmd args...` inside the namespace; panics on failure, returns stdout.
    pub fn exec(&self, cmd: &str, args: &[&str], stdin: Option<&str>) -> String {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, cmd]).args(args);
        let o = with_input(c, stdin.unwrap_or(""));
        assert!(
            o.status.success(),
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `iptables-save` (or another save command) without its timestamp comment lines.
    pub fn save(&self, cmd: &str) -> String {
        self.exec(cmd, &[], None)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    pub fn list(&self) -> String {
        let o = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft", "list", "ruleset"])
            .output()
            .expect("nft list");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// Run `cmd` with `input` on its standard input; its output.
pub fn with_input(mut cmd: Command, input: &str) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}
