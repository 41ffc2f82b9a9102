//! `nftmesh trace` as a process, on real connections in a namespace the test creates: the
//! app's connection shows the redirect rule, the proxy uid's the return; the trace's table is
//! gone afterwards however the trace ended (count, timeout, SIGTERM, SIGKILL), and a filter
//! no packet can pass is refused before anything is added.

mod common;

use common::{netns_or_skip, nftmesh, Netns};
use nftmesh_netlink::netns::run_in;
use nftmesh_netlink::probe::connect_as;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const TARGET: &str = "10.99.0.2:8080";

/// A pod: `lo` and `eth0` (10.99.0.1/24; its veth peer has no address, so what leaves there
/// goes nowhere) up, the sidecar capture of every outbound
/// range applied.
fn pod() -> Option<Netns> {
    let ns = netns_or_skip()?;
    ns.exec("ip", &["link", "set", "lo", "up"], None);
    ns.exec(
        "ip",
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
        ],
        None,
    );
    ns.exec("ip", &["addr", "add", "10.99.0.1/24", "dev", "eth0"], None);
    ns.exec("ip", &["link", "set", "eth0", "up"], None);
    ns.exec("ip", &["link", "set", "eth0p", "up"], None);
    let o = nftmesh(&[
        "apply",
        "--network-namespace",
        &ns.path(),
        "-i",
        "*",
        "--ipv6",
        "off",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    Some(ns)
}

/// The names of the namespace's tables (`nft` as the test oracle).
fn tables(ns: &Netns) -> Vec<String> {
    ns.exec("nft", &["list", "tables"], None)
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap_or_default().to_string())
        .collect()
}

fn trace_tables(ns: &Netns) -> Vec<String> {
    tables(ns)
        .into_iter()
        .filter(|t| t.starts_with("nftmesh-trace-"))
        .collect()
}

/// `nftmesh trace --network-namespace NS ARGS`, started; returns once it printed `tracing`.
fn start_trace(ns: &Netns, args: &[&str]) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nftmesh"))
        .args(["trace", "--network-namespace", &ns.path()])
        .args(args)
        .env_clear()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nftmesh trace");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stderr).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let _ = tx.send(first);
        // Keep reading, so that the trace's last words never meet a closed pipe.
        for _ in lines.by_ref() {}
    });
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("nftmesh trace says it listens within 10 s");
    assert_eq!(first, "tracing");
    child
}

/// Wait (at most 10 s) for the trace to exit; its status code and stdout.
fn finish(mut child: Child) -> (Option<i32>, String) {
    for _ in 0..1000 {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut out = String::new();
            child
                .stdout
                .take()
                .expect("stdout")
                .read_to_string(&mut out)
                .expect("read stdout");
            return (status.code(), out);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("nftmesh trace did not exit within 10 s");
}

/// One connection to TARGET from `uid` in the namespace (answered by the outbound listener
/// when captured; the uncaptured one goes nowhere and times out, which is fine here).
fn connect_from(ns: &Netns, uid: u32) {
    let to: SocketAddr = TARGET.parse().unwrap();
    run_in(Path::new(&ns.path()), move || {
        let _ = connect_as(uid, uid, to, Duration::from_millis(500));
    })
    .expect("enter the namespace");
}

#[test]
fn a_captured_connection_shows_the_redirect_and_the_proxys_the_return() {
    let Some(ns) = pod() else { return };
    let listener = run_in(Path::new(&ns.path()), || {
        TcpListener::bind("0.0.0.0:15001").expect("outbound listener")
    })
    .expect("enter the namespace");
    listener.set_nonblocking(true).unwrap();

    let app = start_trace(
        &ns,
        &[
            "--proto", "tcp", "--dport", "8080", "--uid", "1000", "--count", "1",
        ],
    );
    assert_eq!(
        trace_tables(&ns).len(),
        1,
        "the trace's own table is there while it runs"
    );
    connect_from(&ns, 1000);
    let (code, out) = finish(app);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.starts_with("packet 1 (trace id ") && out.contains(&format!("-> {TARGET} [syn]")),
        "{out}"
    );
    assert!(
        out.contains("inet istio-proxy-nat istio-redirect #0 (handle ")
            && out.contains("meta l4proto tcp counter redirect to :15001  => accept"),
        "{out}"
    );
    assert!(!out.contains("skuid 1337 counter return"), "{out}");
    assert!(
        listener.accept().is_ok(),
        "the app's connection reached the outbound port"
    );
    assert_eq!(
        trace_tables(&ns),
        Vec::<String>::new(),
        "gone after --count"
    );

    let proxy = start_trace(
        &ns,
        &[
            "--proto", "tcp", "--dport", "8080", "--uid", "1337", "--count", "1",
        ],
    );
    connect_from(&ns, 1337);
    let (code, out) = finish(proxy);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("istio-proxy-nat istio-output #")
            && out.contains("meta skuid 1337 counter return  => return"),
        "{out}"
    );
    assert!(!out.contains("istio-redirect"), "{out}");
    assert_eq!(trace_tables(&ns), Vec::<String>::new());
}

#[test]
fn no_table_is_left_after_a_timeout_sigterm_or_sigkill() {
    let Some(ns) = pod() else { return };
    // Nothing matches: the timeout ends it.
    let t = start_trace(&ns, &["--proto", "udp", "--dport", "9", "--timeout", "0.3"]);
    let (code, out) = finish(t);
    assert_eq!((code, out.as_str()), (Some(0), ""));
    assert_eq!(
        trace_tables(&ns),
        Vec::<String>::new(),
        "gone after --timeout"
    );

    for (signal, code) in [
        ("TERM", Some(128 + 15)),
        ("INT", Some(128 + 2)),
        ("KILL", None),
    ] {
        let t = start_trace(&ns, &["--proto", "udp", "--dport", "9"]);
        assert_eq!(trace_tables(&ns).len(), 1);
        let o = Command::new("kill")
            .args([&format!("-{signal}"), &t.id().to_string()])
            .output()
            .expect("kill");
        assert!(o.status.success());
        let (got, _) = finish(t);
        assert_eq!(got, code, "exit status after SIG{signal}");
        // SIGKILL leaves the cleanup to the kernel (the owner flag): give it a moment.
        let mut left = trace_tables(&ns);
        for _ in 0..100 {
            if left.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            left = trace_tables(&ns);
        }
        assert_eq!(left, Vec::<String>::new(), "gone after SIG{signal}");
    }
    assert!(
        tables(&ns).contains(&"istio-proxy-nat".to_string()),
        "the capture is untouched"
    );
}

#[test]
fn a_filter_no_packet_can_pass_is_refused_and_adds_nothing() {
    let Some(ns) = pod() else { return };
    let before = tables(&ns);
    for (args, why) in [
        (&["--dport", "80"][..], "a port needs a protocol"),
        (&["--uid", "1", "--iif", "eth0"][..], "never hold"),
    ] {
        let o = nftmesh(&[&["trace", "--network-namespace", &ns.path()][..], args].concat());
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(why) && !err.contains("tracing"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(tables(&ns), before);
    let o = nftmesh(&[
        "trace",
        "--network-namespace",
        &ns.path(),
        "--timeout",
        "-1",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let o = nftmesh(&["trace", "--network-namespace", "/nonexistent/netns"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/netns"));
}
