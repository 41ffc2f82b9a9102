//! Who may install where, and what is left when a cgroup goes: the root directory of a cgroup2
//! mount is refused by every installer (in a cgroup namespace of the test's own, whose cgroup2
//! mount's root is the test's cgroup), pins whose cgroup was deleted are found by their links'
//! cgroup ids and removed while a live capture's stay, and two processes installing and
//! removing on one cgroup at once never interleave (the cgroup directory's `flock`). Each test
//! mounts a BPF file system and creates cgroups of its own. Needs root; otherwise `SKIP: why`
//! (failing under `CI=true`).

mod kernel_support;
mod support;

use nftmesh_ebpf::{check_cgroup, Attachment, Bpffs, EbpfCapture};
use nftmesh_model::config::CaptureConfig;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{run_child, TestCgroup, CHILD_ENV};

/// Installs and removals each concurrent installer makes.
const ROUNDS: usize = 25;

/// Not a test of its own: the entry point of the child processes; does nothing unless
/// [`CHILD_ENV`] names a phase.
#[test]
fn child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (phase, cgroup) = spec.split_once(':').expect("phase:cgroup");
    match phase.split_once('=') {
        Some(("installer", bpffs)) => installer(Path::new(bpffs), Path::new(cgroup)),
        Some(("mount-root", bpffs)) => refuse_mount_root(Path::new(bpffs), Path::new(cgroup)),
        _ => panic!("unknown phase {phase}"),
    }
}

/// The concurrent installer: install (its own proxy port, so each install loads new
/// programs), read the capture back whole, remove; ROUNDS times. Every step must succeed.
fn installer(bpffs: &Path, cgroup: &Path) {
    let bpffs = Bpffs::at(bpffs).expect("the test's bpffs");
    let cfg = CaptureConfig {
        proxy_port: 15100 + (std::process::id() % 100) as u16,
        ..CaptureConfig::sidecar()
    };
    for round in 0..ROUNDS {
        let attached = EbpfCapture::new(&cfg)
            .and_then(|mut c| c.install(&bpffs, cgroup))
            .unwrap_or_else(|e| panic!("install {round}: {e}"));
        drop(attached);
        // Removal (which may find another installer's capture, or none: it is then gone).
        match Attachment::open(&bpffs, cgroup) {
            Ok(Some(a)) => a.remove().unwrap_or_else(|e| panic!("remove {round}: {e}")),
            Ok(None) => {}
            Err(e) => panic!("open {round}: {e}"),
        }
    }
    println!("{ROUNDS} installs and removals");
}

/// In a cgroup namespace whose root is the test's cgroup: mount cgroup2 (its root directory is
/// that cgroup) and try every installer there.
fn refuse_mount_root(bpffs: &Path, mount: &Path) {
    let bpffs = Bpffs::at(bpffs).expect("the test's bpffs");
    std::fs::create_dir_all(mount).expect("mkdir the mount point");
    let o = Command::new("mount")
        .args(["-t", "cgroup2", "none"])
        .arg(mount)
        .output()
        .expect("run mount");
    assert!(
        o.status.success(),
        "mount -t cgroup2: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let said = |e: nftmesh_ebpf::EbpfError| {
        let e = e.to_string();
        assert!(
            e.contains("root directory of the cgroup2 mount") && e.contains("every process"),
            "{e}"
        );
    };
    said(check_cgroup(mount).expect_err("check_cgroup of the mount's root"));
    let mut capture = EbpfCapture::new(&CaptureConfig::sidecar()).expect("load");
    said(
        capture
            .install(&bpffs, mount)
            .expect_err("install on the mount's root"),
    );
    said(
        capture
            .attach(mount)
            .expect_err("attach to the mount's root"),
    );
    said(Attachment::open(&bpffs, mount).expect_err("open of the mount's root"));
    assert!(
        !bpffs.mount().join("nftmesh").exists(),
        "something was pinned"
    );
    println!("refused");
}

#[test]
fn the_root_directory_of_a_cgroup2_mount_is_refused_by_every_installer() {
    let Some(bpffs) = kernel_support::ready() else {
        return;
    };
    let cgroup = TestCgroup::create("ebpf");
    let mount = bpffs.dir().with_extension("cgroup2");
    // The child joins the cgroup, then gets a cgroup namespace rooted there and a mount
    // namespace of its own (its cgroup2 mount goes with it).
    let exe = std::env::current_exe().expect("the test binary's path");
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec unshare --cgroup --mount --propagation private \"$0\" \
         --exact child --nocapture --test-threads=1",
        cgroup.path().display()
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .arg(exe)
        .env(
            CHILD_ENV,
            format!("mount-root={}:{}", bpffs.dir().display(), mount.display()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("the child's output");
    let _ = std::fs::remove_dir(&mount);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("refused"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(bpffs.contents(), Vec::<PathBuf>::new());
}

#[test]
fn pins_whose_cgroup_is_gone_are_found_and_removed_and_live_ones_stay() {
    let Some(bpffs) = kernel_support::ready() else {
        return;
    };
    let kept = TestCgroup::create("ebpf");
    let gone = TestCgroup::create("ebpf");
    let install = |cg: &Path| {
        EbpfCapture::new(&CaptureConfig::sidecar())
            .and_then(|mut c| c.install(bpffs.bpffs(), cg))
            .expect("install")
    };
    let kept_dir = install(kept.path()).pin_dir().unwrap().to_path_buf();
    let gone_dir = install(gone.path()).pin_dir().unwrap().to_path_buf();
    assert_eq!(bpffs.bpffs().stale().expect("stale"), vec![]);
    let gone_path = gone.path().to_path_buf();
    drop(gone); // rmdir: the cgroup is deleted with the capture still pinned.
    assert!(!gone_path.exists());
    // The pins cannot be found by the cgroup's path any more.
    assert!(Attachment::open(bpffs.bpffs(), &gone_path).is_err());
    // The kernel lets the links' cgroup go shortly after (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(10);
    let stale = loop {
        let s = bpffs.bpffs().stale().expect("stale");
        if !s.is_empty() || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    println!(
        "stale {:?} after the rmdir",
        Duration::from_secs(10) - deadline.saturating_duration_since(Instant::now())
    );
    assert_eq!(stale.len(), 1, "{stale:?}");
    assert_eq!(stale[0].dir, gone_dir);
    assert_eq!(stale[0].links, 6, "{stale:?}");
    let removed = bpffs.bpffs().remove_stale().expect("remove_stale");
    assert_eq!(removed, stale);
    assert!(!gone_dir.exists(), "the stale pins are gone");
    assert!(kept_dir.exists(), "the live capture's pins stay");
    let live = Attachment::open(bpffs.bpffs(), kept.path())
        .expect("open")
        .expect("the live capture");
    assert_eq!(live.programs().len(), 6);
    assert_eq!(bpffs.bpffs().stale().expect("stale"), vec![]);
    live.remove().expect("remove");
    assert_eq!(bpffs.contents(), Vec::<PathBuf>::new());
}

#[test]
fn two_processes_installing_and_removing_on_one_cgroup_never_interleave() {
    let Some(bpffs) = kernel_support::ready() else {
        return;
    };
    let cgroup = TestCgroup::create("ebpf");
    let phase = format!("installer={}", bpffs.dir().display());
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let (phase, cg) = (phase.clone(), cgroup.path().to_path_buf());
            std::thread::spawn(move || run_child(&phase, &cg))
        })
        .collect();
    let outcomes: Vec<_> = runs.into_iter().map(|r| r.join()).collect();
    // Whatever happened, nothing may stay attached.
    if let Ok(Some(a)) = Attachment::open(bpffs.bpffs(), cgroup.path()) {
        let _ = a.remove();
    }
    for o in outcomes {
        match o {
            Ok(out) => assert!(out.contains("installs and removals"), "{out}"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
    assert_eq!(bpffs.contents(), Vec::<PathBuf>::new());
}

/// `BPF_LINK_DETACH` of the link pinned at `pin`, as another process would detach it
/// (leaving its pin in place).
fn detach_pinned_link(pin: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(pin.as_os_str().as_bytes()).unwrap();
    // union bpf_attr's BPF_OBJ_GET member: pathname, bpf_fd, file_flags, path_fd (+ pad).
    let mut get = [0u64; 3];
    get[0] = name.as_ptr() as u64;
    // SAFETY: `get` is 24 zeroed bytes (the kernel's BPF_OBJ_GET attribute size) holding a
    // pointer to `name`, a NUL-terminated string alive across the call; the kernel only reads.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 7, get.as_mut_ptr(), 24) };
    assert!(fd >= 0, "BPF_OBJ_GET {}", pin.display());
    // link_detach: the link's fd.
    let mut detach = [fd as u32, 0];
    // SAFETY: `detach` is 8 bytes, the first the link's fd and the rest zero, as
    // BPF_LINK_DETACH reads; the kernel keeps no reference.
    let r = unsafe { libc::syscall(libc::SYS_bpf, 34, detach.as_mut_ptr(), 8) };
    // SAFETY: `fd` is the descriptor BPF_OBJ_GET just returned, ours to close once.
    unsafe { libc::close(fd as i32) };
    assert_eq!(r, 0, "BPF_LINK_DETACH {}", pin.display());
}

#[test]
fn a_link_detached_behind_our_back_is_found_unpinned_and_linked_again() {
    let Some(bpffs) = kernel_support::ready() else {
        return;
    };
    let cgroup = TestCgroup::create("ebpf");
    let cfg = CaptureConfig::sidecar();
    let attached = EbpfCapture::new(&cfg)
        .and_then(|mut c| c.install(bpffs.bpffs(), cgroup.path()))
        .expect("install");
    assert_eq!(attached.missing(&cfg).expect("missing"), Vec::<&str>::new());
    let before = attached.links().expect("links");
    let id = std::fs::metadata(cgroup.path()).expect("stat").ino();
    assert!(before.iter().all(|l| l.cgroup_id == id), "{before:?}");
    let pin = attached.pin_dir().unwrap().join("link_connect4");
    detach_pinned_link(&pin);
    assert!(pin.exists(), "the pin stays");
    assert_eq!(
        attached.missing(&cfg).expect("missing"),
        ["nftmesh_connect4"]
    );
    assert_eq!(
        attached.unpin_detached().expect("unpin"),
        ["nftmesh_connect4"]
    );
    assert!(!pin.exists());
    let again = EbpfCapture::new(&cfg)
        .and_then(|mut c| c.install(bpffs.bpffs(), cgroup.path()))
        .expect("install again");
    assert_eq!(again.missing(&cfg).expect("missing"), Vec::<&str>::new());
    let after = again.links().expect("links");
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b.program, a.program);
        assert_eq!(b.id == a.id, b.program != "nftmesh_connect4", "{b:?} {a:?}");
    }
    again.remove().expect("remove");
    assert_eq!(bpffs.contents(), Vec::<PathBuf>::new());
}
