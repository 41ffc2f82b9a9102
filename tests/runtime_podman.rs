//! nftmesh's deployment shapes in a real container runtime: Debian's podman 4.3 (CNI backend)
//! and runc run the images `scripts/build-images.sh` builds offline (FROM scratch), inside a
//! private node (`unshare --net --mount`: the bridge, the pods' namespaces and podman's mounts
//! exist only there) with podman's configuration, storage, run root and CNI directories in a
//! temporary directory (`nftmesh_test_support::runtime`); /etc is not touched.
//!
//! - **Images**: built twice into two storages, the same IDs and digests; each holds only its
//!   binaries, the libraries ldd names for them, /etc/passwd and /etc/group; the binaries run
//!   there (istio-iptables through its symlink, nftmesh-cni, the agent answering `status`).
//! - **Init-container shape**: a pod whose init containers are Istio's istio-init (its exact
//!   argv, `--cap-drop all --cap-add NET_ADMIN`: NET_RAW is not needed) and istio-validation
//!   (uid 1337, no capability), then a proxy stand-in (busybox nc as uid 1337 answering on
//!   15001 and 15006) and an app (uid 1000): see [`assert_capture`].
//! - **CNI shape**: `nftmesh cni install`, run from the node image as a DaemonSet would, chains
//!   nftmesh-cni last into the pod network's conflist; after `podman pod start` the capture is
//!   in the pod's namespace and works; stopping the pod runs DEL, which removes it (read in the
//!   namespace, held open past podman's teardown); `nftmesh cni uninstall` gives the conflist
//!   back byte for byte.
//!
//! On these machines podman needs `runtime = "runc"` (crun 1.8 refuses the hybrid cgroup
//! layout), `cgroup_manager = "cgroupfs"`, `events_logger = "file"` and `default_ulimits`
//! within the machine's hard limits (nofile 20000, nproc below 65536); the helper's
//! containers.conf says so. Every podman command is bounded in time (a stuck one is killed by
//! its PID); each test removes its pods, containers, storage and cgroups.

use nftmesh::netlink::netns::Netns;
use nftmesh_test_support::pods::serve;
use nftmesh_test_support::runtime::{self, Podman};
use nftmesh_test_support::skip;
use std::collections::BTreeSet;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

const NFTMESH: &str = "localhost/nftmesh:latest";
const NODE: &str = "localhost/nftmesh-node:latest";
const BUSYBOX: &str = "localhost/nftmesh-test-busybox:latest";
const POD: &str = "mesh-pod";
/// The argv Istio's injector gives istio-init (after the image's entrypoint, nftmesh).
#[rustfmt::skip]
const ISTIO_INIT: &[&str] = &[
    "istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
    "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020",
];
/// The proxy stand-in: answers `outbound` on 15001 and `inbound` on 15006.
const PROXY: &str = "nc -ll -p 15001 -e echo outbound & nc -ll -p 15006 -e echo inbound & wait";
/// The port the node listens on (answering `node -`) and the app connects to.
const PORT: u16 = 8080;
const WAIT: Duration = Duration::from_secs(3);

/// In the parent: skip (or fail under CI) when podman cannot run here, else run `test` in a
/// private node and return false. In that child: true.
fn in_node(test: &str) -> bool {
    if let Some(why) = runtime::unavailable() {
        skip(&why);
        return false;
    }
    runtime::in_private_node(test) == Some(true)
}

/// Create the pod on `network` with the `init` containers (in this order), a proxy stand-in
/// (uid 1337, no capability) and an app (uid 1000, no capability, sleeping).
fn create_pod(p: &Podman, network: &str, init: &[Vec<&str>]) {
    let (cg, net) = (p.cgroup_parent(), network);
    let infra = ["--infra-image", BUSYBOX, "--cgroup-parent", cg];
    p.ok(&[
        &["pod", "create", "--name", POD, "--network", net][..],
        &infra,
    ]
    .concat());
    for args in init {
        p.ok(&[&["create", "--pod", POD, "--init-ctr", "always"][..], args].concat());
    }
    let stand_in = |name, uid| {
        let user = ["--name", name, "--user", uid, "--cap-drop", "all", BUSYBOX];
        [&["create", "--pod", POD][..], &user].concat()
    };
    p.ok(&[&stand_in("proxy", "1337:1337")[..], &["sh", "-c", PROXY]].concat());
    p.ok(&stand_in("app", "1000:1000"));
}

/// The pod's infra container (its network namespace is the pod's).
fn infra(p: &Podman) -> String {
    p.ok(&["pod", "inspect", POD, "--format", "{{.InfraContainerID}}"])
}

/// `nc` from `container` (as its user) to `to`: what it was answered.
fn nc_from(p: &Podman, container: &str, to: SocketAddr) -> String {
    let (ip, port) = (to.ip().to_string(), to.port().to_string());
    p.ok(&["exec", container, "nc", "-w", "3", &ip, &port])
}

/// Connect from the node to `to`: what it was answered, or the error.
fn from_node(to: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&to, WAIT)?;
    s.set_read_timeout(Some(WAIT))?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    Ok(reply.trim().to_string())
}

/// `nft list tables` in the network namespace at `path` (nft as the test's oracle).
fn nft_tables(path: &str) -> String {
    let mut cmd = std::process::Command::new("nsenter");
    cmd.args([&format!("--net={path}"), "nft", "list", "tables"]);
    let o = runtime::bounded(&mut cmd, runtime::WAIT).unwrap_or_else(|e| panic!("{e}"));
    assert!(o.status.success(), "nft list tables in {path}: {o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Wait (at most 10 s) until TCP `ports` are listened on in `ns`: the proxy stand-in started
/// with the pod, but `podman pod start` does not wait for it to listen.
fn wait_listening(ns: &Netns, ports: &[u16]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let listening = |table: &str, port: u16| {
        let local = format!(":{port:04X} ");
        // `sl local_address rem_address st ...`; st 0A is LISTEN.
        table
            .lines()
            .any(|l| l.contains(&local) && l.split_whitespace().nth(3) == Some("0A"))
    };
    loop {
        let table = ns
            .run(|| {
                // busybox nc listens on [::] (tcp6), our listeners on 0.0.0.0 (tcp).
                ["tcp", "tcp6"].map(|t| {
                    std::fs::read_to_string(format!("/proc/thread-self/net/{t}"))
                        .unwrap_or_default()
                })
            })
            .expect("enter the pod")
            .concat();
        if ports.iter().all(|&p| listening(&table, p)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nothing listens on {ports:?}:\n{table}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What Istio's capture means for a started pod on a bridge whose address is `gateway`:
/// 1. with the proxy stand-in: the app's connection to the node lands on 15001, the proxy's
///    own (uid 1337) is not captured (the node answers), inbound to the pod lands on 15006, an
///    excluded inbound port (15021) is not redirected (refused: nothing listens);
/// 2. with the stand-in stopped and the test listening on 15001 and 15006 in the pod's
///    namespace: the redirected connections' original destinations (SO_ORIGINAL_DST) are the
///    node's and the pod's addresses at the port they were sent to.
fn assert_capture(p: &Podman, gateway: Ipv4Addr) {
    let infra = infra(p);
    let pod_ip = p.address(&infra);
    let ns = Netns::new(p.netns(&infra));
    wait_listening(&ns, &[15001, 15006]);
    let node = SocketAddr::from((gateway, PORT));
    let inbound = SocketAddr::from((pod_ip, PORT));
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, PORT)).expect("node listener");
    let _node = serve(listener, "node", 2);
    assert_eq!(
        nc_from(p, "app", node),
        "outbound",
        "app (uid 1000) to {node}"
    );
    assert_eq!(
        nc_from(p, "proxy", node),
        "node -",
        "proxy (uid 1337) to {node}"
    );
    assert_eq!(
        from_node(inbound).expect("inbound"),
        "inbound",
        "node to {inbound}"
    );
    let excluded = SocketAddr::from((pod_ip, 15021));
    let refused = from_node(excluded).map_err(|e| e.kind());
    assert_eq!(
        refused,
        Err(std::io::ErrorKind::ConnectionRefused),
        "{excluded}"
    );

    p.ok(&["stop", "--time", "0", "proxy"]);
    let bind = |port: u16| TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).expect("listen");
    let (outbound, inbound_l) = ns
        .run(move || (bind(15001), bind(15006)))
        .expect("enter pod");
    let _outbound = serve(outbound, "proxy", 1);
    let _inbound = serve(inbound_l, "proxy-inbound", 1);
    assert_eq!(
        nc_from(p, "app", node),
        format!("proxy {node}"),
        "original destination"
    );
    let got = from_node(inbound).expect("inbound");
    assert_eq!(
        got,
        format!("proxy-inbound {inbound}"),
        "original destination"
    );
}

#[test]
fn images_are_reproducible_and_hold_only_what_they_need() {
    if !in_node("images_are_reproducible_and_hold_only_what_they_need") {
        return;
    }
    let (a, b) = (Podman::new("images-a"), Podman::new("images-b"));
    let first = a.build_images(&[], &["nftmesh", "nftmesh-node"]);
    let second = b.build_images(&["--no-build"], &["nftmesh", "nftmesh-node"]);
    print!("{first}");
    assert_eq!(
        first, second,
        "the same binaries, built twice: the same images"
    );

    let bin = nftmesh_test_support::workspace_root().join("target/release");
    let passwd = "root:x:0:0:root:/root:/sbin/nologin\n\
                  istio-proxy:x:1337:1337:istio-proxy:/nonexistent:/sbin/nologin\n\
                  nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n";
    for (image, bins) in [
        (NFTMESH, &["nftmesh"][..]),
        (NODE, &["nftmesh", "nftmesh-cni"]),
    ] {
        let mut want: BTreeSet<String> = ["/etc/passwd", "/etc/group"].map(String::from).into();
        for b in bins {
            want.insert(format!("/usr/local/bin/{b}"));
            want.extend(runtime::ldd_paths(&bin.join(b)));
        }
        if image == NFTMESH {
            for link in ["istio-iptables", "proxy-init", "linkerd2-network-validator"] {
                want.insert(format!("/usr/local/bin/{link} -> nftmesh"));
            }
        }
        let (got, users) = a.with_image_mounted(image, |root| {
            (
                runtime::tree(root),
                std::fs::read_to_string(root.join("etc/passwd")),
            )
        });
        assert_eq!(
            got, want,
            "{image}: only the binaries, their libraries, the users"
        );
        assert_eq!(users.expect("/etc/passwd"), passwd, "{image}");
    }
    let symlink = [
        "--entrypoint",
        "/usr/local/bin/istio-iptables",
        NFTMESH,
        "--help",
    ];
    let help = a.run_rm(&symlink);
    assert!(help.contains("Usage: istio-iptables"), "{help}");
    let cni = a.run_rm(&[
        "--entrypoint",
        "/usr/local/bin/nftmesh-cni",
        NODE,
        "--version",
    ]);
    assert!(cni.starts_with("CNI nftmesh-cni plugin"), "{cni}");
    // The node image's default command is the agent; it answers on its socket.
    let cg = a.cgroup_parent();
    a.ok(&[
        "run",
        "-d",
        "--name",
        "agent",
        "--network",
        "none",
        "--cgroup-parent",
        cg,
        NODE,
    ]);
    let status = ["exec", "agent", "nftmesh", "agent", "status", "--socket"];
    let status = [&status[..], &["/run/nftmesh/agent.sock"]].concat();
    let deadline = Instant::now() + Duration::from_secs(10);
    let answered = loop {
        let o = a.run(&status, runtime::WAIT).expect("agent status");
        if o.status.success() || Instant::now() > deadline {
            break o;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = String::from_utf8_lossy(&answered.stdout);
    assert!(
        answered.status.success() && out.trim() == "[]",
        "{answered:?}"
    );
}

#[test]
fn init_container_shape() {
    if !in_node("init_container_shape") {
        return;
    }
    let p = Podman::new("init");
    p.build_images(&[], &["nftmesh", "nftmesh-test-busybox"]);
    p.add_bridge_network("10-pods.conflist", "pods", "nftmesh-br1", "10.89.1.0/24");
    let istio_init = [
        &[
            "--name",
            "istio-init",
            "--cap-drop",
            "all",
            "--cap-add",
            "NET_ADMIN",
        ][..],
        &[NFTMESH],
        ISTIO_INIT,
    ]
    .concat();
    // istio-validation through the istio-iptables symlink (argv[0]), as uid 1337, no capability.
    let validation = [
        &[
            "--name",
            "istio-validation",
            "--user",
            "1337:1337",
            "--cap-drop",
            "all",
        ][..],
        &["--entrypoint", "/usr/local/bin/istio-iptables", NFTMESH],
        &ISTIO_INIT[1..],
        &["--run-validation", "--skip-rule-apply"],
    ]
    .concat();
    create_pod(&p, "pods", &[istio_init, validation]);
    p.ok(&["pod", "start", POD]);
    for (init, said) in [
        ("istio-init", "applied"),
        ("istio-validation", "validation passed"),
    ] {
        assert_eq!(p.inspect(init, "{{.State.ExitCode}}"), "0", "{init}");
        let o = p.run(&["logs", init], runtime::WAIT).expect("logs");
        let logs = String::from_utf8_lossy(&[o.stdout, o.stderr].concat()).into_owned();
        assert!(logs.contains(said), "{init} did not say {said:?}:\n{logs}");
    }
    let tables = nft_tables(&p.netns(&infra(&p)));
    assert!(tables.contains("table inet istio-proxy-nat"), "{tables}");
    assert_capture(&p, Ipv4Addr::new(10, 89, 1, 1));
}

#[test]
fn cni_shape() {
    if !in_node("cni_shape") {
        return;
    }
    let p = Podman::new("cni");
    p.build_images(&[], &["nftmesh-node", "nftmesh-test-busybox"]);
    let conflist = p.add_bridge_network("10-pods.conflist", "pods", "nftmesh-br2", "10.89.2.0/24");
    let original = std::fs::read(&conflist).expect("conflist");
    let log = p.dir().join("nftmesh-cni.log");
    let entry = serde_json::json!({
        "type": "nftmesh-cni",
        "capture": {"outbound_cidrs_include": "all", "inbound_ports": "all",
                    "inbound_ports_exclude": [15090, 15021, 15020]},
        "validate": true,
        "log_file": log,
    });
    std::fs::write(p.dir().join("entry.json"), entry.to_string()).expect("entry");
    // The installer from the node image, as a DaemonSet runs it: the node's CNI directories
    // mounted in.
    let mounts = [
        format!("{}:/host/etc/cni/net.d", p.conf_dir().display()),
        format!("{}:/host/opt/cni/bin", p.bin_dir().display()),
        format!(
            "{}:/host/entry.json:ro",
            p.dir().join("entry.json").display()
        ),
    ];
    let installer = |args: &[&str]| {
        let volumes = mounts.iter().flat_map(|m| ["-v", m.as_str()]);
        let argv: Vec<&str> = volumes
            .chain([NODE, "cni"])
            .chain(args.iter().copied())
            .collect();
        let dirs = [
            "--conf-dir",
            "/host/etc/cni/net.d",
            "--bin-dir",
            "/host/opt/cni/bin",
        ];
        p.run_rm(&[&argv[..], &dirs].concat())
    };
    let plugin = ["--plugin-binary", "/usr/local/bin/nftmesh-cni"];
    installer(
        &[
            &["install"][..],
            &plugin,
            &["--plugin-config", "/host/entry.json"],
        ]
        .concat(),
    );
    let chained: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&conflist).expect("conflist")).expect("json");
    let types: Vec<&str> = chained["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .filter_map(|p| p["type"].as_str())
        .collect();
    assert_eq!(types, ["bridge", "nftmesh-cni"], "chained last: {chained}");
    assert!(
        p.bin_dir().join("nftmesh-cni").is_file(),
        "the plugin copied in"
    );

    create_pod(&p, "pods", &[]);
    p.ok(&["pod", "start", POD]);
    let netns = p.netns(&infra(&p));
    let tables = nft_tables(&netns);
    assert!(tables.contains("table inet istio-proxy-nat"), "{tables}");
    assert_capture(&p, Ipv4Addr::new(10, 89, 2, 1));

    // Hold the pod's namespace open: podman deletes its path when the pod stops, and what DEL
    // left in it can still be read.
    let held = std::fs::File::open(&netns).expect("open the pod's namespace");
    let held_path = format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        std::os::fd::AsRawFd::as_raw_fd(&held)
    );
    p.ok(&["pod", "stop", "--time", "0", POD]);
    let tables = nft_tables(&held_path);
    assert!(
        !tables.contains("istio-proxy"),
        "DEL left the capture:\n{tables}"
    );
    let logged = std::fs::read_to_string(&log).expect("the plugin's log");
    assert!(
        logged
            .lines()
            .any(|l| l.contains("\tinfo\t") && l.contains("command=DEL")),
        "{logged}"
    );
    p.ok(&["pod", "rm", "--force", "--time", "0", POD]);

    installer(&["uninstall"]);
    let restored = std::fs::read(&conflist).expect("conflist");
    assert!(
        restored == original,
        "not restored byte for byte:\n{}",
        String::from_utf8_lossy(&restored)
    );
    assert!(
        !p.bin_dir().join("nftmesh-cni").exists(),
        "the plugin removed"
    );
}
