//! The CNI plugin's stdin: any bytes are a configuration the plugin reads or refuses with an
//! error object of a spec code; never a panic. Shared by the fuzz target `cni_stdin` and
//! `crates/nftmesh-cni/tests/fuzz_regressions.rs`.

use nftmesh_cni::config::NetConf;
use nftmesh_cni::env::Env;
use nftmesh_cni::{plugin, pod};

pub fn cni_stdin(data: &[u8]) {
    match NetConf::parse(data) {
        Ok(conf) => {
            // A configuration that parsed has a capture that compiles.
            let desired = conf.desired().expect("parse checked the capture");
            let _ = desired.capture();
            // The per-pod decision (annotations in runtimeConfig) decides or refuses with a
            // spec code; a capture it decides compiles.
            match pod::decide(&Env::default(), &conf) {
                Ok(pod::Plan::Capture(d)) => {
                    let _ = d.capture();
                }
                Ok(pod::Plan::Skip(why)) => assert!(!why.is_empty()),
                Err(e) => assert!(e.code() >= 1),
            }
        }
        Err(e) => {
            let v = e.to_json("1.0.0");
            assert!(v["code"].as_u64().is_some_and(|c| c >= 1));
        }
    }
    // Commands that stop before the kernel: VERSION, and CHECK without CNI_NETNS.
    for command in ["VERSION", "CHECK"] {
        let env = Env {
            command: Some(command.into()),
            container_id: Some("c".into()),
            ifname: Some("eth0".into()),
            ..Env::default()
        };
        match plugin::run(&env, data) {
            Ok(_) => assert_eq!(command, "VERSION"),
            Err((e, version)) => {
                assert!(!version.is_empty());
                let _ = e.to_json(&version);
            }
        }
    }
}
