//! Running `nft` (the test oracle) inside fresh network namespaces the test creates.
//!
//! Each call runs `unshare --net` (plus `--mount` when a test group database is needed, bound
//! over `/etc/group` in that private mount namespace only), so nothing touches the machine's
//! own namespaces.

use std::io::Write;
use std::process::{Command, Stdio};

/// Why the kernel oracle cannot run here, if it cannot.
pub fn oracle_unavailable() -> Option<String> {
    let probe = Command::new("unshare")
        .args(["--net", "nft", "list", "ruleset"])
        .output();
    match probe {
        Err(e) => Some(format!("cannot run unshare/nft: {e}")),
        Ok(o) if !o.status.success() => Some(format!(
            "unshare --net nft failed: {}",
            String::from_utf8_lossy(&o.stderr)
        )),
        Ok(_) => None,
    }
}

/// A temporary group file: the machine's groups plus `extra`.
pub fn group_file(extra: &[(&str, u32)]) -> tempfile_path::TempPath {
    let mut text = std::fs::read_to_string("/etc/group").unwrap_or_default();
    for (name, gid) in extra {
        text.push_str(&format!("{name}:x:{gid}:\n"));
    }
    tempfile_path::TempPath::with_contents("group", &text)
}

/// Load `script` with `nft -f -` in a fresh network namespace and return `nft list ruleset`.
pub fn load_and_list(script: &str, group_file: Option<&std::path::Path>) -> Result<String, String> {
    let inner = match group_file {
        Some(g) => format!(
            "mount --bind {} /etc/group && nft -f - && nft list ruleset",
            g.display()
        ),
        None => "nft -f - && nft list ruleset".to_string(),
    };
    let mut args = vec!["--net"];
    if group_file.is_some() {
        args.push("--mount");
    }
    let mut child = Command::new("unshare")
        .args(&args)
        .args(["sh", "-c", &inner])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(script.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A minimal self-deleting temporary file.
pub mod tempfile_path {
    use std::path::{Path, PathBuf};

    /// A file under the temp dir, removed on drop.
    pub struct TempPath(PathBuf);

    impl TempPath {
        /// Create it with `contents`; the name is unique per process and call.
        pub fn with_contents(stem: &str, contents: &str) -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let p = std::env::temp_dir()
                .join(format!("nftmesh-test-{}-{stem}-{n}", std::process::id()));
            std::fs::write(&p, contents).expect("write temp file");
            TempPath(p)
        }

        /// Its path.
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}
