//! What the plugin's runtime tests share: a private node (`unshare -n -m`, see
//! `nftmesh_test_support::node`) with tmpfs over libcni's cache, a conflist of Debian's `ptp` +
//! `host-local` with nftmesh-cni chained last, run by the reference runtime `cnitool`, a pod
//! namespace, and the plugin run directly as a runtime would.
#![allow(dead_code)]

use nftmesh_test_support::node;
pub use nftmesh_test_support::skip;

use nftmesh_netlink::netns::run_in;
use nftmesh_netlink::probe::{accept_within, connect_as, original_dst};
use serde_json::{json, Value};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub const PLUGIN: &str = env!("CARGO_BIN_EXE_nftmesh-cni");
pub const CNI_PLUGINS: &str = "/usr/lib/cni";
pub const GATEWAY: &str = "10.22.0.1";

/// Run the test body in a private node; `false` in the parent (which checked the child) and
/// when the tools are missing (reported by `skip`).
pub fn in_node(test: &str) -> bool {
    for tool in [
        "/usr/local/bin/cnitool",
        "/usr/lib/cni/ptp",
        "/usr/lib/cni/host-local",
    ] {
        if !Path::new(tool).exists() {
            skip(&format!("{tool} is missing: run ./scripts/setup-cni.sh"));
            return false;
        }
    }
    match node::in_private_node(test) {
        Some(true) => {
            // libcni caches results in /var/lib/cni: a tmpfs of this node's mount namespace.
            std::fs::create_dir_all("/var/lib/cni").expect("create /var/lib/cni");
            let o = Command::new("mount")
                .args(["-t", "tmpfs", "nftmesh-cni-cache", "/var/lib/cni"])
                .output()
                .expect("mount");
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            true
        }
        _ => false,
    }
}

/// One network configuration list and its directory, and a pod namespace.
pub struct Net {
    pub dir: PathBuf,
    pub pod: String,
}

impl Net {
    /// The conflist `meshnet`: ptp with host-local addresses from 10.22.0.0/24 and a default
    /// route, then nftmesh-cni with `ours` merged into its entry; and a pod namespace `pod`.
    pub fn new(ours: Value) -> Net {
        let dir = std::env::temp_dir().join(format!("nftmesh-cni-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut plugin = json!({"type": "nftmesh-cni"});
        for (k, v) in ours.as_object().unwrap() {
            plugin[k] = v.clone();
        }
        let conf = json!({
            "cniVersion": "1.0.0",
            "name": "meshnet",
            "plugins": [
                {
                    "type": "ptp",
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "subnet": "10.22.0.0/24",
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": dir.join("ipam"),
                    }
                },
                plugin
            ]
        });
        std::fs::write(dir.join("meshnet.conflist"), conf.to_string()).unwrap();
        // The runtime's loopback network, as containerd sets it up before the pod's own.
        let lo = json!({"cniVersion": "1.0.0", "name": "lo", "plugins": [{"type": "loopback"}]});
        std::fs::write(dir.join("lo.conflist"), lo.to_string()).unwrap();
        let o = Command::new("ip")
            .args(["netns", "add", "pod"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let net = Net {
            dir,
            pod: "/run/netns/pod".into(),
        };
        let o = net.cnitool_on("lo", "add", "");
        assert!(
            o.status.success(),
            "loopback: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        net
    }

    /// `cnitool COMMAND meshnet POD`, with `CNI_ARGS`.
    pub fn cnitool(&self, command: &str, cni_args: &str) -> Output {
        self.cnitool_on("meshnet", command, cni_args)
    }

    /// `cnitool COMMAND NETWORK POD`, with `CNI_ARGS`.
    pub fn cnitool_on(&self, network: &str, command: &str, cni_args: &str) -> Output {
        self.cnitool_with(network, command, cni_args, None)
    }

    /// `cnitool COMMAND meshnet POD` with `CAP_ARGS`: the runtime config libcni passes to the
    /// plugins whose entry declares those capabilities (as containerd passes
    /// `io.kubernetes.cri.pod-annotations`).
    pub fn cnitool_caps(&self, command: &str, cap_args: &Value) -> Output {
        self.cnitool_with("meshnet", command, "", Some(cap_args))
    }

    fn cnitool_with(
        &self,
        network: &str,
        command: &str,
        cni_args: &str,
        cap_args: Option<&Value>,
    ) -> Output {
        let plugin_dir = Path::new(PLUGIN).parent().unwrap().display().to_string();
        let mut c = Command::new("/usr/local/bin/cnitool");
        c.args([command, network, &self.pod])
            .env_clear()
            .env("NETCONFPATH", &self.dir)
            .env("CNI_PATH", format!("{CNI_PLUGINS}:{plugin_dir}"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_ARGS", cni_args);
        if let Some(caps) = cap_args {
            c.env("CAP_ARGS", caps.to_string());
        }
        c.output().expect("run cnitool")
    }

    /// Rewrite nftmesh-cni's entry of the conflist (e.g. an upgrade's new keys).
    pub fn rewrite_entry(&self, entry: Value) {
        let path = self.dir.join("meshnet.conflist");
        let mut list: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        list["plugins"][1] = entry;
        std::fs::write(path, list.to_string()).unwrap();
    }

    /// The addresses host-local has leased (its files under the ipam data dir).
    pub fn leases(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.join("ipam/meshnet"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("10.22."))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The pod's address on eth0.
    pub fn pod_ip(&self) -> String {
        let o = Command::new("ip")
            .args(["-n", "pod", "-4", "-o", "addr", "show", "eth0"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let cidr = text
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .unwrap_or_else(|| panic!("no address on eth0: {text}"));
        cidr.split('/').next().unwrap().to_string()
    }

    /// Whether an app-uid connection out of the pod to the gateway reaches a listener there in
    /// the node (the peer), uncaptured.
    pub fn reaches_peer(&self) -> bool {
        let l = TcpListener::bind(format!("{GATEWAY}:8080")).expect("peer listener");
        let to: SocketAddr = format!("{GATEWAY}:8080").parse().unwrap();
        let client = std::thread::spawn({
            let pod = self.pod.clone();
            move || {
                run_in(Path::new(&pod), move || {
                    connect_as(1000, 1000, to, Duration::from_secs(1)).is_ok()
                })
            }
        });
        let got = accept_within(&l, Duration::from_secs(1)).is_some();
        let _ = client.join();
        got
    }

    /// A connection from the node to the pod's address and `port`: where the pod accepted it,
    /// as (the listener's port, the accepted socket's local address), with listeners on
    /// `port` itself and on the inbound capture port 15006 (transparent, for TPROXY, where the
    /// local address stays the original destination); `None` when neither got it.
    pub fn inbound(&self, port: u16) -> Option<(u16, SocketAddr)> {
        let listeners = run_in(Path::new(&self.pod), move || {
            let capture = transparent_listener(15006);
            let direct = TcpListener::bind(("0.0.0.0", port)).expect("listener on the port");
            (capture, direct)
        })
        .expect("enter the pod");
        let to: SocketAddr = format!("{}:{port}", self.pod_ip()).parse().unwrap();
        let client = std::thread::spawn(move || {
            std::net::TcpStream::connect_timeout(&to, Duration::from_secs(1)).is_ok()
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        let mut got = None;
        while got.is_none() && std::time::Instant::now() < deadline {
            for (p, l) in [(15006, &listeners.0), (port, &listeners.1)] {
                if let Some(s) = accept_within(l, Duration::from_millis(20)) {
                    got = Some((p, s.local_addr().unwrap()));
                    break;
                }
            }
        }
        let _ = client.join();
        got
    }

    pub fn ok(&self, command: &str) -> String {
        let o = self.cnitool(command, "");
        assert!(
            o.status.success(),
            "cnitool {command}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The names of the pod's nf_tables tables (`nft` as the test oracle).
    pub fn tables(&self) -> Vec<String> {
        let o = Command::new("ip")
            .args(["netns", "exec", "pod", "nft", "list", "tables"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| l.rsplit(' ').next().unwrap_or_default().to_string())
            .collect()
    }

    /// `nft -s list ruleset` of the pod (without counter values).
    pub fn ruleset(&self) -> String {
        let o = Command::new("ip")
            .args(["netns", "exec", "pod", "nft", "-s", "list", "ruleset"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn nft(&self, args: &[&str]) {
        let o = Command::new("ip")
            .args(["netns", "exec", "pod", "nft"])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    /// An app-uid connection out of the pod to the gateway: the original destination the
    /// pod's outbound listener saw, or `None` when it did not land there.
    pub fn captured(&self) -> Option<SocketAddr> {
        let to: SocketAddr = format!("{GATEWAY}:8080").parse().unwrap();
        run_in(Path::new(&self.pod), move || {
            let l = TcpListener::bind("0.0.0.0:15001").expect("outbound listener");
            let client =
                std::thread::spawn(move || connect_as(1000, 1000, to, Duration::from_secs(1)));
            let got = accept_within(&l, Duration::from_secs(1)).and_then(|s| original_dst(&s));
            let _ = client.join();
            got
        })
        .expect("enter the pod")
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", "pod"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The tables among `tables` that nftmesh owns (Istio's `istio-*`, Linkerd's
/// `linkerd-proxy-init`; see `nftmesh::owned_tables`).
pub fn ours(tables: &[String]) -> Vec<&String> {
    tables
        .iter()
        .filter(|t| t.starts_with("istio-") || *t == nftmesh::model::linkerd::TABLE)
        .collect()
}

/// The plugin run directly: `CNI_COMMAND` and friends, `stdin`; (exit code, stdout JSON).
pub fn plugin(command: &str, netns: &str, stdin: &Value, cni_args: &str) -> (i32, Value) {
    plugin_with_args(command, netns, stdin, cni_args, &[])
}

/// [`plugin`] with command-line arguments (which a runtime never passes).
pub fn plugin_with_args(
    command: &str,
    netns: &str,
    stdin: &Value,
    cni_args: &str,
    args: &[&str],
) -> (i32, Value) {
    let mut child = Command::new(PLUGIN)
        .args(args)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "c1")
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", cni_args)
        .env("CNI_PATH", CNI_PLUGINS)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nftmesh-cni");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.to_string().as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let out: Value = if o.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
    };
    (o.status.code().unwrap_or(-1), out)
}

pub fn prev() -> Value {
    json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}], "ips": []})
}

/// A TCP listener on `port` with IP_TRANSPARENT (a TPROXY target).
fn transparent_listener(port: u16) -> TcpListener {
    use nix::sys::socket::{
        bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
        SockaddrIn,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .expect("socket");
    setsockopt(&fd, sockopt::IpTransparent, &true).expect("IP_TRANSPARENT");
    setsockopt(&fd, sockopt::ReuseAddr, &true).expect("SO_REUSEADDR");
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::new(0, 0, 0, 0, port),
    )
    .expect("bind the capture port");
    listen(&fd, Backlog::new(8).unwrap()).expect("listen");
    TcpListener::from(fd)
}

/// The real node agent, its loop on a thread of this test process (it ends with the process),
/// listening on `dir/agent.sock` with its state in `dir/agent-state`; returns the socket once
/// it listens (within 10 s).
pub fn start_agent(dir: &Path, own_tables: bool) -> PathBuf {
    let socket = dir.join("agent.sock");
    let opts = nftmesh_agent::server::Options {
        socket: socket.clone(),
        state_dir: dir.join("agent-state"),
        metrics_addr: None,
        resync: Duration::from_secs(30),
        own_tables,
        bpffs: None,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let agent = nftmesh_agent::server::Agent::start(opts).expect("agent");
        tx.send(()).unwrap();
        let _ = agent.run();
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the agent starts");
    socket
}

/// A stand-in agent (no kernel): a unix socket in a temp dir of its own that answers one
/// request `ok` and hands it over, so a test sees exactly what the plugin sent.
pub struct StandInAgent {
    dir: PathBuf,
    /// The socket the plugin entry names as `agent_socket`.
    pub socket: PathBuf,
    listener: std::os::unix::net::UnixListener,
}

impl StandInAgent {
    /// A fresh socket under a temp dir named after `tag`.
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("nftmesh-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("agent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        listener.set_nonblocking(true).unwrap();
        StandInAgent {
            dir,
            socket,
            listener,
        }
    }

    /// Whether nobody has connected so far.
    pub fn nothing_asked(&self) -> bool {
        self.listener.accept().is_err()
    }

    /// Answer the next request (waiting at most 10 s for it, on a thread) and hand it over.
    pub fn serve_one(&self) -> std::thread::JoinHandle<Value> {
        use std::io::{BufRead, BufReader};
        let listener = self.listener.try_clone().unwrap();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let s = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(_) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => panic!("no request within 10 s: {e}"),
                }
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            (&s).write_all(b"{\"ok\":true}\n").unwrap();
            serde_json::from_str::<Value>(&line).unwrap()
        })
    }
}

impl Drop for StandInAgent {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
