//! A real container runtime for the `runtime_` tests: Debian's podman (4.3, CNI backend) with
//! a configuration, storage, run root, CNI configuration and plugin directories of its own in
//! a temporary directory, used inside a private node (`unshare --net --mount`, see
//! [`in_private_node`]) so that every bridge, route, network namespace and mount podman makes
//! stays there. Nothing in /etc is written or read for podman's settings; the images are built
//! offline by `scripts/build-images.sh` into the temporary storage. Every command is bounded in
//! time, and [`Podman`]'s drop removes its pods, containers, storage and cgroups.
//!
//! What podman needs on these machines, and the configuration says: `runtime = "runc"` (crun
//! 1.8 refuses the hybrid cgroup v1 layout), `cgroup_manager = "cgroupfs"` (no systemd),
//! `events_logger = "file"` (no journald), and `default_ulimits` within the machine's hard
//! limits (podman's default nproc exceeds them).

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's containernetworking-plugins puts the reference plugins.
pub const DEBIAN_CNI_DIR: &str = "/usr/lib/cni";
/// Debian's busybox-static, the stand-ins' image.
pub const BUSYBOX: &str = "/bin/busybox";
/// How long one podman command may take unless said otherwise.
pub const WAIT: Duration = Duration::from_secs(60);
/// How long building the images may take (a release build when the binaries are stale).
pub const BUILD_WAIT: Duration = Duration::from_secs(900);

/// Why the runtime tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("the runtime tests need root (podman, network namespaces)".into());
    }
    for tool in ["podman", "buildah", "runc", "nsenter", "unshare", "ip"] {
        if let Some(why) = crate::tool_missing(tool, "--version") {
            return Some(format!("{why} (scripts/setup.sh installs it)"));
        }
    }
    let needed = [
        BUSYBOX.to_string(),
        format!("{DEBIAN_CNI_DIR}/bridge"),
        format!("{DEBIAN_CNI_DIR}/host-local"),
        format!("{DEBIAN_CNI_DIR}/loopback"),
    ];
    needed
        .iter()
        .find(|p| !Path::new(p).exists())
        .map(|p| format!("{p} is missing (busybox-static, containernetworking-plugins)"))
}

/// [`crate::node::in_private_node`] for podman: in the child, also a private `/var/lib/cni`
/// (libcni's cache) and `/var/lib/containers` (containers/image's blob-info cache, which root
/// always keeps there) on tmpfs, and `lo` up. Their mount points are created if missing (empty
/// directories, podman's own paths).
pub fn in_private_node(test: &str) -> Option<bool> {
    let in_node = crate::node::in_private_node(test)?;
    if in_node {
        for dir in ["/var/lib/cni", "/var/lib/containers"] {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {dir}: {e}"));
            let args = ["-t", "tmpfs", "nftmesh-runtime", dir];
            let o = bounded(Command::new("mount").args(args), WAIT).expect("mount");
            assert!(o.status.success(), "mount {dir}: {}", stderr(&o));
        }
        let o = bounded(Command::new("ip").args(["link", "set", "lo", "up"]), WAIT).expect("ip");
        assert!(o.status.success(), "ip link set lo up: {}", stderr(&o));
    }
    Some(in_node)
}

/// Run `cmd` with its output collected, killing it (by its PID: it is our child) when it has
/// not exited within `wait`; `Err` says so, with what it printed.
pub fn bounded(cmd: &mut Command, wait: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + wait;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let (stdout, stderr) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => Err(format!(
            "{cmd:?} did not finish within {wait:?} (killed); stdout: {}; stderr: {}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        )),
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A private podman: configuration, storage and CNI directories in a temporary directory.
pub struct Podman {
    dir: PathBuf,
    cgroup_parent: String,
}

impl Podman {
    /// A fresh one named `name` (part of its directory and cgroup names). Call inside the
    /// private node ([`in_private_node`]).
    pub fn new(name: &str) -> Podman {
        let tag = format!("nftmesh-runtime-{}-{name}", std::process::id());
        let dir = std::env::temp_dir().join(&tag);
        let _ = std::fs::remove_dir_all(&dir);
        let p = Podman {
            cgroup_parent: format!("/{tag}"),
            dir,
        };
        for sub in [
            "cni/net.d",
            "cni/bin",
            "cni/ipam",
            "root",
            "runroot",
            "tmp",
            "xdg",
        ] {
            std::fs::create_dir_all(p.dir.join(sub)).expect("create the podman directories");
        }
        for plugin in ["bridge", "host-local", "loopback"] {
            std::os::unix::fs::symlink(
                Path::new(DEBIAN_CNI_DIR).join(plugin),
                p.bin_dir().join(plugin),
            )
            .expect("link a Debian CNI plugin");
        }
        let d = p.dir.display();
        let storage = format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{d}/root\"\nrunroot = \"{d}/runroot\"\n"
        );
        // Within the machine's hard limits: nofile 20000, nproc below 65536.
        let containers = format!(
            "[containers]\n\
             default_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
             [network]\n\
             network_backend = \"cni\"\n\
             cni_plugin_dirs = [\"{d}/cni/bin\"]\n\
             network_config_dir = \"{d}/cni/net.d\"\n\
             [engine]\n\
             runtime = \"runc\"\n\
             cgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n\
             events_logfile_path = \"{d}/events.log\"\n\
             tmp_dir = \"{d}/tmp\"\n"
        );
        std::fs::write(p.dir.join("storage.conf"), storage).expect("write storage.conf");
        std::fs::write(p.dir.join("containers.conf"), containers).expect("write containers.conf");
        p
    }

    /// The temporary directory everything is in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CNI configuration directory podman reads its networks from.
    pub fn conf_dir(&self) -> PathBuf {
        self.dir.join("cni/net.d")
    }

    /// The CNI plugin directory podman runs plugins from (Debian's bridge, host-local and
    /// loopback linked in).
    pub fn bin_dir(&self) -> PathBuf {
        self.dir.join("cni/bin")
    }

    /// The cgroup (cgroupfs) every pod and container of this podman is created under; pass it
    /// as `--cgroup-parent` to `pod create` and `run` so that drop can remove it.
    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    /// Write the network `name` as `conf_dir/file`: a Linux bridge `bridge` whose address is
    /// the first of `subnet` (`10.89.N.0/24`), leases from host-local kept in our directory,
    /// a default route through the bridge. Returns the file's path.
    pub fn add_bridge_network(
        &self,
        file: &str,
        name: &str,
        bridge: &str,
        subnet: &str,
    ) -> PathBuf {
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": name,
            "plugins": [{
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": self.dir.join("cni/ipam"),
                },
            }],
        });
        let path = self.conf_dir().join(file);
        let text = serde_json::to_string_pretty(&conf).expect("conflist") + "\n";
        std::fs::write(&path, text).expect("write the conflist");
        path
    }

    /// Set the environment that points podman and buildah at this directory.
    fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .env("XDG_RUNTIME_DIR", self.dir.join("xdg"))
            .env_remove("CONTAINER_HOST")
            .env_remove("CONTAINER_CONNECTION")
    }

    /// Build `images` (names `scripts/build-images.sh` takes) into this storage; the script's
    /// summary lines (`localhost/NAME:latest id ... digest ... size ...`). `extra` goes first
    /// (e.g. `--no-build`).
    pub fn build_images(&self, extra: &[&str], images: &[&str]) -> String {
        let script = crate::workspace_root().join("scripts/build-images.sh");
        let mut cmd = Command::new(script);
        self.env(&mut cmd).args(extra).args(images);
        let o = bounded(&mut cmd, BUILD_WAIT).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            o.status.success(),
            "scripts/build-images.sh {images:?} failed:\n{}",
            stderr(&o)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Run `podman args` within `wait`; its output (`Err` when it did not finish).
    pub fn run(&self, args: &[&str], wait: Duration) -> Result<Output, String> {
        let mut cmd = Command::new("podman");
        self.env(&mut cmd).args(args);
        bounded(&mut cmd, wait)
    }

    /// Run `podman args`, which must succeed within [`WAIT`]; its standard output, trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args, WAIT).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            o.status.success(),
            "podman {args:?} failed ({}): {}{}",
            o.status,
            stderr(&o),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// `podman run --rm --network none` (in our cgroup) with `args`, which must succeed; its
    /// standard output, trimmed.
    pub fn run_rm(&self, args: &[&str]) -> String {
        let run = ["run", "--rm", "--network", "none", "--cgroup-parent"];
        self.ok(&[&run[..], &[self.cgroup_parent()], args].concat())
    }

    /// `podman inspect --format FORMAT what`, trimmed.
    pub fn inspect(&self, what: &str, format: &str) -> String {
        self.ok(&["inspect", "--format", format, what])
    }

    /// The network namespace path of a (running) container: its sandbox key.
    pub fn netns(&self, container: &str) -> String {
        self.inspect(container, "{{.NetworkSettings.SandboxKey}}")
    }

    /// A container's address on its (only) network.
    pub fn address(&self, container: &str) -> std::net::Ipv4Addr {
        let a = self.inspect(
            container,
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        );
        a.parse()
            .unwrap_or_else(|e| panic!("{container}'s address {a:?}: {e}"))
    }

    /// Run `f` on the root directory of `image`, mounted (`podman image mount`) meanwhile.
    pub fn with_image_mounted<T>(&self, image: &str, f: impl FnOnce(&Path) -> T) -> T {
        let root = self.ok(&["image", "mount", image]);
        let out = f(Path::new(&root));
        self.ok(&["image", "unmount", image]);
        out
    }

    /// Remove everything podman made: pods, containers, images and storage (`system reset`
    /// of this configuration only), our cgroups, and the directory (after unmounting whatever
    /// is still mounted under it).
    fn clean_up(&self) {
        let short = Duration::from_secs(30);
        let _ = self.run(&["pod", "rm", "--all", "--force", "--time", "0"], short);
        let _ = self.run(&["rm", "--all", "--force", "--time", "0"], short);
        let _ = self.run(&["system", "reset", "--force"], short);
        // cgroup v1: one hierarchy per controller; v2: the unified one.
        let name = self.cgroup_parent.trim_start_matches('/');
        let root = Path::new("/sys/fs/cgroup");
        remove_cgroups(&root.join(name));
        for hierarchy in std::fs::read_dir(root).into_iter().flatten().flatten() {
            remove_cgroups(&hierarchy.path().join(name));
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut under: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| Path::new(m).starts_with(&self.dir))
            .collect();
        under.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in under {
            let _ = bounded(Command::new("umount").args(["--lazy", m]), short);
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("runtime: could not remove {}: {e}", self.dir.display());
        }
    }
}

/// The shared libraries `ldd binary` names (the loader too), by the path it names them.
pub fn ldd_paths(binary: &Path) -> Vec<String> {
    let o = bounded(Command::new("ldd").arg(binary), WAIT).unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&o.stdout);
    text.lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            match words.as_slice() {
                [_, "=>", path, ..] | [path, ..] if path.starts_with('/') => Some(path.to_string()),
                _ => None,
            }
        })
        .collect()
}

/// Every file and symlink in the tree at `root` (an image's root directory), as absolute
/// paths in it; a symlink as `path -> target`. Directories are not listed.
pub fn tree(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).expect("read the image").flatten() {
            let path = e.path();
            let shown = Path::new("/").join(path.strip_prefix(root).expect("under root"));
            let kind = e.file_type().expect("file type");
            if kind.is_dir() {
                walk(root, &path, out);
            } else if kind.is_symlink() {
                let target = std::fs::read_link(&path).expect("link");
                out.insert(format!("{} -> {}", shown.display(), target.display()));
            } else {
                out.insert(shown.display().to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// Remove the cgroup directory `dir` and those below it, deepest first (each is empty once
/// its processes are gone; the kernel refuses to remove one that is not).
fn remove_cgroups(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroups(&e.path());
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        eprintln!(
            "runtime: could not remove the cgroup {}: {e}",
            dir.display()
        );
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        self.clean_up();
    }
}
