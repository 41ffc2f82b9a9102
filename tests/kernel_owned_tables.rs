//! Owned capture tables (nf_tables' table flags `owner`, kernel 5.12, and `persist`, 6.9) on
//! this machine's kernel, in named network namespaces each test creates (`ip netns add`) and
//! deletes: with an owned install, `nft flush table` / `nft delete table` / `nft add rule` run
//! by another process fail (`EPERM`) and leave the ruleset and the capture of real connections
//! as they were; the owner (a child process: this test binary re-run with
//! `NFTMESH_OWNED_TABLES_CHILD` set) killed with SIGKILL leaves the tables, ownerless; a new
//! handle's owned install claims them in place and foreign changes fail again; the owner's own
//! re-install and removal work. What `nft list ruleset` shows is printed (`--nocapture`).

use nftmesh_test_support as support;

use nftmesh::model::compile::NAT_TABLE;
use nftmesh::netlink::netns::Netns as Enter;
use nftmesh::{Capture, CaptureConfig, CaptureError, LiveTable, Namespace, TableOwner};
use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::named_netns::Netns;
use support::pods::{connect_as, listen, APP_UID, PEER, POD};

/// Set in the child: the namespace path whose capture it installs owned, then holds.
const CHILD: &str = "NFTMESH_OWNED_TABLES_CHILD";
/// The line the child prints once its owned install is committed, followed by its port id.
const READY: &str = "owned-tables-child-ready port=";

/// A pod namespace with `lo` up and a veth pair (both ends inside) holding `POD`/24, so that connections
/// to `PEER` are routed (and, captured, redirected to 15001); `None` when kernel tests cannot
/// run here (reported).
fn pod() -> Option<Netns> {
    if let Some(why) = support::kernel_unavailable() {
        support::skip(&why);
        return None;
    }
    let n = match Netns::new() {
        Ok(n) => n,
        Err(e) => {
            support::skip(&format!("cannot create a named network namespace: {e}"));
            return None;
        }
    };
    n.exec("ip", &["link", "set", "lo", "up"], None);
    n.exec(
        "ip",
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
        ],
        None,
    );
    n.exec(
        "ip",
        &["addr", "add", &format!("{POD}/24"), "dev", "eth0"],
        None,
    );
    n.exec("ip", &["link", "set", "eth0", "up"], None);
    n.exec("ip", &["link", "set", "eth0p", "up"], None);
    Some(n)
}

fn capture() -> Capture {
    let mut cfg = CaptureConfig::sidecar();
    cfg.ipv6 = false;
    Capture::new(&cfg).unwrap()
}

fn owned() -> Capture {
    capture().with_owner(TableOwner::OwnerPersist)
}

/// `nft ARGS` run by another process in `ns`: (exit code, stderr).
fn nft(ns: &Netns, args: &[&str]) -> (Option<i32>, String) {
    let o = Command::new("ip")
        .args(["netns", "exec", &ns.0, "nft"])
        .args(args)
        .output()
        .expect("run nft");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Run `nft ARGS` in `ns` as a foreign process and assert that the kernel refused it with
/// `EPERM`; prints what nft said.
fn refused(ns: &Netns, args: &[&str]) {
    let (code, err) = nft(ns, args);
    println!(
        "foreign `nft {}`: exit {code:?}: {}",
        args.join(" "),
        err.trim()
    );
    assert_ne!(code, Some(0), "nft {args:?} must fail on an owned table");
    assert!(
        err.contains("Operation not permitted"),
        "nft {args:?} must fail with EPERM: {err}"
    );
}

/// What an app-uid connection to `PEER:8080` reached in `ns`: the 15001 listener's answer
/// (`outbound ORIGINAL_DST`) when captured.
fn app_connection(ns: &Netns) -> std::io::Result<String> {
    Enter::new(ns.path())
        .run(|| {
            let server = listen(15001, "outbound");
            let r = connect_as(APP_UID, APP_UID, SocketAddr::from((PEER, 8080)));
            server.join().unwrap();
            r
        })
        .expect("enter the pod")
}

fn assert_captured(ns: &Netns, when: &str) {
    let got = app_connection(ns).unwrap_or_else(|e| panic!("{when}: app connection: {e}"));
    assert_eq!(got, format!("outbound {PEER}:8080"), "{when}");
}

/// The `flags ...` line of an `nft list ruleset` output (empty when there is none).
fn flags_line(listing: &str) -> String {
    let line = listing
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("flags"));
    line.unwrap_or_default().to_string()
}

/// The nat table as `handle` lists it.
fn nat(handle: &Namespace) -> LiveTable {
    handle
        .live_tables()
        .unwrap()
        .into_iter()
        .find(|t| t.name == NAT_TABLE)
        .expect("the nat table is there")
}

/// The owner process, killed (SIGKILL) and reaped when dropped: also when an assertion fails
/// while it runs, so that a failing test never leaves it behind.
struct Owner(Child);

impl Owner {
    /// SIGKILL it and wait until it is gone (its sockets closed).
    fn kill_9(&mut self) {
        self.0.kill().expect("SIGKILL the owner");
        self.0.wait().expect("reap the owner");
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The owner process: this binary re-run for `owner_child` with [`CHILD`] set. Returns once it
/// reported its committed install, with its port id.
fn spawn_owner(ns: &Netns) -> (Owner, u32) {
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args(["--exact", "owner_child", "--nocapture", "--test-threads=1"])
        .env(CHILD, ns.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the owner");
    let stdout = child.stdout.take().expect("child stdout");
    let child = Owner(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest prints `test owner_child ... ` before it on the same line.
            if let Some((_, port)) = line.split_once(READY) {
                let _ = tx.send(port.trim().parse::<u32>());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(port)) => (child, port),
        other => panic!("the owner did not report its install: {other:?}"),
    }
}

/// In the child only: install the capture owned, say so with the port id, and hold the socket
/// until killed.
#[test]
fn owner_child() {
    let Some(path) = std::env::var_os(CHILD) else {
        return;
    };
    let ns = Namespace::open(&path).expect("open the pod");
    let report = ns.install(&owned()).expect("owned install");
    assert_eq!(report.table_owner, TableOwner::OwnerPersist);
    println!("{READY}{}", ns.netlink_port_id());
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[test]
fn this_kernel_has_owner_and_persist() {
    if pod().is_none() {
        return;
    }
    let support = nftmesh::netlink::Connection::table_owner_support().unwrap();
    println!(
        "kernel {}: table owner support {support:?}",
        kernel_release()
    );
    assert_eq!(support, TableOwner::OwnerPersist, "6.18 has both flags");
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn an_owned_capture_refuses_foreign_changes_outlives_a_killed_owner_and_is_reclaimed() {
    let Some(ns) = pod() else { return };
    let (mut owner, port) = spawn_owner(&ns);
    let foreign = Namespace::open(ns.path()).unwrap();
    let t = nat(&foreign);
    println!("owned by port {port}: {t:?}");
    assert!(t.is_owned() && t.is_persistent(), "{t:?}");
    assert_eq!(t.owner, Some(port), "the kernel names the owner's port id");
    assert_ne!(foreign.netlink_port_id(), port);

    let before = ns.list();
    println!("nft list ruleset of an owned table (owner alive):\n{before}");
    assert!(before.contains(NAT_TABLE), "other tools still list it");
    assert!(
        flags_line(&before).contains("owner"),
        "nft shows the owner flag"
    );
    let (json, _) = nft(&ns, &["-j", "list", "ruleset"]);
    assert_eq!(json, Some(0), "nft -j list ruleset works too");

    // Another process's changes: refused by the kernel, nothing changes.
    let chain = capture().ruleset().tables[0].chains[0].name.clone();
    let chain = chain.as_str();
    refused(&ns, &["flush", "table", "inet", NAT_TABLE]);
    refused(&ns, &["delete", "table", "inet", NAT_TABLE]);
    refused(&ns, &["add", "rule", "inet", NAT_TABLE, chain, "accept"]);
    refused(&ns, &["add", "chain", "inet", NAT_TABLE, "tamper"]);
    // `flush ruleset` skips tables owned by others (nft_flush): it succeeds, and they stay.
    let (code, err) = nft(&ns, &["flush", "ruleset"]);
    println!("foreign `nft flush ruleset`: exit {code:?} {}", err.trim());
    assert_eq!(ns.list(), before, "the owned ruleset is unchanged");
    // This process's own handle is another socket too: installing through it is refused.
    for c in [capture(), owned()] {
        match foreign.install(&c) {
            Err(CaptureError::Netlink(e)) if e.is_owned_elsewhere() => {
                println!("foreign install: {e}")
            }
            other => panic!("a foreign install must be refused: {other:?}"),
        }
    }
    assert_eq!(ns.list(), before);
    assert_captured(&ns, "owned, after the refused tampering");

    // kill -9 the owner: its socket closes, the persistent tables stay, ownerless.
    owner.kill_9();
    let orphan = nat(&foreign);
    println!("after kill -9 of the owner: {orphan:?}");
    assert!(orphan.is_orphan() && orphan.owner.is_none(), "{orphan:?}");
    assert_eq!(orphan.handle, t.handle, "the same table");
    let listing = ns.list();
    println!("nft list ruleset of the orphaned table:\n{listing}");
    // nft names `persist` from 1.1; 1.0.x prints a bare `flags` for the bit it cannot name.
    assert!(!flags_line(&listing).contains("owner"), "{listing}");
    assert_captured(&ns, "orphaned after the owner's kill -9");

    // A new handle's owned install claims them in place; foreign changes fail again.
    let reclaimer = Namespace::open(ns.path()).unwrap();
    let report = reclaimer.install(&owned()).unwrap();
    assert_eq!(report.table_owner, TableOwner::OwnerPersist);
    let claimed = nat(&reclaimer);
    assert_eq!(
        claimed.owner,
        Some(reclaimer.netlink_port_id()),
        "{claimed:?}"
    );
    assert!(claimed.is_owned() && claimed.is_persistent());
    assert_eq!(claimed.handle, t.handle, "claimed in place, not re-created");
    let reclaimed = ns.list();
    refused(&ns, &["flush", "table", "inet", NAT_TABLE]);
    assert_eq!(ns.list(), reclaimed);
    assert_captured(&ns, "reclaimed");

    // The owner's own re-install replaces in place; its removal deletes them.
    reclaimer.install(&owned()).unwrap();
    assert_eq!(nat(&reclaimer).handle, t.handle);
    assert!(reclaimer.check(&owned()).unwrap().is_empty());
    assert!(
        foreign.remove(&capture()).is_err(),
        "nor can it remove them"
    );
    let removed = reclaimer.remove(&owned()).unwrap();
    assert_eq!(removed.tables, 1);
    assert!(reclaimer.live_tables().unwrap().is_empty());
}

#[test]
fn an_unowned_capture_is_taken_over_in_one_transaction_and_then_refuses_its_old_installer() {
    let Some(ns) = pod() else { return };
    let first = Namespace::open(ns.path()).unwrap();
    let report = first.install(&capture()).unwrap();
    assert_eq!(report.table_owner, TableOwner::None);
    let shared = nat(&first);
    assert!(!shared.is_owned() && shared.owner.is_none());
    // The kernel cannot add `owner` to a live table: the owned install deletes and
    // re-creates it in its one transaction.
    let second = Namespace::open(ns.path()).unwrap();
    let gen = second.generation().unwrap();
    second.install(&owned()).unwrap();
    assert_eq!(second.generation().unwrap(), gen + 1, "one transaction");
    let taken = nat(&second);
    assert_eq!(taken.owner, Some(second.netlink_port_id()));
    assert_ne!(taken.handle, shared.handle, "re-created");
    assert!(second.check(&owned()).unwrap().is_empty());
    match first.install(&capture()) {
        Err(CaptureError::Netlink(e)) if e.is_owned_elsewhere() => {}
        other => panic!("the old installer must be refused: {other:?}"),
    }
    assert_captured(&ns, "taken over");
}

#[test]
fn owner_only_tables_go_with_their_socket_and_persistent_ones_stay() {
    let Some(ns) = pod() else { return };
    let h = Namespace::open(ns.path()).unwrap();
    let report = h.install(&capture().with_owner(TableOwner::Owner)).unwrap();
    assert_eq!(report.table_owner, TableOwner::Owner);
    let t = nat(&h);
    assert!(t.is_owned() && !t.is_persistent(), "{t:?}");
    drop(h);
    let out = ns.exec("nft", &["list", "tables"], None);
    println!("after the owner-only handle closed, tables: {out:?}");
    assert!(
        !out.contains(NAT_TABLE),
        "the kernel deleted it with its socket"
    );

    let h = Namespace::open(ns.path()).unwrap();
    h.install(&owned()).unwrap();
    drop(h);
    let out = ns.exec("nft", &["list", "tables"], None);
    assert!(out.contains(NAT_TABLE), "persistent: kept");
}

#[test]
fn the_kernel_refuses_making_a_live_table_owned_in_place() {
    // The fact the delete-and-re-create above rests on, shown with nft as the oracle: a
    // table created without flags cannot be declared `owner` later.
    let Some(ns) = pod() else { return };
    ns.exec("nft", &["add", "table", "inet", "plain"], None);
    let (code, err) = nft(&ns, &["add", "table", "inet", "plain", "{ flags owner; }"]);
    println!(
        "`nft add table inet plain {{ flags owner; }}` over a live table: exit {code:?}: {}",
        err.trim()
    );
    assert_ne!(code, Some(0));
    assert!(err.contains("Operation not supported"), "{err}");
}
