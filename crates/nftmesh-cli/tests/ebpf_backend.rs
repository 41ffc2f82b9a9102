//! `nftmesh apply --backend ebpf` end to end (issue 27 item 8), as root: a network namespace,
//! a cgroup v2 directory and a BPF file system instance of the test's own (the machine's
//! `/sys/fs/bpf` and root cgroup are never touched). Outbound connects of a process in the
//! cgroup land on the proxy port with their original destination; the namespace holds the
//! inbound nf_tables capture and no outbound redirect; `--cleanup-only` removes both;
//! `--backend ebpf` without `--cgroup` is refused and changes nothing.

mod common;

use common::{nftmesh, skip::skip, Netns};
use nftmesh_netlink::probe::{accept_within, original_dst};
use nftmesh_test_support::bpffs::TestBpffs;
use nftmesh_test_support::cgroup::TestCgroup;
use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The peer the app connects to: an address on the namespace's `lo`.
const PEER: &str = "10.77.0.2";
/// How long a connect, an accept or the client may take.
const WAIT: Duration = Duration::from_secs(5);

/// Everything the test needs, or `None` after `SKIP: why`.
fn ready() -> Option<(Netns, TestCgroup, TestBpffs)> {
    if !nix::unistd::geteuid().is_root() {
        skip("not root: attaching BPF programs to a cgroup needs CAP_BPF and CAP_NET_ADMIN");
        return None;
    }
    let setup = || -> Result<_, String> {
        let ns = Netns::new()?;
        let cgroup = TestCgroup::try_create("cli-test")?;
        let bpffs = TestBpffs::mount("cli")?;
        Ok((ns, cgroup, bpffs))
    };
    match setup() {
        Ok(r) => Some(r),
        Err(why) => {
            skip(&why);
            None
        }
    }
}

fn run_ok(args: &[&str]) -> String {
    let o = nftmesh(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The eBPF backend's flags for a test's namespace, cgroup and bpffs (and `extra` capture
/// flags), and what `dump` says is attached there.
struct Target {
    flags: Vec<String>,
    dump: Vec<String>,
}

impl Target {
    fn new(ns: &Netns, cgroup: &TestCgroup, bpffs: &TestBpffs, extra: &[&str]) -> Self {
        let place = [
            "--cgroup".to_string(),
            cgroup.0.display().to_string(),
            "--bpffs".into(),
            bpffs.0.display().to_string(),
            "--network-namespace".into(),
            ns.path(),
        ];
        Target {
            flags: place
                .iter()
                .cloned()
                .chain(extra.iter().map(|s| s.to_string()))
                .collect(),
            dump: std::iter::once("dump".to_string()).chain(place).collect(),
        }
    }

    /// `first` followed by the flags.
    fn with<'a>(&'a self, first: &[&'a str]) -> Vec<&'a str> {
        first
            .iter()
            .copied()
            .chain(self.flags.iter().map(String::as_str))
            .collect()
    }

    /// What `nftmesh dump` says is attached (its standard error).
    fn attached(&self) -> String {
        let args: Vec<&str> = self.dump.iter().map(String::as_str).collect();
        let o = nftmesh(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    }
}

fn ruleset(ns: &Netns) -> String {
    ns.exec("nft", &["list", "ruleset"], None)
}

/// Listen on `at` inside the namespace.
fn listen_in(ns: &Netns, at: &str) -> TcpListener {
    let at: SocketAddr = at.parse().unwrap();
    nftmesh_netlink::netns::run_in(Path::new(&ns.path()), move || TcpListener::bind(at))
        .expect("enter the namespace")
        .unwrap_or_else(|e| panic!("bind {at}: {e}"))
}

/// A bash in the namespace, moved into `cgroup` by the test (`ip netns exec` remounts `/sys`,
/// so the cgroup is written from here) before it connects to PEER:8080 and sends `hello`.
fn connect_from_cgroup(ns: &Netns, cgroup: &Path) {
    let script = format!("read _ && exec 3<>/dev/tcp/{PEER}/8080 && echo hello >&3 && sleep 0.5");
    // `ip netns exec` execs bash: the pid is the client's.
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.0, "bash", "-c", &script])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn the client");
    let joined = std::fs::write(cgroup.join("cgroup.procs"), child.id().to_string());
    if joined.is_ok() {
        let _ = child.stdin.take().map(|mut i| i.write_all(b"go\n"));
    }
    // It exits a second after sending; killed (ours) if it has not within WAIT.
    let deadline = Instant::now() + WAIT;
    while child.try_wait().is_ok_and(|s| s.is_none()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    joined.unwrap_or_else(|e| panic!("move the client into {}: {e}", cgroup.display()));
}

/// The env var that makes this test binary the proxy child: `CGROUP NETNS`.
const PROXY_CHILD: &str = "NFTMESH_TEST_EBPF_PROXY";

/// The proxy stand-in: this test binary again ([`proxy_child`]), in the cgroup and listening
/// on 127.0.0.1:15001 of the namespace; it prints what it accepted.
struct Proxy(std::process::Child);

impl Proxy {
    fn start(ns: &Netns, cgroup: &Path) -> Self {
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "proxy_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(PROXY_CHILD, format!("{} {}", cgroup.display(), ns.path()))
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the proxy");
        // Held from here: killed on drop, whatever fails below.
        let mut proxy = Proxy(child);
        // It says when it listens (after the harness's own lines; bounded: it cannot block
        // before, and gives up WAIT after).
        let mut out = std::io::BufReader::new(proxy.0.stdout.take().unwrap());
        let mut seen = String::new();
        let mut line = String::new();
        while !line.trim_end().ends_with("listening") {
            line.clear();
            if out.read_line(&mut line).map_or(true, |n| n == 0) {
                panic!("the proxy did not listen: {seen}");
            }
            seen.push_str(&line);
        }
        proxy.0.stdout = Some(out.into_inner());
        proxy
    }

    /// The proxy's report (`landed ORIGINAL_DST BYTES`, or why not), once it exited.
    fn landed(mut self) -> String {
        let mut out = String::new();
        let _ = self.0.stdout.take().unwrap().read_to_string(&mut out);
        let _ = self.0.wait();
        out.lines()
            .find(|l| l.starts_with("landed") || l.starts_with("nothing"))
            .unwrap_or(&out)
            .to_string()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The proxy child's side (a no-op in a normal run): join the cgroup, listen on 15001 in the
/// namespace, accept one connection within WAIT and print its `SO_ORIGINAL_DST` and bytes.
#[test]
fn proxy_child() {
    let Ok(spec) = std::env::var(PROXY_CHILD) else {
        return;
    };
    let (cgroup, netns) = spec.split_once(' ').unwrap();
    std::fs::write(
        Path::new(cgroup).join("cgroup.procs"),
        std::process::id().to_string(),
    )
    .expect("join the cgroup");
    let l =
        nftmesh_netlink::netns::run_in(Path::new(netns), || TcpListener::bind("127.0.0.1:15001"))
            .unwrap()
            .unwrap();
    println!("listening");
    let Some(mut s) = accept_within(&l, WAIT) else {
        println!("nothing within {WAIT:?}");
        return;
    };
    let mut bytes = [0u8; 6];
    s.set_read_timeout(Some(WAIT)).unwrap();
    let read = s.read_exact(&mut bytes).map(|()| bytes);
    let text = read.map(|b| String::from_utf8_lossy(&b).trim().to_string());
    println!(
        "landed {} {}",
        original_dst(&s).map_or("none".into(), |a| a.to_string()),
        text.unwrap_or_else(|e| e.to_string())
    );
}

#[test]
fn ebpf_backend_installs_outbound_on_the_cgroup_and_inbound_in_nf_tables() {
    let Some((ns, cgroup, bpffs)) = ready() else {
        return;
    };
    ns.exec("ip", &["link", "set", "lo", "up"], None);
    ns.exec(
        "ip",
        &["addr", "add", &format!("{PEER}/32"), "dev", "lo"],
        None,
    );
    let netns = ns.path();
    let cg = cgroup.0.to_str().unwrap();
    let bpf = bpffs.0.to_str().unwrap();
    let target = [
        "--cgroup",
        cg,
        "--bpffs",
        bpf,
        "--network-namespace",
        &netns,
        "-i",
        "*",
        "-b",
        "*",
    ];
    let with = |first: &[&'static str]| -> Vec<&str> {
        first
            .iter()
            .copied()
            .chain(target.iter().copied())
            .collect()
    };

    let said = run_ok(&with(&["apply", "--backend", "ebpf"]));
    assert!(said.contains("connect4"), "{said}");
    assert!(bpffs.has_pins(), "nothing pinned in {bpf}");

    // The namespace holds the inbound capture, and nothing jumps to the outbound redirect.
    let rules = ruleset(&ns);
    assert!(rules.contains("redirect to :15006"), "{rules}");
    assert!(rules.contains("jump istio-in-redirect"), "{rules}");
    assert!(!rules.contains("jump istio-redirect"), "{rules}");

    // A process in the cgroup and the namespace lands on 15001 with its original destination
    // (read by the proxy, a child in the cgroup: getsockopt is answered for the cgroup's
    // processes).
    let proxy = Proxy::start(&ns, &cgroup.0);
    let peer = listen_in(&ns, &format!("{PEER}:8080"));
    connect_from_cgroup(&ns, &cgroup.0);
    let landed = proxy.landed();
    assert_eq!(landed, format!("landed {PEER}:8080 hello"), "on the proxy");
    assert!(
        accept_within(&peer, Duration::from_millis(50)).is_none(),
        "the peer got the cgroup's connection"
    );

    // diff compares the inbound capture and says what is attached.
    let said = run_ok(&with(&["diff"]));
    assert!(said.contains("connect4"), "{said}");
    // dump prints the tables and says what is attached.
    let dump = [
        "dump",
        "--network-namespace",
        &netns,
        "--cgroup",
        cg,
        "--bpffs",
        bpf,
    ];
    let o = nftmesh(&dump);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("redirect to :15006"));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("connect4"),
        "{o:?}"
    );

    // --cleanup-only removes the programs (pins gone) and the table.
    let said = run_ok(&with(&["apply", "--backend", "ebpf", "--cleanup-only"]));
    assert!(said.contains("removed the eBPF programs"), "{said}");
    assert!(!bpffs.has_pins(), "pins left in {bpf}");
    let rules = ruleset(&ns);
    assert!(!rules.contains("istio"), "{rules}");
    let o = nftmesh(&with(&["diff"]));
    assert!(!o.status.success(), "diff after cleanup succeeded");
    assert!(String::from_utf8_lossy(&o.stderr).contains("no eBPF program is attached"));
    let o = nftmesh(&dump);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no eBPF program is attached"));
}

#[test]
fn ebpf_backend_without_cgroup_is_refused_and_changes_nothing() {
    let Some((ns, _cgroup, bpffs)) = ready() else {
        return;
    };
    let netns = ns.path();
    let bpf = bpffs.0.to_str().unwrap();
    for args in [
        vec![
            "apply",
            "--backend",
            "ebpf",
            "--network-namespace",
            &netns,
            "-i",
            "*",
        ],
        vec![
            "apply",
            "--backend",
            "ebpf",
            "--cleanup-only",
            "--network-namespace",
            &netns,
        ],
    ] {
        let o = nftmesh(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains("--cgroup"), "{args:?}: {err}");
    }
    // --bpffs alone does not stand in for --cgroup (clap: it requires --cgroup).
    let o = nftmesh(&[
        "apply",
        "--backend",
        "ebpf",
        "--bpffs",
        bpf,
        "--network-namespace",
        &netns,
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--cgroup"));
    assert!(!ruleset(&ns).contains("istio"));
    assert!(!bpffs.has_pins());
}

#[test]
fn sk_msg_acceleration_is_off_unless_asked_and_an_apply_without_it_turns_it_off() {
    let Some((ns, cgroup, bpffs)) = ready() else {
        return;
    };
    ns.exec("ip", &["link", "set", "lo", "up"], None);
    ns.exec(
        "ip",
        &["addr", "add", &format!("{PEER}/32"), "dev", "lo"],
        None,
    );
    let target = Target::new(&ns, &cgroup, &bpffs, &["-i", "*"]);
    let (with, attached) = (|f: &[&'static str]| target.with(f), || target.attached());
    let (netns, bpf) = (ns.path(), bpffs.0.display().to_string());

    let said = run_ok(&with(&["apply", "--backend", "ebpf"]));
    assert!(!said.contains("sk_msg"), "off by default: {said}");
    assert!(!attached().contains("sk_msg"));

    let said = run_ok(&with(&["apply", "--backend", "ebpf", "--sk-msg"]));
    assert!(said.contains("sk_msg acceleration on"), "{said}");
    assert!(attached().contains("sk_msg acceleration on"));
    // Still captured, with the original destination, while accelerated.
    let proxy = Proxy::start(&ns, &cgroup.0);
    connect_from_cgroup(&ns, &cgroup.0);
    assert_eq!(proxy.landed(), format!("landed {PEER}:8080 hello"));

    // An apply without the flag turns it off; the capture stays.
    let said = run_ok(&with(&["apply", "--backend", "ebpf"]));
    assert!(!said.contains("sk_msg"), "{said}");
    let now = attached();
    assert!(!now.contains("sk_msg") && now.contains("connect4"), "{now}");

    run_ok(&with(&["apply", "--backend", "ebpf", "--sk-msg"]));
    let said = run_ok(&with(&["apply", "--backend", "ebpf", "--cleanup-only"]));
    assert!(said.contains("with sk_msg acceleration"), "{said}");
    assert!(!bpffs.has_pins(), "pins left in {bpf}");

    // Without --cgroup the flag is refused.
    let o = nftmesh(&["apply", "--sk-msg", "--network-namespace", &netns]);
    assert!(!o.status.success());
}

#[test]
fn sk_lookup_inbound_leaves_no_table_and_switches_back_to_nf_tables() {
    let Some((ns, cgroup, bpffs)) = ready() else {
        return;
    };
    ns.exec("ip", &["link", "set", "lo", "up"], None);
    let target = Target::new(&ns, &cgroup, &bpffs, &[]);
    let (with, attached) = (|f: &[&'static str]| target.with(f), || target.attached());
    let bpf = bpffs.0.display().to_string();

    // TPROXY cannot be steered: refused before anything is attached.
    let o = nftmesh(&with(&[
        "apply",
        "--backend",
        "ebpf",
        "--ebpf-inbound",
        "sk-lookup",
        "-m",
        "TPROXY",
    ]));
    assert!(!o.status.success(), "sk_lookup with TPROXY was applied");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("TPROXY")
            || String::from_utf8_lossy(&o.stderr).contains("mode"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!bpffs.has_pins(), "pins left by a refused apply in {bpf}");
    assert!(!ruleset(&ns).contains("istio"));

    // First the nf_tables inbound table, then sk_lookup replaces it.
    run_ok(&with(&["apply", "--backend", "ebpf"]));
    assert!(ruleset(&ns).contains("redirect to :15006"));
    let said = run_ok(&with(&[
        "apply",
        "--backend",
        "ebpf",
        "--ebpf-inbound",
        "sk-lookup",
    ]));
    assert!(said.contains("sk_lookup"), "{said}");
    let rules = ruleset(&ns);
    assert!(!rules.contains("istio"), "no table with sk_lookup: {rules}");
    let now = attached();
    assert!(now.contains("inbound by sk_lookup"), "{now}");

    // And back: the table first, then the steering goes.
    run_ok(&with(&["apply", "--backend", "ebpf"]));
    assert!(ruleset(&ns).contains("redirect to :15006"));
    assert!(!attached().contains("sk_lookup"));

    run_ok(&with(&[
        "apply",
        "--backend",
        "ebpf",
        "--ebpf-inbound",
        "sk-lookup",
    ]));
    run_ok(&with(&[
        "apply",
        "--backend",
        "ebpf",
        "--ebpf-inbound",
        "sk-lookup",
        "--cleanup-only",
    ]));
    assert!(!bpffs.has_pins(), "pins left in {bpf}");
    assert!(!ruleset(&ns).contains("istio"));
}
