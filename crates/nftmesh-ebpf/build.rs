//! Compiles the BPF programs in `bpf/` with clang (Debian's `clang` and `libbpf-dev`, which
//! `scripts/setup.sh` installs) into `$OUT_DIR`: every `bpf/NAME.c` becomes
//! `$OUT_DIR/NAME.bpf.o`, which the crate includes.
//! `CLANG` names another compiler.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    // Debian keeps asm/types.h, which linux/types.h includes, under the multiarch directory.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".to_string());
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-changed=bpf");
    let mut sources: Vec<PathBuf> = std::fs::read_dir("bpf")
        .expect("the bpf/ directory")
        .map(|e| e.expect("an entry of bpf/").path())
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    sources.sort();
    for source in sources {
        let stem = source.file_stem().expect("a file name").to_string_lossy();
        let object = out.join(format!("{stem}.bpf.o"));
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
            .arg(&multiarch)
            .arg("-c")
            .arg(&source)
            .arg("-o")
            .arg(&object)
            .status()
            .unwrap_or_else(|e| {
                panic!("cannot run {clang} to build {}: {e} (run scripts/setup.sh: it installs clang and libbpf-dev)", source.display())
            });
        assert!(
            status.success(),
            "{clang} failed on {} ({status}); the BPF headers come from libbpf-dev",
            source.display()
        );
    }
}
