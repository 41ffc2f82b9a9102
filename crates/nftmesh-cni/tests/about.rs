//! `nftmesh-cni` run by a person: without `CNI_COMMAND` it says what it is, its version and
//! the spec versions it speaks, as the reference plugins do (`/usr/lib/cni/bridge` with no
//! environment prints `CNI bridge plugin v1.1.1` and `CNI protocol versions supported: ...`
//! on stderr and exits 0), and never waits for stdin; `--version` and `--help` print on
//! stdout. With `CNI_COMMAND` set, arguments change nothing. No kernel is involved: every
//! case stops before the plugin opens a namespace.

mod common;

use common::{plugin_with_args, PLUGIN};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ABOUT: &str = concat!(
    "CNI nftmesh-cni plugin v",
    env!("CARGO_PKG_VERSION"),
    "\nCNI protocol versions supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0\n"
);

/// The plugin with `env` and `args`, its stdin a pipe left open (as a terminal would be):
/// (exit code, stdout, stderr); it must exit within 5 s without reading stdin.
fn by_hand(env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(PLUGIN)
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nftmesh-cni");
    let stdin = child.stdin.take();
    let end = Instant::now() + Duration::from_secs(5);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("nftmesh-cni {args:?} with {env:?} waited for stdin");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(stdin);
    let o = child.wait_with_output().expect("output");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn without_cni_command_it_says_what_it_is_and_exits_0() {
    for env in [&[][..], &[("CNI_COMMAND", "")][..]] {
        assert_eq!(
            by_hand(env, &[]),
            (0, String::new(), ABOUT.to_string()),
            "{env:?}"
        );
    }
    assert_eq!(
        by_hand(&[], &["--version"]),
        (0, ABOUT.to_string(), String::new())
    );
    assert_eq!(by_hand(&[], &["-V"]).1, ABOUT);
    let (code, out, err) = by_hand(&[], &["--help"]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(out.starts_with(ABOUT), "{out}");
    for word in ["chained", "CNI_COMMAND", "log_file", "log_format"] {
        assert!(out.contains(word), "{word} in {out}");
    }
    assert_eq!(by_hand(&[], &["-h"]).1, out);
    let (code, out, err) = by_hand(&[], &["--frobnicate"]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(
        err.starts_with("nftmesh-cni: unknown argument \"--frobnicate\""),
        "{err}"
    );
}

/// With `CNI_COMMAND` set the arguments are ignored: the runtime's protocol as before.
#[test]
fn with_cni_command_arguments_change_nothing() {
    let run = |command: &str, args: &[&str], stdin: &Value| {
        let (code, v) = plugin_with_args(command, "", stdin, "", args);
        (Some(code), v)
    };
    let (code, v) = run("VERSION", &["--help"], &json!({"cniVersion": "1.0.0"}));
    assert_eq!(code, Some(0));
    assert_eq!(v["supportedVersions"][4], "1.1.0", "{v}");
    let bad = json!({"cniVersion": "1.0.0", "capture": {"proxy_port": 0}});
    let (code, v) = run("ADD", &["--version"], &bad);
    assert_eq!((code, &v["code"]), (Some(1), &json!(7)), "{v}");
    let (code, v) = run("LIST", &[], &bad);
    assert_eq!((code, &v["code"]), (Some(1), &json!(4)), "{v}");
}
