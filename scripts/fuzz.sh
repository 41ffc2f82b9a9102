#!/bin/sh
# Run every cargo-fuzz target for SECONDS each (default 300), one after another, and print
# libFuzzer's final stats. Needs a nightly toolchain; installs cargo-fuzz when missing.
# The growing corpus goes to fuzz/corpus/ (not committed); seeds are in fuzz/seeds/. A crash
# leaves its input in fuzz/artifacts/TARGET/: copy it to fuzz/regressions/TARGET/ with the fix,
# and `cargo test --test pure_fuzz_regressions` replays it in CI (cni_stdin: crates/nftmesh-cni/tests/).
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
seconds="${1:-300}"
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
for t in iptables config istio_lists netlink_reply encode cni_stdin agent_request; do
    mkdir -p "fuzz/corpus/$t"
    echo "fuzz: $t for ${seconds}s"
    cargo +nightly fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 2>&1 | grep -E "^(#[0-9]+.*DONE|Done|stat::)|ERROR|panicked"
done
